"""Feature specifications: presets, files, validation of logs under a spec, item-feature files."""

import json

import numpy as np
import pytest

from twin_tf.data import feature_spec, logs, schema
from twin_tf.data.feature_spec import KUAIRAND, MOVIELENS, FeatureSpec, ItemFeature


def test_presets_declare_their_fields_in_order():
  assert MOVIELENS.field_names == schema.CORE_NAMES + ("category", "year_bucket", "tagged")
  assert MOVIELENS.primary == "category"
  assert KUAIRAND.candidate_fields == ("item_id", "tag", "author_id", "music_id", "upload_type")
  assert KUAIRAND.sequence_fields == KUAIRAND.candidate_fields + (
      "group", "is_like", "is_follow", "is_comment", "timestamp")


def test_a_spec_round_trips_through_its_file(tmp_path):
  spec = FeatureSpec("mine", (ItemFeature("author", hash_buckets=97), ItemFeature("genre")),
                     ("liked",), primary="genre")
  spec.save(tmp_path)
  assert feature_spec.resolve(tmp_path / feature_spec.FILE_NAME) == spec
  assert feature_spec.resolve(tmp_path) == spec
  assert feature_spec.resolve("kuairand") == KUAIRAND
  assert feature_spec.for_log(tmp_path / "log.parquet") == spec  # the file beside the log
  assert feature_spec.for_log(tmp_path / "sub" / "log.parquet") == MOVIELENS
  assert feature_spec.for_log(tmp_path / "log.parquet", "movielens") == MOVIELENS


@pytest.mark.parametrize("kwargs, message", [
    (dict(item_features=(ItemFeature("user_id"),)), "not core fields"),
    (dict(item_features=(ItemFeature("a"),), behavior_flags=("a",)), "unique"),
    (dict(item_features=()), "at least one item feature"),
    (dict(item_features=(ItemFeature("a"),), primary="b"), "primary 'b'"),
    (dict(item_features=(ItemFeature(""),)), "non-empty identifier"),
    (dict(item_features=(ItemFeature("a"),), behavior_flags=("two words",)), "identifier"),
    (dict(item_features=(ItemFeature("a", hash_buckets=2.5),)), "integer >= 0, got 2.5"),
    (dict(item_features=(ItemFeature("a", hash_buckets=True),)), "integer >= 0, got True")])
def test_bad_specs_are_refused(kwargs, message):
  with pytest.raises(ValueError, match=message):
    FeatureSpec("bad", **kwargs)


@pytest.mark.parametrize("text, message", [
    ({"name": "x", "item_features": [{"name": "a"}], "primray": "a"}, r"unknown keys \['primray'\]"),
    ({"name": "x", "item_features": [{"name": "a", "buckets": 9}]}, r"unknown keys \['buckets'\]"),
    ({"name": "", "item_features": [{"name": "a"}]}, "needs a name")])
def test_a_spec_file_with_a_typo_is_refused_not_saved(tmp_path, text, message):
  """A misspelt key used to be ignored and the spec saved without it."""
  path = tmp_path / feature_spec.FILE_NAME
  path.write_text(json.dumps(text))
  with pytest.raises(ValueError, match=message):
    feature_spec.resolve(path)


def test_unknown_spec_names_the_presets(tmp_path):
  with pytest.raises(FileNotFoundError, match="movielens, kuairand"):
    feature_spec.resolve(tmp_path / "nothing.json")


def test_records_validate_under_their_spec():
  record = {"user_id": 1, "item_id": 2, "timestamp": 3, "play_time": 1.0, "duration": 2.0,
            "label": 1, "author_id": 77, "is_like": 1}
  row = logs.validate_record(record, KUAIRAND)
  assert row["author_id"] == 77 and row["is_like"] == 1
  assert row["tag"] == 0 and row["is_follow"] == 0  # absent: unknown / not done
  with pytest.raises(logs.MalformedRecord, match="'is_like': must be 0 or 1"):
    logs.validate_record({**record, "is_like": 2}, KUAIRAND)
  with pytest.raises(logs.MalformedRecord, match="'author_id': negative"):
    logs.validate_record({**record, "author_id": -4}, KUAIRAND)


def test_item_feature_file_replaces_the_logs_values(tmp_path):
  columns = MOVIELENS.empty_columns(4)
  columns["item_id"] = np.array([10, 11, 12, 10])
  columns["category"] = np.array([1, 1, 1, 1])
  path = tmp_path / "items.csv"
  path.write_text("item_id,category,year_bucket\n10,5,7\n12,,3\nbad,1,1\n")
  joined, dead = logs.join_item_features(columns, path, MOVIELENS)
  np.testing.assert_array_equal(joined["category"], [5, 1, 0, 5])  # 11 is not listed
  np.testing.assert_array_equal(joined["year_bucket"], [7, 0, 3, 7])
  only_category, _ = logs.join_item_features(columns, _write(tmp_path, "item_id,category\n11,4\n"),
                                             MOVIELENS)
  np.testing.assert_array_equal(only_category["year_bucket"], columns["year_bucket"])
  np.testing.assert_array_equal(only_category["category"], [1, 4, 1, 1])
  assert [d["field"] for d in dead] == ["item_id"] and dead[0]["source"].endswith(":3")
  assert json.loads(dead[0]["record"])["item_id"] == "bad"


def test_an_item_listed_twice_with_other_features_is_a_dead_letter(tmp_path):
  """The last row used to win silently; now the first stands and the other is named."""
  columns = MOVIELENS.empty_columns(2)
  columns["item_id"] = np.array([10, 11])
  path = _write(tmp_path, "item_id,category\n10,5\n11,2\n10,6\n11,2\n")
  joined, dead = logs.join_item_features(columns, path, MOVIELENS)
  np.testing.assert_array_equal(joined["category"], [5, 2])  # a same-valued repeat is fine
  assert len(dead) == 1 and dead[0]["source"].endswith(":3")
  assert "first at line 1" in dead[0]["reason"]


def _write(folder, text):
  path = folder / "more.csv"
  path.write_text(text)
  return path
