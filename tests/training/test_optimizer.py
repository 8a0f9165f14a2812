"""EmbeddingAdam is Adam: on a table looked up by id (a sparse gradient on TensorFlow) it
takes the steps Keras' Adam takes on the same table multiplied by one-hot rows (a dense
gradient, plain Adam); Keras' Adam on the looked-up table does not."""

import keras
import numpy as np
from keras import ops

from twin_tf.training.optimizer import EmbeddingAdam


class _Table(keras.layers.Layer):
  """(B, 6) ids -> (B, 4) mean of their rows, by lookup or by one-hot product."""

  def __init__(self, one_hot: bool, **kwargs):
    super().__init__(**kwargs)
    self.one_hot = one_hot
    self.table = self.add_weight(shape=(20, 4), initializer="uniform")

  def call(self, ids):
    if self.one_hot:
      rows = ops.matmul(ops.one_hot(ids, 20), self.table)
    else:
      rows = ops.take(self.table, ids, axis=0)
    return ops.mean(rows, axis=1)


def _trained_table(optimizer, one_hot: bool) -> np.ndarray:
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 8, (30, 6)).astype("int32")  # rows 8.. are never looked up
  labels = rng.integers(0, 2, (30, 1)).astype("float32")
  keras.utils.set_random_seed(1)
  inputs = keras.Input((6,), dtype="int32")
  table = _Table(one_hot)
  model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(table(inputs)))
  model.compile(optimizer=optimizer, loss="binary_crossentropy")
  for step in range(3):  # each step looks up some rows and not others
    model.train_on_batch(ids[step * 10:step * 10 + 10] % (8 - 2 * step), labels[:10])
  return np.asarray(table.table)


def test_embedding_adam_takes_plain_adam_steps():
  adam = _trained_table(keras.optimizers.Adam(0.05), one_hot=True)
  ours = _trained_table(EmbeddingAdam(0.05), one_hot=False)
  np.testing.assert_allclose(ours, adam, rtol=1e-5, atol=1e-6)
  if keras.backend.backend() == "tensorflow":  # where the sparse gradient exists
    quirk = _trained_table(keras.optimizers.Adam(0.05), one_hot=False)
    assert not np.allclose(quirk, adam, rtol=1e-5, atol=1e-6)
