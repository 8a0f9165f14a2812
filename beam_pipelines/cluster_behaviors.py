"""Beam pipeline: per user, compress life-cycle behaviors into clusters (virtual items).

  logs (Parquet | CSV | TFRecord) -> validate (malformed rows -> dead letters)
    -> key by user -> GroupByKey -> twin_tf.clustering.cluster_user -> cluster records

Outputs under --output:
  clusters-*.tfrecord      one tf.train.Example per user (layout: twin_tf.clustering.records)
  dead_letters-*.jsonl     one JSON object per malformed row: source, field, reason, record
Counters (namespace cluster_behaviors): behaviors_read, dead_letters, users, behaviors
(clustered, i.e. before the cutoff), clusters, clustering_ms (time spent in cluster_user).
Progress (users clustered out of all users) goes to stderr.

Locally (default runner FnApiRunner, no download):
  python -m beam_pipelines.cluster_behaviors --input logs.parquet \
      --embeddings item_embeddings.npz --output out/
On Dataflow:
  python -m beam_pipelines.cluster_behaviors --runner=DataflowRunner \
      --project=PROJECT --region=REGION --temp_location=gs://BUCKET/tmp \
      --setup_file=./setup.py --input='gs://BUCKET/logs/*.parquet' \
      --embeddings=gs://BUCKET/item_embeddings.npz --output=gs://BUCKET/clusters/
"""

from __future__ import annotations

import json
import logging
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import common
from twin_tf import config as config_lib
from twin_tf.clustering import cluster_user, records
from twin_tf.clustering.embeddings import ItemEmbeddingTable
from twin_tf.config import ClusteringConfig
from twin_tf.data import logs, schema

NAMESPACE = "cluster_behaviors"
COUNTERS = ("behaviors_read", "dead_letters", "users", "behaviors", "clusters",
            "clustering_ms")


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


def clustering_config(options: ClusterBehaviorsOptions) -> ClusteringConfig:
  config = (config_lib.load(ClusteringConfig, options.clustering_config)
            if options.clustering_config else ClusteringConfig())
  overrides = {name: getattr(options, name) for name in ("gamma", "cutoff_quantile")
               if getattr(options, name) is not None}
  return config_lib.from_dict(ClusteringConfig, {**config_lib.to_dict(config), **overrides})


class ClusterUserDoFn(beam.DoFn):
  """(user_id, behavior tuples) -> serialized cluster record of that user."""

  def __init__(self, embeddings_path: str, config: ClusteringConfig):
    self._embeddings_path, self._config = embeddings_path, config
    self._users = beam.metrics.Metrics.counter(NAMESPACE, "users")
    self._behaviors = beam.metrics.Metrics.counter(NAMESPACE, "behaviors")
    self._clusters = beam.metrics.Metrics.counter(NAMESPACE, "clusters")
    self._clustering_ms = beam.metrics.Metrics.counter(NAMESPACE, "clustering_ms")
    self._compression = beam.metrics.Metrics.distribution(NAMESPACE, "compression_x100")
    self._table = None

  def setup(self):
    with FileSystems.open(self._embeddings_path) as f:
      self._table = ItemEmbeddingTable.load(f)

  def process(self, element):
    _, rows = element
    start = time.perf_counter()
    user = cluster_user(logs.tuples_to_columns(rows), self._table, self._config)
    self._clustering_ms.inc(int(1000 * (time.perf_counter() - start)))
    self._users.inc()
    self._behaviors.inc(user.num_behaviors)
    self._clusters.inc(user.num_clusters)
    if user.num_clusters:
      self._compression.update(int(100 * user.num_behaviors / user.num_clusters))
    yield records.encode(user)


class ClusterUsers(beam.PTransform):
  """Behavior tuples -> one serialized cluster record per user."""

  def __init__(self, embeddings_path: str, config: ClusteringConfig):
    super().__init__()
    self._embeddings_path, self._config = embeddings_path, config

  def expand(self, rows):
    user_index = schema.FIELD_NAMES.index(schema.USER_ID)
    users = (rows
             | "KeyByUser" >> beam.Map(lambda row: (row[user_index], row))
             | "GroupByUser" >> beam.GroupByKey())
    clustered = users | "Cluster" >> beam.ParDo(
        ClusterUserDoFn(self._embeddings_path, self._config))
    _ = clustered | "Progress" >> common.ReportProgress("users clustered", users)
    return clustered


def build(pipeline: beam.Pipeline, options: ClusterBehaviorsOptions, config: ClusteringConfig):
  """Adds the pipeline's stages; returns (cluster records, dead letters) PCollections."""
  log = options.view_as(common.BehaviorLogOptions)
  read = pipeline | "ReadLogs" >> common.ReadBehaviorLog(log.input, log.input_format, NAMESPACE)
  clusters = read.rows | "ClusterUsers" >> ClusterUsers(options.embeddings, config)
  output = log.output.rstrip("/")
  _ = clusters | "WriteClusters" >> beam.io.WriteToTFRecord(
      f"{output}/clusters", file_name_suffix=".tfrecord")
  _ = (read.dead_letter
       | "DeadLetterJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
       | "WriteDeadLetters" >> beam.io.WriteToText(f"{output}/dead_letters",
                                                   file_name_suffix=".jsonl"))
  return clusters, read.dead_letter


def run(argv=None, config: ClusteringConfig | None = None) -> dict[str, int]:
  """Runs the pipeline to completion; returns its counters. An in-process caller may pass
  `config` instead of --clustering_config and its overrides."""
  options = common.pipeline_options(argv, ClusterBehaviorsOptions, ("embeddings",))
  config = config or clustering_config(options)
  logging.info("%s", config_lib.describe(config))
  return common.run_to_completion(options, lambda p: build(p, options, config), NAMESPACE,
                                  COUNTERS)


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.INFO)
  print(json.dumps(run(), sort_keys=True))
