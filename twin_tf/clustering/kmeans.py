"""Segmented k-means: many independent k-means problems solved in vectorized batches.

The points of all problems ("segments") lie in one array, each segment contiguous. Segments of
similar size are stacked into one zero-padded batch (sizes within a factor of two), and every
step of k-means++ seeding and of Lloyd's iterations is a batched matrix product over that
batch: no Python loop over segments or points.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse


def segmented_kmeans(
    x: np.ndarray,
    offsets: np.ndarray,
    k: np.ndarray,
    rng: np.random.Generator,
    max_iter: int = 20,
    tol: float = 1e-3,
) -> np.ndarray:
  """Runs k-means independently inside every segment.

  Args:
    x: (N, d) float32 points; segment s is x[offsets[s]:offsets[s+1]].
    offsets: (S + 1,) int64, non-decreasing, offsets[0] = 0, offsets[-1] = N.
    k: (S,) int64 clusters per segment, 1 <= k[s] <= segment size.
    rng: seeded generator; the same state and inputs give the same labels.
    max_iter: cap on Lloyd iterations.
    tol: a batch has converged, and stops, once at most this fraction of its labels moved
      in an iteration (0: only when no label moves).

  Returns:
    (N,) int64 labels, local to each segment, in [0, k[s]).
  """
  x = np.asarray(x, dtype=np.float32)
  offsets = np.asarray(offsets, dtype=np.int64)
  k = np.asarray(k, dtype=np.int64)
  sizes = np.diff(offsets)
  if np.any(k < 1) or np.any(k > sizes):
    raise ValueError("every segment needs 1 <= k <= its size")
  labels = np.zeros(len(x), dtype=np.int64)
  size_class = np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64)
  for cls in np.unique(size_class):  # a handful of batches, sizes within 2x of each other
    segments = np.flatnonzero(size_class == cls)
    width = int(sizes[segments].max())
    position = np.arange(width)
    valid = position[None, :] < sizes[segments, None]  # (S_b, n_b)
    rows = (offsets[segments, None] + position[None, :])[valid]  # (N_b,) segment-major
    batch_labels = _batched_kmeans(x, rows, valid, k[segments], rng, max_iter, tol)
    labels[rows] = batch_labels
  return labels


def _batched_kmeans(x, rows, valid, k, rng, max_iter, tol) -> np.ndarray:
  """k-means on a zero-padded batch of segments.

  Args:
    x: (N, d) all points.  rows: (N_b,) the batch's points, segment-major.
    valid: (S, n) bool, True where a padded slot holds a point.  k: (S,) clusters.
  Returns:
    (N_b,) labels of `rows`.
  """
  num_segments, width = valid.shape
  k_max = int(k.max())
  compact = x[rows]  # (N_b, d) for the centroid sums
  padded = np.zeros((num_segments, width, x.shape[1]), dtype=np.float32)  # (S, n, d)
  padded[valid] = compact
  live = np.arange(k_max)[None, :] < k[:, None]  # (S, k_max) real centroid slots
  group_base = np.repeat(np.arange(num_segments) * k_max, valid.sum(axis=1))  # (N_b,)
  centroids = _kmeans_plus_plus(padded, valid, k, rng)  # (S, k_max, d)
  labels = _assign(padded, centroids, live)[valid]
  allowed_moves = tol * len(rows)
  for _ in range(max_iter):
    sums, counts = cluster_sums(compact, group_base + labels, num_segments * k_max)
    sums, counts = sums.reshape(centroids.shape), counts.reshape(live.shape)
    means = (sums / np.maximum(counts, 1)[..., None]).astype(np.float32)
    centroids = np.where(counts[..., None] > 0, means, centroids)  # empty: keep centroid
    new_labels = _assign(padded, centroids, live)[valid]
    moved = np.count_nonzero(new_labels != labels)
    labels = new_labels
    if moved <= allowed_moves:
      break
  return labels


def _assign(padded, centroids, live) -> np.ndarray:
  """Nearest live centroid of each padded point, argmax of x.c - |c|^2/2: (S, n)."""
  half_norm = np.where(live, 0.5 * np.einsum("skd,skd->sk", centroids, centroids), np.inf)
  scores = np.matmul(padded, centroids.transpose(0, 2, 1))
  scores -= half_norm[:, None, :]
  return np.argmax(scores, axis=2)


def _kmeans_plus_plus(xp, valid, k, rng) -> np.ndarray:
  """k-means++ seeding of every segment of the batch: (S, k_max, d) centroids."""
  num_segments, width, dim = xp.shape
  rows = np.arange(num_segments)
  sizes = valid.sum(axis=1)
  sq_norm = np.einsum("snd,snd->sn", xp, xp)  # (S, n)
  centroids = np.zeros((num_segments, int(k.max()), dim), dtype=np.float32)
  first = np.minimum((rng.random(num_segments) * sizes).astype(np.int64), sizes - 1)
  centroids[:, 0] = xp[rows, first]
  d2 = np.full((num_segments, width), np.inf, dtype=np.float32)
  for j in range(1, int(k.max())):
    c = centroids[:, j - 1]  # (S, d)
    dist = sq_norm - 2 * np.einsum("snd,sd->sn", xp, c) + np.einsum("sd,sd->s", c, c)[:, None]
    d2 = np.where(valid, np.minimum(d2, np.maximum(dist, 0)), 0)
    cumulative = np.cumsum(d2, axis=1, dtype=np.float64)  # (S, n)
    total = cumulative[:, -1]
    u = rng.random(num_segments)
    pick = (cumulative <= (u * total)[:, None]).sum(axis=1)  # D^2-weighted draw
    uniform = (u * sizes).astype(np.int64)  # all points already chosen: any point
    pick = np.minimum(np.where(total > 0, pick, uniform), sizes - 1)
    centroids[:, j] = np.where((k > j)[:, None], xp[rows, pick], 0)
  return centroids


def cluster_sums(x: np.ndarray, cluster: np.ndarray, num_clusters: int):
  """Per-cluster sum of rows and member count, as one sparse product.

  Args:
    x: (N, d) rows; cluster: (N,) ids in [0, num_clusters).
  Returns:
    (num_clusters, d) sums in x's dtype, (num_clusters,) int64 counts.
  """
  one_hot = scipy.sparse.csr_matrix(
      (np.ones(len(x), dtype=x.dtype), (cluster, np.arange(len(x)))),
      shape=(num_clusters, len(x)))
  return np.asarray(one_hot @ x), np.bincount(cluster, minlength=num_clusters)
