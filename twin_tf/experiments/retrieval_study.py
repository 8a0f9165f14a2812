"""ScaNN against exact GSU retrieval: recall@100 and search time, on real and SYNTHETIC keys.

Real keys: every user's GSU key vectors from the key cache of a trained, exported model,
pooled into one collection (MovieLens users have at most a few hundred clusters each, far
below where ScaNN pays, so the pool stands in for one long life-cycle); queries are the
model's query vectors of distinct test candidates. SYNTHETIC keys: a topic mixture at sizes
no public user reaches (10^4, 10^5 clusters). Times are one request (all candidates), the
median of repeats, on this machine with numpy's default threads.
"""

from __future__ import annotations

import time

import numpy as np

from twin_tf.data import schema, tfexample
from twin_tf.export import key_cache
from twin_tf.export.retrieval import (
  ExactRetriever,
  ScannConfig,
  ScannRetriever,
  gsu_key_vectors,
  gsu_query_vectors,
  recall_at_k,
  scann_config,
  tree_ah_config,
)


def synthetic_keys(num_keys: int, candidates: int, dim: int = 64, topics: int = 300,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """SYNTHETIC (keys (L, dim + 1), queries (C, dim + 1)) from a mixture of topics."""
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
  """Median wall time of `call()` in milliseconds, after one warm-up call."""
  call()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1000)


def compare(keys: np.ndarray, queries: np.ndarray, config: ScannConfig | None = None,
            k: int = 100, repeats: int = 7) -> dict:
  """recall@k of ScaNN against exact top-k, both search times and the index build time."""
  exact = ExactRetriever(keys)
  start = time.perf_counter()
  scann = ScannRetriever(keys, k=k, config=config)
  build_s = time.perf_counter() - start
  recall = recall_at_k(scann.search(queries), exact.search(queries, k))
  exact_ms = median_ms(lambda: exact.search(queries, k), repeats)
  scann_ms = median_ms(lambda: scann.search(queries), repeats)
  return {"clusters": int(len(keys)), "candidates": int(len(queries)),
          "scann_mode": scann.config.mode, "recall_at_100": round(recall, 4),
          "exact_ms": round(exact_ms, 3), "scann_ms": round(scann_ms, 3),
          "speedup": round(exact_ms / scann_ms, 2), "build_s": round(build_s, 2)}


def real_keys(key_cache_dir: str, version_dir: str, examples, candidates: int = 200
              ) -> tuple[np.ndarray, np.ndarray]:
  """(every user's cached key vectors pooled (N, D), queries of distinct test candidates)."""
  from twin_tf.training.input_pipeline import load_example_data  # pylint: disable=import-outside-toplevel
  records = [key_cache.decode(s) for s in
             tfexample.read_serialized(f"{str(key_cache_dir).rstrip('/')}/user_keys-*")]
  keys = np.concatenate([r["key_vectors"] for r in records]).astype(np.float32)
  data = load_example_data(examples)
  test = data.impressions["test"]
  _, first = np.unique(test[schema.ITEM_ID], return_index=True)
  picked = np.sort(first)[:candidates]
  queries = key_cache.ModelKeys(version_dir).item_keys(
      {f: test[f][picked] for f in data.spec.candidate_fields})["queries"]
  return keys, gsu_query_vectors(queries)


def study(key_cache_dir: str, version_dir: str, examples,
          synthetic_sizes=(10_000, 100_000), candidates: int = 200) -> dict:
  """{"real": [runs on the pooled real keys], "synthetic": [runs per size]}; each run as
  `compare` returns, plus "keys": "real (pooled over users)" or "SYNTHETIC"."""
  keys, queries = real_keys(key_cache_dir, version_dir, examples, candidates)
  runs = []
  for config in (scann_config(len(keys)), tree_ah_config(len(keys))):
    runs.append({"keys": "real (pooled over users)", **compare(keys, queries, config)})
    _print(runs[-1])
  for size in synthetic_sizes:
    keys, queries = synthetic_keys(size, candidates)
    runs.append({"keys": "SYNTHETIC", **compare(keys, queries)})
    _print(runs[-1])
  return {"runs": runs}


def _print(run: dict) -> None:
  print(f"{run['keys']} keys, {run['clusters']:,} clusters x {run['candidates']} candidates: "
        f"ScaNN ({run['scann_mode']}) recall@100 {run['recall_at_100']:.4f}, exact "
        f"{run['exact_ms']:.1f} ms, ScaNN {run['scann_ms']:.1f} ms ({run['speedup']}x)",
        flush=True)
