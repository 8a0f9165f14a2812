"""Benchmark: bootstrap item embeddings against the truth of a SYNTHETIC long-term log.

The SYNTHETIC long-term generator (twin_tf.data.longterm) draws each item's true unit vector;
clicks and exposures follow them. Each method x window learns a table from every behavior
(`bootstrap_embeddings`), and is scored on how well it recovers those vectors:
  cosine_correlation     Pearson correlation of the learnt and the true cosine over 200,000
                         random pairs of items that have a vector;
  neighbor_true_cosine   the true cosine between 2,000 random items and their nearest
                         learnt neighbor (0 for random neighbors, 1 for perfect ones).
Also timed (one process, its own BLAS threads) with the peak of numpy's traced memory.
The scale of each method lies in bench/scale.py's embeddings stage (results/scale.json).

  python bench/embeddings.py [--users 300 --items 20000 --max-behaviors 4000]

Last line: {"data", "behaviors", "items", "runs": [{"method", "window", "seconds",
"peak_traced_mb", "items_with_vectors", "cosine_correlation", "neighbor_true_cosine"}]}
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import tracemalloc

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def recovery(table, truth: np.ndarray, seed: int = 1) -> dict:
  """How well a table's vectors recover the true ones: the module docstring's two scores."""
  has_vector = np.linalg.norm(table.vectors, axis=1) > 0
  ids, vectors = table.item_ids[has_vector], table.vectors[has_vector]
  true = truth[ids - 1]
  rng = np.random.default_rng(seed)
  a, b = rng.integers(0, len(ids), (2, 200_000))
  learnt_cos = np.einsum("nd,nd->n", vectors[a], vectors[b])
  true_cos = np.einsum("nd,nd->n", true[a], true[b])
  queries = rng.choice(len(ids), min(2_000, len(ids)), replace=False)
  similarity = vectors[queries] @ vectors.T
  similarity[np.arange(len(queries)), queries] = -np.inf  # not itself
  nearest = similarity.argmax(axis=1)
  return {"items_with_vectors": len(ids),
          "cosine_correlation": round(float(np.corrcoef(learnt_cos, true_cos)[0, 1]), 4),
          "neighbor_true_cosine": round(float(
              np.einsum("nd,nd->n", true[queries], true[nearest]).mean()), 4)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--users", type=int, default=300)
  parser.add_argument("--items", type=int, default=20_000)
  parser.add_argument("--max-behaviors", dest="max_behaviors", type=int, default=4_000)
  parser.add_argument("--windows", type=int, nargs="+", default=[10, 50])
  parser.add_argument("--methods", nargs="+", default=["ppmi-svd", "spectral"])
  args = parser.parse_args()
  from twin_tf.clustering.embeddings import bootstrap_embeddings
  from twin_tf.config import EmbeddingConfig
  from twin_tf.data import longterm
  config = longterm.LongTermConfig(users=args.users, num_items=args.items,
                                   max_behaviors=args.max_behaviors)
  columns, _ = longterm.longterm_log(config)
  truth = longterm.item_vectors(config)
  runs = []
  for window in args.windows:
    for method in args.methods:
      tracemalloc.start()
      start = time.perf_counter()
      table = bootstrap_embeddings(columns, EmbeddingConfig(window=window, method=method))
      seconds = time.perf_counter() - start
      peak = tracemalloc.get_traced_memory()[1] / 2**20
      tracemalloc.stop()
      run = {"method": method, "window": window, "seconds": round(seconds, 1),
             "peak_traced_mb": round(peak, 1), **recovery(table, truth)}
      runs.append(run)
      print(f"{method} window {window}: {run['seconds']} s, {run['peak_traced_mb']:,} MB; "
            f"cosine correlation {run['cosine_correlation']}, nearest neighbor's true cosine "
            f"{run['neighbor_true_cosine']}", flush=True)
  print(json.dumps({"data": f"SYNTHETIC long-term log ({args.users} users, {args.items:,} "
                    f"items, up to {args.max_behaviors:,} behaviors each)",
                    "behaviors": len(columns["user_id"]), "items": args.items, "runs": runs}))


if __name__ == "__main__":
  sys.path[:0] = [str(REPO), str(REPO / "bench")]
  main()
