"""beam_pipelines.cluster_behaviors under FnApiRunner, on the real fixture."""

import json

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from conftest import forty_real_users

from beam_pipelines import cluster_behaviors, common
from twin_tf.clustering import cluster_user, records
from twin_tf.clustering.incremental import update_user
from twin_tf.config import ClusteringConfig
from twin_tf.data import logs, schema

CONFIG = ClusteringConfig(cutoff_quantile=0.8)


@pytest.fixture(scope="module")
def real_subset(movielens, movielens_embeddings, tmp_path_factory):
  """40 real users (including the longest history) as a Parquet log + embeddings file."""
  subset = forty_real_users(movielens[0])
  folder = tmp_path_factory.mktemp("real")
  logs.write_behavior_log(subset, folder / "behaviors.parquet")
  movielens_embeddings.save(folder / "emb.npz")
  return subset, folder


def _expected_records(subset, table):
  out = {}
  for u in np.unique(subset["user_id"]):
    out[int(u)] = cluster_user(schema.take(subset, subset["user_id"] == u), table, CONFIG)
  return out


def _options(folder, input_name, output):
  return common.pipeline_options(
      [f"--input={folder / input_name}", f"--embeddings={folder / 'emb.npz'}",
       f"--output={output}", "--cutoff_quantile=0.8"],
      cluster_behaviors.ClusterBehaviorsOptions, ("embeddings",))


def test_pipeline_matches_library_on_real_users(real_subset, movielens_embeddings, tmp_path):
  subset, folder = real_subset
  expected = _expected_records(subset, movielens_embeddings)
  options = _options(folder, "behaviors.parquet", tmp_path)
  assert options.view_as(beam.options.pipeline_options.StandardOptions).runner == "FnApiRunner"

  def summarize(serialized):
    r = records.decode(serialized)
    sizes = r["cluster_size"]
    assert sizes.max() <= CONFIG.gamma and sizes.sum() == r["num_behaviors"]
    return (r["user_id"], r["num_behaviors"], len(sizes), int(r["item_id"].sum()))

  with TestPipeline(runner="FnApiRunner", options=options) as p:
    clusters, dead = cluster_behaviors.build(p, options, CONFIG)
    assert_that(clusters | beam.Map(summarize), equal_to([
        (u, e.num_behaviors, e.num_clusters, int(e.clusters["item_id"].sum()))
        for u, e in expected.items()]), label="ClustersMatchLibrary")
    assert_that(dead, equal_to([]), label="NoDeadLetters")

  written = records.read(str(tmp_path / "clusters-*"))
  assert sorted(r["user_id"] for r in written) == sorted(expected)


def _write_csv_with_malformed_rows(subset, path):
  logs.write_behavior_log(subset, path)
  with open(path, "a") as f:
    f.write("1,50,1000,nan,5.0,1,0,0,0\n")  # NaN play time
    f.write(",50,1000,3.0,5.0,1,0,0,0\n")  # missing user id
    f.write("1,50,soon,3.0,5.0,1,0,0,0\n")  # unparsable timestamp
    f.write("1,50,1000,3.0,-5.0,1,0,0,0\n")  # negative duration
    f.write("1,fifty,1000,3.0,5.0,1,0,0,0\n")  # wrong type


def test_malformed_rows_go_to_dead_letters_with_counts(real_subset, tmp_path):
  subset, folder = real_subset
  _write_csv_with_malformed_rows(subset, folder / "dirty.csv")
  out = tmp_path / "out"
  counters = cluster_behaviors.run(
      [f"--input={folder / 'dirty.csv'}", f"--embeddings={folder / 'emb.npz'}",
       f"--output={out}", "--cutoff_quantile=0.8"])
  assert counters["dead_letters"] == 5
  assert counters["behaviors_read"] == len(subset["user_id"])
  assert counters["users"] == len(np.unique(subset["user_id"]))
  letters = [json.loads(line) for f in sorted(out.glob("dead_letters-*"))
             for line in f.read_text().splitlines()]
  assert sorted(d["field"] for d in letters) == sorted(
      ["play_time", "user_id", "timestamp", "duration", "item_id"])
  assert all(d["source"].endswith("dirty.csv") for d in letters)
  assert json.loads(next(d for d in letters if d["field"] == "timestamp")["record"])[
      "timestamp"] == "soon"
  clustered = records.read(str(out / "clusters-*"))
  assert sum(r["num_behaviors"] for r in clustered) == counters["behaviors"]
  assert sum(len(r["cluster_size"]) for r in clustered) == counters["clusters"]


