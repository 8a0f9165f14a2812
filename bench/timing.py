"""Latency of a repeated call, for the serving benchmarks."""

from __future__ import annotations

import os
import time

import numpy as np


def one_core_tensorflow():
  """Pins this process to one core and TensorFlow to one thread; returns tensorflow."""
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  return tf


def timings(call, requests: int, warmup: int = 5) -> dict:
  for _ in range(warmup):
    call()
  seconds = []
  start = time.perf_counter()
  for _ in range(requests):
    t = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - t)
  total = time.perf_counter() - start
  ms = np.array(seconds) * 1000
  return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
          "p99_ms": round(float(np.percentile(ms, 99)), 2),
          "rps": round(requests / total, 1), "requests": requests}


def in_process_timings(model_base_path, arrays: dict, requests: int) -> dict:
  """Timings of serving_default called in process on one request, the export's latest
  version; call on one pinned core."""
  import pathlib

  import tensorflow as tf
  base = pathlib.Path(model_base_path)
  version = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
  signature = tf.saved_model.load(str(version)).signatures["serving_default"]
  tensors = {k: tf.constant(v) for k, v in arrays.items()}
  return timings(lambda: signature(**tensors)["scores"].numpy(), requests)


def serving_timings(model_base_path, arrays: dict, requests: int) -> tuple[dict, dict]:
  """(in process, through the development server over gRPC) timings of serving_default on
  one request, the export's latest version; call on one pinned core."""
  import pathlib

  from serving.client import TwinClient
  from serving.dev_server import DevServer
  base = pathlib.Path(model_base_path)
  in_process = in_process_timings(base, arrays, requests)
  server = DevServer(base, base.name, workers=1)
  port, _ = server.start()
  client = TwinClient(f"127.0.0.1:{port}", model_name=base.name)
  try:
    through_grpc = timings(lambda: client.predict(arrays), requests)
  finally:
    client.close()
    server.stop()
  return in_process, through_grpc
