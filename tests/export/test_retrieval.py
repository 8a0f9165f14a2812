"""GSU retrieval: exact against numpy, the augmented-vector trick against alpha', ScaNN."""

import numpy as np
import pytest

from twin_tf.export import retrieval
from twin_tf.export.retrieval import (
  ExactRetriever,
  ScannConfig,
  ScannRetriever,
  gsu_key_vectors,
  gsu_query_vectors,
  recall_at_k,
  scann_config,
  top_k_rows,
)
from twin_tf.model.layers import ClusterAwareTargetAttention

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("block_bytes", [1, 10 * 4 * 300, retrieval.BLOCK_BYTES])
def test_exact_matches_numpy_argsort_with_ties_to_the_lower_index(block_bytes, monkeypatch):
  """In blocks of equal size (4 of at most 8 candidates; 3 of at most 10), or all 27 at
  once."""
  monkeypatch.setattr(retrieval, "BLOCK_BYTES", block_bytes)
  monkeypatch.setattr(retrieval, "MIN_BLOCK_ROWS", 8)
  keys = RNG.integers(-2, 3, (300, 5)).astype(np.float32)  # many ties
  queries = RNG.integers(-2, 3, (27, 5)).astype(np.float32)
  got = ExactRetriever(keys).search(queries, k=20)
  scores = queries @ keys.T
  expected = np.argsort(-scores, axis=1, kind="stable")[:, :20]
  np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("length", [320, 1_000, 1_003, 5_000])
def test_top_k_rows_equals_a_stable_argsort(length):
  """The early-settling top-k (group maxima, then only the scores above their k-th) returns
  what a stable argsort does, ties to the lower index, for lengths that are no multiple of
  its groups; many ties sit at the k-th place."""
  scores = RNG.integers(-30, 30, (9, length)).astype(np.float32)
  scores[0] = 1.0  # a row of nothing but ties
  scores[1, ::7] = -0.0  # equal to 0.0
  scores[2] = RNG.standard_normal(length) * 1e-30  # tiny values, no ties
  expected = np.argsort(-scores, axis=1, kind="stable")[:, :20]
  np.testing.assert_array_equal(top_k_rows(scores, 20), expected)


def test_fewer_keys_than_k():
  got = ExactRetriever(np.eye(3, dtype=np.float32)).search(np.ones((2, 3), np.float32), k=100)
  assert got.shape == (2, 3)
  assert ExactRetriever(np.eye(3, dtype=np.float32)).search(
      np.ones((0, 3), np.float32)).shape == (0, 3)


def test_augmented_vectors_rank_as_alpha_summed_over_heads():
  """[keys, sum_h bias] . [q, 1] = sum_h alpha'_h, so MIPS returns the GSU's top-k."""
  layer = ClusterAwareTargetAttention(num_heads=4, key_dim=8)
  length, candidates = 500, 6
  inherent = RNG.standard_normal((1, length, 12)).astype(np.float32)
  cross = RNG.standard_normal((1, length, 5, 8)).astype(np.float32)
  size = RNG.integers(1, 21, (1, length)).astype(np.float32)
  valid = np.ones((1, length), bool)
  target = RNG.standard_normal((1, candidates, 12)).astype(np.float32)
  alpha = np.asarray(layer(inherent, cross, size, valid, target))[0]  # (C, L, H)
  keys = gsu_key_vectors(np.asarray(layer.item_keys(inherent))[0],
                         np.asarray(layer.bias(cross, size))[0])
  queries = gsu_query_vectors(np.asarray(layer.query_projection(target))[0])
  np.testing.assert_allclose(queries @ keys.T, alpha.sum(-1), rtol=1e-4, atol=1e-4)
  found = ExactRetriever(keys).search(queries, k=100)
  expected = np.argsort(-alpha.sum(-1), axis=1, kind="stable")[:, :100]
  assert recall_at_k(found, expected) >= 0.99  # float rounding may swap near-ties at the edge


def _mixture(num_keys, num_queries=20, dim=32):
  centers = RNG.standard_normal((50, dim)).astype(np.float32)
  keys = centers[RNG.integers(0, 50, num_keys)] + 0.5 * RNG.standard_normal((num_keys, dim))
  queries = centers[RNG.integers(0, 50, num_queries)] + 0.5 * RNG.standard_normal(
      (num_queries, dim))
  return keys.astype(np.float32), queries.astype(np.float32)


def test_config_by_size():
  assert scann_config(1_000).mode == "brute_force"
  assert scann_config(30_000).mode == "ah"
  tree = scann_config(100_000)
  assert tree.mode == "tree_ah" and tree.num_leaves == 316 and tree.reorder >= 100


@pytest.mark.parametrize("config", [ScannConfig("brute_force"),
                                    ScannConfig("tree_ah", num_leaves=60, leaves_to_search=12,
                                                reorder=400)])
def test_scann_recall_and_serialized_searcher(config, tmp_path):
  keys, queries = _mixture(6_000)
  retriever = ScannRetriever(keys, k=100, config=config)
  found = retriever.search(queries)
  assert found.shape == (20, 100)
  assert recall_at_k(found, ExactRetriever(keys).search(queries)) >= 0.95
  retriever.serialize(tmp_path / "searcher")
  reloaded = ScannRetriever.load(tmp_path / "searcher")
  np.testing.assert_array_equal(reloaded.search(queries), found)
  assert reloaded.config == config


def test_native_stderr_goes_to_the_log_and_comes_back(tmp_path, capfd):
  """ScaNN's absl lines are written by native code to file descriptor 2; the index build
  sends them to a log file instead of the console."""
  import os

  from twin_tf.export.retrieval import native_stderr_to
  with native_stderr_to(tmp_path / "third_party.log"):
    os.write(2, b"Could not normalize centroid due to zero norm\n")
  os.write(2, b"after\n")
  assert "zero norm" in (tmp_path / "third_party.log").read_text()
  err = capfd.readouterr().err
  assert "zero norm" not in err and "after" in err
