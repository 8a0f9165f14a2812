"""Each layer against a few lines of numpy written here (tolerance 1e-5 relative / 1e-5 abs),
properties of alpha' (ln n, padding, every term can change the ranking), serialization."""

import keras
import numpy as np
import pytest

from twin_tf.model.layers import (
  MASK_VALUE,
  ClusterAwareTargetAttention,
  CrossFeatureBias,
  CrossFeatureEmbedding,
  DinAttention,
  Esu,
  GsuTopK,
  InherentProjection,
  ShortTermAttention,
  gather_selected,
  gsu,
)
from twin_tf.model.layers.sequence_ops import per_head_pooling, per_head_scores

TOL = dict(rtol=1e-5, atol=1e-5)
RNG = np.random.default_rng(0)
B, C, L, H, DK, J, DH = 2, 3, 12, 4, 8, 5, 10


def _inputs(length=L, seed=0):
  rng = np.random.default_rng(seed)
  return dict(
      seq_inherent=rng.standard_normal((B, length, DH)).astype("float32"),
      seq_cross=rng.standard_normal((B, length, J, 8)).astype("float32"),
      size=rng.integers(1, 20, (B, length)).astype("float32"),
      valid=np.ones((B, length), bool),
      target_inherent=rng.standard_normal((B, C, DH)).astype("float32"))


def _attention(use_log_size=True, key_dim=DK, normalized=False):
  layer = ClusterAwareTargetAttention(H, key_dim, use_log_size, normalized)
  layer(**_inputs())
  # non-trivial beta so that the cross term is not just a sum
  layer.cross_bias.beta.assign(RNG.standard_normal((H, J)).astype("float32"))
  if normalized:  # and a temperature of its own per head
    layer.log_temperature.assign(RNG.uniform(-1, 1, H).astype("float32"))
  return layer


def _unit_rms(x):
  return x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-6)


def _alpha_reference(layer, x):
  """alpha'[b,c,l,h] = K_h W_h . q W_q / sqrt(dk) + sum_j beta_hj e_blj . w_hj + ln n."""
  wh = np.asarray(layer.key_projection.kernel)  # (DH, H, DK)
  wq = np.asarray(layer.query_projection.kernel)
  w, beta = np.asarray(layer.cross_bias.w), np.asarray(layer.cross_bias.beta)
  seq, target, temperature = x["seq_inherent"], x["target_inherent"], np.ones(H)
  if layer.normalized:  # unit-RMS K_h and q, exp(tau_h) on each head's query
    seq, target = _unit_rms(seq), _unit_rms(target)
    temperature = np.exp(np.asarray(layer.log_temperature))
  out = np.zeros((B, C, x["seq_inherent"].shape[1], H))
  for b in range(B):
    for c in range(C):
      for l in range(x["seq_inherent"].shape[1]):
        for h in range(H):
          key = seq[b, l] @ wh[:, h]
          query = temperature[h] * (target[b, c] @ wq[:, h])
          cross = sum(beta[h, j] * (x["seq_cross"][b, l, j] @ w[h, j]) for j in range(J))
          out[b, c, l, h] = key @ query / np.sqrt(DK) + cross + (
              np.log(x["size"][b, l]) if layer.use_log_size else 0)
  return np.where(x["valid"][:, None, :, None], out, MASK_VALUE)


@pytest.mark.parametrize("use_log_size,normalized", [(True, False), (False, False),
                                                     (True, True)])
def test_alpha_matches_numpy(use_log_size, normalized):
  layer = _attention(use_log_size, normalized=normalized)
  x = _inputs(seed=1)
  x["valid"][1, 9:] = False
  np.testing.assert_allclose(np.asarray(layer(**x)), _alpha_reference(layer, x), **TOL)


def test_inherent_projection_and_cross_bias_match_numpy():
  x = RNG.standard_normal((2, 7, DH)).astype("float32")
  proj = InherentProjection(H, DK)
  out = np.asarray(proj(x))
  np.testing.assert_allclose(out, np.einsum("bld,dhk->blhk", x, np.asarray(proj.kernel)), **TOL)
  e = RNG.standard_normal((2, 7, J, 8)).astype("float32")
  bias = CrossFeatureBias(H)
  got = np.asarray(bias(e))
  w, beta = np.asarray(bias.w), np.asarray(bias.beta)
  np.testing.assert_allclose(got, np.einsum("bljd,hjd,hj->blh", e, w, beta), **TOL)


