"""Item embedding tables and the PPMI-SVD bootstrap."""

import numpy as np
import pytest

from twin_tf.clustering.embeddings import ItemEmbeddingTable, bootstrap_embeddings
from twin_tf.config import EmbeddingConfig
from twin_tf.data.feature_spec import MOVIELENS


def test_lookup_marks_missing_items():
  table = ItemEmbeddingTable(np.array([30, 10, 20]), np.array([[3.0], [1.0], [2.0]]))
  vectors, found = table.lookup(np.array([20, 99, 10, 5]))
  np.testing.assert_array_equal(found, [True, False, True, False])
  np.testing.assert_array_equal(vectors[:, 0], [2.0, 0.0, 1.0, 0.0])


def test_duplicate_ids_rejected():
  with pytest.raises(ValueError, match="distinct"):
    ItemEmbeddingTable(np.array([1, 1]), np.zeros((2, 3)))


def test_save_load_round_trip(tmp_path):
  table = ItemEmbeddingTable(np.array([5, 2]), np.random.rand(2, 4))
  table.save(tmp_path / "t.npz")
  loaded = ItemEmbeddingTable.load(tmp_path / "t.npz")
  np.testing.assert_array_equal(loaded.item_ids, [2, 5])
  np.testing.assert_array_equal(loaded.vectors, table.vectors)


def _two_communities(seed=0):
  """SYNTHETIC: users 0-49 consume items 1-40, users 50-99 items 41-80; item 81 seen once."""
  rng = np.random.default_rng(seed)
  users, items = [], []
  for u in range(100):
    pool = np.arange(1, 41) if u < 50 else np.arange(41, 81)
    chosen = rng.choice(pool, 15, replace=False)
    users += [u] * 15
    items += list(chosen)
  users.append(0)
  items.append(81)
  columns = MOVIELENS.empty_columns(len(users))
  columns["user_id"][:] = users
  columns["item_id"][:] = items
  columns["timestamp"][:] = np.arange(len(users))
  return columns


def test_bootstrap_separates_communities_and_skips_rare_items():
  table = bootstrap_embeddings(_two_communities(), EmbeddingConfig(dim=8, min_count=2))
  assert 81 not in table.item_ids
  vectors, found = table.lookup(np.arange(1, 81))
  assert found.all()
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
  cos = vectors @ vectors.T
  same = np.add.outer(np.arange(80) < 40, np.arange(80) < 40) != 1
  off_diagonal = ~np.eye(80, dtype=bool)
  assert cos[same & off_diagonal].mean() > cos[~same].mean() + 0.3


def test_bootstrap_is_deterministic():
  a = bootstrap_embeddings(_two_communities(), EmbeddingConfig(dim=8))
  b = bootstrap_embeddings(_two_communities(), EmbeddingConfig(dim=8))
  np.testing.assert_array_equal(a.vectors, b.vectors)
