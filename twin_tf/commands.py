"""What each `twin-tf` command does, callable from the CLI and the main job.

Each command function takes its parsed arguments (an argparse.Namespace; score_user takes
the main job's folders) and returns the figures it printed, as a dict. Heavy imports happen inside, so `twin-tf --help` stays fast.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys


def convert_movielens(args) -> dict:
  from twin_tf import logs  # pylint: disable=import-outside-toplevel
  from twin_tf.data import movielens  # pylint: disable=import-outside-toplevel
  columns, dead, _ = movielens.load_movielens(args.data)
  if args.max_users:
    from twin_tf import schema  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    users = np.unique(columns[schema.USER_ID])[:args.max_users]
    columns = schema.take(columns, np.isin(columns[schema.USER_ID], users))
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  logs.write_behavior_log(columns, out)
  dead_path = out.with_name(out.stem + ".dead_letters.jsonl")
  dead_path.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in dead))
  result = {"behaviors": len(columns["user_id"]), "dead_letters": len(dead),
            "output": str(out), "dead_letter_output": str(dead_path)}
  print(f"converted {args.data}: {result['behaviors']:,} behaviors -> {out}; "
        f"{len(dead)} malformed rows -> {dead_path}")
  return result


def embeddings(args) -> dict:
  from twin_tf import config as config_lib, logs  # pylint: disable=import-outside-toplevel
  from twin_tf.config import EmbeddingConfig  # pylint: disable=import-outside-toplevel
  from twin_tf.embeddings import bootstrap_embeddings  # pylint: disable=import-outside-toplevel
  config = EmbeddingConfig(dim=args.dim, window=args.window, min_count=args.min_count,
                           seed=args.seed)
  print(config_lib.describe(config))
  columns, dead = logs.read_behavior_log(args.input)
  if dead:
    print(f"{len(dead)} malformed rows skipped (first: {dead[0]})", file=sys.stderr)
  table = bootstrap_embeddings(columns, config)
  table.save(args.out)
  config_lib.save(config, pathlib.Path(args.out).with_suffix(".config.json"))
  print(f"bootstrap embeddings: {len(table):,} items x {table.dim} -> {args.out}")
  return {"items": len(table), "dim": table.dim}


def run_module(module: str, flags: dict, extra: list[str] = ()) -> dict:
  """Runs `python -m module --flag=value ...` as its own process (twin_tf never imports
  beam_pipelines or serving); returns the JSON object it prints as its last line."""
  command = [sys.executable, "-m", module]
  command += [f"--{k}={v}" for k, v in flags.items() if v is not None]
  completed = subprocess.run(command + list(extra), stdout=subprocess.PIPE, text=True,
                             check=False)
  if completed.returncode:
    raise SystemExit(f"{module} failed (exit {completed.returncode})")
  return json.loads(completed.stdout.strip().splitlines()[-1])


def run_pipeline(module: str, flags: dict, beam_args: list[str]) -> dict:
  """Runs a beam_pipelines module; returns and prints its counters."""
  counters = run_module(f"beam_pipelines.{module}", flags, beam_args)
  print(f"{module} counters: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()))
  return counters


def cluster(args, beam_args: list[str]) -> dict:
  return run_pipeline("cluster_behaviors", {
      "input": args.input, "embeddings": args.embeddings, "output": args.output,
      "clustering_config": args.config, "gamma": args.gamma,
      "cutoff_quantile": args.cutoff_quantile}, beam_args)


def cache_keys(args, beam_args: list[str]) -> dict:
  return run_pipeline("cache_keys", {
      "model_dir": args.model_dir, "examples": args.examples, "output": args.output,
      "reference_time": args.reference_time,
      "scann_min_clusters": args.scann_min_clusters}, beam_args)


def build_examples(args, beam_args: list[str]) -> dict:
  return run_pipeline("build_examples", {
      "input": args.input, "clusters": f"{args.clusters}/clusters-*", "output": args.output},
      beam_args)


def train_config(args):
  from twin_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  from twin_tf.training import TrainConfig  # pylint: disable=import-outside-toplevel
  values = config_lib.to_dict(config_lib.load(TrainConfig, args.config)) if args.config else {}
  for name in ("examples", "output_dir", "model", "epochs", "seed", "batch_size"):
    if getattr(args, name, None) is not None:
      values[name] = getattr(args, name)
  return config_lib.from_dict(TrainConfig, values)


def train(args) -> dict:
  from twin_tf.training import train  # pylint: disable=import-outside-toplevel
  history = train(train_config(args))
  return {k: [round(float(x), 5) for x in v] for k, v in history.items()}


def evaluate(args) -> dict:
  from twin_tf.training import evaluate  # pylint: disable=import-outside-toplevel
  result = evaluate(train_config(args), args.split)
  print(f"{result['model']} on {args.split}: AUC {result['auc']:.4f}, GAUC "
        f"{result['gauc']:.4f}, logloss {result['logloss']:.4f}")
  for b in result["gauc_by_bucket"]:
    print(f"  users with {b['min_activity']}-{b['max_activity']} behaviors before the "
          f"cutoff: GAUC {b['gauc']:.4f} ({b['impressions']} impressions)")
  return result


def export(args) -> dict:
  """SavedModel version + warmup requests built from the first test impressions."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from twin_tf import export, features, requests  # pylint: disable=import-outside-toplevel
  from twin_tf.input_pipeline import load_example_data  # pylint: disable=import-outside-toplevel
  warmup = []
  if args.examples and args.warmup:
    data = load_example_data(args.examples, features.ItemVocabulary.load(
        pathlib.Path(args.run_dir) / "vocabulary.npy"))
    count = min(args.warmup, len(data.impressions["test"]["label"]))
    for i in range(count):
      arrays, _ = requests.impression_requests(data, np.array([i]))
      warmup.append(requests.predict_request(arrays, args.model_name))
  version = export.export_saved_model(args.run_dir, args.base, args.version, warmup)
  print(f"exported {args.run_dir} -> {version} ({len(warmup)} warmup requests)")
  return {"version_dir": str(version), "warmup_requests": len(warmup)}


def experiment(args) -> dict:
  from twin_tf.experiment import run_experiment  # pylint: disable=import-outside-toplevel
  summary = run_experiment(args.examples, args.runs_dir, args.out, args.models, args.seeds,
                           dataset=args.dataset, epochs=args.epochs)
  print((pathlib.Path(args.out) / "quality.md").read_text())
  return summary


def cluster_summary(args) -> dict:
  from twin_tf.clustering import records  # pylint: disable=import-outside-toplevel
  from twin_tf.summary import compression_summary, format_summary  # pylint: disable=import-outside-toplevel
  summary = compression_summary(records.read(str(pathlib.Path(args.clusters) / "clusters-*")))
  print(format_summary(summary))
  return summary


def score_user(work: pathlib.Path, examples: pathlib.Path, reference_time: int) -> dict:
  result = run_module("serving.score_user", {
      "base": work / "serving", "examples": examples, "key_cache": work / "key_cache",
      "reference_time": reference_time})
  print(f"user {result['user_id']} ({result['clusters']} clusters), {result['candidates']} "
        "test candidates over gRPC (DEVELOPMENT server): " + ", ".join(
            f"{k} AUC {v:.4f}" for k, v in result["auc"].items()))
  print("largest score difference to serving_default: " + ", ".join(
      f"{k} {v:.2e}" for k, v in result["max_abs_diff_vs_serving_default"].items()))
  return result
