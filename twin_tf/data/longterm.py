"""A SYNTHETIC long-term log: clicks follow lasting, item-level tastes, some dormant for months.

Nothing here is real data; every file it writes is named SYNTHETIC. It is the benchmark where
TWIN-V2's claim should show: the signal is in which items a user liked long ago, not in
categories or recent behaviors. The generative model:
  items      `num_items` items with latent unit vectors v_i in R^dim; category and
             year_bucket drawn independently of v (so no item feature carries the taste);
             an item bias b_i ~ N(0, item_bias_std) (the item-only signal) and a popularity
             Zipf(1.0); duration lognormal around 60 s.
  users      n behaviors, log-uniform in [min_behaviors, max_behaviors], one every
             0.5-5 hours on average from a start in 2018-2019; `min_active_tastes`-
             `max_active_tastes` active tastes t_k (unit vectors) and `dormant_tastes` more
             that fall dormant after the first `active_until` of the user's life-cycle:
             still liked, no longer shown. More dormant tastes add dormant signal without
             taking active tastes away (fewer active tastes would make a model of recent
             behaviors better at them, which mixes the two effects).
  exposure   each behavior is an item shown to the user: with probability `explore` a
             popular item (any taste), else an item near one taste, p(i | k) ~
             exp(sharpness v_i . t_k). Before the dormancy every taste is shown equally;
             after it, the dormant tastes are shown with a total probability `dormant_share`
             (default 0: never) and the active ones share the rest.
  click      p = sigmoid(base + affinity_weight * a + b_i), with the affinity
             a = log sum_k exp(sharpness v_i . t_k) / sharpness - mean: the candidate's
             similarity to ALL of the user's tastes, dormant ones included (a popular item
             near a dormant taste is clicked as often as one near an active taste). That p is
             saved (the oracle); label ~ Bernoulli(p). Completion rises with a, so the
             completion groups carry the taste too.
Truth (`truth_path(log)`, SYNTHETIC in its name): per behavior, in the log's row order, the
user, timestamp, item, `click_probability` (the oracle), `item_probability` (the item's mean
true click probability over every user: the item-only score), `taste` (the user's taste
it was shown from, -1 for a popular item), `nearest_taste` (the user's taste nearest the
item, argmax_k v_i . t_k, popular items too) and `dormant` (after the user's dormancy,
nearest a dormant taste). truth_of adds `absent_from_recent`: none of the
user's previous RECENT_WINDOW behaviors was shown from the nearest taste: the part of the
affinity a model of recent behaviors cannot see. `dormant_tastes` sets how much
of the log that is (of test impressions, at 1 / 2 / 4 dormant tastes: ~0.10 / 0.18 / 0.29);
a dormant taste shown at any `dormant_share` above ~1/50 is back in the recent window at once.
The feature spec is movielens-shaped (category, year_bucket; tagged) under the name
"synthetic_longterm".
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from twin_tf.data import schema
from twin_tf.data.feature_spec import FeatureSpec, ItemFeature
from twin_tf.data.synthetic import START, sigmoid

SPEC = FeatureSpec("synthetic_longterm", (ItemFeature("category"), ItemFeature("year_bucket")),
                   ("tagged",))
HOUR = 3_600
TRUTH_FIELDS = ("click_probability", "item_probability", "dormant", "taste", "nearest_taste")
RECENT_WINDOW = 50


@dataclasses.dataclass(frozen=True)
class LongTermConfig:
  """Attributes: see the module docstring; every setting of the generator."""

  users: int = 1_000
  min_behaviors: int = 500
  max_behaviors: int = 8_000
  num_items: int = 20_000
  dim: int = 16
  num_categories: int = 40
  min_active_tastes: int = 3
  max_active_tastes: int = 5
  dormant_tastes: int = 1
  active_until: float = 0.5
  dormant_share: float = 0.0
  explore: float = 0.3
  sharpness: float = 8.0
  base: float = -0.8
  affinity_weight: float = 6.0
  item_bias_std: float = 0.5
  seed: int = 0

  def __post_init__(self):
    if not 1 <= self.min_active_tastes <= self.max_active_tastes:
      raise ValueError("need 1 <= min_active_tastes <= max_active_tastes")
    if self.dormant_tastes < 0:
      raise ValueError(f"dormant_tastes must be >= 0, got {self.dormant_tastes}")
    for name in ("active_until", "dormant_share", "explore"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    if not self.sharpness > 0:
      raise ValueError(f"sharpness must be > 0, got {self.sharpness}")
    if not 1 <= self.min_behaviors <= self.max_behaviors:
      raise ValueError("need 1 <= min_behaviors <= max_behaviors")


def truth_path(log: str | pathlib.Path) -> pathlib.Path:
  """Where the truth of a SYNTHETIC long-term log lies: beside it, SYNTHETIC in the name."""
  log = pathlib.Path(log)
  return log.with_name(log.name.split(".")[0] + ".truth_SYNTHETIC.npz")


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def longterm_log(config: LongTermConfig = LongTermConfig()
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(SYNTHETIC behavior columns of SPEC, users in id order and each in time order;
  truth {TRUTH_FIELDS: (N,)} in the same rows)."""
  rng = np.random.default_rng(config.seed)
  items = _item_vectors(rng, config)
  popularity = 1.0 / np.arange(1, config.num_items + 1)
  popularity = rng.permutation(popularity / popularity.sum())
  item_bias = rng.normal(0.0, config.item_bias_std, config.num_items)
  category = rng.integers(1, config.num_categories + 1, config.num_items)
  year = rng.integers(1, 21, config.num_items)
  duration = np.exp(rng.normal(np.log(60.0), 0.6, config.num_items)).astype(np.float32)
  sizes = np.exp(rng.uniform(np.log(config.min_behaviors), np.log(config.max_behaviors + 1),
                             config.users)).astype(np.int64)
  affinity_mean = _mean_affinity(items, config, rng)
  parts, truths = [], []
  for user, n in enumerate(sizes):
    columns, truth = _user(user, int(n), rng, config, items, popularity, item_bias,
                           affinity_mean)
    columns["category"], columns["year_bucket"] = category[columns[schema.ITEM_ID] - 1], \
        year[columns[schema.ITEM_ID] - 1]
    columns[schema.DURATION] = duration[columns[schema.ITEM_ID] - 1]
    columns[schema.PLAY_TIME] = (columns.pop("completion") * columns[schema.DURATION]
                                 ).astype(np.float32)
    parts.append(columns)
    truths.append(truth)
  columns = schema.concat(parts)
  truth = {k: np.concatenate([t[k] for t in truths]) for k in truths[0]}
  item = columns[schema.ITEM_ID]
  sums = np.bincount(item, truth["click_probability"], config.num_items + 1)
  counts = np.maximum(np.bincount(item, minlength=config.num_items + 1), 1)
  truth["item_probability"] = (sums / counts)[item]
  return columns, truth