def test_cross_embedding_uses_a_table_per_feature():
  layer = CrossFeatureEmbedding([3, 4], dim=2)
  ids = np.array([[[1, 1]]])
  out = np.asarray(layer(ids))[0, 0]
  table = np.asarray(layer.table)
  np.testing.assert_allclose(out, table[[1, 3 + 1]], **TOL)


def test_gsu_selects_numpy_top_k_of_summed_heads():
  layer = _attention()
  x = _inputs(seed=2)
  x["valid"][0, 10:] = False
  alpha = layer(**x)
  indices, valid = GsuTopK(top_k=5)(alpha, x["valid"])
  expected = np.argsort(-np.asarray(alpha).sum(-1), axis=-1, kind="stable")[..., :5]
  np.testing.assert_array_equal(np.sort(np.asarray(indices), -1), np.sort(expected, -1))
  assert np.asarray(valid).all()


def test_gsu_never_picks_padding_before_real_positions():
  alpha = np.full((1, 1, 6, 2), MASK_VALUE, "float32")
  alpha[0, 0, :3] = -50.0  # real but very low scores
  mask = np.array([[True, True, True, False, False, False]])
  indices, valid = GsuTopK(top_k=4)(alpha, mask)
  indices, valid = np.asarray(indices)[0, 0], np.asarray(valid)[0, 0]
  assert set(indices) >= {0, 1, 2}  # every real position is taken before any padding
  assert set(indices[valid]) == {0, 1, 2} and valid.sum() == 3


