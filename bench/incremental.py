"""Benchmark: incremental re-clustering against full re-clustering, one core.

Two datasets: one SYNTHETIC user of 10^6 behaviors (bench/clustering.py's topic mixture), and
every real MovieLens user (the main job's cutoff, each user's first half). For a new fraction
f, the previous run clustered each user's behaviors up to the point where a fraction f of
today's clustered behaviors is still to come; today, `cluster_user` clusters everything from
scratch (full) and `update_user` places only the new behaviors into the previous clusters
(incremental). Timed: the clustering calls alone (both read the same columns and table). Each
dataset runs in a fresh process pinned to one core with one BLAS thread.

Quality comes from the freshness study of `twin-tf experiment` (results/quality.json,
"freshness": TwinV2 over the incrementally updated clusters against the full re-clustering,
mean over seeds); the benchmark reads it and prints it beside the timings.

  python bench/incremental.py [--fractions 0.01 0.1] [--synthetic 1000000]

Last line: {"runs": [{"dataset", "new_fraction", "full_s", "incremental_s", "speedup"}],
"quality": {"full": {"auc", "gauc"}, "incremental": {"auc", "gauc"}}}
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _time(call) -> tuple[float, object]:
  import time
  start = time.perf_counter()
  result = call()
  return time.perf_counter() - start, result


def synthetic_runs(num_behaviors: int, fractions) -> list[dict]:
  """The SYNTHETIC user: previous = everything before the (1 - f) time quantile."""
  import numpy as np
  from clustering import synthetic_user  # bench/clustering.py

  from twin_tf.clustering import cluster_user, records
  from twin_tf.clustering.incremental import update_user
  from twin_tf.config import ClusteringConfig
  columns, table = synthetic_user(num_behaviors)
  config = ClusteringConfig()  # no cutoff: every behavior, as a daily serving-side run
  full_s, full = _time(lambda: cluster_user(columns, table, config))
  runs = []
  for fraction in fractions:
    times = np.sort(columns["timestamp"])
    since = int(times[int(round((1 - fraction) * len(times)))])
    previous = records.decode(records.encode(cluster_user(
        columns, table, ClusteringConfig(cutoff_timestamp=since))))
    seconds, updated = _time(lambda: update_user(columns, table, config, previous))
    assert updated.num_behaviors == full.num_behaviors
    assert updated.clusters["cluster_size"].max() <= config.gamma
    runs.append(_run(f"SYNTHETIC user of {num_behaviors:,} behaviors", fraction,
                     full_s, seconds, int(np.sum(columns["timestamp"] >= since))))
  return runs


def movielens_runs(data_dir: str, fractions) -> list[dict]:
  """Every real MovieLens user at the main job's cutoff (each user's first half)."""
  import numpy as np

  from twin_tf.clustering import cluster_user, records
  from twin_tf.clustering.embeddings import bootstrap_embeddings
  from twin_tf.clustering.incremental import update_user
  from twin_tf.clustering.user import clustered_rows
  from twin_tf.config import ClusteringConfig
  from twin_tf.data import schema
  from twin_tf.data.movielens import load_movielens
  columns, _, _ = load_movielens(data_dir)
  table = bootstrap_embeddings(columns)
  order = np.argsort(columns[schema.USER_ID], kind="stable")
  columns = schema.take(columns, order)
  _, starts = np.unique(columns[schema.USER_ID], return_index=True)
  users = [schema.take(columns, slice(lo, hi))
           for lo, hi in zip(starts, list(starts[1:]) + [len(order)])]
  config = ClusteringConfig(cutoff_quantile=0.5)
  full_s, _ = _time(lambda: [cluster_user(u, table, config) for u in users])
  runs = []
  for fraction in fractions:
    previous = [records.decode(records.encode(cluster_user(u, table, ClusteringConfig(
        cutoff_quantile=0.5 * (1 - fraction))))) for u in users]
    new = sum(len(clustered_rows(u, config)[2]) - p[records.NUM_BEHAVIORS]
              for u, p in zip(users, previous))
    seconds, _ = _time(lambda: [update_user(u, table, config, p)
                                for u, p in zip(users, previous)])
    runs.append(_run(f"MovieLens, all {len(users)} users", fraction, full_s, seconds, new))
  return runs


def _run(dataset: str, fraction: float, full_s: float, incremental_s: float, new: int) -> dict:
  return {"dataset": dataset, "new_fraction": fraction, "new_behaviors": new,
          "full_s": round(full_s, 3), "incremental_s": round(incremental_s, 3),
          "speedup": round(full_s / incremental_s, 1)}


def study_quality(path: pathlib.Path) -> dict:
  """TwinV2's mean test AUC / GAUC over the full and the incremental clusters, from the
  freshness sweep of a quality study; {} when the study has not run it."""
  if not path.exists():
    return {}
  points = json.loads(path.read_text()).get("freshness", [])
  picked = {"full": [p for p in points if p["staleness_days"] == 0 and not p["incremental"]],
            "incremental": [p for p in points if p["incremental"]]}
  return {name: {"auc": p[0]["models"]["TwinV2"]["auc_mean"],
                 "gauc": p[0]["models"]["TwinV2"]["gauc_mean"],
                 "auc_std": p[0]["models"]["TwinV2"]["auc_std"],
                 "gauc_std": p[0]["models"]["TwinV2"]["gauc_std"]}
          for name, p in picked.items() if p}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
  parser.add_argument("--synthetic", type=int, default=10**6, help="SYNTHETIC user size")
  parser.add_argument("--data", default=str(REPO.parent / "shared/data/ml-latest-small"))
  parser.add_argument("--quality", default=str(REPO / "results" / "quality.json"))
  parser.add_argument("--child", choices=("synthetic", "movielens"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    runs = (synthetic_runs(args.synthetic, args.fractions) if args.child == "synthetic" else
            movielens_runs(args.data, args.fractions))
    print(json.dumps(runs))
    return
  runs = []
  for child in ("synthetic", "movielens"):
    completed = subprocess.run(
        [sys.executable, __file__, "--child", child, "--synthetic", str(args.synthetic),
         "--data", args.data, "--fractions", *map(str, args.fractions)],
        env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, check=True, cwd=REPO)
    for run in json.loads(completed.stdout.strip().splitlines()[-1]):
      runs.append(run)
      print(f"{run['dataset']}, {run['new_fraction']:.0%} new ({run['new_behaviors']:,} "
            f"behaviors): full {run['full_s']:.2f} s, incremental {run['incremental_s']:.2f} s "
            f"({run['speedup']}x)", flush=True)
  quality = study_quality(pathlib.Path(args.quality))
  for name, q in quality.items():
    print(f"TwinV2 over {name} clusters (quality study, MovieLens): AUC {q['auc']:.4f} "
          f"± {q['auc_std']:.4f}, GAUC {q['gauc']:.4f} ± {q['gauc_std']:.4f}")
  print(json.dumps({"runs": runs, "quality": quality}))


if __name__ == "__main__":
  sys.path[:0] = [str(REPO), str(REPO / "bench")]
  main()