def test_tfrecord_input_gives_same_clusters_as_parquet(real_subset, tmp_path):
  subset, folder = real_subset
  few = schema.take(subset, np.isin(subset["user_id"], np.unique(subset["user_id"])[:5]))
  logs.write_behavior_log(few, tmp_path / "few.tfrecord")
  logs.write_behavior_log(few, tmp_path / "few.parquet")
  for name in ("few.tfrecord", "few.parquet"):
    cluster_behaviors.run([f"--input={tmp_path / name}", f"--embeddings={folder / 'emb.npz'}",
                           f"--output={tmp_path / name}.out", "--cutoff_quantile=0.8"])
  a = {r["user_id"]: r for r in records.read(str(tmp_path / "few.tfrecord.out" / "clusters-*"))}
  b = {r["user_id"]: r for r in records.read(str(tmp_path / "few.parquet.out" / "clusters-*"))}
  assert a.keys() == b.keys() and len(a) == 5
  for u in a:
    np.testing.assert_array_equal(a[u]["cluster_size"], b[u]["cluster_size"])
    np.testing.assert_array_equal(a[u]["item_id"], b[u]["item_id"])


def test_previous_inside_the_output_is_refused_before_anything_is_deleted(real_subset,
                                                                          tmp_path):
  """`twin-tf cluster --previous X --output X` used to empty X, then fail: the records were
  gone. Now it is refused, naming the option, and X keeps every file."""
  from twin_tf import commands
  _, folder = real_subset
  out = tmp_path / "clusters"
  cluster_behaviors.run([f"--input={folder / 'behaviors.parquet'}",
                         f"--embeddings={folder / 'emb.npz'}", f"--output={out}"], CONFIG)
  before = sorted(p.name for p in out.iterdir())
  with pytest.raises(SystemExit, match="--previous=.*would delete"):
    commands.cluster(folder / "behaviors.parquet", folder / "emb.npz", out, CONFIG,
                     previous=out)
  assert sorted(p.name for p in out.iterdir()) == before


def test_unreadable_previous_records_send_their_users_to_full_clustering(real_subset,
                                                                        tmp_path):
  """Garbage bytes, a record without a user and a record missing its clustering used to fail
  the whole run; now each is counted (previous_unreadable), its user is clustered in full
  and every other user is updated."""
  from twin_tf.data import tfexample
  _, folder = real_subset
  flags = [f"--input={folder / 'behaviors.parquet'}", f"--embeddings={folder / 'emb.npz'}"]
  cluster_behaviors.run(flags + [f"--output={tmp_path / 'day1'}"],
                        ClusteringConfig(cutoff_quantile=0.5))
  serialized = list(tf.data.TFRecordDataset(sorted(
      str(p) for p in (tmp_path / "day1").glob("clusters-*"))).as_numpy_iterator())
  broken = records.decode(serialized[0])
  del broken[records.BEHAVIOR_CLUSTER]
  with tf.io.TFRecordWriter(str(tmp_path / "previous.tfrecord")) as writer:
    writer.write(b"\x0agarbage")
    writer.write(tfexample.encode({"cutoff": 5}))  # no user_id
    writer.write(tfexample.encode(broken))
    for record in serialized[1:]:
      writer.write(record)
  counters = cluster_behaviors.run(
      flags + [f"--output={tmp_path / 'day2'}", f"--previous={tmp_path / 'previous.tfrecord'}"],
      CONFIG)
  assert counters["users"] == 40
  assert counters["previous_unreadable"] == 3
  assert (counters["users_incremental"], counters["users_in_full"]) == (39, 1)


