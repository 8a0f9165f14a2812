"""Benchmark: training throughput of TwinV2 over L clusters against Twin over the raw
behaviors those clusters cover (equal life-cycle coverage N = L x mean cluster size 10).

Batches are SYNTHETIC (random ids and features, cluster sizes 1..19 with mean 10) and built in
numpy, so the script runs on any Keras backend: TensorFlow on CPU here, JAX on the GPU machine
(which has no TensorFlow; bench/gpu/run.sh). Each point: a few warm-up steps (compilation),
then timed `train_on_batch` steps.

  python bench/train_throughput.py [--coverage 1000 10000 100000] [--batch 32] [--steps 5]
  python bench/train_throughput.py --movielens work_dir/examples   # real data, one core
      [--baseline /tmp/old]   # and the same epoch by an older checkout, back to back

Last line: {"backend", "device", "runs": [{"model", "coverage", "length", "batch",
"samples_per_s"}, ...]}
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
MEAN_CLUSTER_SIZE = 10
# The MovieLens feature spec's fields (twin_tf.data.feature_spec.MOVIELENS) and vocabulary sizes.
VOCAB_SIZES = {"item_id": 50_000, "category": 20, "year_bucket": 30}


def synthetic_batch(batch: int, length: int, clustered: bool, seed: int = 0):
  """SYNTHETIC model inputs: (inputs, labels); clustered sequences get sizes 1..19."""
  from twin_tf.data.feature_spec import MOVIELENS
  from twin_tf.model import features
  rng = np.random.default_rng(seed)
  inputs = {f"target_{f}": rng.integers(2, size, batch) for f, size in VOCAB_SIZES.items()}
  inputs.update({"target_hour": rng.integers(1, 25, batch),
                 "target_weekday": rng.integers(1, 8, batch)})
  for prefix, width in (("long", length), ("short", features.SHORT_LENGTH)):
    inputs.update({f"{prefix}_{f}": rng.integers(2, size, (batch, width))
                   for f, size in VOCAB_SIZES.items()})
    highs = features.cross_vocab(MOVIELENS)
    inputs[f"{prefix}_cross"] = np.stack([rng.integers(1, h, (batch, width)) for h in highs],
                                         axis=-1)
    sizes = rng.integers(1, 2 * MEAN_CLUSTER_SIZE, (batch, width)) if (
        clustered and prefix == "long") else np.ones((batch, width))
    inputs[f"{prefix}_size"] = sizes.astype(np.float32)
    inputs[f"{prefix}_mask"] = np.ones((batch, width), bool)
  inputs[features.DENSE] = rng.standard_normal((batch, len(features.DENSE_FEATURES)),
                                              np.float32)
  inputs = {k: (v.astype(np.int32) if v.dtype == np.int64 else v) for k, v in inputs.items()}
  return inputs, rng.integers(0, 2, batch).astype(np.float32)


def samples_per_second(model_name: str, length: int, batch: int, steps: int) -> float:
  import keras

  from twin_tf.data.feature_spec import MOVIELENS
  from twin_tf.model.ctr_model import build_model
  from twin_tf.training.optimizer import EmbeddingAdam
  model = build_model(model_name, MOVIELENS, VOCAB_SIZES)
  inputs, labels = synthetic_batch(batch, length, clustered=model_name == "TwinV2")
  model(inputs)
  model.compile(optimizer=EmbeddingAdam(1e-3), loss="binary_crossentropy",
                jit_compile=keras.backend.backend() == "jax")
  for _ in range(2):  # compile / warm up
    model.train_on_batch(inputs, labels)
  start = time.perf_counter()
  for _ in range(steps):
    loss = model.train_on_batch(inputs, labels)
  float(loss)  # wait for the device
  return batch * steps / (time.perf_counter() - start)


def movielens_epoch(examples: str, model_name: str, max_raw: int | None, path: str) -> dict:
  """One epoch over the real MovieLens train split (batch 256): samples/s and the share of
  computed long-term positions that are padding. path: "legacy" (in-memory tables, the
  former fixed buckets: the code before issue 16), "fitted" (in-memory, fitted buckets) or
  "streaming" (what training runs: group records streamed, fitted buckets)."""
  from twin_tf.model.ctr_model import PRESETS
  from twin_tf.training import streaming, trainer
  from twin_tf.training.input_pipeline import LEGACY_BUCKETS, DatasetBuilder, load_example_data
  from twin_tf.training.optimizer import EmbeddingAdam
  source, bucket_floor = PRESETS[model_name].long_term_source, trainer.min_bucket(
      PRESETS[model_name])
  if path == "streaming":
    scan = streaming.scan_records(examples)
    builder = streaming.StreamingInput(examples, source, max_raw=max_raw or 10_000,
                                       min_bucket=bucket_floor, scan=scan)
    dataset, vocabularies = builder.dataset("train", 256, shuffle=True), scan.vocabularies
    samples = int(scan.records["train"]["impressions"].sum())
  else:
    data = load_example_data(examples)
    builder = DatasetBuilder(data, source, max_raw=max_raw or 10_000,
                             buckets=LEGACY_BUCKETS if path == "legacy" else None,
                             min_bucket=bucket_floor)
    (dataset, _), vocabularies = builder.dataset("train", 256, shuffle=True), data.vocabularies
    samples = len(data.impressions["train"]["label"])
  model = trainer._built_model(model_name, vocabularies)  # pylint: disable=protected-access
  model.compile(optimizer=EmbeddingAdam(1e-3), loss="binary_crossentropy")
  start = time.perf_counter()
  model.fit(dataset, epochs=1, verbose=0, shuffle=False)
  seconds = time.perf_counter() - start
  return {"data": "MovieLens", "model": model_name,
          "length": max_raw if max_raw else "full", "input": path,
          "bucket_lengths": list(builder.buckets), "samples": samples,
          "seconds": round(seconds, 1), "samples_per_s": round(samples / seconds, 1),
          "padding_share": round(builder.padding_share("train"), 3)}


def baseline_epoch(checkout: str, examples: str) -> dict:
  """movielens_epoch of Twin at 200, legacy input, run by another checkout's code (its own
  bench/train_throughput.py, in its own process on this process's core)."""
  code = ("import json, sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/bench']; "
          "import train_throughput as bench; print(json.dumps(bench.movielens_epoch("
          "sys.argv[2], 'Twin', 200, 'legacy')))")
  done = subprocess.run([sys.executable, "-c", code, checkout, os.path.abspath(examples)],
                        capture_output=True, text=True, check=True, cwd=checkout)
  commit = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
  return {**json.loads(done.stdout.strip().splitlines()[-1]), "commit": commit}


