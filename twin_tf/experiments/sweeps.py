"""The paper's questions on one behavior log, each as a sweep of clusterings x models x seeds.

  budget_sweep     TWIN-V2 against TWIN at equal cost: for a sequence budget L (the long-term
                   length the GSU scores), Twin reads the most recent L raw behaviors,
                   TwinV2 at most L clusters covering the whole pre-cutoff history (a user
                   over L is clustered again with gamma doubled until the clusters fit:
                   ClusteringConfig.max_clusters), TwinV2-uniform L raw behaviors sampled
                   uniformly. TwinV2 minus Twin per L with a paired bootstrap over users.
  clustering_sweep TwinV2 over other clusterings: M completion groups, or hierarchical
                   k-means against time-ordered chunks of gamma (same sizes, no similarity).
  freshness_sweep  TwinV2 over clusters 0, 30, 90, 365 days stale (clustered that long before
                   the cutoff; impressions unchanged), and over clusters updated
                   incrementally from stale ones to the cutoff (twin_tf.clustering.incremental)
                   against the full re-clustering at the same cutoff (the fresh variant).
Every clustering variant gets its own clusters/ and examples/ under the sweep's folder
(rebuilt only when its settings change); the main clustering's variant reuses the main
examples and runs. Runs resume like the quality experiment's.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Callable, Sequence

import numpy as np

from twin_tf import commands
from twin_tf.config import ClusteringConfig
from twin_tf.data import schema
from twin_tf.experiments import bootstrap, quality
from twin_tf.training import examples as training_examples
from twin_tf.training.input_pipeline import ExampleData, load_example_data

BUDGETS = (16, 32, 64, 128, None)  # None: no budget ("full")
BUDGET_MODELS = ("TwinV2", "Twin", "TwinV2-uniform")
GROUPS = (1, 2, 5, 10)
METHODS = ("hierarchical", "time_chunks")
STALENESS_DAYS = (0, 30, 90, 365)
INCREMENTAL_FROM_DAYS = 90


@dataclasses.dataclass(frozen=True)
class Variant:
  """A clustering (its cluster records, examples and runs); the main one is the main job's."""

  clustering: ClusteringConfig
  clusters: pathlib.Path
  examples: pathlib.Path
  runs_dir: pathlib.Path


def variant(log, embeddings, folder: pathlib.Path, clustering: ClusteringConfig, main: Variant,
            beam_args: Sequence[str] = (), previous: Variant | None = None) -> Variant:
  """The main variant when `clustering` is its clustering (and nothing is `previous`);
  otherwise `log` clustered with `clustering` (incrementally from `previous`'s records when
  given) and its examples built under `folder` (skipped when `folder` already holds them for
  the same settings)."""
  if clustering == main.clustering and previous is None:
    return main
  # Settings at their defaults are left out, so folders built before they existed still match.
  settings = {"log": str(log), "embeddings": str(embeddings), "clustering": {
      k: v for k, v in dataclasses.asdict(clustering).items()
      if k != "staleness_days" or v != ClusteringConfig.staleness_days}}
  if previous is not None:
    settings["previous"] = str(previous.clusters)
  settings["examples_layout"] = training_examples.LAYOUT
  marker = folder / "variant.json"
  if not (marker.exists() and json.loads(marker.read_text()) == settings):
    commands.cluster(log, embeddings, folder / "clusters", clustering, beam_args,
                     previous=previous and previous.clusters)
    commands.build_examples(log, folder / "clusters", folder / "examples", beam_args,
                            clustering.num_groups)
    marker.write_text(json.dumps(settings, sort_keys=True))
  return Variant(clustering, folder / "clusters", folder / "examples", folder / "runs")


def scores_on_test(examples, data: ExampleData, runs_dir, model: str, seeds,
                   **overrides) -> list:
  """Per seed, (metrics, scores aligned with data.impressions["test"]) of finished runs."""
  out = []
  for config in quality.run_configs(examples, runs_dir, [model], seeds, overrides):
    result = quality.evaluated(config, "test", data)
    saved = np.load(pathlib.Path(config.output_dir) / "predictions_test.npz")
    scores = np.empty(len(saved["score"]), np.float64)
    scores[saved["impression"]] = saved["score"]
    out.append((result, scores))
  return out


def _summary(per_seed: list) -> dict:
  """The seed statistics of quality.summarize that a sweep point keeps."""
  summary = quality.summarize([result for result, _ in per_seed])
  return {k: summary[k] for k in ("auc_mean", "auc_std", "gauc_mean", "gauc_std",
                                  "logloss_mean")}


def _point(chosen: Variant, models, seeds, tuned: dict, **overrides) -> tuple[dict, dict]:
  """Trains and evaluates `models` x `seeds` on a variant, each model with its tuned
  settings; ({model: summary}, {"data": ExampleData, model: per-seed (metrics, scores)})."""
  data = load_example_data(chosen.examples)
  per_model = {}
  for m in models:
    settings = {**overrides, **tuned.get(m, {})}
    quality.train_runs(chosen.examples, chosen.runs_dir, [m], seeds, data, **settings)
    per_model[m] = scores_on_test(chosen.examples, data, chosen.runs_dir, m, seeds, **settings)
  return {m: _summary(v) for m, v in per_model.items()}, {"data": data, **per_model}


