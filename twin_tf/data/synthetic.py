"""SYNTHETIC life-cycle logs: users of 10^3-10^5 behaviors over years, for scale tests.

Nothing here is real data; every file it writes is named SYNTHETIC. The generative model:
  items      `num_items` items, each of one of `num_topics` topics (topic popularity Zipf(1.1));
             category = topic // 10 + 1, year_bucket = 1 + the item's release period (0-19),
             duration lognormal around 60 s.
  users      n behaviors, log-uniform in [min_behaviors, max_behaviors], at a steady rate of
             20-200 a day from a start in 2018-2020, so the largest users span years.
  interests  each user has a heavy-tailed mixture over 30 topics of their own (weights ~
             Zipf(1.5)); each interest recurs with long gaps: its weight is modulated by
             max(0, sin(2 pi t / period + phase)) with a period of 90-720 days, so a topic
             can be dormant for months and come back; the modulation drifts slowly.
  behavior   the topic is drawn from the modulated mixture, the item by popularity within
             it. Completion (play_time / duration) and click both rise with the user's BASE
             (unmodulated) interest in the topic: an interest last seen long ago still drives
             clicks, which is what a life-cycle model should recover. tagged: 1 in 50 of the
             clicked behaviors of the user's top-3 topics.
The feature spec is movielens-shaped (category, year_bucket; tagged) under the name
"synthetic".
"""

from __future__ import annotations

import dataclasses

import numpy as np

from twin_tf.data import schema
from twin_tf.data.feature_spec import FeatureSpec, ItemFeature

SPEC = FeatureSpec("synthetic", (ItemFeature("category"), ItemFeature("year_bucket")),
                   ("tagged",))
DAY = 86_400
START = 1_514_764_800  # 2018-01-01


@dataclasses.dataclass(frozen=True)
class SynthConfig:
  """Attributes: users, min_behaviors / max_behaviors per user, num_items, num_topics, seed."""

  users: int = 100
  min_behaviors: int = 1_000
  max_behaviors: int = 100_000
  num_items: int = 200_000
  num_topics: int = 500
  seed: int = 0


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def synthetic_log(config: SynthConfig = SynthConfig()) -> dict[str, np.ndarray]:
  """SYNTHETIC behavior columns (SPEC's fields), users in id order, each in time order."""
  return schema.concat(list(synthetic_users(config)))


def synthetic_users(config: SynthConfig = SynthConfig(), first_user: int = 0):
  """synthetic_log's columns one user at a time (memory bounded by the largest user), with
  user ids from `first_user`."""
  rng = np.random.default_rng(config.seed)
  topic_of_item = rng.choice(config.num_topics, config.num_items,
                             p=_zipf(config.num_topics, 1.1, rng))
  by_topic = np.argsort(topic_of_item, kind="stable")
  topic_start = np.searchsorted(topic_of_item[by_topic], np.arange(config.num_topics + 1))
  release = rng.integers(0, 20, config.num_items)
  duration = np.exp(rng.normal(np.log(60.0), 0.6, config.num_items)).astype(np.float32)
  sizes = np.exp(rng.uniform(np.log(config.min_behaviors), np.log(config.max_behaviors + 1),
                             config.users)).astype(np.int64)
  for u, n in enumerate(sizes):
    yield _user(first_user + u, int(n), rng, config, topic_of_item, by_topic, topic_start,
                release, duration)


def _zipf(n: int, exponent: float, rng) -> np.ndarray:
  weights = 1.0 / np.arange(1, n + 1) ** exponent
  return rng.permutation(weights / weights.sum())


def _user(user, n, rng, config, topic_of_item, by_topic, topic_start, release, duration):
  topics = rng.choice(config.num_topics, 30, replace=False)
  base = _zipf(30, 1.5, rng)  # (30,) the user's lasting interests
  rate = rng.uniform(20, 200)  # behaviors a day
  times = START + rng.integers(0, 2 * 365 * DAY) + np.sort(
      rng.uniform(0, n / rate * DAY, n)).astype(np.int64)
  period = rng.uniform(90, 720, 30) * DAY
  phase = rng.uniform(0, 2 * np.pi, 30)
  drift = rng.uniform(-0.3, 0.3, 30) / (365 * DAY)  # the period itself drifts slowly
  cycle = 2 * np.pi * (times[:, None] - START) / period[None] * (1 + drift[None] *
                                                                  (times[:, None] - START))
  mixture = base[None] * (0.05 + np.maximum(0.0, np.sin(cycle + phase[None])))  # (n, 30)
  cumulative = np.cumsum(mixture / mixture.sum(1, keepdims=True), axis=1)
  slot = np.minimum((cumulative < rng.random(n)[:, None]).sum(1), 29)
  topic = topics[slot]
  count = topic_start[topic + 1] - topic_start[topic]
  pick = np.minimum((rng.random(n) ** 2 * count).astype(np.int64), np.maximum(count - 1, 0))
  item = by_topic[np.minimum(topic_start[topic] + pick, len(by_topic) - 1)]
  interest = np.log(base[slot] * 30)  # > 0 above the average interest
  completion = np.clip(sigmoid(0.8 * interest + rng.normal(0, 0.8, n)) * 1.2, 0, 1.5)
  click = rng.random(n) < sigmoid(-1.0 + 0.9 * interest + 1.0 * completion)
  columns = SPEC.empty_columns(n)
  columns[schema.USER_ID][:] = user
  columns[schema.ITEM_ID] = item
  columns[schema.TIMESTAMP] = times
  columns[schema.DURATION] = duration[item]
  columns[schema.PLAY_TIME] = (completion * duration[item]).astype(np.float32)
  columns[schema.LABEL] = click.astype(np.int64)
  columns["category"] = topic_of_item[item] // 10 + 1
  columns["year_bucket"] = release[item] + 1
  columns["tagged"] = (click & (slot < 3) & (rng.random(n) < 0.02)).astype(np.int64)
  return columns
