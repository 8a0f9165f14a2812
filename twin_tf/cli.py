"""The `twin-tf` command line.

  twin-tf main                  the main job, end to end on the real data (see README)
  twin-tf convert               MovieLens, KuaiRand or a log -> behavior log + feature spec
  twin-tf synth                 a SYNTHETIC life-cycle log (users of 10^3-10^5 behaviors)
  twin-tf embeddings            behavior log -> bootstrap item embeddings (PPMI-SVD)
  twin-tf cluster               behavior log -> per-user clusters (Beam pipeline)
  twin-tf cluster-summary       clusters -> compression ratio distribution
  twin-tf build-examples        logs + clusters -> training examples (Beam pipeline)
  twin-tf train                 train one model (Keras fit, checkpoints, TensorBoard)
  twin-tf evaluate              AUC, GAUC, logloss of a trained run on a split
  twin-tf experiment            every model x seeds -> results/quality.json and .md
  twin-tf longterm-study        SYNTHETIC long-term logs: models, oracle, equal-cost and
                                dormancy sweeps -> results/longterm.json
  twin-tf export                a trained run -> SavedModel <model base path>/<version>/
  twin-tf serve                 the DEVELOPMENT server (not TF Serving) over a model base path
  twin-tf cache-keys            GSU key cache + ScaNN searchers of an exported version (Beam)

Run `twin-tf COMMAND --help` for each command's options.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import logging
import os
import pathlib
import sys

import twin_tf
from twin_tf import commands, strict_json
from twin_tf import config as config_lib
from twin_tf.config import EMBEDDING_METHODS, ClusteringConfig, EmbeddingConfig, TrainConfig
from twin_tf.data.longterm import LongTermConfig
from twin_tf.data.synthetic import SynthConfig
from twin_tf.experiments import main_job, quality, sweeps
from twin_tf.experiments.longterm import LongTermStudyConfig
from twin_tf.training.processes import Processes

DEFAULT_DATA = {"movielens": os.environ.get("TWIN_TF_DATA", "../shared/data/ml-latest-small"),
                "kuairand": "../shared/data/KuaiRand-1K"}
FEATURES_HELP = ("the log's item features and flags: a preset (movielens, kuairand) or a "
                 "feature_spec.json (default: the one beside the log, else movielens)")
SYNTH_OUT = {"lifecycle": "work_dir/SYNTHETIC_lifecycles.parquet",
             "long-term": "work_dir/SYNTHETIC_longterm.parquet"}
# Commands that run Beam pipelines: their unknown flags go to Beam.
PIPELINE_COMMANDS = ("main", "cluster", "build-examples", "cache-keys", "experiment")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
  """Where the behaviors come from: a public dataset's folder, or a user's own log."""
  parser.add_argument("--dataset", choices=("movielens", "kuairand"), default="movielens",
                      help="a public dataset's folder in its published layout")
  parser.add_argument("--data", default=None,
                      help="the dataset's folder (default: movielens "
                      f"{DEFAULT_DATA['movielens']} (env TWIN_TF_DATA), kuairand "
                      f"{DEFAULT_DATA['kuairand']})")
  parser.add_argument("--log", default=None,
                      help="instead of --dataset: a behavior log in the schema (Parquet, CSV "
                      "or TFRecord; twin_tf/data/schema.py)")
  parser.add_argument("--features", default=None,
                      help="with --log: its item features and flags, a preset (movielens, "
                      "kuairand) or a feature_spec.json (default: the one beside the log, "
                      "else movielens)")
  parser.add_argument("--item-features", dest="item_features", default=None,
                      help="with --log: a file of item_id and the item features, joined "
                      "onto the log")


def source(args: argparse.Namespace) -> tuple[str, str]:
  """(dataset, data) of add_source_arguments' flags."""
  if args.log:
    return "log", args.log
  if args.features or args.item_features:
    raise SystemExit("--features and --item-features describe a --log; the public datasets "
                     "have their own")
  return args.dataset, args.data or DEFAULT_DATA[args.dataset]


SNAPSHOTS_HELP = ("cluster snapshots per user, as periodic re-clustering leaves them: "
                  "the behaviors before the cutoff fall into this many equal-count periods, "
                  "and those of every period but the first become train impressions that "
                  "read the clusters built before their period (1: only the cutoff's)")


