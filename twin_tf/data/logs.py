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
from twin_tf.data.feature_spec import MOVIELENS, FeatureSpec

FORMATS = ("parquet", "csv", "tfrecord")
INT64_MAX = np.iinfo(np.int64).max
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Keys a reader adds to a raw record it could not read whole (validate_record refuses it):
FEWER_VALUES = "__fewer_values__"  # a CSV row with fewer values than its header
NOT_UTF8 = "\ufffd"  # what reading with errors="replace" puts for bytes that are not UTF-8
UNREADABLE = "__unreadable__"  # bytes that are not a tf.train.Example (the reason)


class MalformedRecord(ValueError):
  """A behavior record that cannot be used; `field` names the culprit."""

  def __init__(self, field: str, reason: str):
    super().__init__(f"field {field!r}: {reason}")
    self.field, self.reason = field, reason


def validate_record(record: Mapping[str, Any], spec: FeatureSpec = MOVIELENS
                    ) -> dict[str, Any]:
  """One raw record (strings or numbers) -> a behavior row of the spec's fields.

  Item features and flags the record lacks are 0 (unknown / not done).

  Raises:
    MalformedRecord: a core field is missing or empty; an id or item feature is not a
      non-negative integer; a timestamp is neither unix seconds nor ISO-8601; play time or
      duration is negative, NaN or infinite; a label or flag is not 0/1; a value has the
      wrong type.
  """
  refuse_unreadable_row(record)
  if FEWER_VALUES in record:
    raise MalformedRecord("row", f"{record[FEWER_VALUES]} fewer values than columns")
  if UNREADABLE in record:
    raise MalformedRecord("record", record[UNREADABLE])
  row = {}
  for field in spec.fields:
    value = record.get(field.name)
    if _is_missing(value):
      if field.name not in spec.optional:
        raise MalformedRecord(field.name, "missing")
      value = 0
    if field.name == schema.TIMESTAMP:
      row[field.name] = _timestamp(value)
    elif field.dtype == np.float32:
      row[field.name] = _non_negative_float(field.name, value)
    else:
      row[field.name] = _non_negative_int(field.name, value)
  for name in (schema.LABEL,) + spec.behavior_flags:
    if row[name] not in (0, 1):
      raise MalformedRecord(name, f"must be 0 or 1, got {row[name]}")
  return row


def validate_table(table, spec: FeatureSpec = MOVIELENS
                   ) -> tuple[dict[str, np.ndarray], list[tuple[int, dict, MalformedRecord]]]:
  """A pyarrow Table of raw records -> (columns of its valid rows in table order, [(row
  index, record, error)] of the others): validate_record's answer for every row, at numpy
  speed where the columns are typed numbers (integers for ids, features, flags, label and
  timestamp; integers or floats for play time and duration). Rows a vectorized check refuses,
  and every row of a table with other column types, go through validate_record itself."""
  checked = _checked_columns(table, spec)
  if checked is None:
    columns, keep = spec.empty_columns(table.num_rows), np.zeros(table.num_rows, bool)
  else:
    columns, keep = checked
  doubtful = np.flatnonzero(~keep)
  dead = []
  if len(doubtful):
    for index, record in zip(doubtful.tolist(), table.take(doubtful).to_pylist()):
      try:
        row = validate_record(record, spec)
      except MalformedRecord as error:
        dead.append((index, record, error))
        continue
      for name, value in row.items():
        columns[name][index] = value
      keep[index] = True
  return {name: values[keep] for name, values in columns.items()}, dead


