"""Inherent item features (id, category, release bucket) -> one embedding vector, K_h."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="twin_tf")
class ItemEmbedding(keras.layers.Layer):
  """Concatenates the embeddings of an item's inherent features; shared by targets and
  sequences, so a cluster's key and a candidate's query live in the same space.

  Args:
    item_vocab, category_vocab, year_vocab: vocabulary sizes (index 0 is padding).
    item_dim: item-id embedding size.  feature_dim: category / year embedding size.
    item_l2: L2 penalty on the item-id table (0: none).

  Call:
    item, category, year: (...) int ids.
    returns: (..., item_dim + 2 * feature_dim).
  """

  def __init__(self, item_vocab: int, category_vocab: int, year_vocab: int,
               item_dim: int = 32, feature_dim: int = 8, item_l2: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.item_vocab, self.category_vocab, self.year_vocab = item_vocab, category_vocab, year_vocab
    self.item_dim, self.feature_dim, self.item_l2 = item_dim, feature_dim, item_l2
    self.item = keras.layers.Embedding(
        item_vocab, item_dim, name="item",
        embeddings_regularizer=keras.regularizers.L2(item_l2) if item_l2 else None)
    self.category = keras.layers.Embedding(category_vocab, feature_dim, name="category")
    self.year = keras.layers.Embedding(year_vocab, feature_dim, name="year")

  @property
  def output_dim(self) -> int:
    return self.item_dim + 2 * self.feature_dim

  def build(self, item_shape, category_shape=None, year_shape=None):
    for layer in (self.item, self.category, self.year):
      layer.build(item_shape)

  def call(self, item, category, year):
    return ops.concatenate([self.item(item), self.category(category), self.year(year)], axis=-1)

  def get_config(self):
    return {**super().get_config(), "item_vocab": self.item_vocab,
            "category_vocab": self.category_vocab, "year_vocab": self.year_vocab,
            "item_dim": self.item_dim, "feature_dim": self.feature_dim, "item_l2": self.item_l2}