def item_vectors(config: LongTermConfig) -> np.ndarray:
  """(num_items, dim) the true unit vectors of the log's items (item id i is row i - 1)."""
  return _item_vectors(np.random.default_rng(config.seed), config)


def _item_vectors(rng: np.random.Generator, config: LongTermConfig) -> np.ndarray:
  """The generator's first draw from `rng`."""
  return _unit(rng.standard_normal((config.num_items, config.dim)))


def _logits(vectors: np.ndarray, tastes: np.ndarray, sharpness: float) -> np.ndarray:
  """sharpness x the similarity to every taste: (N, dim), (K, dim) -> (N, K)."""
  return sharpness * vectors @ tastes.T


def _affinity(logits: np.ndarray, sharpness: float) -> np.ndarray:
  """Soft maximum of the similarity to every taste: _logits (N, K) -> (N,)."""
  top = logits.max(axis=1)
  return (top + np.log(np.exp(logits - top[:, None]).sum(axis=1))) / sharpness


def _mean_affinity(items, config, rng) -> float:
  """The affinity of a random item to random tastes, so that `base` is the mean logit."""
  tastes = _unit(rng.standard_normal((config.max_active_tastes + config.dormant_tastes,
                                       config.dim)))
  return float(_affinity(_logits(items[:2_000], tastes, config.sharpness),
                         config.sharpness).mean())


