"""The SYNTHETIC long-term study end to end at a tiny size: every figure longterm.json promises
is there, from runs that trained on the cluster snapshots' impressions."""

import json
import os

import pytest

from twin_tf.data import longterm
from twin_tf.experiments.longterm import LongTermStudyConfig, ensure_log, run_study


def test_a_log_made_with_other_generator_settings_is_made_again(tmp_path):
  """A study folder kept from another generator design or setting must not be reused."""
  log = tmp_path / "SYNTHETIC_longterm.parquet"
  small = longterm.LongTermConfig(users=3, min_behaviors=50, max_behaviors=80, num_items=300)

  def made(generator) -> bool:  # the log written again (a kept one keeps an old mtime)
    if log.exists():
      os.utime(log, ns=(1, 1))
    ensure_log(log, generator)
    return log.stat().st_mtime_ns != 1

  assert made(small) and longterm.truth_path(log).exists()
  assert not made(small)  # the same settings: kept
  assert made(longterm.LongTermConfig(users=3, min_behaviors=50, max_behaviors=80,
                                      num_items=300, dormant_tastes=2))
  (tmp_path / "stages.json").unlink()  # made before the settings were recorded
  assert made(small) and not made(small)


def test_longterm_study_small(tmp_path):
  config = LongTermStudyConfig(workdir=str(tmp_path / "work"), users=6, max_behaviors=700,
                               dormant_tastes=(1, 3), models=("TwinV2", "Twin"),
                               seeds=(0,), budgets=(8, None), snapshots=3)
  summary = run_study(config, tmp_path)
  written = json.loads((tmp_path / "longterm.json").read_text())
  assert written == json.loads(json.dumps(summary))
  assert "SYNTHETIC" in written["dataset"]
  assert 0.5 < written["oracle"]["auc"] <= 1 and 0 < written["item_only"]["auc"] < 1
  assert set(written["models"]) == {"TwinV2", "Twin", "GBDT"}
  assert set(written["models"]["TwinV2"]["attention"]) == {"target_std", "bias_std", "jaccard"}
  assert set(written["twinv2_minus"]) == {"twin", "gbdt"}
  # snapshots: every behavior from each user's first snapshot on trains, not only the last 20%
  assert 0.35 < written["train_share"] < 0.8
  budget = {p["budget"]: p for p in written["equal_cost"]}
  assert budget[8]["max_clusters_per_user"] <= 8 < budget["full"]["max_clusters_per_user"]
  assert budget["full"]["models"]["TwinV2"]["auc_mean"] == \
      written["models"]["TwinV2"]["auc"]["mean"]  # the full point is the main job's run
  assert [p["dormant_tastes"] for p in written["dormancy"]] == [1, 3]
  first, second = written["dormancy"]
  assert first["dormant_share_of_test"] < second["dormant_share_of_test"]
  assert all(0 <= p["absent_share_of_test"] < 1 for p in written["dormancy"])
  assert first["oracle"] == written["oracle"] and second["oracle"] != first["oracle"]
  gap = written["oracle"]["auc"] - written["item_only"]["auc"]
  assert first["twinv2_share_of_item_to_oracle_gap"] == pytest.approx(
      (written["models"]["TwinV2"]["auc"]["mean"] - written["item_only"]["auc"]) / gap)
  assert written["twinv2_share_of_item_to_oracle_gap"] == \
      first["twinv2_share_of_item_to_oracle_gap"]
  assert first["equal_cost"] == written["equal_cost"]
  assert [p["budget"] for p in second["equal_cost"]] == [8, "full"]  # every log's sweep
  by_part = [point.pop("twinv2_minus_twin_by_part") for point in
             written["equal_cost"] + second["equal_cost"]]
  parts = {"popular_nearest_dormant", "popular_nearest_active", "shown_from_a_taste"}
  assert all(set(p) == parts for p in by_part)
  for log, points in ((first, by_part[:2]), (second, by_part[2:])):  # the truth's split
    total = [sum(p[name]["impressions"] for name in parts) for p in points]
    assert total[0] == total[1] > 0  # every impression in one part, the same at every L
    dormant = points[0]["popular_nearest_dormant"]["impressions"]
    assert dormant <= log["dormant_share_of_test"] * total[0] + 1e-6
  differences = [v for p in written["equal_cost"] + second["equal_cost"] + written["dormancy"]
                 for k, v in p.items() if k.startswith("twinv2_minus")]
  with_labels = [part for p in by_part for part in p.values() if "auc" in part]
  assert with_labels  # some part holds both labels
  differences += with_labels
  for difference in differences:
    for metric in ("auc", "gauc"):
      assert difference[metric]["ci_low"] <= difference[metric]["ci_high"]
