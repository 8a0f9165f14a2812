"""Item embedding tables (`item_id -> vector`) and the co-occurrence bootstrap.

Clustering needs an embedding per item. Before any model is trained, `bootstrap_embeddings`
builds one from the logs: items that a user consumes within `window` behaviors of each other
co-occur; the positive PMI of that count matrix, factored by truncated SVD, gives vectors
(the classic PPMI-SVD word embedding, applied to behavior sequences). Any other table, for
example the trained model's item-id embeddings, is used the same way through
`ItemEmbeddingTable`.
"""

from __future__ import annotations

import pathlib

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from twin_tf.config import EmbeddingConfig
from twin_tf.data import schema


class ItemEmbeddingTable:
  """Sorted item ids with one float32 vector each.

  Args:
    item_ids: (I,) int64 distinct ids.
    vectors: (I, d) float32.
  """

  def __init__(self, item_ids: np.ndarray, vectors: np.ndarray):
    item_ids = np.asarray(item_ids, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
      raise ValueError(f"vectors must be (len(item_ids), d); got {vectors.shape} for "
                       f"{len(item_ids)} ids")
    order = np.argsort(item_ids, kind="stable")
    self.item_ids, self.vectors = item_ids[order], vectors[order]
    if np.any(np.diff(self.item_ids) == 0):
      raise ValueError("item_ids must be distinct")

  @property
  def dim(self) -> int:
    return self.vectors.shape[1]

  def __len__(self) -> int:
    return len(self.item_ids)

  def lookup(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of `item_ids`: ((N, d) float32 with zeros where missing, (N,) bool found)."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    if not len(self.item_ids):
      return np.zeros((len(item_ids), self.dim), np.float32), np.zeros(len(item_ids), bool)
    pos = np.minimum(np.searchsorted(self.item_ids, item_ids), len(self.item_ids) - 1)
    found = self.item_ids[pos] == item_ids
    vectors = self.vectors[pos]
    vectors[~found] = 0.0
    return vectors, found

  def save(self, path: str | pathlib.Path) -> None:
    with open(path, "wb") as f:
      np.savez(f, item_ids=self.item_ids, vectors=self.vectors)

  @classmethod
  def load(cls, path: str | pathlib.Path) -> "ItemEmbeddingTable":
    with np.load(path) as data:
      return cls(data["item_ids"], data["vectors"])


def bootstrap_embeddings(columns: dict[str, np.ndarray],
                         config: EmbeddingConfig = EmbeddingConfig()) -> ItemEmbeddingTable:
  """PPMI-SVD item embeddings from windowed co-occurrence in each user's behavior sequence.

  Args:
    columns: behavior columns (any order; sorted here by user, then time).
    config: dimension, window, min_count, seed.
  Returns:
    A table over the items seen at least `min_count` times (rows L2-normalized).
  """
  items, counts = np.unique(columns[schema.ITEM_ID], return_counts=True)
  kept = items[counts >= config.min_count]
  if len(kept) < 2:
    return ItemEmbeddingTable(kept, np.zeros((len(kept), config.dim), np.float32))
  order = np.lexsort((columns[schema.TIMESTAMP], columns[schema.USER_ID]))
  users = columns[schema.USER_ID][order]
  index = np.searchsorted(kept, columns[schema.ITEM_ID][order])
  index = np.where(kept[np.minimum(index, len(kept) - 1)] == columns[schema.ITEM_ID][order],
                   index, -1)  # -1: item below min_count
  rows, cols = [], []
  for lag in range(1, config.window + 1):  # pairs `lag` positions apart, same user
    a, b = index[:-lag], index[lag:]
    ok = (users[:-lag] == users[lag:]) & (a >= 0) & (b >= 0) & (a != b)
    rows += [a[ok], b[ok]]
    cols += [b[ok], a[ok]]
  num = len(kept)
  cooc = scipy.sparse.coo_matrix(
      (np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
      shape=(num, num)).tocsr()
  ppmi = _positive_pmi(cooc)
  dim = min(config.dim, num - 1)
  start = np.random.default_rng(config.seed).standard_normal(num)
  u, s, _ = scipy.sparse.linalg.svds(ppmi, k=dim, v0=start)
  vectors = (u * np.sqrt(s)).astype(np.float32)
  vectors = np.pad(vectors, ((0, 0), (0, config.dim - dim)))
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return ItemEmbeddingTable(kept, vectors / np.maximum(norms, 1e-12))


def _positive_pmi(cooc: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
  """max(log(p(i,j) / (p(i) p(j))), 0) on the nonzeros of a symmetric count matrix."""
  total = cooc.sum()
  marginal = np.asarray(cooc.sum(axis=1)).ravel()
  coo = cooc.tocoo()
  pmi = np.log(coo.data * total / (marginal[coo.row] * marginal[coo.col]))
  keep = pmi > 0
  return scipy.sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])),
                                 shape=cooc.shape)
