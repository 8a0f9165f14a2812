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
from twin_tf import strict_json
from twin_tf.config import TrainConfig
from twin_tf.data import schema
from twin_tf.experiments import stages
from twin_tf.training import diversity, gbdt
from twin_tf.training.input_pipeline import ExampleData, load_example_data

MODELS = ("TwinV2", "Twin", "SimHard", "DIN", "TwinV2-no-ln-n", "TwinV2-uniform")
# The tuning budget every model gets: seed 0 at each point, the best validation AUC wins.
GRID = ({"learning_rate": 1e-3, "item_l2": 0.0}, {"learning_rate": 1e-3, "item_l2": 1e-4})
TUNED = ("learning_rate", "item_l2")
# The study's defaults fit `make experiment` in 90 minutes on 2 cores: three seeds, and one
# epoch per run (the main job's: the models overfit after it).
SEEDS = (0, 1, 2)
EPOCHS = 1


def run_dir(runs_dir: str | pathlib.Path, model: str, seed: int, overrides=None
            ) -> pathlib.Path:
  """<runs_dir>/<model>[-<tuned settings>]-seed<seed>."""
  tag = "".join(f"-{k}{v:g}" for k, v in sorted((overrides or {}).items()) if k in TUNED)
  return pathlib.Path(runs_dir) / f"{model}{tag}-seed{seed}"


def run_configs(examples, runs_dir, models, seeds, overrides) -> list[TrainConfig]:
  return [TrainConfig(examples=str(examples), output_dir=str(run_dir(runs_dir, m, s, overrides)),
                      model=m, seed=s, **overrides) for m in models for s in seeds]


def _finished(config: TrainConfig) -> bool:
  """The run's final weights exist, were trained with this very config and its preset as it
  is now, and are newer than every file it read (examples built again in the same folder,
  after a new clustering, or new item embeddings: the run is stale and trains again)."""
  # pylint: disable=import-outside-toplevel
  from twin_tf.model.ctr_model import PRESETS
  from twin_tf.training.trainer import MODEL_FILE
  out = pathlib.Path(config.output_dir)
  weights = out / "model.weights.h5"
  recorded = {out / "config.json": config_lib.as_saved(config),
              out / MODEL_FILE: config_lib.as_saved(PRESETS[config.model])}
  if not weights.exists() or any(not path.exists() or json.loads(path.read_text()) != wanted
                                 for path, wanted in recorded.items()):
    return False
  read = [config.examples] + ([config.item_embeddings] if config.item_embeddings else [])
  newest = max((f[2] for f in stages.fingerprint(read)), default=0)
  return weights.stat().st_mtime_ns > newest


def train_runs(examples, runs_dir, models=MODELS, seeds=(0, 1, 2),
               data: ExampleData | None = None, **overrides) -> dict:
  """Trains every (model, seed) not already finished; returns {run name: seconds or
  "kept"}. Keras progress bars when the output is a terminal, one line per epoch otherwise."""
  from twin_tf.training.trainer import train  # pylint: disable=import-outside-toplevel
  data = data or load_example_data(examples)
  configs = run_configs(examples, runs_dir, models, seeds, overrides)
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


def evaluated(config: TrainConfig, split: str, data: ExampleData) -> dict:
  """The run's metrics on `split`: the saved metrics_<split>.json when it is newer than the
  run's weights (and its predictions are there), else a fresh evaluation."""
  from twin_tf.training.trainer import evaluate  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(config.output_dir)
  saved, weights = out / f"metrics_{split}.json", out / "model.weights.h5"
  predictions = out / f"predictions_{split}.npz"
  if (saved.exists() and predictions.exists() and saved.stat().st_mtime > weights.stat().st_mtime
      and _indexed_by_impression(predictions)):
    result = json.loads(saved.read_text())
    if {"auc", "gauc", "diversity", "ranking", "attention"} <= set(result):  # this version
      return result
  return evaluate(config, split, data)


