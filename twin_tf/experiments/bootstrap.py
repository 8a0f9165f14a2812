"""Paired bootstrap over users: a confidence interval for model A minus model B.

Both models score the same test impressions (several seeds each). One bootstrap sample draws
users with replacement; every impression of a drawn user counts as often as the user was
drawn. The statistic is mean-over-seeds metric(A) minus mean-over-seeds metric(B), so the
interval covers both the users' and the seeds' variation. AUC over a sample is the weighted
Mann-Whitney statistic (ties count 1/2); GAUC reuses each user's AUC, weighted by the user's
impressions times their draw count.
"""

from __future__ import annotations

import numpy as np

from twin_tf.training import metrics


def _weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """AUC of one score vector (N,) under R weightings (R, N) -> (R,)."""
  order = np.argsort(scores, kind="mergesort")
  sorted_scores, y = scores[order], labels[order].astype(bool)
  w = weights[:, order]
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  positive = np.add.reduceat(np.where(y, w, 0.0), starts, axis=1)  # (R, groups of ties)
  negative = np.add.reduceat(np.where(y, 0.0, w), starts, axis=1)
  below = np.cumsum(negative, axis=1) - negative  # negatives strictly below each group
  wins = (positive * (below + 0.5 * negative)).sum(axis=1)
  return wins / np.maximum(positive.sum(axis=1) * negative.sum(axis=1), 1e-12)


def _per_user_auc(labels, scores, user_index, num_users):
  """(AUC per user (U,), NaN where one class; impressions per user (U,))."""
  values = np.full(num_users, np.nan)
  order = np.argsort(user_index, kind="stable")
  bounds = np.flatnonzero(np.diff(user_index[order])) + 1
  for rows in np.split(order, bounds):
    values[user_index[rows[0]]] = metrics.auc(labels[rows], scores[rows])
  return values, np.bincount(user_index, minlength=num_users)


def paired_bootstrap(labels: np.ndarray, users: np.ndarray, scores_a: list[np.ndarray],
                     scores_b: list[np.ndarray], resamples: int = 1000, seed: int = 0,
                     chunk: int = 100) -> dict:
  """{"auc": {"mean", "ci_low", "ci_high"}, "gauc": {...}} of A minus B (95% intervals).

  Args:
    labels, users: (N,) the test impressions.
    scores_a, scores_b: one (N,) score array per seed of each model, on those impressions.
  """
  labels = np.asarray(labels)
  user_ids, user_index = np.unique(users, return_inverse=True)
  num_users = len(user_ids)
  per_user = [[_per_user_auc(labels, s, user_index, num_users) for s in scores]
              for scores in (scores_a, scores_b)]
  rng = np.random.default_rng(seed)
  draws = np.stack([np.bincount(rng.integers(0, num_users, num_users), minlength=num_users)
                    for _ in range(resamples)]).astype(np.float64)  # (R, U)
  auc_diff, gauc_diff = [], []
  for start in range(0, resamples, chunk):
    counts = draws[start:start + chunk]
    weights = counts[:, user_index]  # (r, N)
    mean_auc = [np.mean([_weighted_auc(labels, s, weights) for s in scores], axis=0)
                for scores in (scores_a, scores_b)]
    auc_diff.append(mean_auc[0] - mean_auc[1])
    mean_gauc = []
    for runs in per_user:
      values = []
      for auc_u, n_u in runs:
        valid = ~np.isnan(auc_u)
        w = counts[:, valid] * n_u[valid]
        values.append((w * auc_u[valid]).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12))
      mean_gauc.append(np.mean(values, axis=0))
    gauc_diff.append(mean_gauc[0] - mean_gauc[1])
  point = {
      "auc": np.mean([metrics.auc(labels, s) for s in scores_a]) -
             np.mean([metrics.auc(labels, s) for s in scores_b]),
      "gauc": np.mean([metrics.gauc(labels, s, users) for s in scores_a]) -
              np.mean([metrics.gauc(labels, s, users) for s in scores_b])}
  out = {}
  for name, samples in (("auc", np.concatenate(auc_diff)), ("gauc", np.concatenate(gauc_diff))):
    low, high = np.percentile(samples, [2.5, 97.5])
    out[name] = {"mean": float(point[name]), "ci_low": float(low), "ci_high": float(high)}
  return out
