"""The SYNTHETIC long-term study behind results/longterm.json (`twin-tf longterm-study`).

Where TWIN-V2's claim should show: clicks follow lasting item-level tastes, some dormant for
months (twin_tf.data.longterm). For each number of dormant tastes of the generator:
  1. a SYNTHETIC long-term log, then the main job on it (cluster snapshots: the whole log
     trains), `models` x `seeds` beside the GBDT, the oracle and the item-only score;
  2. TwinV2 minus each other model (and the GBDT), paired bootstrap over users;
  3. the equal-cost sweep: TwinV2 against Twin at each sequence budget L
     (sweeps.budget_sweep), where the life-cycle's reach should pay most as the share of
     test impressions nearest a dormant taste grows; each point also split by the truth
     (truth_parts), so the gain on the part only the life-cycle holds is reported alone.
Every file and every table says SYNTHETIC.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional

import numpy as np

from twin_tf import commands, strict_json
from twin_tf.data import longterm, schema
from twin_tf.experiments import bootstrap, main_job, stages, sweeps
from twin_tf.training import gbdt

LOG_NAME = "SYNTHETIC_longterm.parquet"


@dataclasses.dataclass(frozen=True)
class LongTermStudyConfig:
  """Attributes:
    workdir: logs, main jobs and sweeps (one folder per number of dormant tastes).
    users, max_behaviors, num_items: the generator's (twin_tf.data.longterm.LongTermConfig;
      fewer items than its 20,000 leave ~175 behaviors per item on a log that fits 2 cores;
      at 60 users every model learnt less).
    dormant_tastes: the dormancy sweep, dormant tastes per user (beside 3-5 active ones;
      never shown after the dormancy, still liked); the first is the headline log. Every log
      also runs the equal-cost sweep.
    models, seeds: trained on every log (TwinV2 first: every comparison is against it).
    budgets: the equal-cost sweep's sequence budgets L (None: full), the issue's five.
    gamma: the largest cluster of the main clustering. 5, not the main job's 20: on the
      one-dormant-taste log TwinV2's validation AUC was 0.7021 / 0.7057 (seeds 0 / 1) at 5,
      0.7001 / 0.7018 at 10 and 0.6911 (seed 0) at 20; 90,463 clusters at 5 (90,588 under
      constraints.txt, which the committed study ran on), 56,767 at 10, ~28,700 at 20. A
      TwinV2 run takes ~1.6x as long at 5 as at 10.
    cutoff_quantile, snapshots, embedding_method, embedding_window: the main job's
      (snapshots: training on the whole log; the embeddings: spectral over a window of 50,
      which recovers this log's item vectors best, results/embeddings.json).
  """

  workdir: str = "work_dir/longterm"
  users: int = 200
  max_behaviors: int = 4_000
  num_items: int = 2_000
  dormant_tastes: tuple[int, ...] = (1, 2, 4)
  models: tuple[str, ...] = ("TwinV2", "Twin", "DIN")
  seeds: tuple[int, ...] = (0, 1)
  budgets: tuple[Optional[int], ...] = (16, 32, 64, 128, None)
  gamma: int = 5
  cutoff_quantile: float = 0.8
  snapshots: int = 4
  embedding_method: str = "spectral"
  embedding_window: int = 50

  def __post_init__(self):
    if self.models[:1] != ("TwinV2",):
      raise ValueError(f"models must start with TwinV2 (compared with the others), got "
                       f"{self.models}")


def _job_config(config: LongTermStudyConfig, dormant: int) -> main_job.MainJobConfig:
  """The main job of the log with `dormant` dormant tastes (every optional stage skipped)."""
  folder = pathlib.Path(config.workdir) / f"dormant_tastes{dormant}"
  return main_job.MainJobConfig(
      dataset="log", data=str(folder / LOG_NAME), workdir=str(folder), gamma=config.gamma,
      cutoff_quantile=config.cutoff_quantile, snapshots=config.snapshots,
      embedding_method=config.embedding_method, embedding_window=config.embedding_window,
      models=config.models, seeds=config.seeds, skip=tuple(main_job.OPTIONAL_STAGES))


def _log_job(config: LongTermStudyConfig, job: main_job.MainJobConfig, dormant: int) -> dict:
  """The log with `dormant` dormant tastes and the main job on it; its summary."""
  ensure_log(pathlib.Path(job.data), longterm.LongTermConfig(
      users=config.users, max_behaviors=config.max_behaviors, num_items=config.num_items,
      dormant_tastes=dormant))
  return main_job.main_job(job)


def ensure_log(log: pathlib.Path, generator: longterm.LongTermConfig) -> None:
  """Makes the SYNTHETIC log (and its truth) at `log`, as the "synth" stage of the folder's
  stages.json (the main job's record): skipped when the log there was made with these
  generator settings; made again otherwise, and every main-job stage after it then runs
  again (they see a new file)."""
  runner = stages.StageRunner(log.parent, total=1)
  runner.run(stages.Stage("synth", lambda: commands.synth(log, generator),
                          outputs=[log, longterm.truth_path(log)],
                          settings=dataclasses.asdict(generator)))


def _comparisons(job: main_job.MainJobConfig) -> dict:
  """{"twinv2_minus_<other>": paired bootstrap} for every other model and the GBDT."""
  from twin_tf.training.input_pipeline import load_example_data  # pylint: disable=import-outside-toplevel
  folders = main_job.job_folders(job)
  data = load_example_data(folders.examples)
  scores = {m: [s for _, s in sweeps.scores_on_test(folders.examples, data, folders.runs, m,
                                                    job.seeds, **main_job.train_overrides(job))]
            for m in job.models}
  scores[gbdt.NAME] = [gbdt.train_and_score(data, gbdt.GbdtConfig(seed=s))[0]
                       for s in job.seeds]
  test = data.impressions["test"]
  return {f"twinv2_minus_{m.lower()}": bootstrap.paired_bootstrap(
      test[schema.LABEL], test[schema.USER_ID], scores["TwinV2"], scores[m])
          for m in scores if m != "TwinV2"}


def _models(evaluate: dict) -> dict:
  """{name: {auc: {mean, std}, gauc: {mean, std}}} of the models and the GBDT; TwinV2 with
  its attention's liveness."""
  out = {}
  for name, summary in {**evaluate["models"], **evaluate["baselines"]}.items():
    out[name] = {metric: {"mean": summary[f"{metric}_mean"], "std": summary[f"{metric}_std"]}
                 for metric in ("auc", "gauc")}
    if summary.get("attention"):
      out[name]["attention"] = {k: summary["attention"][k]
                                for k in ("target_std", "bias_std", "jaccard")}
  return out


def run_study(config: LongTermStudyConfig, out_dir: str | pathlib.Path) -> dict:
  """Runs the study; writes and returns longterm.json's contents."""
  dormancy, jobs = [], []
  for dormant in config.dormant_tastes:
    job = _job_config(config, dormant)
    result = _log_job(config, job, dormant)
    jobs.append((job, result))
    references = result["evaluate"]["references"]
    models = _models(result["evaluate"])
    dormancy.append({
        "dormant_tastes": dormant,
        "dormant_share_of_test": references["dormant_share"],
        "absent_share_of_test": references["absent_share"],
        "oracle": references["oracle"], "item_only": references["item_only"],
        "twinv2_share_of_item_to_oracle_gap": _gap_share(models, references),
        "models": models, **_comparisons(job), "equal_cost": _equal_cost(config, job)})
  job, result = jobs[0]
  references = result["evaluate"]["references"]
  examples = result["build-examples"]
  summary = {
      "dataset": f"SYNTHETIC long-term log ({config.users} users, up to "
                 f"{config.max_behaviors:,} behaviors each, {config.num_items:,} items; "
                 "twin_tf.data.longterm)",
      "settings": dataclasses.asdict(config),
      "behaviors": examples["behaviors_read"],
      "train_impressions": examples["impressions_train"],
      "train_share": examples["train_share"],
      "oracle": references["oracle"], "item_only": references["item_only"],
      "item_positive_rate": references["item_positive_rate"],
      "models": dormancy[0]["models"],
      "twinv2_minus": {k[len("twinv2_minus_"):]: v for k, v in dormancy[0].items()
                       if k.startswith("twinv2_minus_")},
      "equal_cost": dormancy[0]["equal_cost"],
      "dormancy": [{k: v for k, v in point.items() if k != "models"}
                   for point in dormancy],
      "twinv2_share_of_item_to_oracle_gap": dormancy[0]["twinv2_share_of_item_to_oracle_gap"]}
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "longterm.json").write_text(strict_json.dumps(summary, indent=2) + "\n")
  return summary


def _gap_share(models: dict, references: dict) -> float:
  """TwinV2's share of the test AUC from the item-only score to the oracle."""
  item_only = references["item_only"]["auc"]
  return (models["TwinV2"]["auc"]["mean"] - item_only) / (references["oracle"]["auc"] - item_only)


def _equal_cost(config: LongTermStudyConfig, job: main_job.MainJobConfig) -> list:
  """TwinV2 against Twin at each budget of config.budgets on one log (sweeps.budget_sweep):
  [{"budget", "clusters", "max_clusters_per_user", "models", "twinv2_minus_twin"}]."""
  if not config.budgets:
    return []
  folders = main_job.job_folders(job)
  main = sweeps.Variant(main_job.main_clustering(job), folders.clusters, folders.examples,
                        folders.runs)
  return sweeps.budget_sweep(folders.log, folders.embeddings,
                             pathlib.Path(job.workdir) / "equal_cost", main, job.seeds,
                             config.budgets, models=("TwinV2", "Twin"),
                             parts=lambda test: truth_parts(longterm.truth_path(job.data), test),
                             **main_job.train_overrides(job))


def truth_parts(truth: pathlib.Path, test: dict) -> dict[str, np.ndarray]:
  """The test impressions {field: (N,)} split by a log's SYNTHETIC truth, {name: (N,)
  bool}: "popular_nearest_dormant" (a popular item, not shown from a taste, nearest one of
  the user's dormant tastes after the dormancy: the signal only the life-cycle holds),
  "popular_nearest_active" (a popular item otherwise) and "shown_from_a_taste"."""
  found = longterm.truth_of(truth, test[schema.USER_ID],
                            test[schema.TIMESTAMP], test[schema.ITEM_ID])
  popular = found["taste"] < 0
  return {"popular_nearest_dormant": popular & found["dormant"],
          "popular_nearest_active": popular & ~found["dormant"],
          "shown_from_a_taste": ~popular}
