"""twin-tf: TWIN-V2 (Kuaishou, CIKM'24) for TensorFlow/Keras, Beam and TF Serving."""

import os

# TensorFlow's C++ INFO lines (such as "Local rendezvous is aborting with status:
# OUT_OF_RANGE" at the end of every dataset) say nothing a user can act on; warnings and
# errors still show. Only a default: TF_CPP_MIN_LOG_LEVEL set by the user wins, and it acts
# only where twin_tf is imported before TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
