"""The attention's liveness figures against numpy written here."""

import types

import numpy as np

from twin_tf.model.layers import MASK_VALUE
from twin_tf.training import liveness


def test_jaccard_of_top_k_matches_sets_by_hand():
  scores = np.array([[5.0, 4, 3, 2, 1], [1.0, 2, 3, 4, 5], [5.0, 4, 1, 2, 3]])
  valid = np.ones(5, bool)
  # top-2 sets {0, 1}, {3, 4}, {0, 1}: Jaccard 0, 1, 0 -> 1/3
  assert np.isclose(liveness.jaccard_of_top_k(scores, valid, 2), 1 / 3)
  valid[0] = False  # padding never enters a top-k: {1, 2}, {3, 4}, {1, 4}
  assert np.isclose(liveness.jaccard_of_top_k(scores, valid, 2), (0 + 1 / 3 + 1 / 3) / 3)
  assert np.isnan(liveness.jaccard_of_top_k(scores, valid, 4))  # no more than k valid
  assert np.isnan(liveness.jaccard_of_top_k(scores[:1], valid, 2))  # one candidate


class _FakeModel:
  """gsu_factors of a fixed table: position l of user u has features x[u, l] and offset
  o[u, l]; a candidate item i has the query w[i]."""

  def __init__(self, x, o, w, valid, k):
    self.x, self.o, self.w, self.valid = x, o, w, valid
    self.config = types.SimpleNamespace(long_term="gsu", gsu_top_k=k)

  def gsu_factors(self, inputs):
    rows, items = inputs["rows"], inputs["items"]
    offset = np.where(self.valid[rows], self.o[rows], MASK_VALUE)
    positions = np.concatenate([self.x[rows], offset[..., None]], axis=-1)
    queries = np.concatenate([self.w[items], np.ones((len(items), 1))], axis=-1)[:, None]
    return positions, queries


def test_attention_liveness_pools_the_terms_over_a_fixed_sample_of_users():
  rng = np.random.default_rng(0)
  users = np.array([10, 10, 10, 11, 12, 12, 13, 13])  # 11 has one impression: not sampled
  rows = np.array([0, 0, 0, 1, 2, 2, 3, 3])
  items = np.array([0, 1, 2, 3, 4, 5, 6, 7])
  x, o = rng.standard_normal((4, 6, 3)), 3 * rng.standard_normal((4, 6))
  w = rng.standard_normal((8, 3))
  valid = np.ones((4, 6), bool)
  valid[3, 3:] = False  # user 13 has 3 positions, at most k = 3: no Jaccard
  model = _FakeModel(x, o, w, valid, k=3)
  builder = types.SimpleNamespace(
      data=types.SimpleNamespace(impressions={"test": {"user_id": users}}),
      example_lengths=lambda split: valid[rows].sum(axis=1),
      inputs=lambda split, chosen: {"rows": rows[chosen], "items": items[chosen]})
  got = liveness.attention_liveness(model, builder, "test", max_users=10, max_candidates=2)
  sampled = [0, 1, 4, 5, 6, 7]  # the first 2 impressions of users 10, 12 and 13
  target_var = [np.var(x[rows[i]][valid[rows[i]]] @ w[items[i]]) for i in sampled]
  bias_var = [np.var(o[rows[i]][valid[rows[i]]]) for i in sampled]
  assert np.isclose(got["target_std"], np.sqrt(np.mean(target_var)))
  assert np.isclose(got["bias_std"], np.sqrt(np.mean(bias_var)))
  jaccards = []
  for pair in ([0, 1], [4, 5]):  # users 10 and 12
    tops = [set(np.argsort(-(x[rows[i]] @ w[items[i]] + o[rows[i]]))[:3]) for i in pair]
    jaccards.append(len(tops[0] & tops[1]) / len(tops[0] | tops[1]))
  assert np.isclose(got["jaccard"], np.mean(jaccards))
  assert (got["users"], got["impressions"], got["jaccard_users"]) == (3, 6, 2)


def test_models_without_a_gsu_have_no_liveness():
  model = types.SimpleNamespace(config=types.SimpleNamespace(long_term="none"))
  assert liveness.attention_liveness(model, None) is None
