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
