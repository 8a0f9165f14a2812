"""The quality experiment: every model preset x seeds on one set of examples -> a report.

Writes <out>/quality.json:
  {"dataset": ..., "split": "test", "seeds": [...], "models": {name: {"auc_mean", "auc_std",
   "gauc_mean", "gauc_std", "logloss_mean", "logloss_std", "gauc_by_bucket": [{bucket,
   min_activity, max_activity, gauc_mean, gauc_std}], "runs": [per-seed metrics]}}}
and <out>/quality.md, the same as readable tables.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from twin_tf.input_pipeline import load_example_data
from twin_tf.training import TrainConfig, evaluate, train

MODELS = ("TwinV2", "Twin", "SimHard", "DIN", "TwinV2-no-ln-n", "TwinV2-uniform")


def run_experiment(examples: str, runs_dir: str, out_dir: str, models=MODELS,
                   seeds=(0, 1, 2), dataset: str = "", **train_overrides) -> dict:
  """Trains and evaluates every (model, seed); returns and writes the summary."""
  data = load_example_data(examples)
  results = {}
  for name in models:
    runs = []
    for seed in seeds:
      config = TrainConfig(examples=examples, output_dir=f"{runs_dir}/{name}-seed{seed}",
                           model=name, seed=seed, **train_overrides)
      train(config, data, verbose=2)
      runs.append(evaluate(config, "test", data))
      print(f"{name} seed {seed}: test AUC {runs[-1]['auc']:.4f} "
            f"GAUC {runs[-1]['gauc']:.4f} logloss {runs[-1]['logloss']:.4f}", flush=True)
    results[name] = summarize(runs)
  summary = {"dataset": dataset or examples, "split": "test", "seeds": list(seeds),
             "train_config": {k: v for k, v in dataclasses.asdict(TrainConfig(
                 **train_overrides)).items() if k not in ("examples", "output_dir",
                                                          "model", "seed")},
             "models": results}
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "quality.json").write_text(json.dumps(summary, indent=2) + "\n")
  (out / "quality.md").write_text(markdown(summary))
  return summary


def summarize(runs: list[dict]) -> dict:
  """Mean and (population) std over seeds of each metric, and per activity bucket."""
  out = {}
  for metric in ("auc", "gauc", "logloss"):
    values = np.array([r[metric] for r in runs])
    out[f"{metric}_mean"], out[f"{metric}_std"] = float(values.mean()), float(values.std())
  buckets = []
  for b, first in enumerate(runs[0]["gauc_by_bucket"]):
    values = np.array([r["gauc_by_bucket"][b]["gauc"] for r in runs])
    buckets.append({"bucket": b, "min_activity": first["min_activity"],
                    "max_activity": first["max_activity"], "users": first["users"],
                    "gauc_mean": float(values.mean()), "gauc_std": float(values.std())})
  out["gauc_by_bucket"] = buckets
  out["runs"] = runs
  return out


def markdown(summary: dict) -> str:
  lines = [f"# Quality on {summary['dataset']} (test split, seeds {summary['seeds']})", "",
           "| model | AUC | GAUC | logloss |", "|---|---|---|---|"]
  for name, r in summary["models"].items():
    lines.append(f"| {name} | {r['auc_mean']:.4f} ± {r['auc_std']:.4f} | "
                 f"{r['gauc_mean']:.4f} ± {r['gauc_std']:.4f} | "
                 f"{r['logloss_mean']:.4f} ± {r['logloss_std']:.4f} |")
  first = next(iter(summary["models"].values()))["gauc_by_bucket"]
  lines += ["", "GAUC per user-activity quartile (behaviors before the cutoff):", "",
            "| model | " + " | ".join(f"{b['min_activity']}-{b['max_activity']}"
                                      for b in first) + " |",
            "|---|" + "---|" * len(first)]
  for name, r in summary["models"].items():
    lines.append(f"| {name} | " + " | ".join(f"{b['gauc_mean']:.4f} ± {b['gauc_std']:.4f}"
                                             for b in r["gauc_by_bucket"]) + " |")
  return "\n".join(lines) + "\n"
