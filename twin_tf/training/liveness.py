"""Is the target attention live? The scale of alpha's two terms and how much the GSU's choice
depends on the candidate.

The GSU ranks a user's clusters by alpha' summed over heads, s = t + o: the target term t
(K_h W_h . q W_q / sqrt(d_k), the only part that depends on the candidate) and the
per-cluster term o (cross bias + ln n). When t is tiny against o, the GSU picks the same
clusters for every candidate: the long-term module is a user summary, not target attention.
Reported over fixed samples of users (in id order, with at least two impressions in the
split; their first `max_candidates` impressions):
  target_std    sqrt of the mean over impressions of the variance of t over the user's
                long-term positions (the first `max_users` users)
  bias_std      the same of o
  jaccard       mean pairwise Jaccard index of the candidates' top-K sets, averaged over the
                first `max_users` users with more than K positions (1: the same clusters for
                every candidate)
  users, impressions, jaccard_users   what the figures are over
"""

from __future__ import annotations

import itertools

import numpy as np

from twin_tf.data import schema
from twin_tf.model.layers.sequence_ops import MASK_VALUE


def sample_impressions(users: np.ndarray, eligible: np.ndarray, max_users: int,
                       max_candidates: int) -> list[np.ndarray]:
  """Per sampled user (the first max_users ids with at least two impressions whose
  impressions are all eligible), the indices of their first max_candidates impressions
  (impressions are in time order within a user)."""
  ids, counts = np.unique(users, return_counts=True)
  ok = np.isin(ids, users[~eligible], invert=True) & (counts >= 2)
  return [np.flatnonzero(users == user)[:max_candidates] for user in ids[ok][:max_users]]


def gsu_terms(positions: np.ndarray, queries: np.ndarray):
  """(target (B, C, L), per-position term (B, L), valid (B, L)) from CtrModel.gsu_factors."""
  target = np.einsum("bld,bcd->bcl", positions[..., :-1], queries[..., :-1])
  offset = positions[..., -1]
  return target, offset, offset > MASK_VALUE / 2


def jaccard_of_top_k(scores: np.ndarray, valid: np.ndarray, k: int) -> float:
  """Mean pairwise Jaccard index of the top-k sets of the rows of scores (C, L) over the
  valid positions (L,); NaN with fewer than two rows or at most k valid positions."""
  if len(scores) < 2 or valid.sum() <= k:
    return float("nan")
  return _mean_jaccard([_top_k_set(row, valid, k) for row in scores])


def _top_k_set(scores: np.ndarray, valid: np.ndarray, k: int) -> set[int]:
  """The positions of the k largest of scores (L,) among the valid ones (L,)."""
  return set(np.argpartition(-np.where(valid, scores, -np.inf), k - 1)[:k].tolist())


def _mean_jaccard(tops: list[set]) -> float:
  return float(np.mean([len(a & b) / len(a | b) for a, b in itertools.combinations(tops, 2)]))


def _summary(target_var: list, bias_var: list, jaccards: list, users: int, impressions: int,
             k: int) -> dict:
  """The module docstring's figures from per-impression variances and per-user Jaccards."""
  return {"target_std": float(np.sqrt(np.mean(target_var))) if target_var else None,
          "bias_std": float(np.sqrt(np.mean(bias_var))) if bias_var else None,
          "jaccard": float(np.mean(jaccards)) if jaccards else None,
          "users": users, "impressions": impressions, "jaccard_users": len(jaccards),
          "top_k": k}


