"""Incremental re-clustering: a user's new behaviors join the clusters of a previous run.

Re-clustering 10^5-10^6 behaviors per user every day is TWIN-V2's largest offline cost. From a
previous cluster record (which keeps each clustered behavior's cluster, records.py), an update
only places the behaviors that arrived since:
  1. the previous clusters are taken as they are (their members are the user's behaviors
     before the record's `clustered_before`, in canonical order);
  2. each new behavior with an embedding joins the cluster of its completion group whose
     centroid (the mean embedding of its members, from the current embedding table) is
     nearest; one whose group has no such cluster yet is clustered with the others like it
     by the hierarchical rule; one without an embedding stays a singleton, as in a full run;
  3. a cluster that grew past gamma is split again, alone, by the same hierarchical rule;
  4. clusters are renumbered by first member; the virtual items of the clusters that changed
     are recomputed over all their members (representative nearest the new centroid, numeric
     means, sizes), the others are the previous record's (same members, same values).
Every invariant of a full clustering holds (sizes sum to the behaviors, every cluster <=
gamma and within one group, each behavior in exactly one cluster) and the result is
deterministic. Only the k-means over unchanged clusters is saved, which is almost all of it.
A record that does not match the user's behaviors (another format, the past changed: its
items, times or completion groups no longer hash to the record's digest, fewer behaviors to
cluster than before, cluster ids out of range) raises StaleRecord: cluster that user in full.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from twin_tf.clustering import records
from twin_tf.clustering.embeddings import ItemEmbeddingTable
from twin_tf.clustering.grouping import completion_groups
from twin_tf.clustering.hierarchical import renumber_by_first_member
from twin_tf.clustering.kmeans import cluster_sums
from twin_tf.clustering.user import (
  UserClusters,
  behaviors_digest,
  cluster_features,
  cluster_ids,
  clustered_rows,
)
from twin_tf.config import ClusteringConfig
from twin_tf.data import schema


class StaleRecord(ValueError):
  """A previous cluster record that cannot be updated; the user must be clustered in full."""


def update_user(columns: dict[str, np.ndarray], table: ItemEmbeddingTable,
                config: ClusteringConfig, previous: dict, since: Optional[int] = None
                ) -> UserClusters:
  """The clusters of one user's behaviors, from a previous record plus the new behaviors.

  Args:
    columns: every behavior of one user (old and new), any row order.
    table: item embeddings (the current table; centroids are recomputed from it).
    config: as for cluster_user (hierarchical, no max_clusters budget); its cutoff decides
      which behaviors are clustered now.
    previous: the user's decoded cluster record (records.decode) of an earlier run.
    since: behaviors at or after this time are new (default: previous["clustered_before"]).
  Returns:
    UserClusters as cluster_user returns them.
  Raises:
    StaleRecord: the record is of another format or does not match the behaviors.
    ValueError: a config incremental clustering does not support.
  """
  if config.method != "hierarchical" or config.max_clusters is not None:
    raise ValueError("incremental re-clustering supports the hierarchical method without a "
                     "max_clusters budget")
  if previous.get(records.VERSION) != records.FORMAT_VERSION:
    raise StaleRecord(f"cluster record of format {previous.get(records.VERSION)} (this "
                      f"version reads {records.FORMAT_VERSION}): cluster in full")
  cutoff, clustered_before, kept = clustered_rows(columns, config)
  user = schema.take(columns, kept)
  since = previous[records.CLUSTERED_BEFORE] if since is None else since
  num_old = int(np.searchsorted(user[schema.TIMESTAMP], since))  # sorted by time first
  old_cluster = np.asarray(previous[records.BEHAVIOR_CLUSTER], np.int64)
  if num_old != previous[records.NUM_BEHAVIORS] or len(old_cluster) != num_old:
    raise StaleRecord(f"user {previous[schema.USER_ID]}: {num_old} behaviors before {since}, "
                      f"the record clustered {previous[records.NUM_BEHAVIORS]}: cluster in full")
  embeddings, found = table.lookup(user[schema.ITEM_ID])
  groups = completion_groups(user[schema.PLAY_TIME], user[schema.DURATION], config.num_groups)
  past = {f: user[f][:num_old] for f in (schema.ITEM_ID, schema.TIMESTAMP)}
  if behaviors_digest(past, groups[:num_old]) != previous.get(records.DIGEST):
    raise StaleRecord(f"user {previous[schema.USER_ID]}: the {num_old} behaviors before "
                      f"{since} are not the ones the record clustered (items, times or "
                      "completion groups changed): cluster in full")
  if num_old and (old_cluster.min() < 0 or old_cluster.max() >= num_old):
    raise StaleRecord(f"user {previous[schema.USER_ID]}: the record's cluster ids are out of "
                      "range: cluster in full")
  cluster = np.concatenate([old_cluster, np.full(len(kept) - num_old, -1, np.int64)])
  num_clusters = int(old_cluster.max()) + 1 if num_old else 0
  cluster_group = np.full(num_clusters, -1, np.int64)
  cluster_group[old_cluster] = groups[:num_old]
  if np.any(cluster_group[old_cluster] != groups[:num_old]):
    raise StaleRecord(f"user {previous[schema.USER_ID]}: a previous cluster mixes completion "
                      "groups under this config's num_groups: cluster in full")
  new = np.arange(num_old, len(kept))
  _join_nearest(cluster, new[found[new]], embeddings, found, groups, cluster_group, num_old)
  unplaced = new[cluster[new] < 0]  # no embedding, or no cluster of their group yet
  if len(unplaced):
    fresh = cluster_ids(embeddings[unplaced], found[unplaced], groups[unplaced],
                        config.gamma, config)
    cluster[unplaced] = fresh + cluster.max(initial=-1) + 1
  _split_overgrown(cluster, embeddings, found, config)
  changed = np.zeros(cluster.max(initial=-1) + 1, bool)
  changed[num_clusters:] = True  # clusters split again, or new
  changed[cluster[num_old:]] = True  # old clusters that new behaviors joined
  renumbered = renumber_by_first_member(cluster)
  return UserClusters(int(previous[schema.USER_ID]), cutoff, clustered_before, kept,
                      renumbered, _features(user, embeddings, found, groups, cluster,
                                            renumbered, changed, previous),
                      behaviors_digest(user, groups))


def _features(user, embeddings, found, groups, cluster, renumbered, changed, previous):
  """Virtual items: recomputed for the changed clusters, the previous record's for the rest
  (same members, same values). cluster: labels before renumbering (< the previous cluster
  count: a previous cluster); changed: (labels,) bool."""
  rows = np.flatnonzero(changed[cluster])
  new_ids = np.unique(renumbered[rows])  # ascending: the order cluster_features numbers them
  fresh = cluster_features(schema.take(user, rows), embeddings[rows], found[rows], groups[rows],
                           np.searchsorted(new_ids, renumbered[rows]))
  num_clusters = int(renumbered.max(initial=-1)) + 1
  kept_old = np.full(num_clusters, -1, np.int64)
  unchanged = ~changed[cluster]
  kept_old[renumbered[unchanged]] = cluster[unchanged]  # new id -> previous id
  kept_ids = np.flatnonzero(kept_old >= 0)
  out = {}
  for name, values in fresh.items():
    column = np.empty(num_clusters, values.dtype)
    column[new_ids] = values
    column[kept_ids] = np.asarray(previous[name])[kept_old[kept_ids]]
    out[name] = column
  return out


def _join_nearest(cluster, rows, embeddings, found, groups, cluster_group, num_old) -> None:
  """Sets cluster[rows] to the nearest old cluster (by centroid) of the row's group, for rows
  whose group has one with an embedding; leaves the others at -1."""
  members = np.flatnonzero(found[:num_old])
  sums, counts = cluster_sums(embeddings[members], cluster[members], len(cluster_group))
  has_centroid = counts > 0
  centroids = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
  for group in np.unique(groups[rows]):
    candidates = np.flatnonzero(has_centroid & (cluster_group == group))
    placed = rows[groups[rows] == group]
    if not len(candidates):
      continue
    cluster[placed] = candidates[nearest(embeddings[placed], centroids[candidates])]


def nearest(x: np.ndarray, centroids: np.ndarray, rows: int = 256, cols: int = 4096
            ) -> np.ndarray:
  """(N,) index of the nearest of centroids (K, d) to each of x (N, d), float32, exact.

  ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, so the argmin over c of ||c||^2 - 2 x.c; computed
  in (rows, cols) blocks with a running minimum, which keeps each block in cache instead of
  writing an (N, K) matrix (the cost at 10^5 new behaviors x 10^4 clusters). Ties go to the
  lower index."""
  norms = np.einsum("kd,kd->k", centroids, centroids)
  best = np.zeros(len(x), np.int64)
  for lo in range(0, len(x), rows):
    block = x[lo:lo + rows]
    low = np.full(len(block), np.inf, np.float32)
    for start in range(0, len(centroids), cols):
      scores = block @ centroids[start:start + cols].T  # (rows, cols)
      scores *= -2.0
      scores += norms[start:start + cols]
      pick = np.argmin(scores, axis=1)
      value = scores[np.arange(len(block)), pick]
      better = value < low
      low[better], best[lo:lo + rows][better] = value[better], start + pick[better]
  return best


def _split_overgrown(cluster, embeddings, found, config: ClusteringConfig) -> None:
  """Clusters above gamma split again, each alone (members without an embedding, possible
  when the table changed since the previous run, become singletons as in a full run)."""
  sizes = np.bincount(cluster)
  overgrown = np.flatnonzero(sizes > config.gamma)
  if not len(overgrown):
    return
  rows = np.flatnonzero(np.isin(cluster, overgrown))
  parts = cluster_ids(embeddings[rows], found[rows], cluster[rows], config.gamma, config)
  cluster[rows] = parts + cluster.max() + 1
