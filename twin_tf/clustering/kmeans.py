"""Segmented k-means: many independent k-means problems solved in vectorized batches.

The points of all problems ("segments") lie in one array, each segment contiguous. Segments of
similar size are stacked into one zero-padded batch (sizes within a factor of two), and every
step of k-means++ seeding and of Lloyd's iterations is a batched matrix product over that
batch: no Python loop over segments or points.

A segment of more than POINTS_PER_CENTROID * k points fits its centroids on a uniform sample
of that many (as faiss does) and then assigns all its points to the nearest: the
centroids of a few hundred points per cluster are as good, and Lloyd on a 10^6-behavior
user's top level costs a twentieth. Smaller segments run on all their points.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

POINTS_PER_CENTROID = 256  # faiss's max_points_per_centroid
CHUNK = 1 << 16  # points per slice of a pass over a large segment


def segmented_kmeans(
    x: np.ndarray,
    offsets: np.ndarray,
    k: np.ndarray,
    rng: np.random.Generator,
    max_iter: int = 20,
    tol: float = 1e-3,
    points_per_centroid: int = POINTS_PER_CENTROID,
    rows: np.ndarray | None = None,
) -> np.ndarray:
  """Runs k-means independently inside every segment.

  Args:
    x: (N_x, d) float32 vectors; point i is x[rows[i]] (x[i] without rows).
    offsets: (S + 1,) int64, non-decreasing, offsets[0] = 0, offsets[-1] = N points;
      segment s holds points offsets[s]:offsets[s+1].
    k: (S,) int64 clusters per segment, 1 <= k[s] <= segment size.
    rng: seeded generator; the same state and inputs give the same labels.
    max_iter: cap on Lloyd iterations.
    tol: a batch has converged, and stops, once at most this fraction of its labels moved
      in an iteration (0: only when no label moves).
    points_per_centroid: a segment of more than this times k points fits its centroids on
      a uniform sample of that many, then assigns all its points.
    rows: (N,) int64 row of x of every point, so that a subset is clustered without a copy.

  Returns:
    (N,) int64 labels, local to each segment, in [0, k[s]).
  """
  x = np.asarray(x, dtype=np.float32)
  offsets = np.asarray(offsets, dtype=np.int64)
  k = np.asarray(k, dtype=np.int64)
  rows = np.arange(len(x)) if rows is None else np.asarray(rows, dtype=np.int64)
  sizes = np.diff(offsets)
  if np.any(k < 1) or np.any(k > sizes):
    raise ValueError("every segment needs 1 <= k <= its size")
  labels = np.zeros(offsets[-1], dtype=np.int64)
  size_class = np.ceil(np.log2(np.maximum(sizes, 1))).astype(np.int64)
  for cls in np.unique(size_class):  # a handful of batches, sizes within 2x of each other
    segments = np.flatnonzero(size_class == cls)
    start, batch_k = offsets[segments], k[segments]
    slot = np.arange(int(sizes[segments].max()))
    valid = slot[None, :] < sizes[segments, None]  # (S_b, n_b)
    point = np.where(valid, start[:, None] + slot[None, :], 0)  # (S_b, n_b) padded points
    quota = points_per_centroid * batch_k
    if np.all(sizes[segments] <= quota):
      batch_labels = _batched_kmeans(_padded(x, rows[point], valid), valid, batch_k, rng,
                                     max_iter, tol)[1]
      labels[point[valid]] = batch_labels[valid]
      continue
    chosen, sampled = _sample_slots(sizes[segments], quota, rng)
    sample = rows[start[:, None] + np.where(sampled, chosen, 0)]
    centroids, _ = _batched_kmeans(_padded(x, sample, sampled), sampled, batch_k, rng,
                                   max_iter, tol)
    for s, segment in enumerate(segments):  # a few: each has more than 256 points
      lo, hi = offsets[segment], offsets[segment + 1]
      labels[lo:hi] = _nearest(x, rows[lo:hi], centroids[s, :k[segment]])
  return labels


def _nearest(x, rows, centroids) -> np.ndarray:
  """Nearest of (k, d) centroids to each x[rows]: (n,) indices."""
  half_norm = 0.5 * np.einsum("kd,kd->k", centroids, centroids)
  nearest = np.empty(len(rows), np.int64)
  for lo in range(0, len(rows), CHUNK):  # in slices: no (n, d) copy of the points
    scores = x[rows[lo:lo + CHUNK]] @ centroids.T
    scores -= half_norm
    nearest[lo:lo + CHUNK] = np.argmax(scores, axis=1)
  return nearest


def _sample_slots(sizes, quota, rng):
  """A uniform sample without replacement of min(size, quota) slots of every segment.

  Args:
    sizes: (S,) segment sizes.  quota: (S,) sample sizes wanted.
  Returns:
    (S, m) int64 slots, ascending in each row, and the (S, m) bool mask of real ones.
  """
  slot = np.arange(int(sizes.max()))
  keys = np.where(slot[None, :] < sizes[:, None], rng.random((len(sizes), len(slot))), 2.0)
  taken = np.minimum(sizes, quota)
  chosen = np.argsort(keys, axis=1)[:, :int(taken.max())]  # (S, m) a random subset first
  sampled = np.arange(chosen.shape[1])[None, :] < taken[:, None]
  return np.sort(np.where(sampled, chosen, len(slot)), axis=1), sampled


def _padded(x, rows, valid) -> np.ndarray:
  """(S, n) rows of x (any where not valid) -> (S, n, d) points, zeros where not valid."""
  padded = x[rows]
  padded[~valid] = 0
  return padded


def _batched_kmeans(padded, valid, k, rng, max_iter, tol):
  """k-means on a zero-padded batch of segments.

  A segment in which no label moved has converged (its centroids would not change again),
  so it leaves the working set; the batch stops once at most `tol` of its points moved.

  Args:
    padded: (S, n, d) points, zeros where not valid.
    valid: (S, n) bool, True where a padded slot holds a point.  k: (S,) clusters.
  Returns:
    (S, k_max, d) centroids (slots >= k[s] unused) and (S, n) labels (junk in padding),
    each point's nearest among the centroids of its segment's last iteration's start.
  """
  num_segments, k_max = len(valid), int(k.max())
  live = np.arange(k_max)[None, :] < k[:, None]  # (S, k_max) real centroid slots
  centroids = _kmeans_plus_plus(padded, valid, k, rng)  # (S, k_max, d)
  labels = _assign(padded, centroids, live)  # (S, n)
  slot_base = np.arange(num_segments)[:, None] * k_max
  num_slots = num_segments * k_max
  sums, counts = cluster_sums(padded.reshape(-1, padded.shape[2]),
                              (slot_base + labels).ravel(), num_slots, keep=valid.ravel())
  sums = sums.astype(np.float64)  # then updated by the points that move, not recomputed
  allowed_moves = tol * np.count_nonzero(valid)
  work, work_points, work_valid = np.arange(num_segments), padded, valid
  for _ in range(max_iter):
    work_counts = counts.reshape(live.shape)[work]
    means = sums.reshape(centroids.shape)[work] / np.maximum(work_counts, 1)[..., None]
    centroids[work] = np.where(work_counts[..., None] > 0, means, centroids[work])
    new_labels = _assign(work_points, centroids[work], live[work])
    moved = (new_labels != labels[work]) & work_valid  # (W, n)
    segment, position = np.nonzero(moved)
    base = slot_base[work[segment], 0]
    delta_sums, delta_counts = moved_sums(work_points[segment, position],
                                          base + labels[work[segment], position],
                                          base + new_labels[segment, position], len(counts))
    sums += delta_sums
    counts += delta_counts
    labels[work] = new_labels
    if len(segment) <= allowed_moves:
      break
    still = moved.any(axis=1)
    if still.mean() < 0.5:  # enough segments converged to be worth a smaller copy
      work, work_points, work_valid = work[still], work_points[still], work_valid[still]
  return centroids, labels


def moved_sums(points, source, target, num_clusters):
  """How moving points between clusters changes the per-cluster sums and counts.

  Args:
    points: (M, d) the moving points.  source, target: (M,) their old and new cluster ids.
  Returns:
    (num_clusters, d) float64 change of sums, (num_clusters,) int64 change of counts.
  """
  moves = np.arange(len(points))
  signs = np.concatenate([np.ones(len(points)), -np.ones(len(points))])
  one_hot = scipy.sparse.csr_matrix(
      (signs, (np.concatenate([target, source]), np.concatenate([moves, moves]))),
      shape=(num_clusters, len(points)))
  counts = (np.bincount(target, minlength=num_clusters) -
            np.bincount(source, minlength=num_clusters))
  return np.asarray(one_hot @ points.astype(np.float64)), counts


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


def cluster_sums(x: np.ndarray, cluster: np.ndarray, num_clusters: int,
                 keep: np.ndarray | None = None):
  """Per-cluster sum of rows and member count, as one sparse product.

  Args:
    x: (N, d) rows; cluster: (N,) ids in [0, num_clusters) (any where keep is False).
    keep: (N,) bool, the rows to count (default all); the others are left out without a
      copy of x.
  Returns:
    (num_clusters, d) sums in x's dtype, (num_clusters,) int64 counts.
  """
  members = np.arange(len(x)) if keep is None else np.flatnonzero(keep)
  ids = cluster[members]
  one_hot = scipy.sparse.csr_matrix(
      (np.ones(len(members), dtype=x.dtype), (ids, members)), shape=(num_clusters, len(x)))
  return np.asarray(one_hot @ x), np.bincount(ids, minlength=num_clusters)


def squared_distances(x: np.ndarray, centroids: np.ndarray, cluster: np.ndarray) -> np.ndarray:
  """|x_i - centroids[cluster_i]|^2 of (N, d) rows, in slices of CHUNK rows (no (N, d)
  temporaries): (N,) in x's dtype."""
  distance = np.empty(len(x), x.dtype)
  for lo in range(0, len(x), CHUNK):
    diff = x[lo:lo + CHUNK] - centroids[cluster[lo:lo + CHUNK]]
    distance[lo:lo + CHUNK] = np.einsum("nd,nd->n", diff, diff)
  return distance
