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

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clusters", type=int, nargs="+", default=[10_000, 100_000])
  parser.add_argument("--candidates", type=int, default=200)
  args = parser.parse_args()
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  from twin_tf.experiments.retrieval_study import compare, synthetic_keys
  runs = []
  for num_keys in args.clusters:
    run = compare(*synthetic_keys(num_keys, args.candidates))
    runs.append(run)
    print(f"SYNTHETIC keys, {num_keys:>7,} clusters x {args.candidates} candidates: "
          f"recall@100 {run['recall_at_100']:.4f}, exact {run['exact_ms']:.1f} ms, ScaNN "
          f"({run['scann_mode']}) {run['scann_ms']:.1f} ms, {run['speedup']:.1f}x faster "
          f"(index build {run['build_s']:.1f} s)", flush=True)
  print(json.dumps({"keys": "SYNTHETIC topic mixture", "runs": runs}))


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  main()
