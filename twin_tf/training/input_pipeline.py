"""In-memory tf.data input: joins impressions with their user's sequences, bucketed by length.

Training streams its batches (training.streaming); this path serves where examples are needed
in a fixed impression order next to their metadata (evaluation, predictions, serving requests,
analyses), on data that fits in memory. It also fits the buckets both paths use.

User records are loaded once into padded in-memory tables (one row per user); each impression
gathers its user's rows inside the tf.data graph, so a long sequence exists once per user, not
once per sample. Long sequences are padded to a few fixed lengths (buckets): every batch has a
static shape, which the JAX backend needs, and short histories do not pay for long ones. The
buckets are fitted to the data (fitted_buckets: quantiles of the training examples' lengths,
the largest at the longest sequence), so little of what is computed is padding; LEGACY_BUCKETS
are the fixed lengths used before, kept for comparison (bench/train_throughput.py).

Long-term sources (what the long-term module attends over):
  clusters  TWIN-V2: the user's clusters (virtual items), size n per cluster.
  raw       TWIN / SIM: the user's raw behaviors before the cutoff (the most recent
            `max_raw`), n = 1: the same life-cycle coverage as the clusters.
  uniform   ablation: as many raw behaviors as the user has clusters, sampled uniformly
            (seeded) from those before the cutoff, n = 1.
  none      no long-term module (DIN): every user's long-term sequence is empty, so the
            batches do not depend on the clustering (one bucket, no cluster tensors).
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib

import numpy as np

from twin_tf.clustering import records as cluster_records
from twin_tf.data import feature_spec, schema, tfexample
from twin_tf.data.feature_spec import FeatureSpec
from twin_tf.model import features
from twin_tf.model.vocabulary import Vocabularies
from twin_tf.training import examples, statistics

LEGACY_BUCKETS = (32, 128, 512, 1024, 2048, 4096, 10_000)
NUM_BUCKETS = 6


def fitted_buckets(lengths: np.ndarray, longest: int, count: int = NUM_BUCKETS,
                   multiple: int = 8, merge_within: float = 0.15, minimum: int = 1
                   ) -> tuple[int, ...]:
  """Padded lengths fitted to the examples' sequence lengths: their 1/count, 2/count, ...
  quantiles rounded up to a multiple of 8, and `longest` (the longest sequence of any split);
  a bucket within `merge_within` of the next larger one is dropped (one more traced shape
  costs more than that little padding), and none is below `minimum` (a GSU model pads
  shorter sequences to its top-k anyway). An example pads at most to the next bucket."""
  top = -(-max(int(longest), minimum, 1) // multiple) * multiple
  if not len(lengths):
    return (top,)
  quantiles = np.quantile(np.maximum(lengths, minimum), np.arange(1, count) / count)
  candidates = sorted({min(int(-(-q // multiple) * multiple), top) for q in quantiles},
                      reverse=True)
  kept = [top]
  for bucket in candidates:
    if bucket < (1 - merge_within) * kept[-1]:
      kept.append(bucket)
  return tuple(sorted(kept))


LONG_SOURCES = ("clusters", "raw", "uniform", "none")


@dataclasses.dataclass
class ExampleData:
  """Users as padded tables, impressions per split, the feature spec and the vocabularies.

  Attributes:
    spec: the item features and flags of the examples (their feature_spec.json).
    user_ids: (U,) sorted.
    history: {field: (U, T) int64} for spec.sequence_fields, behaviors in time order, zero
      padded (raw ids); history_len (U,).
    num_pre_cutoff: (U,) behaviors before the user's cutoff.
    clusters: {field: (U, C) int64} plus cluster_size; cluster_len (U,).
    impressions: {split: {examples.impression_fields(spec) + "user_row": (I,) int64,
      "dense": (I, D) float32}}.
    vocabularies: of the item id and item features (built from train targets and pre-cutoff
      behaviors, or hashed).
  """

  spec: FeatureSpec

  user_ids: np.ndarray
  history: dict[str, np.ndarray]
  history_len: np.ndarray
  num_pre_cutoff: np.ndarray
  clusters: dict[str, np.ndarray]
  cluster_len: np.ndarray
  impressions: dict[str, dict[str, np.ndarray]]
  vocabularies: Vocabularies


def _pad(rows: list[np.ndarray], fill: int = 0) -> np.ndarray:
  """Rows of different lengths -> (len(rows), longest) int64, `fill` after each row."""
  out = np.full((len(rows), max([len(r) for r in rows] + [1])), fill, dtype=np.int64)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def load_example_data(folder: str | pathlib.Path, vocabularies: Vocabularies | None = None,
                      first_test: int | None = None) -> ExampleData:
  """Reads users-* and impressions_<split>-* written by beam_pipelines.build_examples.

  Without `vocabularies` (a trained run's), they are built from this data's train split.
  first_test: read only the first that many test impressions and their users (warmup
  requests; memory bounded by those users, not the examples); needs `vocabularies`.
  """
  folder = str(folder).rstrip("/")
  spec = feature_spec.load(folder)
  if first_test is not None and vocabularies is None:
    raise ValueError("load_example_data(first_test=...) needs the run's vocabularies")
  impressions = {split: _impressions(folder, split, spec, first_test)
                 for split in (examples.SPLITS if first_test is None else ("test",))}
  wanted = None if first_test is None else set(impressions["test"][schema.USER_ID].tolist())
  users = sorted((tfexample.decode(s) for s in tfexample.iterate_serialized(f"{folder}/users-*")
                  if wanted is None or cluster_records.user_id(s) in wanted),
                 key=lambda u: int(u[schema.USER_ID][0]))
  user_ids = np.array([int(u[schema.USER_ID][0]) for u in users], dtype=np.int64)
  fields = spec.sequence_fields
  history = {f: _pad([u[f"history_{f}"] for u in users]) for f in fields}
  clusters = {f: _pad([u[f"cluster_{f}"] for u in users])
              for f in fields + (schema.CLUSTER_SIZE,)}
  data = ExampleData(
      spec=spec, user_ids=user_ids, history=history,
      history_len=np.array([len(u[f"history_{schema.ITEM_ID}"]) for u in users]),
      num_pre_cutoff=np.array([int(u[examples.NUM_PRE_CUTOFF][0]) for u in users]),
      clusters=clusters,
      cluster_len=np.array([len(u[f"cluster_{schema.CLUSTER_SIZE}"]) for u in users]),
      impressions=impressions, vocabularies=vocabularies)
  for table in impressions.values():
    table["user_row"] = np.searchsorted(user_ids, table[schema.USER_ID])
  if data.vocabularies is None:
    pre_cutoff = np.arange(history[schema.ITEM_ID].shape[1])[None, :] < \
        data.num_pre_cutoff[:, None]
    data.vocabularies = Vocabularies.from_values(spec, {
        f: np.concatenate([data.impressions["train"][f], history[f][pre_cutoff]])
        for f in spec.candidate_fields})
  return data


def _impressions(folder: str, split: str, spec, first: int | None) -> dict[str, np.ndarray]:
  """The impression table {field: (I,)} of a split's records (the first `first` of them)."""
  records = [tfexample.decode(s) for s in itertools.islice(
      tfexample.iterate_serialized(f"{folder}/impressions_{split}-*"), first)]
  table = {name: np.array([r[name][0] for r in records], dtype=np.int64)
           for name in examples.impression_fields(spec)}
  table[examples.DENSE] = np.array([r[examples.DENSE] for r in records], np.float32
                                   ).reshape(len(records), len(statistics.DENSE_FEATURES))
  return table


def long_term_index(data: ExampleData, source: str, max_raw: int = 10_000, seed: int = 0,
                    budget: int | None = None) -> np.ndarray:
  """(U, L) positions of each user's long-term sequence, -1 for padding.

  Positions index data.clusters for source "clusters", data.history otherwise ("none": every
  row is padding). With a sequence budget, raw keeps the most recent `budget` behaviors,
  uniform samples `budget`, and clusters must already fit (ValueError otherwise).
  """
  if source == "clusters":
    if budget is not None and data.cluster_len.max(initial=0) > budget:
      raise ValueError(f"a user has {data.cluster_len.max()} clusters, over the budget of "
                       f"{budget}: cluster with ClusteringConfig(max_clusters={budget})")
    lengths, starts = data.cluster_len, np.zeros_like(data.cluster_len)
  elif source == "raw":
    lengths = np.minimum(data.num_pre_cutoff, max_raw if budget is None else budget)
    starts = data.num_pre_cutoff - lengths  # the most recent ones
  elif source == "none":
    lengths = starts = np.zeros_like(data.cluster_len)
  elif source == "uniform":
    rng = np.random.default_rng(seed)
    wanted = data.cluster_len if budget is None else np.full_like(data.cluster_len, budget)
    return _pad([np.sort(rng.choice(n, size=min(c, n), replace=False))
                 for n, c in zip(data.num_pre_cutoff, wanted)], fill=-1)
  else:
    raise ValueError(f"unknown long-term source {source!r}; expected one of {LONG_SOURCES}")
  width = max(int(lengths.max(initial=0)), 1)
  position = np.arange(width)[None, :]
  return np.where(position < lengths[:, None], starts[:, None] + position, -1)


def bucket_length(length: np.ndarray, buckets) -> np.ndarray:
  """Smallest bucket >= length (the largest bucket for longer sequences, then truncated)."""
  chosen = np.searchsorted(np.asarray(buckets), np.maximum(length, 1))
  return np.asarray(buckets)[np.minimum(chosen, len(buckets) - 1)]


class DatasetBuilder:
  """Builds tf.data datasets of model inputs for one long-term source."""

  def __init__(self, data: ExampleData, source: str, max_raw: int = 10_000, seed: int = 0,
               buckets=None, budget: int | None = None, min_bucket: int = 1):
    """buckets: padded lengths (None: fitted_buckets of the training examples, none below
    min_bucket: the model's GSU top-k, to which it pads shorter sequences itself)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    self._tf, self.data, self.source = tf, data, source
    spec, vocabularies = data.spec, data.vocabularies
    index = long_term_index(data, source, max_raw, seed, budget)  # (U, L)
    lengths = (index >= 0).sum(axis=1)
    train_rows = data.impressions["train"]["user_row"] if "train" in data.impressions else []
    self.min_bucket = min_bucket
    self.buckets = tuple(buckets) if buckets is not None else fitted_buckets(
        lengths[train_rows], lengths.max(initial=1), minimum=min_bucket)
    if index.shape[1] > self.buckets[-1]:  # keep the most recent positions of each user
      index = _pad([row[row >= 0][-self.buckets[-1]:] for row in index], fill=-1)
    self.long_len = (index >= 0).sum(axis=1)
    width = int(bucket_length(np.array([index.shape[1]]), self.buckets)[0])
    index = np.pad(index, ((0, 0), (0, width - index.shape[1])), constant_values=-1)
    table = data.clusters if source == "clusters" else data.history
    safe = np.maximum(index, 0)
    gathered = vocabularies.indexed({f: np.take_along_axis(table[f], safe, axis=1)
                                     for f in spec.sequence_fields})
    size = (np.take_along_axis(table[schema.CLUSTER_SIZE], safe, axis=1)
            if source == "clusters" else np.ones_like(safe))
    valid = index >= 0
    self._long = {f: tf.constant(np.where(valid, v, 0)) for f, v in gathered.items()}
    self._long["size"] = tf.constant(np.where(valid, size, 0).astype(np.float32))
    self._long["mask"] = tf.constant(valid)
    self._history = {f: tf.constant(v)
                     for f, v in vocabularies.indexed(data.history).items()}
    self._impressions = {}  # split -> its tensors, built once

  def example_lengths(self, split: str) -> np.ndarray:
    return self.long_len[self.data.impressions[split]["user_row"]]

  def padding_share(self, split: str) -> float:
    """Share of the long-term positions a split's batches compute that are padding (padded
    lengths below min_bucket count as min_bucket: the model pads them that far)."""
    lengths = self.example_lengths(split)
    padded = np.maximum(bucket_length(lengths, self.buckets), self.min_bucket)
    return float(1 - lengths.sum() / max(padded.sum(), 1))

  def dataset(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0):
    """(dataset of (inputs, label), example order) for one split.

    Batches come bucket by bucket; with shuffle, buckets interleave at random and examples
    shuffle within a bucket, reshuffled every epoch. Without shuffle, `order` gives the
    impression index of each example in the order the dataset yields them.
    """
    tf = self._tf
    imp = self._impression_tensors(split)
    lengths = bucket_length(self.example_lengths(split), self.buckets)
    per_bucket, order = [], []
    for length in sorted(set(lengths.tolist())):
      chosen = np.flatnonzero(lengths == length)
      order.append(chosen)
      ds = tf.data.Dataset.from_tensor_slices(chosen)
      if shuffle:
        ds = ds.shuffle(len(chosen), seed=seed, reshuffle_each_iteration=True)
      per_bucket.append(ds.batch(batch_size).map(
          lambda idx, length=length: self._batch(imp, idx, length),
          num_parallel_calls=tf.data.AUTOTUNE))
    if not per_bucket:
      raise ValueError(f"split {split!r} has no impressions")
    num_batches = sum(-(-len(o) // batch_size) for o in order)
    if shuffle and len(per_bucket) > 1:
      weights = [len(o) for o in order]
      ds = tf.data.Dataset.sample_from_datasets(
          per_bucket, weights=[w / sum(weights) for w in weights], seed=seed,
          stop_on_empty_dataset=False)
    else:
      ds = per_bucket[0]
      for more in per_bucket[1:]:
        ds = ds.concatenate(more)
    ds = ds.apply(tf.data.experimental.assert_cardinality(num_batches))  # progress bar total
    return ds.prefetch(tf.data.AUTOTUNE), np.concatenate(order)

  def inputs(self, split: str, impressions: np.ndarray) -> dict:
    """Model inputs of the impressions (indices into data.impressions[split]) as one batch,
    long-term sequences padded to the bucket of the longest."""
    lengths = bucket_length(self.example_lengths(split)[impressions], self.buckets)
    inputs, _ = self._batch(self._impression_tensors(split),
                            self._tf.constant(np.asarray(impressions, np.int64)),
                            int(lengths.max()))
    return inputs

  def _impression_tensors(self, split: str) -> dict:
    """A split's impressions as tensors (ids as indexes), once per split: the trainer builds
    one dataset per epoch."""
    if split not in self._impressions:
      impressions = self.data.impressions[split]
      early = impressions["history_end"] < self.data.num_pre_cutoff[impressions["user_row"]]
      if early.any():  # their clusters are an earlier snapshot's, only in the group records
        raise ValueError(
            f"{int(early.sum()):,} {split} impressions are before their user's cutoff (train "
            "impressions of earlier cluster snapshots); the user records hold only the "
            "cutoff's clusters, which would leak the future into them: read them with "
            "training.streaming, which has each one's snapshot")
      table = self.data.vocabularies.indexed(impressions)
      self._impressions[split] = {k: self._tf.constant(v) for k, v in table.items()}
    return self._impressions[split]

  def _batch(self, imp: dict, idx, length: int):
    tf = self._tf
    rows = tf.gather(imp["user_row"], idx)
    target_time = tf.gather(imp[schema.TIMESTAMP], idx)
    spec = self.data.spec
    inputs = features.target_inputs(
        tf, spec, {f: tf.gather(imp[f], idx) for f in spec.candidate_fields}, target_time)
    long = {f: tf.gather(v, rows)[:, :length] for f, v in self._long.items()}
    inputs.update(self._sequence("long", long, target_time, length))
    # Short-term: the SHORT_LENGTH behaviors just before the impression, oldest first.
    end = tf.gather(imp["history_end"], idx)
    position = end[:, None] - features.SHORT_LENGTH + tf.range(features.SHORT_LENGTH,
                                                                  dtype=tf.int64)[None, :]
    short = {f: tf.gather(tf.gather(v, rows), tf.maximum(position, 0), batch_dims=1)
             for f, v in self._history.items()}
    short["mask"] = position >= 0
    short["size"] = tf.ones_like(position, tf.float32)
    inputs.update(self._sequence("short", short, target_time, features.SHORT_LENGTH))
    inputs[features.DENSE] = tf.gather(imp[examples.DENSE], idx)
    label = tf.cast(tf.gather(imp[schema.LABEL], idx), tf.float32)
    return inputs, label

  def _sequence(self, prefix, seq, target_time, length):
    spec = self.data.spec
    out = features.sequence_inputs(self._tf, spec, prefix, seq, seq["size"], seq["mask"],
                                   target_time[:, None])
    return {k: self._tf.ensure_shape(v, [None, length] + (
        [len(features.cross_features(spec))] if k.endswith("cross") else []))
        for k, v in out.items()}
