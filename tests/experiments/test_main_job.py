"""The main job at a small size on the real data, through the `twin-tf` command line."""

import json
import os
import pathlib
import subprocess
import sys

import pytest


def _main_job(data, workdir, *extra):
  """`twin-tf main` as a user runs it (without the suite's TF_CPP_MIN_LOG_LEVEL)."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  completed = subprocess.run(
      [sys.executable, "-m", "twin_tf.cli", "main", f"--data={data}",
       f"--workdir={workdir}", *extra], capture_output=True, text=True, check=False, env=env)
  assert completed.returncode == 0, completed.stderr[-3000:]
  return completed.stdout + completed.stderr, json.loads(
      (workdir / "main_job.json").read_text())


SMALL = ("--max-users=25", "--models", "TwinV2", "Twin", "--seeds", "0", "--gammas", "10", "20",
         "--scann-sizes", "2000")


def _refuse_constant(name):
  raise ValueError(f"{name} is not JSON")


def test_main_job_small(movielens_dir, tmp_path):
  """The README's main job on the first 25 real users (CI size): two models, one seed, a
  two-point gamma sweep, a small SYNTHETIC ScaNN size."""
  stdout, report = _main_job(movielens_dir, tmp_path, *SMALL)
  assert "[13/13] report done" in stdout
  assert "users clustered: 25/25 (100%)" in stdout  # the pipelines' progress display
  assert report["convert"]["dead_letters"] == 0
  summary = report["cluster-summary"]
  assert summary["users"] == 25
  assert summary["max_cluster_size"] <= 20
  assert summary["behaviors"] == report["cluster"]["behaviors"]
  assert summary["clusters"] == report["cluster"]["clusters"] < summary["behaviors"]
  assert len(summary["user_ratios"]) == 25
  examples = report["build-examples"]
  assert examples["users"] == 25 and examples["impressions_train"] > 0
  assert set(report["train"]) == {"TwinV2-seed0", "Twin-seed0"}
  quality = report["evaluate"]["models"]
  for name in ("TwinV2", "Twin"):
    run = quality[name]["runs"][0]
    assert run["impressions"] == examples["impressions_test"]
    assert 0 < run["auc"] < 1
    assert run["diversity"]["users"] == report["evaluate"]["random_diversity"]["users"] > 0
  assert (tmp_path / "quality.md").exists()
  version = tmp_path / "serving" / "twin" / "1"
  assert report["export"]["version_dir"] == str(version)
  assert (version / "saved_model.pb").exists()
  assert report["export"]["warmup_requests"] == 50  # 10 impressions x 5 signatures
  scored = report["serve-and-score"]
  assert scored["candidates"] > 0
  for way, diff in scored["max_abs_diff_vs_serving_default"].items():
    assert diff < 1e-5, way  # client-side GSU (exact and ScaNN) = the in-model GSU
  sweep = {p["gamma"]: p for p in report["gamma-sweep"]["points"]}
  assert sorted(sweep) == [10, 20]
  assert sweep[10]["max_cluster_size"] <= 10 < sweep[10]["clusters"]
  assert sweep[10]["clusters"] > sweep[20]["clusters"] == summary["clusters"]
  assert sweep[20]["auc"] == quality["TwinV2"]["runs"][0]["auc"]  # the main run, reused
  real, synthetic = [], []
  for run in report["retrieval"]["runs"]:
    (synthetic if run["keys"] == "SYNTHETIC" else real).append(run)
  assert real[0]["clusters"] == summary["clusters"]  # every user's cached keys, pooled
  assert real[0]["scann_mode"] == "brute_force" and real[0]["recall_at_100"] == 1.0
  assert [r["clusters"] for r in synthetic] == [2000]
  html = (tmp_path / "report" / "report.html").read_text()
  assert html.count("data:image/png;base64,") == len(report["report"]["figures"]) >= 6
  for name in report["report"]["figures"]:
    assert (tmp_path / "report" / name).stat().st_size > 1000
  for written in tmp_path.rglob("*.json"):  # every JSON the job writes parses strictly
    json.loads(written.read_text(), parse_constant=_refuse_constant)
  # a rerun with nothing changed skips every stage and keeps the figures
  stdout_again, report_again = _main_job(movielens_dir, tmp_path, *SMALL)
  assert stdout_again.count("unchanged since the last run, skipped") == 13
  # the export docs/serving.md shows publishes version 2 beside the job's version 1; a rerun
  # still checks serving on the job's own version (it failed with VersionMismatchError)
  exported = subprocess.run(
      [sys.executable, "-m", "twin_tf.cli", "export",
       f"--run-dir={tmp_path / 'runs' / 'TwinV2-seed0'}",
       f"--model-base-path={tmp_path / 'serving' / 'twin'}",
       f"--examples={tmp_path / 'examples'}"], capture_output=True, text=True, check=False)
  assert exported.returncode == 0, exported.stderr[-2000:]
  assert (tmp_path / "serving" / "twin" / "2" / "saved_model.pb").exists()
  stdout_third, report_third = _main_job(movielens_dir, tmp_path, *SMALL)
  assert "serve-and-score done" in stdout_third
  for way, diff in report_third["serve-and-score"]["max_abs_diff_vs_serving_default"].items():
    assert diff < 1e-5, way
  assert report.pop("stages_reused") == [] and len(report_again.pop("stages_reused")) == 13
  assert report_again == report


@pytest.mark.slow
def test_main_job_full(movielens_dir, tmp_path):
  _, report = _main_job(movielens_dir, tmp_path)
  assert report["cluster-summary"]["users"] == 610
  assert report["convert"]["behaviors"] == 100836


def test_failing_stage_is_named(tmp_path):
  completed = subprocess.run(
      [sys.executable, "-m", "twin_tf.cli", "main", f"--data={tmp_path / 'nowhere'}",
       f"--workdir={tmp_path / 'w'}"], capture_output=True, text=True, check=False)
  assert completed.returncode != 0
  assert "stage 'convert' failed" in completed.stderr
  assert "expected a MovieLens latest folder" in completed.stderr


def test_main_job_on_kuairand(kuairand_dir, tmp_path):
  """KuaiRand's own features end to end (SYNTHETIC files in the published format): its spec
  reaches the examples, the runs and the export, whose signatures take its fields, and the
  client-side GSU over the key cache scores as the in-model GSU."""
  from twin_tf.data.feature_spec import KUAIRAND, resolve
  stdout, report = _main_job(kuairand_dir, tmp_path, "--dataset=kuairand", "--models",
                             "TwinV2", "--seeds", "0", "--gammas", "20", "--scann-sizes")
  assert "[13/13] report done" in stdout
  for noise in ("Traceback", "cuInit", "retracing", "apitools", "UserWarning"):
    assert noise not in stdout, noise  # nothing a user cannot act on
  assert report["convert"]["features"] == "kuairand"
  assert report["build-examples"]["users"] == 20
  version = pathlib.Path(report["export"]["version_dir"])
  for folder in (tmp_path, tmp_path / "examples", tmp_path / "runs" / "TwinV2-seed0",
                 version / "assets.extra"):
    assert resolve(folder) == KUAIRAND, folder
  oov = json.loads((tmp_path / "runs" / "TwinV2-seed0" / "oov.json").read_text())
  assert set(oov["test"]) == {"item_id", "tag", "upload_type"}  # author, music: hashed
  scored = report["serve-and-score"]
  assert scored["candidates"] > 0
  assert max(scored["max_abs_diff_vs_serving_default"].values()) < 1e-5
  # the report and quality.md name this data, not MovieLens
  page = (tmp_path / "report" / "report.html").read_text()
  assert "MovieLens" not in page and "MovieLens" not in (tmp_path / "quality.md").read_text()
  assert "<title>twin-tf main job report</title>" in page
  assert "kuairand" in page and "features kuairand" in (tmp_path / "quality.md").read_text()


@pytest.mark.parametrize("models, message", [
    (["Foo"], "unknown ['Foo']"),
    (["DIN", "TwinV2"], "DIN does not attend over clusters")])
def test_main_job_refuses_models_it_cannot_serve(tmp_path, models, message):
  completed = subprocess.run(
      [sys.executable, "-m", "twin_tf.cli", "main", f"--workdir={tmp_path}", "--models",
       *models], capture_output=True, text=True, check=False)
  assert completed.returncode != 0 and message in completed.stderr
