"""QueryCache: each candidate's query vector is computed once per model version."""

import numpy as np

from serving.gsu import QueryCache
from twin_tf.export.retrieval import gsu_query_vectors


class FakeItemKeys:
  """item_keys of a model whose queries (N, 2, 3) follow the candidate's fields and version;
  records the rows of every call."""

  def __init__(self):
    self.calls = []

  def __call__(self, arrays: dict, version: int) -> np.ndarray:
    self.calls.append({f: v.tolist() for f, v in arrays.items()})
    base = arrays["item_id"] * 10.0 + arrays["category"] + 1000.0 * version
    return (base[:, None, None] + np.arange(6).reshape(2, 3)).astype(np.float32)


def _candidates(items, categories):
  return {"item_id": np.array(items, np.int64), "category": np.array(categories, np.int64)}


def test_only_candidates_not_seen_with_that_version_call_item_keys():
  item_keys = FakeItemKeys()
  cache = QueryCache(item_keys)
  first = _candidates([5, 7, 5], [1, 1, 1])
  np.testing.assert_array_equal(cache.vectors(first, 1),
                                gsu_query_vectors(FakeItemKeys()(first, 1)))
  second = _candidates([7, 9, 7, 5], [1, 1, 2, 1])  # (7, 2): another candidate than (7, 1)
  np.testing.assert_array_equal(cache.vectors(second, 1),
                                gsu_query_vectors(FakeItemKeys()(second, 1)))
  np.testing.assert_array_equal(cache.vectors(second, 2),  # a new version: computed again
                                gsu_query_vectors(FakeItemKeys()(second, 2)))
  assert item_keys.calls == [
      {"category": [1, 1, 1], "item_id": [5, 7, 5]},
      {"category": [1, 2], "item_id": [9, 7]},
      {"category": [1, 1, 2, 1], "item_id": [7, 9, 7, 5]}]
  cache.vectors(second, 2)
  assert len(item_keys.calls) == 3 and len(cache) == 4 + 4  # (item, category) x version
  assert cache.vectors(_candidates([], []), 1).shape == (0, 2 * 3 + 1)


def test_a_full_cache_is_emptied_and_still_answers_right():
  item_keys = FakeItemKeys()
  cache = QueryCache(item_keys, max_items=3)
  for items in ([1, 2], [3, 4], [1, 3, 5]):
    candidates = _candidates(items, [0] * len(items))
    np.testing.assert_array_equal(cache.vectors(candidates, 1),
                                  gsu_query_vectors(FakeItemKeys()(candidates, 1)))
    assert len(cache) <= 3
  assert [c["item_id"] for c in item_keys.calls] == [[1, 2], [3, 4], [1, 5]]
