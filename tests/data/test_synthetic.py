"""The SYNTHETIC life-cycle generator: sizes, time spans, validity, and the signal it plants."""

import numpy as np
import pytest

from twin_tf import commands
from twin_tf.data import feature_spec, logs, schema
from twin_tf.data.synthetic import SPEC, SynthConfig, synthetic_log

CONFIG = SynthConfig(users=12, min_behaviors=1_000, max_behaviors=20_000, num_items=20_000,
                     num_topics=100, seed=3)


@pytest.fixture(scope="module")
def columns():
  return synthetic_log(CONFIG)


def test_users_have_life_cycles_of_the_asked_sizes_over_long_spans(columns):
  users, starts, counts = np.unique(columns[schema.USER_ID], return_index=True,
                                    return_counts=True)
  assert len(users) == 12 and counts.min() >= 1_000 and counts.max() <= 20_001
  for start, count in zip(starts, counts):
    times = columns[schema.TIMESTAMP][start:start + count]
    assert np.all(np.diff(times) >= 0)  # each user in time order
  longest = np.argmax(counts)
  span_days = np.ptp(columns[schema.TIMESTAMP][starts[longest]:starts[longest] +
                                               counts[longest]]) / 86_400
  assert span_days > 90  # the largest users span months to years


def test_clicks_follow_lasting_interests_and_the_log_is_valid(columns, tmp_path):
  """Per user, the topics it clicks most are the ones it returns to: the click rate on a
  user's most frequent categories beats its rate elsewhere (the planted signal)."""
  better = []
  for user in np.unique(columns[schema.USER_ID]):
    mine = columns[schema.USER_ID] == user
    category, label = columns["category"][mine], columns[schema.LABEL][mine]
    kinds, counts = np.unique(category, return_counts=True)
    top = np.isin(category, kinds[np.argsort(-counts)[:3]])
    better.append(label[top].mean() > label[~top].mean())
  assert np.mean(better) > 0.8
  path = tmp_path / "SYNTHETIC_log.parquet"
  result = commands.synth(path, CONFIG)
  read, dead = logs.read_behavior_log(path, spec=feature_spec.for_log(path))
  assert not dead and len(read[schema.USER_ID]) == result["behaviors"]
  assert feature_spec.for_log(path) == SPEC
  with pytest.raises(ValueError, match="must say SYNTHETIC"):
    commands.synth(tmp_path / "log.parquet", CONFIG)
