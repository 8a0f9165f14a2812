"""Beam pipeline: training examples from behavior logs and per-user clusters.

  logs -> validate -> batches of columns ─> by (item shard, time bucket) ────────────────┐
                                          └> per item shard: (item, bucket) totals ─────┤
            (a combiner) -> each bucket's totals of the earlier buckets -> CoGroupByKey ┘
     -> item statistics -> by user shard ─┐
  cluster records (and snapshots) ────────┴ CoGroupByKey -> per user: user_examples
                                          -> users-*.tfrecord       (one record per user)
                                          -> impressions_{train,validation,test}-*.tfrecord
                                          -> groups_{train,validation,test}-*.tfrecord
                                             (user-major, for the streaming input)
                                          -> feature_spec.json  (--features, for training)

Layouts: twin_tf/training/examples.py. A user's long sequences are written once, in the user
record; impression records carry the target, `history_end` and the dense statistics
(twin_tf/training/statistics.py). Behaviors travel as columns, a few large elements, never
one element per behavior. An item's statistics need every user's behaviors on it before
each one: they are computed per (item shard, time bucket) (--item_shards,
--item_bucket_days) and add the totals of the item's earlier buckets, so no worker holds a
hot item's whole history. Users meet their cluster records in --user_shards groups. With
the local runner both groupings move their column batches through files (--spill_dir,
beam_pipelines/spill.py), so its memory does not grow with the log.
With --cluster_snapshots (cluster_behaviors' snapshots-*, ClusteringConfig.snapshots), the
behaviors from each user's first snapshot to the cutoff are train impressions too, each
group record with the snapshot it reads. Users without a cluster record (or without
behaviors) go to dead_letters-*.jsonl, as do malformed log rows. Counters (namespace
build_examples): behaviors_read, dead_letters, users, impressions_train,
impressions_validation, impressions_test, and those BALANCES reconcile (what reached each
join and each writer): a run whose counts do not reconcile fails.

  python -m beam_pipelines.build_examples --input logs.parquet --clusters 'out/clusters-*' \
      --output examples/
"""

from __future__ import annotations

import json
import logging

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import common, spill
from twin_tf.clustering import records as cluster_records
from twin_tf.data import feature_spec, logs, schema, tfexample
from twin_tf.training import statistics
from twin_tf.training.examples import (
  SNAPSHOT,
  SPLITS,
  ExampleConfig,
  user_examples,
  user_groups,
)

NAMESPACE = "build_examples"
COUNTERS = ("behaviors_read", "dead_letters", "users", "behaviors_with_statistics",
            "behaviors_joined", "cluster_records_read", "cluster_records_joined",
            "snapshots_read", "snapshots_joined", "users_written", "dead_letters_written") + tuple(
                f"{what}_{s}" for what in ("impressions", "impressions_written") for s in SPLITS)
# What comes out accounts for what went in (common.reconcile): every valid behavior gets its
# item statistics and reaches its user, every cluster record reaches its user, and every
# user record, impression and dead letter reaches its writer.
BALANCES = ((("behaviors_read",), ("behaviors_with_statistics",), "behaviors"),
            (("behaviors_read",), ("behaviors_joined",), "behaviors"),
            (("cluster_records_read",), ("cluster_records_joined",), "cluster records"),
            (("snapshots_read",), ("snapshots_joined",), "cluster snapshots"),
            (("users",), ("users_written",), "user records"),
            (("dead_letters",), ("dead_letters_written",), "dead letters")) + tuple(
                ((f"impressions_{s}",), (f"impressions_written_{s}",), f"{s} impressions")
                for s in SPLITS)
# Columns added to behavior pieces on their way: the time bucket, the item statistics (N, 4).
_BUCKET, _ITEM_STATISTICS = "__bucket", "__item_statistics"


class BuildExamplesOptions(PipelineOptions):

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument("--clusters", default=None, help="cluster records glob")
    parser.add_argument("--cluster_snapshots", default=None,
                        help="earlier cluster snapshots glob (cluster_behaviors with "
                        "--snapshots): train on the periods between them too")
    parser.add_argument("--validation_fraction", type=float, default=0.2)
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--num_groups", type=int, default=5,
                        help="completion groups M of the behaviors' group feature (use the "
                        "clustering's M)")
    parser.add_argument("--max_impressions", type=int, default=None,
                        help="at most this many impressions per user, the most recent "
                        "(default: all)")
    parser.add_argument("--item_shards", type=int, default=8,
                        help="item statistics are computed per (item shard, time bucket)")
    parser.add_argument("--item_bucket_days", type=float, default=30.0,
                        help="the time buckets' width: one worker holds one item shard's "
                        "behaviors of one bucket, never a hot item's whole history")


