"""The MovieLens loader on the real files: the mapping conventions, and no tag from the future."""

import csv

import numpy as np
import pytest

from twin_tf.data import schema
from twin_tf.data.movielens import load_movielens


def test_ratings_map_onto_the_schema(movielens):
  columns, dead, _ = movielens
  assert len(columns[schema.USER_ID]) == 100_836 and not dead
  assert len(np.unique(columns[schema.USER_ID])) == 610
  np.testing.assert_array_equal(columns[schema.LABEL], columns[schema.PLAY_TIME] >= 4)
  assert np.all(columns[schema.DURATION] == 5.0)


def test_tagged_counts_only_tags_made_at_or_before_the_rating(movielens, movielens_dir):
  columns, _, _ = movielens
  first = {}
  with open(movielens_dir / "tags.csv", newline="", encoding="utf-8") as f:
    for r in csv.DictReader(f):
      key = (int(r["userId"]), int(r["movieId"]))
      first[key] = min(first.get(key, int(r["timestamp"])), int(r["timestamp"]))
  expected = np.array([
      (u, i) in first and first[(u, i)] <= t for u, i, t in zip(
          columns[schema.USER_ID], columns[schema.ITEM_ID], columns[schema.TIMESTAMP])])
  np.testing.assert_array_equal(columns["tagged"].astype(bool), expected)
  later = sum((u, i) in first for u, i in zip(columns[schema.USER_ID], columns[schema.ITEM_ID]))
  assert 0 < expected.sum() < later  # most tags come after the rating, and are not counted


def test_a_wrong_folder_names_the_files_expected(tmp_path):
  with pytest.raises(FileNotFoundError, match="lacks ratings.csv and movies.csv.*MovieLens"):
    load_movielens(tmp_path)