def add_main_job_arguments(parser: argparse.ArgumentParser) -> None:
  defaults = main_job.MainJobConfig()
  add_source_arguments(parser)
  parser.add_argument("--workdir", default=defaults.workdir,
                      help="outputs (default %(default)s)")
  parser.add_argument("--max-users", dest="max_users", type=int, default=None,
                      help="only the first N users")
  parser.add_argument("--gamma", type=int, default=defaults.gamma,
                      help="largest cluster (default %(default)s)")
  parser.add_argument("--cutoff-quantile", dest="cutoff_quantile", type=float,
                      default=defaults.cutoff_quantile,
                      help="cluster each user's first fraction of behaviors; the rest are "
                      "impressions (default %(default)s)")
  parser.add_argument("--cutoff", type=unix_time, default=None,
                      help="instead of --cutoff-quantile, one time for every user (unix "
                      "seconds or an ISO date such as 2024-01-01, UTC): behaviors before it "
                      "are clustered, the rest are impressions (default: none, the quantile)")
  parser.add_argument("--max-impressions", dest="max_impressions", type=int, default=None,
                      help="at most this many impressions per user after the cutoff, the "
                      "most recent (default: all)")
  parser.add_argument("--snapshots", type=int, default=defaults.snapshots,
                      help=SNAPSHOTS_HELP + " (default %(default)s)")
  add_embedding_flags(parser, defaults)
  parser.add_argument("--skip", nargs="+", default=[],
                      choices=sorted(main_job.OPTIONAL_STAGES), metavar="STAGE",
                      help="optional stages not to run, e.g. for a log of millions of "
                      "behaviors; the stages that need one are skipped with it "
                      "(default: none)")
  parser.add_argument("--models", nargs="+", default=list(defaults.models),
                      help="presets to train; the first is exported and served "
                      "(default: all six)")
  parser.add_argument("--seeds", type=int, nargs="+", default=list(defaults.seeds),
                      help="default %(default)s")
  parser.add_argument("--epochs", type=int, default=defaults.epochs,
                      help="epochs per run (default %(default)s: the models overfit after it)")
  parser.add_argument("--gammas", type=int, nargs="+", default=list(defaults.gammas),
                      help="gamma sweep (default %(default)s)")
  parser.add_argument("--scann-sizes", dest="scann_sizes", type=int, nargs="*",
                      default=list(defaults.scann_sizes),
                      help="SYNTHETIC key counts for ScaNN against exact (default %(default)s)")


def add_embedding_flags(parser: argparse.ArgumentParser, defaults) -> None:
  """--embedding-method / --embedding-window, defaulting to `defaults`' fields."""
  parser.add_argument("--embedding-method", dest="embedding_method", choices=EMBEDDING_METHODS,
                      default=defaults.embedding_method,
                      help="bootstrap item embeddings (twin-tf embeddings --method; default "
                      "%(default)s)")
  parser.add_argument("--embedding-window", dest="embedding_window", type=int,
                      default=defaults.embedding_window,
                      help="their co-occurrence window (default %(default)s)")


def unix_time(text: str) -> int:
  """Unix seconds, or an ISO-8601 date or time (UTC unless it says otherwise) -> seconds."""
  if text.lstrip("-").isdigit():
    return int(text)
  try:
    moment = datetime.datetime.fromisoformat(text)
  except ValueError as error:
    raise argparse.ArgumentTypeError(f"{text!r} is neither unix seconds nor an ISO date "
                                     "(2024-01-01, 2024-01-01T12:00)") from error
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.timezone.utc)
  return int(moment.timestamp())


def main_job_config(args: argparse.Namespace) -> main_job.MainJobConfig:
  dataset, data = source(args)
  return main_job.MainJobConfig(
      dataset=dataset, data=data, features=args.features, item_features=args.item_features,
      workdir=args.workdir, max_users=args.max_users, gamma=args.gamma,
      cutoff_quantile=args.cutoff_quantile, cutoff=args.cutoff,
      max_impressions=args.max_impressions, snapshots=args.snapshots, skip=tuple(args.skip),
      embedding_method=args.embedding_method, embedding_window=args.embedding_window,
      models=tuple(args.models),
      seeds=tuple(args.seeds), epochs=args.epochs, gammas=tuple(args.gammas),
      scann_sizes=tuple(args.scann_sizes))


