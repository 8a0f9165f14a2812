"""Training examples: impressions after the clustering cutoff, joined per user.

A user's long sequences are stored once, in a user record; each impression record carries only
the target item, its label and `history_end`, the number of the user's behaviors strictly
before it. The input pipeline joins them (input_pipeline.py), so no sequence is copied into
every sample.

User record (one per user, tf.train.Example):
  user_id, cutoff, num_pre_cutoff       int64[1]  behaviors before the cutoff
  history_<f>  for f in spec.sequence_fields  int64[T]  every behavior, sorted by
                               (timestamp, item_id, play_time); features of an impression
                               only read history[:history_end]
  cluster_<f>  for f in spec.sequence_fields + (cluster_size,)  int64[C]  clusters of the
                               behaviors before the cutoff (cluster_timestamp = members' mean)
Impression record (one per impression, i.e. behavior at or after the cutoff):
  user_id, item_id, <spec.item_feature_names>, timestamp, label, history_end, split  int64[1]
  dense                                     float32[D]  statistics.DENSE_FEATURES, from
                                                        behaviors strictly before it
Group record (the streaming input, twin_tf.training.streaming; one per user, split and run of
at most GROUP_SIZE of the user's impressions of that split, in time order):
  user_id, num_pre_cutoff                   int64[1]
  cluster_<f>                               int64[C]  as in the user record
  history_<f>                               int64[H]  the user's behaviors before the group's
                               last impression (H >= num_pre_cutoff): the raw long-term
                               sequences and every impression's short-term window
  impression_<name>  for the impression fields but user_id and split  int64[G]
  impression_dense                          float32[G * D]
Every user has a train group record, without impressions if it has none, so the train records
hold every behavior a vocabulary is built from.
(spec: the log's FeatureSpec, twin_tf.data.feature_spec, saved beside the records.)

The split is chronological per user: of a user's impressions in time order, the last
`test_fraction` are test, the `validation_fraction` before them validation, the rest train.
Every feature of an impression comes from behaviors strictly before its timestamp.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from twin_tf.clustering import completion_groups
from twin_tf.clustering import records as cluster_records
from twin_tf.data import schema
from twin_tf.data.feature_spec import FeatureSpec
from twin_tf.model import features
from twin_tf.training import statistics

SPLITS = ("train", "validation", "test")
DENSE = features.DENSE
NUM_PRE_CUTOFF = "num_pre_cutoff"
GROUP_SIZE = 256
LAYOUT = 2  # 2: with group records (streaming); folders of layout 1 must be rebuilt


def impression_fields(spec: FeatureSpec) -> tuple[str, ...]:
  """The int64 fields of an impression record."""
  return ((schema.USER_ID,) + spec.candidate_fields +
          (schema.TIMESTAMP, schema.LABEL, "history_end", "split"))


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
  """Attributes: per-user fractions of the impressions (in time order) held out; M of the
  completion-group feature; max_impressions: at most this many of a user's impressions, the
  most recent (a long log's cap; None: all)."""

  validation_fraction: float = 0.2
  test_fraction: float = 0.2
  num_groups: int = 5
  max_impressions: Optional[int] = None

  def __post_init__(self):
    if self.max_impressions is not None and self.max_impressions < 1:
      raise ValueError(f"max_impressions must be >= 1, got {self.max_impressions}")


def user_examples(columns: dict[str, np.ndarray], clusters: dict, config: ExampleConfig,
                  item_stats: np.ndarray, spec: FeatureSpec
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """One user's behaviors and cluster record -> (user record, impressions).

  Args:
    columns: the user's behavior columns (the fields of `spec`), any order.
    clusters: the user's decoded cluster record (twin_tf.clustering.records.decode).
    config: split fractions.
    item_stats: (N, len(statistics.ITEM_FEATURES)) per row of `columns`, computed over
      every user's behaviors (statistics.item_statistics of the whole log).
    spec: the log's item features and flags.
  Returns:
    (user record {name: array}, impressions {impression_fields(spec): (I,) arrays,
    DENSE: (I, D)}).
  """
  order = np.lexsort((columns[schema.PLAY_TIME], columns[schema.ITEM_ID],
                      columns[schema.TIMESTAMP]))
  history = schema.take(columns, order)
  history[schema.GROUP] = completion_groups(history[schema.PLAY_TIME],
                                            history[schema.DURATION], config.num_groups)
  cutoff = clusters[cluster_records.CUTOFF]
  timestamps = history[schema.TIMESTAMP]
  num_pre_cutoff = int(np.sum(timestamps < cutoff)) if cutoff >= 0 else len(timestamps)
  user = {schema.USER_ID: clusters[schema.USER_ID], cluster_records.CUTOFF: cutoff,
          NUM_PRE_CUTOFF: num_pre_cutoff}
  user.update({f"history_{f}": history[f] for f in spec.sequence_fields})
  user.update({f"cluster_{f}": clusters[f]
               for f in spec.sequence_fields + (schema.CLUSTER_SIZE,)})

  chosen = np.arange(num_pre_cutoff, len(timestamps)) if cutoff >= 0 else np.zeros(0, int)
  if config.max_impressions is not None:
    chosen = chosen[-config.max_impressions:]  # max_impressions >= 1
  impressions = {f: history[f][chosen] for f in impression_fields(spec)[:-2]}
  impressions["history_end"] = np.searchsorted(timestamps, timestamps[chosen], side="left")
  impressions["split"] = split_ids(len(chosen), config)
  impressions[DENSE] = np.concatenate([
      statistics.user_statistics(history, impressions["history_end"],
                                 impressions[spec.primary], impressions[schema.TIMESTAMP],
                                 spec.primary),
      np.asarray(item_stats, np.float32)[order][chosen]], axis=1)
  return user, impressions


def group_fields(spec: FeatureSpec) -> tuple[str, ...]:
  """The per-impression int64 fields of a group record (without the `impression_` prefix)."""
  return impression_fields(spec)[1:-1]


def user_groups(user: dict[str, np.ndarray], impressions: dict[str, np.ndarray],
                spec: FeatureSpec, group_size: int = GROUP_SIZE
                ) -> list[tuple[str, dict[str, np.ndarray]]]:
  """A user's group records (the streaming layout above) from user_examples' output:
  [(split, record)], each split's impressions in time order, at most group_size a record."""
  out = []
  for index, split in enumerate(SPLITS):
    chosen = np.flatnonzero(impressions["split"] == index)
    starts = range(0, len(chosen), group_size) if len(chosen) else ([0] if index == 0 else [])
    for start in starts:
      rows = chosen[start:start + group_size]
      end = max(int(user[NUM_PRE_CUTOFF]), int(impressions["history_end"][rows].max(initial=0)))
      record = {schema.USER_ID: user[schema.USER_ID], NUM_PRE_CUTOFF: user[NUM_PRE_CUTOFF]}
      record.update({f"cluster_{f}": user[f"cluster_{f}"]
                     for f in spec.sequence_fields + (schema.CLUSTER_SIZE,)})
      record.update({f"history_{f}": user[f"history_{f}"][:end] for f in spec.sequence_fields})
      record.update({f"impression_{f}": impressions[f][rows] for f in group_fields(spec)})
      record[f"impression_{DENSE}"] = impressions[DENSE][rows].reshape(-1)
      out.append((split, record))
  return out


def split_ids(num: int, config: ExampleConfig) -> np.ndarray:
  """(num,) split index (0 train, 1 validation, 2 test) of impressions in time order."""
  num_test = int(round(num * config.test_fraction))
  num_validation = int(round(num * config.validation_fraction))
  num_train = max(num - num_test - num_validation, 0)
  return np.repeat(np.arange(3), [num_train, num - num_train - num_test, num_test])
