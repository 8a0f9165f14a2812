"""The model follows its data's FeatureSpec: one embedding per item feature, J cross features."""

import dataclasses

import numpy as np
import pytest

from twin_tf.data.feature_spec import KUAIRAND, MOVIELENS
from twin_tf.model import features
from twin_tf.model.ctr_model import PRESETS, CtrModel, build_model


def test_a_kuairand_model_embeds_every_item_feature_and_flag():
  sizes = {"item_id": 50, "tag": 12, "author_id": 103, "music_id": 103, "upload_type": 5}
  model = build_model("TwinV2", KUAIRAND, sizes)
  inputs = features.placeholder_inputs(KUAIRAND, batch=3, length=7)
  assert inputs["long_cross"].shape == (3, 7, 4 + len(KUAIRAND.behavior_flags))
  rng = np.random.default_rng(0)
  for prefix, shape in (("target", (3,)), ("long", (3, 7)), ("short", (3, 50))):
    for field, size in sizes.items():
      inputs[f"{prefix}_{field}"] = rng.integers(2, size, shape).astype(np.int32)
  inputs["long_mask"][:] = True
  inputs["long_size"][:] = 1.0
  scores = np.asarray(model(inputs))
  assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
  assert model.item_embedding.output_dim == 32 + 4 * 8
  assert [t.input_dim for t in model.item_embedding.tables] == list(sizes.values())
  assert model.cross_embedding.vocab_sizes == features.cross_vocab(KUAIRAND)
  restored = CtrModel.from_config(model.get_config())
  assert restored.spec == KUAIRAND and restored.vocab_sizes == sizes


def test_simhard_searches_the_primary_item_feature():
  sizes = {"item_id": 20, "category": 6, "year_bucket": 9}
  model = build_model("SimHard", MOVIELENS, sizes)
  inputs = features.placeholder_inputs(MOVIELENS, batch=1, length=120)
  inputs["long_mask"][:] = True
  inputs["long_category"][0, :60] = 3
  inputs["target_category"][:] = 3
  scores = np.asarray(model(inputs))
  inputs["long_year_bucket"][0, :60] = 5  # behaviors SIM-hard keeps: the score moves
  assert not np.allclose(np.asarray(model(inputs)), scores)
  inputs["long_year_bucket"][0, :60] = 0
  inputs["long_year_bucket"][0, 60:] = 5  # behaviors of other categories: it does not
  np.testing.assert_allclose(np.asarray(model(inputs)), scores, rtol=1e-6)


def test_item_l2_penalizes_the_item_table():
  """ItemEmbedding reads its tables directly (take_rows): the penalty still reaches the loss."""
  model = build_model(dataclasses.replace(PRESETS["TwinV2"], item_l2=0.1), MOVIELENS,
                      {"item_id": 20, "category": 6, "year_bucket": 9})
  model(features.placeholder_inputs(MOVIELENS))
  table = np.asarray(model.item_embedding.tables[0].embeddings)
  np.testing.assert_allclose([float(loss) for loss in model.losses],
                             [0.1 * np.square(table).sum()], rtol=1e-5)


def test_bound_pruning_changes_no_score():
  """C candidates a row over L > K clusters: the GSU multiplies only the clusters that can
  reach a top 100 (few, as the bias spreads them apart: the plain projections' regime, whose
  target term starts near 1e-4) and scores what ranking all does."""
  from twin_tf.model.layers import gsu
  sizes = {"item_id": 500, "category": 6, "year_bucket": 9}
  model = build_model(dataclasses.replace(PRESETS["TwinV2"], normalized_attention=False),
                      MOVIELENS, sizes)
  batch, candidates, length = 2, 7, 900
  inputs = _random_inputs(sizes, batch, candidates, length, np.random.default_rng(3))
  inputs["long_mask"][1, 600:] = False
  pruned = np.asarray(model(inputs))
  model.gsu.bound_pruning = False
  np.testing.assert_allclose(np.asarray(model(inputs)), pruned, rtol=1e-5)
  assert pruned.shape == (batch, candidates)
  reach = np.asarray(model.gsu_reach(inputs))
  assert np.all(reach >= 100) and np.all(reach < length * gsu.PRUNE_MAX_SHARE)  # it pruned


