"""Beam pipeline: the GSU key cache of one exported model version.

  users-*.tfrecord (build_examples) -> distinct cluster items -> batches -> item_keys
      signature -> item_keys-*.tfrecord (per item: keys, queries, value_heads, known,
      model_version)
  users + item keys (side input) + cluster_bias signature -> user_keys-*.tfrecord
      (layout: twin_tf/export/key_cache.py); users with more than --scann_min_clusters clusters also
      get a serialized ScaNN searcher under searchers/<user_id>/
Users whose clusters reference items outside the model's vocabulary go to
dead_letters-*.jsonl. Counters (namespace cache_keys): items, users, searchers, dead_letters,
and those BALANCES reconcile (a run whose counts do not reconcile fails).

  python -m beam_pipelines.cache_keys --model_dir work_dir/serving/twin/1 \
      --examples work_dir/examples --output work_dir/key_cache
"""

from __future__ import annotations

import json
import logging
import time

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import common
from twin_tf.data import schema, tfexample
from twin_tf.data.feature_spec import FeatureSpec
from twin_tf.export import key_cache, saved_model
from twin_tf.export.retrieval import ScannRetriever

NAMESPACE = "cache_keys"
COUNTERS = ("items", "users", "searchers", "dead_letters", "users_read", "items_distinct",
            "user_keys_written", "item_keys_written", "dead_letters_written")
# What comes out accounts for what went in (common.reconcile): every user record read gets a
# key record or a dead letter, every distinct cluster item its keys, and all reach a writer.
BALANCES = ((("users_read",), ("users", "dead_letters"), "user records"),
            (("items_distinct",), ("items",), "items"),
            (("items",), ("item_keys_written",), "item key records"),
            (("users",), ("user_keys_written",), "user key records"),
            (("dead_letters",), ("dead_letters_written",), "dead letters"))


class CacheKeysOptions(PipelineOptions):

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument("--model_dir", default=None, help="an exported version folder")
    parser.add_argument("--examples", default=None, help="build_examples output folder")
    parser.add_argument("--reference_time", type=int, default=None,
                        help="unix time the cross features' ages refer to (default: now)")
    parser.add_argument("--scann_min_clusters", type=int, default=20_000,
                        help="users with more clusters get a ScaNN searcher")
    parser.add_argument("--item_batch", type=int, default=4096)


class ItemKeysDoFn(beam.DoFn):
  """A batch of item tuples (spec.candidate_fields) -> (item_id, (keys, queries, known,
  value_heads))."""

  def __init__(self, model_dir: str):
    self._model_dir, self._model = model_dir, None
    self._items = beam.metrics.Metrics.counter(NAMESPACE, "items")

  def setup(self):
    self._model = key_cache.ModelKeys(self._model_dir)

  def process(self, batch):
    items = np.asarray(batch, np.int64)  # (N, F)
    out = self._model.item_keys(dict(zip(self._model.spec.candidate_fields, items.T)))
    self._items.inc(len(items))
    for i, item in enumerate(items[:, 0]):
      yield int(item), (out["keys"][i], out["queries"][i], bool(out["known"][i]),
                        out["value_heads"][i])


class UserKeysDoFn(beam.DoFn):
  """A build_examples user record -> user key record (or a dead letter)."""

  def __init__(self, model_dir: str, reference_time: int, scann_min_clusters: int,
               searcher_dir: str):
    self._model_dir, self._reference_time = model_dir, reference_time
    self._scann_min_clusters, self._searcher_dir = scann_min_clusters, searcher_dir
    self._users = beam.metrics.Metrics.counter(NAMESPACE, "users")
    self._searchers = beam.metrics.Metrics.counter(NAMESPACE, "searchers")
    self._dead = beam.metrics.Metrics.counter(NAMESPACE, "dead_letters")
    self._model = None

  def setup(self):
    self._model = key_cache.ModelKeys(self._model_dir)

  def process(self, record, items):
    user_id = int(record[schema.USER_ID][0])
    clusters = key_cache.user_clusters(record)
    ids = clusters[schema.ITEM_ID]
    unknown = sorted({int(i) for i in ids if i not in items or not items[i][2]})
    if unknown:
      self._dead.inc()
      yield beam.pvalue.TaggedOutput(common.DEAD_LETTER, {
          "source": "cache_keys", "field": schema.ITEM_ID,
          "reason": f"clusters reference {len(unknown)} items outside the model's vocabulary",
          "record": json.dumps({schema.USER_ID: user_id, "unknown_items": unknown[:100]})})
      return
    item_keys = np.stack([items[i][0] for i in ids]) if len(ids) else np.zeros((0, 1))
    value_heads = np.stack([items[i][3] for i in ids]) if len(ids) else np.zeros((0, 1))
    bias = self._model.cluster_bias(clusters, self._reference_time)
    vectors = key_cache.key_vectors(item_keys, bias)
    searcher = ""
    if len(ids) >= self._scann_min_clusters:
      searcher = f"{self._searcher_dir}/{user_id}"
      ScannRetriever(vectors).serialize(searcher)
      self._searchers.inc()
    self._users.inc()
    yield key_cache.encode(user_id, self._model.version, self._reference_time, vectors,
                           value_heads, clusters, searcher)


