"""Offline metrics: AUC, GAUC (impression-weighted per-user AUC), logloss, GAUC by activity.

Plain numpy, no sklearn: AUC is the Mann-Whitney statistic with tied scores counted half.
"""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """P(score of a random positive > score of a random negative), ties count 1/2.

  Returns NaN when labels hold only one class.
  """
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, dtype=np.float64)
  positives, negatives = labels.sum(), (~labels).sum()
  if positives == 0 or negatives == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  ranks = np.empty(len(scores), dtype=np.float64)
  # average rank (1-based) within groups of tied scores
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  average = first + (counts + 1) / 2.0
  ranks[order] = np.repeat(average, counts)
  return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
  """sum_u w_u AUC_u / sum_u w_u, w_u = the user's impressions; one-class users skipped."""
  weighted, total = _per_user_auc(labels, scores, users)
  return float(weighted.sum() / total.sum()) if total.sum() else float("nan")


def _per_user_auc(labels, scores, users):
  labels, scores, users = map(np.asarray, (labels, scores, users))
  order = np.argsort(users, kind="stable")
  boundaries = np.flatnonzero(np.diff(users[order])) + 1
  weighted, total = [], []
  for rows in np.split(order, boundaries):
    value = auc(labels[rows], scores[rows])
    if not np.isnan(value):
      weighted.append(value * len(rows))
      total.append(len(rows))
  return np.asarray(weighted), np.asarray(total)


def logloss(labels: np.ndarray, scores: np.ndarray, eps: float = 1e-7) -> float:
  p = np.clip(np.asarray(scores, dtype=np.float64), eps, 1 - eps)
  y = np.asarray(labels, dtype=np.float64)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def gauc_by_bucket(labels, scores, users, activity: np.ndarray, num_buckets: int = 4
                   ) -> list[dict]:
  """GAUC within user-activity quartiles (activity: per impression, e.g. life-cycle length).

  Returns [{"bucket", "min_activity", "max_activity", "users", "impressions", "gauc"}].
  """
  labels, scores, users, activity = map(np.asarray, (labels, scores, users, activity))
  per_user = {u: a for u, a in zip(users, activity)}
  edges = np.quantile(np.array(list(per_user.values())), np.linspace(0, 1, num_buckets + 1))
  bucket_of = np.clip(np.searchsorted(edges, activity, side="right") - 1, 0, num_buckets - 1)
  out = []
  for b in range(num_buckets):
    rows = bucket_of == b
    out.append({"bucket": b, "min_activity": int(edges[b]), "max_activity": int(edges[b + 1]),
                "users": int(len(np.unique(users[rows]))), "impressions": int(rows.sum()),
                "gauc": gauc(labels[rows], scores[rows], users[rows]) if rows.any()
                else float("nan")})
  return out


def all_metrics(labels, scores, users, activity) -> dict:
  return {"auc": auc(labels, scores), "gauc": gauc(labels, scores, users),
          "logloss": logloss(labels, scores),
          "gauc_by_bucket": gauc_by_bucket(labels, scores, users, activity)}
