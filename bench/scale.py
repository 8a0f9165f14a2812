"""Benchmark: a SYNTHETIC life-cycle log of >= 3x10^7 behaviors through the whole path.

  synth (U users x B behaviors, plus one user of `--largest`, written a row group at a time)
  -> embeddings (spectral)
  -> cluster (Beam, FnApiRunner, one worker; column batches spilled to files, not held in
     the runner's in-memory shuffle) -> build-examples (Beam, the same)
  -> both pipelines again with two local workers (multi_processing): workers_identical
     when their records equal one worker's; reconciled when every run's counts balance
  -> train one epoch (TwinV2, TensorFlow, CPU, streaming input) on half the users, then on
     all of them (peak RSS must not grow with the users)
  -> evaluate on the test split (streamed) -> export
  -> score the largest user (its clusters, 200 of its impressions as candidates)
     in process on one core, through the development server over gRPC, and over its cached
     keys, exact and ScaNN (bench/serving.py's CachedKeysPath).

Every stage runs in its own process; its peak RSS is the largest ru_maxrss of that process
and its children (Beam's workers). Each user's last 0.5% of behaviors are the impressions
(--cutoff-quantile), so training stays an epoch of ~10^5 impressions over full life-cycles.

  python bench/scale.py --work work_dir/scale [--users 1500 --behaviors 20000 --largest 100000]

Last line: {"behaviors", "users", "stages": [{"stage", "seconds", "peak_rss_mb",
"behaviors_per_s"}], "serving": {"clusters", "candidates", "p50_ms", "p99_ms", ...},
"workers_identical", "reconciled"}.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
BEAM_ARGS: list[str] = []  # one local worker (the workers stage runs two)
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
LOG = "SYNTHETIC_scale.parquet"


def _peak_rss_mb() -> float:
  """The largest resident set of this process and of its waited-for children, in MB."""
  return max(resource.getrusage(who).ru_maxrss for who in
             (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def stage_synth(work: pathlib.Path, args) -> dict:
  """The log, written one row group at a time (memory bounded by a group, not the log)."""
  import itertools

  from twin_tf.data import logs
  from twin_tf.data.synthetic import SPEC, SynthConfig, synthetic_users
  many = synthetic_users(SynthConfig(users=args.users, min_behaviors=args.behaviors,
                                     max_behaviors=args.behaviors, seed=0))
  largest = synthetic_users(SynthConfig(users=1, min_behaviors=args.largest,
                                        max_behaviors=args.largest, seed=1),
                            first_user=args.users)
  SPEC.save(work)
  return {**logs.write_parquet_parts(itertools.chain(many, largest), work / LOG),
          "largest_user": args.users}


def stage_embeddings(work: pathlib.Path, args) -> dict:
  """Spectral bootstrap embeddings (streamed co-occurrence, memory bounded by the items)
  from every user's behaviors before the cutoff."""
  from twin_tf import commands
  from twin_tf.config import ClusteringConfig, EmbeddingConfig
  return commands.embeddings(work / LOG, work / "embeddings.npz",
                             EmbeddingConfig(method="spectral"),
                             cutoff=ClusteringConfig(cutoff_quantile=args.cutoff_quantile))


def stage_cluster(work: pathlib.Path, args) -> dict:
  from twin_tf import commands
  from twin_tf.config import ClusteringConfig
  return commands.cluster(work / LOG, work / "embeddings.npz", work / "clusters",
                          ClusteringConfig(cutoff_quantile=args.cutoff_quantile), BEAM_ARGS)


