"""Turning each cluster into a virtual item (TWIN-V2 section 3.2.3)."""

from __future__ import annotations

import numpy as np

from twin_tf.clustering.kmeans import cluster_sums, squared_distances
from twin_tf.data import schema


def representatives(embeddings: np.ndarray, has_embedding: np.ndarray,
                    cluster: np.ndarray) -> np.ndarray:
  """Index of the member nearest its cluster's centroid, per cluster.

  The centroid is the mean embedding of the members; ties go to the earliest member. A
  cluster without embeddings (a singleton whose item has none) is represented by its member.

  Args:
    embeddings: (N, d) float32 per behavior.
    has_embedding: (N,) bool.
    cluster: (N,) int64 ids 0..C-1.
  Returns:
    (C,) int64 behavior indices.
  """
  num_clusters = int(cluster.max()) + 1 if len(cluster) else 0
  sums, counts = cluster_sums(embeddings, cluster, num_clusters, keep=has_embedding)
  centroid = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)  # (C, d)
  distance = squared_distances(embeddings, centroid, cluster)  # (N,)
  distance[~has_embedding] = 0.0
  order = np.argsort(cluster, kind="stable")  # members by cluster, then input order
  starts = np.searchsorted(cluster[order], np.arange(num_clusters))
  nearest = np.minimum.reduceat(distance[order], starts)  # (C,)
  is_nearest = distance[order] == nearest[cluster[order]]
  first = np.flatnonzero(is_nearest)  # earliest nearest member comes first per cluster
  _, first_per_cluster = np.unique(cluster[order][first], return_index=True)
  return order[first[first_per_cluster]]


def virtual_items(columns: dict[str, np.ndarray], cluster: np.ndarray, groups: np.ndarray,
                  completion: np.ndarray, representative: np.ndarray) -> dict[str, np.ndarray]:
  """Per-cluster features: numeric ones averaged, every other one (item id, item features,
  flags) from the representative.

  Args:
    columns: behavior columns (core fields and a FeatureSpec's), N rows.
    cluster: (N,) cluster id per behavior.
    groups: (N,) completion group per behavior (constant within a cluster).
    completion: (N,) completion ratio per behavior (NaN for unknown duration).
    representative: (C,) behavior index of each cluster's representative.
  Returns:
    Columns with C rows: cluster_size, group, schema.CLUSTER_NUMERIC (members' mean;
    timestamp rounded to int64) and the representative's other columns but user_id.
  """
  num_clusters = len(representative)
  size = np.bincount(cluster, minlength=num_clusters)
  out = {schema.CLUSTER_SIZE: size.astype(np.int64), schema.GROUP: groups[representative]}
  for name in columns:
    if name not in schema.CLUSTER_NUMERIC and name != schema.USER_ID:
      out[name] = columns[name][representative]
  numeric = dict(columns, **{schema.COMPLETION: completion})
  for name in schema.CLUSTER_NUMERIC:
    mean = np.bincount(cluster, weights=numeric[name].astype(np.float64),
                       minlength=num_clusters) / size
    out[name] = np.rint(mean).astype(np.int64) if name == schema.TIMESTAMP else \
        mean.astype(np.float32)
  return out
