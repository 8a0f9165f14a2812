"""Benchmark: serving latency for one request of C = 200 candidates over L = 10^3, 10^4, 10^5
clusters.

The request is SYNTHETIC (random clusters, behaviors and candidates drawn from the model's
vocabulary); the model is a real export of a trained run. Measured on one CPU core (process
pinned, TensorFlow intra/inter-op threads 1): the SavedModel called in process, and the same
request through the development server over gRPC (server and client in this process, so the
gRPC figure includes serialization both ways). Also in process: the same run exported without
the GSU's bound pruning (every cluster multiplied and ranked; the same scores), and how many
clusters of the request can reach some candidate's top 100 (what the pruning ranks).

  python bench/serving.py --run-dir work_dir/runs/TwinV2-seed0 [--clusters 1000 10000]

Last line: {"candidates", "request", "runs": [{"clusters", "reaching", "in_process": {"p50_ms",
"p99_ms", "rps", "requests"}, "in_process_unpruned": {...}, "dev_server_grpc": {...}}, ...]}
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def synthetic_request(vocabularies, clusters: int, candidates: int, seed: int = 0):
  """SYNTHETIC serving_default arrays for one user (B = 1), ids drawn from the run's
  vocabularies (hashed features: any id)."""
  from twin_tf.data import schema
  from twin_tf.export.saved_model import CANDIDATE_DENSE
  from twin_tf.model import features
  spec = vocabularies.spec
  rng = np.random.default_rng(seed)
  now = 1_600_000_000

  def ids(field, n):
    vocabulary = vocabularies[field]
    return rng.integers(0, 10 ** 6, n) if vocabulary.hash_buckets else rng.choice(
        vocabulary.ids, n)

  arrays = {"request_time": np.array([now], np.int64)}
  for prefix, length in (("long", clusters), ("short", 50)):
    values = {f: ids(f, length) for f in spec.candidate_fields}
    values.update({f: rng.integers(0, 2, length) for f in spec.behavior_flags})
    values.update({schema.GROUP: rng.integers(0, 5, length),
                   schema.TIMESTAMP: np.sort(rng.integers(now - 10 ** 8, now, length))})
    for field in spec.sequence_fields:
      arrays[f"{prefix}_{field}"] = values[field][None].astype(np.int64)
    arrays[f"{prefix}_size"] = rng.integers(1, 21, (1, length)).astype(np.float32)
    arrays[f"{prefix}_length"] = np.array([length], np.int32)
  for field in spec.candidate_fields:
    arrays[f"candidate_{field}"] = ids(field, candidates)[None].astype(np.int64)
  arrays[CANDIDATE_DENSE] = rng.random((1, candidates, len(features.DENSE_FEATURES)),
                                       np.float32)
  return arrays


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run-dir", default=str(REPO / "work_dir/runs/TwinV2-seed0"))
  parser.add_argument("--clusters", type=int, nargs="+", default=[10**3, 10**4, 10**5])
  parser.add_argument("--candidates", type=int, default=200)
  parser.add_argument("--requests", type=int, default=300)
  args = parser.parse_args()
  from timing import in_process_timings, one_core_tensorflow, serving_timings
  tf = one_core_tensorflow()

  from twin_tf.export import saved_model
  from twin_tf.training.trainer import restore_model

  model, vocabularies, _ = restore_model(args.run_dir)
  serving = saved_model.ServingModule(model, vocabularies)
  runs = []
  with tempfile.TemporaryDirectory() as folder:
    base, unpruned = pathlib.Path(folder) / "twin", pathlib.Path(folder) / "twin_unpruned"
    saved_model.export_saved_model(args.run_dir, base)
    saved_model.export_saved_model(args.run_dir, unpruned, bound_pruning=False)
    for clusters in args.clusters:
      arrays = synthetic_request(vocabularies, clusters, args.candidates)
      reach = int(model.gsu_reach(serving.model_inputs(
          {k: tf.constant(v) for k, v in arrays.items()}))[0])
      in_process, through_grpc = serving_timings(base, arrays, args.requests)
      in_process_unpruned = in_process_timings(unpruned, arrays, args.requests)
      print(f"L = {clusters:,}, in process (1 core): p50 {in_process['p50_ms']} ms, p99 "
            f"{in_process['p99_ms']} ms, {in_process['rps']} requests/s ({reach:,} clusters "
            f"can reach a top 100; ranking all: p50 {in_process_unpruned['p50_ms']} ms, p99 "
            f"{in_process_unpruned['p99_ms']} ms); development server over gRPC (client in "
            f"the same process): p50 {through_grpc['p50_ms']} ms, p99 "
            f"{through_grpc['p99_ms']} ms", flush=True)
      runs.append({"clusters": clusters, "reaching": reach, "in_process": in_process,
                   "in_process_unpruned": in_process_unpruned,
                   "dev_server_grpc": through_grpc})
  print(json.dumps({"candidates": args.candidates, "request": "SYNTHETIC", "runs": runs}))


if __name__ == "__main__":
  sys.path[:0] = [str(REPO), str(REPO / "bench")]
  main()
