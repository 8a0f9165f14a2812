"""MovieLens (GroupLens ml-latest-small layout) as TWIN-V2 behavior logs.

MovieLens has no impressions and no play time, so the mapping is a stated convention
(../shared/data/README.md):
  behavior        one rating: user, movie, timestamp.
  label           rating >= 4 (the usual MovieLens CTR framing).
  play_time       the rating, duration 5.0: the completion ratio r = rating / 5 stands in
                  for play completion. Completion group (twin_tf.clustering.grouping) =
                  min(floor(r * M), M - 1), so with M = 5: ratings 0.5-0.5 -> 0, 1-1.5 -> 1,
                  2-2.5 -> 2, 3-3.5 -> 3, 4-5 -> 4.
  category        the movie's first listed genre: the first name of movies.csv's
                  pipe-separated `genres` ("Adventure" for "Adventure|Animation|Children"),
                  as 1 + its position among all genre names sorted alphabetically (Action =
                  1, Adventure = 2, ...); 0 for "(no genres listed)".
  year_bucket     release year y from the title's trailing "(1995)":
                  max(1, (y - 1900) // 5 + 2), so 1900-1904 -> 2, 1995-1999 -> 21, before
                  1900 -> 1; 0 when the title has no year.
  tagged          the user had tagged that movie (tags.csv) at or before the rating's time
                  (a cross feature). Tags made later are not counted: most MovieLens tags
                  come long after the rating, and counting them would let an example see
                  the future (120 of 1,635 tagged ratings in ml-latest-small qualify).
Hour of day, day of week and the behavior's age are derived from the timestamp downstream.

Files: ratings.csv, movies.csv, tags.csv (as GroupLens publishes them). Download the same
files from https://grouplens.org/datasets/movielens/ (ml-latest-small.zip) and pass the folder.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import re

import numpy as np

from twin_tf.data import logs, schema
from twin_tf.data.feature_spec import MOVIELENS

CATEGORY, YEAR_BUCKET = MOVIELENS.item_feature_names
(TAGGED,) = MOVIELENS.behavior_flags
RATING_SCALE = 5.0
CLICK_THRESHOLD = 4.0
YEAR_ORIGIN, YEAR_BUCKET_WIDTH = 1900, 5
_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclasses.dataclass
class MovieCatalog:
  """Inherent features of every movie in movies.csv.

  Attributes:
    movie_ids: (I,) int64 sorted.
    category: (I,) primary genre index (0 = no genre).
    year_bucket: (I,) release-period bucket (0 = unknown).
    genres: (I,) tuple of all genre indices of each movie (multi-valued).
    genre_names: index -> name, index 0 is "(no genres listed)".
    titles: (I,) titles.
  """

  movie_ids: np.ndarray
  category: np.ndarray
  year_bucket: np.ndarray
  genres: list[tuple[int, ...]]
  genre_names: list[str]
  titles: list[str]

  def index(self, movie_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `movie_ids` in the catalog, and whether each was found."""
    pos = np.minimum(np.searchsorted(self.movie_ids, movie_ids), len(self.movie_ids) - 1)
    return pos, self.movie_ids[pos] == movie_ids


