"""Cross (user-item) features: their embeddings and their per-head bias (K_c W_c) beta."""

import keras
import numpy as np
from keras import ops

from twin_tf.model.layers.sequence_ops import take_rows


@keras.saving.register_keras_serializable(package="twin_tf")
class CrossFeatureEmbedding(keras.layers.Layer):
  """Embeds J categorical cross features, each with its own table of `dim`-vectors.

  Args:
    vocab_sizes: J vocabulary sizes (index 0 is padding).
    dim: embedding size of every cross feature (8 in TWIN).

  Call:
    inputs: (..., J) int ids.
    returns: (..., J, dim).
  """

  def __init__(self, vocab_sizes, dim: int = 8, **kwargs):
    super().__init__(**kwargs)
    self.vocab_sizes, self.dim = [int(v) for v in vocab_sizes], dim
    self._offsets = np.cumsum([0] + self.vocab_sizes[:-1]).astype("int32")

  def build(self, input_shape):
    self.table = self.add_weight(name="table", shape=(sum(self.vocab_sizes), self.dim),
                                 initializer="uniform")

  def call(self, inputs):
    ids = ops.cast(inputs, "int32") + ops.convert_to_tensor(self._offsets)
    return take_rows(self.table, ids)

  def get_config(self):
    return {**super().get_config(), "vocab_sizes": self.vocab_sizes, "dim": self.dim}


@keras.saving.register_keras_serializable(package="twin_tf")
class CrossFeatureBias(keras.layers.Layer):
  """Per-head scalar bias of a behavior from its cross features: (K_c W_c) beta.

  W_c is block diagonal: cross feature j has its own w_j in R^dim, so K_c W_c in R^J holds one
  scalar per feature, e_j . w_j; beta in R^J weighs them. Every head has its own w and beta.

  Args:
    num_heads: H.

  Call:
    inputs: (..., J, dim) cross-feature embeddings.
    returns: (..., H), sum_j beta_hj (e_j . w_hj).

  References:
    TWIN (Chang et al., KDD'23) eq. 6; TWIN-V2 (Si et al., CIKM'24) eq. 7.
  """

  def __init__(self, num_heads: int, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads

  def build(self, input_shape):
    num_features, dim = input_shape[-2], input_shape[-1]
    self.w = self.add_weight(name="w", shape=(self.num_heads, num_features, dim),
                             initializer="glorot_uniform")
    self.beta = self.add_weight(name="beta", shape=(self.num_heads, num_features),
                                initializer="ones")

  def kernel(self):
    """(J dim, H), beta_hj w_hjd: the bias is the flattened embeddings (N, J dim) times it."""
    num_features, dim = self.w.shape[1:]
    weighted = ops.transpose(self.w * self.beta[..., None], (1, 2, 0))  # (J, dim, H)
    return ops.reshape(weighted, (num_features * dim, self.num_heads))

  def call(self, inputs):
    return self._times(inputs, self.kernel())  # (..., H)

  def summed(self, inputs):
    """sum_h of call(): (...), one product with the heads' kernels summed."""
    return self._times(inputs, ops.sum(self.kernel(), axis=-1, keepdims=True))[..., 0]

  @staticmethod
  def _times(inputs, kernel):
    """The flattened embeddings (..., J dim) times kernel (J dim, n): (..., n)."""
    num_features, dim = inputs.shape[-2:]
    flat = ops.reshape(inputs, (-1, num_features * dim))
    return ops.reshape(ops.matmul(flat, kernel), ops.shape(inputs)[:-2] + (kernel.shape[1],))

  def get_config(self):
    return {**super().get_config(), "num_heads": self.num_heads}
