"""The gamma sweep: how the largest cluster size trades compression and time against AUC.

For each gamma the behavior log is clustered again (the Beam pipeline), examples are built
on the same impressions (the cutoff does not depend on gamma) and one TwinV2 is trained and
evaluated on the test split. The main job's own gamma is not redone: its clustering, examples
and first-seed run are reused.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

from twin_tf import commands
from twin_tf.config import ClusteringConfig
from twin_tf.experiments import quality
from twin_tf.training.input_pipeline import load_example_data


def sweep_point(gamma: int, clusters: dict, summary: dict, pipeline_s: float,
                metrics: dict) -> dict:
  """One gamma's figures: clusters, compression, clustering time, test metrics."""
  return {"gamma": gamma, "clusters": summary["clusters"],
          "compression": summary["overall_ratio"],
          "max_cluster_size": summary["max_cluster_size"],
          "clustering_s": round(clusters.get("clustering_ms", 0) / 1000, 2),
          "pipeline_s": round(pipeline_s, 1),
          "auc": metrics["auc"], "gauc": metrics["gauc"], "logloss": metrics["logloss"]}


def run_sweep(gammas, workdir, log, embeddings, clustering: ClusteringConfig, beam_args,
              model: str = "TwinV2", seed: int = 0, reuse: dict | None = None,
              max_impressions: int | None = None, **train_overrides) -> dict:
  """Clusters, builds examples, trains and evaluates `model` for every gamma.

  Args:
    clustering: the main clustering (its cutoff); each point changes its gamma.
    reuse: {gamma: sweep_point} already measured (the main job's own gamma).
  Returns:
    {"model", "seed", "points": [sweep_point per gamma, ascending]}.
  """
  points = []
  gammas = sorted(set(gammas))
  for number, gamma in enumerate(gammas, start=1):
    tag = f"gamma sweep [{number}/{len(gammas)}] gamma {gamma}"
    if reuse and gamma in reuse:
      print(f"{tag}: the main job's own clustering and run, reused", flush=True)
      points.append(reuse[gamma])
      continue
    folder = pathlib.Path(workdir) / f"gamma{gamma}"
    print(f"{tag}: clustering", flush=True)
    start = time.time()
    clusters = commands.cluster(log, embeddings, folder / "clusters",
                                dataclasses.replace(clustering, gamma=gamma), beam_args)
    pipeline_s = time.time() - start
    summary = commands.cluster_summary(folder / "clusters")
    print(f"{tag}: building examples", flush=True)
    commands.build_examples(log, folder / "clusters", folder / "examples", beam_args,
                            max_impressions=max_impressions)
    print(f"{tag}: training {model}", flush=True)
    data = load_example_data(folder / "examples")
    quality.train_runs(folder / "examples", folder / "runs", [model], [seed], data,
                          **train_overrides)
    metrics = quality.evaluate_runs(folder / "examples", folder / "runs", [model], [seed],
                                    data=data, baselines=False, **train_overrides
                                    )["models"][model]["runs"][0]
    points.append(sweep_point(gamma, clusters, summary, pipeline_s, metrics))
    print(f"{tag}: {points[-1]['clusters']:,} clusters ({points[-1]['compression']}x), "
          f"clustering {points[-1]['clustering_s']} s, test AUC {metrics['auc']:.4f}",
          flush=True)
  return {"model": model, "seed": seed, "points": points}
