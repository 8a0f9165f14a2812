"""Incremental re-clustering against full clustering (SYNTHETIC users, conftest.py)."""

import numpy as np
import pytest
from conftest import synthetic_user

from twin_tf.clustering import cluster_user, records
from twin_tf.clustering.grouping import completion_groups
from twin_tf.clustering.incremental import StaleRecord, update_user
from twin_tf.clustering.user import cluster_features
from twin_tf.config import ClusteringConfig
from twin_tf.data import schema

GAMMA = 15


def _times(columns, quantile):
  return int(np.quantile(columns[schema.TIMESTAMP], quantile))


def _previous_and_update(columns, table, old_until, new_until, **config):
  previous = cluster_user(columns, table, ClusteringConfig(
      gamma=GAMMA, cutoff_timestamp=old_until, **config))
  record = records.decode(records.encode(previous))
  updated = update_user(columns, table, ClusteringConfig(
      gamma=GAMMA, cutoff_timestamp=new_until, **config), record)
  return previous, updated


def _assert_invariants(user, columns, gamma):
  sizes = user.clusters[schema.CLUSTER_SIZE]
  assert sizes.sum() == user.num_behaviors == len(user.cluster_of_behavior)
  assert sizes.max() <= gamma
  np.testing.assert_array_equal(np.bincount(user.cluster_of_behavior), sizes)
  assert len(np.unique(user.behavior_index)) == user.num_behaviors  # each behavior once
  rows = user.behavior_index
  groups = completion_groups(columns[schema.PLAY_TIME][rows], columns[schema.DURATION][rows], 5)
  for c in range(user.num_clusters):
    assert len(np.unique(groups[user.cluster_of_behavior == c])) == 1  # one group each
  first = [np.flatnonzero(user.cluster_of_behavior == c)[0] for c in range(user.num_clusters)]
  assert first == sorted(first)  # numbered by first member, as a full clustering


@pytest.mark.parametrize("new_fraction", [0.0, 0.01, 0.1, 0.3])
def test_update_keeps_every_invariant_of_a_full_clustering(new_fraction):
  columns, table = synthetic_user(3000, seed=2)
  end = _times(columns, 0.6)
  previous, updated = _previous_and_update(
      columns, table, _times(columns, 0.6 - new_fraction) if new_fraction else end, end)
  _assert_invariants(updated, columns, GAMMA)
  full = cluster_user(columns, table, ClusteringConfig(gamma=GAMMA, cutoff_timestamp=end))
  np.testing.assert_array_equal(updated.behavior_index, full.behavior_index)
  # virtual items (the reused ones and the recomputed ones) = computed over every member
  rows = updated.behavior_index
  emb, found = table.lookup(columns[schema.ITEM_ID][rows])
  groups = completion_groups(columns[schema.PLAY_TIME][rows], columns[schema.DURATION][rows], 5)
  expected = cluster_features(schema.take(columns, rows), emb, found, groups,
                              updated.cluster_of_behavior)
  assert set(expected) == set(updated.clusters)
  for name, values in expected.items():
    np.testing.assert_array_equal(updated.clusters[name], values, err_msg=name)
  if new_fraction == 0:  # nothing new: exactly the previous clusters
    np.testing.assert_array_equal(updated.cluster_of_behavior, previous.cluster_of_behavior)
    for name, values in previous.clusters.items():
      np.testing.assert_array_equal(updated.clusters[name], values, err_msg=name)


def test_old_behaviors_keep_their_cluster_mates_unless_their_cluster_was_split():
  columns, table = synthetic_user(3000, seed=3)
  previous, updated = _previous_and_update(columns, table, _times(columns, 0.5),
                                           _times(columns, 0.6))
  old = previous.num_behaviors
  before, after = previous.cluster_of_behavior, updated.cluster_of_behavior[:old]
  # the new partition, restricted to old behaviors, refines the old one ...
  pairs = np.unique(np.stack([after, before]), axis=1)
  assert len(np.unique(pairs[0])) == pairs.shape[1]
  # ... and only clusters that outgrew gamma were split
  split = [c for c in range(previous.num_clusters) if len(np.unique(after[before == c])) > 1]
  grown = np.bincount(before)[split] + [
      np.sum(np.isin(updated.cluster_of_behavior[old:], np.unique(after[before == c])))
      for c in split]
  assert np.all(grown > GAMMA)


def test_a_new_behavior_joins_the_nearest_centroid_of_its_group():
  """numpy reference: with gamma large enough that nothing splits, each new behavior with an
  embedding is in the cluster whose old members' mean embedding is nearest, within its
  completion group."""
  columns, table = synthetic_user(2000, seed=4)
  start, end = _times(columns, 0.5), _times(columns, 0.55)
  previous = cluster_user(columns, table, ClusteringConfig(gamma=1000, cutoff_timestamp=start))
  updated = update_user(columns, table, ClusteringConfig(gamma=1000, cutoff_timestamp=end),
                        records.decode(records.encode(previous)))
  rows = updated.behavior_index
  emb, found = table.lookup(columns[schema.ITEM_ID][rows])
  groups = completion_groups(columns[schema.PLAY_TIME][rows], columns[schema.DURATION][rows], 5)
  old = previous.num_behaviors
  before = previous.cluster_of_behavior
  for i in range(old, len(rows)):
    if not found[i]:
      continue
    candidates = [c for c in np.unique(before) if groups[:old][before == c][0] == groups[i]
                  and found[:old][before == c].any()]
    means = np.stack([emb[:old][(before == c) & found[:old]].mean(0) for c in candidates])
    nearest = candidates[int(np.argmin(((means - emb[i]) ** 2).sum(1)))]
    mates = np.flatnonzero(before == nearest)
    assert updated.cluster_of_behavior[i] == updated.cluster_of_behavior[mates[0]]


