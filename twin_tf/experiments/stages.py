"""Runs a job's stages in order: progress lines, skipping unchanged stages, naming failures.

A stage is skipped when its settings and the files it reads (size, mtime) are what they were
at its last success and the outputs it must leave exist; its recorded figures are reused.
The record is `<workdir>/stages.json`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable

from twin_tf import strict_json


@dataclasses.dataclass
class Stage:
  """Attributes:
    name: shown in progress lines and failures.
    run: does the work; returns the stage's figures (JSON-able).
    inputs: files or folders whose contents the result depends on.
    outputs: files or folders the stage must leave (a missing one forces a rerun).
    settings: what else the result depends on (flags).
    recorded_outputs: keys of the stage's figures that name paths it left (a folder whose
      name is only known once the stage ran, such as a new model version).
  """

  name: str
  run: Callable[[], dict]
  inputs: list = dataclasses.field(default_factory=list)
  outputs: list = dataclasses.field(default_factory=list)
  settings: dict = dataclasses.field(default_factory=dict)
  recorded_outputs: tuple = ()


def fingerprint(paths) -> list:
  """[path, size, mtime_ns] of every file under `paths`: what a stage's result depends on."""
  entries = []
  for path in map(pathlib.Path, paths):
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    entries += [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.exists()]
  return entries


class StageRunner:
  """Runs stages one after another; `results[name]` holds each stage's figures, `seconds[name]`
  its time (a skipped stage's from the run that made its outputs) and `reused` the stages
  skipped as unchanged, in order."""

  def __init__(self, workdir: str | pathlib.Path, total: int):
    self.workdir = pathlib.Path(workdir)
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._state_path = self.workdir / "stages.json"
    self._state = (json.loads(self._state_path.read_text())
                   if self._state_path.exists() else {})
    self.total, self.done = total, 0
    self.results: dict[str, dict] = {}
    self.seconds: dict[str, float] = {}
    self.reused: list[str] = []

  def run(self, stage: Stage) -> dict:
    """Runs (or skips) one stage; a failure raises SystemExit naming the stage and cause."""
    self.done += 1
    tag = f"[{self.done}/{self.total}] {stage.name}"
    print(f"\n{tag}", flush=True)
    start = time.time()
    # as stages.json holds it (tuples as lists, paths as strings): comparable with the record
    key = json.loads(strict_json.dumps({"settings": stage.settings,
                                        "inputs": fingerprint(stage.inputs)}, default=str))
    previous = self._state.get(stage.name, {})
    recorded = [previous.get("report", {}).get(k, "") for k in stage.recorded_outputs]
    if previous.get("fingerprint") == key and all(
        o and pathlib.Path(o).exists() for o in list(stage.outputs) + recorded):
      self.results[stage.name] = previous["report"]
      self.seconds[stage.name] = previous.get("seconds", 0.0)
      self.reused.append(stage.name)
      print(f"{tag}: unchanged since the last run, skipped", flush=True)
      return self.results[stage.name]
    try:
      result = stage.run()
    except (Exception, SystemExit) as error:  # name the stage, then stop
      raise SystemExit(f"stage {stage.name!r} failed: {type(error).__name__}: {error}"
                       ) from error
    seconds = round(time.time() - start, 1)
    self.results[stage.name], self.seconds[stage.name] = result, seconds
    self._state[stage.name] = {"fingerprint": key, "report": result, "seconds": seconds}
    self._state_path.write_text(strict_json.dumps(self._state, indent=1, default=str))
    print(f"{tag} done in {seconds:.1f} s", flush=True)
    return result
