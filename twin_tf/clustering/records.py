"""Per-user cluster records: one tf.train.Example per user (the clustering pipeline's output).

Layout (every list has one entry per cluster, C entries, in cluster-id order):
  user_id        int64[1]
  cutoff         int64[1]   behaviors with timestamp < cutoff were clustered (-1: no cutoff)
  num_behaviors  int64[1]   behaviors clustered (= sum of cluster_size)
  cluster_size   int64[C]   n, the members of each cluster (<= gamma)
  group          int64[C]   completion group 0..M-1 (M: unknown duration)
  item_id, category, year_bucket, tagged          int64[C]  from the representative member
  timestamp                                       int64[C]  members' mean, rounded
  play_time, duration, label, completion          float[C]  members' mean
"""

from __future__ import annotations

import numpy as np

from twin_tf import schema
from twin_tf.clustering.user import UserClusters

CUTOFF = "cutoff"
NUM_BEHAVIORS = "num_behaviors"
INT_CLUSTER_FIELDS = (schema.CLUSTER_SIZE, schema.GROUP) + schema.CLUSTER_CATEGORICAL + (
    schema.TIMESTAMP,)
FLOAT_CLUSTER_FIELDS = tuple(f for f in schema.CLUSTER_NUMERIC if f != schema.TIMESTAMP)


def encode(user: UserClusters) -> bytes:
  """UserClusters -> serialized tf.train.Example."""
  from tensorflow.core.example import example_pb2, feature_pb2  # pylint: disable=import-outside-toplevel

  def ints(values):
    return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=np.asarray(values)))

  def floats(values):
    return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=np.asarray(values)))

  feature = {
      schema.USER_ID: ints([user.user_id]),
      CUTOFF: ints([-1 if user.cutoff is None else user.cutoff]),
      NUM_BEHAVIORS: ints([user.num_behaviors]),
  }
  feature.update({name: ints(user.clusters[name]) for name in INT_CLUSTER_FIELDS})
  feature.update({name: floats(user.clusters[name]) for name in FLOAT_CLUSTER_FIELDS})
  return example_pb2.Example(
      features=feature_pb2.Features(feature=feature)).SerializeToString()


def decode(serialized: bytes) -> dict[str, np.ndarray | int]:
  """Serialized cluster record -> {user_id, cutoff, num_behaviors: int, cluster fields: arrays}."""
  from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
  feature = example_pb2.Example.FromString(serialized).features.feature
  out: dict[str, np.ndarray | int] = {
      name: int(feature[name].int64_list.value[0])
      for name in (schema.USER_ID, CUTOFF, NUM_BEHAVIORS)}
  for name in INT_CLUSTER_FIELDS:
    out[name] = np.asarray(feature[name].int64_list.value, dtype=np.int64)
  for name in FLOAT_CLUSTER_FIELDS:
    out[name] = np.asarray(feature[name].float_list.value, dtype=np.float32)
  return out


def read(pattern: str) -> list[dict]:
  """Every cluster record in the TFRecord files matching `pattern`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f"no cluster records match {pattern}")
  return [decode(s) for s in tf.data.TFRecordDataset(files).as_numpy_iterator()]
