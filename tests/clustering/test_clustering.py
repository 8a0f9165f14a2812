"""Clustering invariants and numpy references (synthetic users are labelled SYNTHETIC)."""

import numpy as np
import pytest
from conftest import synthetic_user

from twin_tf.clustering import (
  cluster_user,
  completion_groups,
  hierarchical_clusters,
  kmeans,
  segmented_kmeans,
  user_cutoff,
)
from twin_tf.clustering.embeddings import ItemEmbeddingTable
from twin_tf.config import ClusteringConfig
from twin_tf.data import schema
from twin_tf.data.feature_spec import MOVIELENS


def test_completion_groups_by_hand():
  play = np.array([0.0, 1.9, 2.0, 5.0, 7.0, 3.0, 0.99], dtype=np.float32)
  duration = np.array([5, 5, 5, 5, 5, 0, 1], dtype=np.float32)
  # r = 0, .38, .4, 1, 1 (clipped), unknown, .99 -> bins of width .2
  np.testing.assert_array_equal(completion_groups(play, duration, 5), [0, 1, 2, 4, 4, 5, 4])


def _nearest_mean_labels(x, labels):
  """numpy reference: the nearest cluster mean of every point (a Lloyd fixed point)."""
  means = np.stack([x[labels == c].mean(axis=0) for c in np.unique(labels)])
  d = ((x[:, None, :] - means[None]) ** 2).sum(-1)
  return np.unique(labels)[d.argmin(axis=1)]


def test_segmented_kmeans_converges_to_lloyd_fixed_point_per_segment():
  rng = np.random.default_rng(1)
  sizes = [50, 7, 300, 3, 120]
  x = rng.standard_normal((sum(sizes), 4)).astype(np.float32)
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  k = np.array([4, 2, 6, 3, 5])
  labels = segmented_kmeans(x, offsets, k, np.random.default_rng(0), max_iter=300, tol=0)
  for s in range(len(sizes)):
    lab = labels[offsets[s]:offsets[s + 1]]
    assert lab.min() >= 0 and lab.max() < k[s]
    np.testing.assert_array_equal(_nearest_mean_labels(x[offsets[s]:offsets[s + 1]], lab), lab)


def test_segmented_kmeans_recovers_separated_blobs():
  rng = np.random.default_rng(2)
  centers = np.array([[0, 0], [100, 0], [0, 100]], dtype=np.float32)
  truth = rng.integers(0, 3, 90)
  x = centers[truth] + rng.standard_normal((90, 2)).astype(np.float32)
  labels = segmented_kmeans(x, np.array([0, 90]), np.array([3]), np.random.default_rng(0))
  # same partition up to renaming
  assert len({(t, l) for t, l in zip(truth, labels)}) == 3


def _inertia(x, offsets, labels):
  """Mean squared distance of every point to its cluster's mean (numpy reference)."""
  total = 0.0
  for lo, hi in zip(offsets[:-1], offsets[1:]):
    for c in np.unique(labels[lo:hi]):
      members = x[lo:hi][labels[lo:hi] == c].astype(np.float64)
      total += ((members - members.mean(axis=0)) ** 2).sum()
  return total / len(x)


def test_large_segments_fit_on_a_sample_as_well_as_on_all_points(monkeypatch):
  """SYNTHETIC topic mixtures: a segment above points_per_centroid * k fits its centroids on a
  sample and assigns every point to the nearest; over a few draws it is as tight (within the
  3% that k-means local optima vary by) as k-means on all points."""
  monkeypatch.setattr(kmeans, "CHUNK", 1000)  # the final assignment runs in slices
  sizes, k = [8000, 7000, 300], np.array([12, 12, 5])
  offsets = np.concatenate([[0], np.cumsum(sizes)])
  full_inertia = sampled_inertia = 0.0
  for seed in range(4):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, 16)).astype(np.float32)
    x = (centers[rng.integers(0, 40, sum(sizes))] +
         0.5 * rng.standard_normal((sum(sizes), 16))).astype(np.float32)
    full = segmented_kmeans(x, offsets, k, np.random.default_rng(0), points_per_centroid=10**9)
    sampled = segmented_kmeans(x, offsets, k, np.random.default_rng(0), points_per_centroid=64)
    assert not np.array_equal(full, sampled)
    for lo, hi, clusters in zip(offsets[:-1], offsets[1:], k):
      assert sampled[lo:hi].min() >= 0 and sampled[lo:hi].max() < clusters
    full_inertia += _inertia(x, offsets, full)
    sampled_inertia += _inertia(x, offsets, sampled)
  assert sampled_inertia <= 1.03 * full_inertia


def test_segmented_kmeans_on_rows_of_a_larger_array_clusters_those_rows():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((700, 8)).astype(np.float32)
  rows = rng.permutation(700)[:500]
  offsets, k = np.array([0, 40, 400, 500]), np.array([3, 9, 4])
  np.testing.assert_array_equal(
      segmented_kmeans(x, offsets, k, np.random.default_rng(0), rows=rows),
      segmented_kmeans(x[rows], offsets, k, np.random.default_rng(0)))


