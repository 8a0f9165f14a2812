"""The quality study end to end at a small size on 40 real users: every stage runs and its
figures land in quality.json and the report."""

import json

from twin_tf.experiments.study import run_study


def test_study_small(real_examples, tmp_path):
  examples, _ = real_examples
  folder = examples.parent
  summary = run_study(
      folder / "behaviors.parquet", folder / "emb.npz", folder / "examples", tmp_path,
      tmp_path / "out", models=("TwinV2", "Twin"), seeds=(0,), sweep_seeds=(0,),
      budgets=(8, None), groups=(1,), methods=("time_chunks",), staleness_days=(0, 30),
      incremental_from=30,
      grid=({"learning_rate": 1e-3}, {"learning_rate": 3e-4}), epochs=1)
  written = json.loads((tmp_path / "out" / "quality.json").read_text())
  assert written == json.loads(json.dumps(summary))
  gbdt = written["baselines"]["GBDT"]
  assert 0.5 < gbdt["auc_mean"] < 1 and set(gbdt) >= {"auc_std", "gauc_mean", "logloss_mean"}
  assert set(written["tuning"]["Twin"]["chosen"]) == {"learning_rate"}
  assert len(written["tuning"]["Twin"]["grid"]) == 2
  budget = {p["budget"]: p for p in written["budget_sweep"]}
  assert budget[8]["max_clusters_per_user"] <= 8 < budget["full"]["max_clusters_per_user"]
  # the full point is the main clustering: its TwinV2 is the quality table's run
  assert budget["full"]["models"]["TwinV2"]["auc_mean"] == \
      written["models"]["TwinV2"]["auc_mean"]
  for point in budget.values():
    for metric in ("auc", "gauc"):
      d = point["twinv2_minus_twin"][metric]
      assert d["ci_low"] <= d["ci_high"]
  assert written["groups_sweep"][0]["num_groups"] == 1
  assert written["groups_sweep"][0]["clusters"] < budget["full"]["clusters"]
  assert written["clustering_method"][0]["method"] == "time_chunks"
  fresh, stale, incremental = written["freshness"]
  assert (fresh["staleness_days"], stale["staleness_days"]) == (0, 30)
  assert fresh["models"] == {"TwinV2": {k: budget["full"]["models"]["TwinV2"][k] for k in
                                        fresh["models"]["TwinV2"]}}  # the main clustering
  assert stale["clusters"] <= fresh["clusters"] and incremental["incremental"]
  html = (tmp_path / "out" / "quality_report" / "report.html").read_text()
  for title in ("at equal cost", "completion groups M", "Clustering method", "GBDT",
                "Cluster freshness"):
    assert title in html
