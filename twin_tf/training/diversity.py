"""Diversity of what a model ranks first: distinct categories among each user's top-k.

For every user with more than k candidates (their test impressions), the candidates are
ranked by the model's score and the distinct categories among the k best are counted. The
paper reports that TWIN-V2 recommends more diversely than TWIN; this measures it offline.
"""

from __future__ import annotations

import numpy as np


def distinct_in_top_k(scores: np.ndarray, users: np.ndarray, categories: np.ndarray,
                      k: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """Distinct categories among each user's k highest-scored candidates.

  Args:
    scores, users, categories: (N,) one entry per candidate.
  Returns:
    (user ids (U,), distinct counts (U,)) for the U users with more than k candidates;
    ties in score are broken by candidate position (stable).
  """
  scores, users, categories = map(np.asarray, (scores, users, categories))
  order = np.lexsort((-scores, users))  # by user, then score descending
  sorted_users = users[order]
  starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
  counts = np.diff(np.r_[starts, len(order)])
  rank = np.arange(len(order)) - np.repeat(starts, counts)
  eligible = np.repeat(counts > k, counts)
  top = order[(rank < k) & eligible]
  pairs = np.unique(np.stack([users[top], categories[top]], axis=1), axis=0)
  user_ids, distinct = np.unique(pairs[:, 0], return_counts=True)
  return user_ids, distinct


def diversity(scores, users, categories, k: int = 10) -> dict:
  """{"k", "users", "mean_distinct", "histogram": [users with 1..k distinct categories]}."""
  _, distinct = distinct_in_top_k(scores, users, categories, k)
  return {"k": k, "users": int(len(distinct)),
          "mean_distinct": float(distinct.mean()) if len(distinct) else float("nan"),
          "histogram": np.bincount(distinct, minlength=k + 1)[1:].tolist()}


def random_ranking_diversity(users, categories, k: int = 10, seed: int = 0) -> dict:
  """The same measure for a ranking by random scores: the reference a model is read against."""
  scores = np.random.default_rng(seed).random(len(users))
  return diversity(scores, users, categories, k)
