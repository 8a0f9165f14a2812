"""Summaries of clustering output: compression ratio distribution over users."""

from __future__ import annotations

import numpy as np

from twin_tf.clustering import records
from twin_tf.data import schema

PERCENTILES = (0, 10, 25, 50, 75, 90, 100)


def compression_summary(user_records: list[dict]) -> dict:
  """Compression (behaviors / clusters) over users with at least one cluster.

  Returns:
    {"users", "behaviors", "clusters", "overall_ratio", "max_cluster_size",
     "ratio_percentiles": {p: ratio}, "by_history_length": [{"min_behaviors", "users",
     "median_ratio"}], "user_ratios": [ratio per user, ascending]}
  """
  behaviors = np.array([r[records.NUM_BEHAVIORS] for r in user_records], dtype=np.int64)
  clusters = np.array([len(r[schema.CLUSTER_SIZE]) for r in user_records], dtype=np.int64)
  sizes = [r[schema.CLUSTER_SIZE] for r in user_records if len(r[schema.CLUSTER_SIZE])]
  has = clusters > 0
  ratio = behaviors[has] / clusters[has]
  by_length = []
  for lo in (1, 100, 500, 1000):
    chosen = behaviors[has] >= lo
    if chosen.any():
      by_length.append({"min_behaviors": lo, "users": int(chosen.sum()),
                        "median_ratio": round(float(np.median(ratio[chosen])), 2)})
  return {
      "users": len(user_records),
      "behaviors": int(behaviors.sum()),
      "clusters": int(clusters.sum()),
      "overall_ratio": round(float(behaviors.sum() / max(clusters.sum(), 1)), 2),
      "max_cluster_size": int(max((s.max() for s in sizes), default=0)),
      "ratio_percentiles": {str(p): round(float(v), 2) for p, v in
                            zip(PERCENTILES, np.percentile(ratio, PERCENTILES))}
      if len(ratio) else {},
      "by_history_length": by_length,
      "user_ratios": np.round(np.sort(ratio), 2).tolist(),
  }


def format_summary(summary: dict) -> str:
  lines = [f"users {summary['users']}, behaviors {summary['behaviors']:,}, "
           f"clusters {summary['clusters']:,}, overall compression "
           f"{summary['overall_ratio']}x, largest cluster {summary['max_cluster_size']}"]
  if summary["ratio_percentiles"]:
    lines.append("compression per user, percentiles: " + ", ".join(
        f"p{p} {v}x" for p, v in summary["ratio_percentiles"].items()))
  for row in summary["by_history_length"]:
    lines.append(f"  users with >= {row['min_behaviors']:>4} behaviors: {row['users']:>4}, "
                 f"median compression {row['median_ratio']}x")
  return "\n".join(lines)