def _checked_columns(table, spec: FeatureSpec):
  """(columns (N,) of the spec's dtypes, (N,) rows every vectorized check passes), or None
  when a column is not a typed number (validate_record then reads every row)."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  rows = table.num_rows
  keep, columns = np.ones(rows, bool), {}
  for field in spec.fields:
    if field.name not in table.column_names:
      if field.name not in spec.optional:
        keep[:] = False  # validate_record names it missing
      columns[field.name] = np.zeros(rows, field.dtype)
      continue
    column = table.column(field.name)
    integer = pa.types.is_integer(column.type) and column.type != pa.uint64()
    floating = field.dtype == np.float32 and pa.types.is_floating(column.type)
    if not (integer or floating):
      return None
    if field.name not in spec.optional:
      keep &= np.asarray(column.is_valid())
    values = np.asarray(column.fill_null(0))
    if field.dtype == np.float32:
      values = values.astype(np.float64)
      fits = np.isfinite(values) & (values >= 0) & (values <= FLOAT32_MAX)
    else:
      values = values.astype(np.int64)
      fits = values >= 0
    keep &= fits
    columns[field.name] = np.where(fits, values, 0).astype(field.dtype)
  for name in (schema.LABEL,) + spec.behavior_flags:
    keep &= (columns[name] == 0) | (columns[name] == 1)
  return columns, keep


def by_user(columns: dict[str, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """(user_id, that user's rows) for each user of `columns`, rows in their order."""
  return by_key(columns, columns[schema.USER_ID])


def by_key(columns: dict[str, np.ndarray], keys: np.ndarray
           ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
  """(key, the rows with that key) for each distinct value of `keys` (N,), in key order,
  rows in their order."""
  order = np.argsort(keys, kind="stable")
  values, starts, counts = np.unique(keys[order], return_index=True, return_counts=True)
  for key, start, count in zip(values.tolist(), starts, counts):
    yield key, schema.take(columns, order[start:start + count])


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
  if isinstance(value, bytes):
    try:
      return value.decode()
    except UnicodeDecodeError:
      raise MalformedRecord(name, f"not UTF-8 text: {value[:40]!r}") from None
  return value


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
    if not isinstance(number, (int, np.integer)):  # floats, Parquet decimals: whole only
      if not math.isfinite(float(number)) or number != int(number):
        raise ValueError
    number = int(number)
  except (TypeError, ValueError):
    raise MalformedRecord(name, f"not an integer: {value!r}") from None
  if number < 0:
    raise MalformedRecord(name, f"negative: {number}")
  if number > INT64_MAX:
    raise MalformedRecord(name, f"beyond int64: {number}")
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
  if number > FLOAT32_MAX:
    raise MalformedRecord(name, f"beyond float32: {number}")
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
    return _not_before_1970(parsed, value)
  if isinstance(value, datetime.datetime):
    return _not_before_1970(value, value)
  return _non_negative_int(schema.TIMESTAMP, value)


def _not_before_1970(moment: datetime.datetime, value) -> int:
  """Unix seconds of a datetime; refused before 1970, as negative seconds are."""
  seconds = int(moment.timestamp())
  if seconds < 0:
    raise MalformedRecord(schema.TIMESTAMP, f"before 1970: {value!r}")
  return seconds


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


def rows_to_columns(rows: Iterable[Mapping[str, Any]], spec: FeatureSpec = MOVIELENS
                    ) -> dict[str, np.ndarray]:
  """Validated rows (dicts) -> one array per field of the spec, consuming `rows` once."""
  return tuples_to_columns((row_to_tuple(row, spec) for row in rows), spec)


def row_to_tuple(row: Mapping[str, Any], spec: FeatureSpec = MOVIELENS) -> tuple:
  """A validated row as a tuple in spec.field_names order (compact for shuffles)."""
  return tuple(row[n] for n in spec.field_names)


def tuples_to_columns(rows: Iterable[tuple], spec: FeatureSpec = MOVIELENS
                      ) -> dict[str, np.ndarray]:
  """Rows as tuples in spec.field_names order -> columns; one pass, transposed in C."""
  fields = list(zip(*rows))
  if not fields:
    return spec.empty_columns()
  return {f.name: np.asarray(values, dtype=f.dtype) for f, values in zip(spec.fields, fields)}


def columns_to_tuples(columns: dict[str, np.ndarray], spec: FeatureSpec = MOVIELENS
                      ) -> Iterator[tuple]:
  """Columns -> rows as tuples in spec.field_names order (row_to_tuple's layout)."""
  return zip(*(columns[n].tolist() for n in spec.field_names))


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
    # utf-8-sig: a byte-order mark (as spreadsheet exports write) is not part of the header
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
      for record in csv.DictReader(f):
        yield mark_short_row(record)
  elif fmt == "parquet":
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    for batch in pq.ParquetFile(path).iter_batches():
      yield from batch.to_pylist()
  elif fmt == "tfrecord":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    for serialized in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
      yield readable_example(serialized)
  else:
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


def read_behavior_log(path: str | pathlib.Path, fmt: str | None = None,
                      spec: FeatureSpec = MOVIELENS, keep: tuple[str, ...] | None = None
                      ) -> tuple[dict[str, np.ndarray], list[dict]]:
  """Reads and validates a behavior log: (columns of the valid rows, dead letters).

  `keep`: only these columns are returned (every field is still validated); a Parquet log
  then holds only them in memory, a record batch at a time."""
  if (fmt or detect_format(path)) == "parquet":
    return _read_parquet_log(path, spec, keep)
  valid, dead = [], []
  for line, record in enumerate(iter_raw_records(path, fmt), start=1):
    try:
      valid.append(validate_record(record, spec))
    except MalformedRecord as error:
      dead.append(dead_letter(record, error, f"{path}:{line}"))
  return _kept(rows_to_columns(valid, spec), keep), dead


def _kept(columns: dict[str, np.ndarray], keep: tuple[str, ...] | None
          ) -> dict[str, np.ndarray]:
  return columns if keep is None else {name: columns[name] for name in keep}


def _read_parquet_log(path, spec: FeatureSpec, keep: tuple[str, ...] | None
                      ) -> tuple[dict[str, np.ndarray], list[dict]]:
  """read_behavior_log of a Parquet file, a record batch at a time (validate_table), into
  columns allocated once for the file's rows (no second copy to concatenate)."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  log = pq.ParquetFile(path)
  out, dead, offset, filled = _kept(spec.empty_columns(log.metadata.num_rows), keep), [], 0, 0
  for batch in log.iter_batches():
    columns, bad = validate_table(pa.Table.from_batches([batch]), spec)
    valid = batch.num_rows - len(bad)
    for name, values in out.items():
      values[filled:filled + valid] = columns[name]
    filled += valid
    dead += [dead_letter(record, error, f"{path}:{offset + index + 1}")
             for index, record, error in bad]
    offset += batch.num_rows
  return {name: values[:filled] for name, values in out.items()}, dead


def join_item_features(columns: dict[str, np.ndarray], path: str | pathlib.Path,
                       spec: FeatureSpec, fmt: str | None = None
                       ) -> tuple[dict[str, np.ndarray], list[dict]]:
  """Replaces the item features of behaviors with those of an item-feature file.

  The file (Parquet, CSV or TFRecord) has item_id and some of spec.item_feature_names; those
  it has replace the log's values for the items it lists (an empty value is 0, unknown), the
  others stay. Returns (columns, dead letters of malformed item rows). An item listed again
  with other values is a dead letter (its first row stands); a repeat of the same row is
  harmless.
  """
  records, dead = list(enumerate(iter_raw_records(path, fmt), start=1)), []
  names = [n for n in spec.item_feature_names if any(n in r for _, r in records)]
  table, first_line = {}, {}
  for line, record in records:
    try:
      item = _non_negative_int(schema.ITEM_ID, _required(record, schema.ITEM_ID))
      values = tuple(_non_negative_int(n, 0 if _is_missing(record.get(n)) else record.get(n))
                     for n in names)
      if item in table and table[item] != values:
        raise MalformedRecord(schema.ITEM_ID, f"item {item} listed again with other features "
                              f"(first at line {first_line[item]}, which stands)")
      table[item] = values
      first_line.setdefault(item, line)
    except MalformedRecord as error:
      dead.append(dead_letter(record, error, f"{path}:{line}"))
  if not table or not names:
    return columns, dead
  ids = np.array(sorted(table), np.int64)
  values = np.array([table[i] for i in ids], np.int64).reshape(len(ids), len(names))
  at = np.minimum(np.searchsorted(ids, columns[schema.ITEM_ID]), len(ids) - 1)
  listed = ids[at] == columns[schema.ITEM_ID]
  out = dict(columns)
  for j, name in enumerate(names):
    out[name] = np.where(listed, values[at, j], columns[name])
  return out, dead


def refuse_unreadable_row(record: Mapping) -> None:
  """MalformedRecord for a CSV row longer than its header (csv.DictReader puts the extra
  values under the key None), or for a value with bytes that are not UTF-8 (read with
  errors="replace": U+FFFD marks them; a string that cannot be encoded back, as surrogate
  escapes cannot, would fail the first Beam coder that sizes it)."""
  if None in record:
    raise MalformedRecord("row", f"{len(record[None])} more values than columns")
  for name, value in record.items():
    if isinstance(value, str) and NOT_UTF8 in value:
      raise MalformedRecord(str(name), "not UTF-8 text")


def _required(record: Mapping[str, Any], name: str):
  if _is_missing(record.get(name)):
    raise MalformedRecord(name, "missing")
  return record.get(name)


def mark_short_row(record: dict) -> dict:
  """A csv.DictReader-style record: values missing at the end of a short row are None (CSV
  gives "" for an empty value); such a row gets FEWER_VALUES."""
  missing = sum(1 for k, v in record.items() if k is not None and v is None)
  return {**record, FEWER_VALUES: missing} if missing else record


def readable_example(serialized: bytes) -> dict[str, list]:
  """record_from_example, or {UNREADABLE: reason} for bytes that are not an Example."""
  try:
    return record_from_example(serialized)
  except Exception as error:  # pylint: disable=broad-except  (protobuf's DecodeError and kin)
    return {UNREADABLE: f"not a tf.train.Example ({type(error).__name__}: {error})"[:200]}


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
  return tfexample.encode({name: np.asarray(value) for name, value in row.items()})


def write_parquet_parts(parts, path: str | pathlib.Path, rows_per_group: int = 1 << 20
                        ) -> dict[str, int]:
  """Writes an iterable of column sets (the same names and dtypes) to one Parquet file, in
  row groups of about `rows_per_group`: memory bounded by a group, not the log. Returns
  {"behaviors", "users"} (distinct user ids)."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  writer, pending, rows, total, users = None, [], 0, 0, set()

  def flush():
    nonlocal writer, pending, rows
    table = pa.table(schema.concat(pending))
    writer = writer or pq.ParquetWriter(str(path), table.schema)
    writer.write_table(table)
    pending, rows = [], 0

  try:
    for part in parts:
      pending.append(part)
      rows += len(part[schema.USER_ID])
      total += len(part[schema.USER_ID])
      users.update(np.unique(part[schema.USER_ID]).tolist())
      if rows >= rows_per_group:
        flush()
    if pending:
      flush()
    if writer is None:
      raise ValueError(f"{path}: no behaviors to write")
  finally:
    if writer is not None:
      writer.close()
  return {"behaviors": total, "users": len(users)}


def write_behavior_log(columns: dict[str, np.ndarray], path: str | pathlib.Path,
                       fmt: str | None = None) -> None:
  """Writes behavior columns (every column given) as Parquet, CSV or TFRecord (format from
  the suffix)."""
  fmt = fmt or detect_format(path)
  if fmt == "parquet":
    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    pq.write_table(pa.table(dict(columns)), path)
  elif fmt == "csv":
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=list(columns))
      writer.writeheader()
      writer.writerows(columns_to_rows(columns))
  elif fmt == "tfrecord":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tf.io.TFRecordWriter(str(path)) as writer:
      for row in columns_to_rows(columns):
        writer.write(example_from_row(row))
  else:
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
