"""Property-based: any record is either a clean row of the schema's types or a dead letter
naming a field (hypothesis), never another exception, never a value stored differently."""

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twin_tf.data import logs
from twin_tf.data.feature_spec import KUAIRAND, MOVIELENS

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.text(max_size=12), st.binary(max_size=6),
    st.sampled_from(["1", "0", "1e39", "-5", "2021-03-04T05:06:07Z", "1969-12-31T00:00:00",
                     "nan", " 7 ", "3.0", "3.5", str(2**63)]),
    st.lists(st.integers(min_value=0, max_value=3), max_size=2))


def _records(spec):
  """Mostly plausible records: each field plausible or, one time in seven, any of VALUES;
  optional fields may be absent."""
  plausible = {"play_time": st.floats(0, 1e4), "duration": st.floats(0, 1e4),
               "label": st.sampled_from([0, 1, "1", 1.0])}
  plausible.update({f: st.sampled_from([0, 1]) for f in spec.behavior_flags})
  fields = {}
  for name in spec.field_names:
    good = plausible.get(name, st.integers(0, 2**40))
    fields[name] = st.one_of(good, good, good, good, good, good, VALUES)  # mostly plausible
  core = {n: fields.pop(n) for n in spec.field_names if n not in spec.optional}
  return st.fixed_dictionaries(core, optional={**fields, "extra": VALUES})


ACCEPTED = []


@settings(max_examples=400, deadline=None, derandomize=True,  # the same examples every run
          suppress_health_check=[HealthCheck.too_slow])  # a busy CI machine is not a bug
@given(record=_records(MOVIELENS) | _records(KUAIRAND), kuairand=st.booleans())
def test_every_record_is_a_clean_row_or_names_its_field(record, kuairand):
  spec = KUAIRAND if kuairand else MOVIELENS
  try:
    row = logs.validate_record(record, spec)
  except logs.MalformedRecord as error:
    assert error.field in spec.field_names + ("row", "record", "extra"), error.field
    assert logs.dead_letter(record, error, "x")["field"] == error.field  # always serializable
    return
  ACCEPTED.append(1)
  assert set(row) == set(spec.field_names)
  for field in spec.fields:
    value = row[field.name]
    stored = np.asarray([value], dtype=field.dtype)[0]
    if field.dtype == np.float32:
      assert math.isfinite(value) and value >= 0 and math.isfinite(float(stored))
    else:
      assert 0 <= value <= logs.INT64_MAX and int(stored) == value
  for name in (*spec.behavior_flags, "label"):
    assert row[name] in (0, 1)
  columns = logs.rows_to_columns([row], spec)  # and the row goes into columns unchanged
  assert all(len(v) == 1 for v in columns.values())


def test_the_property_saw_accepted_records_too():
  assert len(ACCEPTED) > 2  # the strategy is not all refusals (runs after the property)


def _typed_rows(spec):
  """Rows of typed values (int64 ids/flags/times, float64 play time and duration), with
  nulls, negatives, NaN, infinities and values beyond float32."""
  floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0.0, 1.5, 3.5e38, -1.0]))
  ints = st.one_of(st.none(), st.integers(-3, 2**62))
  binary = st.one_of(st.none(), st.integers(-1, 2))
  kinds = {f.name: (floats if f.dtype == np.float32 else ints) for f in spec.fields}
  kinds.update({n: binary for n in ("label",) + spec.behavior_flags})
  return st.lists(st.fixed_dictionaries(kinds), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(rows=_typed_rows(KUAIRAND), absent=st.sampled_from([(), ("is_like",), ("user_id",)]),
       as_text=st.booleans())
def test_a_table_validates_as_its_rows_do(rows, absent, as_text):
  """validate_table (vectorized where columns are typed numbers) gives validate_record's
  answer row by row: the same valid rows, values and order, the same dead rows and reasons."""
  import pyarrow as pa
  spec = KUAIRAND
  names = [f.name for f in spec.fields if f.name not in absent]
  types = {f.name: pa.float64() if f.dtype == np.float32 else pa.int64() for f in spec.fields}
  if as_text:  # an untyped column: the whole table goes row by row
    types[spec.item_feature_names[0]] = pa.string()
    for row in rows:
      value = row[spec.item_feature_names[0]]
      row[spec.item_feature_names[0]] = None if value is None else str(value)
  table = pa.table({n: pa.array([r[n] for r in rows], types[n]) for n in names})
  columns, dead = logs.validate_table(table, spec)
  expected, expected_dead = [], []
  for index, record in enumerate(table.to_pylist()):
    try:
      expected.append(logs.validate_record(record, spec))
    except logs.MalformedRecord as error:
      expected_dead.append((index, error.field, error.reason))
  assert [(i, e.field, e.reason) for i, _, e in dead] == expected_dead
  reference = logs.rows_to_columns(expected, spec)
  for name, values in reference.items():
    assert columns[name].dtype == values.dtype
    np.testing.assert_array_equal(columns[name], values, err_msg=name)
