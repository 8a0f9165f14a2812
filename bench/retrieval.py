"""Benchmark: GSU retrieval, ScaNN against exact top-100, at 10^4 and 10^5 clusters.

Keys are SYNTHETIC: augmented 65-dim GSU vectors (64 = 4 heads x 16, + 1 bias entry) drawn
from a mixture of 300 topics, as clustered keys are; queries (C = 200 candidates) come from the
same topics. One core (BLAS threads 1, process pinned). Times are the search of all C
candidates of one request, median of repeats; ScaNN's index build is reported apart.

  python bench/retrieval.py [--clusters 10000 100000]

Last line: {"runs": [{"clusters", "candidates", "recall_at_100", "exact_ms", "scann_ms",
"speedup", "scann_mode", "build_s"}, ...]}
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def synthetic_keys(num_keys: int, candidates: int, dim: int = 64, topics: int = 300,
                   seed: int = 0):
  """SYNTHETIC (keys (L, dim + 1), queries (C, dim + 1)) from a mixture of topics."""
  from twin_tf.retrieval import gsu_key_vectors, gsu_query_vectors
  rng = np.random.default_rng(seed)
  centers = rng.standard_normal((topics, dim)).astype(np.float32)
  keys = centers[rng.integers(0, topics, num_keys)] + 0.6 * rng.standard_normal(
      (num_keys, dim)).astype(np.float32)
  bias = np.log(rng.integers(1, 21, (num_keys, 1))) + 0.3 * rng.standard_normal((num_keys, 1))
  queries = centers[rng.integers(0, topics, candidates)] + 0.6 * rng.standard_normal(
      (candidates, dim)).astype(np.float32)
  return (gsu_key_vectors(keys.reshape(num_keys, 4, dim // 4), bias),
          gsu_query_vectors(queries.reshape(candidates, 4, dim // 4)))


def median_ms(call, repeats: int = 7) -> float:
  call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1000)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clusters", type=int, nargs="+", default=[10_000, 100_000])
  parser.add_argument("--candidates", type=int, default=200)
  args = parser.parse_args()
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  from twin_tf.retrieval import ExactRetriever, ScannRetriever, recall_at_k
  runs = []
  for num_keys in args.clusters:
    keys, queries = synthetic_keys(num_keys, args.candidates)
    exact = ExactRetriever(keys)
    start = time.perf_counter()
    scann = ScannRetriever(keys, k=100)
    build_s = time.perf_counter() - start
    recall = recall_at_k(scann.search(queries), exact.search(queries))
    exact_ms = median_ms(lambda: exact.search(queries))
    scann_ms = median_ms(lambda: scann.search(queries))
    run = {"clusters": num_keys, "candidates": args.candidates,
           "recall_at_100": round(recall, 4), "exact_ms": round(exact_ms, 2),
           "scann_ms": round(scann_ms, 2), "speedup": round(exact_ms / scann_ms, 2),
           "scann_mode": scann.config.mode, "build_s": round(build_s, 2)}
    runs.append(run)
    print(f"SYNTHETIC keys, {num_keys:>7,} clusters x {args.candidates} candidates: "
          f"recall@100 {recall:.4f}, exact {exact_ms:.1f} ms, ScaNN ({scann.config.mode}) "
          f"{scann_ms:.1f} ms, {exact_ms / scann_ms:.1f}x faster (index build {build_s:.1f} s)",
          flush=True)
  print(json.dumps({"keys": "SYNTHETIC topic mixture", "runs": runs}))


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  main()
