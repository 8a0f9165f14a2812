"""The quality experiment: every model preset x seeds on one set of examples.

`train_runs` trains each (model, seed) into <runs_dir>/<model>-seed<seed> (a run whose final
weights exist with the same config is kept, so a rerun after a crash resumes where it
stopped); `evaluate_runs` scores them on the test split and summarizes:
  {"dataset", "split": "test", "seeds", "train_config", "models": {name: {"auc_mean",
   "auc_std", "gauc_mean", "gauc_std", "logloss_mean", "logloss_std", "ndcg_mean", "ndcg_std",
   "recall_mean", "recall_std" (per-user NDCG@10 / recall@10), "diversity_mean",
   "diversity_std", "gauc_by_bucket": [{bucket, min_activity, max_activity, users,
   gauc_mean, gauc_std}], "runs": [per-seed metrics]}}, "random_diversity": {...}}
`write_summary` writes it as quality.json and quality.md.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import numpy as np

from twin_tf import config as config_lib
from twin_tf.config import TrainConfig
from twin_tf.data import schema
from twin_tf.training import diversity
from twin_tf.training.input_pipeline import ExampleData, load_example_data

MODELS = ("TwinV2", "Twin", "SimHard", "DIN", "TwinV2-no-ln-n", "TwinV2-uniform")


def run_dir(runs_dir: str | pathlib.Path, model: str, seed: int) -> pathlib.Path:
  return pathlib.Path(runs_dir) / f"{model}-seed{seed}"


def _configs(examples, runs_dir, models, seeds, overrides) -> list[TrainConfig]:
  return [TrainConfig(examples=str(examples), output_dir=str(run_dir(runs_dir, m, s)),
                      model=m, seed=s, **overrides) for m in models for s in seeds]


def _finished(config: TrainConfig) -> bool:
  """The run's final weights exist and were trained with this very config."""
  out = pathlib.Path(config.output_dir)
  return ((out / "model.weights.h5").exists() and (out / "config.json").exists() and
          json.loads((out / "config.json").read_text()) == config_lib.to_dict(config))


def train_runs(examples, runs_dir, models=MODELS, seeds=(0, 1, 2),
               data: ExampleData | None = None, **overrides) -> dict:
  """Trains every (model, seed) not already finished; returns {run name: seconds or
  "kept"}. Keras progress bars when the output is a terminal, one line per epoch otherwise."""
  from twin_tf.training.trainer import train  # pylint: disable=import-outside-toplevel
  data = data or load_example_data(examples)
  configs = _configs(examples, runs_dir, models, seeds, overrides)
  verbose = 1 if sys.stdout.isatty() else 2
  done = {}
  for number, config in enumerate(configs, start=1):
    name = pathlib.Path(config.output_dir).name
    if _finished(config):
      print(f"train [{number}/{len(configs)}] {name}: finished before, kept", flush=True)
      done[name] = "kept"
      continue
    print(f"train [{number}/{len(configs)}] {name}", flush=True)
    start = time.time()
    train(config, data, verbose=verbose)
    done[name] = round(time.time() - start, 1)
  return done


def evaluate_runs(examples, runs_dir, models=MODELS, seeds=(0, 1, 2), dataset: str = "",
                  data: ExampleData | None = None, **overrides) -> dict:
  """Evaluates every trained (model, seed) on the test split; returns the summary."""
  from twin_tf.training.trainer import evaluate  # pylint: disable=import-outside-toplevel
  data = data or load_example_data(examples)
  configs = _configs(examples, runs_dir, models, seeds, overrides)
  per_model: dict[str, list] = {m: [] for m in models}
  for number, config in enumerate(configs, start=1):
    result = evaluate(config, "test", data)
    per_model[config.model].append(result)
    print(f"evaluate [{number}/{len(configs)}] {config.model} seed {config.seed}: "
          f"AUC {result['auc']:.4f} GAUC {result['gauc']:.4f} logloss "
          f"{result['logloss']:.4f}, distinct categories in top-"
          f"{result['diversity']['k']} {result['diversity']['mean_distinct']:.2f}", flush=True)
  test = data.impressions["test"]
  return {"dataset": dataset or str(examples), "split": "test", "seeds": list(seeds),
          "train_config": {k: v for k, v in dataclasses.asdict(TrainConfig(
              **overrides)).items() if k not in ("examples", "output_dir", "model", "seed")},
          "models": {m: summarize(runs) for m, runs in per_model.items()},
          "random_diversity": diversity.random_ranking_diversity(
              test[schema.USER_ID], test[schema.CATEGORY])}