def stage_build_examples(work: pathlib.Path, args) -> dict:
  from twin_tf import commands
  counters = commands.build_examples(work / LOG, work / "clusters", work / "examples",
                                     BEAM_ARGS)
  _write_half(work / "examples", work / "examples_half", args.users // 2)
  return counters


def stage_workers(work: pathlib.Path, args) -> dict:
  """Clusters and examples again with two local workers: are their records those of the
  one-worker stages (in any order)? Their counters, for the reconciliation."""
  from twin_tf import commands
  from twin_tf.config import ClusteringConfig
  out = work / "two_workers"
  clustered = commands.cluster(work / LOG, work / "embeddings.npz", out / "clusters",
                               ClusteringConfig(cutoff_quantile=args.cutoff_quantile),
                               TWO_WORKERS)
  built = commands.build_examples(work / LOG, out / "clusters", out / "examples", TWO_WORKERS)
  kinds = ["clusters/clusters"] + [f"examples/{kind}" for kind in (
      "users", "impressions_train", "impressions_validation", "impressions_test",
      "groups_train", "groups_validation", "groups_test")]
  return {"workers_identical": all(_contents(work / f"{kind}-*") == _contents(
      out / f"{kind}-*") for kind in kinds), "cluster": clustered, "build-examples": built}


def _contents(pattern: pathlib.Path) -> list[str]:
  """A digest of each record matching `pattern` (its decoded features), sorted."""
  import hashlib

  from twin_tf.data import tfexample
  digests = []
  for serialized in tfexample.iterate_serialized(str(pattern)):
    record = tfexample.decode(serialized)
    digests.append(hashlib.sha1(b"".join(name.encode() + record[name].tobytes()
                                         for name in sorted(record))).hexdigest())
  return sorted(digests)


def reconciled(results: dict) -> bool:
  """Whether the pipelines' counters of every stage that ran one reconcile (each pipeline
  checks its own and fails otherwise; this re-checks what the stages returned)."""
  from beam_pipelines import build_examples, cluster_behaviors, common
  balances = {"cluster": cluster_behaviors.BALANCES, "build-examples": build_examples.BALANCES}
  counters = [(results[name], balances[name]) for name in balances] + [
      (results["workers"][name], balances[name]) for name in balances]
  try:
    for counts, balance in counters:
      common.reconcile(counts, balance, "bench")
  except common.CountsDoNotReconcile:
    return False
  return True


def _write_half(folder: pathlib.Path, out: pathlib.Path, users: int) -> None:
  """The group records of the users with id < `users` (the smaller training size)."""
  import shutil

  import tensorflow as tf

  from twin_tf.clustering import records
  from twin_tf.training import examples
  out.mkdir(exist_ok=True)
  shutil.copy(folder / "feature_spec.json", out)
  for split in examples.SPLITS:
    with tf.io.TFRecordWriter(str(out / f"groups_{split}-00000-of-00001.tfrecord")) as writer:
      for path in sorted(folder.glob(f"groups_{split}-*")):
        for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
          if records.user_id(serialized) < users:
            writer.write(serialized)


def stage_train(work: pathlib.Path, args, examples: str = "examples") -> dict:
  from twin_tf.training.trainer import TrainConfig, train
  history = train(TrainConfig(examples=str(work / examples), model="TwinV2", epochs=1,
                              output_dir=str(work / f"run_{examples}")), verbose=2)
  users = args.users // 2 if examples.endswith("half") else args.users + 1
  return {"users": users, "loss": float(history["loss"][0]),
          "behaviors": users * args.behaviors + (0 if examples.endswith("half") else args.largest)}


def stage_train_half(work: pathlib.Path, args) -> dict:
  return stage_train(work, args, "examples_half")


def stage_evaluate(work: pathlib.Path, args) -> dict:
  """The trained run's test AUC and GAUC (trainer.evaluate, streamed from the group
  records)."""
  from twin_tf.training.trainer import TrainConfig, evaluate
  result = evaluate(TrainConfig(examples=str(work / "examples"), model="TwinV2",
                                output_dir=str(work / "run_examples")), "test")
  return {"users": args.users + 1, "impressions": result["impressions"],
          "auc": result["auc"], "gauc": result["gauc"]}


TRAINED = {"train-half-users": "examples_half", "train": "examples"}


def train_impressions(folder: pathlib.Path) -> int:
  """The training impressions of an examples folder (counted outside the timed stage)."""
  from twin_tf.training.streaming import scan_records
  return int(scan_records(folder).records["train"]["impressions"].sum())


def stage_export(work: pathlib.Path, args) -> dict:
  import shutil

  from twin_tf import commands
  shutil.rmtree(work / "twin", ignore_errors=True)  # a rerun's: export refuses a version twice
  return commands.export(work / "run_examples", work / "twin", version=1, warmup=0)


def largest_user_request(work: pathlib.Path, user: int, candidates: int) -> dict:
  """serving_default arrays for the largest user: its clusters, its 50 behaviors before its
  first test impression, and `candidates` of its impressions (any split) as candidates."""
  import tensorflow as tf

  from serving.client import pad_request
  from twin_tf.clustering import records
  from twin_tf.data import feature_spec, tfexample
  from twin_tf.model import features
  spec = feature_spec.load(work / "examples")
  mine = [tfexample.decode(s) for path in sorted((work / "examples").glob("groups_*-*"))
          for s in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
          if records.user_id(s) == user]  # decode only the user's own records
  record = max(mine, key=lambda r: len(r["impression_label"]))
  end = int(record["impression_history_end"][0])
  short = {f: record[f"history_{f}"][max(0, end - features.SHORT_LENGTH):end]
           for f in spec.sequence_fields}
  chosen = np.arange(candidates) % len(record["impression_label"])
  dense = record[f"impression_{features.DENSE}"].reshape(-1, len(features.DENSE_FEATURES))
  request = {"long": {**{f: record[f"cluster_{f}"] for f in spec.sequence_fields},
                      "size": record["cluster_cluster_size"]},
             "short": short,
             "candidates": {**{f: record[f"impression_{f}"][chosen]
                               for f in spec.candidate_fields},
                            features.DENSE: dense[chosen].tolist()}}
  return pad_request([request], [int(record["impression_timestamp"][0])])


def stage_score(work: pathlib.Path, args) -> dict:
  """The largest user on the exact path (in process and over gRPC) and over its cached keys,
  exact and ScaNN (bench/serving.py's CachedKeysPath: item_keys, the retriever, esu_cached)."""
  import importlib.util

  from timing import one_core_tensorflow, serving_timings, timings

  from twin_tf.data import feature_spec
  one_core_tensorflow()
  arrays = largest_user_request(work, args.users, args.candidates)
  in_process, grpc = serving_timings(work / "twin", arrays, args.requests)
  found = importlib.util.spec_from_file_location("serving_bench", REPO / "bench/serving.py")
  serving_bench = importlib.util.module_from_spec(found)
  found.loader.exec_module(serving_bench)
  cached = serving_bench.CachedKeysPath(work / "twin" / "1", arrays,
                                        feature_spec.load(work / "examples"))
  scann = {**timings(lambda: cached.score("scann"), args.requests),
           "mode": cached.retrievers["scann"].config.mode,
           "recall_at_100": round(cached.recall_at_100(), 4)}
  return {"clusters": int(arrays["long_length"][0]), "candidates": args.candidates,
          "p50_ms": in_process["p50_ms"], "p99_ms": in_process["p99_ms"],
          "dev_server_grpc": grpc,
          "cached_exact": timings(lambda: cached.score("exact"), args.requests),
          "scann": scann}


STAGES = {"synth": stage_synth, "embeddings": stage_embeddings, "cluster": stage_cluster,
          "build-examples": stage_build_examples, "workers": stage_workers,
          "train-half-users": stage_train_half,
          "train": stage_train, "evaluate": stage_evaluate, "export": stage_export,
          "score": stage_score}


def run_stage(name: str, argv: list[str]) -> dict:
  """Runs one stage in its own process (its log: <work>/<stage>.log); its result with
  seconds and peak_rss_mb."""
  start = time.time()
  log = pathlib.Path(argv[argv.index("--work") + 1] if "--work" in argv else
                     REPO / "work_dir/scale") / f"{name}.log"
  with open(log, "w") as stderr:
    completed = subprocess.run([sys.executable, __file__, "--stage", name, *argv], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=stderr, text=True, check=False)
  if completed.returncode:
    sys.exit(f"stage {name} failed (exit {completed.returncode}); see {log}")
  result = json.loads(completed.stdout.strip().splitlines()[-1])
  result["seconds"] = round(time.time() - start, 1)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--work", default=str(REPO / "work_dir/scale"))
  parser.add_argument("--users", type=int, default=1500)
  parser.add_argument("--behaviors", type=int, default=20_000)
  parser.add_argument("--largest", type=int, default=100_000)
  parser.add_argument("--cutoff-quantile", dest="cutoff_quantile", type=float, default=0.995)
  parser.add_argument("--candidates", type=int, default=200)
  parser.add_argument("--requests", type=int, default=100)
  parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
  args, _ = parser.parse_known_args()
  work = pathlib.Path(args.work)
  work.mkdir(parents=True, exist_ok=True)
  if args.stage:  # a child: run the stage, print its result and peak RSS
    result = STAGES[args.stage](work, args)
    print(json.dumps({**result, "peak_rss_mb": round(_peak_rss_mb(), 1)}, default=str))
    return
  argv = sys.argv[1:]
  stages, behaviors, users, serving, results = [], 0, 0, {}, {}
  for name in STAGES:
    result = results[name] = run_stage(name, argv)
    if name == "synth":
      behaviors, users = result["behaviors"], result["users"]
    if name == "score":
      serving = {k: v for k, v in result.items() if k not in ("seconds", "peak_rss_mb")}
    row = {"stage": name, "seconds": result["seconds"], "peak_rss_mb": result["peak_rss_mb"],
           "behaviors_per_s": round(result.get("behaviors", behaviors) / result["seconds"])}
    row.update({k: result[k] for k in ("users", "impressions", "auc", "gauc") if k in result})
    if name in TRAINED:
      row["impressions"] = train_impressions(work / TRAINED[name])
    stages.append(row)
    print(f"{name}: {row['seconds']} s, peak RSS {row['peak_rss_mb']:,.0f} MB, "
          f"{row['behaviors_per_s']:,} behaviors/s", flush=True)
  print(f"serving the largest user ({serving['clusters']:,} clusters, {args.candidates} "
        f"candidates, 1 core): in process p50 {serving['p50_ms']} ms, p99 "
        f"{serving['p99_ms']} ms; development server over gRPC p99 "
        f"{serving['dev_server_grpc']['p99_ms']} ms; exact over cached keys p99 "
        f"{serving['cached_exact']['p99_ms']} ms; ScaNN path p99 "
        f"{serving['scann']['p99_ms']} ms, recall@100 {serving['scann']['recall_at_100']}")
  identical, balanced = results["workers"]["workers_identical"], reconciled(results)
  print(f"two local workers: records identical to one worker's: {identical}; every "
        f"pipeline's counts reconcile: {balanced}")
  print(json.dumps({"data": "SYNTHETIC", "behaviors": behaviors, "users": users,
                    "stages": stages, "serving": serving, "workers_identical": identical,
                    "reconciled": balanced}))


if __name__ == "__main__":
  sys.path[:0] = [str(REPO), str(REPO / "bench")]
  main()
