"""Item embedding tables and the co-occurrence bootstrap (PPMI-SVD and spectral)."""

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


@pytest.mark.parametrize("method", ["ppmi-svd", "spectral"])
def test_bootstrap_separates_communities_and_skips_rare_items(method):
  table = bootstrap_embeddings(_two_communities(),
                               EmbeddingConfig(dim=8, min_count=2, method=method))
  assert 81 not in table.item_ids
  vectors, found = table.lookup(np.arange(1, 81))
  assert found.all()
  np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
  cos = vectors @ vectors.T
  same = np.add.outer(np.arange(80) < 40, np.arange(80) < 40) != 1
  off_diagonal = ~np.eye(80, dtype=bool)
  assert cos[same & off_diagonal].mean() > cos[~same].mean() + 0.3


@pytest.mark.parametrize("method", ["ppmi-svd", "spectral"])
def test_bootstrap_is_deterministic(method):
  a = bootstrap_embeddings(_two_communities(), EmbeddingConfig(dim=8, method=method))
  b = bootstrap_embeddings(_two_communities(), EmbeddingConfig(dim=8, method=method))
  np.testing.assert_array_equal(a.vectors, b.vectors)


def _spectral_reference(columns, window, dim):
  """Rows of U Lambda of the dense D^-1/2 C D^-1/2 minus its sqrt(D) direction, top `dim`
  eigenvalues, L2-normalized; C counted pair by pair here."""
  order = np.lexsort((columns["timestamp"], columns["user_id"]))
  users, items = columns["user_id"][order], columns["item_id"][order]
  ids = np.unique(items)
  index = np.searchsorted(ids, items)
  counts = np.zeros((len(ids), len(ids)))
  for i in range(len(users)):
    for j in range(max(0, i - window), min(len(users), i + window + 1)):
      if i != j and users[i] == users[j] and index[i] != index[j]:
        counts[index[i], index[j]] += 1
  degrees = counts.sum(axis=1)
  normalized = counts / np.sqrt(np.outer(degrees, degrees))
  trivial = np.sqrt(degrees) / np.linalg.norm(np.sqrt(degrees))
  values, vectors = np.linalg.eigh(normalized - np.outer(trivial, trivial))
  top = np.argsort(-values)[:dim]
  rows = vectors[:, top] * values[top]
  return ids, rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _four_tastes(users=40, per_user=60, seed=0):
  """SYNTHETIC: 4 tastes of 30 items each; every user mixes two of them."""
  rng = np.random.default_rng(seed)
  columns = MOVIELENS.empty_columns(users * per_user)
  columns["user_id"][:] = np.repeat(np.arange(users), per_user)
  tastes = np.stack([rng.choice(4, 2, replace=False) for _ in range(users)])
  chosen = tastes[np.arange(users).repeat(per_user), rng.integers(0, 2, users * per_user)]
  columns["item_id"][:] = 1 + 30 * chosen + rng.integers(0, 30, users * per_user)
  columns["timestamp"][:] = rng.permutation(users * per_user)  # time order != row order
  return columns


@pytest.mark.parametrize("dim", [3, 40])  # LOBPCG; and the dense path (3 x 44 > 120 items)
def test_spectral_vectors_match_a_dense_eigendecomposition(dim):
  """The cosines between items equal those of the dense reference: the cosine matrix does
  not depend on the basis chosen within an eigenspace, nor on signs."""
  columns = _four_tastes()
  table = bootstrap_embeddings(columns, EmbeddingConfig(dim=dim, window=3, min_count=1,
                                                        method="spectral"))
  ids, reference = _spectral_reference(columns, window=3, dim=dim)
  np.testing.assert_array_equal(table.item_ids, ids)
  np.testing.assert_allclose(table.vectors @ table.vectors.T, reference @ reference.T,
                             atol=2e-3 if dim == 3 else 1e-5)


@pytest.mark.parametrize("settings, field", [({"method": "word2vec"}, "method"),
                                             ({"window": 0}, "window"), ({"dim": 0}, "dim")])
def test_a_bad_embedding_setting_is_refused_by_name(settings, field):
  with pytest.raises(ValueError, match=field):
    EmbeddingConfig(**settings)