def budget_sweep(log, embeddings, workdir, main: Variant, seeds, budgets=BUDGETS,
                 tuned: dict | None = None, beam_args: Sequence[str] = (),
                 models=BUDGET_MODELS, parts: Callable[[dict], dict] | None = None,
                 **overrides) -> list[dict]:
  """[{"budget": L or "full", "clusters", "max_clusters_per_user", "models": {m: summary},
  "twinv2_minus_twin": paired bootstrap}] for every L in `budgets` (`models` must hold
  TwinV2 and Twin). parts: test impressions {field: (N,)} -> {name: (N,) bool}; each point
  then also holds "twinv2_minus_twin_by_part": {name: _part_difference}."""
  points = []
  for budget in budgets:
    name = "full" if budget is None else f"L{budget}"
    print(f"budget sweep: {name}", flush=True)
    chosen = variant(log, embeddings, pathlib.Path(workdir) / name, dataclasses.replace(
        main.clustering, max_clusters=budget), main, beam_args)
    summaries, runs = _point(chosen, models, seeds, tuned or {}, budget=budget, **overrides)
    test = runs["data"].impressions["test"]
    difference = _twinv2_minus_twin(test, runs)
    points.append({"budget": "full" if budget is None else budget,
                   "clusters": int(runs["data"].cluster_len.sum()),
                   "max_clusters_per_user": int(runs["data"].cluster_len.max()),
                   "models": summaries, "twinv2_minus_twin": difference})
    if parts is not None:
      points[-1]["twinv2_minus_twin_by_part"] = {
          name: _part_difference(test, rows, runs) for name, rows in parts(test).items()}
    print(f"budget {name}: TwinV2 - Twin AUC {difference['auc']['mean']:+.4f} "
          f"[{difference['auc']['ci_low']:+.4f}, {difference['auc']['ci_high']:+.4f}], GAUC "
          f"{difference['gauc']['mean']:+.4f} [{difference['gauc']['ci_low']:+.4f}, "
          f"{difference['gauc']['ci_high']:+.4f}]", flush=True)
  return points


def _part_difference(test: dict, rows: np.ndarray, runs: dict) -> dict:
  """{"impressions", "auc", "gauc"}: _twinv2_minus_twin over the test impressions `rows`
  ((N,) bool); only "impressions" where they hold one label alone."""
  out = {"impressions": int(rows.sum())}
  if len(np.unique(test[schema.LABEL][rows])) == 2:
    out.update(_twinv2_minus_twin(test, runs, rows))
  return out


def _twinv2_minus_twin(test: dict, runs: dict, rows=slice(None)) -> dict:
  """TwinV2 minus Twin (runs: per-seed (metrics, scores) of each) over the test impressions
  `rows` (all by default), paired bootstrap over users."""
  return bootstrap.paired_bootstrap(test[schema.LABEL][rows], test[schema.USER_ID][rows],
                                    [s[rows] for _, s in runs["TwinV2"]],
                                    [s[rows] for _, s in runs["Twin"]])


def clustering_sweep(log, embeddings, workdir, main: Variant, variants: dict, seeds,
                     tuned: dict | None = None, beam_args: Sequence[str] = (), **overrides
                     ) -> list[dict]:
  """TwinV2 over each named clustering: [{"variant", "num_groups", "method", "clusters",
  "models": {"TwinV2": summary}}]."""
  points = []
  for name, clustering in variants.items():
    print(f"clustering variant {name}", flush=True)
    chosen = variant(log, embeddings, pathlib.Path(workdir) / name.replace("=", ""),
                     clustering, main, beam_args)
    models, runs = _point(chosen, ("TwinV2",), seeds, tuned or {}, **overrides)
    points.append({"variant": name, "num_groups": clustering.num_groups,
                   "method": clustering.method,
                   "clusters": int(runs["data"].cluster_len.sum()), "models": models})
  return points


def freshness_sweep(log, embeddings, workdir, main: Variant, seeds,
                    staleness_days=STALENESS_DAYS, incremental_from=INCREMENTAL_FROM_DAYS,
                    tuned: dict | None = None, beam_args: Sequence[str] = (), **overrides
                    ) -> list[dict]:
  """TwinV2 over clusters `staleness_days` stale, and over the `incremental_from`-days stale
  clusters updated incrementally to the cutoff: [{"variant", "staleness_days", "incremental",
  "clusters", "models": {"TwinV2": summary}}] (the 0-day variant is the full re-clustering)."""
  work = pathlib.Path(workdir)

  def stale(days) -> Variant:
    return variant(log, embeddings, work / f"stale{days}", dataclasses.replace(
        main.clustering, staleness_days=days), main, beam_args)

  chosen = {days: stale(days) for days in staleness_days}
  if incremental_from is not None:
    start = chosen[incremental_from] if incremental_from in chosen else stale(incremental_from)
    chosen["incremental"] = variant(log, embeddings, work / "incremental", main.clustering,
                                    main, beam_args, previous=start)
  points = []
  for key, picked in chosen.items():
    incremental = key == "incremental"
    name = (f"incremental from {incremental_from} d" if incremental else
            f"{key} d stale" if key else "fresh (full)")
    print(f"freshness: {name}", flush=True)
    models, runs = _point(picked, ("TwinV2",), seeds, tuned or {}, **overrides)
    points.append({"variant": name, "staleness_days": 0 if incremental else key,
                   "incremental": incremental,
                   "clusters": int(runs["data"].cluster_len.sum()), "models": models})
  return points
