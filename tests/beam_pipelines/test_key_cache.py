"""The key-cache pipeline and the client-side GSU path against serving_default."""

import shutil
import time

import numpy as np
import pytest

from beam_pipelines import cache_keys
from serving import dev_server
from serving.client import TwinClient
from serving.gsu import ClientSideGsu, VersionMismatchError
from twin_tf.data import schema, tfexample
from twin_tf.data.feature_spec import MOVIELENS
from twin_tf.export import key_cache, requests, saved_model
from twin_tf.export.retrieval import ExactRetriever, ScannRetriever
from twin_tf.training.input_pipeline import load_example_data
from twin_tf.training.trainer import TrainConfig, train

REFERENCE_TIME = 1_500_000_000


@pytest.fixture(scope="module")
def cache(real_examples, tmp_path_factory):
  examples = real_examples[0]
  data = load_example_data(examples)
  config = TrainConfig(examples=str(examples), epochs=1, batch_size=64,
                       output_dir=str(tmp_path_factory.mktemp("run")))
  train(config, data, verbose=0)
  base = tmp_path_factory.mktemp("serving")
  version = saved_model.export_saved_model(config.output_dir, base / "twin")
  out = tmp_path_factory.mktemp("key_cache")
  counters = cache_keys.run([f"--model_dir={version}", f"--examples={examples}",
                             f"--output={out}", f"--reference_time={REFERENCE_TIME}",
                             "--scann_min_clusters=150"])
  server = dev_server.DevServer(base / "twin", "twin", poll_seconds=0.2)
  port, _ = server.start()
  client = TwinClient(f"127.0.0.1:{port}")
  yield dict(data=data, out=out, counters=counters, client=client, base=base,
             version=version)
  client.close()
  server.stop()


def test_counters_and_records(cache):
  data, counters = cache["data"], cache["counters"]
  assert counters["users"] == len(data.user_ids) and counters["dead_letters"] == 0
  assert counters["users_read"] == counters["user_keys_written"] == counters["users"]
  assert counters["items_distinct"] == counters["item_keys_written"] == counters["items"]
  assert counters["items"] == len(np.unique(data.clusters[schema.ITEM_ID][
      np.arange(data.clusters[schema.ITEM_ID].shape[1])[None] < data.cluster_len[:, None]]))
  records = [key_cache.decode(s) for s in
             tfexample.read_serialized(str(cache["out"] / "user_keys-*"))]
  longest = max(records, key=lambda r: len(r["key_vectors"]))
  assert longest[key_cache.MODEL_VERSION] == 1
  assert longest[key_cache.REFERENCE_TIME] == REFERENCE_TIME
  assert longest["key_vectors"].shape == (len(longest["clusters"][schema.ITEM_ID]), 4 * 16 + 1)
  assert longest["value_vectors"].shape == (len(longest["clusters"][schema.ITEM_ID]), 4 * 16)
  assert longest[key_cache.SEARCHER]  # over the 150-cluster threshold
  assert counters["searchers"] == sum(1 for r in records if r[key_cache.SEARCHER])


@pytest.mark.parametrize("retriever", ["exact", "scann", "auto"])
def test_client_side_gsu_equals_serving_default(cache, retriever):
  """The user with the most clusters (> 100, so the GSU really selects): retrieving from the
  cache and calling `esu_cached` with the cached projections scores like `serving_default`
  (ScaNN is exact below 20k keys)."""
  data, client = cache["data"], cache["client"]
  row = int(np.argmax(data.cluster_len))
  assert data.cluster_len[row] > 100
  imp = data.impressions["test"]
  picked = np.flatnonzero(imp["user_row"] == row)[:12]
  candidates = requests.candidates_of(data, picked)
  arrays, short = requests.user_request(data, row, candidates, REFERENCE_TIME,
                                        data.num_pre_cutoff[row])
  expected = client.predict(arrays)[0]
  gsu = ClientSideGsu(client, cache["out"])
  got = gsu.score(int(data.user_ids[row]), candidates, short, REFERENCE_TIME, retriever)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert "long_value_heads" in gsu._esu_cached_inputs(1)  # the cached path served it
  if retriever == "auto":  # ScaNN where the cache built a searcher, exact elsewhere
    shortest = int(data.user_ids[np.argmin(data.cluster_len)])
    assert isinstance(gsu.retriever(int(data.user_ids[row])), ScannRetriever)
    assert isinstance(gsu.retriever(shortest), ExactRetriever)


def test_keys_from_another_version_are_refused(cache):
  data, client = cache["data"], cache["client"]
  gsu = ClientSideGsu(client, cache["out"])
  shutil.copytree(cache["version"], cache["base"] / "twin" / "2")  # the server moves to v2
  try:
    for _ in range(100):
      if client.predict_outputs({f: np.array([1], np.int64) for f in MOVIELENS.candidate_fields},
                                "item_keys")[1] == 2:
        break
      time.sleep(0.1)
    row = int(np.argmax(data.cluster_len))
    candidates = requests.candidates_of(data, np.array([0]))
    with pytest.raises(VersionMismatchError,
                       match="built from model version 1, which the server does not serve"):
      gsu.score(int(data.user_ids[row]), candidates,
                {f: data.history[f][row, :5] for f in MOVIELENS.sequence_fields}, REFERENCE_TIME)
  finally:
    shutil.rmtree(cache["base"] / "twin" / "2")


def test_users_with_items_outside_the_vocabulary_are_dead_lettered(cache, real_examples,
                                                                    tmp_path):
  """Under TestPipeline: a user whose clusters name an unknown item leaves through the
  dead-letter output; the others get key records."""
  import apache_beam as beam
  import tensorflow as tf
  from apache_beam.testing.test_pipeline import TestPipeline
  from apache_beam.testing.util import assert_that, equal_to

  from beam_pipelines import common
  users = tfexample.read(str(real_examples[0] / "users-*"))[:3]
  users[0][f"cluster_{schema.ITEM_ID}"] = users[0][f"cluster_{schema.ITEM_ID}"].copy()
  users[0][f"cluster_{schema.ITEM_ID}"][0] = 999_999_999
  folder = tmp_path / "examples"
  folder.mkdir()
  with tf.io.TFRecordWriter(str(folder / "users-00000-of-00001.tfrecord")) as writer:
    for user in users:
      writer.write(tfexample.encode(user))
  options = common.pipeline_options(
      [f"--model_dir={cache['version']}", f"--examples={folder}", f"--output={tmp_path / 'o'}"],
      cache_keys.CacheKeysOptions, ("model_dir", "examples"), needs_input=False)
  with TestPipeline(runner="FnApiRunner", options=options) as p:
    outputs = cache_keys.build(p, options, REFERENCE_TIME)
    assert_that(outputs.users | beam.Map(lambda s: key_cache.decode(s)[schema.USER_ID]),
                equal_to([int(u[schema.USER_ID][0]) for u in users[1:]]), label="KeyRecords")
    assert_that(outputs[common.DEAD_LETTER] | beam.Map(lambda d: (d["field"], "999999999" in
                                                                  d["record"])),
                equal_to([(schema.ITEM_ID, True)]), label="DeadLetters")
