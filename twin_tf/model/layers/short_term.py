"""Short-term interest: multi-head target attention over the most recent raw behaviors."""

import math

import keras
from keras import ops

from twin_tf.model.layers.sequence_ops import MASK_VALUE, project_per_head


@keras.saving.register_keras_serializable(package="twin_tf")
class ShortTermAttention(keras.layers.Layer):
  """softmax((q W_q)(k W_k)^T / sqrt(d_k)) (k W_v) per head, heads concatenated, then W_o.

  Args:
    num_heads: H.  key_dim: d_k.  value_dim: per-head value size.  output_dim: after W_o.

  Call:
    query: (B, C, D_q) target features.
    keys: (B, S, D) behavior features (S = 50 most recent).
    valid: (B, S) bool.
    returns: (B, C, output_dim); zero where the user has no recent behavior.
  """

  def __init__(self, num_heads: int = 4, key_dim: int = 16, value_dim: int = 16,
               output_dim: int = 64, **kwargs):
    super().__init__(**kwargs)
    self.num_heads, self.key_dim = num_heads, key_dim
    self.value_dim, self.output_dim = value_dim, output_dim

  def build(self, query_shape, keys_shape=None, valid_shape=None):
    h = self.num_heads
    self.query_kernel = self.add_weight(name="query_kernel",
                                        shape=(query_shape[-1], h, self.key_dim))
    self.key_kernel = self.add_weight(name="key_kernel", shape=(keys_shape[-1], h, self.key_dim))
    self.value_kernel = self.add_weight(name="value_kernel",
                                        shape=(keys_shape[-1], h, self.value_dim))
    self.output_kernel = self.add_weight(name="output_kernel",
                                         shape=(h * self.value_dim, self.output_dim))

  def call(self, query, keys, valid):
    # Plain and batched matrix products throughout: TensorFlow's CPU einsums (and their
    # gradients) for these contractions were several times slower.
    q = _heads_first(project_per_head(query, self.query_kernel))  # (B, H, C, d_k)
    k = _heads_first(project_per_head(keys, self.key_kernel))  # (B, H, S, d_k)
    v = _heads_first(project_per_head(keys, self.value_kernel))  # (B, H, S, d_v)
    scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(self.key_dim)
    # The mask is added (B, 1, 1, S), and users without a valid behavior are zeroed at the
    # end (B, 1, 1): a broadcast select or product over scores (B, H, C, S) was the slowest op
    # of a serving request on one core. Padding's weight underflows to exactly 0 otherwise.
    scores = scores + ops.where(valid, 0.0, MASK_VALUE)[:, None, None, :]
    weights = ops.softmax(scores, axis=-1)
    heads = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))  # (B, C, H, d_v)
    merged = ops.reshape(heads, ops.shape(heads)[:2] + (-1,))
    any_valid = ops.cast(ops.any(valid, axis=-1), merged.dtype)[:, None, None]
    return ops.matmul(merged, self.output_kernel) * any_valid

  def get_config(self):
    return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
            "value_dim": self.value_dim, "output_dim": self.output_dim}


def _heads_first(x):
  """(B, N, H, d) -> (B, H, N, d)."""
  return ops.transpose(x, (0, 2, 1, 3))
