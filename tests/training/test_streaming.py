"""The streaming, user-major input against the in-memory one, on 40 real users."""

import numpy as np
import pytest

from twin_tf.data import tfexample
from twin_tf.data.feature_spec import MOVIELENS
from twin_tf.training import examples
from twin_tf.training.input_pipeline import DatasetBuilder, load_example_data
from twin_tf.training.streaming import StreamingInput, files_of, scan_records


@pytest.fixture(scope="module")
def data(real_examples):
  return load_example_data(real_examples[0])


@pytest.fixture(scope="module")
def scan(real_examples):
  return scan_records(real_examples[0])


def _fingerprints(dataset) -> np.ndarray:
  """(N, 8) rows, one per example, of what identifies it and its inputs, in a fixed order."""
  rows = []
  for inputs, label in dataset:
    columns = [inputs["target_item_id"], inputs["target_hour"],
               inputs["long_mask"].numpy().sum(1), inputs["long_item_id"].numpy().sum(1),
               inputs["long_cross"].numpy().sum((1, 2)), inputs["long_size"].numpy().sum(1),
               inputs["short_item_id"].numpy().sum(1) + inputs["short_cross"].numpy().sum(
                   (1, 2)), inputs["dense"].numpy().sum(1), label]
    rows.append(np.stack([np.asarray(c, np.float64) for c in columns], axis=1))
  rows = np.concatenate(rows)
  return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("source", ["clusters", "raw", "none"])
def test_streaming_yields_the_in_memory_examples(data, scan, real_examples, source):
  stream = StreamingInput(real_examples[0], source, max_raw=30, scan=scan, min_bucket=8)
  builder = DatasetBuilder(data, source, max_raw=30, min_bucket=8)
  assert stream.buckets == builder.buckets
  assert stream.padding_share("train") == pytest.approx(builder.padding_share("train"))
  for split in examples.SPLITS:
    streamed = _fingerprints(stream.dataset(split, 32, shuffle=split == "train", seed=4))
    np.testing.assert_allclose(streamed, _fingerprints(builder.dataset(split, 32)[0]),
                               rtol=1e-6, err_msg=split)