def test_previous_records_are_updated_incrementally(real_subset, movielens_embeddings, tmp_path):
  """Clusters up to the 0.5 quantile, then --previous to 0.8: each user's record equals the
  library's update_user of that user; a user missing from the previous run is clustered in
  full."""
  subset, folder = real_subset
  earlier = ClusteringConfig(cutoff_quantile=0.5)
  first = cluster_behaviors.run(
      [f"--input={folder / 'behaviors.parquet'}", f"--embeddings={folder / 'emb.npz'}",
       f"--output={tmp_path / 'day1'}"], earlier)
  kept = [r for r in records.read(str(tmp_path / "day1" / "clusters-*"))
          if r["user_id"] != int(subset["user_id"][0])]  # one user without a record
  with tf.io.TFRecordWriter(str(tmp_path / "previous.tfrecord")) as writer:
    for serialized in tf.data.TFRecordDataset(
        sorted(str(p) for p in (tmp_path / "day1").glob("clusters-*"))).as_numpy_iterator():
      if records.decode(serialized)["user_id"] != int(subset["user_id"][0]):
        writer.write(serialized)
  counters = cluster_behaviors.run(
      [f"--input={folder / 'behaviors.parquet'}", f"--embeddings={folder / 'emb.npz'}",
       f"--output={tmp_path / 'day2'}", f"--previous={tmp_path / 'previous.tfrecord'}"],
      CONFIG)
  assert first["users"] == counters["users"] == 40
  assert (counters["users_incremental"], counters["users_in_full"]) == (39, 1)
  by_user = {r["user_id"]: r for r in records.read(str(tmp_path / "day2" / "clusters-*"))}
  for previous in kept:
    user = previous["user_id"]
    expected = update_user(schema.take(subset, subset["user_id"] == user),
                           movielens_embeddings, CONFIG, previous)
    np.testing.assert_array_equal(by_user[user][records.BEHAVIOR_CLUSTER],
                                  expected.cluster_of_behavior)
    np.testing.assert_array_equal(by_user[user]["item_id"], expected.clusters["item_id"])
  full = cluster_user(schema.take(subset, subset["user_id"] == subset["user_id"][0]),
                      movielens_embeddings, CONFIG)
  np.testing.assert_array_equal(by_user[int(subset["user_id"][0])]["cluster_size"],
                                full.clusters["cluster_size"])


def test_a_csv_row_with_bad_bytes_survives_beams_coder():
  """Beam sizes a sample of each step's elements by encoding them; a record that kept
  non-UTF-8 bytes as surrogate escapes failed that encoding (UnicodeEncodeError: the run
  failed in CI, only when sampled). The record now encodes and still names the field."""
  record = common._csv_record(["user_id", "item_id"], b"\xff1,5")  # pylint: disable=protected-access
  coder = beam.coders.registry.get_coder(object)
  assert coder.decode(coder.encode(record)) == record
  with pytest.raises(logs.MalformedRecord, match="not UTF-8") as error:
    logs.refuse_unreadable_row(record)
  assert error.value.field == "user_id"


def test_a_glob_of_csv_files_with_other_column_orders_and_bad_bytes(real_subset,
                                                                    movielens_embeddings,
                                                                    tmp_path):
  """Each CSV file is read with its own header (the second orders its columns differently,
  the first starts with a byte-order mark, which dead-lettered every row before);
  a non-UTF-8 byte, a short row, the two halves of a quoted value with a newline inside and
  a TFRecord entry that is no Example are dead letters,
  never a failed run, and every good row is clustered as the library clusters it."""
  subset, folder = real_subset
  few = schema.take(subset, np.isin(subset["user_id"], np.unique(subset["user_id"])[:6]))
  first = few["user_id"] <= np.unique(few["user_id"])[2]
  logs.write_behavior_log(schema.take(few, first), tmp_path / "a.csv")
  bom = tmp_path / "a.csv"  # as spreadsheets export: a UTF-8 byte-order mark first
  bom.write_bytes(b"\xef\xbb\xbf" + bom.read_bytes())
  second = schema.take(few, ~first)
  logs.write_behavior_log({k: second[k] for k in reversed(list(second))}, tmp_path / "b.csv")
  with open(tmp_path / "b.csv", "ab") as f:
    f.write(b"0,0,0,1,5.0,3.0,1000,50,\xff1\n")  # not UTF-8 (reversed column order)
    f.write(b"0,0\n")  # short
    # a quoted value with a newline inside: both halves are dead letters, no phantom row
    f.write(b'0,0,0,1,5.0,3.0,1000,50,"1\n2"\n')  # user "1<newline>2"
  counters = cluster_behaviors.run(
      [f"--input={tmp_path / '*.csv'}", f"--embeddings={folder / 'emb.npz'}",
       f"--output={tmp_path / 'out'}", "--cutoff_quantile=0.8"])
  assert counters["dead_letters"] == 4 and counters["users"] == 6
  assert counters["behaviors_read"] == len(few["user_id"])
  by_user = {r["user_id"]: r for r in records.read(str(tmp_path / "out" / "clusters-*"))}
  for user in np.unique(few["user_id"]):
    expected = cluster_user(schema.take(few, few["user_id"] == user), movielens_embeddings,
                            CONFIG)
    np.testing.assert_array_equal(by_user[int(user)]["item_id"], expected.clusters["item_id"])
  logs.write_behavior_log(few, tmp_path / "few.tfrecord")
  with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
    writer.write(b"not an Example")
  counters = cluster_behaviors.run(
      [f"--input={tmp_path / '*.tfrecord'}", f"--embeddings={folder / 'emb.npz'}",
       f"--output={tmp_path / 'out2'}", "--cutoff_quantile=0.8"])
  assert counters["dead_letters"] == 1 and counters["users"] == 6
  letter = json.loads((next((tmp_path / "out2").glob("dead_letters-*"))).read_text())
  assert letter["field"] == "record" and letter["source"].endswith("bad.tfrecord")