class _ByItemGroup(beam.DoFn):
  """A batch of behavior columns -> (group, its rows) per (item shard, time bucket) group,
  one int key; tagged TOTALS: (item shard, statistics.item_totals of its rows by bucket)."""

  TOTALS = "totals"

  def __init__(self, item_shards: int, bucket_seconds: int):
    self._shards, self._seconds = item_shards, bucket_seconds

  def setup(self):
    common.map_large_allocations()

  def process(self, columns):
    shards = columns[schema.ITEM_ID] % self._shards
    buckets = np.floor_divide(columns[schema.TIMESTAMP], self._seconds)
    for group, rows in logs.by_key(columns, buckets * self._shards + shards):
      yield group, schema.narrowed(rows)
    for shard, rows in logs.by_key({**columns, _BUCKET: buckets}, shards):
      yield beam.pvalue.TaggedOutput(self.TOTALS, (shard, statistics.item_totals(
          rows, rows[_BUCKET])))


class _MergeTotals(beam.CombineFn):
  """Item totals tables -> one (statistics.merge_totals), merged as they come."""

  def create_accumulator(self):
    return None

  def add_input(self, accumulator, table):
    return table if accumulator is None else statistics.merge_totals([accumulator, table])

  def merge_accumulators(self, accumulators):
    tables = [a for a in accumulators if a is not None]
    return statistics.merge_totals(tables) if tables else None

  def extract_output(self, accumulator):
    return accumulator


def _earlier_by_group(shard_table, item_shards: int):
  """(item shard, merged totals) -> (group, {item, totals of its earlier buckets}) per time
  bucket: what item_statistics adds to the group's own behaviors."""
  shard, table = shard_table
  earlier = statistics.earlier_totals(table)
  for bucket, rows in logs.by_key(earlier, earlier["bucket"]):
    yield bucket * item_shards + shard, rows


class ItemStatisticsDoFn(beam.DoFn):
  """(group, {behaviors: column pieces, earlier: [its items' earlier totals]}) -> (user shard,
  (columns, (N, len(ITEM_FEATURES)) item statistics)) per user shard of the group's rows."""

  def __init__(self, spec: feature_spec.FeatureSpec, user_shards: int):
    self._dtypes, self._user_shards = spec.dtypes, user_shards
    self._counted = beam.metrics.Metrics.counter(NAMESPACE, "behaviors_with_statistics")

  def setup(self):
    common.map_large_allocations()

  def process(self, element):
    _, grouped = element
    pieces, (earlier,) = spill.load(grouped["behaviors"]), list(grouped["earlier"])
    columns = schema.widened(schema.concat(pieces), self._dtypes)
    rows = np.searchsorted(earlier["item"], columns[schema.ITEM_ID])
    stats = statistics.item_statistics(columns, earlier["totals"][rows])
    columns[_ITEM_STATISTICS] = stats
    self._counted.inc(len(stats))
    for shard, rows in logs.by_key(columns, columns[schema.USER_ID] % self._user_shards):
      yield shard, schema.narrowed(rows)


