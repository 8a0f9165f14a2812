"""DIN's local activation unit (Zhou et al., KDD'18): the DIN baseline's attention."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="twin_tf")
class DinAttention(keras.layers.Layer):
  """Weights w_i = MLP([q, k_i, q - k_i, q * k_i]) (no softmax, as in DIN); sum_i w_i k_i.

  Args:
    hidden_units: sizes of the activation unit's hidden layers.

  Call:
    query: (B, C, D).  keys: (B, S, D).  valid: (B, S) bool.
    returns: (B, C, D); padding takes no weight.
  """

  def __init__(self, hidden_units=(80, 40), **kwargs):
    super().__init__(**kwargs)
    self.hidden_units = tuple(hidden_units)
    self.unit = [keras.layers.Dense(u, activation="sigmoid") for u in self.hidden_units]
    self.unit.append(keras.layers.Dense(1))

  def build(self, query_shape, keys_shape=None, valid_shape=None):
    shape = tuple(query_shape[:-1]) + (None, 4 * query_shape[-1])
    for layer in self.unit:
      layer.build(shape)
      shape = shape[:-1] + (layer.units,)

  def call(self, query, keys, valid):
    q = ops.broadcast_to(query[:, :, None, :], (ops.shape(query)[0], ops.shape(query)[1],
                                                ops.shape(keys)[1], ops.shape(query)[2]))
    k = ops.broadcast_to(keys[:, None, :, :], ops.shape(q))
    x = ops.concatenate([q, k, q - k, q * k], axis=-1)  # (B, C, S, 4D)
    for layer in self.unit:
      x = layer(x)
    weights = x[..., 0] * ops.cast(valid[:, None, :], x.dtype)  # (B, C, S)
    return ops.einsum("bcs,bsd->bcd", weights, keys)

  def get_config(self):
    return {**super().get_config(), "hidden_units": list(self.hidden_units)}
