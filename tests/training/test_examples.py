"""build_examples output and the tf.data input pipeline, on 40 real users."""

import numpy as np
import pytest

from twin_tf.clustering import records
from twin_tf.model import features
from twin_tf.training import examples
from twin_tf.training.input_pipeline import (
  LEGACY_BUCKETS,
  DatasetBuilder,
  fitted_buckets,
  load_example_data,
  long_term_index,
)


@pytest.fixture(scope="module")
def data(real_examples):
  return load_example_data(real_examples[0])


def test_every_impression_is_after_the_cutoff_and_split_in_time(data, real_examples):
  _, subset = real_examples
  total = sum(len(data.impressions[s]["label"]) for s in examples.SPLITS)
  assert total == np.sum(subset["user_id"] >= 0) - data.num_pre_cutoff.sum()
  for row, user in enumerate(data.user_ids):
    times = {}
    for split in examples.SPLITS:
      imp = data.impressions[split]
      mine = imp["user_id"] == user
      cutoff_time = data.history["timestamp"][row, data.num_pre_cutoff[row]] \
          if mine.any() else None
      assert np.all(imp["timestamp"][mine] >= cutoff_time) if mine.any() else True
      times[split] = imp["timestamp"][mine]
    if len(times["train"]) and len(times["test"]):
      assert times["train"].max() <= times["test"].min()


def test_history_end_counts_only_strictly_earlier_behaviors(data):
  imp = data.impressions["train"]
  for i in range(0, len(imp["label"]), 97):
    row, end = imp["user_row"][i], imp["history_end"][i]
    history_time = data.history["timestamp"][row, :data.history_len[row]]
    assert np.all(history_time[:end] < imp["timestamp"][i])
    assert np.all(history_time[end:] >= imp["timestamp"][i])


def test_clusters_come_only_from_before_the_cutoff(real_examples, data):
  folder, _ = real_examples
  for record in records.read(str(folder.parent / "clusters" / "clusters-*")):
    row = np.searchsorted(data.user_ids, record["user_id"])
    assert record["num_behaviors"] == data.num_pre_cutoff[row]
    if len(record["timestamp"]):
      assert record["timestamp"].max() < record["cutoff"]


def test_long_term_sources(data):
  clusters = long_term_index(data, "clusters")
  np.testing.assert_array_equal((clusters >= 0).sum(1), data.cluster_len)
  raw = long_term_index(data, "raw", max_raw=30)
  np.testing.assert_array_equal((raw >= 0).sum(1), np.minimum(data.num_pre_cutoff, 30))
  assert np.all(raw.max(1) < np.maximum(data.num_pre_cutoff, 1))  # never past the cutoff
  uniform = long_term_index(data, "uniform", seed=3)
  np.testing.assert_array_equal((uniform >= 0).sum(1),
                                np.minimum(data.cluster_len, data.num_pre_cutoff))
  np.testing.assert_array_equal(uniform, long_term_index(data, "uniform", seed=3))
  assert (long_term_index(data, "none") == -1).all()


def test_batches_have_static_bucket_shapes_and_the_right_short_term(data):
  builder = DatasetBuilder(data, "clusters")
  dataset, order = builder.dataset("test", 64)
  imp = data.impressions["test"]
  seen = 0
  for inputs, labels in dataset:
    length = inputs["long_item_id"].shape[1]
    assert length in builder.buckets
    assert inputs["short_item_id"].shape[1] == features.SHORT_LENGTH
    batch = order[seen:seen + len(labels)]
    np.testing.assert_array_equal(labels.numpy(), imp["label"][batch])
    # short-term: the 50 behaviors just before the impression, oldest first (numpy reference)
    i, row, end = batch[0], imp["user_row"][batch[0]], imp["history_end"][batch[0]]
    recent = data.history["item_id"][row, max(0, end - 50):end]
    got = inputs["short_item_id"].numpy()[0]
    np.testing.assert_array_equal(got[50 - len(recent):],
                                  data.vocabularies["item_id"].lookup(recent))
    assert np.all(got[:50 - len(recent)] == 0)  # padding
    np.testing.assert_array_equal(inputs["long_mask"].numpy()[0].sum(),
                                  data.cluster_len[imp["user_row"][i]])
    seen += len(labels)
  assert seen == len(imp["label"])


