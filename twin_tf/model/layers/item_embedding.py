"""Inherent item features (the id and the FeatureSpec's item features) -> one vector, K_h."""

import keras
from keras import ops

from twin_tf.model.layers.sequence_ops import take_rows


@keras.saving.register_keras_serializable(package="twin_tf")
class ItemEmbedding(keras.layers.Layer):
  """Concatenates the embeddings of an item's inherent features; shared by targets and
  sequences, so a cluster's key and a candidate's query live in the same space.

  Args:
    vocab_sizes: {field: vocabulary size (index 0 is padding)}, the item id first.
    item_dim: item-id embedding size.  feature_dim: every other feature's embedding size.
    item_l2: L2 penalty on the item-id table (0: none).
    pretrained_dim: size of a frozen table of pretrained item vectors (co-occurrence
      embeddings, the clustering's item space; set_pretrained fills it) appended last; 0:
      none.

  Call:
    ids: list of (...) int ids, one per field in vocab_sizes order.
    returns: (..., item_dim + (F - 1) * feature_dim + pretrained_dim) for F fields.
  """

  def __init__(self, vocab_sizes: dict, item_dim: int = 32, feature_dim: int = 8,
               item_l2: float = 0.0, pretrained_dim: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.vocab_sizes = {str(k): int(v) for k, v in vocab_sizes.items()}
    self.item_dim, self.feature_dim, self.item_l2 = item_dim, feature_dim, item_l2
    self.pretrained_dim = pretrained_dim
    sizes = list(self.vocab_sizes.items())
    self.tables = [keras.layers.Embedding(
        sizes[0][1], item_dim, name="item",
        embeddings_regularizer=keras.regularizers.L2(item_l2) if item_l2 else None)]
    self.tables += [keras.layers.Embedding(size, feature_dim, name=name)
                    for name, size in sizes[1:]]

  @property
  def output_dim(self) -> int:
    return self.item_dim + (len(self.tables) - 1) * self.feature_dim + self.pretrained_dim

  def build(self, ids_shape):
    for layer, shape in zip(self.tables, ids_shape):
      layer.build(shape)
    if self.pretrained_dim:
      self.pretrained = self.add_weight(
          name="pretrained", shape=(self.tables[0].input_dim, self.pretrained_dim),
          initializer="zeros", trainable=False)

  def set_pretrained(self, vectors):
    """vectors: (item vocabulary size, pretrained_dim), row i for item index i (zeros for
    padding, out-of-vocabulary and items without a vector)."""
    self.pretrained.assign(ops.convert_to_tensor(vectors, "float32"))

  def call(self, ids):
    parts = [take_rows(table.embeddings, ops.cast(i, "int32"))
             for table, i in zip(self.tables, ids)]
    if self.pretrained_dim:
      parts.append(take_rows(self.pretrained, ops.cast(ids[0], "int32")))
    return ops.concatenate(parts, axis=-1)

  def get_config(self):
    return {**super().get_config(), "vocab_sizes": self.vocab_sizes, "item_dim": self.item_dim,
            "feature_dim": self.feature_dim, "item_l2": self.item_l2,
            "pretrained_dim": self.pretrained_dim}
