"""Training in several processes (twin_tf.training.processes): two JAX processes on this
machine, coordinated over localhost, train as one process over two devices does."""

import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from twin_tf.cli import main as cli_main
from twin_tf.training.processes import Processes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("args, message", [
    (("localhost", 2, 0), "host:port"),
    (("localhost:x", 2, 0), "host:port"),
    (("localhost:1234", 0, 0), "num_processes"),
    (("localhost:1234", 2, 2), "process_id"),
    (("localhost:1234", 2, -1), "process_id"),
])
def test_bad_process_settings_are_refused_by_name(args, message):
  with pytest.raises(ValueError, match=message):
    Processes(*args)


def test_several_processes_need_a_coordinator(tmp_path):
  with pytest.raises(SystemExit, match="--coordinator"):
    cli_main(["train", "--examples", str(tmp_path), "--num-processes", "2", "--process-id",
              "1"])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train(examples, out, devices: int, extra=()) -> subprocess.Popen:
  """`twin-tf train` (JAX, TwinV2, one epoch) in a new process with `devices` CPU devices."""
  env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": "",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  return subprocess.Popen(
      [sys.executable, "-m", "twin_tf.cli", "train", "--examples", str(examples),
       "--output-dir", str(out), "--epochs", "1", "--batch-size", "64", *extra],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _weights(path) -> list[np.ndarray]:
  import h5py
  arrays = []
  with h5py.File(path) as f:
    f.visititems(lambda name, node: arrays.append((name, node[()]))
                 if isinstance(node, h5py.Dataset) else None)
  return [a for _, a in sorted(arrays, key=lambda pair: pair[0])]


def test_two_processes_train_as_one_process_over_two_devices(real_examples, tmp_path):
  """The same global batches either way (each process keeps its half of every batch), so the
  trained weights agree within float tolerance, and they differ from the initial ones."""
  examples = real_examples[0]
  one = _train(examples, tmp_path / "one", 2, ["--data-parallel"])
  coordinator = f"localhost:{_free_port()}"
  two = [_train(examples, tmp_path / "two", 1, ["--num-processes", "2", "--process-id", str(i),
                                                "--coordinator", coordinator])
         for i in range(2)]
  outputs = [process.communicate(timeout=600)[0] for process in (one, *two)]
  for process, output in zip((one, *two), outputs):
    assert process.returncode == 0, output[-3000:]
  assert "in 2 process(es)" in outputs[1]
  losses = [float(re.search(r" loss: ([0-9.]+)", output).group(1)) for output in outputs]
  np.testing.assert_allclose(losses[1:], losses[0], rtol=1e-4)  # the epoch's mean loss
  reference = _weights(tmp_path / "one" / "model.weights.h5")
  for run in (tmp_path / "two", tmp_path / "two" / "process-1"):
    trained = _weights(run / "model.weights.h5")
    assert len(trained) == len(reference)
    for got, expected in zip(trained, reference):
      np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
