"""Reading and validating behavior logs (Parquet, CSV, TFRecord of tf.train.Example).

Every record passes `validate_record`, which returns a clean behavior row or raises
`MalformedRecord` naming the field and the reason. Readers never drop a row silently: a
malformed row becomes a dead letter (`dead_letter`), carrying the reason and the row itself,
and the caller counts them. The same function serves the Beam pipelines and the library.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import pathlib
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from twin_tf.data import schema, tfexample

FORMATS = ("parquet", "csv", "tfrecord")
# Optional fields and their default when absent (0 = unknown category / not tagged).
OPTIONAL_DEFAULTS = {schema.CATEGORY: 0, schema.YEAR_BUCKET: 0, schema.TAGGED: 0}


class MalformedRecord(ValueError):
  """A behavior record that cannot be used; `field` names the culprit."""

  def __init__(self, field: str, reason: str):
    super().__init__(f"field {field!r}: {reason}")
    self.field, self.reason = field, reason


def validate_record(record: Mapping[str, Any]) -> dict[str, Any]:
  """One raw record (strings or numbers) -> a behavior row of schema types.

  Raises:
    MalformedRecord: a required field is missing or empty; an id is not a non-negative
      integer; a timestamp is neither unix seconds nor ISO-8601; play time or duration is
      negative, NaN or infinite; a label is not 0/1; a value has the wrong type.
  """
  if None in record:  # csv.DictReader's place for values beyond the header
    raise MalformedRecord("row", f"{len(record[None])} more values than columns")
  row = {}
  for field in schema.BEHAVIOR_FIELDS:
    value = record.get(field.name)
    if _is_missing(value):
      if field.name not in OPTIONAL_DEFAULTS:
        raise MalformedRecord(field.name, "missing")
      value = OPTIONAL_DEFAULTS[field.name]
    if field.name == schema.TIMESTAMP:
      row[field.name] = _timestamp(value)
    elif field.dtype == np.float32:
      row[field.name] = _non_negative_float(field.name, value)
    else:
      row[field.name] = _non_negative_int(field.name, value)
  if row[schema.LABEL] not in (0, 1):
    raise MalformedRecord(schema.LABEL, f"must be 0 or 1, got {row[schema.LABEL]}")
  if row[schema.TAGGED] not in (0, 1):
    raise MalformedRecord(schema.TAGGED, f"must be 0 or 1, got {row[schema.TAGGED]}")
  return row


def _is_missing(value) -> bool:
  if value is None:
    return True
  if isinstance(value, (str, bytes)) and not value.strip():
    return True
  return isinstance(value, (list, tuple)) and not value


def _scalar(name: str, value):
  if isinstance(value, (list, tuple, np.ndarray)):
    if len(value) != 1:
      raise MalformedRecord(name, f"expected one value, got {len(value)}")
    value = value[0]
  return value.decode() if isinstance(value, bytes) else value


def _non_negative_int(name: str, value) -> int:
  value = _scalar(name, value)
  if isinstance(value, bool):
    raise MalformedRecord(name, f"wrong type bool: {value!r}")
  try:
    if isinstance(value, str):
      value = value.strip()
      number = int(value) if value.lstrip("-").isdigit() else float(value)
    else:
      number = value
    if isinstance(number, (float, np.floating)):
      if not math.isfinite(number) or number != int(number):
        raise ValueError
    number = int(number)
  except (TypeError, ValueError):
    raise MalformedRecord(name, f"not an integer: {value!r}") from None
  if number < 0:
    raise MalformedRecord(name, f"negative: {number}")
  return number


def _non_negative_float(name: str, value) -> float:
  value = _scalar(name, value)
  try:
    number = float(value)
  except (TypeError, ValueError):
    raise MalformedRecord(name, f"not a number: {value!r}") from None
  if isinstance(value, bool) or not math.isfinite(number):
    raise MalformedRecord(name, f"not a finite number: {value!r}")
  if number < 0:
    raise MalformedRecord(name, f"negative: {number}")
  return number


def _timestamp(value) -> int:
  value = _scalar(schema.TIMESTAMP, value)
  if isinstance(value, str):
    try:
      return _non_negative_int(schema.TIMESTAMP, value)
    except MalformedRecord:
      pass
    try:
      parsed = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
      raise MalformedRecord(schema.TIMESTAMP, f"unparsable: {value!r}") from None
    if parsed.tzinfo is None:
      parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return int(parsed.timestamp())
  if isinstance(value, datetime.datetime):
    return int(value.timestamp())
  return _non_negative_int(schema.TIMESTAMP, value)


def dead_letter(record: Mapping[str, Any], error: MalformedRecord, source: str) -> dict:
  """The dead-letter entry of a malformed record: where, which field, why, and the row."""
  return {"source": source, "field": error.field, "reason": error.reason,
          "record": json.dumps({str(k): _jsonable(v) for k, v in record.items()},
                               sort_keys=True)}


def _jsonable(value):
  if isinstance(value, bytes):
    return value.decode(errors="replace")
  if isinstance(value, (list, tuple, np.ndarray)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.generic,)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  if isinstance(value, (int, float, str)) or value is None:
    return value
  return str(value)


def rows_to_columns(rows: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
  """Validated rows (dicts) -> one array per schema field, consuming `rows` once."""
  return tuples_to_columns(tuple(row[n] for n in schema.FIELD_NAMES) for row in rows)


def row_to_tuple(row: Mapping[str, Any]) -> tuple:
  """A validated row as a tuple in schema.FIELD_NAMES order (compact for shuffles)."""
  return tuple(row[n] for n in schema.FIELD_NAMES)


def tuples_to_columns(rows: Iterable[tuple]) -> dict[str, np.ndarray]:
  """Rows as tuples in schema.FIELD_NAMES order -> columns; one pass, transposed in C."""
  fields = list(zip(*rows))
  if not fields:
    return schema.empty_columns()
  return {f.name: np.asarray(values, dtype=f.dtype)
          for f, values in zip(schema.BEHAVIOR_FIELDS, fields)}


def columns_to_rows(columns: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
  names = list(columns)
  for values in zip(*(columns[n].tolist() for n in names)):
    yield dict(zip(names, values))


# ---------------------------------------------------------------------------- formats


def detect_format(path: str | pathlib.Path) -> str:
  suffix = pathlib.Path(str(path)).suffix.lower().lstrip(".")
  aliases = {"parquet": "parquet", "pq": "parquet", "csv": "csv", "tfrecord": "tfrecord",
             "tfrecords": "tfrecord", "gz": "csv"}
  if suffix not in aliases:
    raise ValueError(f"cannot tell the format of {path}; pass one of {FORMATS}")
  return aliases[suffix]


def iter_raw_records(path: str | pathlib.Path, fmt: str | None = None) -> Iterator[dict]:
  """Raw records (before validation) of one file, as dicts."""
  fmt = fmt or detect_format(path)
  if fmt == "csv":
    with open(path, newline="") as f:
      yield from csv.DictReader(f)
  elif fmt == "parquet":
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    for batch in pq.ParquetFile(path).iter_batches():
      yield from batch.to_pylist()
  elif fmt == "tfrecord":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
      yield record_from_example(serialized)
  else:
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def read_behavior_log(path: str | pathlib.Path, fmt: str | None = None
                      ) -> tuple[dict[str, np.ndarray], list[dict]]:
  """Reads and validates a behavior log: (columns of the valid rows, dead letters)."""
  valid, dead = [], []
  for line, record in enumerate(iter_raw_records(path, fmt), start=1):
    try:
      valid.append(validate_record(record))
    except MalformedRecord as error:
      dead.append(dead_letter(record, error, f"{path}:{line}"))
  return rows_to_columns(valid), dead


def record_from_example(serialized: bytes) -> dict[str, list]:
  """A serialized tf.train.Example -> {feature name: list of values}."""
  from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
  example = example_pb2.Example.FromString(serialized)
  record = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof("kind")
    record[name] = list(getattr(feature, kind).value) if kind else []
  return record


def example_from_row(row: Mapping[str, Any]) -> bytes:
  """A behavior row -> serialized tf.train.Example with one value per field."""
  return tfexample.encode({f.name: np.asarray(row[f.name], dtype=f.dtype)
                           for f in schema.BEHAVIOR_FIELDS if f.name in row})


def write_behavior_log(columns: dict[str, np.ndarray], path: str | pathlib.Path,
                       fmt: str | None = None) -> None:
  """Writes behavior columns as Parquet, CSV or TFRecord (format from the suffix)."""
  fmt = fmt or detect_format(path)
  if fmt == "parquet":
    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    pq.write_table(pa.table({n: columns[n] for n in schema.FIELD_NAMES}), path)
  elif fmt == "csv":
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=schema.FIELD_NAMES)
      writer.writeheader()
      writer.writerows(columns_to_rows({n: columns[n] for n in schema.FIELD_NAMES}))
  elif fmt == "tfrecord":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tf.io.TFRecordWriter(str(path)) as writer:
      for row in columns_to_rows(columns):
        writer.write(example_from_row(row))
  else:
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
