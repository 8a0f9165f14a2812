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


def test_the_log_written_in_row_groups_reads_back_as_the_whole_log(columns, tmp_path):
  """synthetic_users through write_parquet_parts (groups smaller than a user, and larger):
  the same rows as synthetic_log, ids shifted by first_user, and the counts reported."""
  import pyarrow.parquet as pq

  from twin_tf.data.synthetic import synthetic_users
  for rows_per_group in (3_000, 10 ** 7):
    path = tmp_path / f"SYNTHETIC_{rows_per_group}.parquet"
    counts = logs.write_parquet_parts(synthetic_users(CONFIG, first_user=5), path,
                                      rows_per_group)
    assert counts == {"behaviors": len(columns[schema.USER_ID]), "users": 12}
    groups = pq.ParquetFile(path).num_row_groups
    assert groups == 1 if rows_per_group > 10 ** 6 else groups > 1
    back = logs.read_behavior_log(path, spec=SPEC)[0]
    for name, values in columns.items():
      expected = values + 5 if name == schema.USER_ID else values
      np.testing.assert_array_equal(back[name], expected, err_msg=name)
  with pytest.raises(ValueError, match="no behaviors"):
    logs.write_parquet_parts(iter(()), tmp_path / "SYNTHETIC_empty.parquet")