def _indexed_by_impression(predictions: pathlib.Path) -> bool:
  """Whether saved predictions come from the in-memory evaluation (impression indices),
  not the streamed one (user, time, item keys)."""
  with np.load(predictions) as saved:
    return "impression" in saved.files


def evaluate_runs(examples, runs_dir, models=MODELS, seeds=(0, 1, 2), dataset: str = "",
                  data: ExampleData | None = None, tuned: dict | None = None,
                  truth: str | None = None, baselines: bool = True, **overrides) -> dict:
  """Evaluates every trained (model, seed) on the test split; returns the summary.
  `tuned`: {model: settings} chosen by `tune`, on top of `overrides`. `truth`: a SYNTHETIC
  log's truth (twin_tf.data.longterm), which adds the oracle and item-only rows
  (summary["references"]). `baselines`: the GBDT too (False where another evaluation of the
  same impressions already has it: the clustering does not change its dense features)."""
  data = data or load_example_data(examples)
  configs = [c for m in models for c in run_configs(
      examples, runs_dir, [m], seeds, {**overrides, **(tuned or {}).get(m, {})})]
  per_model: dict[str, list] = {m: [] for m in models}
  for number, config in enumerate(configs, start=1):
    result = evaluated(config, "test", data)
    per_model[config.model].append(result)
    print(f"evaluate [{number}/{len(configs)}] {config.model} seed {config.seed}: "
          f"AUC {result['auc']:.4f} GAUC {result['gauc']:.4f} logloss "
          f"{result['logloss']:.4f}, distinct categories in top-"
          f"{result['diversity']['k']} {result['diversity']['mean_distinct']:.2f}", flush=True)
  test = data.impressions["test"]
  return {"dataset": dataset or str(examples), "features": data.spec.name, "split": "test",
          "seeds": list(seeds),
          "baselines": ({gbdt.NAME: summarize([gbdt_run(data, s) for s in seeds])}
                        if baselines else {}),
          "references": {**feature_references(data),
                         **(truth_references(data, truth) if truth else {})},
          "train_config": {k: v for k, v in dataclasses.asdict(TrainConfig(
              **overrides)).items() if k not in ("examples", "output_dir", "model", "seed")},
          "models": {m: summarize(runs) for m, runs in per_model.items()},
          "random_diversity": diversity.random_ranking_diversity(
              test[schema.USER_ID], test[data.spec.primary])}


def feature_references(data: ExampleData) -> dict:
  """Test AUC / GAUC of single dense features as scores: "item_positive_rate" (the item's
  positive rate before the impression) and "best_single_feature" (the feature of the best
  validation AUC, named; chosen on validation, never on test)."""
  from twin_tf.model import features  # pylint: disable=import-outside-toplevel

  def scored(split: str, column: int) -> dict:
    table = data.impressions[split]
    return _auc_gauc(table, table[features.DENSE][:, column])

  names = features.DENSE_FEATURES
  best = int(np.nanargmax([scored("validation", i)["auc"] for i in range(len(names))]))
  return {"item_positive_rate": scored("test", names.index("item_positive_rate")),
          "best_single_feature": {"feature": names[best], **scored("test", best)}}


def _auc_gauc(table: dict, scores: np.ndarray) -> dict:
  """AUC and GAUC of scores for the impressions of a split's table."""
  from twin_tf.training import metrics  # pylint: disable=import-outside-toplevel
  labels = table[schema.LABEL]
  return {"auc": metrics.auc(labels, scores),
          "gauc": metrics.gauc(labels, scores, table[schema.USER_ID])}


def reference_label(name: str, reference: dict) -> str:
  """How a table names a summary["references"] row."""
  return {"oracle": "oracle (SYNTHETIC truth)", "item_only": "item-only (SYNTHETIC truth)",
          "best_single_feature": f"best single feature ({reference.get('feature')})"}.get(
              name, name.replace("_", " ") + " alone")


