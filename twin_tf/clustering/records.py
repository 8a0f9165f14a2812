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

from twin_tf.clustering.user import UserClusters
from twin_tf.data import schema, tfexample

CUTOFF = "cutoff"
NUM_BEHAVIORS = "num_behaviors"
INT_CLUSTER_FIELDS = (schema.CLUSTER_SIZE, schema.GROUP) + schema.CLUSTER_CATEGORICAL + (
    schema.TIMESTAMP,)
FLOAT_CLUSTER_FIELDS = tuple(f for f in schema.CLUSTER_NUMERIC if f != schema.TIMESTAMP)


def encode(user: UserClusters) -> bytes:
  """UserClusters -> serialized tf.train.Example."""
  features = {schema.USER_ID: user.user_id,
              CUTOFF: -1 if user.cutoff is None else user.cutoff,
              NUM_BEHAVIORS: user.num_behaviors}
  features.update({name: user.clusters[name].astype(np.int64) for name in INT_CLUSTER_FIELDS})
  features.update({name: user.clusters[name].astype(np.float32)
                   for name in FLOAT_CLUSTER_FIELDS})
  return tfexample.encode(features)


def decode(serialized: bytes) -> dict[str, np.ndarray | int]:
  """Serialized cluster record -> {user_id, cutoff, num_behaviors: int, cluster fields: arrays}."""
  out: dict[str, np.ndarray | int] = tfexample.decode(serialized)
  for name in (schema.USER_ID, CUTOFF, NUM_BEHAVIORS):
    out[name] = int(out[name][0])
  return out


def read(pattern: str) -> list[dict]:
  """Every cluster record in the TFRecord files matching `pattern`."""
  return [decode(s) for s in tfexample.read_serialized(pattern)]
