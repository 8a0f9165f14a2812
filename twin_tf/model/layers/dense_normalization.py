"""Standardization of the dense "other features" with statistics fixed from training data."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="twin_tf")
class DenseNormalization(keras.layers.Layer):
  """(x - mean) / std per feature; mean and std are non-trainable weights set from training
  data by `set_statistics`.

  They are saved with the weights, so an exported model normalizes exactly as in training.

  Call:
    x: (..., D) float32 dense features.
    returns: (..., D) standardized.

  Example:
    layer = DenseNormalization()
    layer.build((None, 3))
    layer.set_statistics(np.array([2., 2., 2.]), np.array([1., 0., 1.]))
    layer(np.array([[3., 2., 1.]]))  # -> [[1., 0., -1.]] (a constant feature keeps std 1)
  """

  def build(self, input_shape):
    width = input_shape[-1]
    self.mean = self.add_weight(shape=(width,), initializer="zeros", trainable=False,
                                name="mean")
    self.std = self.add_weight(shape=(width,), initializer="ones", trainable=False,
                               name="std")

  def set_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
    """Sets (D,) mean and std of the training values (std 1 where it is ~0: a constant
    feature)."""
    self.mean.assign(np.asarray(mean, "float32"))
    self.std.assign(np.where(np.asarray(std) > 1e-6, std, 1.0).astype("float32"))

  def call(self, x):
    return (ops.cast(x, "float32") - self.mean) / self.std
