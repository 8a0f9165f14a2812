"""The GSU key cache: per-item keys and per-user GSU key matrices from an exported model.

A user key record (tf.train.Example, one per user) holds:
  user_id, model_version, reference_time      int64[1]
  dim                                          int64[1]   D = H * d_k + 1
  key_vectors                                  float[L*D] row-major (L, D): for cluster i,
      [ (K_h W_h)_i / sqrt(d_k) over heads , sum_h ((K_c W_c) beta + ln n)_i ]
  value_dim                                    int64[1]   V = H * d_v
  value_vectors                                float[L*V] row-major (L, V): for cluster i,
      (K_h W_v,h)_i over heads, the inherent part of its ESU value heads
  cluster_<f>, cluster_size                   int64[L]   the clusters (for the esu request)
  searcher                                     bytes      folder of a serialized ScaNN
                                                          searcher, "" below the threshold
The bias part holds the cross features' age relative to `reference_time`; a request long
after it ranks with slightly stale ages (the ESU re-scores with the request's own time: the
esu_cached signature takes the rows' keys and value_vectors and computes the rest).
Records carry the model version they were built from; the serving path refuses other versions.
"""

from __future__ import annotations

import numpy as np

from twin_tf.data import schema, tfexample
from twin_tf.export.saved_model import exported_spec

MODEL_VERSION = "model_version"
REFERENCE_TIME = "reference_time"
SEARCHER = "searcher"


class ModelKeys:
  """The item_keys and cluster_bias signatures of one exported version, called from numpy."""

  def __init__(self, version_dir: str):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    self._tf = tf
    self.version = int(str(version_dir).rstrip("/").split("/")[-1])
    self.spec = exported_spec(version_dir)
    loaded = tf.saved_model.load(str(version_dir))
    self._item_keys = loaded.signatures["item_keys"]
    self._cluster_bias = loaded.signatures["cluster_bias"]
    self._loaded = loaded  # keeps the functions' variables alive

  def item_keys(self, items: dict) -> dict[str, np.ndarray]:
    """{f: (N,)} for spec.candidate_fields -> {keys (N, H*d_k), queries (N, H*d_k),
    value_heads (N, H*d_v), known (N,) bool}."""
    tf = self._tf
    out = self._item_keys(**{f: tf.constant(np.asarray(items[f], np.int64))
                             for f in self.spec.candidate_fields})
    n = len(items[schema.ITEM_ID])
    return {k: v.numpy().reshape(n, -1) if k != "known" else v.numpy()
            for k, v in out.items()}

  def cluster_bias(self, clusters: dict, reference_time: int) -> np.ndarray:
    """One user's clusters {f: (L,)} (spec.sequence_fields + cluster_size) -> (L,) summed
    bias."""
    tf = self._tf
    length = len(clusters[schema.ITEM_ID])
    arrays = {f"long_{f}": tf.constant(np.asarray(clusters[f], np.int64)[None])
              for f in self.spec.sequence_fields}
    arrays["long_size"] = tf.constant(np.asarray(clusters[schema.CLUSTER_SIZE],
                                                 np.float32)[None])
    arrays["long_length"] = tf.constant([length], tf.int32)
    arrays["request_time"] = tf.constant([reference_time], tf.int64)
    return self._cluster_bias(**arrays)["bias"].numpy()[0]


def user_clusters(record: dict) -> dict[str, np.ndarray]:
  """The cluster_<f> fields of a build_examples user record (or of a key record): {f: (L,)},
  the FeatureSpec's sequence fields and cluster_size."""
  return {k[len("cluster_"):]: v for k, v in record.items() if k.startswith("cluster_")}


def key_vectors(item_keys: np.ndarray, bias: np.ndarray) -> np.ndarray:
  """(L, H*d_k) keys of the clusters' items and (L,) bias -> (L, H*d_k + 1) float32."""
  return np.concatenate([item_keys, bias[:, None]], axis=1).astype(np.float32)


def encode(user_id: int, model_version: int, reference_time: int, vectors: np.ndarray,
           value_vectors: np.ndarray, clusters: dict, searcher: str = "") -> bytes:
  features = {schema.USER_ID: user_id, MODEL_VERSION: model_version,
              REFERENCE_TIME: reference_time, "dim": vectors.shape[1],
              "key_vectors": vectors.reshape(-1), "value_dim": value_vectors.shape[1],
              "value_vectors": np.asarray(value_vectors, np.float32).reshape(-1)}
  features.update({f"cluster_{f}": np.asarray(v) for f, v in clusters.items()})
  serialized = tfexample.encode(features)
  if not searcher:
    return serialized
  from tensorflow.core.example import example_pb2, feature_pb2  # pylint: disable=import-outside-toplevel
  example = example_pb2.Example.FromString(serialized)
  example.features.feature[SEARCHER].CopyFrom(
      feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[searcher.encode()])))
  return example.SerializeToString()


def decode(serialized: bytes) -> dict:
  """A user key record -> {user_id, model_version, reference_time: int, key_vectors (L, D),
  value_vectors (L, V) (None in records written before them), clusters {f: (L,)},
  searcher: str}."""
  from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
  raw = tfexample.decode(serialized)
  feature = example_pb2.Example.FromString(serialized).features.feature
  searcher = feature[SEARCHER].bytes_list.value[0].decode() if SEARCHER in feature else ""
  dim = int(raw["dim"][0])
  return {schema.USER_ID: int(raw[schema.USER_ID][0]),
          MODEL_VERSION: int(raw[MODEL_VERSION][0]),
          REFERENCE_TIME: int(raw[REFERENCE_TIME][0]),
          "key_vectors": raw["key_vectors"].reshape(-1, dim),
          "value_vectors": (raw["value_vectors"].reshape(-1, int(raw["value_dim"][0]))
                            if "value_dim" in raw else None),
          "clusters": user_clusters(raw),
          SEARCHER: searcher}