@pytest.mark.parametrize("length", [2500, 5000, 6007])
def test_threshold_top_k_takes_the_k_largest_scores(length):
  """Long sequences rank above a threshold; the k largest scores are those of one sort, with
  ties (scores rounded to few values, or all equal), the k largest in few groups, padding
  and a length that is no multiple of 16."""
  rng = np.random.default_rng(length)
  scores = rng.standard_normal((2, 3, length)).astype("float32")
  scores[0, 0] = np.round(scores[0, 0] * 2)  # heavy ties
  scores[0, 1] = 1.0  # every score tied
  scores[0, 2] = np.arange(length)  # the k largest fill whole groups
  scores[1, :, length // 2:] = MASK_VALUE  # half of one user's positions are padding
  for top_k in (gsu.exact_top_k, gsu.threshold_top_k):
    got = np.asarray(top_k(scores, 100))
    assert got.dtype == np.int32
    for row, picked in zip(scores.reshape(-1, length), got.reshape(-1, 100)):
      assert len(np.unique(picked)) == 100 and picked.min() >= 0 and picked.max() < length
      np.testing.assert_array_equal(np.sort(row[picked]), np.sort(row)[-100:])


def _factors(regime, rng, batch=2, candidates=5, length=3000, dim=9):
  """(positions (B, L, D + 1), query (B, C, D + 1)) whose product is scores offset + x . q:
  "bias" (the offsets' spread dominates, as on a trained TwinV2), "target" (x . q does),
  "ties" (x = 0, offsets on few values); row 1 is half padding."""
  scale = {"bias": 0.01, "target": 1.0, "ties": 0.0}[regime]
  x = rng.standard_normal((batch, length, dim)).astype("float32") * scale
  offset = rng.standard_normal((batch, length)).astype("float32") * 3
  if regime == "ties":
    offset = np.round(offset)
  offset[1, length // 2:] = MASK_VALUE
  query = rng.standard_normal((batch, candidates, dim)).astype("float32")
  return (np.concatenate([x, offset[..., None]], -1),
          np.concatenate([query, np.ones((batch, candidates, 1), "float32")], -1))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="bound pruning runs on TensorFlow only (run-time shapes)")
@pytest.mark.parametrize("share", [0.0, gsu.PRUNE_MAX_SHARE, 1.0])
@pytest.mark.parametrize("regime", ["bias", "target", "ties"])
def test_product_top_k_takes_the_k_largest_scores_pruned_or_not(regime, share):
  """Share 0 never prunes, 1 always does; eager and traced with unknown shapes."""
  import tensorflow as tf
  positions, query = _factors(regime, np.random.default_rng(7))
  scores = query @ positions.transpose(0, 2, 1)  # (B, C, L)
  traced = tf.function(lambda p, q: gsu.product_top_k(p, q, 100, share),
                       input_signature=[tf.TensorSpec([None, None, 10])] * 2)
  for got in (gsu.product_top_k(positions, query, 100, share), traced(positions, query)):
    got = np.asarray(got)
    assert got.shape == (2, 5, 100) and got.dtype == np.int32
    for row, picked in zip(scores.reshape(-1, 3000), got.reshape(-1, 100)):
      assert len(np.unique(picked)) == 100 and picked.min() >= 0 and picked.max() < 3000
      np.testing.assert_allclose(np.sort(row[picked]), np.sort(row)[-100:], rtol=1e-6)


@pytest.mark.parametrize("regime", ["bias", "target", "ties"])
def test_reaching_keeps_every_candidates_top_k(regime):
  positions, query = _factors(regime, np.random.default_rng(8))
  scores = query @ positions.transpose(0, 2, 1)
  upper, can_reach = (np.asarray(v) for v in gsu.reaching(positions, query, 100))
  kth = np.sort(scores, -1)[..., -100]  # (B, C)
  needed = (scores >= kth[..., None]).any(axis=1)  # (B, L) in some candidate's top 100
  assert np.all(can_reach[needed]) and np.all(upper[:, None, :] >= scores)
  count = can_reach.sum(-1)
  assert np.all(count >= 100)
  if regime == "bias":  # what pruning saves: few positions can reach any top 100
    assert np.all(count < 3000 * gsu.PRUNE_MAX_SHARE)


def test_exact_top_k_takes_one_pass_when_there_are_fewer_than_k_groups():
  scores = np.random.default_rng(1).standard_normal((1, 2, 5000)).astype("float32")
  picked = np.asarray(gsu.exact_top_k(scores, 400))  # 313 groups of 16 < k
  np.testing.assert_array_equal(np.sort(np.take_along_axis(scores, picked, -1), -1),
                                np.sort(scores, -1)[..., -400:])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="only TensorFlow traces graphs of unknown length")
def test_exact_top_k_decides_at_run_time_when_the_length_is_unknown():
  import tensorflow as tf
  traced = tf.function(lambda s: gsu.exact_top_k(s, 100),
                       input_signature=[tf.TensorSpec((1, 2, None), tf.float32)])
  for length in (300, 5000):  # one top_k, then two passes, in the same traced graph
    scores = np.random.default_rng(length).standard_normal((1, 2, length)).astype("float32")
    picked = traced(scores).numpy()
    np.testing.assert_array_equal(np.sort(np.take_along_axis(scores, picked, -1), -1),
                                  np.sort(scores, -1)[..., -100:])


def _round_robin_reference(alpha, k):
  """TWIN's merge, written plainly: per-head rankings interleaved, repeats skipped."""
  rankings = [list(np.argsort(-alpha[:, h], kind="stable")) for h in range(alpha.shape[1])]
  chosen = []
  for rank in range(alpha.shape[0]):
    for ranking in rankings:
      if ranking[rank] not in chosen and len(chosen) < k:
        chosen.append(ranking[rank])
  return chosen


def test_round_robin_merge_matches_reference():
  alpha = RNG.standard_normal((1, 1, 30, H)).astype("float32")
  mask = np.ones((1, 30), bool)
  indices, valid = GsuTopK(top_k=10, merge="round_robin")(alpha, mask)
  assert list(np.asarray(indices)[0, 0]) == _round_robin_reference(alpha[0, 0], 10)
  assert np.asarray(valid).all()


