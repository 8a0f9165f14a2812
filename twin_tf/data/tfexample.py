"""Dicts of arrays <-> tf.train.Example, for every record type twin-tf writes.

Integer arrays become int64_list features, floating arrays float_list; scalars are length-1
lists. Only TensorFlow's protobuf classes are used (no TF graph), so Beam workers stay light.
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np


def encode(features: Mapping[str, np.ndarray | int | float]) -> bytes:
  """{name: scalar or 1-D array} -> serialized tf.train.Example.

  Written in the protobuf wire format directly (packed lists from whole arrays): a user
  record of 10^5 behaviors would otherwise pass every value through Python objects.
  """
  entries = []
  for name, values in features.items():
    values = np.atleast_1d(np.asarray(values))
    if np.issubdtype(values.dtype, np.floating):
      kind, packed = _FLOAT_LIST, values.astype("<f4").tobytes()
    elif np.issubdtype(values.dtype, np.integer) or values.dtype == bool:
      kind, packed = _INT64_LIST, _varints(values.astype(np.int64).ravel())
    else:
      raise TypeError(f"feature {name!r}: unsupported dtype {values.dtype}")
    feature = _field(kind, _field(_VALUE, packed) if packed else b"")
    entries.append(_field(_MAP_ENTRY, _field(_KEY, name.encode()) + _field(_MAP_VALUE,
                                                                           feature)))
  return _field(_FEATURES, b"".join(entries))


# Wire tags (field number << 3 | 2, length-delimited) of Example.features, Features.feature
# (a map: entries of key = 1, value = 2), Feature.float_list / int64_list, and their packed
# `value`.
_FEATURES = _MAP_ENTRY = _KEY = _VALUE = 0x0A
_MAP_VALUE, _FLOAT_LIST, _INT64_LIST = 0x12, 0x12, 0x1A
_SHIFTS = np.arange(0, 64, 7, dtype=np.uint64)  # the 10 groups of 7 bits of a varint


def _varints(values: np.ndarray) -> bytes:
  """(N,) int64 -> their protobuf varints, concatenated (a negative takes 10 bytes)."""
  if len(values) <= _FEW:
    return b"".join(map(_varint, values.tolist()))
  widest = len(_SHIFTS) if values.min() < 0 else max(1, -(-int(values.max()).bit_length() // 7))
  shifts = _SHIFTS[:widest]
  groups = values.view(np.uint64)[:, None] >> shifts  # (N, widest)
  length = np.maximum((groups != 0).sum(axis=1), 1)  # groups up to the highest set bit
  position = np.arange(widest)
  octets = (groups & np.uint64(0x7F)).astype(np.uint8)
  octets |= (position < length[:, None] - 1).view(np.uint8) << 7  # more groups follow
  return octets[position < length[:, None]].tobytes()


_FEW = 16  # shorter int lists are encoded value by value: numpy's per-call cost is larger


def _varint(value: int) -> bytes:
  """One int64 as a protobuf varint."""
  value &= (1 << 64) - 1  # a negative as its two's complement
  out = bytearray()
  while value > 0x7F:
    out.append(value & 0x7F | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
  """A length-delimited field: tag, varint length, payload."""
  return bytes([tag]) + _varint(len(payload)) + payload


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
  return list(iterate_serialized(pattern))


def iterate_serialized(pattern: str) -> Iterator[bytes]:
  """The serialized records of the TFRecord files matching `pattern`, in file order, read
  as they are consumed."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"no records match {pattern}")
  return tf.data.TFRecordDataset(files).as_numpy_iterator()


def read(pattern: str) -> list[dict[str, np.ndarray]]:
  """Every record in the TFRecord files matching `pattern`, decoded."""
  return [decode(s) for s in read_serialized(pattern)]
