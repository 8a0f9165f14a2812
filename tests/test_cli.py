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