def truth_references(data: ExampleData, truth: str) -> dict:
  """Test AUC / GAUC of the SYNTHETIC truth's scores: "oracle" (the true click probability)
  and "item_only" (the item's mean true click probability, not personalized); the shares of
  test impressions nearest a dormant taste ("dormant_share") and nearest a taste that none of
  the user's previous 50 behaviors was shown from ("absent_share",
  longterm.absent_from_recent)."""
  from twin_tf.data import longterm  # pylint: disable=import-outside-toplevel
  test = data.impressions["test"]
  found = longterm.truth_of(truth, test[schema.USER_ID], test[schema.TIMESTAMP],
                            test[schema.ITEM_ID])
  out = {name: _auc_gauc(test, found[field])
         for name, field in (("oracle", "click_probability"), ("item_only", "item_probability"))}
  out["dormant_share"] = float(found["dormant"].mean())
  out["absent_share"] = float(found["absent_from_recent"].mean())
  return out


def gbdt_run(data: ExampleData, seed: int) -> dict:
  """The GBDT baseline's test metrics for one seed, in a model run's layout."""
  from twin_tf.training.trainer import split_metrics  # pylint: disable=import-outside-toplevel
  start = time.time()
  scores, rounds = gbdt.train_and_score(data, gbdt.GbdtConfig(seed=seed))
  order = np.arange(len(scores))
  result = {"model": gbdt.NAME, "seed": seed, "rounds": rounds,
            **split_metrics(data, "test", scores, order)}
  print(f"{gbdt.NAME} seed {seed}: {rounds} rounds in {time.time() - start:.0f} s, AUC "
        f"{result['auc']:.4f} GAUC {result['gauc']:.4f}", flush=True)
  return result


def tune(examples, runs_dir, models=MODELS, grid=GRID, data: ExampleData | None = None,
         **overrides) -> dict:
  """Seed 0 of every model at every grid point, scored on the validation split.

  Returns {model: {"chosen": the best point, "grid": [point + "validation_auc"]}}.
  """
  data = data or load_example_data(examples)
  out = {}
  for model in models:
    scores = []
    for point in grid:
      train_runs(examples, runs_dir, [model], [0], data, **overrides, **point)
      config = run_configs(examples, runs_dir, [model], [0], {**overrides, **point})[0]
      scores.append(evaluated(config, "validation", data)["auc"])
    best = int(np.argmax(scores))
    out[model] = {"chosen": dict(grid[best]),
                  "grid": [{**p, "validation_auc": s} for p, s in zip(grid, scores)]}
    print(f"tuning {model}: validation AUC " + ", ".join(
        f"{p} {s:.4f}" for p, s in zip(grid, scores)) + f"; chosen {grid[best]}", flush=True)
  return out


def run_experiment(examples: str, runs_dir: str, out_dir: str, models=MODELS,
                   seeds=(0, 1, 2), dataset: str = "", grid=GRID, **overrides) -> dict:
  """Tunes every model on `grid` (the same budget for each), trains and evaluates every
  (model, seed) with its chosen settings plus the GBDT baseline; writes and returns the
  summary (with a "tuning" entry)."""
  data = load_example_data(examples)
  tuning = tune(examples, runs_dir, models, grid, data, **overrides) if grid else {}
  chosen = {m: t["chosen"] for m, t in tuning.items()}
  for model in models:
    train_runs(examples, runs_dir, [model], seeds, data, **overrides, **chosen.get(model, {}))
  summary = evaluate_runs(examples, runs_dir, models, seeds, dataset, data, chosen,
                          **overrides)
  summary["tuning"] = tuning
  write_summary(summary, out_dir)
  return summary


def write_summary(summary: dict, out_dir: str | pathlib.Path) -> None:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "quality.json").write_text(strict_json.dumps(summary, indent=2) + "\n")
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
  out["attention"] = mean_liveness([r.get("attention") for r in runs])
  out["runs"] = runs
  return out


def figure(value) -> str:
  """A figure for a table: 4 significant digits, "n/a" for a missing or undefined one (None
  in JSON, NaN in memory)."""
  return "n/a" if value is None or not np.isfinite(value) else f"{value:.4g}"


