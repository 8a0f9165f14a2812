"""Dense "other features": brute-force references, no leakage, the Beam path = the library."""

import numpy as np
import pytest

from twin_tf.data import schema
from twin_tf.data.feature_spec import MOVIELENS
from twin_tf.training import examples, statistics
from twin_tf.training.input_pipeline import load_example_data


def _synthetic_log(num: int = 300, users: int = 3, items: int = 12, seed: int = 0):
  """SYNTHETIC behaviors with many same-second ties (timestamps drawn from 60 values)."""
  rng = np.random.default_rng(seed)
  columns = MOVIELENS.empty_columns(num)
  columns[schema.USER_ID] = rng.integers(1, users + 1, num)
  columns[schema.ITEM_ID] = rng.integers(1, items + 1, num)
  columns[schema.TIMESTAMP] = 1_500_000_000 + 3600 * rng.integers(0, 60, num)
  columns[schema.DURATION] = np.where(rng.random(num) < 0.1, 0, 100).astype(np.float32)
  columns[schema.PLAY_TIME] = rng.uniform(0, 120, num).astype(np.float32)
  columns[schema.LABEL] = rng.integers(0, 2, num)
  columns["category"] = columns[schema.ITEM_ID] % 4 + 1
  return columns


def _rate(positives, count):
  return (positives + 1) / (count + 2)


def _completion(columns, rows):
  known = columns[schema.DURATION][rows] > 0
  return np.minimum(columns[schema.PLAY_TIME][rows][known] /
                    columns[schema.DURATION][rows][known], 1)


def _reference_item(columns, i):
  same = (columns[schema.ITEM_ID] == columns[schema.ITEM_ID][i]) & \
      (columns[schema.TIMESTAMP] < columns[schema.TIMESTAMP][i])
  rows = np.flatnonzero(same)
  done = _completion(columns, rows)
  age = columns[schema.TIMESTAMP][i] - columns[schema.TIMESTAMP][rows].min() if len(rows) else 0
  return [np.log1p(len(rows)), _rate(columns[schema.LABEL][rows].sum(), len(rows)),
          done.mean() if len(done) else 0.5, np.log1p(age / 86400)]


def _reference_user(history, time, category):
  before = np.flatnonzero(history[schema.TIMESTAMP] < time)
  labels = history[schema.LABEL][before]
  recent = labels[-statistics.RECENT:]
  done = _completion(history, before)
  times = history[schema.TIMESTAMP][before]
  same = history["category"][before] == category
  n = len(before)
  return [np.log1p(n), _rate(labels.sum(), n), _rate(recent.sum(), len(recent)),
          done.mean() if n and len(done) else 0, done.std() if n and len(done) else 0,
          np.log1p((time - times[-1]) / 86400) if n else 0,
          np.log1p((time - times[0]) / 86400) if n else 0,
          same.sum() / max(n, 1), _rate(labels[same].sum(), same.sum())]


def test_item_statistics_match_a_brute_force_reference():
  columns = _synthetic_log()
  got = statistics.item_statistics(columns)
  expected = np.array([_reference_item(columns, i) for i in range(len(got))])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _user_history(columns, user):
  mine = schema.take(columns, columns[schema.USER_ID] == user)
  return schema.take(mine, np.argsort(mine[schema.TIMESTAMP], kind="stable"))


def test_user_statistics_match_a_brute_force_reference():
  history = _user_history(_synthetic_log(), 1)
  times = history[schema.TIMESTAMP]
  targets = np.r_[times[::7], times[-1] + 10, times[0]]
  categories = np.arange(len(targets)) % 5
  end = np.searchsorted(times, targets, side="left")
  got = statistics.user_statistics(history, end, categories, targets, "category")
  expected = np.array([_reference_user(history, t, c) for t, c in zip(targets, categories)])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_nothing_at_or_after_an_impression_changes_its_statistics():
  """Rewriting every behavior at or after an impression's time (labels flipped, play time,
  category) leaves that impression's user and item statistics unchanged. A statistic that
  read the impression's own label or a later event would change."""
  columns = _synthetic_log()
  history = _user_history(columns, 2)
  order = np.flatnonzero(columns[schema.USER_ID] == 2)
  for i in order[::9]:
    time, category = columns[schema.TIMESTAMP][i], columns["category"][i]
    end = np.searchsorted(history[schema.TIMESTAMP], [time], side="left")
    user_before = statistics.user_statistics(history, end, [category], [time], "category")
    item_before = statistics.item_statistics(columns)[i]
    later = columns[schema.TIMESTAMP] >= time
    changed = {k: v.copy() for k, v in columns.items()}
    changed[schema.LABEL][later] = 1 - changed[schema.LABEL][later]
    changed[schema.PLAY_TIME][later] = 0
    changed["category"][later] = category
    changed_history = _user_history(changed, 2)
    np.testing.assert_array_equal(
        statistics.user_statistics(changed_history, end, [category], [time],
                                   "category"), user_before)
    np.testing.assert_array_equal(statistics.item_statistics(changed)[i], item_before)


