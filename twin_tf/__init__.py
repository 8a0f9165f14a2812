"""twin-tf: TWIN-V2 (Kuaishou, CIKM'24) for TensorFlow/Keras, Beam and TF Serving."""

__version__ = "0.1.0"
