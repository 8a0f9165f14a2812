"""Id vocabularies of the item id and the item features: raw int64 ids -> embedding rows.

Index 0 is padding and index 1 out-of-vocabulary in every vocabulary:
  Vocabulary         ids seen in the training data (sorted) -> 2, 3, ...; the rest -> 1.
  HashedVocabulary   id mod buckets + 2: nothing to store, every id has a row (collisions
                     instead of OOV); for features with millions of values.
A run keeps them in vocabulary.npz (the known ids of each data vocabulary) beside its
feature_spec.json; the export turns them into lookup tables inside the graph.
"""

from __future__ import annotations

import pathlib

import numpy as np

from twin_tf.data import feature_spec
from twin_tf.data.feature_spec import FeatureSpec

PAD, OOV = 0, 1
FILE_NAME = "vocabulary.npz"


class Vocabulary:
  """item_id (or feature value) -> index: 0 padding, 1 out-of-vocabulary, 2.. known ids."""

  hash_buckets = 0

  def __init__(self, ids: np.ndarray):
    self.ids = np.unique(np.asarray(ids, dtype=np.int64))

  def __len__(self) -> int:
    return len(self.ids) + 2

  def lookup(self, ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if not len(self.ids):
      return np.full(ids.shape, OOV, dtype=np.int64)
    pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
    return np.where(self.ids[pos] == ids, pos + 2, OOV)


class HashedVocabulary:
  """id -> id mod buckets + 2 (never OOV)."""

  def __init__(self, buckets: int):
    self.hash_buckets = buckets

  def __len__(self) -> int:
    return self.hash_buckets + 2

  def lookup(self, ids: np.ndarray) -> np.ndarray:
    return np.mod(np.asarray(ids, dtype=np.int64), self.hash_buckets) + 2


class Vocabularies(dict):
  """{field: Vocabulary or HashedVocabulary} for spec.candidate_fields (item_id first)."""

  def __init__(self, spec: FeatureSpec, vocabularies: dict):
    super().__init__((f, vocabularies[f]) for f in spec.candidate_fields)
    self.spec = spec

  @classmethod
  def from_values(cls, spec: FeatureSpec, values: dict[str, np.ndarray]) -> "Vocabularies":
    """Data vocabularies of the ids in `values` ({field: ids}); hashed features need none."""
    buckets = {f.name: f.hash_buckets for f in spec.item_features}
    return cls(spec, {f: (HashedVocabulary(buckets[f]) if buckets.get(f) else
                          Vocabulary(values[f])) for f in spec.candidate_fields})

  def indexed(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of `columns` with every vocabulary's field as indexes, the rest as it is."""
    return {**columns, **{f: v.lookup(columns[f]) for f, v in self.items()}}

  def sizes(self) -> dict[str, int]:
    return {f: len(v) for f, v in self.items()}

  def oov_counts(self, values: dict[str, np.ndarray]) -> dict[str, int]:
    """Out-of-vocabulary ids among `values` ({field: ids}) per data vocabulary."""
    return {f: int(np.sum(v.lookup(values[f]) == OOV))
            for f, v in self.items() if not v.hash_buckets}

  def save(self, folder: str | pathlib.Path) -> None:
    folder = pathlib.Path(folder)
    self.spec.save(folder)
    np.savez(folder / FILE_NAME, **{f: v.ids for f, v in self.items() if not v.hash_buckets})

  @classmethod
  def load(cls, folder: str | pathlib.Path) -> "Vocabularies":
    folder = pathlib.Path(folder)
    spec = feature_spec.load(folder)
    with np.load(folder / FILE_NAME) as stored:
      values = {f: stored[f] for f in stored.files}
    return cls.from_values(spec, values)
