"""The main job (the README's first command), end to end on the real data:

  MovieLens, KuaiRand or a user's log -> behavior log + feature spec -> bootstrap embeddings
  -> cluster_behaviors (Beam) -> compression summary -> build_examples (Beam) -> train
  every model x seed -> evaluate (AUC, GAUC, logloss, GAUC per activity quartile, top-10
  diversity) -> export the first model -> key cache (Beam) -> development server: score a
  real user over gRPC (in-model, exact and ScaNN GSU) -> stop -> gamma sweep -> ScaNN against
  exact -> report (HTML with plots).

Outputs under `workdir`: main_job.json (every stage's figures and seconds, and the stages
reused), quality.json/.md, report/report.html. Stages that are unchanged since their last
success are skipped (twin_tf.experiments.stages: stages_reused lists them; their seconds are
the run's that made them); a failed stage stops the job and names itself.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from typing import Optional, Sequence

from twin_tf import commands, strict_json
from twin_tf import config as config_lib
from twin_tf.config import ClusteringConfig, EmbeddingConfig
from twin_tf.experiments import quality, stages
from twin_tf.training import examples as training_examples

DEFAULT_GAMMAS = (5, 10, 20, 50, 100)
DEFAULT_SCANN_SIZES = (10_000, 100_000)
# The stages a run may leave out, each with the stages that need its outputs.
OPTIONAL_STAGES = {"export": ("cache-keys", "serve-and-score", "retrieval"),
                   "cache-keys": ("serve-and-score", "retrieval"), "serve-and-score": (),
                   "gamma-sweep": (), "retrieval": ()}


def skipped_stages(skip) -> set[str]:
  """The stages `skip` leaves out, with those that need them; SystemExit for a stage that
  cannot be left out."""
  wrong = sorted(set(skip) - set(OPTIONAL_STAGES))
  if wrong:
    raise SystemExit(f"--skip: {wrong} cannot be skipped; optional stages: "
                     f"{sorted(OPTIONAL_STAGES)}")
  return set(skip).union(*(OPTIONAL_STAGES[s] for s in skip))


@dataclasses.dataclass(frozen=True)
class MainJobConfig:
  """Attributes:
    dataset: "movielens", "kuairand" or "log" (twin_tf.commands.DATASETS).
    data: the MovieLens or KuaiRand folder, or the behavior log file for "log".
    features: for "log", its FeatureSpec (preset name or feature_spec.json; None: the one
      beside the log, else movielens).
    item_features: for "log", an optional item-feature file (twin_tf.commands.convert).
    workdir: every output of the job.
    max_users: only the first N users (None: all).
    gamma: the largest cluster of the main clustering.
    cutoff_quantile: each user's first fraction of behaviors is clustered; the rest are
      impressions.
    cutoff: instead of the quantile, one unix time for every user: behaviors before it are
      clustered, the rest are impressions (what a long log wants; None: the quantile).
    models: presets to train; the first is exported and served.
    seeds: one run per model and seed.
    epochs: epochs per run (1: the models overfit after it).
    gammas: the gamma sweep.
    scann_sizes: SYNTHETIC key counts for ScaNN against exact.
    max_impressions: at most this many impressions per user after the cutoff, the most
      recent (None: all).
    snapshots: cluster snapshots per user (ClusteringConfig.snapshots): with S > 1 the
      periods between them are train impressions too, each reading the snapshot before it.
    embedding_method, embedding_window: the bootstrap item embeddings' (EmbeddingConfig),
      which the clustering and the models' item tables start from.
    skip: optional stages not to run (OPTIONAL_STAGES; the stages that need one are skipped
      with it).
  """

  dataset: str = "movielens"
  data: str = "../shared/data/ml-latest-small"
  features: Optional[str] = None
  item_features: Optional[str] = None
  workdir: str = "work_dir"
  max_users: Optional[int] = None
  gamma: int = 20
  cutoff_quantile: float = 0.5
  cutoff: Optional[int] = None
  models: tuple[str, ...] = quality.MODELS
  seeds: tuple[int, ...] = (0, 1, 2)
  epochs: int = 1
  gammas: tuple[int, ...] = DEFAULT_GAMMAS
  scann_sizes: tuple[int, ...] = DEFAULT_SCANN_SIZES
  max_impressions: Optional[int] = None
  snapshots: int = 1
  embedding_method: str = "ppmi-svd"
  embedding_window: int = 10
  skip: tuple[str, ...] = ()


def synthetic_truth(config: MainJobConfig) -> str | None:
  """The truth beside a SYNTHETIC long-term log (twin_tf.data.longterm), if it has one."""
  if config.dataset != "log":
    return None
  from twin_tf.data import longterm  # pylint: disable=import-outside-toplevel
  path = longterm.truth_path(config.data)
  return str(path) if path.exists() else None


@dataclasses.dataclass(frozen=True)
class JobFolders:
  """What the job's first stages leave under its workdir: the converted behavior log, the
  bootstrap item embeddings, the clusters, the examples and the runs."""

  log: pathlib.Path
  embeddings: pathlib.Path
  clusters: pathlib.Path
  examples: pathlib.Path
  runs: pathlib.Path


def job_folders(config: MainJobConfig) -> JobFolders:
  work = pathlib.Path(config.workdir)
  return JobFolders(work / "behaviors.parquet", work / "item_embeddings.npz",
                    work / "clusters", work / "examples", work / "runs")


def main_clustering(config: MainJobConfig) -> ClusteringConfig:
  """The job's main clustering (gamma, cutoff, snapshots)."""
  return ClusteringConfig(
      gamma=config.gamma, cutoff_timestamp=config.cutoff, snapshots=config.snapshots,
      cutoff_quantile=None if config.cutoff is not None else config.cutoff_quantile)


