"""Model input names, cross features and vocabularies shared by training and serving.

Model inputs (B examples, L long-term positions, S = 50 short-term positions, J = 5):
  target_item, target_category, target_year, target_hour, target_weekday   (B,) int32
  long_item, long_category, long_year                                      (B, L) int32
  long_cross        (B, L, J) int32: completion group, tagged, hour, weekday, age bucket
  long_size         (B, L) float32: cluster size n (1 for a raw behavior, 0 for padding)
  long_mask         (B, L) bool
  short_item, short_category, short_year, short_cross, short_mask          same, L = S
  dense             (B, D) float32: DENSE_FEATURES of the impression (raw; the model
                    normalizes them)
Index 0 is padding in every id feature; item index 1 is out-of-vocabulary.
"""

from __future__ import annotations

import numpy as np

SHORT_LENGTH = 50
CROSS_FEATURES = ("group", "tagged", "hour", "weekday", "age")
NUM_AGE_BUCKETS = 16  # floor(log2(1 + age in days)), capped
# Vocabulary sizes of the cross features, padding included.
# "group": completion groups 0..M (M = unknown duration) + padding, for M <= 10.
CROSS_VOCAB = {"group": 12, "tagged": 3, "hour": 25, "weekday": 8, "age": NUM_AGE_BUCKETS + 1}
CATEGORY_VOCAB, YEAR_VOCAB = 32, 40
PAD, OOV = 0, 1
TARGET_KEYS = ("target_item", "target_category", "target_year", "target_hour",
               "target_weekday")
SEQUENCE_FIELDS = ("item", "category", "year", "cross", "size", "mask")
# Dense "other features": user, item and user-item statistics from behaviors strictly before
# the impression (twin_tf.training.statistics computes them; these names fix their order).
USER_DENSE = ("user_log_count", "user_positive_rate", "user_recent_positive_rate",
              "user_completion_mean", "user_completion_std", "user_log_gap_days",
              "user_log_tenure_days", "user_category_share", "user_category_positive_rate")
ITEM_DENSE = ("item_log_count", "item_positive_rate", "item_completion_mean",
              "item_log_age_days")
DENSE_FEATURES = USER_DENSE + ITEM_DENSE
DENSE = "dense"


def sequence_keys(prefix: str) -> tuple[str, ...]:
  return tuple(f"{prefix}_{f}" for f in SEQUENCE_FIELDS)


def cross_ids(tf, group, tagged, timestamp, reference_time, valid):
  """Cross-feature ids (..., J) of behaviors, relative to a reference (target) time.

  Args:
    tf: the tensorflow module (kept as an argument so numpy-only callers never import it).
    group, tagged, timestamp: (...,) int64 behavior fields; reference_time broadcasts.
    valid: (...,) bool; padding gets id 0 in every cross feature.
  """
  hour = timestamp // 3600 % 24 + 1
  weekday = (timestamp // 86400 + 3) % 7 + 1  # 1970-01-01 was a Thursday; Monday = 1
  age_days = tf.cast(tf.maximum(reference_time - timestamp, 0), tf.float32) / 86400.0
  age = tf.minimum(tf.cast(tf.math.floor(tf.math.log(1.0 + age_days) / np.log(2.0)), tf.int64),
                   NUM_AGE_BUCKETS - 1) + 1
  ids = tf.stack([group + 1, tagged + 1, hour, weekday, age], axis=-1)
  return tf.where(valid[..., None], ids, tf.zeros_like(ids))


def time_context(tf, timestamp):
  """(hour + 1, weekday + 1) of target timestamps."""
  return timestamp // 3600 % 24 + 1, (timestamp // 86400 + 3) % 7 + 1


def sequence_inputs(tf, prefix, item_index, category, year_bucket, group, tagged, timestamp,
                    size, valid, reference_time) -> dict:
  """Raw sequence fields (int64, any leading shape (..., L)) -> model inputs `<prefix>_*`.

  item_index is already the vocabulary index; reference_time broadcasts against timestamp
  (e.g. (B, 1) for (B, L)). Padding (valid False) gets id 0 everywhere and size 0.
  """
  zero = tf.zeros_like(item_index)
  inputs = {
      "item": tf.where(valid, item_index, zero),
      "category": tf.where(valid, tf.minimum(category, CATEGORY_VOCAB - 1), zero),
      "year": tf.where(valid, tf.minimum(year_bucket, YEAR_VOCAB - 1), zero),
      "cross": cross_ids(tf, group, tagged, timestamp, reference_time, valid),
      "size": tf.where(valid, tf.cast(size, tf.float32), tf.zeros_like(size, tf.float32)),
      "mask": valid}
  return {f"{prefix}_{k}": (tf.cast(v, tf.int32) if v.dtype == tf.int64 else v)
          for k, v in inputs.items()}


def target_inputs(tf, item_index, category, year_bucket, timestamp) -> dict:
  """Raw target fields (int64) -> model inputs `target_*`; timestamp gives hour / weekday."""
  hour, weekday = time_context(tf, timestamp)
  inputs = {"target_item": item_index,
            "target_category": tf.minimum(category, CATEGORY_VOCAB - 1),
            "target_year": tf.minimum(year_bucket, YEAR_VOCAB - 1),
            "target_hour": hour, "target_weekday": weekday}
  return {k: tf.cast(v, tf.int32) for k, v in inputs.items()}


class ItemVocabulary:
  """item_id -> index: 0 padding, 1 out-of-vocabulary, 2.. known items (sorted ids)."""

  def __init__(self, item_ids: np.ndarray):
    self.item_ids = np.unique(np.asarray(item_ids, dtype=np.int64))

  def __len__(self) -> int:
    return len(self.item_ids) + 2

  def lookup(self, item_ids: np.ndarray) -> np.ndarray:
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if not len(self.item_ids):
      return np.full(item_ids.shape, OOV, dtype=np.int64)
    pos = np.minimum(np.searchsorted(self.item_ids, item_ids), len(self.item_ids) - 1)
    return np.where(self.item_ids[pos] == item_ids, pos + 2, OOV)

  def save(self, path) -> None:
    with open(path, "wb") as f:
      np.save(f, self.item_ids)

  @classmethod
  def load(cls, path) -> "ItemVocabulary":
    return cls(np.load(path))


def placeholder_inputs(batch: int = 1, length: int = 1) -> dict:
  """Model inputs of zeros (all padding) with the right dtypes: enough to build a model."""
  out = {k: np.zeros((batch,), np.int32) for k in TARGET_KEYS}
  out[DENSE] = np.zeros((batch, len(DENSE_FEATURES)), np.float32)
  for prefix, width in (("long", length), ("short", SHORT_LENGTH)):
    out.update({f"{prefix}_item": np.zeros((batch, width), np.int32),
                f"{prefix}_category": np.zeros((batch, width), np.int32),
                f"{prefix}_year": np.zeros((batch, width), np.int32),
                f"{prefix}_cross": np.zeros((batch, width, len(CROSS_FEATURES)), np.int32),
                f"{prefix}_size": np.zeros((batch, width), np.float32),
                f"{prefix}_mask": np.zeros((batch, width), bool)})
  return out
