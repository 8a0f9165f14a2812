"""Benchmark: the GSU's bound pruning against ranking every cluster, as the target term grows.

SYNTHETIC GSU factors for one request (B = 1, C = 200 candidates, 48 features, k = 100):
offsets (the per-cluster bias) with a standard deviation of 3, as on the trained MovieLens
TwinV2, and features scaled so that the target term x . q grows from negligible to larger
than the offsets' spread. For each scale: how many clusters can reach a top 100
(gsu.reaching), and the p50 latency of gsu.product_top_k as served (pruning up to
PRUNE_MAX_SHARE, else ranking all), always pruned, and never pruned. One pinned core,
TensorFlow intra/inter-op threads 1. The crossover of "always" and "never" is what
PRUNE_MAX_SHARE is chosen from.

  python bench/gsu_pruning.py [--clusters 10000 100000]

Last line: {"data": "SYNTHETIC", "candidates", "runs": [{"clusters", "feature_scale",
"reaching", "share", "served_ms", "always_ms", "never_ms"}, ...]}
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SCALES = (0.0003, 0.03, 0.1, 0.3, 0.5, 1.0)


def synthetic_factors(clusters: int, candidates: int, scale: float, seed: int = 0):
  """SYNTHETIC (positions (1, L, 49), queries (1, C, 49)) of gsu.product_top_k."""
  rng = np.random.default_rng(seed)
  features = rng.standard_normal((1, clusters, 48)).astype(np.float32) * scale
  offsets = rng.standard_normal((1, clusters, 1)).astype(np.float32) * 3
  queries = rng.standard_normal((1, candidates, 48)).astype(np.float32) / 7
  return (np.concatenate([features, offsets], -1),
          np.concatenate([queries, np.ones((1, candidates, 1), np.float32)], -1))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clusters", type=int, nargs="+", default=[10**4, 10**5])
  parser.add_argument("--candidates", type=int, default=200)
  parser.add_argument("--requests", type=int, default=30)
  args = parser.parse_args()
  from timing import one_core_tensorflow, timings
  tf = one_core_tensorflow()

  from twin_tf.model.layers import gsu

  signature = [tf.TensorSpec([None, None, 49])] * 2
  ways = {name: tf.function(lambda p, q, share=share: gsu.product_top_k(p, q, 100, share),
                            input_signature=signature)
          for name, share in (("served", gsu.PRUNE_MAX_SHARE), ("always", 1.0),
                              ("never", 0.0))}
  runs = []
  for clusters in args.clusters:
    for scale in SCALES:
      positions, queries = (tf.constant(a) for a in
                            synthetic_factors(clusters, args.candidates, scale))
      reach = int(gsu.reaching(positions, queries, 100)[1].numpy().sum())
      run = {"clusters": clusters, "feature_scale": scale, "reaching": reach,
             "share": round(reach / clusters, 4)}
      for name, way in ways.items():
        run[f"{name}_ms"] = timings(lambda: way(positions, queries).numpy(),
                                    args.requests)["p50_ms"]
      print(f"L = {clusters:,}, features x {scale}: {reach:,} can reach a top 100 "
            f"({run['share']:.1%}); p50 served {run['served_ms']} ms, always pruned "
            f"{run['always_ms']} ms, never {run['never_ms']} ms", flush=True)
      runs.append(run)
  print(json.dumps({"data": "SYNTHETIC", "candidates": args.candidates, "runs": runs}))


if __name__ == "__main__":
  sys.path[:0] = [str(REPO), str(REPO / "bench")]
  main()
