"""Validation of behavior records and the three log formats, with dead letters."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from twin_tf.data import logs
from twin_tf.data.feature_spec import MOVIELENS

GOOD = {"user_id": "1", "item_id": "31", "timestamp": "964982703", "play_time": "2.5",
        "duration": "5", "label": "0", "category": "3", "year_bucket": "20", "tagged": "0"}


def test_valid_record_gets_schema_types():
  row = logs.validate_record(GOOD)
  assert row == {"user_id": 1, "item_id": 31, "timestamp": 964982703, "play_time": 2.5,
                 "duration": 5.0, "label": 0, "category": 3, "year_bucket": 20, "tagged": 0}


def test_optional_fields_default_to_unknown():
  record = {k: v for k, v in GOOD.items() if k not in ("category", "year_bucket", "tagged")}
  row = logs.validate_record(record)
  assert (row["category"], row["year_bucket"], row["tagged"]) == (0, 0, 0)


def test_iso_timestamp_is_parsed_as_utc():
  row = logs.validate_record(dict(GOOD, timestamp="2000-07-30T18:45:03Z"))
  assert row["timestamp"] == 964982703


@pytest.mark.parametrize("field,value,reason", [
    ("user_id", "", "missing"),
    ("user_id", None, "missing"),
    ("item_id", "abc", "not an integer"),
    ("item_id", "-4", "negative"),
    ("item_id", "3.5", "not an integer"),
    ("timestamp", "yesterday", "unparsable"),
    ("play_time", "-1", "negative"),
    ("play_time", "nan", "not a finite number"),
    ("duration", float("nan"), "not a finite number"),
    ("duration", "inf", "not a finite number"),
    ("duration", "x", "not a number"),
    ("label", "2", "must be 0 or 1"),
    ("tagged", "5", "must be 0 or 1"),
    ("label", True, "wrong type"),
])
def test_malformed_field_is_named(field, value, reason):
  with pytest.raises(logs.MalformedRecord) as error:
    logs.validate_record(dict(GOOD, **{field: value}))
  assert error.value.field == field
  assert reason in error.value.reason


def test_csv_row_with_extra_values_is_malformed():
  with pytest.raises(logs.MalformedRecord) as error:
    logs.validate_record({**GOOD, None: ["x", "y"]})
  assert error.value.field == "row"


def test_dead_letter_carries_source_field_reason_and_row():
  record = dict(GOOD, play_time=float("nan"))
  try:
    logs.validate_record(record)
  except logs.MalformedRecord as error:
    letter = logs.dead_letter(record, error, "logs.csv:7")
  assert letter["source"] == "logs.csv:7"
  assert letter["field"] == "play_time"
  assert json.loads(letter["record"])["play_time"] == "nan"


def _columns(n=5):
  columns = MOVIELENS.empty_columns(n)
  columns["user_id"][:] = [1, 1, 2, 2, 3][:n]
  columns["item_id"][:] = np.arange(10, 10 + n)
  columns["timestamp"][:] = 1_000_000 + np.arange(n)
  columns["play_time"][:] = np.linspace(0, 4, n)
  columns["duration"][:] = 5
  columns["label"][:] = [0, 1, 0, 1, 1][:n]
  return columns


@pytest.mark.parametrize("suffix", ["parquet", "csv", "tfrecord"])
def test_round_trip_every_format(tmp_path, suffix):
  columns = _columns()
  path = tmp_path / f"log.{suffix}"
  logs.write_behavior_log(columns, path)
  read, dead = logs.read_behavior_log(path)
  assert dead == []
  for name in MOVIELENS.field_names:
    np.testing.assert_array_equal(read[name], columns[name], err_msg=name)
    assert read[name].dtype == columns[name].dtype


def test_csv_malformed_rows_become_dead_letters(tmp_path):
  path = tmp_path / "log.csv"
  logs.write_behavior_log(_columns(), path)
  with open(path, "a") as f:
    f.write(",10,1000,1.0,5.0,0,0,0,0\n")  # missing user id
    f.write("4,11,1000,-1.0,5.0,0,0,0,0\n")  # negative play time
    f.write("4,12,never,1.0,5.0,0,0,0,0\n")  # unparsable timestamp
    f.write("4,13,1000,1.0,5.0,0,0,0,0,extra\n")  # too many values
  read, dead = logs.read_behavior_log(path)
  assert len(read["user_id"]) == 5
  assert [d["field"] for d in dead] == ["user_id", "play_time", "timestamp", "row"]
  assert [d["source"] for d in dead] == [f"{path}:{i}" for i in (6, 7, 8, 9)]


def test_a_csv_with_a_byte_order_mark_reads_every_row(tmp_path):
  """A UTF-8 byte-order mark used to glue itself to the first column's name, so every row
  was dead-lettered as "user_id missing"."""
  path = tmp_path / "log.csv"
  logs.write_behavior_log(_columns(), path)
  path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
  read, dead = logs.read_behavior_log(path)
  assert len(read["user_id"]) == 5 and not dead


def test_parquet_nan_and_negative_become_dead_letters(tmp_path):
  columns = _columns()
  table = pa.table({n: columns[n] for n in MOVIELENS.field_names})
  bad = pa.table({n: pa.array(columns[n][:2]) for n in MOVIELENS.field_names})
  bad = bad.set_column(MOVIELENS.field_names.index("duration"), "duration",
                       pa.array([math.nan, -3.0], type=pa.float32()))
  path = tmp_path / "log.parquet"
  pq.write_table(pa.concat_tables([table, bad]), path)
  read, dead = logs.read_behavior_log(path)
  assert len(read["user_id"]) == 5
  assert [(d["field"], d["reason"].split(":")[0]) for d in dead] == [
      ("duration", "not a finite number"), ("duration", "negative")]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_keep_returns_only_those_columns_and_still_validates_the_others(tmp_path, suffix):
  """`keep` (the embeddings read three columns of a large log) drops the other columns, not
  their checks: a NaN duration is still a dead letter."""
  columns = _columns()
  table = pa.table({n: columns[n] for n in MOVIELENS.field_names})
  bad = pa.table({n: pa.array(columns[n][:1]) for n in MOVIELENS.field_names})
  bad = bad.set_column(MOVIELENS.field_names.index("duration"), "duration",
                       pa.array([math.nan], type=pa.float32()))
  path = tmp_path / f"log{suffix}"
  if suffix == ".parquet":
    pq.write_table(pa.concat_tables([table, bad]), path)
  else:
    pcsv.write_csv(pa.concat_tables([table, bad]), path)
  read, dead = logs.read_behavior_log(path, keep=("user_id", "item_id"))
  assert sorted(read) == ["item_id", "user_id"]
  np.testing.assert_array_equal(read["item_id"], columns["item_id"])
  assert [d["field"] for d in dead] == ["duration"]


def test_a_parquet_decimal_id_that_is_not_whole_is_a_dead_letter(tmp_path):
  """item_id 12.5 as a Parquet decimal used to be read as 12."""
  import decimal
  columns = _columns()
  table = pa.table({n: columns[n] for n in MOVIELENS.field_names})
  table = table.set_column(MOVIELENS.field_names.index("item_id"), "item_id", pa.array(
      [decimal.Decimal(v) for v in ("12.5", "7", "8.0", "9", "10")], type=pa.decimal128(5, 1)))
  path = tmp_path / "log.parquet"
  pq.write_table(table, path)
  read, dead = logs.read_behavior_log(path)
  assert read["item_id"].tolist() == [7, 8, 9, 10]
  assert [(d["field"], d["reason"]) for d in dead] == [
      ("item_id", "not an integer: Decimal('12.5')")]


def test_tfrecord_malformed_example_becomes_dead_letter(tmp_path):
  import tensorflow as tf
  path = tmp_path / "log.tfrecord"
  columns = _columns(2)
  rows = list(logs.columns_to_rows(columns))
  missing_item = {k: v for k, v in rows[1].items() if k != "item_id"}
  with tf.io.TFRecordWriter(str(path)) as writer:
    writer.write(logs.example_from_row(rows[0]))
    writer.write(logs.example_from_row(missing_item))
  read, dead = logs.read_behavior_log(path)
  assert len(read["user_id"]) == 1
  assert dead[0]["field"] == "item_id" and dead[0]["reason"] == "missing"


@pytest.mark.parametrize("field, value, reason", [
    ("user_id", str(2**64), "beyond int64"),
    ("timestamp", "1969-12-31T23:59:00", "before 1970"),
    ("play_time", "1e39", "beyond float32"),
])
def test_values_no_column_can_hold_are_refused(field, value, reason):
  record = {"user_id": 1, "item_id": 2, "timestamp": 3, "play_time": 1.0, "duration": 2.0,
            "label": 1, field: value}
  with pytest.raises(logs.MalformedRecord, match=f"'{field}': {reason}"):
    logs.validate_record(record)


def test_unreadable_rows_become_dead_letters_not_crashes(tmp_path):
  """A non-UTF-8 byte, a short row (CSV); non-UTF-8 bytes and an entry that is not a
  tf.train.Example (TFRecord): each one row's dead letter, the other rows read."""
  import tensorflow as tf
  from tensorflow.core.example import example_pb2
  columns = _columns(3)
  logs.write_behavior_log(columns, tmp_path / "log.csv")
  with open(tmp_path / "log.csv", "ab") as f:
    f.write(b"1,5,1000,3.0,5.0,1,0,0,\xff\n")  # not UTF-8
    f.write(b"1,5,1000\n")  # short
  read, dead = logs.read_behavior_log(tmp_path / "log.csv")
  assert len(read["user_id"]) == 3
  assert sorted((d["field"], d["reason"][:14]) for d in dead) == [
      ("row", "6 fewer values"), ("tagged", "not UTF-8 text")]
  logs.write_behavior_log(columns, tmp_path / "log.tfrecord")
  with tf.io.TFRecordWriter(str(tmp_path / "more.tfrecord")) as writer:
    for serialized in tf.data.TFRecordDataset(str(tmp_path / "log.tfrecord")).as_numpy_iterator():
      writer.write(serialized)
    writer.write(b"this is not an Example")
    example = example_pb2.Example.FromString(logs.example_from_row(
        next(logs.columns_to_rows(columns))))
    example.features.feature["user_id"].Clear()
    example.features.feature["user_id"].bytes_list.value.append(b"\xff\xfe")  # not UTF-8
    writer.write(example.SerializeToString())
  read, dead = logs.read_behavior_log(tmp_path / "more.tfrecord")
  assert len(read["user_id"]) == 3
  assert sorted(d["field"] for d in dead) == ["record", "user_id"]


