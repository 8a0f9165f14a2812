"""What each `twin-tf` command does, for the CLI, the main job and the sweeps.

Every command takes typed arguments (config dataclasses and paths), prints what a user needs
to see, and returns its figures as a dict. The Beam pipelines run in this process through
their `run(argv)` (the local FnApiRunner, or whatever `beam_args` name), and their counters
come back from the run's result. Heavy imports happen inside, so `twin-tf --help` stays fast.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Sequence

from twin_tf import config as config_lib
from twin_tf.config import ClusteringConfig, EmbeddingConfig, TrainConfig
from twin_tf.training.processes import Processes

Path = str | pathlib.Path


DATASETS = ("movielens", "kuairand", "log")


def convert(dataset: str, data: Path, out: Path, max_users: int | None = None,
            features: str | None = None, item_features: Path | None = None) -> dict:
  """A dataset -> behavior log at `out` (format from its suffix), its FeatureSpec at
  <out folder>/feature_spec.json, malformed rows -> <out>.dead_letters.jsonl.

  Args:
    dataset: "movielens" (a MovieLens latest folder), "kuairand" (an unpacked KuaiRand
      folder) or "log" (a behavior log in the schema: Parquet, CSV or TFRecord).
    data: the folder, or the log file for "log".
    max_users: keep only the first N users (by id).
    features: for "log", the log's FeatureSpec (a preset name or a feature_spec.json; None:
      the one beside the log, else movielens).
    item_features: for "log", an optional file (Parquet, CSV or TFRecord) of item_id and the
      spec's item features; its values replace the log's.
  """
  from twin_tf.data import feature_spec, logs, schema  # pylint: disable=import-outside-toplevel
  if dataset == "movielens":
    from twin_tf.data import movielens  # pylint: disable=import-outside-toplevel
    spec, (columns, dead, _) = feature_spec.MOVIELENS, movielens.load_movielens(data)
  elif dataset == "kuairand":
    from twin_tf.data import kuairand  # pylint: disable=import-outside-toplevel
    spec, (columns, dead) = feature_spec.KUAIRAND, kuairand.load_kuairand(data)
  elif dataset == "log":
    spec = feature_spec.for_log(data, features)
    if not pathlib.Path(data).is_file():
      raise FileNotFoundError(f"{data} is not a file: expected a behavior log (Parquet, CSV "
                              "or TFRecord) in the schema of twin_tf/data/schema.py")
    columns, dead = logs.read_behavior_log(data, spec=spec)
    if item_features:
      columns, more = logs.join_item_features(columns, item_features, spec)
      dead += more
    names = spec.item_feature_names
    if len(columns[schema.ITEM_ID]) and not any(columns[n].any() for n in names):
      raise ValueError(
          f"{data}: every item feature of the feature spec {spec.name!r} ({', '.join(names)}) "
          "is 0 (unknown) on every behavior: neither the log nor an --item-features file "
          "gives them" + ("" if features else f" (no --features and no "
                          f"{feature_spec.FILE_NAME} beside the log: the {spec.name} preset)") +
          ". Name the log's own item features with --features (a preset or a "
          f"{feature_spec.FILE_NAME}), or join them with --item-features")
  else:
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
  if max_users:
    import numpy as np  # pylint: disable=import-outside-toplevel
    users = np.unique(columns[schema.USER_ID])[:max_users]
    columns = schema.take(columns, np.isin(columns[schema.USER_ID], users))
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  logs.write_behavior_log(columns, out)
  spec.save(out.parent)
  dead_path = _write_dead_letters(dead, out.with_name(out.stem + ".dead_letters.jsonl"))
  result = {"behaviors": len(columns[schema.USER_ID]), "dead_letters": len(dead),
            "features": spec.name, "output": str(out), "dead_letter_output": str(dead_path)}
  print(f"converted {dataset} {data}: {result['behaviors']:,} behaviors -> {out} (features "
        f"{spec.name}: {', '.join(spec.item_feature_names + spec.behavior_flags)}); "
        f"{len(dead)} malformed rows -> {dead_path}")
  return result


def synth(out: Path, config) -> dict:
  """A SYNTHETIC log at `out` and its feature spec beside it; the file name must say SYNTHETIC.

  config: a SynthConfig (twin_tf.data.synthetic: life-cycles of 10^3-10^5 behaviors for
  scale) or a LongTermConfig (twin_tf.data.longterm: lasting tastes, some dormant; its truth,
  the oracle click probabilities, is written beside the log, longterm.truth_path(out)).
  """
  import numpy as np  # pylint: disable=import-outside-toplevel

  from twin_tf.data import logs, longterm, schema, synthetic  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(out)
  if "SYNTHETIC" not in out.name.upper():
    raise ValueError(f"{out.name}: a synthetic log's file name must say SYNTHETIC")
  out.parent.mkdir(parents=True, exist_ok=True)
  result = {}
  if isinstance(config, longterm.LongTermConfig):
    columns, truth = longterm.longterm_log(config)
    longterm.save_truth(columns, truth, longterm.truth_path(out))
    longterm.SPEC.save(out.parent)
    result["truth"] = str(longterm.truth_path(out))
    result["dormant_share_of_shown"] = float(truth["dormant"].mean())
    result["absent_share_of_shown"] = float(longterm.absent_from_recent(
        columns[schema.USER_ID], columns[schema.TIMESTAMP], truth["nearest_taste"],
        truth["taste"]).mean())
  else:
    columns = synthetic.synthetic_log(config)
    synthetic.SPEC.save(out.parent)
  logs.write_behavior_log(columns, out)
  counts = np.bincount(columns["user_id"])
  result.update({"behaviors": int(len(columns["user_id"])), "users": int(len(counts)),
                 "largest_user": int(counts.max()), "output": str(out)})
  print(f"SYNTHETIC log: {result['behaviors']:,} behaviors of {result['users']:,} users "
        f"(largest {result['largest_user']:,}) -> {out}" +
        (f"; truth -> {result['truth']}" if "truth" in result else ""))
  return result


def embeddings(log: Path, out: Path, config: EmbeddingConfig = EmbeddingConfig(),
               cutoff: ClusteringConfig | None = None, features: str | None = None) -> dict:
  """Behavior log -> bootstrap item embeddings (.npz) and their config beside them.

  With `cutoff`, only behaviors before each user's clustering cutoff are used, so nothing
  the embeddings learned comes from an impression (None: every behavior).
  `features`: the log's FeatureSpec (preset name or feature_spec.json; None: the one beside
  the log, else movielens).
  """
  import numpy as np  # pylint: disable=import-outside-toplevel

  from twin_tf.clustering import before_cutoff  # pylint: disable=import-outside-toplevel
  from twin_tf.clustering.embeddings import bootstrap_embeddings  # pylint: disable=import-outside-toplevel
  from twin_tf.data import feature_spec, logs, schema  # pylint: disable=import-outside-toplevel
  print(config_lib.describe(config))
  columns, dead = logs.read_behavior_log(log, spec=feature_spec.for_log(log, features),
                                         keep=(schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP))
  if dead:
    dead_path = _write_dead_letters(dead, pathlib.Path(out).with_suffix(".dead_letters.jsonl"))
    print(f"{len(dead):,} malformed rows skipped -> {dead_path}", file=sys.stderr)
  if cutoff is not None:
    kept = before_cutoff(columns, cutoff)
    print(f"embeddings from the {kept.sum():,} of {len(kept):,} behaviors before each "
          "user's cutoff")
    columns = schema.take(columns, kept)
  table = bootstrap_embeddings(columns, config)
  table.save(out)
  config_lib.save(config, pathlib.Path(out).with_suffix(".config.json"))
  print(f"bootstrap embeddings: {len(table):,} items x {table.dim} -> {out}")
  return {"items": len(table), "dim": table.dim, "dead_letters": len(dead),
          "behaviors": len(columns[schema.USER_ID]),
          "users": len(np.unique(columns[schema.USER_ID])), "method": config.method}


def _write_dead_letters(dead: list[dict], path: pathlib.Path) -> pathlib.Path:
  """Dead letters as JSON lines (the pipelines' dead_letters-*.jsonl layout) at `path`."""
  path.write_text("".join(json.dumps(d, sort_keys=True) + "\n" for d in dead))
  return path


def _flags(values: dict) -> list[str]:
  return [f"--{k}={v}" for k, v in values.items() if v is not None]


def _report(pipeline: str, counters: dict) -> dict:
  print(f"{pipeline} counters: " + ", ".join(f"{k} {v:,}" for k, v in counters.items()))
  return counters


def cluster(log: Path, embeddings_path: Path, output: Path,
            config: ClusteringConfig = ClusteringConfig(),
            beam_args: Sequence[str] = (), features: str | None = None,
            previous: Path | None = None, since: int | None = None) -> dict:
  """The cluster_behaviors pipeline; returns its counters. With `previous` (an earlier run's
  output folder), users that have a record there are updated incrementally (behaviors at or
  after `since`, default each record's clustered_before, join the previous clusters)."""
  from beam_pipelines import cluster_behaviors  # pylint: disable=import-outside-toplevel
  argv = _flags({"input": log, "embeddings": embeddings_path, "output": output,
                 "features": features, "since": since,
                 "previous": previous and f"{previous}/clusters-*"})
  return _report("cluster_behaviors", cluster_behaviors.run(argv + list(beam_args), config))


def cluster_summary(clusters: Path) -> dict:
  """Compression ratio distribution of a cluster pipeline's output folder."""
  from twin_tf.clustering import records  # pylint: disable=import-outside-toplevel
  from twin_tf.clustering.summary import compression_summary, format_summary  # pylint: disable=import-outside-toplevel
  summary = compression_summary(records.read(str(pathlib.Path(clusters) / "clusters-*")))
  print(format_summary(summary))
  return summary


def build_examples(log: Path, clusters: Path, output: Path,
                   beam_args: Sequence[str] = (), num_groups: int = 5,
                   features: str | None = None, max_impressions: int | None = None) -> dict:
  """The build_examples pipeline over a cluster pipeline's output folder; its counters.
  `num_groups`: M of the behaviors' completion-group feature (the clustering's M);
  `max_impressions`: at most this many impressions per user, the most recent (None: all);
  `features`: the log's FeatureSpec (preset name or feature_spec.json; None: the one beside
  the log, else movielens). Earlier cluster snapshots in the folder (snapshots-*, clustered
  with ClusteringConfig.snapshots > 1) make the periods between them train impressions.
  `train_share` in the counters: the share of the log's behaviors that are train
  impressions."""
  from beam_pipelines import build_examples as pipeline  # pylint: disable=import-outside-toplevel
  snapshots = any(pathlib.Path(clusters).glob("snapshots-*"))
  argv = _flags({"input": log, "clusters": f"{clusters}/clusters-*", "output": output,
                 "cluster_snapshots": f"{clusters}/snapshots-*" if snapshots else None,
                 "num_groups": num_groups, "features": features,
                 "max_impressions": max_impressions})
  counters = pipeline.run(argv + list(beam_args))
  counters["train_share"] = round(counters["impressions_train"] /
                                  max(counters["behaviors_read"], 1), 4)
  return _report("build_examples", counters)


def cache_keys(model_dir: Path, examples: Path, output: Path,
               reference_time: int | None = None, scann_min_clusters: int | None = None,
               beam_args: Sequence[str] = ()) -> dict:
  """The cache_keys pipeline for one exported version; its counters."""
  from beam_pipelines import cache_keys as pipeline  # pylint: disable=import-outside-toplevel
  argv = _flags({"model_dir": model_dir, "examples": examples, "output": output,
                 "reference_time": reference_time, "scann_min_clusters": scann_min_clusters})
  return _report("cache_keys", pipeline.run(argv + list(beam_args)))


def train(config: TrainConfig, processes: Processes | None = None) -> dict:
  """One run (with `processes`: this process's part of a run in several processes, JAX);
  returns its history rounded to 5 digits."""
  from twin_tf.training.trainer import train as train_run  # pylint: disable=import-outside-toplevel
  if processes is not None:
    processes.initialize()
  history = train_run(config, verbose=1 if sys.stdout.isatty() else 2)  # one line an epoch
  return {k: [round(float(x), 5) for x in v] for k, v in history.items()}


def evaluate(config: TrainConfig, split: str = "test") -> dict:
  """AUC, GAUC, logloss (overall and per activity bucket) of a trained run on a split."""
  from twin_tf.training.trainer import evaluate as evaluate_run  # pylint: disable=import-outside-toplevel
  result = evaluate_run(config, split)
  print(f"{result['model']} on {split}: AUC {result['auc']:.4f}, GAUC "
        f"{result['gauc']:.4f}, logloss {result['logloss']:.4f}")
  for b in result["gauc_by_bucket"]:
    print(f"  users with {b['min_activity']}-{b['max_activity']} behaviors before the "
          f"cutoff: GAUC {b['gauc']:.4f} ({b['impressions']} impressions)")
  return result


def export(run_dir: Path, model_base_path: Path, version: int | None = None,
           examples: Path | None = None, warmup: int = 10, model_name: str = "twin") -> dict:
  """SavedModel version + warmup requests (every signature) from the first test impressions."""

  from twin_tf.export import requests, saved_model  # pylint: disable=import-outside-toplevel
  from twin_tf.model.vocabulary import Vocabularies  # pylint: disable=import-outside-toplevel
  from twin_tf.training.input_pipeline import load_example_data  # pylint: disable=import-outside-toplevel
  warmup_requests = []
  if examples and warmup:
    data = load_example_data(examples, Vocabularies.load(run_dir), first_test=warmup)
    warmup_requests = requests.warmup_requests(data, warmup, model_name)
  version_dir = saved_model.export_saved_model(run_dir, model_base_path, version,
                                               warmup_requests)
  written = len(saved_model.read_warmup(version_dir))  # with the esu_cached ones it derives
  print(f"exported {run_dir} -> {version_dir} ({written} warmup requests)")
  return {"version_dir": str(version_dir), "warmup_requests": written}


def serve(model_base_path: Path, model_name: str = "twin", host: str = "127.0.0.1",
          port: int = 8500, rest_port: int = 8501) -> None:
  """The DEVELOPMENT server (not TF Serving) over TF Serving's model_base_path (the folder of
  <version>/ folders), in this process, until SIGINT or SIGTERM."""
  from serving import dev_server  # pylint: disable=import-outside-toplevel
  dev_server.serve_until_signal(dev_server.DevServer(str(model_base_path), model_name, host, port,
                                                     rest_port))
