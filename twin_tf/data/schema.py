"""The behavior-log schema: every core field of a behavior, named once.

A behavior is one interaction of a user with an item. Every module reads field names and dtypes
from here; nothing else spells them. A log's item features and behavior flags (category,
author, tagged, liked, ...) are declared by its FeatureSpec (twin_tf.data.feature_spec).

Core fields (one row per behavior):
  user_id     int64    the user.
  item_id     int64    the item.
  timestamp   int64    unix seconds of the behavior.
  play_time   float32  seconds watched (>= 0).
  duration    float32  item length in seconds (> 0), or 0 for unknown.
  label       int64    click / positive feedback, 0 or 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Field:
  """One column of the behavior log."""

  name: str
  dtype: type
  kind: str  # "id" | "numeric" | "categorical" | "label" | "flag"
  inherent: bool = False  # an item feature, the same for every user


USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
PLAY_TIME = "play_time"
DURATION = "duration"
LABEL = "label"

CORE_FIELDS: tuple[Field, ...] = (
    Field(USER_ID, np.int64, "id"),
    Field(ITEM_ID, np.int64, "id", inherent=True),
    Field(TIMESTAMP, np.int64, "numeric"),
    Field(PLAY_TIME, np.float32, "numeric"),
    Field(DURATION, np.float32, "numeric", inherent=True),
    Field(LABEL, np.int64, "label"),
)
CORE_NAMES = tuple(f.name for f in CORE_FIELDS)

# Per-cluster (virtual item) columns written by the clustering pipeline, besides the
# representative member's item id, item features and flags. Numerical fields are the
# members' mean.
CLUSTER_SIZE = "cluster_size"
COMPLETION = "completion"  # min(play_time / duration, 1); NaN where duration is unknown
GROUP = "group"  # rule-based completion group, 0..M-1, or M for unknown duration
CLUSTER_NUMERIC = (TIMESTAMP, PLAY_TIME, DURATION, LABEL, COMPLETION)


def take(columns: dict[str, np.ndarray], index) -> dict[str, np.ndarray]:
  """Row subset (boolean mask or integer index) of every column."""
  return {name: values[index] for name, values in columns.items()}


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """The rows of several column sets with the same names, one after another."""
  return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


_NARROW = (np.int8, np.int16, np.int32)


def narrowed(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Every integer column in the narrowest signed integer dtype that holds its values
  (lossless): 2-3x smaller columns to ship through a shuffle; widened() restores them."""
  out = {}
  for name, values in columns.items():
    if values.dtype.kind in "iu" and len(values):
      low, high = values.min(), values.max()
      for dtype in _NARROW:
        if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
          values = values.astype(dtype)
          break
    out[name] = values
  return out


def widened(columns: dict[str, np.ndarray], dtypes: dict[str, type]) -> dict[str, np.ndarray]:
  """The columns named in `dtypes` back in those dtypes (the others as they are)."""
  return {name: values.astype(dtypes[name], copy=False) if name in dtypes else values
          for name, values in columns.items()}