def test_source_none_is_one_bucket_without_long_term_rows(real_examples, scan):
  """DIN's batches (no long-term module) do not depend on the users' clusters."""
  stream = StreamingInput(real_examples[0], "none", scan=scan)
  assert len(stream.buckets) == 1
  assert stream.num_batches("train", 32) == -(-scan.records["train"]["impressions"].sum() // 32)
  for inputs, _ in stream.dataset("validation", 64):
    assert not inputs["long_mask"].numpy().any()


def test_scan_matches_the_in_memory_statistics(data, scan):
  for field, vocabulary in data.vocabularies.items():
    np.testing.assert_array_equal(scan.vocabularies[field].ids, vocabulary.ids)
  dense = data.impressions["train"][examples.DENSE].astype(np.float64)
  np.testing.assert_allclose(scan.dense_mean, dense.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scan.dense_std, dense.std(0), rtol=1e-4, atol=1e-6)
  for split, imp in data.impressions.items():
    expected = {f: n / len(imp["label"])
                for f, n in data.vocabularies.oov_counts(imp).items()}
    assert scan.oov[split] == pytest.approx(expected)
    assert scan.records[split]["impressions"].sum() == len(imp["label"])
  assert scan.oov["validation"]["item_id"] > 0  # the check can fail


def test_batches_per_epoch_and_multiples_hold_for_any_shuffle(real_examples, scan):
  stream = StreamingInput(real_examples[0], "clusters", scan=scan, min_bucket=8)
  for multiple in (1, 3):
    dataset = stream.dataset("train", 24, shuffle=True, seed=1, multiple_of=multiple)
    sizes = [len(label) for _, label in dataset]
    assert len(sizes) == stream.num_batches("train", 24, multiple) == len(dataset)
    assert all(size % multiple == 0 and size > 0 for size in sizes)
  total = scan.records["train"]["impressions"].sum()
  assert sum(len(label) for _, label in stream.dataset("train", 24)) == total


def test_a_seeded_epoch_replays_the_same_batches(real_examples, scan):
  stream = StreamingInput(real_examples[0], "clusters", scan=scan, min_bucket=8)

  def labels_and_targets(seed):
    return [np.asarray(inputs["target_item_id"]).tolist()
            for inputs, _ in stream.dataset("train", 16, shuffle=True, seed=seed)]

  assert labels_and_targets(5) == labels_and_targets(5)
  assert labels_and_targets(5) != labels_and_targets(6)


def test_uniform_samples_per_user_and_is_deterministic(real_examples, scan):
  stream = StreamingInput(real_examples[0], "uniform", seed=2, scan=scan, min_bucket=8)
  lengths = np.minimum(scan.records["test"]["clusters"], scan.records["test"]["num_pre_cutoff"])
  seen = _fingerprints(stream.dataset("test", 32))
  assert sorted(seen[:, 2]) == sorted(np.repeat(lengths, scan.records["test"]["impressions"]))
  np.testing.assert_array_equal(seen, _fingerprints(stream.dataset("test", 32)))
  budgeted = StreamingInput(real_examples[0], "uniform", budget=7, scan=scan, min_bucket=8)
  lengths = np.minimum(7, scan.records["test"]["num_pre_cutoff"])
  assert sorted(_fingerprints(budgeted.dataset("test", 32))[:, 2]) == sorted(
      np.repeat(lengths, scan.records["test"]["impressions"]))


def test_group_records_split_large_users_and_keep_every_user(real_examples, data):
  folder = real_examples[0]
  records = tfexample.read(f"{folder}/groups_train-*")
  assert len({int(r["user_id"][0]) for r in records}) == len(data.user_ids)
  user = tfexample.read(f"{folder}/users-*")[0]
  count = int(user[examples.NUM_PRE_CUTOFF][0])
  user.update({examples.NUM_PRE_CUTOFF: count, "user_id": int(user["user_id"][0])})  # as made
  end = np.arange(count, len(user["history_item_id"]))
  impressions = {f: np.zeros(len(end), np.int64) for f in examples.impression_fields(MOVIELENS)}
  impressions.update(history_end=end, split=np.zeros(len(end), np.int64),
                     dense=np.zeros((len(end), 13), np.float32),
                     snapshot=np.zeros(len(end), np.int64))
  clusters = {k: v for k, v in user.items() if k.startswith("cluster_")}
  groups = examples.user_groups(user, impressions, [{examples.NUM_PRE_CUTOFF: count, **clusters}],
                                MOVIELENS, group_size=7)
  assert [len(r["impression_label"]) for _, r in groups] == \
      [7] * (len(end) // 7) + ([len(end) % 7] if len(end) % 7 else [])
  for _, record in groups:  # each holds exactly the behaviors its impressions read
    assert len(record["history_item_id"]) == max(count, record["impression_history_end"].max())


def test_examples_without_group_records_name_the_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="build-examples"):
    files_of(tmp_path, "train")


def test_long_buckets_get_smaller_batches_within_the_position_budget(real_examples, scan):
  stream = StreamingInput(real_examples[0], "raw", max_raw=300, scan=scan, min_bucket=8,
                          max_positions=2_000)
  sizes = stream.batch_sizes(64, multiple_of=2)
  assert all(s <= max(2_000 // b // 2 * 2, 2) for s, b in zip(sizes, stream.buckets))
  assert sizes[0] > sizes[-1]  # the check can fail: short buckets keep larger batches
  dataset = stream.dataset("train", 64, shuffle=True, multiple_of=2)
  batches = [(len(label), inputs["long_mask"].shape[1]) for inputs, label in dataset]
  assert len(batches) == stream.num_batches("train", 64, multiple_of=2)
  assert all(b * length <= max(2_000, 2 * length) and b % 2 == 0 for b, length in batches)
  assert sum(b for b, _ in batches) > 0.9 * scan.records["train"]["impressions"].sum()
