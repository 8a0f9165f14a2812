"""Apache Beam pipelines of twin-tf. DoFns are thin: the math lives in twin_tf."""