def run_experiment(examples: str, runs_dir: str, out_dir: str, models=MODELS,
                   seeds=(0, 1, 2), dataset: str = "", **overrides) -> dict:
  """Trains and evaluates every (model, seed); writes and returns the summary."""
  data = load_example_data(examples)
  train_runs(examples, runs_dir, models, seeds, data, **overrides)
  summary = evaluate_runs(examples, runs_dir, models, seeds, dataset, data, **overrides)
  write_summary(summary, out_dir)
  return summary


def write_summary(summary: dict, out_dir: str | pathlib.Path) -> None:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "quality.json").write_text(json.dumps(summary, indent=2) + "\n")
  (out / "quality.md").write_text(markdown(summary))


def summarize(runs: list[dict]) -> dict:
  """Mean and (population) std over seeds of each metric, and per activity bucket."""
  out = {}
  values = {m: np.array([r[m] for r in runs]) for m in ("auc", "gauc", "logloss")}
  values["diversity"] = np.array([r["diversity"]["mean_distinct"] for r in runs])
  for metric in ("ndcg", "recall"):
    values[metric] = np.array([r["ranking"][metric] for r in runs])
  for metric, v in values.items():
    out[f"{metric}_mean"], out[f"{metric}_std"] = float(v.mean()), float(v.std())
  buckets = []
  for b, first in enumerate(runs[0]["gauc_by_bucket"]):
    v = np.array([r["gauc_by_bucket"][b]["gauc"] for r in runs])
    buckets.append({"bucket": b, "min_activity": first["min_activity"],
                    "max_activity": first["max_activity"], "users": first["users"],
                    "gauc_mean": float(v.mean()), "gauc_std": float(v.std())})
  out["gauc_by_bucket"] = buckets
  out["runs"] = runs
  return out


def markdown(summary: dict) -> str:
  k = next(iter(summary["models"].values()))["runs"][0]["diversity"]["k"]
  lines = [f"# Quality on {summary['dataset']} (test split, seeds {summary['seeds']})", "",
           f"| model | AUC | GAUC | logloss | NDCG@{k} | recall@{k} | distinct categories in "
           f"top-{k} |", "|---|---|---|---|---|---|---|"]
  for name, r in summary["models"].items():
    lines.append(f"| {name} | {r['auc_mean']:.4f} ± {r['auc_std']:.4f} | "
                 f"{r['gauc_mean']:.4f} ± {r['gauc_std']:.4f} | "
                 f"{r['logloss_mean']:.4f} ± {r['logloss_std']:.4f} | "
                 f"{r['ndcg_mean']:.4f} ± {r['ndcg_std']:.4f} | "
                 f"{r['recall_mean']:.4f} ± {r['recall_std']:.4f} | "
                 f"{r['diversity_mean']:.3f} ± {r['diversity_std']:.3f} |")
  random = summary["random_diversity"]
  lines += ["", f"A random ranking gives {random['mean_distinct']:.3f} distinct categories "
            f"in the top-{k} ({random['users']} users with more than {k} test candidates).",
            ""]
  first = next(iter(summary["models"].values()))["gauc_by_bucket"]
  lines += ["GAUC per user-activity quartile (behaviors before the cutoff):", "",
            "| model | " + " | ".join(f"{b['min_activity']}-{b['max_activity']}"
                                      for b in first) + " |",
            "|---|" + "---|" * len(first)]
  for name, r in summary["models"].items():
    lines.append(f"| {name} | " + " | ".join(f"{b['gauc_mean']:.4f} ± {b['gauc_std']:.4f}"
                                             for b in r["gauc_by_bucket"]) + " |")
  return "\n".join(lines) + "\n"
