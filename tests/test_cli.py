"""The `twin-tf` command line."""

import pytest

from twin_tf import cli
from twin_tf.experiments import main_job


def test_help_lists_every_command(capsys):
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  text = capsys.readouterr().out
  for command in ("main", "convert", "embeddings", "cluster", "cluster-summary",
                  "build-examples", "train", "evaluate", "experiment", "export",
                  "cache-keys", "serve"):
    assert command in text


def test_unknown_flag_is_refused():
  with pytest.raises(SystemExit):
    cli.main(["embeddings", "--input", "x", "--out", "y", "--bogus"])


def test_cluster_without_a_cutoff_uses_the_main_jobs_and_says_so(capsys):
  args, _ = cli.build_parser().parse_known_args(
      ["cluster", "--input", "l", "--embeddings", "e", "--output", "o"])
  assert cli.cluster_config(args).cutoff_quantile == 0.5
  assert "no cutoff given" in capsys.readouterr().err
  args, _ = cli.build_parser().parse_known_args(
      ["cluster", "--input", "l", "--embeddings", "e", "--output", "o", "--no-cutoff"])
  assert cli.cluster_config(args).cutoff_quantile is None


def test_evaluate_reads_the_model_from_the_run(tmp_path):
  from twin_tf import config as config_lib
  from twin_tf.config import TrainConfig
  config_lib.save(TrainConfig(model="Twin", examples="ex", output_dir=str(tmp_path)),
                  tmp_path / "config.json")
  args, _ = cli.build_parser().parse_known_args(["evaluate", "--output-dir", str(tmp_path)])
  assert (cli.train_config(args).model, cli.train_config(args).examples) == ("Twin", "ex")
  args, _ = cli.build_parser().parse_known_args(
      ["evaluate", "--output-dir", str(tmp_path), "--model", "SimHard"])
  assert cli.train_config(args).model == "SimHard"  # a flag still wins


def test_examples_without_impressions_fail_naming_the_cause(real_examples, tmp_path):
  from twin_tf import commands
  from twin_tf.config import ClusteringConfig
  folder = real_examples[0].parent
  commands.cluster(folder / "behaviors.parquet", folder / "emb.npz", tmp_path / "clusters",
                   ClusteringConfig())  # no cutoff: every behavior is clustered
  with pytest.raises(SystemExit, match="no training impressions.*without one"):
    commands.build_examples(folder / "behaviors.parquet", tmp_path / "clusters",
                            tmp_path / "examples")


def test_main_reads_a_dataset_or_a_users_own_log():
  parse = cli.build_parser().parse_known_args
  config = cli.main_job_config(parse(["main", "--dataset", "kuairand"])[0])
  assert (config.dataset, config.data) == ("kuairand", cli.DEFAULT_DATA["kuairand"])
  config = cli.main_job_config(parse(["main", "--log", "mine.csv", "--features", "x.json",
                                      "--item-features", "items.parquet"])[0])
  assert (config.dataset, config.data, config.features, config.item_features) == (
      "log", "mine.csv", "x.json", "items.parquet")
  with pytest.raises(SystemExit, match="describe a --log"):
    cli.main_job_config(parse(["main", "--features", "kuairand"])[0])


def test_main_and_the_longterm_study_take_the_embeddings_method_and_window():
  parse = cli.build_parser().parse_known_args
  config = cli.main_job_config(parse(["main", "--embedding-method", "spectral",
                                      "--embedding-window", "50"])[0])
  assert (config.embedding_method, config.embedding_window) == ("spectral", 50)
  defaults = cli.main_job_config(parse(["main"])[0])
  assert (defaults.embedding_method, defaults.embedding_window) == ("ppmi-svd", 10)
  study = parse(["longterm-study", "--embedding-method", "ppmi-svd"])[0]
  assert (study.embedding_method, study.embedding_window) == ("ppmi-svd", 50)
  with pytest.raises(SystemExit):
    parse(["main", "--embedding-method", "word2vec"])


def test_convert_reads_a_schema_log_with_the_spec_beside_it(kuairand_dir, tmp_path):
  """A KuaiRand log converted once, then read back as a user's own log: the feature spec
  written beside it travels with it, and an item-feature file replaces its features."""
  import numpy as np

  from twin_tf import commands
  from twin_tf.data import feature_spec, logs
  first = commands.convert("kuairand", kuairand_dir, tmp_path / "a" / "log.csv")
  (tmp_path / "items.csv").write_text("item_id,tag\n5,99\n")
  again = commands.convert("log", tmp_path / "a" / "log.csv", tmp_path / "b" / "log.parquet",
                           item_features=tmp_path / "items.csv")
  assert first["behaviors"] == again["behaviors"] and again["features"] == "kuairand"
  spec = feature_spec.resolve(tmp_path / "b")
  a, _ = logs.read_behavior_log(tmp_path / "a" / "log.csv", spec=spec)
  b, _ = logs.read_behavior_log(tmp_path / "b" / "log.parquet", spec=spec)
  five = a["item_id"] == 5
  assert five.any() and np.all(b["tag"][five] == 99) and np.all(b["tag"][~five] ==
                                                                   a["tag"][~five])
  np.testing.assert_array_equal(a["author_id"], b["author_id"])
  with pytest.raises(FileNotFoundError, match="not a file"):
    commands.convert("log", tmp_path, tmp_path / "c" / "log.csv")


