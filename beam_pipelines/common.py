"""Pieces every twin-tf pipeline shares: runner default, reading and validating logs."""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import io
import logging
import pathlib
import re
import shutil
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines import spill
from twin_tf.data import feature_spec, logs, schema

DEAD_LETTER = "dead_letter"
INPUT_OPTIONS = ("input", "clusters", "examples", "previous", "embeddings", "model_dir")
# Beam's default DirectRunner first downloads the Prism binary; this machine has no internet.
LOCAL_RUNNER = "FnApiRunner"
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_allocations(threshold: int = 1 << 20) -> None:
  """Has glibc's malloc map every block of `threshold` bytes or more on its own and unmap
  it when freed; for DoFns that move large column arrays (call in setup()).

  glibc's default threshold rises to the largest block freed so far (up to 32 MB); after
  that a worker's column arrays come from the heap, whose freed middle is never given back.
  Fixed at 1 MB, build_examples' peak at 10^7 behaviors fell from 3.6 to 2.8 GB. A no-op
  where the C library has no mallopt (not glibc).
  """
  try:
    ctypes.CDLL(ctypes.util.find_library("c")).mallopt(_M_MMAP_THRESHOLD, threshold)
  except (OSError, AttributeError, TypeError):
    pass


class BehaviorLogOptions(PipelineOptions):
  """Options every pipeline shares (Beam registers option names globally, so once only)."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument("--input", default=None, help="behavior log file or glob")
    parser.add_argument("--input_format", default=None, choices=logs.FORMATS,
                        help="default: from the file suffix")
    parser.add_argument("--output", default=None, help="output folder (local or gs://)")
    parser.add_argument("--features", default=None,
                        help="the log's item features and flags: a preset "
                        f"({', '.join(feature_spec.PRESETS)}) or a feature_spec.json "
                        "(default: the feature_spec.json beside --input, else movielens)")
    parser.add_argument("--user_shards", type=int, default=64,
                        help="users are grouped in this many shards (a worker holds one "
                        "shard's behaviors; the most parallel a grouping step can be)")
    parser.add_argument("--spill_dir", default=None,
                        help="a folder for the large shuffled column batches, only their "
                        "references going through the runner's shuffle (beam_pipelines/"
                        "spill.py); default: a temporary folder under --output with the local "
                        "runner, whose shuffles are held in memory; none: the runner's shuffle")


def pipeline_options(argv, options_class: type[PipelineOptions],
                     required: tuple[str, ...] = (), needs_input: bool = True
                     ) -> PipelineOptions:
  """Parses pipeline options; the runner defaults to the local FnApiRunner.

  Beam parses every registered options class on every run, so no option is declared
  required=True; `required` names the ones this pipeline needs, checked here, as is
  --user_shards (before anything is deleted or built).
  """
  options = PipelineOptions(argv)
  standard = options.view_as(StandardOptions)
  if not standard.runner:
    standard.runner = LOCAL_RUNNER
  missing = [name for name in ("input",) * needs_input + ("output",) + tuple(required)
             if getattr(options.view_as(BehaviorLogOptions), name, None) is None
             and getattr(options.view_as(options_class), name, None) is None]
  if missing:
    raise SystemExit(f"missing required options: {', '.join('--' + m for m in missing)}")
  shards = options.view_as(BehaviorLogOptions).user_shards
  if not shards >= 1:
    raise SystemExit(f"--user_shards={shards}: must be at least 1")
  return options.view_as(options_class)


BATCH_ROWS = 500_000  # behaviors per column batch that is split by key


class ColumnBatches(beam.PTransform):
  """(user_id, columns of some of that user's rows) -> batches of ~BATCH_ROWS rows' columns
  (any users), so that splitting by a key makes a few large elements, not one per user."""

  def expand(self, chunks):
    return (chunks
            | "Columns" >> beam.Values()
            | "Batch" >> beam.BatchElements(min_batch_size=BATCH_ROWS, max_batch_size=BATCH_ROWS,
                                            element_size_fn=lambda c: len(c[schema.USER_ID]))
            | "Concat" >> beam.Map(schema.concat))


class _CountingValidator(beam.DoFn):
  """A validating DoFn of one spec, counting behaviors_read and dead_letters."""

  def __init__(self, namespace: str, spec: feature_spec.FeatureSpec):
    self._spec = spec
    self._valid = beam.metrics.Metrics.counter(namespace, "behaviors_read")
    self._dead = beam.metrics.Metrics.counter(namespace, "dead_letters")


class ValidateRecord(_CountingValidator):
  """(source, raw record) -> behavior row as a tuple, or a dead letter (tag DEAD_LETTER)."""

  def process(self, element):
    source, record = element
    try:
      row = logs.validate_record(record, self._spec)
    except logs.MalformedRecord as error:
      self._dead.inc()
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, logs.dead_letter(record, error, source))
      return
    self._valid.inc()
    yield logs.row_to_tuple(row, self._spec)


class ValidateTable(_CountingValidator):
  """(source, pyarrow Table of raw records) -> (user_id, that user's valid rows as columns)
  per user, and a dead letter (tag DEAD_LETTER) per malformed row (logs.validate_table)."""

  def process(self, element):
    source, table = element
    columns, dead = logs.validate_table(table, self._spec)
    self._valid.inc(len(columns[schema.USER_ID]))
    self._dead.inc(len(dead))
    for _, record, error in dead:
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, logs.dead_letter(record, error, source))
    yield from logs.by_user(columns)


class ReadBehaviorLog(beam.PTransform):
  """Reads behavior logs (Parquet, CSV with a header, or TFRecord of tf.train.Example).

  Returns {"chunks": ..., DEAD_LETTER: ...}: (user_id, columns of some of that user's rows) in
  spec.field_names (a user's rows may come in several chunks), and the dead letters (dicts with
  source, field, reason, record). Parquet is read and validated a record batch at a time;
  CSV and TFRecord row by row, then gathered into chunks.
  """

  def __init__(self, pattern: str, fmt: str | None = None, namespace: str = "twin_tf",
               spec: feature_spec.FeatureSpec = feature_spec.MOVIELENS):
    super().__init__()
    self._pattern, self._namespace, self._spec = pattern, namespace, spec
    self._format = fmt or logs.detect_format(pattern.rstrip("*"))

  def expand(self, pbegin):
    spec = self._spec
    if self._format == "parquet":
      return (pbegin
              | "ReadParquet" >> ReadWholeFiles(self._pattern, "parquet")
              | "Validate" >> beam.ParDo(ValidateTable(self._namespace, spec)).with_outputs(
                  DEAD_LETTER, main="chunks"))  # indexable like the dict below
    if self._format == "csv":
      headers = _csv_headers(self._pattern)  # per file: files may order columns differently
      raw = (pbegin
             | "ReadLines" >> ReadWholeFiles(self._pattern, "lines", with_filename=True)
             | "ParseCsv" >> beam.Map(lambda fl, h: (fl[0], _csv_record(h[fl[0]], fl[1])),
                                      headers))
    elif self._format == "tfrecord":
      raw = (pbegin
             | "ReadTFRecord" >> ReadWholeFiles(self._pattern, "tfrecord", with_filename=True)
             | "ParseExample" >> beam.MapTuple(
                 lambda source, s: (source, logs.readable_example(s))))
    else:
      raise ValueError(f"unknown format {self._format!r}; expected one of {logs.FORMATS}")
    validated = raw | "Validate" >> beam.ParDo(
        ValidateRecord(self._namespace, spec)).with_outputs(DEAD_LETTER, main="rows")
    chunks = (validated.rows
              | "Batch" >> beam.BatchElements(min_batch_size=1_000, max_batch_size=100_000)
              | "ByUser" >> beam.FlatMap(lambda rows: logs.by_user(
                  logs.tuples_to_columns(rows, spec))))
    return {"chunks": chunks, DEAD_LETTER: validated[DEAD_LETTER]}


# Every read below is a plain DoFn over whole files (or Parquet row groups), one element
# each, spread by a Reshuffle, never a splittable read: at 10^7 behaviors, one local worker,
# clustering took 59.5 s instead of 95.6 and build_examples 246.6 s instead of 453.5
# (bench/scale.py). With two local workers, Beam's splittable Parquet read lost 27 of 501
# users before clustering; these reads kept all of them.


def _files(pattern: str) -> list[str]:
  """The files matching pattern (local or gs://), sorted; FileNotFoundError if none."""
  matches = FileSystems.match([pattern])[0].metadata_list
  if not matches:
    raise FileNotFoundError(f"no input matches {pattern}")
  return sorted(m.path for m in matches)


def _parquet_row_groups(pattern: str):
  """(path, row group index) of every row group of every Parquet file matching pattern."""
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  for path in _files(pattern):
    with FileSystems.open(path) as f:
      groups = pq.ParquetFile(f).metadata.num_row_groups
    yield from ((path, group) for group in range(groups))


class _ReadRowGroup(beam.DoFn):
  """(path, row group index) -> (path, pyarrow Table) slices of at most `rows` rows."""

  def __init__(self, rows: int = 100_000):
    self._rows = rows

  def process(self, element):
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    path, group = element
    with FileSystems.open(path) as f:
      table = pq.ParquetFile(f).read_row_group(group)
    for start in range(0, table.num_rows, self._rows):
      yield path, table.slice(start, self._rows)


class _ReadFile(beam.DoFn):
  """path -> its records: "lines" (bytes without the line end, the first line skipped: a
  CSV header) or "tfrecord" (serialized records, checked as Beam's TFRecord source checks
  them); (path, record) with_filename."""

  def __init__(self, kind: str, with_filename: bool):
    self._kind, self._with_filename = kind, with_filename

  def process(self, path):
    from apache_beam.io.tfrecordio import _TFRecordUtil  # pylint: disable=import-outside-toplevel
    with FileSystems.open(path) as f:
      if self._kind == "lines":
        records = (line.rstrip(b"\r\n") for number, line in enumerate(f) if number)
      else:
        records = iter(lambda: _TFRecordUtil.read_record(f), None)
      for record in records:
        yield (path, record) if self._with_filename else record


class ReadWholeFiles(beam.PTransform):
  """The records of every file matching a pattern, each file (a Parquet file: each row
  group) read whole by one worker. kind: _ReadFile's "lines" and "tfrecord", or "parquet":
  (path, pyarrow Table) slices (_ReadRowGroup)."""

  def __init__(self, pattern: str, kind: str, with_filename: bool = False):
    super().__init__()
    self._pattern, self._kind, self._with_filename = pattern, kind, with_filename

  def expand(self, pbegin):
    parquet = self._kind == "parquet"
    return (pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "Files" >> beam.FlatMap(_parquet_row_groups if parquet else _files)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadRowGroup() if parquet else
                                   _ReadFile(self._kind, self._with_filename)))


def _csv_headers(pattern: str) -> dict[str, list[str]]:
  """{file: its header} of every file matching the pattern."""
  headers = {}
  for path in _files(pattern):
    with FileSystems.open(path) as f:
      # utf-8-sig: a byte-order mark is not part of the first column's name
      first = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace").readline()
    headers[path] = next(csv.reader([first]), [])
  return headers


def _csv_record(header: list[str], line: bytes) -> dict:
  """Like csv.DictReader over one line (bytes that are not UTF-8 read as U+FFFD,
  which validation names): missing values are None (marked FEWER_VALUES), extra values go
  under the key None. A line with an odd number of quotes is one half of a value with an
  embedded newline: unreadable (a dead letter), never a phantom row."""
  if line.count(b'"') % 2:
    return {logs.UNREADABLE: "a quoted value spans lines (an embedded newline); the "
            "pipelines read CSV line by line: remove the newline or write Parquet"}
  values = next(csv.reader([line.decode("utf-8", errors="replace")]), [])
  record = dict(zip(header, values + [None] * (len(header) - len(values))))
  if len(values) > len(header):
    record[None] = values[len(header):]
  return logs.mark_short_row(record)


class _ProgressDoFn(beam.DoFn):
  """Counts elements; prints "<label>: done/total (pct), rate, elapsed" to stderr every few
  seconds. The rate and the elapsed time count from `started` (when the pipeline was built),
  so they include every stage before this one, not only this stage's own pace."""

  def __init__(self, label: str, every_s: float, started: float):
    self._label, self._every_s, self._start = label, every_s, started
    self._done, self._last = 0, 0.0

  def setup(self):
    self._last = time.time()

  def process(self, element, total):
    del element
    self._done += 1
    now = time.time()
    if now - self._last >= self._every_s or self._done == total:
      self._last = now
      elapsed = max(now - self._start, 1e-9)
      print(f"  {self._label}: {self._done:,}/{total:,} ({100 * self._done / max(total, 1):.0f}%)"
            f", {self._done / elapsed:,.1f}/s over {elapsed:.1f} s since the pipeline started",
            file=sys.stderr, flush=True)
    return []


class _CountDoFn(beam.DoFn):
  def __init__(self, namespace: str, name: str):
    self._counter = beam.metrics.Metrics.counter(namespace, name)

  def process(self, element):
    self._counter.inc()
    yield element


def counted(namespace: str, name: str) -> beam.ParDo:
  """A pass-through step that counts its elements into the counter `name`: what reached a
  point of the pipeline, for reconcile()."""
  return beam.ParDo(_CountDoFn(namespace, name))


class CountsDoNotReconcile(RuntimeError):
  """What a pipeline put out does not account for what it read."""


def reconcile(counts: dict[str, int], balances: tuple, namespace: str) -> None:
  """Raises CountsDoNotReconcile naming every balance that fails. balances: (left names,
  right names, what is counted); the sums of their counters must be equal (e.g. behaviors
  read = behaviors that reached clustering)."""
  gaps = []
  for left, right, what in balances:
    have, want = sum(counts[n] for n in left), sum(counts[n] for n in right)
    if have != want:
      gaps.append(f"{' + '.join(left)} = {have:,} but {' + '.join(right)} = {want:,}: "
                  f"{abs(have - want):,} {what} {'lost' if want < have else 'too many'}")
  if gaps:
    raise CountsDoNotReconcile(f"{namespace}: counts do not reconcile: " + "; ".join(gaps))


class ReportProgress(beam.PTransform):
  """A side branch that shows how many elements of `done` are through out of those in
  `total` (on a distributed runner each worker reports its own count). Outputs nothing."""

  def __init__(self, label: str, total: beam.PCollection, every_s: float = 5.0):
    super().__init__()
    self._label, self._total, self._every_s = label, total, every_s
    self._started = time.time()

  def expand(self, done):
    count = self._total | "CountTotal" >> beam.combiners.Count.Globally()
    return done | "Report" >> beam.ParDo(
        _ProgressDoFn(self._label, self._every_s, self._started),
        total=beam.pvalue.AsSingleton(count))


def run_to_completion(options: PipelineOptions, build, namespace: str,
                      names: tuple[str, ...], outputs: tuple[str, ...] = (),
                      balances: tuple = ()) -> dict[str, int]:
  """Builds a pipeline with `build(pipeline, spill folder or None)` (spill.folder_for;
  removed when the run ends), runs it, waits; returns its counters, once they reconcile by
  `balances` (reconcile(): CountsDoNotReconcile otherwise).

  `outputs`: the globs (under --output) of what the pipeline writes; what a previous run
  left there is removed first, so the folder holds this run's outputs only (a rerun with
  another shard count would otherwise leave old shards beside the new ones).
  """
  log = options.view_as(BehaviorLogOptions)
  output = log.output
  refuse_to_delete_inputs(options, output, outputs)
  clear_previous_outputs(output, outputs)
  folder = spill.folder_for(output, log.spill_dir, options.view_as(StandardOptions).runner)
  pipeline = beam.Pipeline(options=options)
  build(pipeline, folder)
  try:
    result = pipeline.run()
    result.wait_until_finish()
  except Exception as error:  # a corrupt input shard, a worker lost: name where, clean up
    _remove_temp_folders(output)
    stage = re.search(r"while running '([^']+)'", str(error))
    given = options.get_all_options()
    inputs = ", ".join(f"--{k}={given[k]}" for k in INPUT_OPTIONS if given.get(k))
    raise PipelineFailed(
        f"{namespace} failed{f' in stage {stage.group(1)}' if stage else ''} reading "
        f"{inputs}: {type(error).__name__}: {str(error)[:500]}") from error
  finally:
    spill.remove_folder(folder)
  counts = counters(result, namespace, names)
  reconcile(counts, balances, namespace)
  return counts


def _remove_temp_folders(output: str) -> None:
  """The beam-temp-* folders a failed write leaves under `output` (local or gs://)."""
  clear_previous_outputs(output, ("beam-temp-*/*",))
  if "://" not in output:  # local folders outlive their files
    for folder in pathlib.Path(output).glob("beam-temp-*"):
      shutil.rmtree(folder, ignore_errors=True)


class PipelineFailed(RuntimeError):
  """A pipeline that did not finish; the message names the pipeline and the stage."""


def _matched(patterns: list[str]) -> set[str]:
  return {m.path for result in FileSystems.match(patterns) for m in result.metadata_list}


def refuse_to_delete_inputs(options: PipelineOptions, output: str, globs: tuple[str, ...]
                            ) -> None:
  """SystemExit naming the option, before anything is deleted, when a file an input option
  reads is one of the previous outputs a run removes (e.g. --previous inside --output)."""
  doomed = _matched([f"{output.rstrip('/')}/{g}" for g in globs])
  given = options.get_all_options()
  for name in INPUT_OPTIONS:
    if given.get(name):
      pattern = str(given[name])
      read = _matched([pattern, pattern.rstrip("/") + "/*"])
      if read & doomed:
        raise SystemExit(f"--{name}={pattern} reads {len(read & doomed)} files this run would "
                         f"delete first as previous outputs of --output={output}; write to "
                         "another --output")


def clear_previous_outputs(output: str, globs: tuple[str, ...]) -> list[str]:
  """Deletes the files under `output` matching `globs` (local or gs://); returns them."""
  paths = sorted(_matched([f"{output.rstrip('/')}/{g}" for g in globs]))
  if paths:
    logging.info("removing %d outputs of a previous run under %s", len(paths), output)
    FileSystems.delete(paths)
  return paths


def counters(result, namespace: str, names: tuple[str, ...]) -> dict[str, int]:
  """Committed counters of a finished pipeline, every name in `names` present (0 if unused)."""
  query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(namespace))
  totals = dict.fromkeys(names, 0)
  for counter in query["counters"]:
    totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
  return totals