def train_overrides(config: MainJobConfig) -> dict:
  """The TrainConfig settings of every run of the job."""
  overrides = {"epochs": config.epochs} if config.epochs else {}
  # the clustering's item vectors, frozen beside the learnt ones: one item space for the
  # clusters, the GSU keys and the queries (built before each user's cutoff: no leakage)
  overrides["item_embeddings"] = str(job_folders(config).embeddings)
  return overrides


def main_job(config: MainJobConfig, beam_args: Sequence[str] = ()) -> dict:
  """Runs every stage; returns {stage: figures} (also written to main_job.json).

  Args:
    beam_args: extra flags for every Beam pipeline (--runner, --project, ...).
  """
  work, folders = pathlib.Path(config.workdir), job_folders(config)
  log, embeddings, clusters = folders.log, folders.embeddings, folders.clusters
  examples, runs_dir = folders.examples, folders.runs
  base, key_cache_dir = work / "serving" / "twin", work / "key_cache"
  models, seeds = list(config.models), list(config.seeds)
  skipped = skipped_stages(config.skip)  # a wrong --skip is refused before any work
  from twin_tf.model.ctr_model import PRESETS  # pylint: disable=import-outside-toplevel
  unknown = [m for m in models if m not in PRESETS]
  served = PRESETS.get(models[0])
  if unknown or served.long_term_source != "clusters":
    raise SystemExit(f"--models: unknown {unknown}; presets: {sorted(PRESETS)}" if unknown else
                     f"--models: the first model is exported and served over the clusters; "
                     f"{models[0]} does not attend over clusters (put TwinV2 first)")
  overrides = train_overrides(config)
  weights = [quality.run_dir(runs_dir, m, s) / "model.weights.h5"
             for m in models for s in seeds]
  served_run = quality.run_dir(runs_dir, models[0], seeds[0])
  # the presets as they are now: one changed since the last run trains and evaluates again
  training = {"models": models, "seeds": seeds, **overrides,
              "presets": {m: config_lib.to_dict(PRESETS[m]) for m in models}}
  clustering = main_clustering(config)
  cutoff = {"cutoff_quantile": clustering.cutoff_quantile, "cutoff": config.cutoff}
  embedding_config = EmbeddingConfig(method=config.embedding_method,
                                     window=config.embedding_window)
  @functools.lru_cache(maxsize=None)  # read the log once, for both stages that need it
  def reference_time() -> int:
    from twin_tf.data import feature_spec, logs  # pylint: disable=import-outside-toplevel
    columns, _ = logs.read_behavior_log(log, spec=feature_spec.for_log(log))
    return int(columns["timestamp"].max())

  def evaluate_all() -> dict:
    summary = quality.evaluate_runs(examples, runs_dir, models, seeds,
                                    f"{config.dataset} ({config.data})",
                                    truth=synthetic_truth(config), **overrides)
    quality.write_summary(summary, work)
    return summary

  def sweep() -> dict:
    from twin_tf.experiments.gamma_sweep import run_sweep, sweep_point  # pylint: disable=import-outside-toplevel
    reuse = {}
    if "TwinV2" in models:  # the main clustering and its first TwinV2 run are one point
      first = results["evaluate"]["models"]["TwinV2"]["runs"][0]
      reuse[config.gamma] = sweep_point(config.gamma, results["cluster"],
                                      results["cluster-summary"],
                                      runner.seconds.get("cluster", 0.0), first)
    return run_sweep(config.gammas, work / "gamma_sweep", log, embeddings, clustering,
                     beam_args, seed=seeds[0], reuse=reuse,
                     max_impressions=config.max_impressions, **overrides)

  def retrieval() -> dict:
    from twin_tf.experiments.retrieval_study import study  # pylint: disable=import-outside-toplevel
    return study(key_cache_dir, results["export"]["version_dir"], examples,
                 synthetic_sizes=config.scann_sizes)

  def serve_and_score() -> dict:
    from twin_tf.experiments.serve_and_score import serve_and_score as score  # pylint: disable=import-outside-toplevel
    return score(work, examples, reference_time(),
                 int(pathlib.Path(results["export"]["version_dir"]).name))

  def report() -> dict:
    from twin_tf.experiments.report import write_report  # pylint: disable=import-outside-toplevel
    return write_report(results, runner.seconds, work / "report",
                        dataclasses.asdict(config))

  plan = [
      stages.Stage("convert", lambda: commands.convert(
          config.dataset, config.data, log, config.max_users, config.features,
          config.item_features), [config.data] + [config.item_features] * bool(
              config.item_features), [log],
          {"dataset": config.dataset, "max_users": config.max_users,
           "features": config.features}),
      stages.Stage("embeddings", lambda: commands.embeddings(
          log, embeddings, embedding_config, cutoff=clustering), [log], [embeddings],
          {**cutoff, "method": config.embedding_method, "window": config.embedding_window}),
      stages.Stage("cluster", lambda: commands.cluster(log, embeddings, clusters, clustering,
                                                       beam_args),
          [log, embeddings], [clusters],
          {"gamma": config.gamma, "snapshots": config.snapshots, **cutoff}),
      stages.Stage("cluster-summary", lambda: commands.cluster_summary(clusters), [clusters]),
      stages.Stage("build-examples", lambda: commands.build_examples(
          log, clusters, examples, beam_args, max_impressions=config.max_impressions),
          [log, clusters], [examples],
          {"layout": training_examples.LAYOUT, "max_impressions": config.max_impressions}),
      stages.Stage("train", lambda: quality.train_runs(
          examples, runs_dir, models, seeds, **overrides), [examples], weights, training),
      stages.Stage("evaluate", evaluate_all, weights, [work / "quality.json"], training),
      stages.Stage("export", lambda: commands.export(served_run, base, examples=examples),
                   [served_run / "model.weights.h5"], recorded_outputs=("version_dir",)),
      stages.Stage("cache-keys", lambda: commands.cache_keys(
          results["export"]["version_dir"], examples, key_cache_dir, reference_time(),
          beam_args=beam_args), [base, examples], [key_cache_dir]),
      stages.Stage("serve-and-score", serve_and_score, [base, key_cache_dir]),
      stages.Stage("gamma-sweep", sweep, [log, embeddings, clusters, work / "quality.json"],
                   [work / "gamma_sweep"], {"gammas": sorted(config.gammas), **training}),
      stages.Stage("retrieval", retrieval, [key_cache_dir], [],
                   {"synthetic_sizes": list(config.scann_sizes)}),
  ]
  if skipped:
    print(f"skipping {', '.join(s.name for s in plan if s.name in skipped)} (--skip)")
    plan = [s for s in plan if s.name not in skipped]
  runner = stages.StageRunner(work, total=len(plan) + 1)  # + the report, planned last
  results = runner.results  # the stages above read their predecessors' figures from here
  for stage in plan:
    runner.run(stage)
  digest = hashlib.sha256(json.dumps(results, sort_keys=True, default=str).encode())
  runner.run(stages.Stage("report", report, [], [work / "report" / "report.html"],
                          {"figures": digest.hexdigest()}))
  summary = {**results, "stage_seconds": runner.seconds, "stages_reused": runner.reused}
  (work / "main_job.json").write_text(strict_json.dumps(summary, indent=2, sort_keys=True,
                                                 default=str) + "\n")
  reused = sum(runner.seconds[name] for name in runner.reused)
  print(f"\nmain job finished in {(sum(runner.seconds.values()) - reused) / 60:.1f} min of "
        f"stage time ({len(runner.reused)} stages reused from earlier runs, {reused / 60:.1f} "
        f"min there); "
        f"report: {work / 'report' / 'report.html'}, figures: {work / 'main_job.json'}")
  return summary
