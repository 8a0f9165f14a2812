"""Windowed item co-occurrence as a linear operator, streamed over the behaviors.

C[a, b] counts the ordered position pairs (i, j) of one user with 1 <= |i - j| <= window,
item a at i and item b at j, a != b. It has about 2 x window x N nonzeros, almost all
distinct on a large log, so it is never built: `WindowCooccurrence.matmat(X)` computes
C @ X in chunks of whole users,
  C @ X = E^T (A (E X)) - diag(self pairs) X,
where E (N, V) is the one-hot of each position's item (a gather), A (N, N) the same-user
window (a running sum) and E^T a scatter-add. Memory: O(V k) for X plus a chunk's rows;
time: O(N k) per product.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse

CHUNK_ROWS = 1 << 13  # behaviors per chunk: its (rows, k) buffers stay in the CPU caches


class WindowCooccurrence:
  """C of a log whose behaviors are grouped by user and in time order within each user.

  Args:
    users: (N,) user ids, each user's behaviors contiguous.
    index: (N,) item index in [0, num_items), or -1 for a behavior whose item has no row
      (it still takes its position in the window).
    num_items: V.
    window: the largest position gap that co-occurs.
  """

  def __init__(self, users: np.ndarray, index: np.ndarray, num_items: int, window: int):
    if window < 1:
      raise ValueError(f"window must be >= 1, got {window}")
    self.num_items, self.window = num_items, window
    new_user = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
    # Each user's behaviors, then `window` padding rows, so a plain running sum over a chunk
    # never reaches another user; padding and item-less rows gather the zero row V.
    position = np.arange(len(users)) + window * (np.cumsum(new_user) - 1)
    self._chunks = []
    for begin, end in _chunks(np.flatnonzero(new_user), len(users)):
      rows = position[begin:end] - position[begin]
      gathered = np.full(rows[-1] + window + 1, num_items, np.int32)
      gathered[rows] = np.where(index[begin:end] >= 0, index[begin:end], num_items)
      self._chunks.append(_Chunk(gathered, num_items))
    self.self_pairs = self._self_pairs()

  def _self_pairs(self) -> np.ndarray:
    """(V,) float64: ordered pairs of one item with itself within the window, per item."""
    counts = np.zeros(self.num_items + 1)
    for chunk in self._chunks:
      gathered = chunk.gathered
      for lag in range(1, self.window + 1):
        same = gathered[lag:][gathered[:-lag] == gathered[lag:]]
        counts += 2 * np.bincount(same, minlength=self.num_items + 1)
    return counts[:-1]

  def matmat(self, x: np.ndarray) -> np.ndarray:
    """C @ x: (V, k) -> (V, k) float64 (sums in float32, relative error ~1e-6)."""
    x = np.asarray(x)
    k, window = x.shape[1], self.window
    extended = np.vstack([x.astype(np.float32), np.zeros((1, k), np.float32)])
    out = np.zeros(x.shape)
    longest = max((len(chunk.gathered) for chunk in self._chunks), default=0)
    # running[window + i]: the sum of a chunk's rows before row i (zero before the chunk)
    running = np.zeros((longest + 2 * window + 1, k), np.float32)
    near = np.empty((longest, k), np.float32)
    for chunk in self._chunks:
      n = len(chunk.gathered)
      rows = np.take(extended, chunk.gathered, axis=0)  # (n, k)
      np.cumsum(rows, axis=0, out=running[window + 1:n + window + 1])
      running[n + window + 1:n + 2 * window + 1] = running[n + window]
      np.subtract(running[2 * window + 1:n + 2 * window + 1], running[:n], out=near[:n])
      near[:n] -= rows  # the window around each row, without the row itself
      out[chunk.items] += chunk.scatter @ near[:n]
    return out - self.self_pairs[:, None] * x

  def degrees(self) -> np.ndarray:
    """(V,) float64 row sums of C."""
    return self.matmat(np.ones((self.num_items, 1)))[:, 0]


class _Chunk:  # pylint: disable=too-few-public-methods
  """Whole users' behaviors: `gathered` (n,) int32 item rows, padding and item-less rows V;
  `items` (u,) the distinct items among them; `scatter` (u, n) their one-hot, transposed."""

  def __init__(self, gathered: np.ndarray, num_items: int):
    self.gathered = gathered
    self.items, inverse = np.unique(gathered, return_inverse=True)
    real = gathered < num_items
    if len(self.items) and self.items[-1] == num_items:
      self.items = self.items[:-1]
    self.scatter = scipy.sparse.csr_matrix(
        (np.ones(real.sum(), np.float32), (inverse[real], np.flatnonzero(real))),
        shape=(len(self.items), len(gathered)))


def _chunks(user_starts: np.ndarray, total: int) -> list[tuple[int, int]]:
  """(begin, end) behavior ranges of whole users, a new one at the first user that starts in
  each CHUNK_ROWS-long stretch (so at most ~2 x CHUNK_ROWS, or one longer user)."""
  _, first = np.unique(user_starts // CHUNK_ROWS, return_index=True)
  return list(itertools.pairwise([*user_starts[first], total]))
