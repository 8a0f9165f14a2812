"""Keras 3 layers of TWIN-V2 (keras.ops only: they run on TensorFlow and JAX).

Shapes use B (batch, one row per user request), C (candidates per request), L (sequence
positions), H (heads), d_k (key size), J (cross features), K (GSU top-k).
"""

from twin_tf.layers.cluster_aware_attention import MASK_VALUE, ClusterAwareTargetAttention
from twin_tf.layers.cross_feature_bias import CrossFeatureBias, CrossFeatureEmbedding
from twin_tf.layers.din_attention import DinAttention
from twin_tf.layers.esu import Esu
from twin_tf.layers.gsu import GsuTopK, gather_selected
from twin_tf.layers.inherent_projection import InherentProjection
from twin_tf.layers.item_embedding import ItemEmbedding
from twin_tf.layers.short_term import ShortTermAttention

__all__ = [
    "ClusterAwareTargetAttention",
    "CrossFeatureBias",
    "CrossFeatureEmbedding",
    "DinAttention",
    "Esu",
    "GsuTopK",
    "InherentProjection",
    "ItemEmbedding",
    "MASK_VALUE",
    "ShortTermAttention",
    "gather_selected",
]