class UserExamplesDoFn(beam.DoFn):
  """(user shard, {behaviors, clusters, snapshots}) -> per user: user record; impressions by
  split and group records (tagged); a dead letter for a user without exactly one cluster
  record or without behaviors."""

  def __init__(self, config: ExampleConfig, spec: feature_spec.FeatureSpec):
    self._config, self._spec, self._dtypes = config, spec, spec.dtypes
    self._users = beam.metrics.Metrics.counter(NAMESPACE, "users")
    self._dead = beam.metrics.Metrics.counter(NAMESPACE, "dead_letters")
    self._impressions = {s: beam.metrics.Metrics.counter(NAMESPACE, f"impressions_{s}")
                         for s in SPLITS}
    self._joined = {what: beam.metrics.Metrics.counter(NAMESPACE, f"{what}_joined")
                    for what in ("behaviors", "cluster_records", "snapshots")}

  def setup(self):
    common.map_large_allocations()

  def process(self, element):
    _, grouped = element
    pieces = spill.load(grouped["behaviors"])
    behaviors = dict(logs.by_user(schema.widened(schema.concat(pieces), self._dtypes))
                     ) if pieces else {}
    clusters, snapshots = _by_user(grouped["clusters"]), _by_user(grouped["snapshots"])
    self._joined["behaviors"].inc(sum(len(p[schema.USER_ID]) for p in pieces))
    self._joined["cluster_records"].inc(sum(map(len, clusters.values())))
    self._joined["snapshots"].inc(sum(map(len, snapshots.values())))
    for user_id in sorted(set(behaviors) | set(clusters)):
      yield from self._user(user_id, behaviors.get(user_id), clusters.get(user_id, []),
                            snapshots.get(user_id, []))

  def _user(self, user_id, columns, cluster_list, snapshots):
    problem = None
    if len(cluster_list) != 1:
      problem = f"{len(cluster_list)} cluster records for the user (expected 1)"
    elif columns is None:
      problem = "cluster record without behaviors"
    if problem:
      self._dead.inc()
      yield beam.pvalue.TaggedOutput(common.DEAD_LETTER, {
          "source": "build_examples", "field": schema.USER_ID, "reason": problem,
          "record": json.dumps({schema.USER_ID: user_id})})
      return
    item_stats = columns.pop(_ITEM_STATISTICS)
    user, impressions, periods = user_examples(
        columns, cluster_records.decode(cluster_list[0]), self._config, item_stats,
        self._spec, [cluster_records.decode(s) for s in snapshots])
    self._users.inc()
    yield tfexample.encode(user)
    fields = [name for name in impressions if name != SNAPSHOT]
    for i in range(len(impressions["split"])):
      split = SPLITS[impressions["split"][i]]
      self._impressions[split].inc()
      yield beam.pvalue.TaggedOutput(split, tfexample.encode(
          {name: impressions[name][i] for name in fields}))
    for split, record in user_groups(user, impressions, periods, self._spec):
      yield beam.pvalue.TaggedOutput(f"groups_{split}", tfexample.encode(record))


def _by_user(keyed_records) -> dict[int, list[bytes]]:
  """(user_id, serialized record) pairs -> {user_id: its records}."""
  out: dict[int, list[bytes]] = {}
  for user_id, record in keyed_records:
    out.setdefault(user_id, []).append(record)
  return out


class _KeyedClusterRecords(beam.PTransform):
  """(user shard, (user_id, serialized cluster record)) of every record matching a glob,
  counted into the counter `read`."""

  def __init__(self, pattern: str, read: str, user_shards: int):
    super().__init__()
    self._pattern, self._read, self._shards = pattern, read, user_shards

  def expand(self, pbegin):
    return (pbegin
            | "Read" >> common.ReadWholeFiles(self._pattern, "tfrecord")
            | "Count" >> common.counted(NAMESPACE, self._read)
            | "Key" >> beam.Map(lambda s: (cluster_records.user_id(s), s))
            | "KeyByShard" >> beam.Map(lambda keyed, n: (keyed[0] % n, keyed), self._shards))