def test_a_rerun_replaces_the_previous_outputs_and_an_empty_input_fails(real_subset, tmp_path):
  subset, folder = real_subset
  out = tmp_path / "out"
  out.mkdir()
  stale = out / "clusters-00007-of-00009.tfrecord"  # a shard of a run with 9 shards
  stale.write_bytes(b"old")
  (out / "notes.txt").write_text("mine")  # not the pipeline's: kept
  argv = [f"--embeddings={folder / 'emb.npz'}", f"--output={out}", "--cutoff_quantile=0.8"]
  cluster_behaviors.run([f"--input={folder / 'behaviors.parquet'}"] + argv)
  assert not stale.exists() and (out / "notes.txt").exists()
  assert len(records.read(str(out / "clusters-*"))) == 40
  (tmp_path / "empty.csv").write_text(",".join(schema.CORE_NAMES) + "\n")  # header only
  with pytest.raises(SystemExit, match="clustered no user"):
    cluster_behaviors.run([f"--input={tmp_path / 'empty.csv'}"] + argv)


def test_a_corrupt_shard_names_the_pipeline_and_its_inputs_and_leaves_no_temp_folder(
    real_subset, tmp_path):
  from beam_pipelines import build_examples
  subset, folder = real_subset
  cluster_behaviors.run([f"--input={folder / 'behaviors.parquet'}",
                         f"--embeddings={folder / 'emb.npz'}", f"--output={tmp_path / 'c'}",
                         "--cutoff_quantile=0.8"])
  shard = next((tmp_path / "c").glob("clusters-*"))
  shard.write_bytes(shard.read_bytes()[:-40])  # truncated
  with pytest.raises(common.PipelineFailed, match="build_examples failed") as raised:
    build_examples.run([f"--input={folder / 'behaviors.parquet'}",
                        f"--clusters={tmp_path / 'c' / 'clusters-*'}",
                        f"--output={tmp_path / 'e'}"])
  assert f"--clusters={tmp_path / 'c' / 'clusters-*'}" in str(raised.value)
  assert "Not a valid TFRecord" in str(raised.value)
  assert not list((tmp_path / "e").glob("beam-temp-*"))


