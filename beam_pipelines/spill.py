"""Large shuffled values through files: only references go through the runner's shuffle.

The local runner (FnApiRunner) holds a whole shuffle in memory, decoded and then re-encoded,
so a pipeline's peak grows with the log (build_examples: ~250 bytes a behavior, 2.7 GB at
10^7). `Spill` writes each (key, value)'s value to a file of its bundle as it comes and
passes on (key, Spilled(path, offset, length)); after the grouping, `load` reads a key's
values back. The local runner then holds only references, and a worker one group.

A retried bundle writes a new file (its own name), so its references never point at a
half-written one; the folder is removed when the pipeline ends (remove_folder).
"""

from __future__ import annotations

import pickle
import typing
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


class Spilled(typing.NamedTuple):
  """Where one value lies: its file, byte offset and length."""

  path: str
  offset: int
  length: int


class Spill(beam.DoFn):
  """(key, value) -> (key, Spilled): the value pickled into this bundle's file in `folder`."""

  def __init__(self, folder: str):
    self._folder = folder.rstrip("/")

  def start_bundle(self):
    self._path, self._file, self._offset = None, None, 0

  def process(self, element):
    key, value = element
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if self._file is None:
      self._path = f"{self._folder}/{uuid.uuid4().hex}.pickles"
      self._file = FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED)
    self._file.write(data)
    yield key, Spilled(self._path, self._offset, len(data))
    self._offset += len(data)

  def finish_bundle(self):
    if self._file is not None:
      self._file.close()


def spilled(pcoll, folder: str | None, label: str = "Spill"):
  """`pcoll` of (key, value) with its values spilled to `folder`; unchanged for None."""
  return pcoll if folder is None else pcoll | label >> beam.ParDo(Spill(folder))


def load(values) -> list:
  """Grouped values, each Spilled one read back from its file (the others as they are)."""
  values = list(values)
  by_path: dict[str, list[int]] = {}
  for i, value in enumerate(values):
    if isinstance(value, Spilled):
      by_path.setdefault(value.path, []).append(i)
  for path, indexes in by_path.items():
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      for i in sorted(indexes, key=lambda i: values[i].offset):
        f.seek(values[i].offset)
        data = f.read(values[i].length)
        if len(data) != values[i].length:
          raise IOError(f"{path}: {len(data)} bytes at {values[i].offset}, expected "
                        f"{values[i].length} (a spill file cut short)")
        values[i] = pickle.loads(data)
  return values


def folder_for(output: str, spill_dir: str | None, runner: str | None) -> str | None:
  """Where a run spills: --spill_dir, else a new folder under --output with a local runner
  (whose shuffles live in memory); None ("none", or another runner: its own shuffle)."""
  if spill_dir == "none":
    return None
  local = runner in (None, "FnApiRunner", "DirectRunner", "BundleBasedDirectRunner")
  if spill_dir is None and not local:
    return None
  return f"{(spill_dir or output).rstrip('/')}/spill-{uuid.uuid4().hex[:12]}"


def remove_folder(folder: str | None) -> None:
  """Deletes a run's spill folder and its files (local or gs://)."""
  if folder is None:
    return
  if FileSystems.exists(folder):
    FileSystems.delete([folder + "/" if "://" in folder else folder])  # gs://: the prefix
