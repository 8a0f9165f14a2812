"""Per-head projection of inherent item features, K_h W_h (or q W_q for the target)."""

import keras

from twin_tf.model.layers.sequence_ops import project_per_head


@keras.saving.register_keras_serializable(package="twin_tf")
class InherentProjection(keras.layers.Layer):
  """Projects inherent (user-independent) item features into per-head keys.

  Because the inputs are features of the item alone, the output for an item is the same for
  every user: it can be computed once per item and cached (the key cache of the serving path).

  Args:
    num_heads: H.
    key_dim: d_k, the size of each head's key.
    kernel_initializer: of the (D_h, H, d_k) kernel (default glorot_uniform).

  Call:
    inputs: (..., D_h) inherent feature embeddings.
    returns: (..., H, d_k).

  Example:
    >>> keys = InherentProjection(num_heads=4, key_dim=16)(keras.ops.ones((2, 10, 48)))
    >>> keys.shape
    (2, 10, 4, 16)

  References:
    TWIN (Chang et al., KDD'23) section 3.3; TWIN-V2 (Si et al., CIKM'24) section 3.3.
  """

  def __init__(self, num_heads: int, key_dim: int, kernel_initializer="glorot_uniform",
               **kwargs):
    super().__init__(**kwargs)
    self.num_heads, self.key_dim = num_heads, key_dim
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def build(self, input_shape):
    self.kernel = self.add_weight(
        name="kernel", shape=(input_shape[-1], self.num_heads, self.key_dim),
        initializer=self.kernel_initializer)

  def call(self, inputs):
    return project_per_head(inputs, self.kernel)

  def get_config(self):
    return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
