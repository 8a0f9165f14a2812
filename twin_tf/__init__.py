"""twin-tf: TWIN-V2 (Kuaishou, CIKM'24) for TensorFlow/Keras, Beam and TF Serving."""

import os

# TensorFlow's C++ INFO lines (such as "Local rendezvous is aborting with status:
# OUT_OF_RANGE" at the end of every dataset) say nothing a user can act on; warnings and
# errors still show. Only a default: a TF_CPP_MIN_LOG_LEVEL the user set wins (and the CLI,
# which shows even less, keeps it), and it acts only where twin_tf is imported before
# TensorFlow.
TF_LOG_LEVEL_FROM_USER = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