def test_round_robin_short_list_marks_repeats_invalid():
  alpha = RNG.standard_normal((1, 1, 3, H)).astype("float32")
  indices, valid = GsuTopK(top_k=5, merge="round_robin")(alpha, np.ones((1, 3), bool))
  got = np.asarray(indices)[0, 0][np.asarray(valid)[0, 0]]
  assert sorted(got) == [0, 1, 2]


def _esu_reference(esu, alpha, values, valid):
  """alpha (B, C, H, K), heads first."""
  wv, wo = np.asarray(esu.value_kernel), np.asarray(esu.output_kernel)
  out = np.zeros(alpha.shape[:2] + (wo.shape[1],))
  for b in range(alpha.shape[0]):
    for c in range(alpha.shape[1]):
      heads = []
      for h in range(alpha.shape[2]):
        a = np.where(valid[b, c], alpha[b, c, h], -np.inf)
        weights = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        heads.append(weights @ (values[b, c] @ wv[:, h]))
      out[b, c] = np.concatenate(heads) @ wo
  return out


def test_esu_matches_numpy():
  """call() and pooled_heads() (from rows already projected, heads last) alike."""
  alpha = RNG.standard_normal((B, C, H, 6)).astype("float32")
  values = RNG.standard_normal((B, C, 6, 9)).astype("float32")
  valid = np.ones((B, C, 6), bool)
  valid[0, 1, 4:] = False
  esu = Esu(value_dim=5, output_dim=7)
  np.testing.assert_allclose(np.asarray(esu(alpha, values, valid)),
                             _esu_reference(esu, alpha, values, valid), **TOL)
  np.testing.assert_allclose(
      np.asarray(esu.pooled_heads(np.swapaxes(alpha, 2, 3), esu.value_heads(values), valid)),
      _esu_reference(esu, alpha, values, valid), **TOL)


def test_per_head_products_match_numpy():
  rows = RNG.standard_normal((B, C, 6, H, 5)).astype("float32")  # (B, C, K, H, d)
  queries = RNG.standard_normal((B, C, H, 5)).astype("float32")
  weights = RNG.standard_normal((B, C, 6, H)).astype("float32")
  np.testing.assert_allclose(np.asarray(per_head_scores(rows, queries)),
                             np.einsum("bckhd,bchd->bckh", rows, queries), **TOL)
  np.testing.assert_allclose(np.asarray(per_head_pooling(weights, rows)),
                             np.einsum("bckh,bckhd->bchd", weights, rows), **TOL)


def test_esu_with_nothing_valid_is_zero():
  esu = Esu(4, 3)
  out = esu(np.zeros((1, 1, H, 5), "float32"), np.ones((1, 1, 5, 6), "float32"),
            np.zeros((1, 1, 5), bool))
  np.testing.assert_array_equal(np.asarray(out), 0)


def test_cluster_of_n_identical_members_equals_n_raw_copies():
  """The meaning of + ln n: softmax(alpha + ln n) weighs a cluster as n raw behaviors."""
  layer, esu = _attention(), Esu(4, 6)
  x = _inputs(length=3, seed=3)
  x["size"] = np.array([[4, 1, 2], [3, 2, 1]], "float32")
  esu.build((B, C, H, 3), (B, C, 3, DH))

  def esu_output(inputs):
    alpha = np.transpose(layer(**inputs), (0, 1, 3, 2))  # heads first
    length = inputs["seq_inherent"].shape[1]
    idx = np.broadcast_to(np.arange(length), (B, C, length)).astype("int32")
    values = gather_selected(inputs["seq_inherent"], idx)
    return np.asarray(esu(alpha, values, np.broadcast_to(inputs["valid"][:, None], (B, C, length))))

  expanded = []
  for b in range(B):  # cluster i repeated n_i times with n = 1
    rows = np.repeat(np.arange(3), x["size"][b].astype(int))
    expanded.append(rows[:7] if len(rows) >= 7 else np.pad(rows, (0, 7 - len(rows)),
                                                              constant_values=-1))
  expanded = np.array(expanded)
  raw = {k: v for k, v in x.items()}
  take = np.maximum(expanded, 0)
  raw["seq_inherent"] = np.take_along_axis(x["seq_inherent"], take[..., None], 1)
  raw["seq_cross"] = np.take_along_axis(x["seq_cross"], take[..., None, None], 1)
  raw["size"] = np.ones_like(take, "float32")
  raw["valid"] = expanded >= 0
  np.testing.assert_allclose(esu_output(x), esu_output(raw), **TOL)


