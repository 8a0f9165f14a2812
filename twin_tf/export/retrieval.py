"""GSU retrieval as maximum inner-product search: exact (numpy) and ScaNN.

The GSU ranks clusters by alpha' summed over heads. Because alpha' is an inner product plus
a per-cluster bias, that sum is ONE inner product of augmented vectors (DESIGN.md section 1):
  key_i   = [ (K_h W_h)_i / sqrt(d_k) for every head h , sum_h bias_ih ]      (H*d_k + 1)
  query_c = [ (q W_q)_c,h for every head h ,             1 ]                   (H*d_k + 1)
where bias = (K_c W_c) beta + ln n. Both retrievers take these vectors and return, per
candidate, the indices of the top-K clusters, best first; ExactRetriever is the reference.

TWIN's round-robin head merge ranks each head separately, so it is not one inner product:
it would need one index per head and the merge on top. Only the sum merge is served here.

ScaNN parameters follow the number of clusters (`scann_config`): brute force below 20,000,
asymmetric hashing (AH) with exact reordering up to 50,000, then a partitioning tree
(sqrt(L) leaves, a quarter searched) in front of AH + reordering. Pass a config to override.
(Measured on SYNTHETIC topic-mixture keys at 10^5, one core: AH + reorder 300 gave recall
0.998 at 4.5x the exact speed; tree + AH + reorder 400 gave recall 1.0 at 14x. On trained
live models' real keys tiled to 10^5, a tenth of the leaves gave recall@100 0.960 (SYNTHETIC
long-term log) and 0.981 (MovieLens); a quarter 0.984 and 0.990, at ~10 ms a search of 200
queries against ~6.5.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import tempfile

import numpy as np


def gsu_key_vectors(keys: np.ndarray, bias: np.ndarray) -> np.ndarray:
  """keys (L, H, d_k) already / sqrt(d_k), bias (L, H) -> (L, H*d_k + 1) float32."""
  flat = np.asarray(keys, np.float32).reshape(len(keys), -1)
  return np.concatenate([flat, np.asarray(bias, np.float32).sum(-1, keepdims=True)], axis=1)


def gsu_query_vectors(queries: np.ndarray) -> np.ndarray:
  """queries (C, H, d_k) -> (C, H*d_k + 1) float32, the last entry 1 (it picks up the bias)."""
  queries = np.asarray(queries, np.float32)
  flat = queries.reshape(len(queries), int(np.prod(queries.shape[1:])))  # C = 0 too
  return np.concatenate([flat, np.ones((len(flat), 1), np.float32)], axis=1)


class ExactRetriever:
  """Top-K by exact inner product, best first; ties go to the lower index.

  The (C, D) x (D, L) product and a top-K that settles early (top_k_rows: it sorts only the
  scores above a threshold that at least K scores of the row reach, not the whole row), a
  block of candidates at a time (blocks of equal size, of BLOCK_BYTES of scores or
  MIN_BLOCK_ROWS candidates, the more): each block's scores are ranked in one reused buffer
  instead of writing all (C, L) scores and reading them twice more. On one core at
  L = 10^4, C = 200, D = 65 (two blocks of 100) this took 4.1-4.4 ms p50 against 4.9-5.6 for
  one TensorFlow product of every row then top_k_rows (same process, alternating; numpy's
  product per block: its output goes into the reused buffer, which TensorFlow's cannot).
  At L = 10^5 the TensorFlow form is the faster, 35-38 ms against 48-50: numpy's BLAS
  multiplied at 35 GMAC/s there, oneDNN at 58 (the served path at that length is ScaNN).

  Args:
    keys: (L, D) augmented key vectors.
  """

  def __init__(self, keys: np.ndarray):
    self._columns = np.ascontiguousarray(np.asarray(keys, np.float32).T)  # (D, L)

  def search(self, queries: np.ndarray, k: int = 100) -> np.ndarray:
    """(C, D) queries -> (C, min(k, L)) int64 indices, best first."""
    queries = np.asarray(queries, np.float32)
    count, length = len(queries), self._columns.shape[1]
    block = max(BLOCK_BYTES // (4 * max(length, 1)), MIN_BLOCK_ROWS)
    blocks = max(-(-count // block), 1)
    edges = np.linspace(0, count, blocks + 1).astype(int)  # equal sizes: no small last one
    scores = np.empty((-(-count // blocks), length), np.float32)  # reused by every block
    survivors = []
    for start, end in zip(edges[:-1], edges[1:]):
      part = scores[:end - start]
      np.matmul(queries[start:end], self._columns, out=part)
      row, key = _survivors(part, k)
      survivors.append((row + start, key))
    return _best_first(survivors, len(queries), min(k, length))


# A block of candidates' scores: BLOCK_BYTES or MIN_BLOCK_ROWS candidates, the more. At
# L = 10^4 (one core) 2-8 MiB blocks searched in 3.9-4.4 ms p50; at 10^5, blocks of 8
# candidates took 78 ms (numpy's product is slow at so few rows), of 100 or 200 49-51.
BLOCK_BYTES = 1 << 21
MIN_BLOCK_ROWS = 100


# Positions l, l + W, ..., l + (GROUPS - 1) W of a row form a group (W = L // GROUPS).
GROUPS = 16


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
  """(C, L) finite scores -> (C, min(k, L)) int64 column indices of each row's k largest, best
  first, ties to the lower index (as a stable argsort of -scores).

  The maxima of GROUPS-strided groups are one elementwise maximum of GROUPS contiguous
  blocks; the k-th largest group maximum t of a row has at least k scores >= t, so the row's
  top k are all >= t. Only the ~k-2k scores >= t are sorted, per row, as unique uint64 keys
  (value descending in the high 32 bits, column in the low 32). In rows shorter than
  k * GROUPS every score is its own group (t: the k-th largest score).
  """
  return _best_first([_survivors(scores, k)], len(scores), min(k, scores.shape[1]))


def _survivors(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(C, L) scores -> (row (N,), key (N,) uint64) of the scores >= their row's threshold
  (top_k_rows), every row's top min(k, L) among them."""
  rows, length = scores.shape
  k = min(k, length)
  if k == 0 or rows == 0:
    return np.zeros(0, np.int64), np.zeros(0, np.uint64)
  width = length // GROUPS
  maxima = scores
  if width >= k:
    maxima = scores[:, :width * GROUPS].reshape(rows, GROUPS, width).max(axis=1)  # (C, W)
    if length > width * GROUPS:  # the columns after the last whole group count alone
      maxima = np.concatenate([maxima, scores[:, width * GROUPS:]], axis=1)
  threshold = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
  flat = np.flatnonzero(scores >= threshold[:, None])  # row-major
  row, column = np.divmod(flat, length)
  return row, (_descending(scores.reshape(-1)[flat]) << np.uint64(32)) | column.astype(np.uint64)


def _best_first(survivors: list, rows: int, k: int) -> np.ndarray:
  """[(row, key)] from _survivors (rows offset to the whole) -> (rows, k) int64 columns, each
  row's k smallest keys in order: one row-wise sort of a (rows, most survivors) table."""
  if k == 0 or rows == 0:
    return np.zeros((rows, k), np.int64)
  row = np.concatenate([r for r, _ in survivors])
  counts = np.bincount(row, minlength=rows)  # every row has >= k
  table = np.full((rows, counts.max()), np.iinfo(np.uint64).max, np.uint64)  # (C, M)
  table[row, np.arange(len(row)) - (np.cumsum(counts) - counts)[row]] = np.concatenate(
      [key for _, key in survivors])
  table.sort(axis=1)
  return (table[:, :k] & np.uint64(0xFFFFFFFF)).astype(np.int64)


def _descending(value: np.ndarray) -> np.ndarray:
  """float32 values -> uint64 in [0, 2^32) that decrease as the value increases, exactly: the
  value's bits made monotone (-0.0 counts as +0.0), then reversed."""
  bits = (value + np.float32(0.0)).view(np.int32).astype(np.int64)
  increasing = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # int32 range, increasing with the value
  return (0x7FFFFFFF - increasing).astype(np.uint64)


@dataclasses.dataclass(frozen=True)
class ScannConfig:
  """Attributes:
    mode: "brute_force", "ah" (asymmetric hashing + reorder) or "tree_ah".
    num_leaves, leaves_to_search: the tree (tree_ah only).
    dims_per_block, anisotropic_threshold: AH quantization.
    reorder: candidates re-scored exactly before the top-K is returned.
  """

  mode: str = "brute_force"
  num_leaves: int = 0
  leaves_to_search: int = 0
  dims_per_block: int = 2
  anisotropic_threshold: float = 0.2
  reorder: int = 0


def scann_config(num_keys: int, k: int = 100) -> ScannConfig:
  """Parameters by index size: exact below 20k, AH + reorder to 50k, then tree + AH."""
  if num_keys < 20_000:
    return ScannConfig("brute_force")
  if num_keys < 50_000:
    return ScannConfig("ah", reorder=3 * k)
  return tree_ah_config(num_keys, k)


def tree_ah_config(num_keys: int, k: int = 100) -> ScannConfig:
  """The partitioning tree (sqrt(L) leaves, a quarter searched) in front of AH + reorder."""
  leaves = max(int(np.sqrt(num_keys)), 2)
  return ScannConfig("tree_ah", num_leaves=leaves,
                     leaves_to_search=max(leaves // 4, min(8, leaves)), reorder=4 * k)


# Where ScaNN's native log lines go (they are written to file descriptor 2, which Python's
# logging levels cannot reach).
THIRD_PARTY_LOG = pathlib.Path(tempfile.gettempdir()) / "twin_tf_scann.log"


@contextlib.contextmanager
def native_stderr_to(path: str | pathlib.Path):
  """Within the block, what native code writes to file descriptor 2 is appended to `path`;
  the console's stderr comes back after it."""
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(path, "ab") as log:
      os.dup2(log.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


class ScannRetriever:
  """ScaNN (scann_ops_pybind, numpy API) over the augmented key vectors.

  Args:
    keys: (L, D) augmented key vectors.
    k: the K searches return by default.
    config: default scann_config(L, k).
  """

  def __init__(self, keys: np.ndarray, k: int = 100, config: ScannConfig | None = None,
               searcher=None):
    import scann  # pylint: disable=import-outside-toplevel
    keys = np.ascontiguousarray(keys, dtype=np.float32)
    self.num_keys, self.k = len(keys), k
    self.config = config or scann_config(len(keys), k)
    if searcher is not None:
      self._searcher = searcher
      return
    builder = scann.scann_ops_pybind.builder(keys, min(k, len(keys)), "dot_product")
    c = self.config
    if c.mode == "brute_force":
      builder = builder.score_brute_force()
    else:
      if c.mode == "tree_ah":
        builder = builder.tree(num_leaves=c.num_leaves, num_leaves_to_search=c.leaves_to_search,
                               training_sample_size=min(len(keys), 250_000))
      elif c.mode != "ah":
        raise ValueError(f"unknown ScaNN mode {c.mode!r}")
      builder = builder.score_ah(c.dims_per_block,
                                 anisotropic_quantization_threshold=c.anisotropic_threshold)
      builder = builder.reorder(min(c.reorder, len(keys)))
    with native_stderr_to(THIRD_PARTY_LOG):  # absl lines: "Could not normalize centroid..."
      self._searcher = builder.build()

  def search(self, queries: np.ndarray, k: int | None = None) -> np.ndarray:
    """(C, D) queries -> (C, min(k, L)) int64 indices, best first."""
    k = min(k or self.k, self.num_keys)
    neighbors, _ = self._searcher.search_batched(np.asarray(queries, np.float32),
                                                 final_num_neighbors=k)
    return neighbors.astype(np.int64)

  def serialize(self, folder: str | pathlib.Path) -> None:
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    self._searcher.serialize(str(folder))
    (folder / "twin_tf_retriever.json").write_text(json.dumps(
        {"num_keys": self.num_keys, "k": self.k, "config": dataclasses.asdict(self.config)}))

  @classmethod
  def load(cls, folder: str | pathlib.Path) -> "ScannRetriever":
    import scann  # pylint: disable=import-outside-toplevel
    meta = json.loads((pathlib.Path(folder) / "twin_tf_retriever.json").read_text())
    searcher = scann.scann_ops_pybind.load_searcher(str(folder))
    retriever = cls.__new__(cls)
    retriever.num_keys, retriever.k = meta["num_keys"], meta["k"]
    retriever.config, retriever._searcher = ScannConfig(**meta["config"]), searcher
    return retriever


def recall_at_k(found: np.ndarray, reference: np.ndarray) -> float:
  """Mean fraction of the reference top-K that `found` also returned, per query."""
  return float(np.mean([len(set(f) & set(r)) / max(len(r), 1)
                        for f, r in zip(found, reference)]))
