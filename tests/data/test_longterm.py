"""The SYNTHETIC long-term generator: its truth, its dormant tastes and the signal it plants."""

import dataclasses

import numpy as np
import pytest

from twin_tf import cli
from twin_tf.data import feature_spec, logs, longterm, schema
from twin_tf.training import metrics

CONFIG = longterm.LongTermConfig(users=40, min_behaviors=300, max_behaviors=1_500,
                                 num_items=3_000, seed=4)


@pytest.fixture(scope="module")
def generated():
  return longterm.longterm_log(CONFIG)


def test_clicks_follow_the_tastes_more_than_the_items(generated):
  """Labels are drawn from the saved click probability, which ranks them far better than
  the item-only score (the personalized share of the signal a model should capture)."""
  columns, truth = generated
  labels, users = columns[schema.LABEL], columns[schema.USER_ID]
  oracle = metrics.auc(labels, truth["click_probability"])
  item_only = metrics.auc(labels, truth["item_probability"])
  assert oracle > item_only + 0.05 and item_only > 0.55
  assert metrics.gauc(labels, truth["click_probability"], users) > 0.65
  assert abs(labels.mean() - truth["click_probability"].mean()) < 0.01


def test_item_vectors_are_the_ones_the_behaviors_follow(generated):
  """Consecutive items of one user lie closer in the true space than random pairs do (both
  come from one of the user's few tastes a fifth of the time): about 0.02 against 0.00 over
  ~28,000 pairs whose mean has a standard error of ~0.002; other vectors show no gap."""
  columns, _ = generated
  vectors = longterm.item_vectors(CONFIG)[columns[schema.ITEM_ID] - 1]
  same_user = columns[schema.USER_ID][1:] == columns[schema.USER_ID][:-1]
  consecutive = np.einsum("nd,nd->n", vectors[1:], vectors[:-1])[same_user].mean()
  shuffled = vectors[np.random.default_rng(0).permutation(len(vectors))]
  assert consecutive > np.einsum("nd,nd->n", vectors, shuffled).mean() + 0.01


def test_dormant_tastes_are_liked_but_no_longer_shown(generated):
  """After the dormancy no item is shown from a dormant taste, yet a popular item nearest one
  is clicked about as often as a popular item nearest an active taste: the signal only the
  life-cycle holds."""
  columns, truth = generated
  users, labels = columns[schema.USER_ID], columns[schema.LABEL]
  late = np.zeros(len(users), bool)
  for user in np.unique(users):
    rows = np.flatnonzero(users == user)
    late[rows[int(CONFIG.active_until * len(rows)):]] = True
  assert not truth["dormant"][~late].any()  # "dormant" marks only the late behaviors
  shown_from_taste = truth["taste"] >= 0
  assert not (late & shown_from_taste & (truth["taste"] < CONFIG.dormant_tastes)).any()
  assert (~late & shown_from_taste & (truth["taste"] < CONFIG.dormant_tastes)).mean() > 0.05
  popular_late = late & ~shown_from_taste
  near_dormant = labels[popular_late & truth["dormant"]].mean()
  near_active = labels[popular_late & ~truth["dormant"]].mean()
  assert abs(near_dormant - near_active) < 0.05
  assert 0.1 < truth["dormant"][popular_late].mean() < 0.7


def test_more_dormant_tastes_keep_the_active_ones():
  """Dormant tastes come on top of the active ones: with 0 or 3 of them, each user's late
  behaviors are shown from min_active_tastes-max_active_tastes tastes, none dormant."""

  def late_tastes_per_user(dormant):
    config = dataclasses.replace(CONFIG, users=12, dormant_tastes=dormant)
    columns, truth = longterm.longterm_log(config)
    users, counts = columns[schema.USER_ID], []
    for user in np.unique(users):
      rows = np.flatnonzero(users == user)
      late = truth["taste"][rows[int(config.active_until * len(rows)):]]
      counts.append(len(np.unique(late[late >= 0])))
      assert not ((late >= 0) & (late < dormant)).any()  # the first `dormant` are dormant
    return counts

  for dormant in (0, 3):
    counts = late_tastes_per_user(dormant)
    assert CONFIG.min_active_tastes <= min(counts) and max(counts) <= CONFIG.max_active_tastes
    assert len(set(counts)) > 1


def test_item_features_carry_no_taste(generated):
  """Categories are drawn independently of the items' vectors: no category has a click rate
  far from the log's."""
  columns, _ = generated
  rates = [columns[schema.LABEL][columns["category"] == c].mean()
           for c in np.unique(columns["category"])]
  assert np.ptp(rates) < 0.25


def test_synth_writes_the_log_its_spec_and_the_truth_it_is_looked_up_by(tmp_path):
  out = tmp_path / "SYNTHETIC_longterm.parquet"
  cli.main(["synth", "--kind", "long-term", "--users", "5", "--min-behaviors", "100",
            "--max-behaviors", "200", "--out", str(out)])
  columns, dead = logs.read_behavior_log(out, spec=feature_spec.for_log(out))
  assert not dead and feature_spec.for_log(out).name == longterm.SPEC.name
  path = longterm.truth_path(out)
  assert "SYNTHETIC" in path.name
  rows = np.arange(0, len(columns[schema.USER_ID]), 7)
  found = longterm.truth_of(path, columns[schema.USER_ID][rows],
                            columns[schema.TIMESTAMP][rows], columns[schema.ITEM_ID][rows])
  assert set(found) == set(longterm.TRUTH_FIELDS) | {"absent_from_recent"}
  assert np.all((found["click_probability"] > 0) & (found["click_probability"] < 1))
  with pytest.raises(ValueError, match="no truth for user"):
    longterm.truth_of(path, columns[schema.USER_ID][:1], columns[schema.TIMESTAMP][:1] + 1,
                      columns[schema.ITEM_ID][:1])
  saved = dict(np.load(path))
  del saved["nearest_taste"]
  np.savez(path, **saved)
  with pytest.raises(ValueError, match="no truth field 'nearest_taste'"):
    longterm.truth_of(path, columns[schema.USER_ID][:1], columns[schema.TIMESTAMP][:1],
                      columns[schema.ITEM_ID][:1])


def test_absent_from_recent_matches_a_loop_over_each_users_window(generated):
  """Against a plain loop per behavior, with the rows shuffled (any row order) and a window
  of 3 that makes both outcomes common."""
  columns, truth = generated
  users, times = columns[schema.USER_ID], columns[schema.TIMESTAMP]
  nearest, shown = truth["nearest_taste"], truth["taste"]
  expected = np.zeros(len(users), bool)
  for user in np.unique(users):
    rows = np.flatnonzero(users == user)
    rows = rows[np.argsort(times[rows])]
    for i, row in enumerate(rows):
      expected[row] = nearest[row] not in shown[rows[max(i - 3, 0):i]]
  shuffle = np.random.default_rng(0).permutation(len(users))
  found = longterm.absent_from_recent(users[shuffle], times[shuffle], nearest[shuffle],
                                      shown[shuffle], 3)
  np.testing.assert_array_equal(found, expected[shuffle])
  assert 0.05 < expected.mean() < 0.7
  nothing_shown = np.full(len(users), -1, np.int8)
  assert longterm.absent_from_recent(users, times, nearest, nothing_shown).all()


def test_synth_refuses_a_long_term_setting_for_the_lifecycle_kind(tmp_path):
  with pytest.raises(SystemExit, match="dormant-share"):
    cli.main(["synth", "--dormant-share", "0.2", "--out", str(tmp_path / "SYNTHETIC.parquet")])
