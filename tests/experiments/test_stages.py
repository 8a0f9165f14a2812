"""The stage runner: skips what is unchanged, reruns what changed, names what failed."""

import pytest

from twin_tf.experiments.stages import Stage, StageRunner


def _stage(calls, tmp_path, settings=None, name="make", fail=False, declared=True):
  source, output = tmp_path / "in.txt", tmp_path / "out.txt"

  def run():
    if fail:
      raise ValueError("bad input")
    calls.append(name)
    output.write_text(source.read_text().upper())
    return {"length": len(source.read_text()), "path": str(output)}
  # declared=False: the output is known only from the figures ("path"), like a new version
  return Stage(name, run, [source], [output] if declared else [], settings or {},
               recorded_outputs=("path",))


def test_unchanged_stage_is_skipped_with_its_figures(tmp_path, capsys):
  (tmp_path / "in.txt").write_text("abc")
  calls = []
  first = StageRunner(tmp_path, 1).run(_stage(calls, tmp_path))
  again = StageRunner(tmp_path, 1).run(_stage(calls, tmp_path))
  assert calls == ["make"] and again == first == {"length": 3, "path": str(tmp_path / "out.txt")}
  assert "[1/1] make: unchanged since the last run, skipped" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["input", "settings", "output", "recorded output"])
def test_a_change_reruns_the_stage(tmp_path, change):
  (tmp_path / "in.txt").write_text("abc")
  calls = []
  StageRunner(tmp_path, 1).run(_stage(calls, tmp_path, declared=change != "recorded output"))
  settings = {}
  if change == "input":
    (tmp_path / "in.txt").write_text("abcd")
  elif change == "settings":
    settings = {"gamma": 5}
  else:  # the stage's output (or the path its figures name) is gone
    (tmp_path / "out.txt").unlink()
  result = StageRunner(tmp_path, 1).run(
      _stage(calls, tmp_path, settings, declared=change != "recorded output"))
  assert calls == ["make", "make"]
  assert result["length"] == (4 if change == "input" else 3)


def test_settings_compare_as_recorded(tmp_path):
  """Settings with tuples and paths (written to stages.json as lists and strings) still match
  their record: the stage is skipped."""
  (tmp_path / "in.txt").write_text("abc")
  calls = []
  settings = {"hidden_units": (200, 80), "log": tmp_path / "in.txt"}
  StageRunner(tmp_path, 1).run(_stage(calls, tmp_path, settings))
  StageRunner(tmp_path, 1).run(_stage(calls, tmp_path, dict(settings)))
  assert calls == ["make"]


def test_failure_names_the_stage_and_cause(tmp_path):
  (tmp_path / "in.txt").write_text("abc")
  with pytest.raises(SystemExit, match="stage 'cluster' failed: ValueError: bad input"):
    StageRunner(tmp_path, 1).run(_stage([], tmp_path, name="cluster", fail=True))


def test_runner_lists_the_stages_it_reused(tmp_path):
  """A skipped stage keeps the seconds of the run that made it and is listed as reused, so a
  report can tell what ran now from what an earlier run did."""
  (tmp_path / "in.txt").write_text("abc")
  calls = []
  first = StageRunner(tmp_path, 2)
  first.run(_stage(calls, tmp_path))
  assert first.reused == []
  again = StageRunner(tmp_path, 2)
  again.run(_stage(calls, tmp_path))
  (tmp_path / "in.txt").write_text("abcd")
  again.run(_stage(calls, tmp_path, name="other"))
  assert again.reused == ["make"] and calls == ["make", "other"]
  assert again.seconds["make"] == first.seconds["make"]
