"""Beam pipeline: per user, compress life-cycle behaviors into clusters (virtual items).

  logs (Parquet | CSV | TFRecord) -> validate (malformed rows -> dead letters)
    -> key by user -> GroupByKey -> twin_tf.clustering.cluster_user -> cluster records
  with --previous: ... -> CoGroupByKey with the previous run's records ->
    twin_tf.clustering.incremental.update_user (new behaviors join the previous clusters;
    users without a usable previous record are clustered in full)

Outputs under --output:
  clusters-*.tfrecord      one tf.train.Example per user (layout: twin_tf.clustering.records)
  snapshots-*.tfrecord     with ClusteringConfig.snapshots S > 1: each user's earlier cluster
                           snapshots, up to S - 1 records of the same layout, each with its
                           own cutoff (twin_tf.clustering.user.cluster_snapshots), for
                           build_examples --cluster_snapshots
  dead_letters-*.jsonl     one JSON object per malformed row: source, field, reason, record
Counters (namespace cluster_behaviors): behaviors_read, dead_letters, users, behaviors
(clustered, i.e. before the cutoff), clusters, clustering_ms (time spent clustering),
users_incremental (updated from a previous record), users_in_full (no previous record, or
one that did not match: another format, a changed past), previous_unreadable (of those in
full, the users whose previous record did not decode or could not be used at all),
previous_without_behaviors, snapshots.
Progress (users clustered out of all users) goes to stderr.

Locally (default runner FnApiRunner, no download):
  python -m beam_pipelines.cluster_behaviors --input logs.parquet \
      --embeddings item_embeddings.npz --output out/
On Dataflow:
  python -m beam_pipelines.cluster_behaviors --runner=DataflowRunner \
      --project=PROJECT --region=REGION --temp_location=gs://BUCKET/tmp \
      --setup_file=./setup.py --input='gs://BUCKET/logs/*.parquet' \
      --embeddings=gs://BUCKET/item_embeddings.npz --output=gs://BUCKET/clusters/
Daily, incrementally (yesterday's records in, today's out; a fresh --output folder):
  python -m beam_pipelines.cluster_behaviors --input logs.parquet \
      --embeddings item_embeddings.npz --previous 'yesterday/clusters-*' --output today/
"""

from __future__ import annotations

import json
import logging
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import common, spill
from twin_tf import config as config_lib
from twin_tf.clustering import cluster_user, records
from twin_tf.clustering.embeddings import ItemEmbeddingTable
from twin_tf.clustering.incremental import StaleRecord, update_user
from twin_tf.clustering.user import cluster_snapshots
from twin_tf.config import ClusteringConfig
from twin_tf.data import feature_spec, logs, schema

NAMESPACE = "cluster_behaviors"
SNAPSHOTS = "snapshots"  # the tag of ClusterUserDoFn's snapshot records, their file prefix
COUNTERS = ("behaviors_read", "dead_letters", "users", "behaviors", "clusters",
            "clustering_ms", "users_incremental", "users_in_full", "previous_unreadable",
            "previous_without_behaviors", "behaviors_grouped", "records_written",
            "dead_letters_written", "snapshots", "snapshots_written")
# What comes out accounts for what went in (common.reconcile): every valid behavior reaches
# its user's clustering, every user's record and every dead letter reaches its writer.
BALANCES = ((("behaviors_read",), ("behaviors_grouped",), "behaviors"),
            (("users",), ("records_written",), "cluster records"),
            (("snapshots",), ("snapshots_written",), "snapshot records"),
            (("dead_letters",), ("dead_letters_written",), "dead letters"))


class ClusterBehaviorsOptions(PipelineOptions):

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument("--embeddings", default=None,
                        help="item embedding table (.npz with item_ids, vectors)")
    parser.add_argument("--clustering_config", default=None,
                        help="JSON/YAML file of ClusteringConfig fields")
    parser.add_argument("--gamma", type=int, default=None, help="override config.gamma")
    parser.add_argument("--cutoff_quantile", type=float, default=None,
                        help="override config.cutoff_quantile")
    parser.add_argument("--snapshots", type=int, default=None,
                        help="override config.snapshots: also write each user's earlier "
                        "cluster snapshots (snapshots-*) for training on the whole log")
    parser.add_argument("--previous", default=None,
                        help="cluster records of an earlier run (glob): update them with the "
                        "behaviors since instead of clustering from scratch")
    parser.add_argument("--since", type=int, default=None,
                        help="with --previous: behaviors at or after this unix time are new "
                        "(default: each previous record's clustered_before)")


def clustering_config(options: ClusterBehaviorsOptions) -> ClusteringConfig:
  config = (config_lib.load(ClusteringConfig, options.clustering_config)
            if options.clustering_config else ClusteringConfig())
  overrides = {name: getattr(options, name) for name in ("gamma", "cutoff_quantile", "snapshots")
               if getattr(options, name) is not None}
  return config_lib.from_dict(ClusteringConfig, {**config_lib.to_dict(config), **overrides})


