"""The report and quality.md of any log: they name its data and feature spec, and say
nothing that holds only for MovieLens."""

from twin_tf.experiments import quality
from twin_tf.experiments.report import write_report


def _run(seed, auc):
  return {"model": "m", "seed": seed, "auc": auc, "gauc": auc - 0.1, "logloss": 0.6,
          "diversity": {"mean_distinct": 3.0, "k": 10, "users": 5, "histogram": [0, 0, 2, 3, 0, 0, 0, 0, 0, 0]},
          "ranking": {"ndcg": 0.5, "recall": 0.4},
          "gauc_by_bucket": [{"bucket": 0, "min_activity": 1, "max_activity": 9, "users": 5,
                              "gauc": auc - 0.1}],
          "attention": {"target_std": 1.0, "bias_std": 2.0, "jaccard": 0.5, "users": 5,
                        "jaccard_users": 3}}


def test_a_custom_logs_report_names_its_log_and_spec_and_not_movielens(tmp_path):
  models = {"TwinV2": quality.summarize([_run(0, 0.7), _run(1, 0.72)]),
            "Twin": quality.summarize([_run(0, 0.69), _run(1, 0.7)])}
  summary = {"dataset": "log (shop_clicks.parquet)", "features": "my_shop", "split": "test",
             "seeds": [0, 1], "train_config": {"epochs": 1}, "models": models,
             "baselines": {"GBDT": quality.summarize([_run(0, 0.65)])},
             "references": {"item_positive_rate": {"auc": 0.6, "gauc": float("nan")}},
             "random_diversity": {"mean_distinct": 2.5, "k": 10, "users": 5,
                                  "histogram": [0, 1, 2, 2, 0, 0, 0, 0, 0, 0]}}
  quality.write_summary(summary, tmp_path)
  write_report({"evaluate": summary}, {"train": 1.0}, tmp_path / "report", {"dataset": "log"})
  page = (tmp_path / "report" / "report.html").read_text()
  table = (tmp_path / "quality.md").read_text()
  for text in (page, table):
    assert "MovieLens" not in text and "genre" not in text
    assert "shop_clicks.parquet" in text and "my_shop" in text
  assert "<title>twin-tf main job report</title>" in page
  assert "Liveness of the target attention" in page and "n/a" in page  # the NaN GAUC
