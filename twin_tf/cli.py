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
import functools
import json
import os
import pathlib
import subprocess
import sys
import time

DEFAULT_DATA = os.environ.get("TWIN_TF_DATA", "../shared/data/ml-latest-small")


def _convert_movielens(args) -> dict:
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


def _embeddings(args) -> dict:
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


def _run_module(module: str, flags: dict, extra: list[str] = ()) -> dict:
  """Runs `python -m module --flag=value ...` as its own process (twin_tf never imports
  beam_pipelines or serving); returns the JSON object it prints as its last line."""
  command = [sys.executable, "-m", module]
  command += [f"--{k}={v}" for k, v in flags.items() if v is not None]
  completed = subprocess.run(command + list(extra), stdout=subprocess.PIPE, text=True,
                             check=False)
  if completed.returncode:
    raise SystemExit(f"{module} failed (exit {completed.returncode})")
  return json.loads(completed.stdout.strip().splitlines()[-1])


def _run_pipeline(module: str, flags: dict, beam_args: list[str]) -> dict:
  """Runs a beam_pipelines module; returns and prints its counters."""
  counters = _run_module(f"beam_pipelines.{module}", flags, beam_args)
  print(f"{module} counters: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()))
  return counters


def _cluster(args, beam_args: list[str]) -> dict:
  return _run_pipeline("cluster_behaviors", {
      "input": args.input, "embeddings": args.embeddings, "output": args.output,
      "clustering_config": args.config, "gamma": args.gamma,
      "cutoff_quantile": args.cutoff_quantile}, beam_args)


def _cache_keys(args, beam_args: list[str]) -> dict:
  return _run_pipeline("cache_keys", {
      "model_dir": args.model_dir, "examples": args.examples, "output": args.output,
      "reference_time": args.reference_time,
      "scann_min_clusters": args.scann_min_clusters}, beam_args)


def _build_examples(args, beam_args: list[str]) -> dict:
  return _run_pipeline("build_examples", {
      "input": args.input, "clusters": f"{args.clusters}/clusters-*", "output": args.output},
      beam_args)


def _train_config(args):
  from twin_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  from twin_tf.training import TrainConfig  # pylint: disable=import-outside-toplevel
  values = config_lib.to_dict(config_lib.load(TrainConfig, args.config)) if args.config else {}
  for name in ("examples", "output_dir", "model", "epochs", "seed", "batch_size"):
    if getattr(args, name, None) is not None:
      values[name] = getattr(args, name)
  return config_lib.from_dict(TrainConfig, values)


def _train(args) -> dict:
  from twin_tf.training import train  # pylint: disable=import-outside-toplevel
  history = train(_train_config(args))
  return {k: [round(float(x), 5) for x in v] for k, v in history.items()}


def _evaluate(args) -> dict:
  from twin_tf.training import evaluate  # pylint: disable=import-outside-toplevel
  result = evaluate(_train_config(args), args.split)
  print(f"{result['model']} on {args.split}: AUC {result['auc']:.4f}, GAUC "
        f"{result['gauc']:.4f}, logloss {result['logloss']:.4f}")
  for b in result["gauc_by_bucket"]:
    print(f"  users with {b['min_activity']}-{b['max_activity']} behaviors before the "
          f"cutoff: GAUC {b['gauc']:.4f} ({b['impressions']} impressions)")
  return result


def _export(args) -> dict:
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


def _experiment(args) -> dict:
  from twin_tf.experiment import run_experiment  # pylint: disable=import-outside-toplevel
  summary = run_experiment(args.examples, args.runs_dir, args.out, args.models, args.seeds,
                           dataset=args.dataset, epochs=args.epochs)
  print((pathlib.Path(args.out) / "quality.md").read_text())
  return summary


def _cluster_summary(args) -> dict:
  from twin_tf.clustering import records  # pylint: disable=import-outside-toplevel
  from twin_tf.summary import compression_summary, format_summary  # pylint: disable=import-outside-toplevel
  summary = compression_summary(records.read(str(pathlib.Path(args.clusters) / "clusters-*")))
  print(format_summary(summary))
  return summary


def _fingerprint(paths) -> list:
  """(path, size, mtime) of every file under `paths`: what a stage's result depends on."""
  entries = []
  for path in map(pathlib.Path, paths):
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    entries += [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]
  return entries


def _score_user(work: pathlib.Path, examples: pathlib.Path, reference_time: int) -> dict:
  result = _run_module("serving.score_user", {
      "base": work / "serving", "examples": examples, "key_cache": work / "key_cache",
      "reference_time": reference_time})
  print(f"user {result['user_id']} ({result['clusters']} clusters), {result['candidates']} "
        "test candidates over gRPC (DEVELOPMENT server): " + ", ".join(
            f"{k} AUC {v:.4f}" for k, v in result["auc"].items()))
  print("largest score difference to serving_default: " + ", ".join(
      f"{k} {v:.2e}" for k, v in result["max_abs_diff_vs_serving_default"].items()))
  return result


def _main_job(args, beam_args: list[str]) -> dict:
  """MovieLens -> behavior log -> embeddings -> clusters -> examples -> train -> evaluate ->
  export -> key cache -> development server: score a real user -> stop.

  A stage whose inputs and settings are unchanged since its last success, and whose outputs
  exist, is skipped (its recorded figures are reused): work_dir/stages.json.
  """
  work = pathlib.Path(args.workdir)
  work.mkdir(parents=True, exist_ok=True)
  log = work / "behaviors.parquet"
  embeddings = work / "item_embeddings.npz"
  clusters = work / "clusters"
  examples = work / "examples"
  run = work / "runs" / f"{args.model}-seed{args.seed}"
  base = work / "serving" / "twin"
  key_cache_dir = work / "key_cache"
  state_path = work / "stages.json"
  state = json.loads(state_path.read_text()) if state_path.exists() else {}
  report = {}

  def exported_version() -> str:
    return report["export"]["version_dir"]

  @functools.lru_cache(maxsize=None)  # read the log once, for both stages that need it
  def reference_time() -> int:
    from twin_tf import logs  # pylint: disable=import-outside-toplevel
    return int(logs.read_behavior_log(log)[0]["timestamp"].max())

  # (name, run, inputs it depends on, outputs it must leave)
  stages = [
      ("convert-movielens", lambda: _convert_movielens(argparse.Namespace(
          data=args.data, out=log, max_users=args.max_users)), [args.data], [log]),
      ("embeddings", lambda: _embeddings(argparse.Namespace(
          input=log, out=embeddings, dim=32, window=10, min_count=2, seed=args.seed)),
       [log], [embeddings]),
      ("cluster", lambda: _cluster(argparse.Namespace(
          input=log, embeddings=embeddings, output=clusters, config=None, gamma=args.gamma,
          cutoff_quantile=args.cutoff_quantile), beam_args), [log, embeddings], [clusters]),
      ("cluster-summary", lambda: _cluster_summary(argparse.Namespace(clusters=clusters)),
       [clusters], []),
      ("build-examples", lambda: _build_examples(argparse.Namespace(
          input=log, clusters=clusters, output=examples), beam_args), [log, clusters],
       [examples]),
      ("train", lambda: _train(argparse.Namespace(
          config=None, examples=str(examples), output_dir=str(run), model=args.model,
          epochs=args.epochs, seed=args.seed, batch_size=None)), [examples],
       [run / "model.weights.h5"]),
      ("evaluate", lambda: _evaluate(argparse.Namespace(
          config=None, examples=str(examples), output_dir=str(run), model=args.model,
          epochs=None, seed=args.seed, batch_size=None, split="test")),
       [run / "model.weights.h5"], []),
      ("export", lambda: _export(argparse.Namespace(
          run_dir=run, base=base, version=None, examples=examples, warmup=10,
          model_name="twin")), [run / "model.weights.h5"], []),
      ("cache-keys", lambda: _cache_keys(argparse.Namespace(
          model_dir=exported_version(), examples=examples, output=key_cache_dir,
          reference_time=reference_time(), scann_min_clusters=None), beam_args),
       [base, examples], [key_cache_dir]),
      ("serve-and-score", lambda: _score_user(work, examples, reference_time()),
       [base, key_cache_dir], []),
  ]
  settings = {k: v for k, v in vars(args).items() if k != "command"}
  for number, (name, stage, inputs, outputs) in enumerate(stages, start=1):
    print(f"\n[{number}/{len(stages)}] {name}", flush=True)
    start = time.time()
    fingerprint = {"settings": settings, "inputs": _fingerprint(inputs)}
    previous = state.get(name, {})
    recorded = previous.get("report") or {}
    version_dir = recorded.get("version_dir") if isinstance(recorded, dict) else None
    if (previous.get("fingerprint") == fingerprint and
        all(pathlib.Path(o).exists() for o in outputs + ([version_dir] if version_dir else []))):
      report[name] = recorded
      print(f"[{number}/{len(stages)}] {name}: unchanged since the last run, skipped")
      continue
    try:
      report[name] = stage()
    except (Exception, SystemExit) as error:  # name the stage, then stop
      raise SystemExit(f"stage {name!r} failed: {error}") from error
    state[name] = {"fingerprint": fingerprint, "report": report[name]}
    state_path.write_text(json.dumps(state, indent=1, default=str))
    print(f"[{number}/{len(stages)}] {name} done in {time.time() - start:.1f} s", flush=True)
  (work / "main_job.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
  print(f"\nmain job finished; report in {work / 'main_job.json'}")
  return report


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="twin-tf", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)

  main = sub.add_parser("main", help="the main job, end to end on the real data")
  main.add_argument("--data", default=DEFAULT_DATA,
                    help="MovieLens folder (default %(default)s; env TWIN_TF_DATA)")
  main.add_argument("--workdir", default="work_dir", help="outputs (default %(default)s)")
  main.add_argument("--max-users", type=int, default=None, help="only the first N users")
  main.add_argument("--gamma", type=int, default=None, help="largest cluster (default 20)")
  main.add_argument("--cutoff-quantile", type=float, default=0.5,
                    help="cluster each user's first fraction of behaviors; the rest are "
                    "impressions (default 0.5)")
  main.add_argument("--seed", type=int, default=0)
  main.add_argument("--model", default="TwinV2", help="model preset to train")
  main.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's")

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
  handlers = {
      "main": lambda: _main_job(args, extra),
      "convert-movielens": lambda: _convert_movielens(args),
      "embeddings": lambda: _embeddings(args),
      "cluster": lambda: _cluster(args, extra),
      "cluster-summary": lambda: _cluster_summary(args),
      "build-examples": lambda: _build_examples(args, extra),
      "cache-keys": lambda: _cache_keys(args, extra),
      "train": lambda: _train(args),
      "evaluate": lambda: _evaluate(args),
      "experiment": lambda: _experiment(args),
      "export": lambda: _export(args),
      "serve": lambda: subprocess.run(  # serving/ imports twin_tf, never the reverse
          [sys.executable, "-m", "serving.dev_server", f"--base={args.base}",
           f"--model_name={args.model_name}", f"--host={args.host}", f"--port={args.port}",
           f"--rest_port={args.rest_port}"], check=True),
  }
  handlers[args.command]()
  return 0


if __name__ == "__main__":
  sys.exit(main())