def test_a_typed_parquet_batch_is_validated_without_reading_rows(monkeypatch):
  """Clean typed columns never reach validate_record (the vectorized path runs); a bad row
  does, and only it."""
  table = pa.table({"user_id": pa.array([1, 2, 3]), "item_id": pa.array([5, 6, 7]),
                    "timestamp": pa.array([10, 20, 30]), "label": pa.array([0, 1, 1]),
                    "play_time": pa.array([1.0, 2.0, 3.0]), "duration": pa.array([4.0, 4, 4])})
  seen = []
  real = logs.validate_record
  monkeypatch.setattr(logs, "validate_record", lambda r, s: seen.append(r) or real(r, s))
  columns, dead = logs.validate_table(table, MOVIELENS)
  assert not seen and not dead and columns["item_id"].tolist() == [5, 6, 7]
  bad = table.set_column(3, "label", pa.array([0, 2, 1]))
  columns, dead = logs.validate_table(bad, MOVIELENS)
  assert len(seen) == 1 and [(i, e.field) for i, _, e in dead] == [(1, "label")]
  assert columns["user_id"].tolist() == [1, 3]


def test_by_key_splits_rows_in_key_order_keeping_their_order():
  columns = {"a": np.arange(6), "b": np.array([5.0, 4, 3, 2, 1, 0])}
  pieces = list(logs.by_key(columns, np.array([2, 0, 2, -1, 0, 2])))
  assert [key for key, _ in pieces] == [-1, 0, 2]
  np.testing.assert_array_equal(pieces[2][1]["a"], [0, 2, 5])
  np.testing.assert_array_equal(pieces[1][1]["b"], [4, 1])


def test_narrowed_columns_widen_back_unchanged():
  """Integer columns shrink to the narrowest dtype that holds them, floats stay; widened()
  gives back the same values in the schema's dtypes."""
  from twin_tf.data import schema
  columns = {"tiny": np.array([-128, 127]), "short": np.array([0, 40_000]),
             "wide": np.array([-2**31, 2**31 - 1]), "huge": np.array([0, 2**31]),
             "empty": np.zeros(0, np.int64), "x": np.array([0.5, 1e30], np.float32)}
  narrow = schema.narrowed(columns)
  assert [narrow[n].dtype for n in columns] == [np.int8, np.int32, np.int32, np.int64,
                                                 np.int64, np.float32]
  back = schema.widened(narrow, {n: v.dtype.type for n, v in columns.items()})
  for name, values in columns.items():
    assert back[name].dtype == values.dtype
    np.testing.assert_array_equal(back[name], values)