def test_appending_padding_changes_nothing():
  layer = _attention()
  x = _inputs(seed=4)
  padded = {k: v for k, v in x.items()}
  for key, fill in (("seq_inherent", 7.0), ("seq_cross", 7.0), ("size", 5.0)):
    extra = np.full(x[key].shape[:1] + (6,) + x[key].shape[2:], fill, "float32")
    padded[key] = np.concatenate([x[key], extra], axis=1)
  padded["valid"] = np.concatenate([x["valid"], np.zeros((B, 6), bool)], axis=1)
  a, b = layer(**x), layer(**padded)
  ia, _ = GsuTopK(5)(a, x["valid"])
  ib, _ = GsuTopK(5)(b, padded["valid"])
  np.testing.assert_array_equal(np.asarray(ia), np.asarray(ib))
  np.testing.assert_allclose(np.asarray(b)[:, :, :L], np.asarray(a), **TOL)
  assert np.all(np.asarray(b)[:, :, L:] == MASK_VALUE)


@pytest.mark.parametrize("term", ["size", "seq_cross", "seq_inherent"])
def test_every_term_of_alpha_can_change_the_ranking(term):
  """Guards against a bias that is constant per sample (changes neither top-k nor softmax)."""
  layer = _attention()
  x = _inputs(seed=5)
  before = np.asarray(GsuTopK(3)(layer(**x), x["valid"])[0])
  changed = {k: v.copy() for k, v in x.items()}
  loser = np.argsort(np.asarray(layer(**x)).sum(-1)[0, 0])[0]  # the lowest of user 0
  if term == "size":
    changed["size"][0, loser] = 1e30
  elif term == "seq_cross":
    w, beta = np.asarray(layer.cross_bias.w), np.asarray(layer.cross_bias.beta)
    direction = np.einsum("hjd,hj->jd", w, beta)  # raises the sum over heads of the bias
    changed["seq_cross"][0, loser] = 1e3 * direction
  else:
    wh, wq = np.asarray(layer.key_projection.kernel), np.asarray(layer.query_projection.kernel)
    query = np.einsum("d,dhk->hk", x["target_inherent"][0, 0], wq)
    changed["seq_inherent"][0, loser] = 1e3 * np.einsum("dhk,hk->d", wh, query)
  after = np.asarray(GsuTopK(3)(layer(**changed), x["valid"])[0])
  assert loser not in before[0, 0] and loser in after[0, 0]


def test_short_term_attention_matches_numpy():
  layer = ShortTermAttention(2, 4, 3, 5)
  q = RNG.standard_normal((B, C, 6)).astype("float32")
  k = RNG.standard_normal((B, 7, 9)).astype("float32")
  mask = np.ones((B, 7), bool)
  mask[1, :3] = False
  got = np.asarray(layer(q, k, mask))
  wq, wk, wv, wo = (np.asarray(w) for w in (layer.query_kernel, layer.key_kernel,
                                            layer.value_kernel, layer.output_kernel))
  for b in range(B):
    for c in range(C):
      heads = []
      for h in range(2):
        s = (k[b] @ wk[:, h]) @ (q[b, c] @ wq[:, h]) / 2.0
        s = np.where(mask[b], s, -np.inf)
        p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        heads.append(p @ (k[b] @ wv[:, h]))
      np.testing.assert_allclose(got[b, c], np.concatenate(heads) @ wo, **TOL)
  mask[0] = False  # a user without a recent behavior gets zeros
  np.testing.assert_array_equal(np.asarray(layer(q, k, mask))[0], 0.0)


def test_din_attention_ignores_padding():
  layer = DinAttention((4,))
  q = RNG.standard_normal((1, 2, 3)).astype("float32")
  k = RNG.standard_normal((1, 5, 3)).astype("float32")
  mask = np.array([[True, True, False, False, False]])
  a = np.asarray(layer(q, k, mask))
  k2 = k.copy()
  k2[0, 2:] = 100.0
  np.testing.assert_allclose(np.asarray(layer(q, k2, mask)), a, **TOL)


