"""tf.train.Example records written in the wire format directly: the same message as
TensorFlow's protobuf classes build, and parsed by TensorFlow as written."""

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2

from twin_tf.data import tfexample

EDGES = np.array([0, 1, 127, 128, 16383, 16384, 2**31, -1, -128, -2**63, 2**63 - 1], np.int64)


def _reference(features):
  """The same record through TensorFlow's protobuf classes."""
  feature = {}
  for name, values in features.items():
    values = np.atleast_1d(np.asarray(values))
    if np.issubdtype(values.dtype, np.floating):
      feature[name] = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    else:
      feature[name] = feature_pb2.Feature(
          int64_list=feature_pb2.Int64List(value=values.astype(np.int64)))
  return example_pb2.Example(features=feature_pb2.Features(feature=feature))


def test_records_are_the_protobuf_message():
  """Short and long int lists (value by value and vectorized), varint edges, negatives,
  bools, scalars, empty lists, float64 rounded to float32, long names."""
  rng = np.random.default_rng(0)
  for n in (1, 15, 16, 17, 1000):
    features = {"ints": rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64),
                "small": rng.integers(0, 300, n), "floats": rng.normal(size=n),
                "edges": EDGES, "edges_long": np.tile(EDGES, 3), "flags": rng.random(n) < 0.5,
                "scalar": 7, "float_scalar": np.float32(0.25), "no_ints": np.zeros(0, np.int64),
                "no_floats": np.zeros(0, np.float32), "n" * 200: np.arange(n)}
    written = tfexample.encode(features)
    assert example_pb2.Example.FromString(written) == _reference(features)
    decoded = tfexample.decode(written)
    for name, values in features.items():
      np.testing.assert_array_equal(decoded[name], np.atleast_1d(values).astype(
          decoded[name].dtype))


def test_tensorflow_parses_the_records():
  written = tfexample.encode({"ids": np.tile(EDGES, 2), "x": np.linspace(-1, 1, 40)})
  parsed = tf.io.parse_single_example(written, {
      "ids": tf.io.FixedLenFeature([2 * len(EDGES)], tf.int64),
      "x": tf.io.FixedLenFeature([40], tf.float32)})
  np.testing.assert_array_equal(parsed["ids"].numpy(), np.tile(EDGES, 2))
  np.testing.assert_array_equal(parsed["x"].numpy(), np.linspace(-1, 1, 40).astype(np.float32))