def mean_liveness(per_run: list) -> dict | None:
  """The liveness figures (training.liveness) averaged over runs; None without a GSU."""
  if not per_run or any(r is None for r in per_run):
    return None
  out = {}
  for key in ("target_std", "bias_std", "jaccard"):
    values = [r[key] for r in per_run if r[key] is not None]
    out[key] = float(np.mean(values)) if values else None
  out["jaccard_users"], out["users"] = per_run[0]["jaccard_users"], per_run[0]["users"]
  return out


def markdown(summary: dict) -> str:
  k = next(iter(summary["models"].values()))["runs"][0]["diversity"]["k"]
  features = f", features {summary['features']}" if summary.get("features") else ""
  lines = [f"# Quality on {summary['dataset']}{features} (test split, seeds "
           f"{summary['seeds']})", "",
           f"| model | AUC | GAUC | logloss | NDCG@{k} | recall@{k} | distinct categories in "
           f"top-{k} |", "|---|---|---|---|---|---|---|"]
  rows = {**summary["models"], **{f"{k} (baseline)": v
                                  for k, v in summary.get("baselines", {}).items()}}
  for name, r in rows.items():
    lines.append(f"| {name} | {r['auc_mean']:.4f} ± {r['auc_std']:.4f} | "
                 f"{r['gauc_mean']:.4f} ± {r['gauc_std']:.4f} | "
                 f"{r['logloss_mean']:.4f} ± {r['logloss_std']:.4f} | "
                 f"{r['ndcg_mean']:.4f} ± {r['ndcg_std']:.4f} | "
                 f"{r['recall_mean']:.4f} ± {r['recall_std']:.4f} | "
                 f"{r['diversity_mean']:.3f} ± {r['diversity_std']:.3f} |")
  for name, r in summary.get("references", {}).items():
    if isinstance(r, dict):
      lines.append(f"| {reference_label(name, r)} | {figure(r['auc'])} | "
                   f"{figure(r['gauc'])} | | | | |")
  random = summary["random_diversity"]
  lines += ["", f"A random ranking gives {random['mean_distinct']:.3f} distinct categories "
            f"in the top-{k} ({random['users']} users with more than {k} test candidates).",
            ""]
  live = {n: r["attention"] for n, r in summary["models"].items() if r.get("attention")}
  if live:
    lines += ["Liveness of the target attention (training.liveness; test users):", "",
              "| model | target-term std | per-cluster-term std | top-K Jaccard between "
              "candidates |", "|---|---|---|---|"]
    lines += [f"| {n} | {figure(a['target_std'])} | {figure(a['bias_std'])} | "
              f"{figure(a['jaccard'])} ({a['jaccard_users']} users) |" for n, a in live.items()]
    lines.append("")
  first = next(iter(summary["models"].values()))["gauc_by_bucket"]
  lines += ["GAUC per user-activity quartile (behaviors before the cutoff):", "",
            "| model | " + " | ".join(f"{b['min_activity']}-{b['max_activity']}"
                                      for b in first) + " |",
            "|---|" + "---|" * len(first)]
  for name, r in rows.items():
    lines.append(f"| {name} | " + " | ".join(f"{b['gauc_mean']:.4f} ± {b['gauc_std']:.4f}"
                                             for b in r["gauc_by_bucket"]) + " |")
  if summary.get("freshness"):
    lines += ["", f"Cluster freshness, TwinV2 (seeds {summary.get('sweep_seeds')}):", "",
              "| clusters | clusters in all | AUC | GAUC |", "|---|---|---|---|"]
    for p in summary["freshness"]:
      m = p["models"]["TwinV2"]
      lines.append(f"| {p['variant']} | {p['clusters']:,} | {m['auc_mean']:.4f} ± "
                   f"{m['auc_std']:.4f} | {m['gauc_mean']:.4f} ± {m['gauc_std']:.4f} |")
  return "\n".join(lines) + "\n"