def test_fitted_buckets_follow_the_lengths_and_cut_padding(data):
  lengths = np.array([200] * 90 + [3, 17, 40, 41, 120, 700] * 2)
  buckets = fitted_buckets(lengths, longest=1300)
  assert buckets == tuple(sorted(buckets)) and all(b % 8 == 0 for b in buckets)
  assert buckets[-1] == 1304 and 200 in buckets  # the longest, and the common length exactly
  for source in ("raw", "clusters"):
    fitted = DatasetBuilder(data, source, max_raw=200)
    legacy = DatasetBuilder(data, source, max_raw=200, buckets=LEGACY_BUCKETS)
    assert fitted.padding_share("train") < legacy.padding_share("train")
    assert len(fitted.buckets) <= 6 and fitted.buckets[-1] >= fitted.long_len.max()


def test_a_cap_keeps_a_users_most_recent_impressions():
  """ExampleConfig.max_impressions (a long log's cap): the last N of the user's impressions,
  with the same features as without the cap."""
  from conftest import synthetic_user

  from twin_tf.clustering import cluster_user
  from twin_tf.config import ClusteringConfig
  from twin_tf.data.feature_spec import MOVIELENS
  from twin_tf.training import statistics
  columns, table = synthetic_user(400, seed=3)
  record = records.decode(records.encode(cluster_user(columns, table, ClusteringConfig(
      cutoff_quantile=0.5))))
  stats = statistics.item_statistics(columns)
  _, everything, _ = examples.user_examples(columns, record, examples.ExampleConfig(), stats,
                                            MOVIELENS)
  _, capped, _ = examples.user_examples(columns, record, examples.ExampleConfig(
      max_impressions=30), stats, MOVIELENS)
  assert len(everything["history_end"]) == 200 and len(capped["history_end"]) == 30
  for field in ("item_id", "timestamp", "history_end", examples.DENSE):
    np.testing.assert_array_equal(capped[field], everything[field][-30:])
  assert np.bincount(capped["split"]).tolist() == [18, 6, 6]
  with pytest.raises(ValueError, match="max_impressions"):
    examples.ExampleConfig(max_impressions=0)


def test_cluster_snapshots_make_earlier_periods_train_impressions_without_leakage():
  """ClusteringConfig.snapshots = 4 (periodic re-clustering): the behaviors from the first
  snapshot to the cutoff become train impressions; each group record reads the newest
  snapshot built strictly before its impressions, whose clusters hold only behaviors before
  them; impressions after the cutoff are those of one snapshot, unchanged."""
  from conftest import synthetic_user

  from twin_tf.clustering import cluster_user
  from twin_tf.clustering.user import cluster_snapshots, snapshot_cutoffs
  from twin_tf.config import ClusteringConfig
  from twin_tf.data.feature_spec import MOVIELENS
  from twin_tf.training import statistics
  columns, table = synthetic_user(400, seed=5)
  config = ClusteringConfig(cutoff_quantile=0.5, snapshots=4)
  cutoffs = snapshot_cutoffs(columns["timestamp"], config)
  times = np.sort(columns["timestamp"])
  assert cutoffs == [int(times[50]), int(times[100]), int(times[150])]  # 200 before the cutoff
  snapshots = cluster_snapshots(columns, table, config)
  for snapshot, cutoff in zip(snapshots, cutoffs):  # each clusters what came before it
    assert snapshot.cutoff == cutoff and snapshot.num_behaviors == np.sum(times < cutoff)
  decoded = [records.decode(records.encode(s)) for s in snapshots]
  final = records.decode(records.encode(cluster_user(columns, table, config)))
  stats = statistics.item_statistics(columns)
  _, alone, _ = examples.user_examples(columns, final, examples.ExampleConfig(), stats,
                                       MOVIELENS)
  user, both, periods = examples.user_examples(columns, final, examples.ExampleConfig(), stats,
                                               MOVIELENS, decoded[::-1])  # any order
  assert len(both["label"]) == 150 + 200 and np.sum(both["split"] == 0) == 150 + 120
  after = both["snapshot"] == 3
  for field in ("item_id", "timestamp", "history_end", "split", examples.DENSE):
    np.testing.assert_array_equal(both[field][after], alone[field])
  groups = examples.user_groups(user, both, periods, MOVIELENS, group_size=64)
  assert sum(len(r["impression_label"]) for _, r in groups) == 350
  for split, record in groups:
    first = record["impression_timestamp"].min()
    npc = int(record[examples.NUM_PRE_CUTOFF])
    assert np.all(times[:npc] < first)  # the snapshot was built strictly before them
    assert np.all(record["impression_history_end"] >= npc)
    if len(record["cluster_timestamp"]):
      assert record["cluster_timestamp"].max() < first
    assert sum(record["cluster_cluster_size"]) == npc
    if split != "train":
      assert npc == 200