def year_bucket(year: int | None) -> int:
  if year is None:
    return 0
  return max(1, (year - YEAR_ORIGIN) // YEAR_BUCKET_WIDTH + 2)


def load_catalog(data_dir: str | pathlib.Path) -> MovieCatalog:
  with open(pathlib.Path(data_dir) / "movies.csv", newline="", encoding="utf-8") as f:
    movies = list(csv.DictReader(f))
  names = sorted({g for m in movies for g in m["genres"].split("|")} - {"(no genres listed)"})
  genre_index = {name: i + 1 for i, name in enumerate(names)}
  movies.sort(key=lambda m: int(m["movieId"]))
  genres = [tuple(genre_index[g] for g in m["genres"].split("|") if g in genre_index)
            for m in movies]
  years = [_YEAR.search(m["title"].strip()) for m in movies]
  return MovieCatalog(
      movie_ids=np.array([int(m["movieId"]) for m in movies], dtype=np.int64),
      category=np.array([g[0] if g else 0 for g in genres], dtype=np.int64),
      year_bucket=np.array([year_bucket(int(y.group(1)) if y else None) for y in years],
                           dtype=np.int64),
      genres=genres, genre_names=["(no genres listed)"] + names,
      titles=[m["title"] for m in movies])


def load_movielens(data_dir: str | pathlib.Path
                   ) -> tuple[dict[str, np.ndarray], list[dict], MovieCatalog]:
  """Ratings of a MovieLens folder as behavior-log columns.

  Returns:
    (columns of valid behaviors, dead letters of malformed rating rows, the movie catalog).
    A rating of a movie missing from movies.csv is a dead letter (field item_id).
  """
  data_dir = pathlib.Path(data_dir)
  missing = [n for n in ("ratings.csv", "movies.csv") if not (data_dir / n).is_file()]
  if missing:
    raise FileNotFoundError(
        f"{data_dir} lacks {' and '.join(missing)}: expected a MovieLens latest folder "
        "(ratings.csv, movies.csv, tags.csv as GroupLens publishes them; e.g. the unpacked "
        "ml-latest-small.zip)")
  catalog = load_catalog(data_dir)
  first_tag: dict[tuple[str, str], int] = {}  # (userId, movieId) -> earliest tag time
  tags_path = data_dir / "tags.csv"
  if tags_path.exists():
    with open(tags_path, newline="", encoding="utf-8") as f:
      for r in csv.DictReader(f):
        key, time = (r["userId"], r["movieId"]), int(r["timestamp"])
        first_tag[key] = min(first_tag.get(key, time), time)
  valid, sources, dead = [], [], []
  ratings_path = data_dir / "ratings.csv"
  with open(ratings_path, newline="", encoding="utf-8") as f:
    for line, raw in enumerate(csv.DictReader(f), start=2):
      try:
        valid.append(logs.validate_record(_behavior_record(raw, first_tag)))
        sources.append((raw, line))
      except logs.MalformedRecord as error:
        dead.append(logs.dead_letter(raw, error, f"{ratings_path}:{line}"))
  columns = logs.rows_to_columns(valid)
  pos, found = catalog.index(columns[schema.ITEM_ID])
  for i in np.flatnonzero(~found):
    raw, line = sources[i]
    error = logs.MalformedRecord(schema.ITEM_ID, "movie not in movies.csv")
    dead.append(logs.dead_letter(raw, error, f"{ratings_path}:{line}"))
  columns = schema.take(columns, found)
  columns[CATEGORY] = catalog.category[pos[found]]
  columns[YEAR_BUCKET] = catalog.year_bucket[pos[found]]
  return columns, dead, catalog


def _tagged_before(raw: dict, first_tag: dict) -> int:
  """1 when the user's first tag on the movie is at or before this rating's time."""
  tag_time = first_tag.get((raw.get("userId"), raw.get("movieId")))
  try:
    return int(tag_time is not None and tag_time <= int(raw.get("timestamp")))
  except (TypeError, ValueError):
    return 0  # an unparsable timestamp: validation names it


def _behavior_record(raw: dict, first_tag: dict) -> dict:
  rating = raw.get("rating")
  try:
    click = int(float(rating) >= CLICK_THRESHOLD) if rating not in (None, "") else None
  except ValueError:
    click = rating  # left for validation to name
  return {
      schema.USER_ID: raw.get("userId"),
      schema.ITEM_ID: raw.get("movieId"),
      schema.TIMESTAMP: raw.get("timestamp"),
      schema.PLAY_TIME: rating,
      schema.DURATION: RATING_SCALE,
      schema.LABEL: click,
      TAGGED: _tagged_before(raw, first_tag),
  }