def _cluster_items(record, spec: FeatureSpec):
  """The (item_id, item features...) tuples of a user record's clusters."""
  for values in zip(*(record[f"cluster_{f}"] for f in spec.candidate_fields)):
    yield tuple(int(v) for v in values)


def build(pipeline: beam.Pipeline, options: CacheKeysOptions, reference_time: int):
  output = options.view_as(common.BehaviorLogOptions).output.rstrip("/")
  users = (pipeline
           | "ReadUsers" >> common.ReadWholeFiles(f"{options.examples.rstrip('/')}/users-*",
                                                 "tfrecord")
           | "DecodeUsers" >> beam.Map(tfexample.decode)
           | "CountUsers" >> common.counted(NAMESPACE, "users_read"))
  items = (users
           | "ClusterItems" >> beam.FlatMap(_cluster_items,
                                            saved_model.exported_spec(options.model_dir))
           | "DistinctItems" >> beam.Distinct()
           | "CountItems" >> common.counted(NAMESPACE, "items_distinct")
           | "BatchItems" >> beam.BatchElements(min_batch_size=256,
                                                max_batch_size=options.item_batch)
           | "ItemKeys" >> beam.ParDo(ItemKeysDoFn(options.model_dir)))
  _ = (items
       | "EncodeItems" >> beam.Map(lambda kv, v: tfexample.encode({
           schema.ITEM_ID: kv[0], "keys": kv[1][0], "queries": kv[1][1],
           "value_heads": kv[1][3], "known": int(kv[1][2]), key_cache.MODEL_VERSION: v}),
           _version(options.model_dir))
       | "CountItemKeys" >> common.counted(NAMESPACE, "item_keys_written")
       | "WriteItems" >> beam.io.WriteToTFRecord(f"{output}/item_keys",
                                                 file_name_suffix=".tfrecord"))
  outputs = users | "UserKeys" >> beam.ParDo(
      UserKeysDoFn(options.model_dir, reference_time, options.scann_min_clusters,
                   f"{output}/searchers"),
      beam.pvalue.AsDict(items)).with_outputs(common.DEAD_LETTER, main="users")
  _ = outputs.users | "Progress" >> common.ReportProgress("users with cached keys", users)
  _ = (outputs.users
       | "CountUserKeys" >> common.counted(NAMESPACE, "user_keys_written")
       | "WriteUserKeys" >> beam.io.WriteToTFRecord(f"{output}/user_keys",
                                                    file_name_suffix=".tfrecord"))
  _ = (outputs[common.DEAD_LETTER]
       | "CountDeadLetters" >> common.counted(NAMESPACE, "dead_letters_written")
       | "DeadLetterJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True))
       | "WriteDeadLetters" >> beam.io.WriteToText(f"{output}/dead_letters",
                                                   file_name_suffix=".jsonl"))
  return outputs


def _version(model_dir: str) -> int:
  return int(model_dir.rstrip("/").split("/")[-1])


def run(argv=None) -> dict[str, int]:
  """Runs the pipeline to completion; returns its counters."""
  options = common.pipeline_options(argv, CacheKeysOptions, ("model_dir", "examples"),
                                    needs_input=False)
  reference_time = options.reference_time or int(time.time())
  return common.run_to_completion(options, lambda p, _: build(p, options, reference_time),
                                  NAMESPACE, COUNTERS,
                                  ("item_keys-*", "user_keys-*", "dead_letters-*",
                                   "searchers/*"), BALANCES)


if __name__ == "__main__":
  logging.getLogger().setLevel(logging.INFO)
  print(json.dumps(run(), sort_keys=True))
