"""The practitioner's baseline: LightGBM on the same dense "other features" as the models.

Inputs per impression: features.DENSE_FEATURES (statistics strictly before the impression)
and the target item's features of the FeatureSpec (categorical, as vocabulary indexes). No
sequence, no item id. It is
trained on the train split with early stopping on validation AUC and scored with the same
metrics as every model (trainer.split_metrics), so a quality table shows what the sequence
modules add over statistics.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from twin_tf.data import schema
from twin_tf.model import features
from twin_tf.training.input_pipeline import ExampleData

NAME = "GBDT"


@dataclasses.dataclass(frozen=True)
class GbdtConfig:
  """LightGBM settings (binary log loss); the seed drives row and feature subsampling."""

  num_leaves: int = 31
  learning_rate: float = 0.05
  max_rounds: int = 2000
  early_stopping_rounds: int = 50
  min_data_in_leaf: int = 50
  bagging_fraction: float = 0.8
  feature_fraction: float = 0.8
  seed: int = 0


def design_matrix(data: ExampleData, split: str) -> np.ndarray:
  """(I, D + F) float32: dense features, then the vocabulary indexes of the target's F item
  features."""
  imp = data.impressions[split]
  return np.concatenate([imp[features.DENSE]] + [
      data.vocabularies[f].lookup(imp[f])[:, None].astype(np.float32)
      for f in data.spec.item_feature_names], axis=1)


def train_and_score(data: ExampleData, config: GbdtConfig = GbdtConfig(),
                    split: str = "test") -> tuple[np.ndarray, int]:
  """Fits on train (early stopping on validation AUC); returns (scores of `split` (I,),
  boosting rounds kept)."""
  import lightgbm  # pylint: disable=import-outside-toplevel
  categorical = list(data.spec.item_feature_names)
  datasets = {s: lightgbm.Dataset(design_matrix(data, s), data.impressions[s][schema.LABEL],
                                  feature_name=list(features.DENSE_FEATURES) + categorical,
                                  categorical_feature=categorical,
                                  free_raw_data=False)
              for s in ("train", "validation")}
  params = {"objective": "binary", "metric": "auc", "verbosity": -1,
            "num_leaves": config.num_leaves, "learning_rate": config.learning_rate,
            "min_data_in_leaf": config.min_data_in_leaf, "bagging_fraction":
            config.bagging_fraction, "bagging_freq": 1, "feature_fraction":
            config.feature_fraction, "seed": config.seed, "num_threads": 1,
            "deterministic": True}
  booster = lightgbm.train(
      params, datasets["train"], config.max_rounds, valid_sets=[datasets["validation"]],
      callbacks=[lightgbm.early_stopping(config.early_stopping_rounds, verbose=False)])
  scores = booster.predict(design_matrix(data, split), num_iteration=booster.best_iteration)
  return scores, int(booster.best_iteration)
