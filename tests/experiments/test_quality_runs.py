"""Finished runs are kept only while what they read is unchanged."""

import json
import os
import pathlib

from twin_tf import config as config_lib
from twin_tf.experiments import quality
from twin_tf.training import trainer


def test_a_run_older_than_its_examples_trains_again(tmp_path, monkeypatch):
  """Examples built again in the same folder (a new clustering) make a finished run stale,
  though its config is the same."""
  examples = tmp_path / "examples"
  examples.mkdir()
  shard = examples / "impressions_train-00000-of-00001.tfrecord"
  shard.write_text("first build")
  trained = []

  def fake_train(config, data, verbose):
    del data, verbose
    out = pathlib.Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config_lib.to_dict(config)))
    (out / "model.weights.h5").write_text("weights")
    trained.append(out.name)

  monkeypatch.setattr(trainer, "train", fake_train)
  arguments = (examples, tmp_path / "runs", ["TwinV2"], [0], object())
  assert quality.train_runs(*arguments)["TwinV2-seed0"] != "kept"
  assert quality.train_runs(*arguments) == {"TwinV2-seed0": "kept"}
  weights = tmp_path / "runs" / "TwinV2-seed0" / "model.weights.h5"
  later = weights.stat().st_mtime + 5
  shard.write_text("second build")
  os.utime(shard, (later, later))
  assert quality.train_runs(*arguments)["TwinV2-seed0"] != "kept"
  assert trained == ["TwinV2-seed0", "TwinV2-seed0"]
