"""Recursively adaptive clustering inside groups (TWIN-V2 section 3.2.2).

Every group is split with k-means, k = ceil(n ** 0.3), and every resulting cluster larger
than gamma is split again, until no cluster exceeds gamma. All clusters of one recursion
level are solved together by `segmented_kmeans`, so the cost is a few vectorized passes per
level rather than one Python call per cluster.
"""

from __future__ import annotations

import numpy as np

from twin_tf.clustering.kmeans import segmented_kmeans


def hierarchical_clusters(
    embeddings: np.ndarray,
    has_embedding: np.ndarray,
    groups: np.ndarray,
    gamma: int,
    k_exponent: float = 0.3,
    max_iter: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
) -> np.ndarray:
  """Cluster id for every behavior; no cluster mixes groups or exceeds gamma.

  Behaviors whose item has no embedding are kept as singleton clusters (n = 1, exactly as
  TWIN would see the raw behavior): k-means has no position for them. When k-means cannot
  split a cluster (all its embeddings coincide, e.g. one item watched many times), it is cut
  into consecutive chunks of at most gamma behaviors, in input order.

  Args:
    embeddings: (N, d) float32 item embedding per behavior (rows without one are ignored).
    has_embedding: (N,) bool.
    groups: (N,) int64 completion group per behavior.
    gamma: largest allowed cluster size.
    k_exponent: k = ceil(n ** k_exponent) clusters for a cluster of n behaviors.
    max_iter: Lloyd iteration cap per level.
    tol: fraction of moved labels at which a k-means batch counts as converged.
    seed: the same seed and input give the same clusters.

  Returns:
    (N,) int64 cluster ids 0..C-1, numbered in order of each cluster's first behavior.
  """
  n = len(groups)
  rng = np.random.default_rng(seed)
  cluster = np.full(n, -1, dtype=np.int64)  # provisional ids, renumbered at the end
  next_id = 0

  singles = np.flatnonzero(~has_embedding)
  cluster[singles] = np.arange(next_id, next_id + len(singles))
  next_id += len(singles)

  # Active points in segment-contiguous order; segment = a cluster still larger than gamma.
  members = np.flatnonzero(has_embedding)
  members = members[np.argsort(groups[members], kind="stable")]
  segment_of = groups[members]
  while len(members):
    _, sizes = np.unique(segment_of, return_counts=True)  # segment_of is sorted
    small = sizes <= gamma
    done = np.repeat(small, sizes)
    cluster[members[done]] = np.repeat(np.arange(next_id, next_id + small.sum()),
                                       sizes[small])
    next_id += int(small.sum())
    members, sizes = members[~done], sizes[~small]
    if not len(members):
      break
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    k = np.minimum(np.maximum(np.ceil(sizes ** k_exponent), 2), sizes).astype(np.int64)
    labels = segmented_kmeans(embeddings, offsets, k, rng, max_iter, tol, rows=members)
    parent = np.repeat(np.arange(len(sizes)), sizes)
    width = max(int(k.max()), -(-int(sizes.max()) // gamma))
    child = parent * width + labels  # unique id of the (segment, label) pair
    stuck = np.bincount(np.unique(child) // width, minlength=len(sizes)) < 2
    if stuck.any():  # k-means found one cluster: cut into chunks of <= gamma in input order
      chunk = parent * width + (np.arange(len(parent)) - offsets[parent]) // gamma
      child = np.where(stuck[parent], chunk, child)
    order = np.argsort(child, kind="stable")
    members, segment_of = members[order], child[order]

  return renumber_by_first_member(cluster)


def time_chunks(groups: np.ndarray, gamma: int) -> np.ndarray:
  """The similarity-free control: each group's behaviors, in input (time) order, cut into
  consecutive chunks of gamma (the last one shorter). (N,) int64 ids as hierarchical_clusters
  numbers them."""
  order = np.argsort(groups, kind="stable")
  _, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
  rank = np.arange(len(order)) - np.repeat(starts, counts)  # position within the group
  chunk = np.empty(len(order), dtype=np.int64)
  chunk[order] = np.repeat(np.arange(len(counts)), counts) * len(order) + rank // gamma
  return renumber_by_first_member(chunk) if len(order) else chunk


def renumber_by_first_member(cluster: np.ndarray) -> np.ndarray:
  """Any (N,) cluster labels -> ids 0..C-1 in order of each cluster's first member."""
  _, first, inverse = np.unique(cluster, return_index=True, return_inverse=True)
  rank = np.empty(len(first), dtype=np.int64)
  rank[np.argsort(first, kind="stable")] = np.arange(len(first))
  return rank[inverse]