def test_moved_sums_match_recomputed_sums():
  rng = np.random.default_rng(5)
  points = rng.standard_normal((50, 3)).astype(np.float32)
  before, after = rng.integers(0, 6, 50), rng.integers(0, 6, 50)
  old_sums, old_counts = kmeans.cluster_sums(points, before, 6)
  new_sums, new_counts = kmeans.cluster_sums(points, after, 6)
  delta_sums, delta_counts = kmeans.moved_sums(points, before, after, 6)
  np.testing.assert_allclose(old_sums + delta_sums, new_sums, atol=1e-5)
  np.testing.assert_array_equal(old_counts + delta_counts, new_counts)


def test_cluster_sums_leave_out_rows_not_kept():
  rng = np.random.default_rng(6)
  points = rng.standard_normal((40, 3)).astype(np.float32)
  ids, keep = rng.integers(0, 5, 40), rng.random(40) < 0.6
  kept = kmeans.cluster_sums(points, ids, 5, keep=keep)
  subset = kmeans.cluster_sums(points[keep], ids[keep], 5)
  np.testing.assert_allclose(kept[0], subset[0], atol=1e-6)
  np.testing.assert_array_equal(kept[1], subset[1])


def _check_invariants(cluster, groups, gamma):
  sizes = np.bincount(cluster)
  assert sizes.min() >= 1, "cluster ids are dense: every id has a member"
  assert sizes.max() <= gamma
  assert sizes.sum() == len(cluster)
  for c in np.unique(cluster):
    assert len(np.unique(groups[cluster == c])) == 1, f"cluster {c} mixes groups"


@pytest.mark.parametrize("n,gamma", [(1, 20), (20, 20), (21, 20), (500, 5), (3000, 20)])
def test_hierarchical_invariants_synthetic(n, gamma):
  """SYNTHETIC user."""
  columns, table = synthetic_user(n)
  emb, found = table.lookup(columns["item_id"])
  groups = completion_groups(columns["play_time"], columns["duration"], 5)
  cluster = hierarchical_clusters(emb, found, groups, gamma, seed=3)
  assert cluster.shape == (n,)
  _check_invariants(cluster, groups, gamma)
  again = hierarchical_clusters(emb, found, groups, gamma, seed=3)
  np.testing.assert_array_equal(cluster, again)


def test_compression_is_substantial_on_topic_mixture():
  """SYNTHETIC: 5,000 behaviors of 12 topics compress by far more than 2x with gamma 20."""
  columns, table = synthetic_user(5000)
  user = cluster_user(columns, table, ClusteringConfig())
  assert user.num_behaviors / user.num_clusters > 5


def test_identical_embeddings_are_chunked_to_gamma():
  emb = np.ones((103, 4), dtype=np.float32)
  groups = np.zeros(103, dtype=np.int64)
  cluster = hierarchical_clusters(emb, np.ones(103, bool), groups, gamma=20)
  _check_invariants(cluster, groups, 20)
  assert sorted(np.bincount(cluster)) == [3, 20, 20, 20, 20, 20]


def test_items_without_embedding_are_singletons():
  columns, table = synthetic_user(400)
  missing = np.isin(columns["item_id"], columns["item_id"][:30])
  kept = ~np.isin(table.item_ids, columns["item_id"][:30])
  partial = ItemEmbeddingTable(table.item_ids[kept], table.vectors[kept])
  user = cluster_user(columns, partial, ClusteringConfig(gamma=10))
  order_missing = missing[user.behavior_index]
  sizes = np.bincount(user.cluster_of_behavior)
  assert np.all(sizes[user.cluster_of_behavior[order_missing]] == 1)
  assert user.num_behaviors == 400
  # every singleton without an embedding is the only member of its cluster
  assert len(np.unique(user.cluster_of_behavior[order_missing])) == order_missing.sum()


@pytest.mark.parametrize("chunk", [kmeans.CHUNK, 7])
def test_virtual_items_match_numpy_reference(chunk, monkeypatch):
  monkeypatch.setattr(kmeans, "CHUNK", chunk)  # representatives' distance slices
  columns, table = synthetic_user(800, seed=5)
  user = cluster_user(columns, table, ClusteringConfig(gamma=15))
  rows = user.behavior_index
  emb, _ = table.lookup(columns["item_id"][rows])
  for c in range(user.num_clusters):
    members = np.flatnonzero(user.cluster_of_behavior == c)
    centroid = emb[members].astype(np.float64).mean(axis=0)
    distance = ((emb[members] - centroid) ** 2).sum(1)
    # members tied (within float32 rounding) for nearest; 2-member clusters always tie
    nearest = rows[members[distance <= distance.min() * (1 + 1e-5) + 1e-9]]
    assert user.clusters["cluster_size"][c] == len(members)
    names = MOVIELENS.candidate_fields + MOVIELENS.behavior_flags
    features = tuple(user.clusters[name][c] for name in names)
    candidates = {tuple(columns[name][i] for name in names) for i in nearest}
    assert features in candidates
    for name in ("play_time", "duration", "label"):
      np.testing.assert_allclose(user.clusters[name][c], columns[name][rows[members]].mean(),
                                 rtol=1e-5, err_msg=name)
    assert user.clusters["timestamp"][c] == np.rint(columns["timestamp"][rows[members]].mean())
    ratio = np.minimum(columns["play_time"][rows[members]] / columns["duration"][rows[members]],
                       1)
    np.testing.assert_allclose(user.clusters["completion"][c], ratio.mean(), rtol=1e-5)