def synth_config(args: argparse.Namespace):
  """The generator's config of `twin-tf synth`: its defaults, then the flags given."""
  cls = LongTermConfig if args.kind == "long-term" else SynthConfig
  long_term_only = ("dormant_tastes", "dormant_share")
  names = ("users", "min_behaviors", "max_behaviors", "seed") + (
      long_term_only if cls is LongTermConfig else ())
  for name in long_term_only:
    if cls is SynthConfig and getattr(args, name) is not None:
      raise SystemExit(f"--{name.replace('_', '-')} is a setting of --kind long-term")
  return cls(**{n: getattr(args, n) for n in names if getattr(args, n) is not None})


def _with_overrides(cls, path: str | None, args: argparse.Namespace, names: tuple[str, ...]):
  """A config from its JSON/YAML file (or the defaults), then the flags that were given."""
  values = config_lib.to_dict(config_lib.load(cls, path)) if path else {}
  values.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})
  return config_lib.from_dict(cls, values)


def train_config(args: argparse.Namespace) -> TrainConfig:
  """--config, else (evaluate) the run's own config.json, then the flags given."""
  path = args.config
  saved = pathlib.Path(args.output_dir or "") / "config.json"
  if path is None and args.command == "evaluate" and args.output_dir and saved.exists():
    path = saved  # the run knows its model, examples and settings
  return _with_overrides(TrainConfig, path, args,
                         ("examples", "output_dir", "model", "epochs", "seed", "batch_size",
                          "data_parallel", "item_embeddings"))


def processes_of(args: argparse.Namespace) -> Processes | None:
  """--num-processes, --process-id and --coordinator; None for a one-process run."""
  if args.num_processes == 1 and args.process_id == 0:
    return None
  if args.coordinator is None:
    raise SystemExit("--num-processes > 1 needs --coordinator host:port (process 0's)")
  try:
    return Processes(args.coordinator, args.num_processes, args.process_id)
  except ValueError as error:
    raise SystemExit(str(error)) from None


def cluster_config(args: argparse.Namespace) -> ClusteringConfig:
  """--config and flags; without any cutoff, the main job's (and says so) unless
  --no-cutoff asks to cluster every behavior."""
  config = _with_overrides(ClusteringConfig, args.config, args,
                           ("gamma", "cutoff_quantile", "staleness_days", "snapshots"))
  if config.cutoff_quantile is None and config.cutoff_timestamp is None and not args.no_cutoff:
    config = dataclasses.replace(config, cutoff_quantile=main_job.MainJobConfig.cutoff_quantile)
    print(f"no cutoff given: clustering each user's first {config.cutoff_quantile:.0%} of "
          "behaviors (the main job's cutoff; the rest become impressions). --no-cutoff "
          "clusters every behavior (for serving, not for training examples).", file=sys.stderr)
  return config


class OneDefaultHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Appends a flag's default to its help unless the help already says its default."""

  def _get_help_string(self, action):
    if "default" in (action.help or ""):
      return action.help
    return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="twin-tf", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  add_command = functools.partial(sub.add_parser, formatter_class=OneDefaultHelpFormatter)

  main = add_command("main", help="the main job, end to end on the real data; extra "
                       "--flags go to Beam")
  add_main_job_arguments(main)

  convert = add_command("convert", help="a dataset or log -> behavior log (validated, dead "
                        "letters beside it) + its feature_spec.json")
  add_source_arguments(convert)
  convert.add_argument("--out", required=True, help="behavior log path (.parquet/.csv/.tfrecord)")
  convert.add_argument("--max-users", type=int, default=None, help="only the first N users")

  synth = add_command("synth", help="a SYNTHETIC log: life-cycles for scale "
                      "(twin_tf/data/synthetic.py) or lasting tastes with the oracle beside "
                      "it (--kind long-term, twin_tf/data/longterm.py)")
  synth.add_argument("--kind", choices=("lifecycle", "long-term"), default="lifecycle",
                     help="the generator (default %(default)s)")
  synth.add_argument("--out", default=None,
                     help="log path; the name must say SYNTHETIC (default: lifecycle "
                     f"{SYNTH_OUT['lifecycle']}, long-term {SYNTH_OUT['long-term']})")
  synth.add_argument("--users", type=int, default=None,
                     help="users (default: lifecycle 100, long-term 1,000)")
  synth.add_argument("--min-behaviors", dest="min_behaviors", type=int, default=None,
                     help="fewest behaviors of a user (default: lifecycle 1,000, long-term 500)")
  synth.add_argument("--max-behaviors", dest="max_behaviors", type=int, default=None,
                     help="most behaviors of a user (default: lifecycle 100,000, long-term "
                     "8,000)")
  synth.add_argument("--dormant-tastes", dest="dormant_tastes", type=int, default=None,
                     help="long-term: tastes per user, beside 3-5 active ones, that fall "
                     "dormant halfway (default 1)")
  synth.add_argument("--dormant-share", dest="dormant_share", type=float, default=None,
                     help="long-term: share of the late behaviors shown from the dormant "
                     "tastes (default 0: never)")
  synth.add_argument("--seed", type=int, default=0, help="seeds everything (default 0)")

  emb = add_command("embeddings", help="bootstrap item embeddings from co-occurrence")
  emb.add_argument("--input", required=True, help="behavior log")
  emb.add_argument("--out", required=True, help=".npz output")
  emb.add_argument("--features", default=None, help=FEATURES_HELP)
  emb.add_argument("--dim", type=int, default=32, help="embedding size")
  emb.add_argument("--window", type=int, default=10,
                   help="behaviors at most this many positions apart co-occur")
  emb.add_argument("--min-count", type=int, default=2,
                   help="rarer items get no embedding (their behaviors stay singletons)")
  emb.add_argument("--seed", type=int, default=0, help="seeds the SVD")
  emb.add_argument("--method", choices=EMBEDDING_METHODS, default="ppmi-svd",
                   help="ppmi-svd: PPMI + truncated SVD, the co-occurrence matrix in memory; "
                   "spectral: streamed, memory bounded by the items (large logs)")
  emb.add_argument("--cutoff-quantile", dest="cutoff_quantile", type=float, default=None,
                   help="use only each user's first fraction of behaviors (the ones the "
                   "cluster step clusters), so the embeddings never see an impression; "
                   "default: every behavior")

  cluster = add_command(
      "cluster", help="cluster behaviors per user (Beam); extra --flags go to Beam")
  cluster.add_argument("--input", required=True, help="behavior log (file or glob)")
  cluster.add_argument("--embeddings", required=True, help="item embeddings (.npz)")
  cluster.add_argument("--output", required=True, help="output folder")
  cluster.add_argument("--features", default=None, help=FEATURES_HELP)
  cluster.add_argument("--config", default=None, help="ClusteringConfig JSON/YAML")
  cluster.add_argument("--gamma", type=int, default=None,
                       help="largest cluster (default: the config's, 20)")
  cluster.add_argument("--cutoff-quantile", type=float, default=None,
                       help="cluster each user's first fraction of behaviors (default: the "
                       "config's, else the main job's 0.5)")
  cluster.add_argument("--no-cutoff", dest="no_cutoff", action="store_true",
                       help="cluster every behavior (serving); no impressions remain")
  cluster.add_argument("--staleness-days", dest="staleness_days", type=float, default=None,
                       help="leave the last days before the cutoff out of the clusters "
                       "(default: the config's, 0)")
  cluster.add_argument("--snapshots", type=int, default=None,
                       help=SNAPSHOTS_HELP + " (default: the config's, 1)")
  cluster.add_argument("--previous", default=None,
                       help="an earlier run's output folder: update its users' clusters with "
                       "the behaviors since, instead of clustering from scratch")
  cluster.add_argument("--since", type=int, default=None,
                       help="with --previous: behaviors at or after this unix time are new "
                       "(default: each previous record's clustered_before)")

  summary = add_command("cluster-summary", help="compression ratio distribution")
  summary.add_argument("--clusters", required=True, help="the cluster pipeline's output folder")

  examples = add_command("build-examples", help="training examples (Beam); extra --flags "
                            "go to Beam")
  examples.add_argument("--input", required=True, help="behavior log")
  examples.add_argument("--clusters", required=True, help="the cluster pipeline's output folder")
  examples.add_argument("--output", required=True, help="output folder")
  examples.add_argument("--features", default=None, help=FEATURES_HELP)

  for name, text in (("train", "train one model"), ("evaluate", "evaluate a trained run")):
    command = add_command(name, help=text)
    command.add_argument("--config", default=None, help="TrainConfig JSON/YAML")
    command.add_argument("--examples", default=None, help="build-examples output folder")
    command.add_argument("--output-dir", dest="output_dir", default=None, help="run folder")
    command.add_argument("--model", default=None, help="TwinV2, Twin, SimHard, DIN, "
                         "TwinV2-no-ln-n, TwinV2-uniform")
    command.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's, 3")
    command.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                         help="default: TrainConfig's, 256")
    command.add_argument("--seed", type=int, default=None, help="default: TrainConfig's, 0")
    command.add_argument("--backend", choices=("tensorflow", "jax"), default=None,
                         help="Keras backend (default: KERAS_BACKEND, else tensorflow)")
    command.add_argument("--data-parallel", dest="data_parallel", action="store_true",
                         default=None, help="data parallel over every local device (JAX)")
    if name == "train":
      command.add_argument("--num-processes", dest="num_processes", type=int, default=1,
                           help="train data parallel in this many processes (hosts), each "
                           "started with the same flags and its own --process-id (JAX)")
      command.add_argument("--process-id", dest="process_id", type=int, default=0,
                           help="this process's id, 0 .. --num-processes - 1")
      command.add_argument("--coordinator", default=None,
                           help="host:port of process 0, reachable from every process "
                           "(needed with --num-processes > 1)")
      command.add_argument("--item-embeddings", dest="item_embeddings", default=None,
                           help="pretrained item vectors (`twin-tf embeddings`' .npz, built "
                           "before the cutoff) appended, frozen, to every item's inherent "
                           "features (default: none)")
    if name == "evaluate":
      command.add_argument("--split", default="test", choices=("train", "validation", "test"),
                           help="the split to score")

  exporter = add_command("export", help="SavedModel version for TF Serving")
  exporter.add_argument("--run-dir", dest="run_dir", required=True, help="a trained run")
  exporter.add_argument("--model-base-path", dest="model_base_path", required=True,
                        help="TF Serving's model_base_path: the model's folder, versions "
                        "inside")
  exporter.add_argument("--version", type=int, default=None, help="default: next number")
  exporter.add_argument("--examples", default=None, help="examples for warmup requests")
  exporter.add_argument("--warmup", type=int, default=10, help="warmup requests (<= 1000)")
  exporter.add_argument("--model-name", dest="model_name", default="twin",
                        help="model_spec.name of the warmup requests")

  keys = add_command("cache-keys", help="GSU key cache (Beam); extra --flags go to Beam")
  keys.add_argument("--model-dir", dest="model_dir", required=True, help="a version folder")
  keys.add_argument("--examples", required=True, help="build-examples output folder")
  keys.add_argument("--output", required=True, help="output folder")
  keys.add_argument("--reference-time", dest="reference_time", type=int, default=None,
                    help="unix time the cross features' ages refer to (default: now)")
  keys.add_argument("--scann-min-clusters", dest="scann_min_clusters", type=int, default=None,
                    help="users with more clusters get a ScaNN searcher (default 20000)")

  serve = add_command("serve", help="DEVELOPMENT server (not TF Serving): gRPC + REST")
  serve.add_argument("--model-base-path", dest="model_base_path",
                     default="work_dir/serving/twin",
                     help="TF Serving's model_base_path: the model's folder of <version>/")
  serve.add_argument("--model-name", dest="model_name", default="twin",
                     help="the model's name in requests (model_spec.name)")
  serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
  serve.add_argument("--port", type=int, default=8500, help="gRPC port (0: any free port)")
  serve.add_argument("--rest-port", dest="rest_port", type=int, default=8501,
                     help="REST port (0: any free port)")

  experiment = add_command(
      "experiment", help="the quality study on the main job's work folder: tuning, every "
      "model x seeds beside a GBDT, the sequence-budget, groups and clustering-method "
      "sweeps -> quality.json / .md and quality_report/; extra --flags go to Beam")
  experiment.add_argument("--workdir", default="work_dir",
                          help="the main job's work folder (behavior log, embeddings, "
                          "examples); runs go under it")
  experiment.add_argument("--out", default="results", help="quality.json / .md folder")
  experiment.add_argument("--models", nargs="+", default=list(quality.MODELS),
                          help="presets to train and compare")
  experiment.add_argument("--seeds", type=int, nargs="+", default=list(quality.SEEDS),
                          help="seeds of every model's runs")
  experiment.add_argument("--sweep-seeds", dest="sweep_seeds", type=int, nargs="+",
                          default=list(quality.SEEDS), help="seeds of every sweep point")
  experiment.add_argument("--budgets", type=int, nargs="*",
                          default=[b or 0 for b in sweeps.BUDGETS],
                          help="sequence budgets L (0: full); none: skip the sweep")
  experiment.add_argument("--groups", type=int, nargs="*", default=[1, 2, 5, 10],
                          help="completion groups M; none: skip the sweep")
  experiment.add_argument("--methods", nargs="*", default=list(sweeps.METHODS),
                          help="clustering methods; none: skip the sweep")
  experiment.add_argument("--staleness-days", dest="staleness_days", type=float, nargs="*",
                          default=list(sweeps.STALENESS_DAYS),
                          help="cluster staleness of the freshness sweep (plus incremental "
                          f"from {sweeps.INCREMENTAL_FROM_DAYS} days); none: skip it")
  experiment.add_argument("--epochs", type=int, default=quality.EPOCHS,
                          help="epochs per run (early stopping on validation AUC; over more "
                          "than one, a cosine learning-rate decay)")
  experiment.add_argument("--no-tuning", dest="tuning", action="store_false",
                          help="skip the grid (quality.GRID); every model at the defaults")
  experiment.add_argument("--dataset", default="MovieLens ml-latest-small",
                          help="the data's name in quality.json / .md")

  study = LongTermStudyConfig()
  long_term = add_command(
      "longterm-study", help="SYNTHETIC long-term logs, one per dormant share: the main job "
      "on each (cluster snapshots), TwinV2 against the others, the GBDT, the oracle and the "
      "item-only score with paired-bootstrap CIs, the equal-cost sweep -> longterm.json")
  long_term.add_argument("--workdir", default=study.workdir, help="logs, jobs and runs")
  long_term.add_argument("--out", default="results", help="longterm.json folder")
  long_term.add_argument("--users", type=int, default=study.users, help="users per log")
  long_term.add_argument("--max-behaviors", dest="max_behaviors", type=int,
                         default=study.max_behaviors, help="most behaviors of a user")
  long_term.add_argument("--num-items", dest="num_items", type=int, default=study.num_items,
                         help="items of each log")
  long_term.add_argument("--dormant-tastes", dest="dormant_tastes", type=int, nargs="+",
                         default=list(study.dormant_tastes),
                         help="one log per number of dormant tastes per user (the first: "
                         "the headline)")
  long_term.add_argument("--models", nargs="+", default=list(study.models),
                         help="TwinV2 first")
  long_term.add_argument("--seeds", type=int, nargs="+", default=list(study.seeds),
                         help="seeds of every model")
  long_term.add_argument("--budgets", type=int, nargs="*",
                         default=[b or 0 for b in study.budgets],
                         help="equal-cost sequence budgets L (0: full); none: skip it")
  long_term.add_argument("--gamma", type=int, default=study.gamma,
                         help="largest cluster of the main clustering (default %(default)s)")
  long_term.add_argument("--snapshots", type=int, default=study.snapshots,
                         help=SNAPSHOTS_HELP)
  add_embedding_flags(long_term, study)
  return parser