def attention_liveness(model, builder, split: str = "test", max_users: int = 100,
                       max_candidates: int = 16) -> dict | None:
  """The figures of the module docstring for a trained model with a GSU (None otherwise).

  builder: the run's DatasetBuilder (training.input_pipeline) over the examples.
  """
  if model.config.long_term != "gsu":
    return None
  users = builder.data.impressions[split][schema.USER_ID]
  k = model.config.gsu_top_k
  everyone = sample_impressions(users, np.ones(len(users), bool), max_users, max_candidates)
  long = sample_impressions(users, builder.example_lengths(split) > k, max_users,
                            max_candidates)
  target_var, bias_var, jaccards = [], [], []
  for chosen in everyone:
    target, offset, valid = _terms(model, builder, split, chosen)
    keep = valid.sum(axis=1) >= 2
    target_var += [np.var(t[v]) for t, v in zip(target[keep], valid[keep])]
    bias_var += [np.var(o[v]) for o, v in zip(offset[keep], valid[keep])]
  for chosen in long:
    # One long-term sequence per user; the per-position term differs between its
    # impressions only through the behaviors' age, so each candidate ranks by its own row.
    target, offset, valid = _terms(model, builder, split, chosen)
    jaccards.append(jaccard_of_top_k(target + offset, valid[0], k))
  return _summary(target_var, bias_var, jaccards, len(everyone),
                  int(sum(map(len, everyone))), k)


def _terms(model, builder, split, chosen):
  """(target (I, L), per-position term (I, L), valid (I, L)) of impressions `chosen`."""
  inputs = {k: np.asarray(v) for k, v in builder.inputs(split, chosen).items()}  # any backend
  positions, queries = model.gsu_factors(inputs)
  target, offset, valid = gsu_terms(np.asarray(positions), np.asarray(queries))
  return target[:, 0], offset, valid  # one candidate per impression


class StreamedLiveness:
  """attention_liveness over streamed batches: the same figures, its user samples being the
  first max_users users the stream meets (their first max_candidates examples) instead of
  the first in id order. add() skips the model once the samples are full."""

  def __init__(self, model, max_users: int = 100, max_candidates: int = 16):
    self._model, self._max_users, self._max_candidates = model, max_users, max_candidates
    self._live = model.config.long_term == "gsu"
    self._k = model.config.gsu_top_k if self._live else 0
    self._seen: dict[int, int] = {}  # user -> examples taken for the variances
    self._tops: dict[int, list[set]] = {}  # user -> top-k sets (users with > k positions)
    self._target_var, self._bias_var = [], []

  def add(self, inputs: dict, users: np.ndarray) -> None:
    """One batch: model inputs {name: (B, ...)}, users (B,)."""
    take = self._wanted(users, self._seen)
    if not self._live or not take.any():
      return
    positions, queries = self._model.gsu_factors({k: np.asarray(v)[take]
                                                  for k, v in inputs.items()})
    target, offset, valid = gsu_terms(np.asarray(positions), np.asarray(queries))
    target = target[:, 0]  # one candidate per example
    for user, t, o, v in zip(users[take].tolist(), target, offset, valid):
      self._seen[user] = self._seen.get(user, 0) + 1
      if v.sum() >= 2:
        self._target_var.append(np.var(t[v]))
        self._bias_var.append(np.var(o[v]))
      if v.sum() > self._k and (user in self._tops or len(self._tops) < self._max_users):
        self._tops.setdefault(user, []).append(_top_k_set(t + o, v, self._k))

  def _wanted(self, users: np.ndarray, taken: dict[int, int]) -> np.ndarray:
    """(B,) bool: the examples still wanted, at most max_candidates a user, in order."""
    want = np.zeros(len(users), bool)
    counts = dict(taken)
    for i, user in enumerate(users.tolist()):
      if user not in counts and len(counts) >= self._max_users:
        continue
      if counts.get(user, 0) < self._max_candidates:
        counts[user] = counts.get(user, 0) + 1
        want[i] = True
    return want

  def result(self) -> dict | None:
    """attention_liveness' dict (None without a GSU)."""
    if not self._live:
      return None
    jaccards = [_mean_jaccard(tops) for tops in self._tops.values() if len(tops) >= 2]
    return _summary(self._target_var, self._bias_var, jaccards, len(self._seen),
                    int(sum(self._seen.values())), self._k)
