"""Dicts of arrays <-> tf.train.Example, for every record type twin-tf writes.

Integer arrays become int64_list features, floating arrays float_list; scalars are length-1
lists. Only TensorFlow's protobuf classes are used (no TF graph), so Beam workers stay light.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def encode(features: Mapping[str, np.ndarray | int | float]) -> bytes:
  """{name: scalar or 1-D array} -> serialized tf.train.Example."""
  from tensorflow.core.example import example_pb2, feature_pb2  # pylint: disable=import-outside-toplevel
  feature = {}
  for name, values in features.items():
    values = np.atleast_1d(np.asarray(values))
    if np.issubdtype(values.dtype, np.floating):
      feature[name] = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    elif np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
      feature[name] = feature_pb2.Feature(
          int64_list=feature_pb2.Int64List(value=values.astype(np.int64)))
    else:
      raise TypeError(f"feature {name!r}: unsupported dtype {values.dtype}")
  return example_pb2.Example(features=feature_pb2.Features(feature=feature)).SerializeToString()


def decode(serialized: bytes) -> dict[str, np.ndarray]:
  """Serialized tf.train.Example -> {name: int64 or float32 array}."""
  from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
  out = {}
  for name, feature in example_pb2.Example.FromString(serialized).features.feature.items():
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
      out[name] = np.asarray(feature.float_list.value, dtype=np.float32)
    elif kind == "int64_list":
      out[name] = np.asarray(feature.int64_list.value, dtype=np.int64)
    else:
      out[name] = np.asarray([], dtype=np.int64)
  return out


def read_serialized(pattern: str) -> list[bytes]:
  """Every serialized record in the TFRecord files matching `pattern`, in file order."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"no records match {pattern}")
  return list(tf.data.TFRecordDataset(files).as_numpy_iterator())


def read(pattern: str) -> list[dict[str, np.ndarray]]:
  """Every record in the TFRecord files matching `pattern`, decoded."""
  return [decode(s) for s in read_serialized(pattern)]
