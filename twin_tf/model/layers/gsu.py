"""General search unit: the top-K clusters per candidate by alpha'."""

import keras
from keras import ops

from twin_tf.model.layers.sequence_ops import MASK_VALUE, gather_selected

MERGES = ("sum", "round_robin")
GROUP_BITS = 4
GROUP = 1 << GROUP_BITS  # positions per group in the two-pass top-k (a power of two)
# From this length on two passes beat one top_k (one core, C = 200, k = 100: no slower on a
# trained model's scores at 2,500 positions, 20% faster on independent ones).
TWO_PASS_MIN_LENGTH = 2500
BELOW_ANY_SCORE = -3.0e38  # fills the last group; below MASK_VALUE, so never chosen
# Bound pruning ranks only the positions that can reach the top k when they are at most this
# share of all. Above it the full product and two_pass_top_k are faster (bench/gsu_pruning.py,
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

  From TWO_PASS_MIN_LENGTH positions on, and enough for k groups (decided at run time when L
  is unknown at tracing), two_pass_top_k; below it, one top_k.
  """
  min_length = max(TWO_PASS_MIN_LENGTH, k * GROUP)
  length = scores.shape[2]
  if length is not None:
    if length >= min_length:
      return two_pass_top_k(scores, k)
    return ops.top_k(scores, k, sorted=False)[1]
  return ops.cond(ops.shape(scores)[2] >= min_length,
                  lambda: two_pass_top_k(scores, k),
                  lambda: ops.cast(ops.top_k(scores, k, sorted=False)[1], "int32"))


def two_pass_top_k(scores, k: int):
  """The k largest of scores (B, C, L), L >= k GROUP, exactly, by two top_k over fewer
  positions.

  The k largest lie in the k groups of GROUP consecutive positions whose maxima are largest:
  a first top_k over the L / GROUP group maxima finds those groups, a second picks the k
  among their members. In front of the members the second lists k copies of a floor just
  below the k-th group maximum: the heap a CPU top_k keeps starts there, so only members
  above it (at least the k maxima, rarely many more) change the heap, and every floor copy
  is displaced by them. On one core, L = 10^4, C = 200: 5.9 ms, where a first pass sorted
  by group maximum took 6.4 and one top_k 9.1. The same k largest scores as one top_k;
  among tied scores the positions may differ.
  Returns (B, C, k) int32.
  """
  batch, candidates, length = ops.shape(scores)
  groups = (length + GROUP - 1) // GROUP
  padded = ops.pad(scores, [[0, 0], [0, 0], [0, groups * GROUP - length]],
                   constant_values=BELOW_ANY_SCORE)
  grouped = ops.reshape(padded, (batch, candidates, groups, GROUP))
  maxima, top_groups = ops.top_k(ops.max(grouped, axis=-1), k, sorted=False)  # (B, C, k)
  top_groups = ops.cast(top_groups, "int32")
  members = gather_selected(ops.reshape(grouped, (batch, candidates * groups, GROUP)),
                            top_groups + ops.arange(candidates, dtype="int32")[:, None] *
                            ops.cast(groups, "int32"))  # (B, C, k, GROUP)
  kth = ops.min(maxima, axis=-1, keepdims=True)  # (B, C, 1): k members reach it
  floor = kth - (ops.abs(kth) + 1.0) * 2.0 ** -20  # strictly below it, never a member's rival
  pool = ops.concatenate([ops.broadcast_to(floor, ops.shape(maxima)),
                          ops.reshape(members, (batch, candidates, k * GROUP))], axis=-1)
  _, picked = ops.top_k(pool, k, sorted=False)
  picked = ops.cast(picked, "int32") - k  # (B, C, k) in [0, k * GROUP): members only
  # Member m is position GROUP top_groups[m / GROUP] + m % GROUP (shifts: GROUP is 2^bits).
  group = gather_selected(ops.reshape(top_groups, (batch, candidates * k)),
                          ops.right_shift(picked, GROUP_BITS) +
                          ops.arange(candidates, dtype="int32")[:, None] * k)
  return ops.left_shift(group, GROUP_BITS) + ops.bitwise_and(picked, GROUP - 1)
