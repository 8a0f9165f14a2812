"""The streamed windowed co-occurrence operator against a dense count matrix built here."""

import numpy as np
import pytest

from twin_tf.clustering import cooccurrence


def _dense_cooccurrence(users, index, num_items, window):
  """C[a, b]: ordered position pairs of one user, 1 <= |i - j| <= window, items a != b."""
  counts = np.zeros((num_items, num_items))
  for i in range(len(users)):
    for j in range(len(users)):
      a, b = index[i], index[j]
      if (i != j and users[i] == users[j] and abs(i - j) <= window and a >= 0 and b >= 0
          and a != b):
        counts[a, b] += 1
  return counts


@pytest.mark.parametrize("chunk_rows", [1, 7, 1 << 13])
def test_the_streamed_product_equals_the_dense_matrix_times_x(monkeypatch, chunk_rows):
  """Random logs: several users (one of one behavior), repeated items and item-less (-1)
  behaviors, every window from 1 to 5, chunks of one user up to the whole log."""
  monkeypatch.setattr(cooccurrence, "CHUNK_ROWS", chunk_rows)
  rng = np.random.default_rng(chunk_rows)
  for _ in range(12):
    n, num_items, window = int(rng.integers(1, 200)), int(rng.integers(2, 12)), \
        int(rng.integers(1, 6))
    users = np.sort(rng.integers(0, int(rng.integers(1, 15)), n))
    index = rng.integers(-1, num_items, n).astype(np.int32)
    operator = cooccurrence.WindowCooccurrence(users, index, num_items, window)
    dense = _dense_cooccurrence(users, index, num_items, window)
    x = rng.standard_normal((num_items, 3))
    scale = 1 + np.abs(dense).sum() * np.abs(x).max()
    np.testing.assert_allclose(operator.matmat(x), dense @ x, atol=1e-5 * scale)
    np.testing.assert_allclose(operator.degrees(), dense.sum(axis=1), atol=1e-5 * scale)


def test_users_never_co_occur_across_their_boundary():
  """Two users back to back, each with one item: no pair, whatever the window."""
  operator = cooccurrence.WindowCooccurrence(np.array([0, 0, 0, 1, 1]),
                                             np.array([0, 0, 0, 1, 1], np.int32), 2, 4)
  np.testing.assert_array_equal(operator.matmat(np.eye(2)), np.zeros((2, 2)))


def test_a_window_below_one_is_refused():
  with pytest.raises(ValueError, match="window"):
    cooccurrence.WindowCooccurrence(np.zeros(3), np.zeros(3, np.int32), 1, 0)
