"""The behavior-log schema: every field of a behavior, named once.

A behavior is one interaction of a user with an item. Every module reads field names and dtypes
from here; nothing else spells them.

Fields (one row per behavior):
  user_id     int64    the user.
  item_id     int64    the item.
  timestamp   int64    unix seconds of the behavior.
  play_time   float32  seconds watched (>= 0).
  duration    float32  item length in seconds (> 0), or 0 for unknown.
  label       int64    click / positive feedback, 0 or 1.
  category    int64    inherent item feature: primary category (0 = unknown).
  year_bucket int64    inherent item feature: release-period bucket (0 = unknown).
  tagged      int64    cross feature: the user annotated the item, 0 or 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Field:
  """One column of the behavior log."""

  name: str
  dtype: type
  kind: str  # "id" | "numeric" | "categorical" | "label"
  inherent: bool = False  # an item feature, the same for every user


USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
PLAY_TIME = "play_time"
DURATION = "duration"
LABEL = "label"
CATEGORY = "category"
YEAR_BUCKET = "year_bucket"
TAGGED = "tagged"

BEHAVIOR_FIELDS: tuple[Field, ...] = (
    Field(USER_ID, np.int64, "id"),
    Field(ITEM_ID, np.int64, "id", inherent=True),
    Field(TIMESTAMP, np.int64, "numeric"),
    Field(PLAY_TIME, np.float32, "numeric"),
    Field(DURATION, np.float32, "numeric", inherent=True),
    Field(LABEL, np.int64, "label"),
    Field(CATEGORY, np.int64, "categorical", inherent=True),
    Field(YEAR_BUCKET, np.int64, "categorical", inherent=True),
    Field(TAGGED, np.int64, "categorical"),
)
FIELDS_BY_NAME = {f.name: f for f in BEHAVIOR_FIELDS}
FIELD_NAMES = tuple(f.name for f in BEHAVIOR_FIELDS)

# Per-cluster (virtual item) columns written by the clustering pipeline, besides the
# representative member's behavior fields. Numerical fields are the members' mean.
CLUSTER_SIZE = "cluster_size"
COMPLETION = "completion"  # min(play_time / duration, 1); NaN where duration is unknown
GROUP = "group"  # rule-based completion group, 0..M-1, or M for unknown duration
CLUSTER_CATEGORICAL = (ITEM_ID, CATEGORY, YEAR_BUCKET, TAGGED)
CLUSTER_NUMERIC = (TIMESTAMP, PLAY_TIME, DURATION, LABEL, COMPLETION)


def empty_columns(n: int = 0) -> dict[str, np.ndarray]:
  """Zero-filled columns for `n` behaviors, one array per schema field."""
  return {f.name: np.zeros(n, dtype=f.dtype) for f in BEHAVIOR_FIELDS}


def num_rows(columns: dict[str, np.ndarray]) -> int:
  return len(columns[USER_ID])


def take(columns: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
  """Row subset (boolean mask or integer index) of every column."""
  return {name: values[index] for name, values in columns.items()}


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  if not parts:
    return empty_columns()
  return {name: np.concatenate([p[name] for p in parts]) for name in FIELD_NAMES}
