"""Per-user cluster records: one tf.train.Example per user (the clustering pipeline's output).

Layout (the per-cluster lists have C entries, in cluster-id order):
  format_version    int64[1]   FORMAT_VERSION (records without one are version 1)
  user_id           int64[1]
  cutoff            int64[1]   impressions start here (-1: no cutoff)
  clustered_before  int64[1]   behaviors with timestamp < clustered_before were clustered
  num_behaviors     int64[1]   behaviors clustered (= sum of cluster_size)
  behavior_cluster  int64[N]   the cluster of each clustered behavior, in canonical order
                               (timestamp, item_id, play_time): what incremental
                               re-clustering (twin_tf.clustering.incremental) starts from
  cluster_size   int64[C]   n, the members of each cluster (<= gamma)
  group          int64[C]   completion group 0..M-1 (M: unknown duration)
  item_id, item features, flags    int64[C]  from the representative member (the features
                                             and flags of the log's FeatureSpec)
  timestamp                         int64[C]  members' mean, rounded
  play_time, duration, label, completion  float[C]  members' mean
"""

from __future__ import annotations

import numpy as np

from twin_tf.clustering.user import UserClusters
from twin_tf.data import schema, tfexample

FORMAT_VERSION = 3  # 3: with the digest of the clustered behaviors
VERSION = "format_version"
CUTOFF = "cutoff"
CLUSTERED_BEFORE = "clustered_before"
NUM_BEHAVIORS = "num_behaviors"
BEHAVIOR_CLUSTER = "behavior_cluster"
DIGEST = "behaviors_digest"


def encode(user: UserClusters) -> bytes:
  """UserClusters -> serialized tf.train.Example."""
  features = {VERSION: FORMAT_VERSION, schema.USER_ID: user.user_id,
              CUTOFF: -1 if user.cutoff is None else user.cutoff,
              CLUSTERED_BEFORE: user.clustered_before, NUM_BEHAVIORS: user.num_behaviors,
              DIGEST: user.digest, BEHAVIOR_CLUSTER: user.cluster_of_behavior.astype(np.int64)}
  for name, values in user.clusters.items():
    integer = np.issubdtype(values.dtype, np.integer)
    features[name] = values.astype(np.int64 if integer else np.float32)
  return tfexample.encode(features)


def decode(serialized: bytes) -> dict[str, np.ndarray | int]:
  """Serialized cluster record -> {format_version, user_id, cutoff, clustered_before,
  num_behaviors: int; behavior_cluster and the cluster fields: arrays}."""
  out: dict[str, np.ndarray | int] = tfexample.decode(serialized)
  out.setdefault(VERSION, np.array([1]))
  for name in (VERSION, schema.USER_ID, CUTOFF, CLUSTERED_BEFORE, NUM_BEHAVIORS, DIGEST):
    if name in out:
      out[name] = int(out[name][0])
  return out


def user_id(serialized: bytes) -> int:
  """The user of a serialized cluster (or user) record, without decoding its per-behavior
  lists into arrays (what the pipelines key records by)."""
  from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
  feature = example_pb2.Example.FromString(serialized).features.feature[schema.USER_ID]
  return int(feature.int64_list.value[0])


def read(pattern: str) -> list[dict]:
  """Every cluster record in the TFRecord files matching `pattern`."""
  return [decode(s) for s in tfexample.read_serialized(pattern)]