def _user(user, n, rng, config, items, popularity, item_bias, affinity_mean):
  num_tastes = int(rng.integers(config.min_active_tastes, config.max_active_tastes + 1)
                   ) + config.dormant_tastes
  tastes = _unit(rng.standard_normal((num_tastes, config.dim)))
  dormant_taste = np.arange(num_tastes) < config.dormant_tastes
  gaps = rng.exponential(rng.uniform(0.5, 5.0) * HOUR, n)
  times = START + int(rng.integers(0, 2 * 365 * 24)) * HOUR + np.cumsum(
      np.maximum(gaps, 1.0)).astype(np.int64) + np.arange(n)  # strictly increasing
  late = np.arange(n) >= int(config.active_until * n)
  weights = np.full((n, num_tastes), 1.0 / num_tastes)
  if config.dormant_tastes:
    active = ~dormant_taste
    weights[late] = np.where(dormant_taste, config.dormant_share / dormant_taste.sum(),
                             (1 - config.dormant_share) / active.sum())
  slot = (weights.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
  slot = np.minimum(slot, num_tastes - 1)
  explore = rng.random(n) < config.explore
  item = np.empty(n, np.int64)
  item[explore] = rng.choice(len(items), int(explore.sum()), p=popularity)
  for k in range(num_tastes):
    chosen = ~explore & (slot == k)
    if chosen.any():
      logits = config.sharpness * items @ tastes[k]
      p = np.exp(logits - logits.max()) * popularity ** 0.3
      item[chosen] = rng.choice(len(items), int(chosen.sum()), p=p / p.sum())
  logits = _logits(items[item], tastes, config.sharpness)  # (n, num_tastes)
  affinity = _affinity(logits, config.sharpness) - affinity_mean
  probability = sigmoid(config.base + config.affinity_weight * affinity + item_bias[item])
  click = rng.random(n) < probability
  completion = np.clip(sigmoid(4.0 * affinity + rng.normal(0, 0.7, n)) * 1.1, 0.0, 1.0)
  columns = SPEC.empty_columns(n)
  columns[schema.USER_ID][:] = user
  columns[schema.ITEM_ID] = item + 1  # 0 is padding
  columns[schema.TIMESTAMP] = times
  columns[schema.LABEL] = click.astype(np.int64)
  columns["completion"] = completion
  columns["tagged"] = (click & (rng.random(n) < 0.02)).astype(np.int64)
  nearest = np.argmax(logits, axis=1)  # sharpness > 0: the most similar taste
  truth = {"click_probability": probability.astype(np.float32),
           "dormant": dormant_taste[nearest] & late,
           "taste": np.where(explore, -1, slot).astype(np.int8),
           "nearest_taste": nearest.astype(np.int8)}
  return columns, truth


def save_truth(columns: dict[str, np.ndarray], truth: dict[str, np.ndarray],
               path: str | pathlib.Path) -> None:
  """Writes the truth with the keys it is looked up by (user_id, timestamp, item_id)."""
  np.savez(path, **{k: columns[k] for k in (schema.USER_ID, schema.TIMESTAMP, schema.ITEM_ID)},
           **{k: truth[k] for k in TRUTH_FIELDS})


def absent_from_recent(users: np.ndarray, timestamps: np.ndarray, nearest: np.ndarray,
                       shown: np.ndarray, window: int = RECENT_WINDOW) -> np.ndarray:
  """(N,) bool: none of behavior n's user's previous `window` behaviors (in time order) was
  shown from the taste nearest n. Inputs (N,), any row order: nearest taste, and the taste
  each was shown from (-1: none)."""
  order = np.lexsort((timestamps, users))  # each user's behaviors contiguous, in time order
  size = len(order)
  position = np.empty(size, np.int64)
  position[order] = np.arange(size)
  from_taste = np.flatnonzero(shown >= 0)
  if not len(from_taste):  # nothing was shown from a taste (explore = 1)
    return np.ones(size, bool)
  keys = shown[from_taste].astype(np.int64) * size + position[from_taste]
  rank = np.argsort(keys)
  keys, rows = keys[rank], from_taste[rank]
  # the latest behavior shown from n's nearest taste before n (if any)
  before = np.searchsorted(keys, nearest.astype(np.int64) * size + position) - 1
  found = before >= 0
  before = np.maximum(before, 0)
  seen = (found & (keys[before] // size == nearest) & (users[rows[before]] == users)
          & (position - keys[before] % size <= window))
  return ~seen


def truth_of(path: str | pathlib.Path, users: np.ndarray, timestamps: np.ndarray,
             items: np.ndarray) -> dict[str, np.ndarray]:
  """The truth (TRUTH_FIELDS and absent_from_recent: (N,) each) of behaviors given by their
  (user, timestamp, item).

  Raises ValueError naming the first behavior the truth does not hold (a log other than the
  one the truth was written with)."""
  saved = np.load(path)
  missing = [k for k in TRUTH_FIELDS if k not in saved.files]
  if missing:
    raise ValueError(f"{path}: no truth field {missing[0]!r} (written by an older generator); "
                     "make the log again with twin-tf synth --kind long-term")
  keys = np.stack([saved[schema.USER_ID], saved[schema.TIMESTAMP]], axis=1)
  order = np.lexsort((keys[:, 1], keys[:, 0]))
  sorted_keys = keys[order]
  wanted = np.stack([np.asarray(users), np.asarray(timestamps)], axis=1)
  flat = sorted_keys[:, 0] * (1 << 40) + sorted_keys[:, 1] - START
  query = wanted[:, 0] * (1 << 40) + wanted[:, 1] - START
  at = np.minimum(np.searchsorted(flat, query), len(flat) - 1)
  rows = order[at]
  found = (flat[at] == query) & (saved[schema.ITEM_ID][rows] == np.asarray(items))
  if not found.all():
    first = int(np.flatnonzero(~found)[0])
    raise ValueError(f"{path}: no truth for user {wanted[first, 0]} at timestamp "
                     f"{wanted[first, 1]} (item {items[first]}): not this truth's log")
  absent = absent_from_recent(saved[schema.USER_ID], saved[schema.TIMESTAMP],
                              saved["nearest_taste"], saved["taste"])
  return {**{k: saved[k][rows] for k in TRUTH_FIELDS}, "absent_from_recent": absent[rows]}