@pytest.mark.parametrize("config", [
    PRESETS["TwinV2"], PRESETS["Twin"], PRESETS["SimHard"], PRESETS["TwinV2-no-ln-n"],
    dataclasses.replace(PRESETS["TwinV2"], normalized_attention=False),
    dataclasses.replace(PRESETS["TwinV2"], gsu_merge="round_robin")], ids=lambda c: c.name)
def test_chosen_positions_score_as_the_models_own_choice(config):
  """long_chosen (the esu signature's path: keys, bias and value heads per row, then
  gathered) scores what the GSU path scores when every candidate chooses what its GSU does:
  here all positions (L <= K), given in another order and padded with -1."""
  sizes = {"item_id": 50, "category": 6, "year_bucket": 9}
  model = build_model(config, MOVIELENS, sizes)
  batch, candidates, length = 2, 5, 30
  rng = np.random.default_rng(1)
  inputs = _random_inputs(sizes, batch, candidates, length, rng)
  inputs["long_mask"][1, 20:] = False
  inputs["long_size"][1, 20:] = 0.0
  if config.long_term == "category":  # SIM-hard keeps only the target's category
    inputs["long_category"][:] = inputs["target_category"][:, :1]
    inputs["target_category"][:] = inputs["target_category"][:, :1]
  expected = np.asarray(model(inputs))
  order = rng.permutation(length)
  chosen = np.where(inputs["long_mask"][:, order], order, -1)  # (B, L), -1 at padding
  chosen = np.concatenate([chosen, -np.ones((batch, 3), int)], axis=1)
  chosen = np.repeat(chosen[:, None], candidates, axis=1).astype(np.int32)  # (B, C, L + 3)
  np.testing.assert_allclose(np.asarray(model({**inputs, "long_chosen": chosen})), expected,
                             rtol=2e-5, atol=1e-6)


def _random_inputs(sizes: dict, batch: int, candidates: int, length: int, rng) -> dict:
  """MovieLens model inputs, (B, C) targets over L valid long positions, of random ids,
  cross features and sizes."""
  inputs = features.placeholder_inputs(MOVIELENS, batch=batch, length=length)
  for field, size in sizes.items():
    inputs[f"long_{field}"] = rng.integers(2, size, (batch, length)).astype(np.int32)
    inputs[f"target_{field}"] = rng.integers(2, size, (batch, candidates)).astype(np.int32)
  for key in features.TIME_KEYS:
    inputs[key] = np.zeros((batch, candidates), np.int32)
  inputs[features.DENSE] = rng.random((batch, candidates, len(features.DENSE_FEATURES)),
                                      np.float32)
  inputs["long_cross"] = rng.integers(1, 4, inputs["long_cross"].shape).astype(np.int32)
  inputs["long_size"] = rng.integers(1, 21, (batch, length)).astype(np.float32)
  inputs["long_mask"][:] = True
  return inputs


def test_a_long_term_source_goes_with_a_long_term_module():
  """Source "none" (one bucket, no long rows) only for a model without a long-term module,
  and such a model reads nothing else: its batches cannot depend on the clustering."""
  assert PRESETS["DIN"].long_term_source == "none"
  with pytest.raises(ValueError, match="long_term_source 'clusters'"):
    dataclasses.replace(PRESETS["DIN"], long_term_source="clusters")
  with pytest.raises(ValueError, match="long_term_source 'none'"):
    dataclasses.replace(PRESETS["TwinV2"], long_term_source="none")
  with pytest.raises(ValueError, match="long_term must be one of"):
    dataclasses.replace(PRESETS["TwinV2"], long_term="all")
