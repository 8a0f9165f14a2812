"""General search unit: the top-K clusters per candidate by alpha'."""

import keras
from keras import ops

from twin_tf.model.layers.sequence_ops import MASK_VALUE, gather_selected

MERGES = ("sum", "round_robin")
LANES = 16  # members of a group in threshold_top_k
THRESHOLD_STEPS = 8  # bisection steps of its threshold: 125 scores a row left at L = 10^4
# From this length on threshold_top_k beats one top_k (one core, C = 200, k = 100).
THRESHOLD_MIN_LENGTH = 2500
BELOW_ANY_SCORE = -3.0e38  # pads the scores to a multiple of LANES; below MASK_VALUE
# Bound pruning ranks only the positions that can reach the top k when they are at most this
# share of all. Above it the full product and threshold_top_k are faster (bench/gsu_pruning.py,
# one core, C = 200: the crossover is near 0.7 of 10^4 positions and below 0.4 of 10^5).
PRUNE_MAX_SHARE = 1 / 3
# Relative margin on the bounds: far above float32 rounding of a product of ~50 terms (~3e-6).
BOUND_SLACK = 1e-4


@keras.saving.register_keras_serializable(package="twin_tf")
class GsuTopK(keras.layers.Layer):
  """Selects the top-K positions per candidate; no gradient flows through the selection.

  Args:
    top_k: K (100 in TWIN-V2). With fewer than K positions, all are taken.
    bound_pruning: select_by_product multiplies only the positions whose bound can reach the
      top K (product_top_k); False multiplies all (the same selection, for comparisons).
    merge: "sum" ranks by the sum of the heads' alpha' (one inner product over concatenated
      heads, what a single ScaNN index serves); "round_robin" is TWIN's merge: per-head
      rankings interleaved (rank 1 of every head, then rank 2, ...), duplicates dropped,
      until K distinct positions are chosen.

  Call:
    alpha: (B, C, L, H) scores, MASK_VALUE at padding; or, for "sum", their sum over heads
      (B, C, L) computed directly (padding there MASK_VALUE plus a small term). The model's
      GSU calls select_by_product instead, which computes that sum only where it can matter.
    valid: (B, L) bool.
    returns: (indices (B, C, K) int32, valid (B, C, K) bool). Padding is never chosen
      ahead of a real position, and chosen padding has valid False.
  """

  def __init__(self, top_k: int = 100, merge: str = "sum", bound_pruning: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    if merge not in MERGES:
      raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    self.top_k, self.merge, self.bound_pruning = top_k, merge, bound_pruning

  def call(self, alpha, valid):
    alpha = ops.stop_gradient(alpha)
    k = self.top_k if alpha.shape[2] is None else min(self.top_k, alpha.shape[2])
    if self.merge == "sum":
      summed = ops.sum(alpha, axis=-1) if len(alpha.shape) == 4 else alpha
      indices = exact_top_k(summed, k)  # (B, C, K), order is irrelevant
      distinct = True
    else:
      indices, distinct = self._round_robin(alpha, k)
    indices = ops.cast(indices, "int32")
    return indices, ops.logical_and(gather_selected(valid, indices), distinct)

  def select_by_product(self, positions, query, valid):
    """The "sum" merge over scores given as the product query . positions^T
    (ClusterAwareTargetAttention.summed_factors): positions (B, L, D + 1), query (B, C, D + 1),
    valid (B, L) -> (indices (B, C, K) int32, valid (B, C, K) bool), as call() on the product.
    """
    k = self.top_k if positions.shape[1] is None else min(self.top_k, positions.shape[1])
    positions, query = ops.stop_gradient(positions), ops.stop_gradient(query)
    max_share = PRUNE_MAX_SHARE if self.bound_pruning and _prunable(query) else 0.0
    indices = ops.cast(product_top_k(positions, query, k, max_share), "int32")
    return indices, gather_selected(valid, indices)

  @staticmethod
  def _round_robin(alpha, k):
    """(indices (B, C, K), distinct (B, C, K) bool: False for repeats filling a short list)."""
    heads = alpha.shape[-1]
    head_major = ops.transpose(alpha, (0, 1, 3, 2))  # (B, C, H, L)
    scores, ranked = ops.top_k(head_major, k)  # (B, C, H, K), each head's ranking
    # Interleave: rank 0 of heads 0..H-1, then rank 1, ... -> (B, C, K*H).
    ranked = ops.reshape(ops.transpose(ranked, (0, 1, 3, 2)), (-1, alpha.shape[1], k * heads))
    scores = ops.reshape(ops.transpose(scores, (0, 1, 3, 2)), (-1, alpha.shape[1], k * heads))
    same = ops.expand_dims(ranked, -1) == ops.expand_dims(ranked, -2)  # (B, C, KH, KH)
    earlier = ops.tril(ops.ones((k * heads, k * heads), dtype="bool"), k=-1)
    repeated = ops.any(ops.logical_and(same, earlier), axis=-1)  # seen at an earlier turn
    keep = ops.logical_and(ops.logical_not(repeated), scores > MASK_VALUE / 2)
    order = -ops.cast(ops.arange(k * heads), "float32")  # earlier turn = higher priority
    priority = ops.where(keep, order, -1e30 + order)
    top, first = ops.top_k(priority, k)  # (B, C, K) positions in the interleaved list
    return ops.take_along_axis(ranked, first, axis=2), top > -1e29

  def get_config(self):
    return {**super().get_config(), "top_k": self.top_k, "merge": self.merge,
            "bound_pruning": self.bound_pruning}


def product_top_k(positions, query, k: int, max_share: float = PRUNE_MAX_SHARE):
  """Positions (B, C, k) of the k largest scores query . positions^T, exactly, in no
  particular order. positions (B, L, D + 1): features x_l then an offset o_l that does not
  depend on the candidate (the bias, MASK_VALUE at padding); query (B, C, D + 1): q_c then 1.

  Only the positions that can reach the top k (reaching()) are multiplied and ranked, unless
  they are more than max_share of all (a target term x . q large against the spread of the
  offsets; 0: never prune, 1: always). The same k largest scores either way; among tied
  scores the positions may differ.
  """
  def ranked_all():
    return ops.cast(exact_top_k(_product(positions, query), k), "int32")

  if max_share <= 0:
    return ranked_all()
  upper, can_reach = reaching(positions, query, k)
  reach = ops.max(ops.sum(ops.cast(can_reach, "int32"), axis=-1))  # M, the most of a row

  def ranked_among_reaching():
    # (B, M) every position that can reach (rows with fewer: the next bounds too), the
    # highest bounds first: ranked in that order, the heap a CPU top_k keeps settles early
    _, kept = ops.top_k(upper, reach)
    kept = ops.cast(kept, "int32")[:, None, :]  # (B, 1, M)
    scores = _product(gather_selected(positions, kept)[:, 0], query)  # (B, C, M)
    _, chosen = ops.top_k(scores, k, sorted=False)  # one pass: on this order, faster than two
    return gather_selected(kept[:, 0, :, None], chosen)[..., 0]  # (B, C, k) positions

  worth_it = ops.cast(reach, "float32") <= max_share * ops.cast(ops.shape(upper)[1], "float32")
  return ops.cond(worth_it, ranked_among_reaching, ranked_all)


def reaching(positions, query, k: int):
  """Which positions can be among the k largest scores of some candidate, by a bound.

  s_cl = x_l . q_c + o_l lies within o_l +- r_l, r_l = |x_l| max_c |q_c| (plus a margin for
  rounding). The k positions of largest lower bound o_l - r_l score at least T, the k-th
  largest lower bound, for every candidate; a position whose upper bound o_l + r_l is below
  T is beaten by all k of them. positions, query as product_top_k
  -> (upper bounds (B, L), can reach (B, L) bool, at least k a row).
  """
  features, offset = positions[..., :-1], positions[..., -1]
  query_norm = ops.max(ops.norm(query[..., :-1], axis=-1), axis=1, keepdims=True)  # (B, 1)
  radius = ops.norm(features, axis=-1) * query_norm  # (B, L)
  radius = radius + (radius + ops.abs(offset)) * BOUND_SLACK
  lower, _ = ops.top_k(offset - radius, k, sorted=False)  # (B, k) the k largest lower bounds
  upper = offset + radius
  return upper, upper >= ops.min(lower, axis=-1, keepdims=True)


def _product(positions, query):
  """query (B, C, D) . positions (B, L, D)^T -> (B, C, L)."""
  return ops.matmul(query, ops.transpose(positions, (0, 2, 1)))


def _prunable(query) -> bool:
  """Bound pruning needs run-time shapes (TensorFlow) and pays for several candidates a row."""
  return keras.backend.backend() == "tensorflow" and query.shape[1] != 1


def exact_top_k(scores, k: int):
  """Positions (B, C, k) of the k largest of scores (B, C, L), in no particular order.

  On TensorFlow, from THRESHOLD_MIN_LENGTH positions on (decided at run time when L is
  unknown at tracing), threshold_top_k; otherwise one top_k.
  """
  def one_top_k():
    return ops.cast(ops.top_k(scores, k, sorted=False)[1], "int32")

  if keras.backend.backend() != "tensorflow":
    return one_top_k()
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  min_length = max(THRESHOLD_MIN_LENGTH, k * LANES)
  length = scores.shape[2]
  if length is not None:
    return threshold_top_k(scores, k) if length >= min_length else one_top_k()
  return tf.cond(tf.shape(scores)[2] >= min_length, lambda: threshold_top_k(scores, k),
                 one_top_k)


def threshold_top_k(scores, k: int):
  """The k largest of scores (B, C, L), L >= k LANES, exactly (TensorFlow ops; run-time
  shapes): one top_k over the few scores above a threshold instead of over all L.

  Positions l, l + W, ..., l + (LANES - 1) W (W = L / LANES, the scores padded to a multiple
  of LANES) form group l; its maximum is one elementwise maximum of LANES contiguous rows.
  A threshold T with at least k group maxima >= T (bisection between the smallest and the
  largest maximum, THRESHOLD_STEPS halvings) has at least k scores >= T, so the k largest
  are all >= T: only the members of groups whose maximum reaches T are gathered, and the
  top_k runs over those >= T (on a trained model's scores, 120-150 a row at L = 10^4 and
  10^5). On one core, C = 200, a trained TwinV2's scores: L = 10^4 5.8 ms, L = 10^5 25 ms,
  where two top_k passes over groups of 16 consecutive positions took 8.6 and 44 ms.
  The same k largest scores as one top_k; among tied scores the positions may differ.
  Returns (B, C, k) int32.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  shape = tf.shape(scores)
  batch, candidates, length = shape[0], shape[1], shape[2]
  rows, width = batch * candidates, (length + LANES - 1) // LANES
  scores = tf.reshape(tf.pad(scores, [[0, 0], [0, 0], [0, width * LANES - length]],
                             constant_values=BELOW_ANY_SCORE), (rows, width * LANES))
  maxima = tf.reduce_max(tf.reshape(scores, (rows, LANES, width)), axis=1)  # (rows, W)
  low = tf.reduce_min(maxima, -1, keepdims=True)  # k maxima always reach `low`
  high = tf.reduce_max(maxima, -1, keepdims=True)
  for _ in range(THRESHOLD_STEPS):
    middle = low + (high - low) * 0.5
    enough = tf.reduce_sum(tf.cast(maxima >= middle, tf.int32), -1, keepdims=True) >= k
    low, high = tf.where(enough, middle, low), tf.where(enough, high, middle)
  groups = tf.cast(tf.where(maxima >= low), tf.int32)  # (N, 2): row, group
  flat = tf.reshape(scores, (-1,))
  members = (groups[:, :1] * (width * LANES) + groups[:, 1:] +
             tf.range(LANES)[None] * width)  # (N, LANES) indexes into flat
  above = tf.where(tf.gather(flat, members) >= tf.gather(low[:, 0], groups[:, 0])[:, None])
  kept = tf.gather_nd(members, above)  # (N', ) ascending: grouped by row
  kept = tf.RaggedTensor.from_value_rowids(kept, kept // (width * LANES),
                                           nrows=rows).to_tensor(-1)  # (rows, M), -1: none
  kept_scores = tf.where(kept >= 0, tf.gather(flat, tf.maximum(kept, 0)), BELOW_ANY_SCORE)
  _, picked = tf.math.top_k(kept_scores, k, sorted=False)
  chosen = tf.gather(kept, picked, batch_dims=1) - tf.range(rows)[:, None] * (width * LANES)
  return tf.reshape(chosen, (batch, candidates, k))
