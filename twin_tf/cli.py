"""The `twin-tf` command line.

  twin-tf main                  the main job, end to end on the real data (see README)
  twin-tf convert-movielens     MovieLens folder -> behavior log (Parquet) + dead letters
  twin-tf embeddings            behavior log -> bootstrap item embeddings (PPMI-SVD)
  twin-tf cluster               behavior log -> per-user clusters (Beam pipeline)
  twin-tf cluster-summary       clusters -> compression ratio distribution
  twin-tf build-examples        logs + clusters -> training examples (Beam pipeline)
  twin-tf train                 train one model (Keras fit, checkpoints, TensorBoard)
  twin-tf evaluate              AUC, GAUC, logloss of a trained run on a split
  twin-tf experiment            every model x seeds -> results/quality.json and .md
  twin-tf export                a trained run -> SavedModel <base>/<version>/ for TF Serving
  twin-tf serve                 the DEVELOPMENT server (not TF Serving) over a model base path
  twin-tf cache-keys            GSU key cache + ScaNN searchers of an exported version (Beam)

Run `twin-tf COMMAND --help` for each command's options.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from twin_tf import commands, main_job

DEFAULT_DATA = os.environ.get("TWIN_TF_DATA", "../shared/data/ml-latest-small")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="twin-tf", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)

  main = sub.add_parser("main", help="the main job, end to end on the real data; extra "
                       "--flags go to Beam")
  main_job.add_arguments(main, DEFAULT_DATA)

  convert = sub.add_parser("convert-movielens", help="MovieLens -> behavior log")
  convert.add_argument("--data", default=DEFAULT_DATA)
  convert.add_argument("--out", required=True, help="behavior log path (.parquet/.csv/.tfrecord)")
  convert.add_argument("--max-users", type=int, default=None)

  emb = sub.add_parser("embeddings", help="bootstrap item embeddings from co-occurrence")
  emb.add_argument("--input", required=True, help="behavior log")
  emb.add_argument("--out", required=True, help=".npz output")
  emb.add_argument("--dim", type=int, default=32)
  emb.add_argument("--window", type=int, default=10)
  emb.add_argument("--min-count", type=int, default=2)
  emb.add_argument("--seed", type=int, default=0)

  cluster = sub.add_parser(
      "cluster", help="cluster behaviors per user (Beam); extra --flags go to Beam")
  cluster.add_argument("--input", required=True)
  cluster.add_argument("--embeddings", required=True)
  cluster.add_argument("--output", required=True)
  cluster.add_argument("--config", default=None, help="ClusteringConfig JSON/YAML")
  cluster.add_argument("--gamma", type=int, default=None)
  cluster.add_argument("--cutoff-quantile", type=float, default=None)

  summary = sub.add_parser("cluster-summary", help="compression ratio distribution")
  summary.add_argument("--clusters", required=True, help="the cluster pipeline's output folder")

  examples = sub.add_parser("build-examples", help="training examples (Beam); extra --flags "
                            "go to Beam")
  examples.add_argument("--input", required=True, help="behavior log")
  examples.add_argument("--clusters", required=True, help="the cluster pipeline's output folder")
  examples.add_argument("--output", required=True)

  for name, text in (("train", "train one model"), ("evaluate", "evaluate a trained run")):
    command = sub.add_parser(name, help=text)
    command.add_argument("--config", default=None, help="TrainConfig JSON/YAML")
    command.add_argument("--examples", default=None, help="build-examples output folder")
    command.add_argument("--output-dir", dest="output_dir", default=None, help="run folder")
    command.add_argument("--model", default=None, help="TwinV2, Twin, SimHard, DIN, "
                         "TwinV2-no-ln-n, TwinV2-uniform")
    command.add_argument("--epochs", type=int, default=None)
    command.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    command.add_argument("--seed", type=int, default=None)
    command.add_argument("--backend", choices=("tensorflow", "jax"), default=None,
                         help="Keras backend (default: KERAS_BACKEND, else tensorflow)")
    if name == "evaluate":
      command.add_argument("--split", default="test", choices=("train", "validation", "test"))

  exporter = sub.add_parser("export", help="SavedModel version for TF Serving")
  exporter.add_argument("--run-dir", dest="run_dir", required=True, help="a trained run")
  exporter.add_argument("--base", required=True, help="model base path (versions inside)")
  exporter.add_argument("--version", type=int, default=None, help="default: next number")
  exporter.add_argument("--examples", default=None, help="examples for warmup requests")
  exporter.add_argument("--warmup", type=int, default=10, help="warmup requests (<= 1000)")
  exporter.add_argument("--model-name", dest="model_name", default="twin")

  keys = sub.add_parser("cache-keys", help="GSU key cache (Beam); extra --flags go to Beam")
  keys.add_argument("--model-dir", dest="model_dir", required=True, help="a version folder")
  keys.add_argument("--examples", required=True, help="build-examples output folder")
  keys.add_argument("--output", required=True)
  keys.add_argument("--reference-time", dest="reference_time", type=int, default=None)
  keys.add_argument("--scann-min-clusters", dest="scann_min_clusters", type=int, default=None)

  serve = sub.add_parser("serve", help="DEVELOPMENT server (not TF Serving): gRPC + REST")
  serve.add_argument("--base", default="work_dir/serving", help="folder of <model>/<version>/")
  serve.add_argument("--model-name", dest="model_name", default="twin")
  serve.add_argument("--host", default="127.0.0.1")
  serve.add_argument("--port", type=int, default=8500)
  serve.add_argument("--rest-port", dest="rest_port", type=int, default=8501)

  experiment = sub.add_parser("experiment", help="every model x seeds -> quality report")
  experiment.add_argument("--examples", required=True)
  experiment.add_argument("--out", default="results", help="quality.json / .md folder")
  experiment.add_argument("--runs-dir", dest="runs_dir", default="work_dir/experiment")
  experiment.add_argument("--models", nargs="+", default=["TwinV2", "Twin", "SimHard", "DIN",
                                                          "TwinV2-no-ln-n", "TwinV2-uniform"])
  experiment.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  experiment.add_argument("--epochs", type=int, default=3)
  experiment.add_argument("--dataset", default="MovieLens ml-latest-small")
  return parser


def main(argv=None) -> int:
  args, extra = build_parser().parse_known_args(argv)
  if extra and args.command not in ("cluster", "build-examples", "cache-keys", "main"):
    build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
  if getattr(args, "backend", None):  # before anything imports keras
    os.environ["KERAS_BACKEND"] = args.backend
  handlers = {
      "main": lambda: main_job.main_job(args, extra),
      "convert-movielens": lambda: commands.convert_movielens(args),
      "embeddings": lambda: commands.embeddings(args),
      "cluster": lambda: commands.cluster(args, extra),
      "cluster-summary": lambda: commands.cluster_summary(args),
      "build-examples": lambda: commands.build_examples(args, extra),
      "cache-keys": lambda: commands.cache_keys(args, extra),
      "train": lambda: commands.train(args),
      "evaluate": lambda: commands.evaluate(args),
      "experiment": lambda: commands.experiment(args),
      "export": lambda: commands.export(args),
      "serve": lambda: subprocess.run(  # serving/ imports twin_tf, never the reverse
          [sys.executable, "-m", "serving.dev_server", f"--base={args.base}",
           f"--model_name={args.model_name}", f"--host={args.host}", f"--port={args.port}",
           f"--rest_port={args.rest_port}"], check=True),
  }
  handlers[args.command]()
  return 0


if __name__ == "__main__":
  sys.exit(main())
