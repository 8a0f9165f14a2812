"""Item embedding tables (`item_id -> vector`) and the co-occurrence bootstrap.

Clustering needs an embedding per item. Before any model is trained, `bootstrap_embeddings`
builds one from the logs: items that a user consumes within `window` behaviors of each other
co-occur. Two ways to factor that:
  ppmi-svd   the positive PMI of the count matrix, by truncated SVD (the classic PPMI-SVD
             word embedding, applied to behavior sequences); the matrix is built in memory,
             2 x window entries per behavior.
  spectral   the top eigenvectors of the degree-normalized count matrix, by LOBPCG over a
             streamed operator (twin_tf.clustering.cooccurrence): memory bounded by the
             items, not the co-occurrences.
Any other table, for example the trained model's item-id embeddings, is used the same way
through `ItemEmbeddingTable`.
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from twin_tf.clustering import cooccurrence
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
  """Item embeddings from windowed co-occurrence in each user's behavior sequence.

  Args:
    columns: behavior columns (any order; sorted here by user, then time).
    config: method, dimension, window, min_count, seed.
  Returns:
    A table over the items seen at least `min_count` times (rows L2-normalized; items
    without any co-occurrence get zeros).
  """
  items, counts = np.unique(columns[schema.ITEM_ID], return_counts=True)
  kept = items[counts >= config.min_count]
  if len(kept) < 2:
    return ItemEmbeddingTable(kept, np.zeros((len(kept), config.dim), np.float32))
  users, index = _item_sequences(columns, kept)
  factor = _ppmi_svd if config.method == "ppmi-svd" else _spectral
  vectors = factor(users, index, len(kept), config)
  vectors = np.pad(vectors, ((0, 0), (0, config.dim - vectors.shape[1]))).astype(np.float32)
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return ItemEmbeddingTable(kept, vectors / np.maximum(norms, 1e-12))


def _item_sequences(columns: dict[str, np.ndarray], kept: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(users (N,) sorted by user then time, index (N,) int32 row of each behavior's item in
  `kept` (V,) sorted item ids, -1 for an item not in it)."""
  order = np.lexsort((columns[schema.TIMESTAMP], columns[schema.USER_ID]))
  item = columns[schema.ITEM_ID][order]
  index = np.minimum(np.searchsorted(kept, item), len(kept) - 1)
  return columns[schema.USER_ID][order], np.where(kept[index] == item, index, -1).astype(
      np.int32)


def _ppmi_svd(users: np.ndarray, index: np.ndarray, num: int,
              config: EmbeddingConfig) -> np.ndarray:
  """(V, <= dim) PPMI-SVD vectors: the positive PMI of the co-occurrence counts (built in
  memory, 2 x window x N entries), factored by truncated SVD, u sqrt(s)."""
  rows, cols = [], []
  for lag in range(1, config.window + 1):  # pairs `lag` positions apart, same user
    a, b = index[:-lag], index[lag:]
    ok = (users[:-lag] == users[lag:]) & (a >= 0) & (b >= 0) & (a != b)
    rows += [a[ok], b[ok]]
    cols += [b[ok], a[ok]]
  cooc = scipy.sparse.coo_matrix(
      (np.ones(sum(len(r) for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
      shape=(num, num)).tocsr()
  ppmi = _positive_pmi(cooc)
  dim = min(config.dim, num - 1)
  start = np.random.default_rng(config.seed).standard_normal(num)
  u, s, _ = scipy.sparse.linalg.svds(ppmi, k=dim, v0=start)
  return u * np.sqrt(s)


SPECTRAL_ITERATIONS = 8  # LOBPCG iterations; each is one pass over the behaviors
SPECTRAL_EXTRA = 4  # block columns beyond `dim`, for the last eigenvectors to converge


def _spectral(users: np.ndarray, index: np.ndarray, num: int,
              config: EmbeddingConfig) -> np.ndarray:
  """(V, <= dim) spectral vectors: the top eigenvectors of the normalized co-occurrence
  D^-1/2 C D^-1/2 (D: C's row sums) after the trivial one (sqrt(D), eigenvalue 1) is
  removed, each scaled by its eigenvalue. C is streamed (WindowCooccurrence), never built;
  LOBPCG needs about SPECTRAL_ITERATIONS + 4 passes over the behaviors."""
  cooc = cooccurrence.WindowCooccurrence(users, index, num, config.window)
  degrees = cooc.degrees()
  scale = np.where(degrees > 0, 1.0 / np.sqrt(np.maximum(degrees, 1e-300)), 0.0)
  trivial = np.sqrt(np.maximum(degrees, 0.0))
  trivial /= max(np.linalg.norm(trivial), 1e-300)

  def normalized(x):  # (V, k) -> (V, k): (D^-1/2 C D^-1/2 - trivial trivial^T) x
    x = np.asarray(x).reshape(num, -1)
    return scale[:, None] * cooc.matmat(scale[:, None] * x) - np.outer(trivial, trivial @ x)

  dim = min(config.dim, num - 1)
  width = dim + SPECTRAL_EXTRA
  if 3 * width >= num:  # too few items for LOBPCG (it needs 3 x width < V): the dense matrix
    values, vectors = np.linalg.eigh(normalized(np.eye(num)))
  else:
    operator = scipy.sparse.linalg.LinearOperator((num, num), matvec=normalized,
                                                  matmat=normalized, dtype=np.float64)
    start = np.random.default_rng(config.seed).standard_normal((num, width))
    with warnings.catch_warnings():  # it warns when the tolerance is not reached: expected
      warnings.simplefilter("ignore", UserWarning)
      values, vectors = scipy.sparse.linalg.lobpcg(operator, start, largest=True, tol=1e-6,
                                                   maxiter=SPECTRAL_ITERATIONS)
  top = np.argsort(-values)[:dim]
  return vectors[:, top] * np.maximum(values[top], 0.0)


def _positive_pmi(cooc: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
  """max(log(p(i,j) / (p(i) p(j))), 0) on the nonzeros of a symmetric count matrix."""
  total = cooc.sum()
  marginal = np.asarray(cooc.sum(axis=1)).ravel()
  coo = cooc.tocoo()
  pmi = np.log(coo.data * total / (marginal[coo.row] * marginal[coo.col]))
  keep = pmi > 0
  return scipy.sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])),
                                 shape=cooc.shape)
