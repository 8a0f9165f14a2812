"""Latency of a repeated call, for the serving benchmarks."""

from __future__ import annotations

import time

import numpy as np


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
