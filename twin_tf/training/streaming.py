"""Streaming, user-major training input: memory bounded by the batch and the shuffle buffers,
not by the number of users or the longest history.

build_examples writes group records (twin_tf.training.examples): one user's long-term material
once, with up to GROUP_SIZE of that user's impressions of one split. Training streams them:

  shard files (shuffled) -> interleave TFRecordDataset -> shuffle RECORD_BUFFER records
  -> parse; ids -> vocabulary indexes; the record's long-term sequence, once, and each
     impression's short-term window
  -> flat_map: one example per impression, all of a record's sharing its long-term tensors
  -> shuffle EXAMPLE_BUFFER examples (mixes users)
  -> group_by_window on the bucket of the long-term length: batches padded to their bucket
  -> model inputs (cross features relative to each impression's time) -> prefetch

An epoch's number of batches does not depend on the order (per bucket, ceil(n / batch)), so
the progress bar, the cosine schedule and mid-epoch resume (a seeded epoch replays the same
batches) work as with in-memory data. `scan_records` reads the records once beforehand for
what is needed before the first batch: per record its long-term lengths and impression count
(buckets, batches per epoch), the data vocabularies, the dense features' mean and std, and
per split the out-of-vocabulary shares; each record is dropped once read.

Batches are the same examples as input_pipeline.DatasetBuilder's (a test checks it), except
that `uniform` samples with a per-user stateless seed instead of numpy's generator. The
in-memory DatasetBuilder stays where examples are needed in a fixed impression order next to
their metadata: evaluation, predictions and the analyses (tables of a split's impressions).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from twin_tf.data import feature_spec, schema
from twin_tf.data.feature_spec import FeatureSpec
from twin_tf.model import features
from twin_tf.model.vocabulary import Vocabularies
from twin_tf.training import examples, statistics
from twin_tf.training.input_pipeline import LONG_SOURCES, bucket_length, fitted_buckets

RECORD_BUFFER = 64
MAX_BATCH_POSITIONS = 2 ** 19  # long-term positions of a batch (B x L), bounds activations
EXAMPLE_BUFFER = 4096
CYCLE_LENGTH = 8
NUM_PRE_CUTOFF = examples.NUM_PRE_CUTOFF
FLOAT_FIELDS = (f"impression_{examples.DENSE}",)  # every other group record field is int64
# An example's keys in a dataset with keys=True: its user, raw item id, raw primary feature
# (category) and the user's behaviors before the cutoff.
KEYS = (schema.USER_ID, "raw_item_id", "raw_primary", NUM_PRE_CUTOFF)


def files_of(folder: str | pathlib.Path, split: str) -> list[str]:
  """The group record shards of one split, sorted; FileNotFoundError naming the fix."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  pattern = f"{str(folder).rstrip('/')}/groups_{split}-*"
  files = sorted(tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(
        f"no group records match {pattern}: examples built before the streaming input; "
        "rebuild them with `twin-tf build-examples`")
  return files


@dataclasses.dataclass
class RecordScan:
  """What one pass over the group records tells before training.

  Attributes:
    spec: the examples' feature spec.
    records: {split: {"num_pre_cutoff", "clusters", "impressions": (R,) int64}} per record.
    vocabularies: built from the train records' targets and pre-cutoff behaviors (the rule of
      input_pipeline.load_example_data), or the ones given.
    dense_mean, dense_std: (D,) of the train impressions' dense features.
    oov: {split: {field: share of the targets out of vocabulary}}.
  """

  spec: FeatureSpec
  records: dict[str, dict[str, np.ndarray]]
  vocabularies: Vocabularies
  dense_mean: np.ndarray
  dense_std: np.ndarray
  oov: dict[str, dict[str, float]]


def _parsed_batches(tf, files: list[str], names: tuple[str, ...], batch: int = 256):
  """Batches of the named fields of the group records in `files`, in file order: per batch
  {name: (values, (n,) row lengths)} as numpy arrays."""
  description = {n: tf.io.RaggedFeature(tf.float32 if n in FLOAT_FIELDS else tf.int64,
                                        row_splits_dtype=tf.int64) for n in names}
  dataset = tf.data.TFRecordDataset(files).batch(batch).map(
      lambda s: {k: (v.flat_values, v.row_lengths())
                 for k, v in tf.io.parse_example(s, description).items()},
      num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _prefix(values: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """The first keep[i] values of each row i of a flat (values, row lengths) batch."""
  position = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  return values[position < np.repeat(keep, lengths)]


def scan_records(folder: str | pathlib.Path, vocabularies: Vocabularies | None = None
                 ) -> RecordScan:
  """One pass over every split's group records (train first: it builds the vocabularies)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  spec = feature_spec.load(folder)
  targets = spec.candidate_fields
  dense_width = len(statistics.DENSE_FEATURES)
  records, oov = {}, {}
  count, total, squares = 0, np.zeros(dense_width), np.zeros(dense_width)
  for split in examples.SPLITS:
    building = split == "train" and vocabularies is None
    names = (NUM_PRE_CUTOFF, f"cluster_{schema.CLUSTER_SIZE}", f"impression_{schema.LABEL}",
             *(f"impression_{f}" for f in targets))
    if building:
      names += tuple(f"history_{f}" for f in targets)
    if split == "train":
      names += (f"impression_{examples.DENSE}",)
    sizes = {"num_pre_cutoff": [], "clusters": [], "impressions": []}
    seen = {f: np.zeros(0, np.int64) for f in targets}
    missing = dict.fromkeys(targets, 0)
    for batch in _parsed_batches(tf, files_of(folder, split), names):
      npc = batch[NUM_PRE_CUTOFF][0]
      sizes["num_pre_cutoff"].append(npc)
      sizes["clusters"].append(batch[f"cluster_{schema.CLUSTER_SIZE}"][1])
      sizes["impressions"].append(batch[f"impression_{schema.LABEL}"][1])
      if building:  # one sorted array of known ids per field
        seen = {f: np.unique(np.concatenate([
            seen[f], batch[f"impression_{f}"][0], _prefix(*batch[f"history_{f}"], npc)]))
            for f in targets}
      else:
        for f, found in vocabularies.oov_counts(
            {f: batch[f"impression_{f}"][0] for f in targets}).items():
          missing[f] += found
      if split == "train":
        dense = batch[f"impression_{examples.DENSE}"][0].reshape(-1, dense_width).astype(
            np.float64)
        count, total, squares = count + len(dense), total + dense.sum(0), \
            squares + (dense ** 2).sum(0)
    if building:
      vocabularies = Vocabularies.from_values(spec, seen)
    records[split] = {k: np.concatenate(v or [np.zeros(0, np.int64)]).astype(np.int64)
                      for k, v in sizes.items()}
    impressions = max(int(records[split]["impressions"].sum()), 1)
    oov[split] = {f: missing[f] / impressions
                  for f, v in vocabularies.items() if not v.hash_buckets}
  mean = total / max(count, 1)
  std = np.sqrt(np.maximum(squares / max(count, 1) - mean ** 2, 0))
  return RecordScan(spec, records, vocabularies, mean.astype(np.float32),
                    std.astype(np.float32), oov)


def _slice_of(tf, tensor, index: int, count: int):
  """Rows [index * B / count, (index + 1) * B / count) of a (B, ...) tensor."""
  rows = tf.shape(tensor)[0] // count
  return tensor[index * rows:(index + 1) * rows]


class StreamingInput:
  """tf.data datasets of model inputs streamed from group records, for one long-term source.

  Args:
    folder: the examples folder (group records and feature_spec.json).
    source: "clusters", "raw", "uniform" or "none" (input_pipeline.LONG_SOURCES).
    max_raw, seed, budget: as input_pipeline.DatasetBuilder's.
    buckets: padded lengths (None: fitted to the train examples, none below min_bucket).
    scan: a RecordScan of the folder (None: scanned here).
    max_positions: a batch of bucket L holds at most max_positions // L examples (rounded
      down to a multiple of the device count, at least that count): memory for activations
      stays bounded however long the sequences; buckets up to max_positions / batch keep the
      full batch.
  """

  def __init__(self, folder: str | pathlib.Path, source: str, max_raw: int = 10_000,
               seed: int = 0, buckets=None, budget: int | None = None, min_bucket: int = 1,
               scan: RecordScan | None = None, max_positions: int = MAX_BATCH_POSITIONS):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if source not in LONG_SOURCES:
      raise ValueError(f"unknown long-term source {source!r}; expected one of {LONG_SOURCES}")
    self._tf, self.folder, self.source, self.seed = tf, str(folder), source, seed
    self.scan = scan or scan_records(folder)
    self.spec, self.vocabularies = self.scan.spec, self.scan.vocabularies
    self.raw_limit = max_raw if budget is None else budget
    self.budget = budget
    clusters = np.concatenate([r["clusters"] for r in self.scan.records.values()])
    if source == "clusters" and budget is not None and clusters.max(initial=0) > budget:
      raise ValueError(f"a user has {clusters.max()} clusters, over the budget of {budget}: "
                       f"cluster with ClusteringConfig(max_clusters={budget})")
    train = self.scan.records["train"]
    longest = max(int(self.record_lengths(s).max(initial=1)) for s in self.scan.records)
    self.min_bucket, self.max_positions = min_bucket, max_positions
    self.buckets = tuple(buckets) if buckets is not None else fitted_buckets(
        np.repeat(self.record_lengths("train"), train["impressions"]), longest,
        minimum=min_bucket)

  def record_lengths(self, split: str) -> np.ndarray:
    """(R,) long-term length of each record of a split, before any truncation to a bucket."""
    records = self.scan.records[split]
    npc, clusters = records["num_pre_cutoff"], records["clusters"]
    if self.source == "clusters":
      return clusters
    if self.source == "raw":
      return np.minimum(npc, self.raw_limit)
    if self.source == "none":
      return np.zeros_like(npc)
    return np.minimum(clusters if self.budget is None else self.budget, npc)

  def _bucket_counts(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, examples) per record of a split: its padded length and impressions."""
    lengths = np.minimum(self.record_lengths(split), self.buckets[-1])
    return bucket_length(lengths, self.buckets), self.scan.records[split]["impressions"]

  def batch_sizes(self, batch_size: int, multiple_of: int = 1) -> np.ndarray:
    """(buckets,) the batch size of each bucket under max_positions."""
    fitting = self.max_positions // np.array(self.buckets)
    fitting = np.maximum(fitting // multiple_of * multiple_of, multiple_of)
    return np.minimum(fitting, batch_size)

  def num_batches(self, split: str, batch_size: int, multiple_of: int = 1) -> int:
    padded, count = self._bucket_counts(split)
    per_bucket = np.bincount(np.searchsorted(self.buckets, padded), weights=count,
                             minlength=len(self.buckets)).astype(int)
    sizes = self.batch_sizes(batch_size, multiple_of)
    return int(sum(n // size + (n % size >= multiple_of)
                   for n, size in zip(per_bucket, sizes)))

  def padding_share(self, split: str) -> float:
    """Share of the computed long-term positions that are padding (as DatasetBuilder's)."""
    padded, count = self._bucket_counts(split)
    lengths = np.minimum(self.record_lengths(split), self.buckets[-1])
    padded = np.maximum(padded, self.min_bucket)
    return float(1 - (lengths * count).sum() / max((padded * count).sum(), 1))

  def dataset(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
              multiple_of: int = 1, keys: bool = False,
              shard: tuple[int, int] | None = None):
    """Dataset of (inputs, label) batches of one split; shuffled (files, records, examples)
    with `seed`; every batch's size a multiple of `multiple_of` (each bucket leaves out its
    last len % multiple_of examples). With `keys`, (inputs, label, keys): per example its
    user, raw item id and primary feature, the user's num_pre_cutoff and the timestamp.
    With shard = (i, n), process i of n's slice of every batch: its i-th n-th of the rows
    (the processes' slices, in process order, are the batch; multiple_of divisible by n)."""
    if batch_size % multiple_of:
      raise ValueError(f"batch size {batch_size} is not a multiple of {multiple_of}")
    if shard is not None and (multiple_of % shard[1] or not 0 <= shard[0] < shard[1]):
      raise ValueError(f"shard {shard}: expected (i, n) with 0 <= i < n and n dividing the "
                       f"device count {multiple_of}")
    tf = self._tf
    files = files_of(self.folder, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
      ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), CYCLE_LENGTH),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
      ds = ds.shuffle(RECORD_BUFFER, seed=seed + 1)
    ds = ds.map(self._parse, num_parallel_calls=tf.data.AUTOTUNE).flat_map(self._examples)
    if shuffle:
      ds = ds.shuffle(EXAMPLE_BUFFER, seed=seed + 2)
    buckets = tf.constant(self.buckets, tf.int64)
    sizes = tf.constant(self.batch_sizes(batch_size, multiple_of), tf.int64)
    ds = ds.group_by_window(
        key_func=lambda imp, long: tf.minimum(
            tf.searchsorted(buckets, tf.maximum(long["length"], 1)[None], out_type=tf.int64)[0],
            tf.constant(len(self.buckets) - 1, tf.int64)),
        reduce_func=lambda key, window: window.padded_batch(
            tf.gather(sizes, key), padded_shapes=self._padded_shapes(window,
                                                                      tf.gather(buckets, key))),
        window_size_func=lambda key: tf.gather(sizes, key))
    if multiple_of > 1:  # a bucket's last batch: cut to a multiple, dropped if nothing is left
      ds = ds.map(lambda imp, long: tf.nest.map_structure(
          lambda t: t[:tf.shape(t)[0] // multiple_of * multiple_of], (imp, long)))
      ds = ds.filter(lambda imp, long: tf.shape(imp[schema.LABEL])[0] > 0)
    if shard is not None:
      ds = ds.map(lambda imp, long: tf.nest.map_structure(
          lambda t: _slice_of(tf, t, *shard), (imp, long)))
    ds = ds.map(lambda imp, long: self._inputs(imp, long, keys),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.apply(tf.data.experimental.assert_cardinality(
        self.num_batches(split, batch_size, multiple_of)))
    # tf.data's autotuner, on one core, left the core idle for seconds at a time while
    # training waited for batches (a MovieLens epoch of Twin at 200: 15-21 s with it, 12 s
    # without; on two cores the same or better without). Without it the AUTOTUNE
    # parallelism is the number of cores.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

  def _parse(self, serialized):
    tf, spec = self._tf, self.spec
    clusters = {"clusters": spec.sequence_fields + (schema.CLUSTER_SIZE,),
                "uniform": (schema.CLUSTER_SIZE,)}.get(self.source, ())  # what _long_term reads
    names = ((schema.USER_ID, NUM_PRE_CUTOFF) + tuple(f"cluster_{f}" for f in clusters) +
             tuple(f"history_{f}" for f in spec.sequence_fields) +
             tuple(f"impression_{f}" for f in examples.group_fields(spec)) +
             (f"impression_{examples.DENSE}",))
    parsed = tf.io.parse_single_example(serialized, {
        n: tf.io.VarLenFeature(tf.float32 if n in FLOAT_FIELDS else tf.int64) for n in names})
    return {k: v.values for k, v in parsed.items()}

  def _indexed(self, columns: dict) -> dict:
    """Candidate fields of `columns` (int64 tensors) -> vocabulary indexes, the rest as is."""
    tf, out = self._tf, dict(columns)
    for f, vocabulary in self.vocabularies.items():
      ids = columns[f]
      if vocabulary.hash_buckets:
        out[f] = tf.math.floormod(ids, vocabulary.hash_buckets) + 2
      elif len(vocabulary.ids):
        known = tf.constant(vocabulary.ids)
        position = tf.minimum(tf.searchsorted(known, ids), len(vocabulary.ids) - 1)
        out[f] = tf.where(tf.gather(known, position) == ids, position + 2, 1)
      else:
        out[f] = tf.ones_like(ids)
    return out

  def _long_term(self, record, history):
    """The record's long-term sequence {sequence fields, "size"} (L,), most recent last."""
    tf = self._tf
    npc = record[NUM_PRE_CUTOFF][0]
    if self.source == "clusters":
      long = self._indexed({f: record[f"cluster_{f}"] for f in self.spec.sequence_fields})
      long["size"] = tf.cast(record[f"cluster_{schema.CLUSTER_SIZE}"], tf.float32)
    else:
      if self.source == "raw":
        count = tf.minimum(npc, self.raw_limit)
        positions = tf.range(npc - count, npc)
      elif self.source == "none":
        positions = tf.zeros([0], tf.int64)
      else:  # uniform: a seeded sample without replacement, in time order
        wanted = (tf.size(record[f"cluster_{schema.CLUSTER_SIZE}"], tf.int64)
                  if self.budget is None else tf.constant(self.budget, tf.int64))
        count = tf.minimum(wanted, npc)
        noise = tf.random.stateless_uniform(
            tf.reshape(npc, [1]), seed=tf.stack([tf.constant(self.seed, tf.int64),
                                                 record[schema.USER_ID][0]]))
        positions = tf.sort(tf.argsort(noise)[:count])
      long = {f: tf.gather(v, positions) for f, v in history.items()}
      long["size"] = tf.ones(tf.shape(positions), tf.float32)
    cap = self.buckets[-1]  # longer sequences keep their most recent positions
    return {f: v[-cap:] for f, v in long.items()}

  def _examples(self, record):
    """One group record -> a dataset of (impression, long-term) examples."""
    tf, spec = self._tf, self.spec
    history = self._indexed({f: record[f"history_{f}"] for f in spec.sequence_fields})
    long = self._long_term(record, history)
    long["length"] = tf.shape(long["size"], tf.int64)[0]
    raw = {f: record[f"impression_{f}"] for f in examples.group_fields(spec)}
    impression = self._indexed(raw)
    count = tf.shape(impression[schema.LABEL])[0]
    # what evaluation reports the example by (keys=True in dataset()), before any indexing
    impression.update({KEYS[0]: tf.fill([count], record[schema.USER_ID][0]),
                       KEYS[1]: raw[schema.ITEM_ID],
                       KEYS[2]: raw.get(spec.primary, raw[schema.ITEM_ID]),
                       KEYS[3]: tf.fill([count], record[NUM_PRE_CUTOFF][0])})
    # short-term: the SHORT_LENGTH behaviors just before the impression, oldest first
    end = impression.pop("history_end")
    position = end[:, None] - features.SHORT_LENGTH + tf.range(features.SHORT_LENGTH,
                                                                  dtype=tf.int64)[None, :]
    impression.update({f"short_{f}": tf.gather(v, tf.maximum(position, 0))
                       for f, v in history.items()})
    impression["short_mask"] = position >= 0
    impression[examples.DENSE] = tf.reshape(record[f"impression_{examples.DENSE}"],
                                            [count, len(statistics.DENSE_FEATURES)])
    return tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(impression),
                                tf.data.Dataset.from_tensors(long).repeat(
                                    tf.cast(count, tf.int64))))

  def _padded_shapes(self, window, length):
    impression_spec, long_spec = window.element_spec
    padded = self._tf.reshape(length, [1])
    return ({k: s.shape for k, s in impression_spec.items()},
            {k: (s.shape if k == "length" else padded) for k, s in long_spec.items()})

  def _inputs(self, impression, long, keys: bool = False):
    """A padded batch -> (model inputs, label), and with `keys` the examples' KEYS and
    timestamp {name: (B,)}."""
    tf, spec = self._tf, self.spec
    impression = dict(impression)
    named = {k: impression.pop(k) for k in KEYS}
    time = impression[schema.TIMESTAMP]
    inputs = features.target_inputs(tf, spec, impression, time)
    mask = tf.range(tf.shape(long["size"], tf.int64)[1])[None, :] < long["length"][:, None]
    inputs.update(features.sequence_inputs(tf, spec, "long", long, long["size"], mask,
                                           time[:, None]))
    short = {f: impression[f"short_{f}"] for f in spec.sequence_fields}
    short_mask = impression["short_mask"]
    inputs.update(features.sequence_inputs(tf, spec, "short", short,
                                           tf.ones_like(short_mask, tf.float32), short_mask,
                                           time[:, None]))
    inputs[features.DENSE] = impression[examples.DENSE]
    label = tf.cast(impression[schema.LABEL], tf.float32)
    if keys:
      return inputs, label, {**named, schema.TIMESTAMP: time}
    return inputs, label
