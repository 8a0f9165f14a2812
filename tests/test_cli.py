"""The `twin-tf` command line."""

import pytest

from twin_tf import cli


def test_help_lists_every_command(capsys):
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  text = capsys.readouterr().out
  for command in ("main", "convert-movielens", "embeddings", "cluster", "cluster-summary",
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
