"""One user's life-cycle behaviors -> virtual items: grouping, clustering, features."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from twin_tf.clustering.embeddings import ItemEmbeddingTable
from twin_tf.clustering.grouping import completion_groups, completion_ratio
from twin_tf.clustering.hierarchical import hierarchical_clusters
from twin_tf.clustering.virtual_items import representatives, virtual_items
from twin_tf.config import ClusteringConfig
from twin_tf.data import schema


@dataclasses.dataclass
class UserClusters:
  """The clusters of one user.

  Attributes:
    user_id: the user.
    cutoff: only behaviors with timestamp < cutoff were clustered (None: all).
    behavior_index: (N,) indices into the input columns of the clustered behaviors, in the
      canonical order (timestamp, item_id, play_time) that makes clustering deterministic.
    cluster_of_behavior: (N,) cluster id of each of those behaviors.
    clusters: columns with C rows (see `virtual_items`).
  """

  user_id: int
  cutoff: Optional[int]
  behavior_index: np.ndarray
  cluster_of_behavior: np.ndarray
  clusters: dict[str, np.ndarray]

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


def cluster_user(columns: dict[str, np.ndarray], table: ItemEmbeddingTable,
                 config: ClusteringConfig = ClusteringConfig()) -> UserClusters:
  """Clusters one user's behaviors before the cutoff into virtual items.

  Args:
    columns: behavior columns of a single user (schema.BEHAVIOR_FIELDS), any row order.
    table: item embeddings; behaviors of items without one become singleton clusters.
    config: M, gamma, k exponent, seed, cutoff.
  Returns:
    UserClusters; every cluster has <= gamma behaviors, none mixes completion groups.
  """
  users = np.unique(columns[schema.USER_ID])
  if len(users) > 1:
    raise ValueError(f"cluster_user takes one user's behaviors; got users {users[:5]}...")
  cutoff = user_cutoff(columns[schema.TIMESTAMP], config)
  kept = np.flatnonzero(columns[schema.TIMESTAMP] < cutoff) if cutoff is not None else \
      np.arange(schema.num_rows(columns))
  kept = kept[np.lexsort((columns[schema.PLAY_TIME][kept], columns[schema.ITEM_ID][kept],
                          columns[schema.TIMESTAMP][kept]))]
  user = schema.take(columns, kept)
  embeddings, found = table.lookup(user[schema.ITEM_ID])
  groups = completion_groups(user[schema.PLAY_TIME], user[schema.DURATION], config.num_groups)
  cluster = hierarchical_clusters(embeddings, found, groups, config.gamma, config.k_exponent,
                                  config.max_iter, config.kmeans_tol, config.seed)
  if len(kept):
    rep = representatives(embeddings, found, cluster)
    completion = completion_ratio(user[schema.PLAY_TIME], user[schema.DURATION])
    clusters = virtual_items(user, cluster, groups, completion, rep)
  else:
    clusters = virtual_items(user, cluster, groups, np.zeros(0, np.float32),
                             np.zeros(0, np.int64))
  return UserClusters(int(users[0]) if len(users) else -1, cutoff, kept, cluster, clusters)
