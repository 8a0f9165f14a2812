"""One user's life-cycle behaviors -> virtual items: grouping, clustering, features."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional

import numpy as np

from twin_tf.clustering.embeddings import ItemEmbeddingTable
from twin_tf.clustering.grouping import completion_groups, completion_ratio
from twin_tf.clustering.hierarchical import hierarchical_clusters, time_chunks
from twin_tf.clustering.virtual_items import representatives, virtual_items
from twin_tf.config import ClusteringConfig
from twin_tf.data import schema


@dataclasses.dataclass
class UserClusters:
  """The clusters of one user.

  Attributes:
    user_id: the user.
    cutoff: impressions start here; behaviors before it may be clustered (None: all are).
    clustered_before: the behaviors with timestamp < clustered_before were clustered (the
      cutoff less the staleness; the last behavior + 1 without a cutoff).
    behavior_index: (N,) indices into the input columns of the clustered behaviors, in the
      canonical order (timestamp, item_id, play_time) that makes clustering deterministic.
    cluster_of_behavior: (N,) cluster id of each of those behaviors.
    clusters: columns with C rows (see `virtual_items`).
    digest: behaviors_digest of the clustered behaviors, which an incremental update checks
      its past against.
  """

  user_id: int
  cutoff: Optional[int]
  clustered_before: int
  behavior_index: np.ndarray
  cluster_of_behavior: np.ndarray
  clusters: dict[str, np.ndarray]
  digest: int

  @property
  def num_behaviors(self) -> int:
    return len(self.behavior_index)

  @property
  def num_clusters(self) -> int:
    return len(self.clusters[schema.CLUSTER_SIZE])


def user_cutoff(timestamps: np.ndarray, config: ClusteringConfig) -> Optional[int]:
  """The timestamp before which behaviors are clustered, or None for no cutoff."""
  if config.cutoff_timestamp is not None:
    return int(config.cutoff_timestamp)
  if config.cutoff_quantile is None or not len(timestamps):
    return None
  ordered = np.sort(timestamps)
  position = int(np.ceil(config.cutoff_quantile * len(ordered)))
  return int(ordered[position]) if position < len(ordered) else int(ordered[-1]) + 1


def clustered_rows(columns: dict[str, np.ndarray], config: ClusteringConfig
                   ) -> tuple[Optional[int], int, np.ndarray]:
  """(cutoff, clustered_before, (N,) indices of the behaviors to cluster): those before the
  cutoff less the staleness, in the canonical order (timestamp, item_id, play_time) that
  makes clustering deterministic."""
  timestamps = columns[schema.TIMESTAMP]
  cutoff = user_cutoff(timestamps, config)
  if cutoff is None:
    before = int(timestamps.max()) + 1 if len(timestamps) else 0
  else:
    before = cutoff - int(round(config.staleness_days * 86400))
  rows = np.flatnonzero(timestamps < before)
  rows = rows[np.lexsort((columns[schema.PLAY_TIME][rows], columns[schema.ITEM_ID][rows],
                          timestamps[rows]))]
  return cutoff, before, rows


def cluster_ids(embeddings, found, groups, gamma: int, config: ClusteringConfig
                ) -> np.ndarray:
  """(N,) cluster ids of behaviors by config.method, no cluster above gamma."""
  if config.method == "time_chunks":
    return time_chunks(groups, gamma)
  return hierarchical_clusters(embeddings, found, groups, gamma, config.k_exponent,
                               config.max_iter, config.kmeans_tol, config.seed)


def before_cutoff(columns: dict[str, np.ndarray], config: ClusteringConfig) -> np.ndarray:
  """(N,) bool: the behaviors strictly before their own user's cutoff (user_cutoff).

  What may be learned from without seeing any impression: the bootstrap embeddings that
  clustering uses are built from these behaviors only.
  """
  users, times = columns[schema.USER_ID], columns[schema.TIMESTAMP]
  if config.cutoff_timestamp is not None:
    return times < config.cutoff_timestamp
  if config.cutoff_quantile is None or not len(times):
    return np.ones(len(times), bool)
  order = np.lexsort((times, users))
  sorted_users = users[order]  # each user's start from the sorted ids, no second sort
  starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
  del sorted_users
  counts = np.diff(np.r_[starts, len(order)])
  position = np.ceil(config.cutoff_quantile * counts).astype(np.int64)
  sorted_times = times[order]
  cutoff = np.where(position < counts, sorted_times[starts + np.minimum(position, counts - 1)],
                    sorted_times[starts + counts - 1] + 1)
  mask = np.empty(len(times), bool)
  mask[order] = sorted_times < np.repeat(cutoff, counts)
  return mask


def cluster_user(columns: dict[str, np.ndarray], table: ItemEmbeddingTable,
                 config: ClusteringConfig = ClusteringConfig()) -> UserClusters:
  """Clusters one user's behaviors before the cutoff into virtual items.

  Args:
    columns: behavior columns of a single user (core fields and a FeatureSpec's), any row order.
    table: item embeddings; behaviors of items without one become singleton clusters.
    config: M, gamma, k exponent, seed, cutoff.
  Returns:
    UserClusters; none mixes completion groups; every cluster has <= gamma behaviors (under
    a max_clusters budget, <= the gamma that brought the user under it).
  """
  users = np.unique(columns[schema.USER_ID])
  if len(users) > 1:
    raise ValueError(f"cluster_user takes one user's behaviors; got users {users[:5]}...")
  cutoff, clustered_before, kept = clustered_rows(columns, config)
  user = schema.take(columns, kept)
  embeddings, found = table.lookup(user[schema.ITEM_ID])
  if config.max_clusters is not None:  # unknown items: one identical point, not singletons
    found = np.ones_like(found)
  groups = completion_groups(user[schema.PLAY_TIME], user[schema.DURATION], config.num_groups)
  gamma = config.gamma
  cluster = cluster_ids(embeddings, found, groups, gamma, config)
  while (config.max_clusters is not None and len(kept) and gamma < len(kept) and
         cluster.max() + 1 > config.max_clusters):
    gamma *= 2
    cluster = cluster_ids(embeddings, found, groups, gamma, config)
  return UserClusters(int(users[0]) if len(users) else -1, cutoff, clustered_before, kept,
                      cluster, cluster_features(user, embeddings, found, groups, cluster),
                      behaviors_digest(user, groups))


def snapshot_cutoffs(timestamps: np.ndarray, config: ClusteringConfig) -> list[int]:
  """The cutoffs of a user's earlier cluster snapshots (config.snapshots), increasing, each
  before the user's cutoff: the timestamp that starts each of the S equal-count periods of
  the behaviors before the cutoff, but the first (ties merge periods). [] without a cutoff
  or with one snapshot."""
  if config.snapshots == 1:  # the default: no sort on clustering's path
    return []
  cutoff = user_cutoff(timestamps, config)
  if cutoff is None:
    return []
  before = np.sort(timestamps[timestamps < cutoff])
  positions = np.ceil(np.arange(1, config.snapshots) * len(before) / config.snapshots)
  starts = before[positions.astype(np.int64)[positions < len(before)]]
  return [int(t) for t in np.unique(starts) if before[0] < t < cutoff]


def cluster_snapshots(columns: dict[str, np.ndarray], table: ItemEmbeddingTable,
                      config: ClusteringConfig) -> list[UserClusters]:
  """One user's earlier cluster snapshots (snapshot_cutoffs), each clustered in full at its
  own cutoff with config's other settings (staleness included)."""
  return [cluster_user(columns, table, dataclasses.replace(
      config, cutoff_timestamp=cutoff, cutoff_quantile=None, snapshots=1))
          for cutoff in snapshot_cutoffs(columns[schema.TIMESTAMP], config)]


def behaviors_digest(user: dict[str, np.ndarray], groups: np.ndarray) -> int:
  """A 63-bit digest of clustered behaviors in canonical order: their item ids, timestamps
  and completion groups (what a previous cluster record's past must still be)."""
  digest = hashlib.sha256()
  for values in (user[schema.ITEM_ID], user[schema.TIMESTAMP], groups):
    digest.update(np.ascontiguousarray(values, np.int64).tobytes())
  return int.from_bytes(digest.digest()[:8], "little") >> 1


def cluster_features(user: dict[str, np.ndarray], embeddings: np.ndarray, found: np.ndarray,
                     groups: np.ndarray, cluster: np.ndarray) -> dict[str, np.ndarray]:
  """Virtual items of clustered behaviors (all (N,) in canonical order): C rows."""
  if not len(cluster):
    return virtual_items(user, cluster, groups, np.zeros(0, np.float32), np.zeros(0, np.int64))
  completion = completion_ratio(user[schema.PLAY_TIME], user[schema.DURATION])
  return virtual_items(user, cluster, groups, completion,
                       representatives(embeddings, found, cluster))
