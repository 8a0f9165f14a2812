"""Exact search unit: multi-head softmax(alpha') attention over the selected clusters."""

import keras
from keras import ops

from twin_tf.model.layers.sequence_ops import MASK_VALUE, per_head_pooling, project_per_head


@keras.saving.register_keras_serializable(package="twin_tf")
class Esu(keras.layers.Layer):
  """Per head h: sum_i softmax_i(alpha'_ih) (K_i W_v,h); heads concatenated, then W_o.

  alpha' comes from the same ClusterAwareTargetAttention as the GSU's (shared parameters), so
  the ESU reuses the GSU's scores at the selected positions.

  Args:
    value_dim: size of each head's value.
    output_dim: size after W_o.

  Call:
    alpha: (B, C, H, K) alpha' of the selected positions, heads first.
    values: (B, C, K, D) features K = [K_h, K_c] of the selected positions.
    valid: (B, C, K) bool; invalid positions take no weight (all invalid -> zero output).
    returns: (B, C, output_dim).
  """

  def __init__(self, value_dim: int = 16, output_dim: int = 64, **kwargs):
    super().__init__(**kwargs)
    self.value_dim, self.output_dim = value_dim, output_dim

  def build(self, alpha_shape, values_shape=None, valid_shape=None):
    heads = alpha_shape[2]
    self.value_kernel = self.add_weight(
        name="value_kernel", shape=(values_shape[-1], heads, self.value_dim),
        initializer="glorot_uniform")
    self.output_kernel = self.add_weight(
        name="output_kernel", shape=(heads * self.value_dim, self.output_dim),
        initializer="glorot_uniform")

  def call(self, alpha, values, valid):
    weights = _weights(alpha, valid)  # (B, C, H, K)
    # sum_i w_ih (K_i W_v,h) = (sum_i w_ih K_i) W_v,h: pool the raw values per head first,
    # then project once per (candidate, head) instead of once per (candidate, cluster, head).
    pooled = ops.matmul(weights, values)  # (B, C, H, D), a batched matrix product
    return self._output(ops.einsum("bchd,dhv->bchv", pooled, self.value_kernel), valid)

  def value_heads(self, values, first: int = 0):
    """K_i W_v,h of every head: (..., D) -> (..., H, value_dim), one matrix product. For rows
    that several candidates choose (pooled_heads). With `first`, values are the features
    first..first + D of K only (W_v's rows there): value_heads(K) = value_heads(K_h) +
    value_heads(K_c, D_h), so the inherent part can be cached per item."""
    kernel = self.value_kernel
    if first or values.shape[-1] != kernel.shape[0]:
      kernel = kernel[first:first + values.shape[-1]]
    return project_per_head(values, kernel)

  def pooled_heads(self, alpha, heads, valid):
    """call() from rows already projected, rows before heads: alpha (B, C, K, H), heads
    (B, C, K, H, value_dim) (value_heads() of the chosen rows), valid (B, C, K)
    -> (B, C, output_dim)."""
    weights = _weights(alpha, valid, heads_first=False)  # (B, C, K, H)
    return self._output(per_head_pooling(weights, heads), valid)

  def _output(self, heads, valid):
    """Per-head pooled values (B, C, H, value_dim) -> (B, C, output_dim); zero for a
    candidate without a valid row (valid (B, C, K))."""
    merged = ops.reshape(heads, ops.shape(heads)[:2] + (-1,))
    any_valid = ops.cast(ops.any(valid, axis=-1), merged.dtype)[..., None]  # (B, C, 1)
    return ops.matmul(merged, self.output_kernel) * any_valid

  def get_config(self):
    return {**super().get_config(), "value_dim": self.value_dim,
            "output_dim": self.output_dim}


def _weights(alpha, valid, heads_first: bool = True):
  """softmax over the K chosen rows of alpha, (B, C, H, K) (heads_first) or (B, C, K, H);
  invalid rows' weight underflows to exactly 0 when a row is valid (the caller zeroes
  candidates without one: a broadcast product over the weights was a slow op on one core).
  valid (B, C, K)."""
  offset = ops.where(valid, 0.0, MASK_VALUE)
  offset = offset[:, :, None, :] if heads_first else offset[..., None]
  return ops.softmax(alpha + offset, axis=-1 if heads_first else 2)