def test_cutoff_keeps_only_earlier_behaviors():
  columns, table = synthetic_user(1000)
  cutoff = int(np.median(columns["timestamp"]))
  user = cluster_user(columns, table, ClusteringConfig(cutoff_timestamp=cutoff))
  assert np.all(columns["timestamp"][user.behavior_index] < cutoff)
  assert user.num_behaviors == np.sum(columns["timestamp"] < cutoff)
  assert np.all(user.clusters["timestamp"] < cutoff)


def test_quantile_cutoff():
  ts = np.array([5, 1, 3, 2, 4])
  assert user_cutoff(ts, ClusteringConfig(cutoff_quantile=0.4)) == 3  # keeps 1, 2
  assert user_cutoff(ts, ClusteringConfig(cutoff_quantile=1.0)) == 6  # keeps all
  assert user_cutoff(ts, ClusteringConfig()) is None


def test_same_clusters_whatever_the_input_order():
  """Beam delivers a user's rows in any order; clusters must not depend on it."""
  columns, table = synthetic_user(600)
  shuffled = schema.take(columns, np.random.default_rng(9).permutation(600))
  a = cluster_user(columns, table)
  b = cluster_user(shuffled, table)
  for name, values in a.clusters.items():
    np.testing.assert_array_equal(values, b.clusters[name], err_msg=name)


def test_rejects_several_users():
  columns, table = synthetic_user(10)
  columns["user_id"][0] = 99
  with pytest.raises(ValueError, match="one user"):
    cluster_user(columns, table)


def test_real_users_invariants(movielens, movielens_embeddings):
  """Real MovieLens: the 5 longest histories and 20 others."""
  columns = movielens[0]
  users, counts = np.unique(columns["user_id"], return_counts=True)
  chosen = np.concatenate([users[np.argsort(-counts)[:5]], users[::31]])
  config = ClusteringConfig(cutoff_quantile=0.8)
  for u in chosen:
    user_columns = schema.take(columns, columns["user_id"] == u)
    user = cluster_user(user_columns, movielens_embeddings, config)
    groups = completion_groups(user_columns["play_time"][user.behavior_index],
                               user_columns["duration"][user.behavior_index], 5)
    _check_invariants(user.cluster_of_behavior, groups, 20)
    assert user.clusters["cluster_size"].sum() == user.num_behaviors
    again = cluster_user(user_columns, movielens_embeddings, config)
    np.testing.assert_array_equal(user.cluster_of_behavior, again.cluster_of_behavior)


def test_before_cutoff_agrees_with_user_cutoff_per_user(movielens):
  from twin_tf.clustering import before_cutoff, user_cutoff
  columns = movielens[0]
  config = ClusteringConfig(cutoff_quantile=0.5)
  mask = before_cutoff(columns, config)
  for user in np.unique(columns[schema.USER_ID])[::37]:
    mine = columns[schema.USER_ID] == user
    cutoff = user_cutoff(columns[schema.TIMESTAMP][mine], config)
    np.testing.assert_array_equal(mask[mine], columns[schema.TIMESTAMP][mine] < cutoff)
  assert 0.3 < mask.mean() < 0.6


@pytest.mark.parametrize("budget", [8, 32])
def test_a_cluster_budget_is_met_and_covers_every_behavior(budget):
  columns, table = synthetic_user(3000)
  columns[schema.ITEM_ID][::10] += 100_000  # items without an embedding
  user = cluster_user(columns, table, ClusteringConfig(max_clusters=budget))
  sizes = user.clusters[schema.CLUSTER_SIZE]
  assert len(sizes) <= budget
  assert sizes.sum() == user.num_behaviors == 3000
  assert len(np.unique(user.cluster_of_behavior)) == len(sizes)


def test_time_chunks_cut_each_group_in_time_order():
  from twin_tf.clustering.hierarchical import time_chunks
  groups = np.array([0, 1, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(time_chunks(groups, 2), [0, 1, 0, 2, 1, 2, 3])
  columns, table = synthetic_user(500)
  user = cluster_user(columns, table, ClusteringConfig(method="time_chunks", gamma=20))
  assert user.clusters[schema.CLUSTER_SIZE].max() == 20
  assert user.clusters[schema.CLUSTER_SIZE].sum() == 500
