"""Keras 3 layers of TWIN-V2 (keras.ops, and on TensorFlow a plain gather for rows:
sequence_ops.take_rows; they run on TensorFlow and JAX).

Shapes use B (batch, one row per user request), C (candidates per request), L (sequence
positions), H (heads), d_k (key size), J (cross features), K (GSU top-k).
"""

from twin_tf.model.layers.cluster_aware_attention import ClusterAwareTargetAttention
from twin_tf.model.layers.cross_feature_bias import CrossFeatureBias, CrossFeatureEmbedding
from twin_tf.model.layers.dense_normalization import DenseNormalization
from twin_tf.model.layers.din_attention import DinAttention
from twin_tf.model.layers.esu import Esu
from twin_tf.model.layers.gsu import GsuTopK
from twin_tf.model.layers.inherent_projection import InherentProjection
from twin_tf.model.layers.item_embedding import ItemEmbedding
from twin_tf.model.layers.sequence_ops import MASK_VALUE, gather_selected
from twin_tf.model.layers.short_term import ShortTermAttention

__all__ = [
    "ClusterAwareTargetAttention",
    "CrossFeatureBias",
    "CrossFeatureEmbedding",
    "DenseNormalization",
    "DinAttention",
    "Esu",
    "GsuTopK",
    "InherentProjection",
    "ItemEmbedding",
    "MASK_VALUE",
    "ShortTermAttention",
    "gather_selected",
]
