"""The main job (the README's first command), end to end on the real data:

  MovieLens -> behavior log -> bootstrap embeddings -> cluster_behaviors (Beam) -> compression
  summary -> build_examples (Beam) -> train every model x seed -> evaluate (AUC, GAUC,
  logloss, GAUC per activity quartile, top-10 diversity) -> export the first model ->
  key cache (Beam) -> development server: score a real user over gRPC (in-model, exact and
  ScaNN GSU) -> stop -> gamma sweep -> ScaNN against exact -> report (HTML with plots).

Outputs under --workdir: main_job.json (every stage's figures and seconds), quality.json/.md,
report/report.html. Stages that are unchanged since their last success are skipped
(twin_tf.stages); a failed stage stops the job and names itself.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import pathlib

from twin_tf import commands, experiment, stages


def main_job(args: argparse.Namespace, beam_args: list[str]) -> dict:
  """Runs every stage; returns {stage: figures} (also written to main_job.json)."""
  work = pathlib.Path(args.workdir)
  log, embeddings = work / "behaviors.parquet", work / "item_embeddings.npz"
  clusters, examples = work / "clusters", work / "examples"
  runs_dir, base, key_cache_dir = work / "runs", work / "serving" / "twin", work / "key_cache"
  models, seeds = list(args.models), list(args.seeds)
  from twin_tf.models import PRESETS  # pylint: disable=import-outside-toplevel
  unknown = [m for m in models if m not in PRESETS]
  served = PRESETS.get(models[0])
  if unknown or served.long_term_source != "clusters" or served.long_term == "none":
    raise SystemExit(f"--models: unknown {unknown}; presets: {sorted(PRESETS)}" if unknown else
                     f"--models: the first model is exported and served over the clusters; "
                     f"{models[0]} does not attend over clusters (put TwinV2 first)")
  overrides = {"epochs": args.epochs} if args.epochs else {}
  weights = [experiment.run_dir(runs_dir, m, s) / "model.weights.h5"
             for m in models for s in seeds]
  served_run = experiment.run_dir(runs_dir, models[0], seeds[0])
  training = {"models": models, "seeds": seeds, **overrides}
  @functools.lru_cache(maxsize=None)  # read the log once, for both stages that need it
  def reference_time() -> int:
    from twin_tf import logs  # pylint: disable=import-outside-toplevel
    return int(logs.read_behavior_log(log)[0]["timestamp"].max())

  def evaluate_all() -> dict:
    summary = experiment.evaluate_runs(examples, runs_dir, models, seeds,
                                       f"MovieLens ({args.data})", **overrides)
    experiment.write_summary(summary, work)
    return summary

  def sweep() -> dict:
    from twin_tf.gamma_sweep import run_sweep, sweep_point  # pylint: disable=import-outside-toplevel
    reuse = {}
    if "TwinV2" in models:  # the main clustering and its first TwinV2 run are one point
      first = results["evaluate"]["models"]["TwinV2"]["runs"][0]
      reuse[args.gamma] = sweep_point(args.gamma, results["cluster"],
                                      results["cluster-summary"],
                                      runner.seconds.get("cluster", 0.0), first)
    return run_sweep(args.gammas, work / "gamma_sweep", log, embeddings, args.cutoff_quantile,
                     beam_args, seed=seeds[0], reuse=reuse, **overrides)

  def retrieval() -> dict:
    from twin_tf.retrieval_study import study  # pylint: disable=import-outside-toplevel
    return study(key_cache_dir, results["export"]["version_dir"], examples,
                 synthetic_sizes=args.scann_sizes)

  def report() -> dict:
    from twin_tf.report import write_report  # pylint: disable=import-outside-toplevel
    return write_report(results, runner.seconds, work / "report", vars(args))

  plan = [
      stages.Stage("convert-movielens", lambda: commands.convert_movielens(argparse.Namespace(
          data=args.data, out=log, max_users=args.max_users)), [args.data], [log],
          {"max_users": args.max_users}),
      stages.Stage("embeddings", lambda: commands.embeddings(argparse.Namespace(
          input=log, out=embeddings, dim=32, window=10, min_count=2, seed=0)),
          [log], [embeddings]),
      stages.Stage("cluster", lambda: commands.cluster(argparse.Namespace(
          input=log, embeddings=embeddings, output=clusters, config=None, gamma=args.gamma,
          cutoff_quantile=args.cutoff_quantile), beam_args), [log, embeddings], [clusters],
          {"gamma": args.gamma, "cutoff_quantile": args.cutoff_quantile}),
      stages.Stage("cluster-summary", lambda: commands.cluster_summary(
          argparse.Namespace(clusters=clusters)), [clusters]),
      stages.Stage("build-examples", lambda: commands.build_examples(argparse.Namespace(
          input=log, clusters=clusters, output=examples), beam_args), [log, clusters],
          [examples]),
      stages.Stage("train", lambda: experiment.train_runs(
          examples, runs_dir, models, seeds, **overrides), [examples], weights, training),
      stages.Stage("evaluate", evaluate_all, weights, [work / "quality.json"], training),
      stages.Stage("export", lambda: commands.export(argparse.Namespace(
          run_dir=served_run, base=base, version=None, examples=examples, warmup=10,
          model_name="twin")), [served_run / "model.weights.h5"],
          recorded_outputs=("version_dir",)),
      stages.Stage("cache-keys", lambda: commands.cache_keys(argparse.Namespace(
          model_dir=results["export"]["version_dir"], examples=examples,
          output=key_cache_dir, reference_time=reference_time(), scann_min_clusters=None),
          beam_args), [base, examples], [key_cache_dir]),
      stages.Stage("serve-and-score", lambda: commands.score_user(
          work, examples, reference_time()), [base, key_cache_dir]),
      stages.Stage("gamma-sweep", sweep, [log, embeddings, clusters, work / "quality.json"],
                   [work / "gamma_sweep"], {"gammas": sorted(args.gammas), **training}),
      stages.Stage("retrieval", retrieval, [key_cache_dir], [],
                   {"synthetic_sizes": args.scann_sizes}),
  ]
  runner = stages.StageRunner(work, total=len(plan) + 1)  # + the report, planned last
  results = runner.results  # the stages above read their predecessors' figures from here
  for stage in plan:
    runner.run(stage)
  digest = hashlib.sha256(json.dumps(results, sort_keys=True, default=str).encode())
  runner.run(stages.Stage("report", report, [], [work / "report" / "report.html"],
                          {"figures": digest.hexdigest()}))
  summary = {**results, "stage_seconds": runner.seconds}
  (work / "main_job.json").write_text(json.dumps(summary, indent=2, sort_keys=True,
                                                 default=str) + "\n")
  print(f"\nmain job finished in {sum(runner.seconds.values()) / 60:.1f} min of stage time; "
        f"report: {work / 'report' / 'report.html'}, figures: {work / 'main_job.json'}")
  return summary


def add_arguments(parser: argparse.ArgumentParser, default_data: str) -> None:
  parser.add_argument("--data", default=default_data,
                      help="MovieLens folder (default %(default)s; env TWIN_TF_DATA)")
  parser.add_argument("--workdir", default="work_dir", help="outputs (default %(default)s)")
  parser.add_argument("--max-users", dest="max_users", type=int, default=None,
                      help="only the first N users")
  parser.add_argument("--gamma", type=int, default=20, help="largest cluster (default 20)")
  parser.add_argument("--cutoff-quantile", dest="cutoff_quantile", type=float, default=0.5,
                      help="cluster each user's first fraction of behaviors; the rest are "
                      "impressions (default 0.5)")
  parser.add_argument("--models", nargs="+", default=list(experiment.MODELS),
                      help="presets to train; the first is exported and served "
                      "(default: all six)")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--epochs", type=int, default=1,
                      help="epochs per run (default 1: the models overfit after it)")
  parser.add_argument("--gammas", type=int, nargs="+", default=[5, 10, 20, 50, 100],
                      help="gamma sweep (default 5 10 20 50 100)")
  parser.add_argument("--scann-sizes", dest="scann_sizes", type=int, nargs="*",
                      default=[10_000, 100_000],
                      help="SYNTHETIC key counts for ScaNN against exact (default 1e4 1e5)")
