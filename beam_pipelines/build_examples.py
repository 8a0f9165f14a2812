"""Beam pipeline: training examples from behavior logs and per-user clusters.

  logs -> validate -> by item: item statistics -> key by user ─┐
                                                   ├─ CoGroupByKey -> user_examples
  cluster records (and snapshots) -> key by user ──┘   (twin_tf.training.examples)
                                          -> users-*.tfrecord       (one record per user)
                                          -> impressions_{train,validation,test}-*.tfrecord
                                          -> groups_{train,validation,test}-*.tfrecord
                                             (user-major, for the streaming input)
                                          -> feature_spec.json  (--features, for training)

Layouts: twin_tf/training/examples.py. A user's long sequences are written once, in the user
record; impression records carry the target, `history_end` and the dense statistics
(twin_tf/training/statistics.py: the item's come from every user's behaviors, grouped by item
first, so one item's behaviors must fit a worker's memory), and the input pipeline joins them.
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

from beam_pipelines import common
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


class ItemStatisticsDoFn(beam.DoFn):
  """(item_id, behavior tuples) -> (user_id, (behavior tuple, item statistics)) per behavior."""

  def __init__(self, spec: feature_spec.FeatureSpec):
    self._spec = spec

  def process(self, element):
    _, rows = element
    rows = list(rows)
    stats = statistics.item_statistics(logs.tuples_to_columns(rows, self._spec))
    user_index = schema.CORE_NAMES.index(schema.USER_ID)
    for row, values in zip(rows, stats.tolist()):
      yield row[user_index], (row, values)


class UserExamplesDoFn(beam.DoFn):
  """(user_id, {behaviors, clusters}) -> user record; impressions by split (tagged)."""

  def __init__(self, config: ExampleConfig, spec: feature_spec.FeatureSpec):
    self._config, self._spec = config, spec
    self._users = beam.metrics.Metrics.counter(NAMESPACE, "users")
    self._dead = beam.metrics.Metrics.counter(NAMESPACE, "dead_letters")
    self._impressions = {s: beam.metrics.Metrics.counter(NAMESPACE, f"impressions_{s}")
                         for s in SPLITS}
    self._joined = {what: beam.metrics.Metrics.counter(NAMESPACE, f"{what}_joined")
                    for what in ("behaviors", "cluster_records", "snapshots")}

  def process(self, element):
    user_id, grouped = element
    cluster_list, snapshots = list(grouped["clusters"]), list(grouped["snapshots"])
    pairs = list(grouped["behaviors"])
    self._joined["behaviors"].inc(len(pairs))
    self._joined["cluster_records"].inc(len(cluster_list))
    self._joined["snapshots"].inc(len(snapshots))
    behaviors = logs.tuples_to_columns([row for row, _ in pairs], self._spec)
    item_stats = np.array([values for _, values in pairs], np.float32).reshape(
        len(pairs), len(statistics.ITEM_FEATURES))
    problem = None
    if len(cluster_list) != 1:
      problem = f"{len(cluster_list)} cluster records for the user (expected 1)"
    elif not len(behaviors[schema.USER_ID]):
      problem = "cluster record without behaviors"
    if problem:
      self._dead.inc()
      yield beam.pvalue.TaggedOutput(common.DEAD_LETTER, {
          "source": "build_examples", "field": schema.USER_ID, "reason": problem,
          "record": json.dumps({schema.USER_ID: user_id})})
      return
    user, impressions, periods = user_examples(
        behaviors, cluster_records.decode(cluster_list[0]), self._config, item_stats,
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


class _KeyedClusterRecords(beam.PTransform):
  """(user_id, serialized cluster record) of every record matching a glob, counted into
  the counter `read`."""

  def __init__(self, pattern: str, read: str):
    super().__init__()
    self._pattern, self._read = pattern, read

  def expand(self, pbegin):
    return (pbegin
            | "Read" >> common.ReadWholeFiles(self._pattern, "tfrecord")
            | "Count" >> common.counted(NAMESPACE, self._read)
            | "Key" >> beam.Map(lambda s: (cluster_records.user_id(s), s)))


def build(pipeline: beam.Pipeline, options: BuildExamplesOptions, config: ExampleConfig):
  """Adds the stages; returns the DoOutputsTuple (main: user records; SPLITS; dead letters)."""
  log = options.view_as(common.BehaviorLogOptions)
  spec = feature_spec.for_log(log.input, log.features)
  read = pipeline | "ReadLogs" >> common.ReadBehaviorLog(log.input, log.input_format, NAMESPACE,
                                                         spec)
  item_index = schema.CORE_NAMES.index(schema.ITEM_ID)
  behaviors = (read["chunks"]
               | "Rows" >> beam.FlatMap(lambda chunk: logs.columns_to_tuples(chunk[1], spec))
               | "KeyByItem" >> beam.Map(lambda row: (row[item_index], row))
               | "GroupByItem" >> beam.GroupByKey()
               | "ItemStatistics" >> beam.ParDo(ItemStatisticsDoFn(spec))
               | "CountStatistics" >> common.counted(NAMESPACE, "behaviors_with_statistics"))
  clusters = pipeline | "Clusters" >> _KeyedClusterRecords(options.clusters,
                                                            "cluster_records_read")
  snapshots = (pipeline | "Snapshots" >> _KeyedClusterRecords(options.cluster_snapshots,
                                                              "snapshots_read")
               if options.cluster_snapshots else pipeline | "NoSnapshots" >> beam.Create([]))
  joined = ({"behaviors": behaviors, "clusters": clusters, "snapshots": snapshots}
            | "JoinByUser" >> beam.CoGroupByKey())
  outputs = joined | "UserExamples" >> beam.ParDo(UserExamplesDoFn(config, spec)).with_outputs(
      common.DEAD_LETTER, *SPLITS, *(f"groups_{s}" for s in SPLITS), main="users")
  _ = outputs.users | "Progress" >> common.ReportProgress("users with examples", joined)
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
  config = ExampleConfig(validation_fraction=options.validation_fraction,
                         test_fraction=options.test_fraction, num_groups=options.num_groups,
                         max_impressions=options.max_impressions)
  counters = common.run_to_completion(
      options, lambda p: build(p, options, config), NAMESPACE, COUNTERS,
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