class ClusterUserDoFn(beam.DoFn):
  """(user shard, {"behaviors": column batches, "previous": (user_id, record) pairs}) -> per
  user of the shard, its cluster record; its earlier snapshots (config.snapshots > 1) tagged
  SNAPSHOTS."""

  def __init__(self, embeddings_path: str, config: ClusteringConfig, since: int | None = None,
               dtypes: dict[str, type] | None = None):
    self._embeddings_path, self._config, self._since = embeddings_path, config, since
    self._dtypes = dtypes or {}  # of the columns, narrowed for the shuffle (schema.narrowed)
    self._ways = {way: beam.metrics.Metrics.counter(NAMESPACE, way) for way in (
        "users_incremental", "users_in_full", "previous_unreadable",
        "previous_without_behaviors")}
    self._users = beam.metrics.Metrics.counter(NAMESPACE, "users")
    self._behaviors = beam.metrics.Metrics.counter(NAMESPACE, "behaviors")
    self._clusters = beam.metrics.Metrics.counter(NAMESPACE, "clusters")
    self._clustering_ms = beam.metrics.Metrics.counter(NAMESPACE, "clustering_ms")
    self._grouped = beam.metrics.Metrics.counter(NAMESPACE, "behaviors_grouped")
    self._snapshots = beam.metrics.Metrics.counter(NAMESPACE, SNAPSHOTS)
    self._compression = beam.metrics.Metrics.distribution(NAMESPACE, "compression_x100")
    self._table = None

  def setup(self):
    common.map_large_allocations()
    with FileSystems.open(self._embeddings_path) as f:
      self._table = ItemEmbeddingTable.load(f)

  def process(self, element):
    _, grouped = element
    batches = spill.load(grouped["behaviors"])
    previous: dict[int, list[bytes]] = {}
    for user_id, record in grouped["previous"]:
      previous.setdefault(user_id, []).append(record)
    if batches:
      columns = schema.widened(schema.concat(batches), self._dtypes)
      self._grouped.inc(len(columns[schema.USER_ID]))
      for user_id, rows in logs.by_user(columns):
        yield from self._cluster(user_id, rows, previous.pop(user_id, []))
    self._ways["previous_without_behaviors"].inc(len(previous))

  def _cluster(self, user_id: int, columns: dict, previous: list[bytes]):
    """One user's record and snapshots (tagged SNAPSHOTS)."""
    start = time.perf_counter()
    user = None
    if len(previous) == 1:
      try:
        user = update_user(columns, self._table, self._config, records.decode(previous[0]),
                           self._since)
        self._ways["users_incremental"].inc()
      except StaleRecord as error:
        logging.warning("%s", error)
      except Exception as error:  # pylint: disable=broad-except
        # a record that does not decode or was tampered with: never fail the run for it
        self._ways["previous_unreadable"].inc()
        logging.warning("user %s: previous cluster record unreadable (%s: %s): cluster in "
                        "full", user_id, type(error).__name__,
                        str(error)[:200])
    if user is None:
      user = cluster_user(columns, self._table, self._config)
      self._ways["users_in_full"].inc()
    snapshots = cluster_snapshots(columns, self._table, self._config)
    self._clustering_ms.inc(int(1000 * (time.perf_counter() - start)))
    self._users.inc()
    self._behaviors.inc(user.num_behaviors)
    self._clusters.inc(user.num_clusters)
    if user.num_clusters:
      self._compression.update(int(100 * user.num_behaviors / user.num_clusters))
    yield records.encode(user)
    self._snapshots.inc(len(snapshots))
    for snapshot in snapshots:
      yield beam.pvalue.TaggedOutput(SNAPSHOTS, records.encode(snapshot))


class KeyPreviousRecord(beam.DoFn):
  """Serialized previous cluster record -> (user_id, record); one without a readable user
  is counted (previous_unreadable) and left out: its user, if any, is clustered in full."""

  def __init__(self):
    self._unreadable = beam.metrics.Metrics.counter(NAMESPACE, "previous_unreadable")

  def process(self, serialized):
    try:
      yield records.user_id(serialized), serialized
    except Exception as error:  # pylint: disable=broad-except
      self._unreadable.inc()
      logging.warning("a previous cluster record without a readable user_id (%s): left out",
                      type(error).__name__)


