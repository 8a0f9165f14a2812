"""The quality study behind results/quality.json (`twin-tf experiment`).

On the main job's work folder (its behavior log, bootstrap embeddings and examples):
  1. every model tuned on the same grid (validation AUC, seed 0), then trained and evaluated
     with its chosen settings over `seeds`, beside the GBDT baseline (quality.py);
  2. the sequence-budget sweep: TwinV2 against Twin and TwinV2-uniform at equal cost L,
     with TwinV2 minus Twin and its paired-bootstrap interval per L (sweeps.py);
  3. the number of completion groups M and the clustering method (hierarchical k-means
     against time-ordered chunks), TwinV2 only;
  4. freshness: TwinV2 over clusters 0, 30, 90, 365 days stale, and over stale clusters
     updated incrementally to the cutoff against the full re-clustering.
Sweep points equal to the main clustering reuse its examples and the quality runs. Writes
quality.json, quality.md and quality_report/ (HTML with the plots) under `out_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Sequence

from twin_tf.config import ClusteringConfig
from twin_tf.experiments import quality, sweeps


def run_study(log, embeddings, examples, workdir, out_dir, models=quality.MODELS,
              seeds=quality.SEEDS,
              sweep_seeds=quality.SEEDS, budgets=sweeps.BUDGETS, groups=sweeps.GROUPS,
              methods=sweeps.METHODS, staleness_days=sweeps.STALENESS_DAYS,
              incremental_from=sweeps.INCREMENTAL_FROM_DAYS, grid=quality.GRID,
              clustering: ClusteringConfig = ClusteringConfig(gamma=20, cutoff_quantile=0.5),
              dataset: str = "MovieLens ml-latest-small", beam_args: Sequence[str] = (),
              **overrides) -> dict:
  """Runs the study; returns the summary written to quality.json.

  Args:
    log, embeddings, examples: the main job's behavior log, bootstrap embeddings and the
      examples of `clustering` (its settings).
    workdir: where runs and sweep variants go (experiment/, study/).
  """
  work = pathlib.Path(workdir)
  missing = [str(p) for p in (log, embeddings, examples) if not pathlib.Path(p).exists()]
  if missing:
    raise SystemExit(f"the study reads the main job's outputs; missing {missing}: run "
                     "`twin-tf main` first")
  examples = pathlib.Path(examples)
  runs_dir = work / "experiment"
  summary = quality.run_experiment(examples, runs_dir, out_dir, models, seeds, dataset,
                                   grid, **overrides)
  tuned = {m: t["chosen"] for m, t in summary["tuning"].items()}
  main = sweeps.Variant(clustering, examples.parent / "clusters", examples, runs_dir)
  study_dir = work / "study"
  if budgets:
    summary["budget_sweep"] = sweeps.budget_sweep(
        log, embeddings, study_dir / "budget", main, sweep_seeds, budgets, tuned, beam_args,
        **overrides)
  if groups:
    summary["groups_sweep"] = sweeps.clustering_sweep(
        log, embeddings, study_dir / "groups", main, {
            f"M={m}": dataclasses.replace(clustering, num_groups=m) for m in groups},
        sweep_seeds, tuned, beam_args, **overrides)
  if methods:
    summary["clustering_method"] = sweeps.clustering_sweep(
        log, embeddings, study_dir / "method", main, {
            m: dataclasses.replace(clustering, method=m) for m in methods},
        sweep_seeds, tuned, beam_args, **overrides)
  if staleness_days:
    summary["freshness"] = sweeps.freshness_sweep(
        log, embeddings, study_dir / "freshness", main, sweep_seeds, staleness_days,
        incremental_from, tuned, beam_args, **overrides)
  summary["sweep_seeds"] = list(sweep_seeds)
  quality.write_summary(summary, out_dir)
  from twin_tf.experiments.report import write_report  # pylint: disable=import-outside-toplevel
  write_report({"evaluate": summary}, {}, pathlib.Path(out_dir) / "quality_report", {
      "workdir": str(work), "seeds": list(seeds), "sweep_seeds": list(sweep_seeds),
      "grid": json.dumps(list(grid)), **overrides}, title="twin-tf quality study")
  return summary
