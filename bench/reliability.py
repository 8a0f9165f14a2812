"""Benchmark: 8 concurrent clients against the development server through two version swaps.

Setup (under --workdir, reused when present): the first 60 real MovieLens users -> behavior
log -> embeddings -> clusters -> examples -> two TwinV2 runs (seeds 0 and 1, one epoch) ->
version 1 exported into the model base path, versions 2 and 3 exported beside it (each with
warmup requests for every signature). The server (`python -m serving.dev_server`, its own
process, as TF Serving would be) serves the base path. Then 4 gRPC and 4 REST clients send
one-user requests (real test impressions) for --seconds with a 1 s deadline each, no
retries (which version answered is read from the gRPC responses); at 1/3 and 2/3 of the run
a new version is published by renaming it into the base path (atomic, as `twin-tf export`
publishes). A request "during a swap" started within --swap-window seconds after a publish;
the rest are "steady". A failure is an error or an answer after the deadline.

`max_gap_ms` is the longest time in which no request completed (a server-wide stall shows
there); `server_pauses` lists the server's garbage collections over 50 ms (its log). Then
bench/fuzz.py sends --fuzz-cases generated malformed requests over gRPC and REST to the same
server and counts the answers (`fuzz`: a server-side error is gRPC UNKNOWN / INTERNAL or an
HTTP 5xx).

  python bench/reliability.py [--seconds 180] [--fuzz-cases 10000] [--workdir work_dir/reliability]

Last line: {"seconds", "clients", "requests", "failed", "p99_ms_steady", "p99_ms_during_swap",
"deadline_ms", "p50_ms_steady", "max_gap_ms", "by_protocol", "versions_answered", "failures",
"server_pauses", "fuzz"}
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEADLINE_S = 1.0
CLIENTS = 8  # half gRPC, half REST


def prepare(work: pathlib.Path, data_dir: str) -> tuple[pathlib.Path, list[pathlib.Path]]:
  """(examples folder, [version 2, version 3] staged outside the base path)."""
  from twin_tf import commands
  from twin_tf.config import ClusteringConfig, TrainConfig
  from twin_tf.export import requests, saved_model
  from twin_tf.training.input_pipeline import load_example_data
  from twin_tf.training.trainer import train
  log, examples = work / "behaviors.parquet", work / "examples"
  if not examples.exists():
    clustering = ClusteringConfig(cutoff_quantile=0.5)
    commands.convert("movielens", data_dir, log, max_users=60)
    commands.embeddings(log, work / "emb.npz", cutoff=clustering)
    commands.cluster(log, work / "emb.npz", work / "clusters", clustering)
    commands.build_examples(log, work / "clusters", examples)
  data = load_example_data(examples)
  runs = []
  for seed in (0, 1):
    config = TrainConfig(examples=str(examples), output_dir=str(work / f"run{seed}"),
                         epochs=1, seed=seed)
    if not (work / f"run{seed}" / "model.weights.h5").exists():
      train(config, data, verbose=0)
    runs.append(config.output_dir)
  base, staged = work / "serving" / "twin", work / "staged"
  for folder in (base, staged):
    if folder.exists():
      shutil.rmtree(folder)
  warmup = requests.warmup_requests(data, 5, "twin")
  saved_model.export_saved_model(runs[0], base, 1, warmup)
  versions = [saved_model.export_saved_model(runs[1], staged, 2, warmup),
              saved_model.export_saved_model(runs[0], staged, 3, warmup)]
  return examples, versions


def start_server(base: pathlib.Path) -> tuple[subprocess.Popen, int, int, list]:
  """(process, gRPC port, REST port, its log lines as (time.perf_counter(), line), filled as
  they come: the pipe is drained, so a chatty server never blocks on it)."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  process = subprocess.Popen(
      [sys.executable, "-m", "serving.dev_server", f"--model_base_path={base}", "--port=0",
       "--rest_port=0", "--poll_seconds=0.5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True, cwd=REPO, env=env)
  lines = []
  for line in process.stdout:
    found = re.search(r"gRPC [\d.]+:(\d+), REST http://[\d.]+:(\d+)", line)
    if found:
      def drain():
        for later in process.stdout:
          lines.append((time.perf_counter(), later.rstrip()))
      threading.Thread(target=drain, daemon=True).start()
      return process, int(found.group(1)), int(found.group(2)), lines
    lines.append((time.perf_counter(), line.rstrip()))
  raise RuntimeError("the server did not start: " + "\n".join(l for _, l in lines[-20:]))


def load(grpc_port: int, rest_port: int, request_arrays: list[dict], seconds: float,
         publish) -> list[dict]:
  """8 clients for `seconds`; `publish(i)` is called at 1/3 and 2/3 of the run."""
  from serving.client import ServingError, TwinClient
  results, lock, start = [], threading.Lock(), time.perf_counter()
  stop = threading.Event()

  def client(protocol: str, offset: int):
    api = TwinClient(f"127.0.0.1:{grpc_port}", timeout=DEADLINE_S, retries=0,
                     rest_url=f"http://127.0.0.1:{rest_port}")
    call = api.predict_with_version if protocol == "grpc" else (
        lambda arrays: (api.predict_rest(arrays), None))
    i = offset
    while not stop.is_set():
      arrays = request_arrays[i % len(request_arrays)]
      began = time.perf_counter()
      try:
        _, version = call(arrays)
        error = None
      except (ServingError, OSError) as failure:
        version, error = None, f"{type(failure).__name__}: {failure}"[:200]
      ended = time.perf_counter()
      with lock:
        results.append({"protocol": protocol, "start": began - start,
                        "ms": 1000 * (ended - began), "version": version, "error": error,
                        "late": ended - began > DEADLINE_S})
      i += 1
    api.close()

  threads = [threading.Thread(target=client, args=(p, k))
             for k, p in enumerate(["grpc"] * (CLIENTS // 2) + ["rest"] * (CLIENTS // 2))]
  for thread in threads:
    thread.start()
  for i, at in enumerate((seconds / 3, 2 * seconds / 3)):
    time.sleep(max(0.0, start + at - time.perf_counter()))
    publish(i, time.perf_counter() - start)
  time.sleep(max(0.0, start + seconds - time.perf_counter()))
  stop.set()
  for thread in threads:
    thread.join()
  return results


def max_gap_ms(results: list[dict]) -> float:
  """The longest time between two consecutive request completions."""
  ends = np.sort([r["start"] + r["ms"] / 1000 for r in results])
  return round(float(np.max(np.diff(ends))) * 1000, 1) if len(ends) > 1 else 0.0


def summarize(results: list[dict], publishes: list[float], window: float) -> dict:
  during = [any(0 <= r["start"] - t <= window for t in publishes) for r in results]
  failed = [r for r in results if r["error"] or r["late"]]
  steady = np.array([r["ms"] for r, d in zip(results, during) if not d])
  swap = np.array([r["ms"] for r, d in zip(results, during) if d])
  versions = {}
  for r in results:
    if r["version"]:
      versions[str(r["version"])] = versions.get(str(r["version"]), 0) + 1
  return {"requests": len(results), "failed": len(failed),
          "p99_ms_steady": round(float(np.percentile(steady, 99)), 1),
          "p99_ms_during_swap": round(float(np.percentile(swap, 99)), 1) if len(swap) else None,
          "deadline_ms": int(DEADLINE_S * 1000),
          "p50_ms_steady": round(float(np.percentile(steady, 50)), 1),
          "max_gap_ms": max_gap_ms(results),
          "requests_during_swap": int(sum(during)),
          "by_protocol": {p: sum(r["protocol"] == p for r in results) for p in ("grpc", "rest")},
          "versions_answered": versions,
          "failures": sorted({r["error"] or "over the deadline" for r in failed})[:5]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seconds", type=float, default=180.0)
  parser.add_argument("--fuzz-cases", dest="fuzz_cases", type=int, default=10_000)
  parser.add_argument("--swap-window", dest="swap_window", type=float, default=5.0)
  parser.add_argument("--workdir", default=str(REPO / "work_dir" / "reliability"))
  parser.add_argument("--data", default=str(REPO.parent / "shared/data/ml-latest-small"))
  args = parser.parse_args()
  import fuzz  # bench/fuzz.py

  from twin_tf.export import requests
  from twin_tf.training.input_pipeline import load_example_data
  work = pathlib.Path(args.workdir)
  work.mkdir(parents=True, exist_ok=True)
  examples, staged = prepare(work, args.data)
  data = load_example_data(examples)
  request_arrays = [requests.impression_requests(data, np.array([i]))[0] for i in range(50)]
  base = work / "serving" / "twin"
  process, grpc_port, rest_port, log = start_server(base)
  publishes = []

  def publish(i: int, at: float):
    os.rename(staged[i], base / staged[i].name)  # atomic, as the exporter's own rename
    publishes.append(at)
    print(f"published version {staged[i].name} at {at:.1f} s", flush=True)

  try:
    began = time.perf_counter()
    results = load(grpc_port, rest_port, request_arrays, args.seconds, publish)
    pauses = [f"at {at - began:.1f} s: garbage collection{line.split('garbage collection')[-1]}"
              for at, line in log if "paused the server" in line]
    fuzzed = fuzz.run_fuzz("127.0.0.1", grpc_port, rest_port, request_arrays[0],
                           args.fuzz_cases)
  finally:
    process.terminate()
    process.wait(timeout=30)
  summary = {"seconds": args.seconds, "clients": CLIENTS,
             **summarize(results, publishes, args.swap_window), "server_pauses": pauses,
             "fuzz": fuzzed}
  print(f"{summary['requests']:,} requests, {summary['failed']} failed (deadline "
        f"{summary['deadline_ms']} ms); p99 steady {summary['p99_ms_steady']} ms, during the "
        f"swaps {summary['p99_ms_during_swap']} ms; longest gap between completions "
        f"{summary['max_gap_ms']} ms; answered by version {summary['versions_answered']}; "
        f"server pauses over 50 ms: {pauses or 'none'}")
  print(f"fuzz: {fuzzed['cases']:,} generated requests, {fuzzed['unknown']} gRPC UNKNOWN / "
        f"INTERNAL, {fuzzed['http_500']} HTTP 5xx, {fuzzed['no_answer']} unanswered; gRPC "
        f"{fuzzed['grpc']}, REST {fuzzed['rest']}")
  print(json.dumps(summary))


if __name__ == "__main__":
  sys.path[:0] = [str(REPO), str(REPO / "bench")]
  main()
