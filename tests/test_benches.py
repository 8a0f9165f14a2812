"""The benchmarks' own code runs, at toy sizes: a bench broken by a change of the model or its
inputs fails here instead of on the GPU machine or at the next measurement (the SYNTHETIC
training batches once lacked the dense inputs for several stops). No figure is asserted:
benchmarks print them."""

import importlib.util
import pathlib

import numpy as np
import pytest


BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def _bench(name):
  """bench/<name>.py as a module (bench/serving.py would shadow the serving package)."""
  spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("model_name", ["TwinV2", "Twin"])
def test_synthetic_training_batches_train(model_name):
  assert _bench("train_throughput").samples_per_second(model_name, length=8, batch=4,
                                                       steps=1) > 0


def test_serving_bench_tiles_real_clusters_into_a_valid_request(real_examples):
  """The serving bench's request: L real clusters (every one once before any repeats), in
  time order, before the request time; it fits the serving signature."""
  import tensorflow as tf

  from twin_tf.export.saved_model import _input_specs
  from twin_tf.training.input_pipeline import load_example_data
  data = load_example_data(real_examples[0])
  bench = _bench("serving")
  pooled = int(data.cluster_len.sum())
  for clusters in (pooled // 2, pooled + 50):
    request = bench.tiled_real_request(data, clusters, candidates=7)
    times = request["long_timestamp"][0]
    assert request["long_item_id"].shape == (1, clusters)
    assert np.all(np.diff(times) >= 0) and times[-1] < request["request_time"][0]
    assert np.all(request["long_size"] >= 1)
    assert request["candidate_item_id"].shape == (1, 7)
    assert len(np.unique(request["candidate_item_id"])) == 7
    specs = _input_specs(tf, data.spec)
    assert set(request) == set(specs)
    for name, value in request.items():
      assert specs[name].shape.is_compatible_with(value.shape), name
  items = set(data.clusters["item_id"][np.arange(data.clusters["item_id"].shape[1]) <
                                       data.cluster_len[:, None]])
  assert set(request["long_item_id"][0]) == items  # every cluster's item appears


def test_clustering_bench_measures_one_synthetic_user():
  bench = _bench("clustering")
  measured = bench.measure_one(2000)
  assert measured["max_cluster_size"] <= 20 and measured["clusters"] >= 100
  assert np.isfinite(measured["inertia"]) and measured["inertia"] > 0


def test_gsu_pruning_bench_factors_reach_more_clusters_as_the_target_term_grows():
  from twin_tf.model.layers import gsu
  bench = _bench("gsu_pruning")
  reach = []
  for scale in (bench.SCALES[0], bench.SCALES[-1]):
    positions, queries = bench.synthetic_factors(3000, 20, scale)
    assert positions.shape == (1, 3000, 49) and queries.shape == (1, 20, 49)
    reach.append(int(np.asarray(gsu.reaching(positions, queries, 100)[1]).sum()))
  assert 100 <= reach[0] < 3000 * gsu.PRUNE_MAX_SHARE < reach[1]


def test_embeddings_bench_scores_recovery_of_the_true_vectors():
  """A table equal to the truth recovers it perfectly; a random one does not."""
  from twin_tf.clustering.embeddings import ItemEmbeddingTable
  truth = np.random.default_rng(0).standard_normal((300, 8))
  truth /= np.linalg.norm(truth, axis=1, keepdims=True)
  perfect = _bench("embeddings").recovery(ItemEmbeddingTable(np.arange(1, 301), truth), truth)
  assert perfect["cosine_correlation"] == 1.0 and perfect["neighbor_true_cosine"] > 0.5
  noise = np.random.default_rng(1).standard_normal((300, 8))
  random = _bench("embeddings").recovery(ItemEmbeddingTable(np.arange(1, 301), noise), truth)
  assert abs(random["cosine_correlation"]) < 0.05
  assert random["neighbor_true_cosine"] < perfect["neighbor_true_cosine"] - 0.3


def test_scale_bench_stages_run_through_the_pipelines_at_a_toy_size(tmp_path):
  """bench/scale.py's data stages on a SYNTHETIC log of 6 users: the log streamed to
  Parquet, every user's embeddings, both pipelines (spilling to files), counts that
  reconcile and the half-users examples."""
  import argparse
  bench = _bench("scale")
  args = argparse.Namespace(users=6, behaviors=600, largest=2_000, cutoff_quantile=0.9)
  synth = bench.stage_synth(tmp_path, args)
  assert synth == {"behaviors": 6 * 600 + 2_000, "users": 7, "largest_user": 6}
  assert bench.stage_embeddings(tmp_path, args)["users"] == 7
  results = {"cluster": bench.stage_cluster(tmp_path, args),
             "build-examples": bench.stage_build_examples(tmp_path, args)}
  results["workers"] = dict(results)  # reconciled() re-checks the two-worker runs too
  assert results["build-examples"]["users_written"] == 7
  assert bench.reconciled(results)
  assert list((tmp_path / "examples_half").glob("groups_train-*"))
  assert not list(tmp_path.glob("*/spill-*"))
