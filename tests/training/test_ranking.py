"""Per-user NDCG@k and recall@k against hand-computed values."""

import math

import numpy as np

from twin_tf.training.ranking import ranking_metrics, user_lists


def test_user_lists_keep_users_with_more_than_k_candidates_and_a_click():
  users = np.array([7, 3, 7, 3, 3, 9, 9, 9])
  labels = np.array([1, 0, 0, 0, 0, 0, 0, 0])  # user 3: no click; user 9: no click
  scores = np.arange(8, dtype=float)
  list_labels, list_scores = user_lists(scores, users, labels, k=1)
  np.testing.assert_array_equal(list_labels, [[1, 0]])
  np.testing.assert_array_equal(list_scores, [[0, 2]])


def test_ndcg_and_recall_match_a_hand_computation():
  # user 1: 4 candidates, clicks on the 2nd and 4th best scores; user 2: click ranked first.
  users = np.array([1, 1, 1, 1, 2, 2, 2])
  scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1, 0.2])
  labels = np.array([0, 1, 0, 1, 1, 0, 0])
  result = ranking_metrics(scores, users, labels, k=2)
  dcg_1 = (2 ** 1 - 1) / math.log2(3)  # the click at rank 2 (gain 2^rel - 1)
  ideal_1 = 1 / math.log2(2) + 1 / math.log2(3)
  expected_ndcg = (dcg_1 / ideal_1 + 1.0) / 2
  expected_recall = (1 / 2 + 1 / 1) / 2
  assert result["users"] == 2 and result["k"] == 2
  np.testing.assert_allclose(result["ndcg"], expected_ndcg, rtol=1e-5)
  np.testing.assert_allclose(result["recall"], expected_recall, rtol=1e-5)


def test_no_eligible_user_gives_nan():
  result = ranking_metrics(np.array([0.1]), np.array([1]), np.array([1]), k=10)
  assert result["users"] == 0 and math.isnan(result["ndcg"])