class ClusterUsers(beam.PTransform):
  """(user_id, column chunk) -> one serialized cluster record per user (main output) and
  the earlier snapshots (SNAPSHOTS); with `previous` (a glob of an earlier run's records),
  users that have one are updated incrementally. Users are grouped in `user_shards` shards
  (a few large elements whatever the number of users); with `spill_folder`, through files
  (spill.py)."""

  def __init__(self, embeddings_path: str, config: ClusteringConfig,
               previous: str | None = None, since: int | None = None,
               spec: feature_spec.FeatureSpec = feature_spec.MOVIELENS,
               spill_folder: str | None = None, user_shards: int = 64):
    super().__init__()
    self._embeddings_path, self._config = embeddings_path, config
    self._previous, self._since, self._spec = previous, since, spec
    self._spill_folder, self._shards = spill_folder, user_shards

  def expand(self, chunks):
    if self._previous:
      previous = (chunks.pipeline
                  | "ReadPrevious" >> common.ReadWholeFiles(self._previous, "tfrecord")
                  | "KeyPrevious" >> beam.ParDo(KeyPreviousRecord())
                  | "ShardPrevious" >> beam.Map(lambda kv, n: (kv[0] % n, kv), self._shards))
    else:
      previous = chunks.pipeline | "NoPrevious" >> beam.Create([])
    shards = (chunks
              | "ColumnBatches" >> common.ColumnBatches()
              | "ByUserShard" >> beam.FlatMap(_narrowed_by_shard, self._shards))
    grouped = ({"behaviors": spill.spilled(shards, self._spill_folder), "previous": previous}
               | "GroupByUserShard" >> beam.CoGroupByKey())
    clustered = grouped | "Cluster" >> beam.ParDo(ClusterUserDoFn(
        self._embeddings_path, self._config, self._since, self._spec.dtypes)).with_outputs(
            SNAPSHOTS, main="records")
    distinct_users = chunks | "UserIds" >> beam.Keys() | "DistinctUsers" >> beam.Distinct()
    _ = clustered.records | "Progress" >> common.ReportProgress("users clustered",
                                                                distinct_users)
    return clustered


def _narrowed_by_shard(columns: dict, shards: int):
  """A batch of behavior columns -> (user shard, its rows, integer columns narrowed)."""
  for shard, rows in logs.by_key(columns, columns[schema.USER_ID] % shards):
    yield shard, schema.narrowed(rows)


def build(pipeline: beam.Pipeline, options: ClusterBehaviorsOptions, config: ClusteringConfig,
          spill_folder: str | None = None):
  """Adds the pipeline's stages; returns (cluster records, dead letters) PCollections.
  spill_folder: where the user grouping's column chunks go (spill.py; None: the shuffle)."""
  log = options.view_as(common.BehaviorLogOptions)
  spec = feature_spec.for_log(log.input, log.features)
  read = pipeline | "ReadLogs" >> common.ReadBehaviorLog(log.input, log.input_format, NAMESPACE,
                                                         spec)
  clustered = read["chunks"] | "ClusterUsers" >> ClusterUsers(options.embeddings, config,
                                                              options.previous, options.since,
                                                              spec, spill_folder,
                                                              log.user_shards)
  clusters = clustered.records
  output = log.output.rstrip("/")
  _ = (clusters
       | "CountRecords" >> common.counted(NAMESPACE, "records_written")
       | "WriteClusters" >> beam.io.WriteToTFRecord(f"{output}/clusters",
                                                    file_name_suffix=".tfrecord"))
  if config.snapshots > 1:
    _ = (clustered[SNAPSHOTS]
         | "CountSnapshots" >> common.counted(NAMESPACE, "snapshots_written")
         | "WriteSnapshots" >> beam.io.WriteToTFRecord(f"{output}/{SNAPSHOTS}",
                                                       file_name_suffix=".tfrecord"))
  _ = (read[common.DEAD_LETTER]
       | "CountDeadLetters" >> common.counted(NAMESPACE, "dead_letters_written")
       | "DeadLetterJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
       | "WriteDeadLetters" >> beam.io.WriteToText(f"{output}/dead_letters",
                                                   file_name_suffix=".jsonl"))
  return clusters, read[common.DEAD_LETTER]


def run(argv=None, config: ClusteringConfig | None = None) -> dict[str, int]:
  """Runs the pipeline to completion; returns its counters. An in-process caller may pass
  `config` instead of --clustering_config and its overrides."""
  options = common.pipeline_options(argv, ClusterBehaviorsOptions, ("embeddings",))
  config = config or clustering_config(options)
  logging.info("%s", config_lib.describe(config))
  counters = common.run_to_completion(options, lambda p, spill_folder: build(
      p, options, config, spill_folder), NAMESPACE,
                                      COUNTERS, ("clusters-*", f"{SNAPSHOTS}-*", "dead_letters-*"),
                                      BALANCES)
  if not counters["users"]:
    raise SystemExit(f"cluster_behaviors clustered no user: {counters['behaviors_read']:,} "
                     f"behaviors read, {counters['dead_letters']:,} dead letters (-> "
                     f"{options.view_as(common.BehaviorLogOptions).output}/dead_letters-*); "
                     "is --input empty or every row malformed?")
  return counters


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.INFO)
  print(json.dumps(run(), sort_keys=True))
