"""Benchmark: hierarchical clustering of one SYNTHETIC user at 10^4, 10^5, 10^6 behaviors.

Each size runs in a fresh process pinned to one core (one BLAS thread), so peak RSS is that
size's own. The user is SYNTHETIC: 64-dim item embeddings drawn from a mixture of topics,
random play completion. Timed: `cluster_user` (embedding lookup, grouping, recursive k-means,
virtual items). Then the compression ratio distribution over all users of the real MovieLens
data (not synthetic).

  python bench/clustering.py [--sizes 10000 100000 1000000] [--data ../shared/data/ml-latest-small]

Last line: {"sizes": [{"behaviors", "seconds", "peak_rss_mb", "clusters", "max_cluster_size",
"compression", "cluster_size_p50", "inertia"}, ...], "movielens": {...compression summary...}}
"inertia" is the mean squared distance of a behavior's embedding to its cluster's mean.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
REPO = pathlib.Path(__file__).resolve().parents[1]


def synthetic_user(num_behaviors: int, dim: int = 64, topics: int = 200, seed: int = 0):
  """SYNTHETIC: a user whose items come from a mixture of `topics` Gaussian topics."""
  import numpy as np

  from twin_tf.clustering.embeddings import ItemEmbeddingTable
  from twin_tf.data import schema
  from twin_tf.data.feature_spec import MOVIELENS
  rng = np.random.default_rng(seed)
  num_items = max(1000, num_behaviors // 5)
  centers = rng.standard_normal((topics, dim)).astype(np.float32)
  item_topic = rng.integers(0, topics, num_items)
  vectors = centers[item_topic] + 0.5 * rng.standard_normal((num_items, dim), np.float32)
  columns = MOVIELENS.empty_columns(num_behaviors)
  columns[schema.USER_ID][:] = 1
  columns[schema.ITEM_ID] = rng.integers(0, num_items, num_behaviors)
  columns[schema.TIMESTAMP] = rng.integers(1_300_000_000, 1_700_000_000, num_behaviors)
  columns[schema.DURATION] = rng.uniform(5, 600, num_behaviors).astype(np.float32)
  columns[schema.PLAY_TIME] = (columns[schema.DURATION] *
                               rng.beta(0.7, 0.7, num_behaviors)).astype(np.float32)
  columns["category"] = item_topic[columns[schema.ITEM_ID]]
  return columns, ItemEmbeddingTable(np.arange(num_items), vectors)


def measure_one(num_behaviors: int) -> dict:
  """Runs in the child process: cluster one synthetic user, report time and memory."""
  import resource
  import time

  import numpy as np

  from twin_tf.clustering import cluster_user
  columns, table = synthetic_user(num_behaviors)
  start = time.perf_counter()
  user = cluster_user(columns, table)
  seconds = time.perf_counter() - start
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  sizes = user.clusters["cluster_size"]
  assert sizes.sum() == num_behaviors and sizes.max() <= 20
  return {"behaviors": num_behaviors, "seconds": round(seconds, 2),
          "peak_rss_mb": round(peak_rss_mb, 1),
          "clusters": int(len(sizes)), "max_cluster_size": int(sizes.max()),
          "compression": round(num_behaviors / len(sizes), 2),
          "cluster_size_p50": float(np.median(sizes)),
          "inertia": round(inertia(columns, table, user), 4)}


def inertia(columns, table, user) -> float:
  """Mean squared distance of a behavior's embedding to its cluster's mean: how tight."""
  import numpy as np

  from twin_tf.clustering.kmeans import cluster_sums, squared_distances
  from twin_tf.data import schema
  embeddings, _ = table.lookup(columns[schema.ITEM_ID][user.behavior_index])
  cluster = user.cluster_of_behavior
  sums, counts = cluster_sums(embeddings, cluster, user.num_clusters)
  means = (sums / counts[:, None]).astype(np.float32)
  return float(squared_distances(embeddings, means, cluster).mean(dtype=np.float64))


def movielens_compression(data_dir: str) -> dict:
  """Compression per real user (all behaviors, gamma 20, bootstrap embeddings)."""
  import numpy as np

  from twin_tf.clustering import cluster_user, records
  from twin_tf.clustering.embeddings import bootstrap_embeddings
  from twin_tf.clustering.summary import compression_summary
  from twin_tf.data import schema
  from twin_tf.data.movielens import load_movielens
  columns, _, _ = load_movielens(data_dir)
  table = bootstrap_embeddings(columns)
  order = np.argsort(columns[schema.USER_ID], kind="stable")
  columns = schema.take(columns, order)
  _, starts = np.unique(columns[schema.USER_ID], return_index=True)
  user_records = []
  for lo, hi in zip(starts, list(starts[1:]) + [len(order)]):
    user = cluster_user(schema.take(columns, slice(lo, hi)), table)
    user_records.append({records.NUM_BEHAVIORS: user.num_behaviors,
                         schema.CLUSTER_SIZE: user.clusters[schema.CLUSTER_SIZE]})
  return compression_summary(user_records)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
  parser.add_argument("--data", default=str(REPO.parent / "shared/data/ml-latest-small"))
  parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(json.dumps(measure_one(args.child)))
    return
  runs = []
  for size in args.sizes:
    completed = subprocess.run([sys.executable, __file__, "--child", str(size)],
                               env={**os.environ, **ONE_THREAD}, capture_output=True,
                               text=True, check=True, cwd=REPO)
    run = json.loads(completed.stdout.strip().splitlines()[-1])
    runs.append(run)
    print(f"SYNTHETIC user, {size:>9,} behaviors: {run['seconds']:7.2f} s, peak RSS "
          f"{run['peak_rss_mb']:7.1f} MB, {run['clusters']:,} clusters "
          f"(compression {run['compression']}x), max cluster size {run['max_cluster_size']}, "
          f"inertia {run['inertia']}",
          flush=True)
  from twin_tf.clustering.summary import format_summary
  real = movielens_compression(args.data)
  print("Real MovieLens (all behaviors per user, gamma 20, bootstrap embeddings):")
  print(format_summary(real))
  print(json.dumps({"sizes": runs, "movielens": real}))


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  main()
