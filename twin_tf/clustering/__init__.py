"""Hierarchical clustering of life-cycle behaviors into virtual items (pure numpy)."""

from twin_tf.clustering.grouping import completion_groups, completion_ratio
from twin_tf.clustering.hierarchical import hierarchical_clusters
from twin_tf.clustering.kmeans import segmented_kmeans
from twin_tf.clustering.user import UserClusters, before_cutoff, cluster_user, user_cutoff
from twin_tf.clustering.virtual_items import representatives, virtual_items

__all__ = [
    "UserClusters",
    "before_cutoff",
    "cluster_user",
    "completion_groups",
    "completion_ratio",
    "hierarchical_clusters",
    "representatives",
    "segmented_kmeans",
    "user_cutoff",
    "virtual_items",
]