@pytest.mark.parametrize("layer", [
    InherentProjection(4, 16), CrossFeatureBias(4), CrossFeatureEmbedding([3, 5], 8),
    ClusterAwareTargetAttention(4, 16, False), ClusterAwareTargetAttention(4, 16, True, True),
    GsuTopK(50, "round_robin"), Esu(8, 32),
    ShortTermAttention(2, 8, 8, 16), DinAttention((16, 8))])
def test_config_round_trip(layer):
  restored = layer.__class__.from_config(layer.get_config())
  assert restored.get_config() == layer.get_config()
  again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert again.get_config() == layer.get_config()


@pytest.mark.parametrize("use_log_size,key_dim,normalized", [
    (True, DK, False), (False, DK, False), (True, 2, False), (True, DK, True),
    (True, 2, True)])
def test_summed_factors_and_scores_at_equal_the_full_alpha(use_log_size, key_dim, normalized):
  """The GSU's one-inner-product form, and the ESU's scores from the chosen values
  K = [K_h | K_c], equal alpha'. key_dim 2 (H d_k = 8 < D_h = 10) takes the keys' form, the
  others fold the query through the key projection."""
  layer = _attention(use_log_size, key_dim, normalized)
  x = _inputs(seed=6)
  x["valid"][0, 7:] = False
  alpha = np.asarray(layer(**x))
  query = layer.queries(x["target_inherent"])
  bias = layer.summed_bias(x["seq_cross"], x["size"])
  np.testing.assert_allclose(bias, np.asarray(layer.bias(x["seq_cross"], x["size"])).sum(-1),
                             **TOL)
  positions, gsu_query = layer.summed_factors(x["seq_inherent"], query, bias, x["valid"])
  summed = np.asarray(gsu_query) @ np.asarray(positions).transpose(0, 2, 1)
  real = np.broadcast_to(x["valid"][:, None, :], summed.shape)
  np.testing.assert_allclose(summed[real], alpha.sum(-1)[real], **TOL)
  assert np.all(summed[~real] < MASK_VALUE / 2)  # padding: far below any real score
  indices = np.asarray(GsuTopK(4)(summed, x["valid"])[0])
  np.testing.assert_array_equal(indices, np.asarray(GsuTopK(4)(alpha, x["valid"])[0]))
  values = np.concatenate([x["seq_inherent"], x["seq_cross"].reshape(B, L, -1)], axis=-1)
  chosen = np.stack([values[b][indices[b]] for b in range(B)])  # (B, C, K, DH + 8J)
  chosen_size = np.stack([x["size"][b][indices[b]] for b in range(B)])
  np.testing.assert_allclose(np.asarray(layer.scores_at(chosen, query, chosen_size)),
                             np.take_along_axis(alpha, indices[..., None], axis=2)
                             .transpose(0, 1, 3, 2), **TOL)


def test_normalized_target_term_starts_at_attention_scale():
  """Normalized, each head's target term starts at about unit std whatever the scale of the
  inherent features (here the embeddings' initial +-0.05), where the plain projections
  leave it near 1e-4: the regime in which the GSU ignores the candidate."""
  rng = np.random.default_rng(3)
  x = dict(seq_inherent=rng.uniform(-0.05, 0.05, (1, 400, 48)).astype("float32"),
           seq_cross=np.zeros((1, 400, J, 8), "float32"), size=np.ones((1, 400), "float32"),
           valid=np.ones((1, 400), bool),
           target_inherent=rng.uniform(-0.05, 0.05, (1, 20, 48)).astype("float32"))
  stds = {}
  for normalized in (False, True):
    keras.utils.set_random_seed(0)
    layer = ClusterAwareTargetAttention(4, 16, False, normalized)
    stds[normalized] = float(np.asarray(layer(**x)).std(axis=2).mean())  # over positions
  assert stds[False] < 1e-3
  assert 0.5 < stds[True] < 2.0
