"""The report's figures (matplotlib, headless). Each function takes the main job's figures
and returns a matplotlib Figure, or None when the figures it needs were not produced."""

from __future__ import annotations

import operator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ABLATIONS = ("TwinV2", "TwinV2-no-ln-n", "TwinV2-uniform")


def _per_seed(models: dict, names, value) -> list[np.ndarray]:
  """[(seeds,) array of value(run) for each model name]."""
  return [np.array([value(r) for r in models[n]["runs"]]) for n in names]


def _seed_points(ax, names, values: list[np.ndarray], title: str) -> None:
  """Per model: the seeds' mean (diamond) with their std (whiskers), each seed a dot."""
  x = np.arange(len(names))
  ax.errorbar(x, [v.mean() for v in values], yerr=[v.std() for v in values], fmt="D",
              color="#3182bd", capsize=5, markersize=7)
  for i, v in enumerate(values):
    ax.plot(x[i] + np.linspace(-0.12, 0.12, len(v)), v, "o", color="#9ecae1",
            markersize=4)
  ax.set_xticks(x, names, rotation=30, ha="right")
  ax.set_xlim(-0.5, len(names) - 0.5)
  ax.set_title(title)
  ax.grid(axis="y", alpha=0.3)


def quality(summary: dict):
  """AUC / GAUC / logloss per model: mean over seeds, std, each seed."""
  names = list(summary["models"])
  fig, axes = plt.subplots(1, 3, figsize=(13, 4))
  for ax, metric, title in zip(axes, ("auc", "gauc", "logloss"),
                               ("AUC (higher is better)", "GAUC (higher is better)",
                                "logloss (lower is better)")):
    _seed_points(ax, names, _per_seed(summary["models"], names, operator.itemgetter(metric)), title)
  fig.tight_layout()
  return fig


def ablations(summary: dict):
  present = [n for n in ABLATIONS if n in summary["models"]]
  if len(present) < 2:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(9, 4))
  for ax, metric in zip(axes, ("auc", "gauc")):
    _seed_points(ax, present, _per_seed(summary["models"], present, operator.itemgetter(metric)),
                 metric.upper())
  fig.tight_layout()
  return fig


def gauc_by_activity(summary: dict):
  """GAUC per user-activity quartile, one line per model (error bars: seeds' std)."""
  fig, ax = plt.subplots(figsize=(8, 4.5))
  labels = None
  for name, m in summary["models"].items():
    buckets = m["gauc_by_bucket"]
    labels = [f"{b['min_activity']}-{b['max_activity']}\n({b['users']} users)"
              for b in buckets]
    ax.errorbar(np.arange(len(buckets)), [b["gauc_mean"] for b in buckets],
                yerr=[b["gauc_std"] for b in buckets], marker="o", capsize=3, label=name)
  ax.set_xticks(np.arange(len(labels)), labels)
  ax.set_xlabel("behaviors before the cutoff (user-activity quartile)")
  ax.set_ylabel("GAUC")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def compression(cluster_summary: dict):
  """Histogram of per-user compression (behaviors / clusters)."""
  ratios = np.asarray(cluster_summary.get("user_ratios", []))
  if not len(ratios):
    return None
  fig, ax = plt.subplots(figsize=(7, 4))
  ax.hist(ratios, bins=40, color="#9ecae1", edgecolor="#3182bd")
  ax.axvline(np.median(ratios), color="#de2d26", label=f"median {np.median(ratios):.2f}x")
  ax.axvline(cluster_summary["overall_ratio"], color="#31a354", linestyle="--",
             label=f"overall {cluster_summary['overall_ratio']}x")
  ax.set_xlabel("behaviors per cluster (per user)")
  ax.set_ylabel("users")
  ax.legend()
  fig.tight_layout()
  return fig