@pytest.mark.parametrize("mode", ["multi_processing", "multi_threading"])
def test_one_and_two_local_workers_write_the_same_records(real_subset, tmp_path, mode):
  """Both pipelines on the local runner with two workers: the same cluster records, user
  records, impressions and group records as with one, and counts that reconcile (the old
  per-behavior build_examples lost behaviors in its join with two workers)."""
  from beam_pipelines import build_examples
  from twin_tf.data import tfexample
  _, folder = real_subset
  written = []
  for workers in (1, 2):
    flags = [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    out = tmp_path / str(workers)
    cluster_behaviors.run([f"--input={folder / 'behaviors.parquet'}",
                           f"--embeddings={folder / 'emb.npz'}", f"--output={out / 'c'}",
                           "--cutoff_quantile=0.8", *flags])
    counts = build_examples.run([f"--input={folder / 'behaviors.parquet'}",
                                 f"--clusters={out / 'c'}/clusters-*", f"--output={out / 'e'}",
                                 *flags])
    assert counts["users_written"] == 40
    written.append({kind: sorted(tuple((k, v.tobytes()) for k, v in sorted(r.items()))
                                 for r in tfexample.read(str(out / kind) + "-*"))
                    for kind in ("c/clusters", "e/users", "e/impressions_train",
                                 "e/impressions_test", "e/groups_train")})
  assert written[0]["e/impressions_train"]
  assert written[0] == written[1]


def _dropping(transform_class, keep, where="input"):
  """A subclass of a PTransform class whose input (or output) loses the elements `keep`
  refuses: a bug that loses data silently."""
  class Dropping(transform_class):
    def expand(self, pcoll):
      if where == "input":
        return super().expand(pcoll | "InjectedDrop" >> beam.Filter(keep))
      return super().expand(pcoll) | "InjectedDrop" >> beam.Filter(keep)
  return Dropping


def test_counts_reconcile_and_a_dropped_user_fails_the_run_naming_the_gap(real_subset,
                                                                           monkeypatch,
                                                                           tmp_path):
  """Both pipelines' counts reconcile (behaviors read = behaviors clustered / joined,
  records and dead letters produced = written); a DoFn that drops one user's behaviors
  before clustering, or one cluster record before the join, fails the run naming the gap."""
  from beam_pipelines import build_examples
  subset, folder = real_subset
  log = folder / "behaviors.parquet"
  argv = [f"--input={log}", f"--embeddings={folder / 'emb.npz'}", "--cutoff_quantile=0.8"]
  counts = cluster_behaviors.run(argv + [f"--output={tmp_path / 'c'}"])
  assert counts["behaviors_grouped"] == counts["behaviors_read"] == len(subset["user_id"])
  assert counts["records_written"] == counts["users"] == 40
  examples = build_examples.run([f"--input={log}", f"--clusters={tmp_path / 'c'}/clusters-*",
                                 f"--output={tmp_path / 'e'}"])
  assert examples["behaviors_joined"] == examples["behaviors_read"] == len(subset["user_id"])
  assert examples["cluster_records_joined"] == examples["cluster_records_read"] == 40
  assert examples["impressions_written_test"] == examples["impressions_test"] > 0

  lost = int(subset["user_id"][0])
  lost_rows = int(np.sum(subset["user_id"] == lost))
  monkeypatch.setattr(cluster_behaviors, "ClusterUsers", _dropping(
      cluster_behaviors.ClusterUsers, lambda chunk: chunk[0] != lost))
  with pytest.raises(common.CountsDoNotReconcile, match=(
      f"behaviors_read = {len(subset['user_id']):,} but behaviors_grouped = "
      f"{len(subset['user_id']) - lost_rows:,}: {lost_rows:,} behaviors lost")):
    cluster_behaviors.run(argv + [f"--output={tmp_path / 'c2'}"])

  shards = 64  # build_examples' default --user_shards: a join loses the lost user's shard
  shard_users = np.unique(subset["user_id"][subset["user_id"] % shards == lost % shards])
  shard_rows = int(np.isin(subset["user_id"], shard_users).sum())
  monkeypatch.setattr(beam, "CoGroupByKey", _dropping(
      beam.CoGroupByKey, lambda kv: lost not in dict(kv[1].get("clusters", ())),
      where="output"))
  with pytest.raises(common.CountsDoNotReconcile, match=(
      f"{shard_rows:,} behaviors lost.*{len(shard_users)} cluster records lost")):
    build_examples.run([f"--input={log}", f"--clusters={tmp_path / 'c'}/clusters-*",
                        f"--output={tmp_path / 'e2'}"])


def test_examples_do_not_depend_on_item_shards_time_buckets_or_user_shards(real_subset,
                                                                          tmp_path):
  """build_examples computes item statistics per (item shard, time bucket) and meets users
  in user shards: one shard and one bucket, and an hour's buckets over 3 shards, write the
  same records as the defaults; so do both groupings through the runner's shuffle instead of
  spill files (--spill_dir=none)."""
  from beam_pipelines import build_examples
  from twin_tf.data import tfexample
  _, folder = real_subset
  cluster_behaviors.run([f"--input={folder / 'behaviors.parquet'}",
                         f"--embeddings={folder / 'emb.npz'}", f"--output={tmp_path / 'c'}",
                         "--cutoff_quantile=0.8"])
  written = []
  for i, flags in enumerate(([], ["--item_shards=1", "--item_bucket_days=100000",
                                  "--user_shards=1"],
                             ["--item_shards=3", "--item_bucket_days=0.0417",
                              "--user_shards=7"], ["--spill_dir=none"])):
    build_examples.run([f"--input={folder / 'behaviors.parquet'}",
                        f"--clusters={tmp_path / 'c'}/clusters-*",
                        f"--output={tmp_path / str(i)}", *flags])
    written.append({kind: sorted(tuple((k, v.tobytes()) for k, v in sorted(r.items()))
                                 for r in tfexample.read(str(tmp_path / str(i) / f"{kind}-*")))
                    for kind in ("users", "impressions_train", "impressions_test",
                                 "groups_train")})
  assert written[0]["impressions_train"]
  assert written[0] == written[1] == written[2] == written[3]
  assert not list(tmp_path.glob("*/spill-*"))  # each run removed its spill folder
  for flag in ("--item_shards=0", "--user_shards=-2", "--item_bucket_days=0"):
    with pytest.raises(SystemExit, match=flag.split("=")[0]):
      build_examples.run([f"--input={folder / 'behaviors.parquet'}",
                          f"--clusters={tmp_path / 'c'}/clusters-*",
                          f"--output={tmp_path / 'bad'}", flag])


def test_cluster_snapshots_turn_the_whole_log_into_training_impressions(real_subset,
                                                                        movielens_embeddings,
                                                                        tmp_path):
  """--snapshots 3 writes each user's two earlier snapshots as the library clusters them;
  build_examples with them trains on the behaviors from the first snapshot on, each group
  record with its snapshot, while validation and test are those without snapshots; the
  in-memory builder refuses the early impressions (it has only the cutoff's clusters)."""
  from beam_pipelines import build_examples
  from twin_tf.clustering.user import cluster_snapshots
  from twin_tf.data import tfexample
  from twin_tf.training import examples, streaming
  from twin_tf.training.input_pipeline import DatasetBuilder, load_example_data
  subset, folder = real_subset
  log = folder / "behaviors.parquet"
  config = ClusteringConfig(cutoff_quantile=0.8, snapshots=3)
  counts = cluster_behaviors.run([f"--input={log}", f"--embeddings={folder / 'emb.npz'}",
                                  f"--output={tmp_path / 'c'}", "--snapshots=3"], config)
  written = list(records.read(str(tmp_path / "c" / "snapshots-*")))
  assert counts["snapshots_written"] == counts["snapshots"] == len(written) > 40
  expected = {}
  for user in np.unique(subset["user_id"]):
    for snapshot in cluster_snapshots(schema.take(subset, subset["user_id"] == user),
                                      movielens_embeddings, config):
      expected[(int(user), snapshot.cutoff)] = snapshot.clusters["item_id"]
  assert sorted(expected) == sorted((r["user_id"], r["cutoff"]) for r in written)
  for r in written:
    np.testing.assert_array_equal(r["item_id"], expected[(r["user_id"], r["cutoff"])])

  out = {}
  for name, extra in (("plain", []), ("whole", [f"--cluster_snapshots={tmp_path}/c/snapshots-*"])):
    out[name] = build_examples.run([f"--input={log}", f"--clusters={tmp_path}/c/clusters-*",
                                    f"--output={tmp_path / name}"] + extra)
  assert out["whole"]["snapshots_joined"] == out["whole"]["snapshots_read"] == len(written)
  first = {}
  for r in written:
    first[r["user_id"]] = min(first.get(r["user_id"], r["cutoff"]), r["cutoff"])
  cutoff = {r["user_id"]: r["cutoff"] for r in records.read(str(tmp_path / "c" / "clusters-*"))}
  times, users = subset["timestamp"], subset["user_id"]
  early = sum(int(np.sum((users == u) & (times >= t) & (times < cutoff[u])))
              for u, t in first.items())
  assert out["whole"]["impressions_train"] == out["plain"]["impressions_train"] + early > \
      2 * out["plain"]["impressions_train"]
  for split in ("validation", "test"):
    assert out["whole"][f"impressions_{split}"] == out["plain"][f"impressions_{split}"]
  scan = streaming.scan_records(tmp_path / "whole")
  assert scan.records["train"]["impressions"].sum() == out["whole"]["impressions_train"]
  for record in tfexample.read(f"{tmp_path / 'whole'}/groups_train-*"):
    npc = int(record[examples.NUM_PRE_CUTOFF][0])
    assert np.all(record["impression_history_end"] >= npc)  # the snapshot came before them
    assert record["cluster_cluster_size"].sum() == npc
  data = load_example_data(tmp_path / "whole")
  builder = DatasetBuilder(data, "clusters")
  builder.dataset("test", 64)
  with pytest.raises(ValueError, match="before their user's cutoff"):
    builder.dataset("train", 64)


# The local runner's loss with two workers (issue 27), reduced to one CoGroupByKey.
#
# Beam 2.77's FnApiRunner with --direct_num_workers=2 lost 318,832-1,280,213 of 10^7 small
# (key, tuple) elements in a CoGroupByKey with a second, 501-element input (five runs,
# multi_processing and multi_threading), and none with one worker; a plain GroupByKey of
# the same elements lost none. 4x10^6 elements lost none. This is what the old per-behavior
# build_examples hit in its user join. Today's pipelines send a few large elements (and, on
# the local runner, only references to spill files) through their joins, and every pipeline
# fails a run whose counts do not reconcile.
#
# Minutes of the local runner: slow, and for the Beam version it was seen on. If the first
# test fails on a newer Beam, the bug is gone there: say so in docs/clustering.md.
ON_BEAM_2_77 = pytest.mark.skipif(not beam.__version__.startswith("2.77."),
                                    reason="reproduced on Beam 2.77 only")
LOSS_USERS, LOSS_ITEMS, LOSS_ELEMENTS = 501, 20_000, 10_000_000


def _grouped_by_two_workers(join: bool) -> int:
  """Elements that reach the consumer of a CoGroupByKey (join) or a GroupByKey of
  LOSS_ELEMENTS behavior-like tuples keyed by one of LOSS_USERS users."""
  from apache_beam.options.pipeline_options import PipelineOptions
  options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
                            runner="FnApiRunner")
  chunk = 20_000
  pipeline = beam.Pipeline(options=options)
  rows = (pipeline
          | "Chunks" >> beam.Create(list(range(LOSS_ELEMENTS // chunk)))
          | "Spread" >> beam.Reshuffle()
          | "Rows" >> beam.FlatMap(lambda i: (
              (j % LOSS_USERS, (j % LOSS_USERS, j % LOSS_ITEMS, 1_500_000_000 + j, j % 2, 0.5,
                                60.0, j % 7)) for j in range(i * chunk, (i + 1) * chunk))))
  if join:
    records = pipeline | "Records" >> beam.Create([(u, b"r" * 100) for u in range(LOSS_USERS)])
    grouped = ({"rows": rows, "records": records} | beam.CoGroupByKey()
               | beam.MapTuple(lambda user, joined: len(list(joined["rows"]))))
  else:
    grouped = rows | beam.GroupByKey() | beam.MapTuple(lambda user, values: len(list(values)))
  counter = beam.metrics.Metrics.counter("loss", "grouped")
  _ = grouped | beam.Map(counter.inc)
  result = pipeline.run()
  result.wait_until_finish()
  return sum(c.committed for c in result.metrics().query()["counters"])


@pytest.mark.slow
@ON_BEAM_2_77
def test_two_workers_lose_elements_in_a_large_cogroupbykey():
  assert _grouped_by_two_workers(join=True) < LOSS_ELEMENTS


@pytest.mark.slow
@ON_BEAM_2_77
def test_two_workers_keep_every_element_of_a_plain_groupbykey():
  assert _grouped_by_two_workers(join=False) == LOSS_ELEMENTS
