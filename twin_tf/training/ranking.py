"""Per-user ranking quality of the test candidates: NDCG@k and recall@k (keras-rs metrics).

Each user's candidates (their impressions of the split) form one ranked list, labels are the
clicks. Only users with more than k candidates and at least one click count: a shorter list
has recall@k = 1 whatever the scores, and a list without a click has nothing to find.
"""

from __future__ import annotations

import keras_rs
import numpy as np


def user_lists(scores, users, labels, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Candidates grouped into one padded row per eligible user.

  Args:
    scores, users, labels: (N,) one entry per candidate.
  Returns:
    (labels (U, M) float32 with -1 at padding, scores (U, M) float32), M the longest list.
  """
  scores, users, labels = np.asarray(scores), np.asarray(users), np.asarray(labels)
  order = np.argsort(users, kind="stable")
  _, starts, counts = np.unique(users[order], return_index=True, return_counts=True)
  clicks = np.add.reduceat(labels[order].astype(np.int64), starts) if len(order) else starts
  keep = (counts > k) & (clicks > 0)
  row_of_user = np.cumsum(keep) - 1  # (users,) row in the output, valid where keep
  position = np.arange(len(order)) - np.repeat(starts, counts)  # rank within the user
  kept = np.repeat(keep, counts)
  rows, columns = np.repeat(row_of_user, counts)[kept], position[kept]
  shape = (int(keep.sum()), int(counts[keep].max()) if keep.any() else 1)
  out_labels = np.full(shape, -1.0, np.float32)
  out_scores = np.zeros(shape, np.float32)
  out_labels[rows, columns] = labels[order][kept]
  out_scores[rows, columns] = scores[order][kept]
  return out_labels, out_scores

def ranking_metrics(scores, users, labels, k: int = 10) -> dict:
  """{"k", "users", "ndcg", "recall"}: means over eligible users (NaN when there are none)."""
  list_labels, list_scores = user_lists(scores, users, labels, k)
  result = {"k": k, "users": int(len(list_labels))}
  for name, metric in (("ndcg", keras_rs.metrics.NDCG(k=k, shuffle_ties=False)),
                       ("recall", keras_rs.metrics.RecallAtK(k=k, shuffle_ties=False))):
    if len(list_labels):
      metric.update_state(list_labels, list_scores)
      result[name] = float(metric.result())
    else:
      result[name] = float("nan")
  return result
