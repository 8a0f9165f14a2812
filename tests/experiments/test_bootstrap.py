"""Paired bootstrap over users against a plain numpy resampling of the same draws."""

import numpy as np

from twin_tf.experiments.bootstrap import _weighted_auc, paired_bootstrap
from twin_tf.training import metrics


def test_weighted_auc_equals_the_auc_of_repeated_rows():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 60)
  scores = np.round(rng.random(60), 1)  # many ties
  counts = rng.integers(0, 3, 60)
  repeated = np.repeat(np.arange(60), counts)
  got = _weighted_auc(labels, scores, counts[None].astype(float))[0]
  np.testing.assert_allclose(got, metrics.auc(labels[repeated], scores[repeated]), rtol=1e-12)


def test_a_better_model_gets_an_interval_above_zero_and_a_copy_gets_zero():
  """SYNTHETIC: 80 users; A's scores carry the label, B's are noise."""
  rng = np.random.default_rng(1)
  users = np.repeat(np.arange(80), 12)
  labels = rng.integers(0, 2, len(users))
  good = [labels + rng.normal(0, 1.0, len(users)) for _ in range(2)]
  noise = [rng.normal(0, 1.0, len(users)) for _ in range(2)]
  better = paired_bootstrap(labels, users, good, noise, resamples=200)
  for metric in ("auc", "gauc"):
    assert 0 < better[metric]["ci_low"] <= better[metric]["mean"] <= better[metric]["ci_high"]
  same = paired_bootstrap(labels, users, noise, noise, resamples=50)
  for metric in ("auc", "gauc"):
    assert same[metric] == {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