def gamma_sweep(sweep: dict):
  """AUC / GAUC, clustering time and compression against gamma."""
  points = sweep["points"]
  if len(points) < 2:
    return None
  gammas = [p["gamma"] for p in points]
  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  axes[0].plot(gammas, [p["auc"] for p in points], "o-", label="AUC")
  axes[0].plot(gammas, [p["gauc"] for p in points], "s-", label="GAUC")
  axes[0].set_title(f"{sweep['model']} test metrics (seed {sweep['seed']})")
  axes[0].legend()
  axes[1].plot(gammas, [p["clustering_s"] for p in points], "o-", label="clustering (k-means)")
  axes[1].plot(gammas, [p["pipeline_s"] for p in points], "s-", label="whole Beam pipeline")
  axes[1].set_title("clustering time (s), all users")
  axes[1].legend()
  axes[2].plot(gammas, [p["compression"] for p in points], "o-")
  axes[2].set_title("compression (behaviors / clusters)")
  axes[1].set_yscale("log")
  for ax in axes:
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(gammas, [str(g) for g in gammas])
    ax.set_xlabel("gamma (largest cluster)")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def diversity(summary: dict, pair=("TwinV2", "Twin")):
  """Left: distinct categories in the top-k per model (mean over seeds, std, random
  ranking as a line). Right: the distribution over users for the first seed of `pair`."""
  models = summary["models"]
  random = summary["random_diversity"]
  names = list(models)
  fig, axes = plt.subplots(1, 2, figsize=(13, 4))
  _seed_points(axes[0], names,
               _per_seed(models, names, lambda r: r["diversity"]["mean_distinct"]),
               f"distinct categories in each user's top-{random['k']} "
               f"({random['users']} users)")
  axes[0].axhline(random["mean_distinct"], color="#de2d26", linestyle="--",
                  label=f"random ranking {random['mean_distinct']:.2f}")
  axes[0].legend(fontsize=8)
  k = random["k"]
  width = 0.8 / (len([p for p in pair if p in models]) + 1)
  shown = [(p, models[p]["runs"][0]["diversity"]["histogram"]) for p in pair if p in models]
  shown.append(("random ranking", random["histogram"]))
  for i, (name, hist) in enumerate(shown):
    axes[1].bar(np.arange(1, k + 1) + (i - len(shown) / 2 + 0.5) * width, hist, width,
                label=name)
  axes[1].set_xticks(np.arange(1, k + 1))
  axes[1].set_xlabel(f"distinct categories in the top-{k}")
  axes[1].set_ylabel("users")
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  return fig


def retrieval(study: dict):
  """Exact against ScaNN search time per request, recall@100 on each bar pair."""
  runs = study["runs"]
  labels = [f"{r['keys']}\n{r['clusters']:,} keys\nScaNN {r['scann_mode']}" for r in runs]
  x = np.arange(len(runs))
  fig, ax = plt.subplots(figsize=(10, 4.5))
  ax.bar(x - 0.2, [r["exact_ms"] for r in runs], 0.4, label="exact (numpy)")
  ax.bar(x + 0.2, [r["scann_ms"] for r in runs], 0.4, label="ScaNN")
  for i, r in enumerate(runs):
    ax.annotate(f"recall {r['recall_at_100']:.3f}", (x[i], max(r["exact_ms"], r["scann_ms"])),
                ha="center", va="bottom", fontsize=8)
  ax.set_yscale("log")
  ax.set_ylabel(f"ms per request ({runs[0]['candidates']} candidates, top-100)")
  ax.set_xticks(x, labels, fontsize=8)
  ax.legend()
  fig.tight_layout()
  return fig


def _budget_x(points) -> tuple[np.ndarray, list[str]]:
  """x positions (log2 L; "full" one step right of the largest L) and their labels."""
  sized = [p["budget"] for p in points if p["budget"] != "full"]
  top = np.log2(max(sized)) + 1 if sized else 0.0
  x = np.array([top if p["budget"] == "full" else np.log2(p["budget"]) for p in points])
  return x, [str(p["budget"]) for p in points]


def budget_sweep(points: list):
  """AUC and GAUC against the sequence budget L (one line per model, band: the seeds' std),
  and TwinV2 minus Twin with its 95% paired-bootstrap interval."""
  if not points:
    return None
  x, labels = _budget_x(points)
  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  for ax, metric in zip(axes[:2], ("auc", "gauc")):
    for model in points[0]["models"]:
      mean = np.array([p["models"][model][f"{metric}_mean"] for p in points])
      std = np.array([p["models"][model][f"{metric}_std"] for p in points])
      ax.plot(x, mean, "o-", label=model)
      ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_title(f"test {metric.upper()} at sequence budget L")
  for metric, color in (("auc", "#3182bd"), ("gauc", "#e6550d")):
    diff = [p["twinv2_minus_twin"][metric] for p in points]
    axes[2].plot(x, [d["mean"] for d in diff], "o-", color=color, label=metric.upper())
    axes[2].fill_between(x, [d["ci_low"] for d in diff], [d["ci_high"] for d in diff],
                         color=color, alpha=0.2)
  axes[2].axhline(0, color="#666", lw=1)
  axes[2].set_title("TwinV2 − Twin (95% paired bootstrap over users)")
  for ax in axes:
    ax.set_xticks(x, labels)
    ax.set_xlabel("L (positions the GSU scores)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def clustering_variants(points: list, title: str):
  """TwinV2's AUC and GAUC (mean ± std over seeds) per clustering variant."""
  if not points:
    return None
  names = [p["variant"] for p in points]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
  for ax, metric in zip(axes, ("auc", "gauc")):
    mean = [p["models"]["TwinV2"][f"{metric}_mean"] for p in points]
    std = [p["models"]["TwinV2"][f"{metric}_std"] for p in points]
    ax.errorbar(np.arange(len(names)), mean, yerr=std, fmt="D", capsize=5)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_title(f"TwinV2 test {metric.upper()}: {title}")
    ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  return fig
