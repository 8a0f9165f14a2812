"""Training examples: impressions after the clustering cutoff (and, with cluster snapshots,
the periods between them), joined per user.

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
Impression record (one per impression, i.e. behavior at or after the cutoff, or at or after
the first earlier cluster snapshot's cutoff, train only):
  user_id, item_id, <spec.item_feature_names>, timestamp, label, history_end, split  int64[1]
  dense                                     float32[D]  statistics.DENSE_FEATURES, from
                                                        behaviors strictly before it
Group record (the streaming input, twin_tf.training.streaming; one per user, split, cluster
snapshot and run of at most GROUP_SIZE of those impressions, in time order):
  user_id, num_pre_cutoff                   int64[1]  behaviors before the snapshot's cutoff
  cluster_<f>                               int64[C]  the snapshot's clusters (the user
                               record's for impressions after the cutoff)
  history_<f>                               int64[H]  the user's behaviors before the group's
                               last impression (H >= num_pre_cutoff): the raw long-term
                               sequences and every impression's short-term window
  impression_<name>  for the impression fields but user_id and split  int64[G]
  impression_dense                          float32[G * D]
Every user has a train group record, without impressions if it has none, so the train records
hold every behavior a vocabulary is built from.
(spec: the log's FeatureSpec, twin_tf.data.feature_spec, saved beside the records.)

The split is chronological per user: of a user's impressions after the cutoff in time order,
the last `test_fraction` are test, the `validation_fraction` before them validation, the rest
train. With earlier cluster snapshots (ClusteringConfig.snapshots: periodic offline
re-clustering), every behavior from the first snapshot's cutoff to the user's cutoff is a
train impression as well, and reads the newest snapshot built strictly before it: only the
group records hold those snapshots, so only the streaming input reads such impressions with
their long-term features (input_pipeline refuses them). Every feature of an impression comes
from behaviors strictly before its timestamp.
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
SNAPSHOT = "snapshot"  # per impression: which of the user's cluster snapshots it reads
GROUP_SIZE = 256
LAYOUT = 2  # 2: with group records (streaming); folders of layout 1 must be rebuilt


def impression_fields(spec: FeatureSpec) -> tuple[str, ...]:
  """The int64 fields of an impression record."""
  return ((schema.USER_ID,) + spec.candidate_fields +
          (schema.TIMESTAMP, schema.LABEL, "history_end", "split"))


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
  """Attributes: per-user fractions of the impressions (in time order) held out; M of the
  completion-group feature; max_impressions: at most this many of a user's impressions
  after the cutoff, the most recent (a long log's cap; None: all)."""

  validation_fraction: float = 0.2
  test_fraction: float = 0.2
  num_groups: int = 5
  max_impressions: Optional[int] = None

  def __post_init__(self):
    if self.max_impressions is not None and self.max_impressions < 1:
      raise ValueError(f"max_impressions must be >= 1, got {self.max_impressions}")


def user_examples(columns: dict[str, np.ndarray], clusters: dict, config: ExampleConfig,
                  item_stats: np.ndarray, spec: FeatureSpec, snapshots=()
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[dict]]:
  """One user's behaviors and cluster records -> (user record, impressions, snapshots).

  Args:
    columns: the user's behavior columns (the fields of `spec`), any order.
    clusters: the user's decoded cluster record (twin_tf.clustering.records.decode).
    config: split fractions.
    item_stats: (N, len(statistics.ITEM_FEATURES)) per row of `columns`, computed over
      every user's behaviors (statistics.item_statistics of the whole log).
    spec: the log's item features and flags.
    snapshots: the user's earlier decoded cluster snapshots (cluster_behaviors' snapshots-*,
      any order): each behavior from a snapshot's cutoff to the next one's is a train
      impression too, and its group record reads that snapshot's clusters (user_groups).
  Returns:
    user record {name: array};
    impressions {impression_fields(spec): (I,) arrays, DENSE: (I, D), SNAPSHOT: (I,) index
      into snapshots}, in time order;
    snapshots [{num_pre_cutoff, cluster_<f>}]: the earlier snapshots before the cutoff, in
      time order, then the cutoff's own clusters.
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
  user.update(_cluster_fields(clusters, spec))

  chosen = np.arange(num_pre_cutoff, len(timestamps)) if cutoff >= 0 else np.zeros(0, int)
  if config.max_impressions is not None:
    chosen = chosen[-config.max_impressions:]  # max_impressions >= 1
  split = split_ids(len(chosen), config)
  earlier = sorted((s for s in snapshots if 0 <= s[cluster_records.CUTOFF] < cutoff),
                   key=lambda s: s[cluster_records.CUTOFF])
  starts = np.searchsorted(timestamps, [s[cluster_records.CUTOFF] for s in earlier])
  snapshot_records = [{NUM_PRE_CUTOFF: int(start), **_cluster_fields(s, spec)}
                     for start, s in zip(starts, earlier)] + [
                         {NUM_PRE_CUTOFF: num_pre_cutoff, **_cluster_fields(clusters, spec)}]
  if earlier:  # the periods between snapshots: train impressions
    chosen = np.concatenate([np.arange(starts[0], num_pre_cutoff), chosen])
    split = np.concatenate([np.zeros(num_pre_cutoff - starts[0], split.dtype), split])
  impressions = {f: history[f][chosen] for f in impression_fields(spec)[:-2]}
  impressions["history_end"] = np.searchsorted(timestamps, timestamps[chosen], side="left")
  impressions["split"] = split
  impressions[SNAPSHOT] = np.searchsorted(np.append(starts, num_pre_cutoff), chosen,
                                          side="right") - 1
  impressions[DENSE] = np.concatenate([
      statistics.user_statistics(history, impressions["history_end"],
                                 impressions[spec.primary], impressions[schema.TIMESTAMP],
                                 spec.primary),
      np.asarray(item_stats, np.float32)[order][chosen]], axis=1)
  return user, impressions, snapshot_records


def _cluster_fields(clusters: dict, spec: FeatureSpec) -> dict[str, np.ndarray]:
  return {f"cluster_{f}": clusters[f] for f in spec.sequence_fields + (schema.CLUSTER_SIZE,)}


def group_fields(spec: FeatureSpec) -> tuple[str, ...]:
  """The per-impression int64 fields of a group record (without the `impression_` prefix)."""
  return impression_fields(spec)[1:-1]


def user_groups(user: dict[str, np.ndarray], impressions: dict[str, np.ndarray],
                snapshots: list[dict], spec: FeatureSpec, group_size: int = GROUP_SIZE
                ) -> list[tuple[str, dict[str, np.ndarray]]]:
  """A user's group records (the streaming layout above) from user_examples' output:
  [(split, record)], each split's impressions of one cluster snapshot in time order, at
  most group_size a record, with that snapshot's clusters and num_pre_cutoff."""
  out = []
  snapshot_of = impressions[SNAPSHOT]
  for index, split in enumerate(SPLITS):
    in_split = impressions["split"] == index
    runs = [(s, np.flatnonzero(in_split & (snapshot_of == s))) for s in range(len(snapshots))]
    runs = [(s, rows) for s, rows in runs if len(rows)]
    if not runs and index == 0:  # every user has a train record: vocabularies read them
      runs = [(len(snapshots) - 1, np.zeros(0, np.int64))]
    for snapshot, chosen in runs:
      clusters = snapshots[snapshot]
      for start in (range(0, len(chosen), group_size) if len(chosen) else [0]):
        rows = chosen[start:start + group_size]
        end = max(int(clusters[NUM_PRE_CUTOFF]),
                  int(impressions["history_end"][rows].max(initial=0)))
        record = {schema.USER_ID: user[schema.USER_ID], **clusters}
        record.update({f"history_{f}": user[f"history_{f}"][:end]
                       for f in spec.sequence_fields})
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
