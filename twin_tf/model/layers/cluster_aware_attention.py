"""Cluster-aware target attention scores alpha', shared by the GSU and the ESU."""

import math

import keras
from keras import ops

from twin_tf.model.layers.cross_feature_bias import CrossFeatureBias
from twin_tf.model.layers.inherent_projection import InherentProjection
from twin_tf.model.layers.sequence_ops import MASK_VALUE


@keras.saving.register_keras_serializable(package="twin_tf")
class ClusterAwareTargetAttention(keras.layers.Layer):
  """alpha'_i = (K_h W_h)_i . (q W_q) / sqrt(d_k) + (K_c W_c)_i . beta + ln(n_i), per head.

  n_i is the cluster size (1 for a raw behavior, which reduces TWIN-V2 to TWIN). Adding
  ln n makes softmax(alpha') weigh a cluster exactly as n identical raw behaviors would.

  With `normalized`, the target term is live from the first step: K_h and q enter W_h and W_q
  at unit RMS (key_input; the values K the ESU pools keep their scale), the kernels start
  at variance 1 / D_h (so each key and query component starts at unit variance, the target
  term of a head at about unit std, as in scaled dot-product attention), and a learnt
  temperature exp(tau_h) per head scales q W_q. Without it, the target term starts near
  1e-4 against a few units of ln n and its kernels' gradients stay below Adam's epsilon.

  Args:
    num_heads: H; every head has its own W_h, W_q, w and beta.
    key_dim: d_k.
    use_log_size: add ln(n) (False: the "without ln n" ablation).
    normalized: unit-RMS inherent features into W_h / W_q, kernels at variance 1 / D_h and a
      learnt temperature per head (False: the paper's plain projections, glorot kernels).

  Call:
    seq_inherent: (B, L, D_h) inherent features of the clusters / behaviors.
    seq_cross: (B, L, J, dim) cross-feature embeddings.
    size: (B, L) cluster sizes n (>= 1 where valid is True).
    valid: (B, L) bool, False at padding.
    target_inherent: (B, C, D_h) inherent features of the C candidate items.
    returns: alpha' (B, C, L, H), MASK_VALUE at padding.

  References:
    TWIN-V2 (Si et al., CIKM'24) section 3.3, eq. 8.
  """

  def __init__(self, num_heads: int = 4, key_dim: int = 16, use_log_size: bool = True,
               normalized: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.num_heads, self.key_dim, self.use_log_size = num_heads, key_dim, use_log_size
    self.normalized = normalized
    # fan_in of a (D_h, H, d_k) kernel is H D_h, so scale H gives variance 1 / D_h
    initializer = (keras.initializers.VarianceScaling(num_heads, "fan_in", "truncated_normal")
                   if normalized else "glorot_uniform")
    self.key_projection = InherentProjection(num_heads, key_dim, initializer,
                                             name="key_projection")
    self.query_projection = InherentProjection(num_heads, key_dim, initializer,
                                               name="query_projection")
    self.cross_bias = CrossFeatureBias(num_heads, name="cross_bias")

  def build(self, seq_inherent_shape, seq_cross_shape=None, size_shape=None,
            valid_shape=None, target_inherent_shape=None):
    self.key_projection.build(seq_inherent_shape)
    self.query_projection.build(target_inherent_shape or seq_inherent_shape)
    self.cross_bias.build(seq_cross_shape)
    if self.normalized:
      self.log_temperature = self.add_weight(name="log_temperature", shape=(self.num_heads,),
                                             initializer="zeros")

  def key_input(self, inherent):
    """What W_h (and, for a target, W_q) projects: K_h, at unit RMS when normalized (|x| =
    sqrt(D_h); zero stays zero). (..., D_h) -> (..., D_h)."""
    return inherent * self.key_scale(inherent)[..., None] if self.normalized else inherent

  def key_scale(self, inherent):
    """The factor key_input applies to each row, 1 / RMS(K_h): (..., D_h) -> (...)."""
    return _inverse_rms(inherent)[..., 0]

  def item_keys(self, inherent):
    """K_h W_h / sqrt(d_k): (..., D_h) -> (..., H, d_k); user-independent, cacheable."""
    return self.key_projection(self.key_input(inherent)) / math.sqrt(self.key_dim)

  def queries(self, target_inherent):
    """q W_q (times each head's temperature when normalized): (..., D_h) -> (..., H, d_k)."""
    if not self.normalized:
      return self.query_projection(target_inherent)
    query = self.query_projection(self.key_input(target_inherent))  # q at unit RMS too
    return query * ops.exp(self.log_temperature)[:, None]

  def bias(self, seq_cross, size):
    """(K_c W_c) beta + ln n: (B, L, H), the per-cluster term of alpha'."""
    bias = self.cross_bias(seq_cross)
    if self.use_log_size:
      bias = bias + _log_size(size, bias.dtype)[..., None]
    return bias

  def summed_bias(self, seq_cross, size):
    """sum_h of bias(): (B, L), one product with the heads' cross kernels summed (all the
    GSU needs of the bias)."""
    summed = self.cross_bias.summed(seq_cross)
    if self.use_log_size:
      summed = summed + self.num_heads * _log_size(size, summed.dtype)
    return summed

  def call(self, seq_inherent, seq_cross, size, valid, target_inherent):
    keys = self.item_keys(seq_inherent)  # (B, L, H, d_k)
    query = self.queries(target_inherent)  # (B, C, H, d_k)
    alpha = ops.einsum("blhk,bchk->bclh", keys, query)  # (B, C, L, H)
    alpha = alpha + self.bias(seq_cross, size)[:, None, :, :]
    return ops.where(valid[:, None, :, None], alpha, MASK_VALUE)

  def summed_factors(self, inherent, query, summed_bias, valid, key_scale=None):
    """sum_h alpha'_h as ONE inner product per (candidate, position): (positions (B, L, D + 1),
    queries (B, C, D + 1)) whose product queries . positions^T (B, C, L) is it,
    [X | sum_h bias_h] . [Q | 1]. X is the inherent features K_h and Q the query folded through
    the key projection, sum_h W_h (q W_q)_h / sqrt(d_k), so no key is projected per position.
    Folding is also the cheaper form when D_h > H d_k, for fewer than D_h H d_k / (D_h - H d_k)
    candidates (320 at D_h = 80, H d_k = 64): projecting every position costs L D_h H d_k,
    folding C L (D_h - H d_k) more in the product; and a pruned GSU multiplies only the
    positions that can reach a top k, where a projection would still touch all L (one core,
    C = 200, L = 10^5: 64 against 71 ms a request with a dead target term, 134 against 139
    with a live one).

    The GSU ranks by this product (GsuTopK.select_by_product); it never materializes the
    (B, C, L, H) per-head scores. Padding scores MASK_VALUE plus its features' product (the
    mask rides in the offset column, so one matrix product is the whole pass over (C, L)).
    inherent (B, L, D_h), query (B, C, H, d_k) (queries()), summed_bias (B, L)
    (summed_bias()), valid (B, L). Normalized, X is key_input(K_h); key_scale (B, L) is its
    factor per row, key_scale(inherent), when the caller has it already (None: computed here).
    """
    if self.normalized and key_scale is not None:
      positions = inherent * key_scale[..., None]
    else:
      positions = self.key_input(inherent)
    flat_query = ops.reshape(query, ops.shape(query)[:2] + (query.shape[2] * query.shape[3],))
    kernel = self.key_projection.kernel  # (D_h, H, d_k)
    flat_kernel = ops.reshape(kernel, (kernel.shape[0], -1)) / math.sqrt(self.key_dim)
    flat_query = ops.matmul(flat_query, ops.transpose(flat_kernel))  # (B, C, D_h)
    offset = ops.where(valid, summed_bias, MASK_VALUE)  # (B, L)
    positions_and_offset = ops.concatenate([positions, offset[..., None]], axis=-1)
    query_and_one = ops.concatenate([flat_query, ops.ones_like(flat_query[..., :1])], axis=-1)
    return positions_and_offset, query_and_one

  def scores_at(self, values, query, size, key_scale=None):
    """Per-head alpha' of chosen positions, heads first, from their values
    K = [K_h | K_c flattened] (the rows the ESU pools, so neither keys nor bias are gathered):
    alpha'_h = K . [W_h (q W_q)_h / sqrt(d_k) | (W_c beta)_h] + ln n.

    values (B, C, K, D_h + J dim), query (B, C, H, d_k) (queries()), size (B, C, K)
    -> (B, C, H, K). Normalized, K_h's part is scaled to unit RMS per row (key_input):
    key_scale (B, C, K) holds those factors (key_scale() of the positions, gathered like the
    values; None: computed here from the values, the slower way).
    """
    inherent_query = ops.einsum("bchk,dhk->bchd", query,
                                self.key_projection.kernel) / math.sqrt(self.key_dim)
    cross_kernel = ops.transpose(self.cross_bias.kernel())  # (H, J dim)
    cross_query = ops.broadcast_to(cross_kernel,
                                   ops.shape(inherent_query)[:2] + tuple(cross_kernel.shape))
    if self.normalized:  # one product for both parts: [[q_h, 0], [0, q_c]] (B, C, 2H, D)
      if key_scale is None:
        key_scale = self.key_scale(values[..., :inherent_query.shape[-1]])
      stacked = ops.concatenate([
          ops.concatenate([inherent_query, ops.zeros_like(cross_query)], axis=-1),
          ops.concatenate([ops.zeros_like(inherent_query), cross_query], axis=-1)], axis=2)
      both = ops.matmul(stacked, ops.transpose(values, (0, 1, 3, 2)))  # (B, C, 2H, K)
      heads = self.num_heads
      scores = both[:, :, :heads] * key_scale[:, :, None, :] + both[:, :, heads:]
    else:
      value_query = ops.concatenate([inherent_query, cross_query], axis=-1)  # (B, C, H, D)
      scores = ops.matmul(value_query, ops.transpose(values, (0, 1, 3, 2)))  # (B, C, H, K)
    if self.use_log_size:
      scores = scores + _log_size(size, scores.dtype)[:, :, None, :]
    return scores

  def get_config(self):
    return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
            "use_log_size": self.use_log_size, "normalized": self.normalized}


def _inverse_rms(x, epsilon: float = 1e-6):
  """1 / RMS of x over its last axis: (..., D) -> (..., 1)."""
  return ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + epsilon)



def _log_size(size, dtype):
  """ln n of cluster sizes (padding's size 0 counts as 1)."""
  return ops.log(ops.maximum(ops.cast(size, dtype), 1.0))
