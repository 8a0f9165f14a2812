"""Every JSON the package writes parses strictly; the serving check scores a user it can
compute an AUC for."""

import json
import types

import numpy as np
import pytest

from twin_tf import strict_json
from twin_tf.experiments.serve_and_score import scored_user


def _strict(text):
  def refuse(name):
    raise ValueError(f"{name} is not JSON")
  return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null():
  value = {"auc": float("nan"), "runs": [np.float32(0.5), np.float64("inf"), -np.inf],
           "n": np.int64(3), "nested": ({"x": np.nan},)}
  with pytest.raises(ValueError):
    _strict(json.dumps({"auc": float("nan")}))  # what json.dumps alone writes
  assert _strict(strict_json.dumps(value)) == {"auc": None, "runs": [0.5, None, None], "n": 3,
                                               "nested": [{"x": None}]}


def _data(labels_by_user, clusters):
  rows = np.concatenate([[u] * len(l) for u, l in enumerate(labels_by_user)])
  return types.SimpleNamespace(
      user_ids=np.arange(len(clusters)) + 100, cluster_len=np.array(clusters),
      impressions={"test": {"user_row": rows, "label": np.concatenate(labels_by_user)}})


def test_the_serving_check_scores_the_longest_user_with_both_labels():
  data = _data([[0, 0, 0], [1, 0], [1, 1, 0]], clusters=[50, 10, 20])
  assert scored_user(data, 100) == (2, None)  # user 0 has no positive
  assert scored_user(data, 2) == (1, None)  # user 2's first two are both positive
  row, reason = scored_user(_data([[0, 0], [1]], clusters=[5, 9]), 100)
  assert row == 1 and "both labels" in reason