def quiet_unactionable_logs() -> None:
  """Silences what a user cannot act on: TensorFlow's C++ start-up lines (no CUDA driver, CPU
  instructions, oneDNN; set TF_CPP_MIN_LOG_LEVEL=0 to see them), its note that a function
  was traced again (once per padded length: by design), and Beam's note that optional Google
  Cloud clients are absent. Errors still arrive as Python exceptions."""
  if not twin_tf.TF_LOG_LEVEL_FROM_USER:  # the package's own default is INFO lines off
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
  logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())
  logging.getLogger("tensorflow").addFilter(
      lambda record: "triggered tf.function retracing" not in record.getMessage())


def main(argv=None) -> int:
  quiet_unactionable_logs()
  args, extra = build_parser().parse_known_args(argv)
  if extra and args.command not in PIPELINE_COMMANDS:
    build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
  if getattr(args, "backend", None):  # before anything imports keras
    os.environ["KERAS_BACKEND"] = args.backend
  handlers = {
      "main": lambda: main_job.main_job(main_job_config(args), extra),
      "convert": lambda: commands.convert(*source(args), args.out, args.max_users,
                                          args.features, args.item_features),
      "synth": lambda: commands.synth(
          args.out or SYNTH_OUT[args.kind],
          synth_config(args)),
      "embeddings": lambda: commands.embeddings(args.input, args.out, EmbeddingConfig(
          dim=args.dim, window=args.window, min_count=args.min_count, seed=args.seed,
          method=args.method),
          None if args.cutoff_quantile is None else ClusteringConfig(
              cutoff_quantile=args.cutoff_quantile), args.features),
      "cluster": lambda: commands.cluster(args.input, args.embeddings, args.output,
                                         cluster_config(args), extra, args.features,
                                         args.previous, args.since),
      "cluster-summary": lambda: commands.cluster_summary(args.clusters),
      "build-examples": lambda: commands.build_examples(args.input, args.clusters,
                                                        args.output, extra,
                                                        features=args.features),
      "cache-keys": lambda: commands.cache_keys(args.model_dir, args.examples, args.output,
                                                args.reference_time,
                                                args.scann_min_clusters, extra),
      "train": lambda: commands.train(train_config(args), processes_of(args)),
      "evaluate": lambda: commands.evaluate(train_config(args), args.split),
      "experiment": lambda: experiment(args, extra),
      "longterm-study": lambda: longterm_study(args),
      "export": lambda: commands.export(args.run_dir, args.model_base_path, args.version,
                                        args.examples, args.warmup, args.model_name),
      "serve": lambda: commands.serve(args.model_base_path, args.model_name, args.host,
                                      args.port, args.rest_port),
  }
  handlers[args.command]()
  return 0