def build(pipeline: beam.Pipeline, options: BuildExamplesOptions, config: ExampleConfig,
          spill_folder: str | None = None):
  """Adds the stages; returns the DoOutputsTuple (main: user records; SPLITS; dead letters).
  spill_folder: where both groupings' column batches go (spill.py; None: the shuffles)."""
  log = options.view_as(common.BehaviorLogOptions)
  spec = feature_spec.for_log(log.input, log.features)
  read = pipeline | "ReadLogs" >> common.ReadBehaviorLog(log.input, log.input_format, NAMESPACE,
                                                         spec)
  shards = log.user_shards
  rows = read["chunks"] | "ColumnBatches" >> common.ColumnBatches()
  by_item = rows | "ByItemGroup" >> beam.ParDo(_ByItemGroup(
      options.item_shards, round(options.item_bucket_days * statistics.DAY))).with_outputs(
          _ByItemGroup.TOTALS, main="groups")
  earlier = (by_item[_ByItemGroup.TOTALS]
             | "MergeTotals" >> beam.CombinePerKey(_MergeTotals())
             | "EarlierTotals" >> beam.FlatMap(_earlier_by_group, options.item_shards))
  groups = spill.spilled(by_item.groups, spill_folder, "SpillItemGroups")
  behaviors = ({"behaviors": groups, "earlier": earlier}
               | "JoinItemTotals" >> beam.CoGroupByKey()
               | "ItemStatistics" >> beam.ParDo(ItemStatisticsDoFn(spec, shards)))
  behaviors = spill.spilled(behaviors, spill_folder, "SpillUserShards")
  clusters = pipeline | "Clusters" >> _KeyedClusterRecords(
      options.clusters, "cluster_records_read", shards)
  snapshots = (pipeline | "Snapshots" >> _KeyedClusterRecords(
      options.cluster_snapshots, "snapshots_read", shards)
               if options.cluster_snapshots else pipeline | "NoSnapshots" >> beam.Create([]))
  joined = ({"behaviors": behaviors, "clusters": clusters, "snapshots": snapshots}
            | "JoinByUserShard" >> beam.CoGroupByKey())
  outputs = joined | "UserExamples" >> beam.ParDo(UserExamplesDoFn(config, spec)).with_outputs(
      common.DEAD_LETTER, *SPLITS, *(f"groups_{s}" for s in SPLITS), main="users")
  _ = outputs.users | "Progress" >> common.ReportProgress("users with examples", clusters)
  output = log.output.rstrip("/")
  _ = (pipeline | "Spec" >> beam.Create([json.dumps(spec.to_json(), indent=2)])
       | "WriteSpec" >> beam.io.WriteToText(f"{output}/{feature_spec.FILE_NAME}",
                                            shard_name_template=""))
  _ = (outputs.users
       | "CountUsers" >> common.counted(NAMESPACE, "users_written")
       | "WriteUsers" >> beam.io.WriteToTFRecord(f"{output}/users",
                                                 file_name_suffix=".tfrecord"))
  for split in SPLITS:
    _ = (outputs[split]
         | f"Count_{split}" >> common.counted(NAMESPACE, f"impressions_written_{split}")
         | f"Write_{split}" >> beam.io.WriteToTFRecord(f"{output}/impressions_{split}",
                                                       file_name_suffix=".tfrecord"))
    _ = outputs[f"groups_{split}"] | f"WriteGroups_{split}" >> beam.io.WriteToTFRecord(
        f"{output}/groups_{split}", file_name_suffix=".tfrecord")
  dead = ((read[common.DEAD_LETTER], outputs[common.DEAD_LETTER])
          | "AllDeadLetters" >> beam.Flatten())
  _ = (dead
       | "CountDeadLetters" >> common.counted(NAMESPACE, "dead_letters_written")
       | "DeadLetterJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
       | "WriteDeadLetters" >> beam.io.WriteToText(f"{output}/dead_letters",
                                                   file_name_suffix=".jsonl"))
  return outputs


def run(argv=None) -> dict[str, int]:
  """Runs the pipeline to completion; returns its counters."""
  options = common.pipeline_options(argv, BuildExamplesOptions, ("clusters",))
  for name, least in (("item_shards", 1), ("item_bucket_days", 1 / 86400)):
    if not getattr(options, name) >= least:
      raise SystemExit(f"--{name}={getattr(options, name)}: must be at least {least:.3g}")
  config = ExampleConfig(validation_fraction=options.validation_fraction,
                         test_fraction=options.test_fraction, num_groups=options.num_groups,
                         max_impressions=options.max_impressions)
  counters = common.run_to_completion(
      options, lambda p, spill_folder: build(p, options, config, spill_folder), NAMESPACE,
      COUNTERS,
      ("users-*", "impressions_*-*", "groups_*-*", "dead_letters-*", feature_spec.FILE_NAME),
      BALANCES)
  if not counters["impressions_train"]:
    raise SystemExit(
        f"build_examples wrote no training impressions ({counters['users']:,} users, "
        f"{counters['dead_letters']:,} dead letters -> "
        f"{options.view_as(common.BehaviorLogOptions).output}/dead_letters-*): impressions "
        "are the behaviors at or after each user's clustering cutoff, so the clusters were "
        "probably built without one (cluster with --cutoff-quantile)")
  return counters


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.INFO)
  print(json.dumps(run(), sort_keys=True))