def test_a_log_whose_item_features_are_all_unknown_is_refused(tmp_path):
  """A custom log without the spec's item features (here the default movielens preset's
  category and year_bucket) used to convert with every feature 0, silently."""
  from twin_tf import commands
  from twin_tf.data import logs
  from twin_tf.data.feature_spec import MOVIELENS
  columns = MOVIELENS.empty_columns(3)
  columns["user_id"][:], columns["item_id"][:] = 1, [5, 6, 7]
  columns["timestamp"][:] = [10, 20, 30]
  bare = {k: v for k, v in columns.items() if k not in ("category", "year_bucket")}
  logs.write_behavior_log(bare, tmp_path / "mine.csv")
  with pytest.raises(ValueError, match="every item feature .* is 0 .* the movielens preset"):
    commands.convert("log", tmp_path / "mine.csv", tmp_path / "out" / "log.parquet")
  (tmp_path / "items.csv").write_text("item_id,category\n5,3\n")
  done = commands.convert("log", tmp_path / "mine.csv", tmp_path / "out" / "log.parquet",
                          item_features=tmp_path / "items.csv")
  assert done["behaviors"] == 3


def test_every_flag_has_help():
  parser = cli.build_parser()
  commands = next(a for a in parser._actions if a.dest == "command").choices  # pylint: disable=protected-access
  for name, sub in commands.items():
    for action in sub._actions:  # pylint: disable=protected-access
      if action.dest != "help":
        assert action.help, f"twin-tf {name} {action.option_strings} has no help text"


def test_every_flag_shows_one_default_at_most():
  """`--help` of every command: no flag's help says its default twice (its own words and
  the formatter's)."""
  parser = cli.build_parser()
  commands = next(a for a in parser._actions if a.dest == "command").choices  # pylint: disable=protected-access
  for name, sub in commands.items():
    formatter = sub._get_formatter()  # pylint: disable=protected-access
    for action in sub._actions:  # pylint: disable=protected-access
      text = formatter._expand_help(action) if action.help else ""  # pylint: disable=protected-access
      assert text.count("default") <= 1, f"twin-tf {name} {action.option_strings}: {text}"


def test_embeddings_write_every_dead_letter(tmp_path, capsys):
  import json

  from twin_tf import commands
  from twin_tf.data import logs
  from twin_tf.data.feature_spec import MOVIELENS
  columns = MOVIELENS.empty_columns(30)
  columns["user_id"][:] = [i % 3 for i in range(30)]
  columns["item_id"][:] = [i % 7 for i in range(30)]
  columns["timestamp"][:] = range(30)
  logs.write_behavior_log(columns, tmp_path / "log.csv")
  with open(tmp_path / "log.csv", "a") as f:
    f.write("1,2,soon,1,5,1,0,0,0\n1,2,3,-1,5,1,0,0,0\n")
  result = commands.embeddings(tmp_path / "log.csv", tmp_path / "emb.npz")
  letters = (tmp_path / "emb.dead_letters.jsonl").read_text().splitlines()
  assert result["dead_letters"] == len(letters) == 2
  assert {json.loads(line)["field"] for line in letters} == {"timestamp", "play_time"}
  assert "2 malformed rows skipped" in capsys.readouterr().err


def test_main_takes_an_absolute_cutoff_an_impression_cap_and_stages_to_skip():
  args, _ = cli.build_parser().parse_known_args(
      ["main", "--log", "l.parquet", "--cutoff", "2024-01-01", "--max-impressions", "50",
       "--skip", "export", "gamma-sweep"])
  config = cli.main_job_config(args)
  assert (config.cutoff, config.max_impressions) == (1_704_067_200, 50)
  assert cli.unix_time("1704067200") == cli.unix_time("2024-01-01T00:00:00+00:00")
  assert main_job.skipped_stages(config.skip) == {
      "export", "cache-keys", "serve-and-score", "retrieval", "gamma-sweep"}
  with pytest.raises(SystemExit):
    cli.build_parser().parse_known_args(["main", "--cutoff", "last tuesday"])
  with pytest.raises(SystemExit, match="cannot be skipped"):
    main_job.skipped_stages(("train",))