def experiment(args: argparse.Namespace, beam_args) -> dict:
  from twin_tf.experiments.study import run_study  # pylint: disable=import-outside-toplevel
  work = pathlib.Path(args.workdir)
  summary = run_study(
      work / "behaviors.parquet", work / "item_embeddings.npz", work / "examples", work,
      args.out, models=tuple(args.models), seeds=tuple(args.seeds),
      sweep_seeds=tuple(args.sweep_seeds), budgets=tuple(b or None for b in args.budgets),
      groups=tuple(args.groups), methods=tuple(args.methods),
      staleness_days=tuple(int(d) if d == int(d) else d for d in args.staleness_days),
      grid=quality.GRID if args.tuning else (), dataset=args.dataset, beam_args=beam_args,
      epochs=args.epochs, cosine_decay=args.epochs > 1,
      item_embeddings=str(work / "item_embeddings.npz"))
  print((pathlib.Path(args.out) / "quality.md").read_text())
  return summary


def longterm_study(args: argparse.Namespace) -> dict:
  from twin_tf.experiments.longterm import run_study  # pylint: disable=import-outside-toplevel
  config = LongTermStudyConfig(
      workdir=args.workdir, users=args.users, max_behaviors=args.max_behaviors,
      num_items=args.num_items,
      dormant_tastes=tuple(args.dormant_tastes), models=tuple(args.models),
      seeds=tuple(args.seeds), budgets=tuple(b or None for b in args.budgets),
      gamma=args.gamma, snapshots=args.snapshots, embedding_method=args.embedding_method,
      embedding_window=args.embedding_window)
  summary = run_study(config, args.out)
  print(strict_json.dumps({k: summary[k] for k in ("oracle", "item_only", "models",
                                                   "twinv2_minus")}, indent=1))
  return summary


if __name__ == "__main__":
  sys.exit(main())
