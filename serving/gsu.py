"""Client-side GSU: retrieve each candidate's top-100 clusters from the key cache (exact or
ScaNN), then score with the model's `esu_cached` signature (the chosen clusters' cached key
and value projections; `esu`, which featurizes them again, for caches or versions without).

  gsu = ClientSideGsu(client, "work_dir/key_cache")
  scores = gsu.score(user_id, candidates, short, request_time)  # retriever="auto"

candidates: {f: (C,)} for the export's candidate fields (item_id and the item features of its
FeatureSpec) and dense: (C, D); short: {f: (S,)} for the sequence fields of the recent
behaviors (twin_tf.export.saved_model). Every request is pinned to the model version the
user's keys were built from: the candidates' query vectors come from that version's
`item_keys` signature (once per candidate and version: QueryCache), the scores from its
`esu_cached`; when the server no longer serves that version the request is refused
(VersionMismatchError).
"""

from __future__ import annotations

import numpy as np

from serving.client import ModelNotFoundError
from twin_tf.data import schema, tfexample
from twin_tf.export import key_cache
from twin_tf.export.retrieval import ExactRetriever, ScannRetriever, gsu_query_vectors
from twin_tf.export.saved_model import CANDIDATE_DENSE
from twin_tf.model import features


class VersionMismatchError(Exception):
  """The key cache and the served model come from different model versions."""


class QueryCache:
  """The candidates' GSU query vectors by model version and candidate fields, each computed
  once by `item_keys`: a candidate seen before with that version costs a dictionary lookup
  instead of a model call (the query side of the key cache). Holds at most `max_items`
  vectors; emptied when a request would pass that.

  Args:
    item_keys: ({f: (N,) int64} candidate fields, version) -> (N, H, d_k) queries of that
      version's item_keys signature.
  """

  def __init__(self, item_keys, max_items: int = 200_000):
    self._item_keys, self.max_items = item_keys, max_items
    self._vectors: dict[tuple, np.ndarray] = {}

  def __len__(self) -> int:
    return len(self._vectors)

  def vectors(self, candidates: dict, version: int) -> np.ndarray:
    """{f: (C,) int64} candidate fields -> (C, H*d_k + 1) float32 (gsu_query_vectors)."""
    fields = sorted(candidates)
    rows = np.stack([np.asarray(candidates[f], np.int64) for f in fields], axis=1)  # (C, F)
    if not len(rows):  # the model gives the vectors' width
      return gsu_query_vectors(self._item_keys(dict(candidates), version))
    keys = [(version, *row) for row in rows.tolist()]
    found = [self._vectors.get(key) for key in keys]
    missing = [i for i, vector in enumerate(found) if vector is None]
    if missing:
      fresh = gsu_query_vectors(self._item_keys({f: rows[missing, j] for j, f in
                                                 enumerate(fields)}, version))
      if len(self._vectors) + len(missing) > self.max_items:
        self._vectors.clear()
      for i, vector in zip(missing, fresh):
        self._vectors[keys[i]] = found[i] = vector
    return np.stack(found)


