"""Model input names and cross features, shared by training and serving.

Model inputs, for a FeatureSpec `spec` (B examples, L long-term positions, S = 50 short-term
positions; f runs over spec.candidate_fields = item_id and the item features, J = 4 +
len(spec.behavior_flags)):
  target_<f>                       (B,) int32  vocabulary indexes (twin_tf.model.vocabulary)
  target_hour, target_weekday      (B,) int32
  long_<f>                         (B, L) int32
  long_cross        (B, L, J) int32: completion group, the flags, hour, weekday, age bucket
  long_size         (B, L) float32: cluster size n (1 for a raw behavior, 0 for padding)
  long_mask         (B, L) bool
  short_<f>, short_cross, short_size, short_mask          the same, L = S
  long_chosen       (B, C, K) int32, optional (serving's esu signature): positions into the
                    long sequence already chosen per candidate, -1 for none
  dense             (B, D) float32: DENSE_FEATURES of the impression (raw; the model
                    normalizes them)
Index 0 is padding in every id feature; index 1 is out-of-vocabulary.
"""

from __future__ import annotations

import numpy as np

from twin_tf.data import schema
from twin_tf.data.feature_spec import FeatureSpec

SHORT_LENGTH = 50
CHOSEN = "long_chosen"
# The key cache's inherent projections of long rows (B, U, H, d), for the ESU over CHOSEN.
CACHED_KEYS = "long_keys"
CACHED_VALUE_HEADS = "long_value_heads"
NUM_AGE_BUCKETS = 16  # floor(log2(1 + age in days)), capped
MAX_GROUPS = 10
# Vocabulary sizes of the cross features, padding included: completion groups 0..M
# (M = unknown duration) for M <= MAX_GROUPS, flags 0/1, hour, weekday, age bucket.
GROUP_VOCAB, FLAG_VOCAB = MAX_GROUPS + 2, 3
TIME_CROSS_VOCAB = {"hour": 25, "weekday": 8, "age": NUM_AGE_BUCKETS + 1}
TIME_KEYS = ("target_hour", "target_weekday")
# Dense "other features": user, item and user-item statistics from behaviors strictly before
# the impression (twin_tf.training.statistics computes them; these names fix their order).
USER_DENSE = ("user_log_count", "user_positive_rate", "user_recent_positive_rate",
              "user_completion_mean", "user_completion_std", "user_log_gap_days",
              "user_log_tenure_days", "user_category_share", "user_category_positive_rate")
ITEM_DENSE = ("item_log_count", "item_positive_rate", "item_completion_mean",
              "item_log_age_days")
DENSE_FEATURES = USER_DENSE + ITEM_DENSE
DENSE = "dense"


def cross_features(spec: FeatureSpec) -> tuple[str, ...]:
  """Names of the J cross features, in the order of the last axis of `<prefix>_cross`."""
  return (schema.GROUP,) + spec.behavior_flags + tuple(TIME_CROSS_VOCAB)


def cross_vocab(spec: FeatureSpec) -> list[int]:
  """Vocabulary size of each cross feature (padding included)."""
  return ([GROUP_VOCAB] + [FLAG_VOCAB] * len(spec.behavior_flags) +
          list(TIME_CROSS_VOCAB.values()))


def target_keys(spec: FeatureSpec) -> tuple[str, ...]:
  return tuple(f"target_{f}" for f in spec.candidate_fields) + TIME_KEYS


def sequence_keys(spec: FeatureSpec, prefix: str) -> tuple[str, ...]:
  return tuple(f"{prefix}_{f}" for f in spec.candidate_fields + ("cross", "size", "mask"))


def cross_ids(tf, group, flags, timestamp, reference_time, valid):
  """Cross-feature ids (..., J) of behaviors, relative to a reference (target) time.

  Args:
    tf: the tensorflow module (kept as an argument so numpy-only callers never import it).
    group, timestamp: (...,) int64 behavior fields; flags: list of (...,) int64 0/1 fields;
      reference_time broadcasts.
    valid: (...,) bool; padding gets id 0 in every cross feature.
  """
  hour = timestamp // 3600 % 24 + 1
  weekday = (timestamp // 86400 + 3) % 7 + 1  # 1970-01-01 was a Thursday; Monday = 1
  age_days = tf.cast(tf.maximum(reference_time - timestamp, 0), tf.float32) / 86400.0
  age = tf.minimum(tf.cast(tf.math.floor(tf.math.log(1.0 + age_days) / np.log(2.0)), tf.int64),
                   NUM_AGE_BUCKETS - 1) + 1
  keep = tf.cast(valid, timestamp.dtype)  # masked per column: cheaper than after the stack
  columns = [group + 1] + [flag + 1 for flag in flags] + [hour, weekday, age]
  return tf.stack([column * keep for column in columns], axis=-1)


def time_context(tf, timestamp):
  """(hour + 1, weekday + 1) of target timestamps."""
  return timestamp // 3600 % 24 + 1, (timestamp // 86400 + 3) % 7 + 1


def sequence_inputs(tf, spec: FeatureSpec, prefix: str, seq: dict, size, valid,
                    reference_time, items: bool = True) -> dict:
  """Sequence fields (int64, any leading shape (..., L)) -> model inputs `<prefix>_*`.

  seq holds spec.sequence_fields, the candidate fields already vocabulary indexes (without
  `items`: not the candidate fields, and no item inputs come out); reference_time broadcasts
  against the timestamps (e.g. (B, 1) for (B, L)). Padding (valid False) gets id 0
  everywhere and size 0.
  """
  inputs = {f: tf.where(valid, seq[f], tf.zeros_like(seq[f]))
            for f in (spec.candidate_fields if items else ())}
  inputs["cross"] = cross_ids(tf, seq[schema.GROUP], [seq[f] for f in spec.behavior_flags],
                              seq[schema.TIMESTAMP], reference_time, valid)
  inputs["size"] = tf.where(valid, tf.cast(size, tf.float32), tf.zeros_like(size, tf.float32))
  inputs["mask"] = valid
  return {f"{prefix}_{k}": (tf.cast(v, tf.int32) if v.dtype == tf.int64 else v)
          for k, v in inputs.items()}


def target_inputs(tf, spec: FeatureSpec, ids: dict, timestamp) -> dict:
  """Candidate fields (vocabulary indexes, int64) -> `target_*`; timestamp gives hour and
  weekday."""
  hour, weekday = time_context(tf, timestamp)
  inputs = {f"target_{f}": ids[f] for f in spec.candidate_fields}
  inputs.update({"target_hour": hour, "target_weekday": weekday})
  return {k: tf.cast(v, tf.int32) for k, v in inputs.items()}


def placeholder_inputs(spec: FeatureSpec, batch: int = 1, length: int = 1) -> dict:
  """Model inputs of zeros (all padding) with the right dtypes: enough to build a model."""
  out = {k: np.zeros((batch,), np.int32) for k in target_keys(spec)}
  out[DENSE] = np.zeros((batch, len(DENSE_FEATURES)), np.float32)
  for prefix, width in (("long", length), ("short", SHORT_LENGTH)):
    out.update({f"{prefix}_{f}": np.zeros((batch, width), np.int32)
                for f in spec.candidate_fields})
    out.update({f"{prefix}_cross": np.zeros((batch, width, len(cross_features(spec))), np.int32),
                f"{prefix}_size": np.zeros((batch, width), np.float32),
                f"{prefix}_mask": np.zeros((batch, width), bool)})
  return out