def test_update_is_deterministic():
  columns, table = synthetic_user(2000, seed=5)
  _, first = _previous_and_update(columns, table, _times(columns, 0.4), _times(columns, 0.7))
  _, second = _previous_and_update(columns, table, _times(columns, 0.4), _times(columns, 0.7))
  np.testing.assert_array_equal(first.cluster_of_behavior, second.cluster_of_behavior)


def test_records_that_do_not_match_are_refused():
  columns, table = synthetic_user(1000, seed=6)
  previous = cluster_user(columns, table, ClusteringConfig(gamma=GAMMA,
                                                           cutoff_timestamp=_times(columns, .5)))
  record = records.decode(records.encode(previous))
  config = ClusteringConfig(gamma=GAMMA, cutoff_timestamp=_times(columns, 0.7))
  with pytest.raises(StaleRecord, match="format 1"):
    update_user(columns, table, config, {**record, records.VERSION: 1})
  with pytest.raises(StaleRecord, match="cluster in full"):  # the past changed
    update_user(schema.take(columns, np.arange(1, 1000)), table, config, record)
  with pytest.raises(StaleRecord, match="cluster in full"):  # an earlier cutoff than before
    update_user(columns, table, ClusteringConfig(
        gamma=GAMMA, cutoff_timestamp=_times(columns, 0.3)), record)
  with pytest.raises(ValueError, match="without a max_clusters budget"):
    update_user(columns, table, ClusteringConfig(max_clusters=10), record)


@pytest.mark.parametrize("change", ["items", "times", "groups"])
def test_a_changed_past_with_equal_counts_is_refused(change):
  """Same number of behaviors before the record's cutoff, other content (every item id
  shifted, times moved within the past, completion changed): the digest of the past no
  longer matches, so the user is clustered in full, not updated on a wrong past."""
  columns, table = synthetic_user(1000, seed=6)
  previous = cluster_user(columns, table, ClusteringConfig(gamma=GAMMA,
                                                           cutoff_timestamp=_times(columns, .5)))
  record = records.decode(records.encode(previous))
  config = ClusteringConfig(gamma=GAMMA, cutoff_timestamp=_times(columns, 0.7))
  changed = {k: v.copy() for k, v in columns.items()}
  past = changed[schema.TIMESTAMP] < record[records.CLUSTERED_BEFORE]
  if change == "items":
    changed[schema.ITEM_ID][past] += 1
  elif change == "times":
    changed[schema.TIMESTAMP][past] -= 1
  else:
    changed[schema.PLAY_TIME][past] = changed[schema.DURATION][past] - \
        changed[schema.PLAY_TIME][past]
  update_user(columns, table, config, record)  # the unchanged past updates
  with pytest.raises(StaleRecord, match="not the ones the record clustered"):
    update_user(changed, table, config, record)


def test_a_record_with_cluster_ids_out_of_range_is_refused():
  columns, table = synthetic_user(1000, seed=6)
  previous = cluster_user(columns, table, ClusteringConfig(gamma=GAMMA,
                                                           cutoff_timestamp=_times(columns, .5)))
  record = records.decode(records.encode(previous))
  tampered = record[records.BEHAVIOR_CLUSTER].copy()
  tampered[0] = 10 ** 12  # would allocate terabytes
  with pytest.raises(StaleRecord, match="out of range"):
    update_user(columns, table, ClusteringConfig(gamma=GAMMA, cutoff_timestamp=_times(
        columns, 0.7)), {**record, records.BEHAVIOR_CLUSTER: tampered})


def test_staleness_leaves_recent_behaviors_out_but_keeps_the_cutoff():
  columns, table = synthetic_user(1000, seed=7)
  cutoff = _times(columns, 0.8)
  stale = cluster_user(columns, table, ClusteringConfig(cutoff_timestamp=cutoff,
                                                        staleness_days=30))
  assert stale.cutoff == cutoff and stale.clustered_before == cutoff - 30 * 86400
  assert columns[schema.TIMESTAMP][stale.behavior_index].max() < cutoff - 30 * 86400
  assert stale.num_behaviors == np.sum(columns[schema.TIMESTAMP] < cutoff - 30 * 86400)


def test_a_record_names_its_user_without_being_decoded():
  columns, table = synthetic_user(300, seed=8)
  serialized = records.encode(cluster_user(columns, table, ClusteringConfig()))
  assert records.user_id(serialized) == records.decode(serialized)[schema.USER_ID] == 7