class ClientSideGsu:

  def __init__(self, client, cache_folder: str, top_k: int = 100):
    self.client, self.top_k = client, top_k
    self.users = {r[schema.USER_ID]: r for r in
                  (key_cache.decode(s) for s in
                   tfexample.read_serialized(f"{str(cache_folder).rstrip('/')}/user_keys-*"))}
    self._retrievers: dict[tuple[int, str], object] = {}  # (user, kind), built once
    self._cached_inputs: dict[int, frozenset | None] = {}  # version -> esu_cached's inputs
    self.queries = QueryCache(
        lambda arrays, version: self._predict(arrays, "item_keys", version)["queries"])

  def retriever(self, user_id: int, kind: str = "auto"):
    """The user's retriever: "exact", "scann", or "auto": ScaNN where the key cache holds a
    serialized searcher for the user (it builds one from --scann_min_clusters clusters, where
    exact search is the slower: a live model at 10^5 clusters, one core, p50 19 ms a request
    against 60 over exact search and 66 for serving_default; at 10^4, 11.6 against 9.5;
    results/serving.json), exact otherwise."""
    record = self.users[user_id]
    if kind == "auto":
      kind = "scann" if record[key_cache.SEARCHER] else "exact"
    if kind not in ("exact", "scann"):
      raise ValueError(f"retriever must be 'auto', 'exact' or 'scann', got {kind!r}")
    if (user_id, kind) not in self._retrievers:
      self._retrievers[user_id, kind] = self._built(record, kind)
    return self._retrievers[user_id, kind]

  def _built(self, record: dict, kind: str):
    """A user key record's retriever; ScaNN from its serialized searcher, or built here."""
    if kind == "exact":
      return ExactRetriever(record["key_vectors"])
    if record[key_cache.SEARCHER]:
      return ScannRetriever.load(record[key_cache.SEARCHER])
    return ScannRetriever(record["key_vectors"], self.top_k)

  def score(self, user_id: int, candidates: dict, short: dict, request_time: int,
            retriever: str = "auto") -> np.ndarray:
    """(C,) click probabilities of the candidates for the user."""
    if user_id not in self.users:
      raise KeyError(f"user {user_id} is not in the key cache")
    record = self.users[user_id]
    version = record[key_cache.MODEL_VERSION]
    arrays = {f: np.asarray(v, np.int64) for f, v in candidates.items() if f != features.DENSE}
    queries = self.queries.vectors(arrays, version)  # (C, H*d_k + 1)
    chosen = self.retriever(user_id, retriever).search(queries, self.top_k)  # (C, K)
    names = self._esu_cached_inputs(version) if record["value_vectors"] is not None else None
    request = esu_long_inputs(record["clusters"], chosen, None if names is None else (
        record["key_vectors"], record["value_vectors"]))
    request["request_time"] = np.array([request_time], np.int64)
    length = len(short[schema.ITEM_ID])
    for f in short:
      request[f"short_{f}"] = np.asarray(short[f], np.int64)[None]
    request["short_size"] = np.ones((1, length), np.float32)
    request["short_length"] = np.array([length], np.int32)
    for f in arrays:
      request[f"candidate_{f}"] = arrays[f][None]
    request[CANDIDATE_DENSE] = np.asarray(candidates[features.DENSE], np.float32)[None]
    if names is not None:
      request = {k: v for k, v in request.items() if k in names}
    return self._predict(request, "esu" if names is None else "esu_cached", version)[
        "scores"][0]

  def _predict(self, arrays: dict, signature: str, version: int) -> dict:
    """`signature`'s outputs from `version`."""
    return self._pinned(version, lambda: self.client.predict_outputs(arrays, signature,
                                                                     version)[0])

  @staticmethod
  def _pinned(version: int, call):
    """call(), a request to `version`; VersionMismatchError when the server does not serve it."""
    try:
      return call()
    except ModelNotFoundError as error:
      raise VersionMismatchError(
          f"the key cache was built from model version {version}, which the server does not "
          f"serve ({error.message}); rebuild the key cache (beam_pipelines.cache_keys) for the "
          "served version") from None

  def _esu_cached_inputs(self, version: int) -> frozenset | None:
    """The input names of the served version's esu_cached signature (None: it has none)."""
    if version not in self._cached_inputs:
      _, signatures = self._pinned(version, lambda: self.client.metadata(version))
      defined = signatures.signature_def
      self._cached_inputs[version] = (frozenset(defined["esu_cached"].inputs)
                                      if "esu_cached" in defined else None)
    return self._cached_inputs[version]


def esu_long_inputs(clusters: dict, chosen: np.ndarray, cached=None) -> dict:
  """The esu signature's long inputs (B = 1) for a user's clusters {f: (L,)} (sequence fields
  and cluster_size) and the (C, K) positions each candidate chose: long_* hold the clusters
  some candidate chose, each once, and long_chosen (1, C, K) their positions there. cached:
  the user's (key_vectors (L, D + 1), value_vectors (L, V)) from the key cache, for an
  esu_cached request: adds their rows as long_keys (the keys, not the bias column) and
  long_value_heads."""
  length = len(clusters[schema.CLUSTER_SIZE])
  picked = np.zeros(length, bool)
  picked[chosen.reshape(-1)] = True  # no sort: chosen lie in [0, L)
  unique = np.flatnonzero(picked)
  positions = (np.cumsum(picked) - 1)[chosen]  # each chosen row's place among the unique
  request = {f"long_{f}": np.asarray(v)[unique][None].astype(np.int64)
             for f, v in clusters.items() if f != schema.CLUSTER_SIZE}
  request["long_size"] = np.asarray(clusters[schema.CLUSTER_SIZE])[unique][None].astype(
      np.float32)
  request["long_length"] = np.array([len(unique)], np.int32)
  request[features.CHOSEN] = positions.reshape((1,) + chosen.shape).astype(np.int32)
  if cached is not None:
    key_vectors, value_vectors = cached
    request[features.CACHED_KEYS] = np.asarray(key_vectors[unique, :-1], np.float32)[None]
    request[features.CACHED_VALUE_HEADS] = np.asarray(value_vectors[unique], np.float32)[None]
  return request
