"""General search unit: the top-K clusters per candidate by alpha'."""

import keras
from keras import ops

from twin_tf.model.layers.sequence_ops import MASK_VALUE, gather_selected

MERGES = ("sum", "round_robin")


@keras.saving.register_keras_serializable(package="twin_tf")
class GsuTopK(keras.layers.Layer):
  """Selects the top-K positions per candidate; no gradient flows through the selection.

  Args:
    top_k: K (100 in TWIN-V2). With fewer than K positions, all are taken.
    merge: "sum" ranks by the sum of the heads' alpha' (one inner product over concatenated
      heads, what a single ScaNN index serves); "round_robin" is TWIN's merge: per-head
      rankings interleaved (rank 1 of every head, then rank 2, ...), duplicates dropped,
      until K distinct positions are chosen.

  Call:
    alpha: (B, C, L, H) scores, MASK_VALUE at padding; or, for "sum", their sum over heads
      (B, C, L) computed directly (ClusterAwareTargetAttention.summed_scores).
    valid: (B, L) bool.
    returns: (indices (B, C, K) int32, valid (B, C, K) bool). Padding is never chosen
      ahead of a real position, and chosen padding has valid False.
  """

  def __init__(self, top_k: int = 100, merge: str = "sum", **kwargs):
    super().__init__(**kwargs)
    if merge not in MERGES:
      raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    self.top_k, self.merge = top_k, merge

  def call(self, alpha, valid):
    alpha = ops.stop_gradient(alpha)
    k = self.top_k if alpha.shape[2] is None else min(self.top_k, alpha.shape[2])
    if self.merge == "sum":
      summed = ops.sum(alpha, axis=-1) if len(alpha.shape) == 4 else alpha
      _, indices = ops.top_k(summed, k, sorted=False)  # (B, C, K), order is irrelevant
      distinct = True
    else:
      indices, distinct = self._round_robin(alpha, k)
    indices = ops.cast(indices, "int32")
    return indices, ops.logical_and(gather_selected(valid, indices), distinct)

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
    return {**super().get_config(), "top_k": self.top_k, "merge": self.merge}

