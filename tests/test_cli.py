"""The `twin-tf` command line, and the main job at a small size on the real data."""

import json
import subprocess
import sys

import pytest

from twin_tf import cli


def test_help_lists_every_command(capsys):
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  text = capsys.readouterr().out
  for command in ("main", "convert-movielens", "embeddings", "cluster", "cluster-summary",
                  "build-examples", "train", "evaluate", "experiment", "export",
                  "cache-keys", "serve"):
    assert command in text


def test_unknown_flag_is_refused():
  with pytest.raises(SystemExit):
    cli.main(["embeddings", "--input", "x", "--out", "y", "--bogus"])


def _main_job(movielens_dir, workdir, *extra):
  completed = subprocess.run(
      [sys.executable, "-m", "twin_tf.cli", "main", f"--data={movielens_dir}",
       f"--workdir={workdir}", *extra], capture_output=True, text=True, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  return completed.stdout, json.loads((workdir / "main_job.json").read_text())


def test_main_job_small(movielens_dir, tmp_path):
  """The README's main job on the first 25 real users (CI size)."""
  stdout, report = _main_job(movielens_dir, tmp_path, "--max-users=25", "--epochs=1")
  assert "[10/10] serve-and-score done" in stdout
  assert report["convert-movielens"]["dead_letters"] == 0
  summary = report["cluster-summary"]
  assert summary["users"] == 25
  assert summary["max_cluster_size"] <= 20
  assert summary["behaviors"] == report["cluster"]["behaviors"]
  assert summary["clusters"] == report["cluster"]["clusters"] < summary["behaviors"]
  examples = report["build-examples"]
  assert examples["users"] == 25 and examples["impressions_train"] > 0
  assert report["evaluate"]["impressions"] == examples["impressions_test"]
  assert 0 < report["evaluate"]["auc"] < 1
  version = tmp_path / "serving" / "twin" / "1"
  assert report["export"]["version_dir"] == str(version)
  assert (version / "saved_model.pb").exists()
  assert report["export"]["warmup_requests"] == 10
  scored = report["serve-and-score"]
  assert scored["candidates"] > 0
  for way, diff in scored["max_abs_diff_vs_serving_default"].items():
    assert diff < 1e-5, way  # client-side GSU (exact and ScaNN) = the in-model GSU
  # a rerun with nothing changed skips every stage and keeps the figures
  stdout_again, report_again = _main_job(movielens_dir, tmp_path, "--max-users=25",
                                         "--epochs=1")
  assert stdout_again.count("unchanged since the last run, skipped") == 10
  assert report_again == report


@pytest.mark.slow
def test_main_job_full(movielens_dir, tmp_path):
  _, report = _main_job(movielens_dir, tmp_path)
  assert report["cluster-summary"]["users"] == 610
  assert report["convert-movielens"]["behaviors"] == 100836


def test_failing_stage_is_named(tmp_path):
  completed = subprocess.run(
      [sys.executable, "-m", "twin_tf.cli", "main", f"--data={tmp_path / 'nowhere'}",
       f"--workdir={tmp_path / 'w'}"], capture_output=True, text=True, check=False)
  assert completed.returncode != 0
  assert "stage 'convert-movielens' failed" in completed.stderr