def test_statistics_are_not_constant(real_examples):
  """On real users every dense feature varies across impressions (none is a dead input)."""
  data = load_example_data(real_examples[0])
  dense = data.impressions["train"][examples.DENSE]
  assert dense.shape[1] == len(statistics.DENSE_FEATURES)
  assert np.all(dense.std(axis=0) > 0)


@pytest.mark.parametrize("split", examples.SPLITS)
def test_pipeline_statistics_equal_the_library_on_the_whole_log(real_examples, split):
  """build_examples groups by item across users: its item statistics are those of the whole
  log it read, joined back to each impression."""
  folder, subset = real_examples
  data = load_example_data(folder)
  imp = data.impressions[split]
  whole = statistics.item_statistics(subset)
  for i in range(0, len(imp[schema.LABEL]), 53):
    rows = np.flatnonzero((subset[schema.USER_ID] == imp[schema.USER_ID][i]) &
                          (subset[schema.ITEM_ID] == imp[schema.ITEM_ID][i]) &
                          (subset[schema.TIMESTAMP] == imp[schema.TIMESTAMP][i]))
    np.testing.assert_allclose(imp[examples.DENSE][i, len(statistics.USER_FEATURES):],
                               whole[rows[0]], rtol=1e-6)


@pytest.mark.parametrize("width", [1, 3600, 6 * 3600, 10**9])
def test_item_statistics_by_time_bucket_equal_the_whole_log(width):
  """Each (item shard, time bucket) of build_examples sees only its own behaviors plus the
  totals of the item's earlier buckets, merged from tables of arbitrary pieces: its item
  statistics are the whole log's, to the bit, same-second ties and a hot item included."""
  columns = _synthetic_log(num=2000, users=7, items=9, seed=3)
  columns[schema.ITEM_ID][::3] = 5  # a hot item
  whole = statistics.item_statistics(columns)
  buckets = columns[schema.TIMESTAMP] // width
  pieces = np.random.default_rng(0).integers(0, 4, len(buckets))
  table = statistics.earlier_totals(statistics.merge_totals([
      statistics.item_totals(schema.take(columns, pieces == p), buckets[pieces == p])
      for p in range(4)]))
  got = np.zeros_like(whole)
  for bucket in np.unique(buckets):
    rows, keys = np.flatnonzero(buckets == bucket), table["bucket"] == bucket
    earlier = table["totals"][keys][np.searchsorted(table["item"][keys],
                                                     columns[schema.ITEM_ID][rows])]
    got[rows] = statistics.item_statistics(schema.take(columns, rows), earlier)
  np.testing.assert_array_equal(got, whole)
  if width < 10**9:  # several buckets: without the earlier totals, counts restart
    bucket = buckets == np.unique(buckets)[-1]
    alone = statistics.item_statistics(schema.take(columns, bucket))
    assert np.any(alone[:, 0] < whole[bucket, 0])


def test_earlier_totals_add_the_items_previous_buckets():
  """Per item: zeros and first time inf in its first bucket, then the running sums of the
  buckets before, the first time of its first bucket."""
  columns = {schema.ITEM_ID: np.array([1, 1, 1, 2, 1]),
             schema.TIMESTAMP: np.array([5, 6, 15, 16, 31]),
             schema.LABEL: np.array([1, 0, 1, 1, 0]),
             schema.PLAY_TIME: np.array([1, 2, 3, 4, 5], np.float32),
             schema.DURATION: np.array([2, 0, 4, 8, 10], np.float32)}
  table = statistics.earlier_totals(statistics.item_totals(columns, columns[schema.TIMESTAMP]
                                                           // 10))
  np.testing.assert_array_equal(table["item"], [1, 1, 1, 2])
  np.testing.assert_array_equal(table["bucket"], [0, 1, 3, 1])
  np.testing.assert_array_equal(table["totals"], [
      [0, 0, 0, 0, np.inf], [2, 1, 0.5, 1, 5], [3, 2, 1.25, 2, 5], [0, 0, 0, 0, np.inf]])