def device_name() -> str:
  import keras
  if keras.backend.backend() == "jax":
    import jax
    return str(jax.devices()[0].device_kind)
  return "cpu"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--coverage", type=int, nargs="+", default=[1_000, 10_000, 100_000])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--twin-max-length", type=int, default=10 ** 6,
                      help="skip Twin above this raw length (memory)")
  parser.add_argument("--movielens", default=None,
                      help="instead: a build-examples folder of the real MovieLens data; one "
                      "epoch per model, length and input path (legacy, fitted, streaming)")
  parser.add_argument("--baseline", default=None,
                      help="with --movielens: a checkout of older code (git worktree add DIR "
                      "COMMIT); its Twin at 200 legacy epoch runs first, and speedup_twin_200 "
                      "is our streaming epoch over it")
  args = parser.parse_args()
  import keras
  if args.movielens:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    before = baseline_epoch(args.baseline, args.movielens) if args.baseline else None
    if before:
      print(f"MovieLens, Twin   length 200, legacy input of {before['commit']}: "
            f"{before['samples_per_s']:,.1f} samples/s", flush=True)
    runs = []
    for model_name, max_raw in (("Twin", 200), ("TwinV2", None)):
      for path in ("legacy", "fitted", "streaming"):
        runs.append(movielens_epoch(args.movielens, model_name, max_raw, path))
        r = runs[-1]
        print(f"MovieLens, {r['model']:6s} length {r['length']}, {path} input, buckets "
              f"{r['bucket_lengths']}: {r['samples_per_s']:,.1f} samples/s, padding "
              f"{r['padding_share']:.0%}", flush=True)
    runs.append(movielens_epoch(args.movielens, "Twin", None, "streaming"))
    old = before or runs[0]  # Twin at 200: the baseline checkout's legacy path, else ours
    print(json.dumps({"backend": keras.backend.backend(), "device": device_name(),
                      "threads": 1, "runs": runs, "baseline": before,
                      "speedup_twin_200": round(runs[2]["samples_per_s"] /
                                                old["samples_per_s"], 2),
                      "speedup_twin_200_over_legacy_input": round(
                          runs[2]["samples_per_s"] / runs[0]["samples_per_s"], 2)}))
    return
  runs = []
  for coverage in args.coverage:
    for model_name, length in (("TwinV2", coverage // MEAN_CLUSTER_SIZE), ("Twin", coverage)):
      if model_name == "Twin" and length > args.twin_max_length:
        continue
      rate = samples_per_second(model_name, length, args.batch, args.steps)
      runs.append({"model": model_name, "coverage": coverage, "length": length,
                   "batch": args.batch, "samples_per_s": round(rate, 1)})
      print(f"SYNTHETIC batches, {model_name:6s} coverage {coverage:>8,} behaviors, length "
            f"{length:>8,}, batch {args.batch}: {rate:,.1f} samples/s", flush=True)
  print(json.dumps({"backend": keras.backend.backend(), "device": device_name(),
                    "batches": "SYNTHETIC", "runs": runs}))


if __name__ == "__main__":
  sys.path.insert(0, str(REPO))
  main()
