"""Finished runs are kept only while what they read and their preset are unchanged."""

import dataclasses
import os
import pathlib

import pytest

from twin_tf import config as config_lib
from twin_tf.experiments import quality
from twin_tf.model import ctr_model
from twin_tf.training import trainer


@pytest.fixture(name="trained")
def fixture_trained(monkeypatch):
  """The names of the runs trainer.train was called for; it writes what a run records."""
  trained = []

  def fake_train(config, data, verbose):
    del data, verbose
    out = pathlib.Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, out / "config.json")
    config_lib.save(ctr_model.PRESETS[config.model], out / trainer.MODEL_FILE)
    (out / "model.weights.h5").write_text("weights")
    trained.append(out.name)

  monkeypatch.setattr(trainer, "train", fake_train)
  return trained


def test_a_run_older_than_its_examples_trains_again(tmp_path, trained):
  """Examples built again in the same folder (a new clustering) make a finished run stale,
  though its config is the same."""
  examples = tmp_path / "examples"
  examples.mkdir()
  shard = examples / "impressions_train-00000-of-00001.tfrecord"
  shard.write_text("first build")
  arguments = (examples, tmp_path / "runs", ["TwinV2"], [0], object())
  assert quality.train_runs(*arguments)["TwinV2-seed0"] != "kept"
  assert quality.train_runs(*arguments) == {"TwinV2-seed0": "kept"}
  weights = tmp_path / "runs" / "TwinV2-seed0" / "model.weights.h5"
  later = weights.stat().st_mtime + 5
  shard.write_text("second build")
  os.utime(shard, (later, later))
  assert quality.train_runs(*arguments)["TwinV2-seed0"] != "kept"
  assert trained == ["TwinV2-seed0", "TwinV2-seed0"]


def test_a_changed_preset_trains_again(tmp_path, trained, monkeypatch):
  """A run of a preset whose ModelConfig changed since (same TrainConfig) is stale; so is a
  run from before model.json was recorded."""
  arguments = (tmp_path / "examples", tmp_path / "runs", ["DIN"], [0], object())
  (tmp_path / "examples").mkdir()
  quality.train_runs(*arguments)
  assert quality.train_runs(*arguments) == {"DIN-seed0": "kept"}
  changed = dataclasses.replace(ctr_model.PRESETS["DIN"], hidden_units=(100, 40))
  monkeypatch.setitem(ctr_model.PRESETS, "DIN", changed)
  assert quality.train_runs(*arguments)["DIN-seed0"] != "kept"
  assert quality.train_runs(*arguments) == {"DIN-seed0": "kept"}
  (tmp_path / "runs" / "DIN-seed0" / trainer.MODEL_FILE).unlink()
  assert quality.train_runs(*arguments)["DIN-seed0"] != "kept"
  assert trained == ["DIN-seed0"] * 3
