"""SavedModel export for TF Serving: request-shaped signatures over raw, padded features.

`<base>/<version>/` is written to a temporary folder beside it and renamed into place, so TF
Serving never sees a half-written version. Signatures (method tensorflow/serving/predict):

Field names come from the run's FeatureSpec (twin_tf.data.feature_spec, written to
assets.extra/feature_spec.json): SEQUENCE_RAW = spec.sequence_fields (item_id, the item
features, group, the flags, timestamp), CANDIDATE_RAW = spec.candidate_fields (item_id and the
item features).

  serving_default  one row per user request:
    request_time                         (B,)      int64   unix seconds of the request
    long_<f>  f in SEQUENCE_RAW          (B, L)    int64   the user's clusters (or behaviors)
    long_size                            (B, L)    float32 cluster sizes n
    long_length                          (B,)      int32   valid positions (padding after)
    short_<f>, short_length              (B, S), (B,)      the recent raw behaviors
    candidate_<f>  f in CANDIDATE_RAW    (B, C)    int64   the candidates to score
    candidate_dense                      (B, C, D) float32 each candidate's dense "other
                                         features" (features.DENSE_FEATURES, raw values)
    -> scores (B, C) float32. The GSU keys of the clusters are projected once per request.
  esu  the same plus
    long_chosen                          (B, C, K) int32   each candidate's clusters already
                                         chosen (by ScaNN or any retriever) as positions
                                         into long_* (-1: none; the rest < long_length)
    -> scores (B, C): the ESU alone over the chosen clusters. long_* need hold only the
    clusters some candidate chose, each once (the union of their top K), so each is
    featurized once, however many candidates chose it.
  esu_cached  ("gsu" models) the esu request without long_<f> for f in CANDIDATE_RAW, plus
    long_keys                            (B, U, H*d_k) float32  item_keys' keys and
    long_value_heads                     (B, U, H*d_v) float32  value_heads of the rows' items
    -> scores (B, C), as esu's up to float rounding: the rows' inherent projections come from
    the key cache, only their cross features (ages at request_time) are computed.
  item_keys  CANDIDATE_RAW (N,) int64 -> keys (N, H, d_k), the cacheable
    K_h W_h / sqrt(d_k); queries (N, H, d_k), q W_q of the same items as candidates;
    value_heads (N, H, d_v), the cacheable K_h W_v,h (the inherent rows of the ESU's value
    kernel); known (N,) bool, whether the item is in the model's vocabulary.
  cluster_bias  long_* (B, L) fields, long_size, long_length, request_time -> bias (B, L),
    (K_c W_c) beta + ln n summed over heads (0 at padding): with item_keys, the GSU key vector
    of each cluster (twin_tf.export.retrieval).
Item ids and item features map through the run's vocabularies inside the graph (unknown
ids -> OOV index; hashed features: id mod buckets). Every signature first checks its float
inputs (finite; sizes > 0 at valid positions) and fails with InvalidArgumentError naming the
input, which TF Serving answers as INVALID_ARGUMENT (never a crash or a NaN score).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import uuid

import numpy as np

from twin_tf.data import feature_spec, schema
from twin_tf.data.feature_spec import FeatureSpec
from twin_tf.model import features
from twin_tf.model.vocabulary import OOV, Vocabularies

CANDIDATE_DENSE = f"candidate_{features.DENSE}"
WARMUP_FILE = "tf_serving_warmup_requests"
EXTRA = "assets.extra"


def exported_spec(version_dir: str | pathlib.Path) -> FeatureSpec:
  """The FeatureSpec an export was written with (its signatures' field names)."""
  return feature_spec.load(pathlib.Path(version_dir) / EXTRA)


def _input_specs(tf, spec: FeatureSpec, chosen: bool = False) -> dict:
  """TensorSpecs of a serving_default request (`chosen`: an esu request)."""
  specs = {"request_time": tf.TensorSpec([None], tf.int64, "request_time")}
  if chosen:
    specs[features.CHOSEN] = tf.TensorSpec([None, None, None], tf.int32, features.CHOSEN)
  for prefix, shape in (("long", [None, None]), ("short", [None, None])):
    for field in spec.sequence_fields:
      specs[f"{prefix}_{field}"] = tf.TensorSpec(shape, tf.int64, f"{prefix}_{field}")
    specs[f"{prefix}_size"] = tf.TensorSpec(shape, tf.float32, f"{prefix}_size")
    specs[f"{prefix}_length"] = tf.TensorSpec(shape[:-1], tf.int32, f"{prefix}_length")
  for field in spec.candidate_fields:
    specs[f"candidate_{field}"] = tf.TensorSpec([None, None], tf.int64, f"candidate_{field}")
  specs[CANDIDATE_DENSE] = tf.TensorSpec([None, None, len(features.DENSE_FEATURES)],
                                         tf.float32, CANDIDATE_DENSE)
  return specs


def _cached_specs(tf, spec: FeatureSpec, key_width: int, value_width: int) -> dict:
  """TensorSpecs of an esu_cached request: an esu request without the long rows' item fields,
  with their cached projections instead."""
  specs = {k: v for k, v in _input_specs(tf, spec, chosen=True).items()
           if k not in {f"long_{f}" for f in spec.candidate_fields}}
  for name, width in ((features.CACHED_KEYS, key_width),
                      (features.CACHED_VALUE_HEADS, value_width)):
    specs[name] = tf.TensorSpec([None, None, width], tf.float32, name)
  return specs


class ServingModule:
  """Wraps a trained CtrModel (TensorFlow backend) with the serving signatures."""

  def __init__(self, model, vocabularies: Vocabularies):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    self.tf, self.model, self.spec = tf, model, vocabularies.spec
    spec = self.spec
    module = tf.Module()
    module.model = model
    # Track the backing tf.Variables explicitly: the session-based loader (what TF Serving
    # runs) can only restore variables the SavedModel's object graph holds.
    module.model_variables = [v.value for v in model.variables]
    self.buckets = {f: v.hash_buckets for f, v in vocabularies.items()}
    module.vocabularies = {
        f: tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(v.ids, tf.int64), tf.range(2, len(v.ids) + 2, dtype=tf.int64)),
            default_value=OOV)
        for f, v in vocabularies.items() if not v.hash_buckets}
    module.serving_default = tf.function(self._serving_default,
                                         input_signature=[_input_specs(tf, spec)])
    module.esu = tf.function(self._esu, input_signature=[_input_specs(tf, spec, chosen=True)])
    if model.config.long_term == "gsu":
      module.esu_cached = tf.function(self._esu_cached, input_signature=[_cached_specs(
          tf, spec, model.config.num_heads * model.config.key_dim,
          model.config.num_heads * model.config.value_dim)])
    module.item_keys = tf.function(self._item_keys, input_signature=[{
        f: tf.TensorSpec([None], tf.int64, f) for f in spec.candidate_fields}])
    bias_specs = {k: v for k, v in _input_specs(tf, spec).items()
                  if k.startswith("long_") or k == "request_time"}
    module.cluster_bias = tf.function(self._cluster_bias, input_signature=[bias_specs])
    self.module = module

  def _checked(self, raw):
    """raw with its float inputs checked: finite, and `<prefix>_size` > 0 at the positions
    `<prefix>_length` marks valid. A failed check is an InvalidArgumentError naming the input,
    raised before any of them is read."""
    tf = self.tf
    checks = []
    for name, value in raw.items():
      if value.dtype != tf.float32:
        continue
      checks.append(tf.debugging.Assert(  # is_finite: ~4x faster than CheckNumerics
          tf.reduce_all(tf.math.is_finite(value)), [f"input {name}: NaN or infinity"]))
      length = f"{name[:-len('_size')]}_length"
      if name.endswith("_size") and length in raw:
        valid = tf.range(tf.shape(value)[-1]) < raw[length][..., None]
        checks.append(tf.debugging.Assert(
            tf.reduce_all(tf.logical_or(value > 0, tf.logical_not(valid))),
            [f"input {name}: sizes must be > 0 at valid positions"]))
    with tf.control_dependencies(checks):
      return {name: tf.identity(value) for name, value in raw.items()}

  def _lookup(self, raw, prefix):
    """{f: vocabulary indexes} of the candidate fields `<prefix>_<f>` of a request."""
    out = {}
    for f in self.spec.candidate_fields:
      ids = raw[f"{prefix}{f}"]
      out[f] = (self.tf.math.floormod(ids, self.buckets[f]) + 2 if self.buckets[f] else
                self.module.vocabularies[f].lookup(ids))
    return out

  def _sequence(self, raw, prefix, reference_time, items: bool = True):
    """The model inputs of the sequence `<prefix>_*` of a request (without `items`: the
    cross features, sizes and mask only; the request has no item fields there)."""
    tf = self.tf
    valid = (tf.range(tf.shape(raw[f"{prefix}_size"])[-1])[None]
             < raw[f"{prefix}_length"][..., None])
    seq = {f: raw[f"{prefix}_{f}"] for f in self.spec.sequence_fields
           if items or f not in self.spec.candidate_fields}
    if items:
      seq.update(self._lookup(raw, f"{prefix}_"))
    return features.sequence_inputs(tf, self.spec, prefix, seq, raw[f"{prefix}_size"], valid,
                                    reference_time, items)

  def _targets(self, raw):
    tf = self.tf
    shape = tf.shape(raw[f"candidate_{schema.ITEM_ID}"])
    time = tf.broadcast_to(raw["request_time"][:, None], shape)
    inputs = features.target_inputs(tf, self.spec, self._lookup(raw, "candidate_"), time)
    inputs[features.DENSE] = raw[CANDIDATE_DENSE]  # (B, C, D)
    return inputs

  def model_inputs(self, raw, long_items: bool = True):
    """The model's inputs, (B, C) targets, of a serving_default request (its named arrays);
    without `long_items`, of a request without the long rows' item fields (esu_cached)."""
    time = raw["request_time"][:, None]
    inputs = self._targets(raw)
    inputs.update(self._sequence(raw, "long", time, long_items))
    inputs.update(self._sequence(raw, "short", time))
    return inputs

  def _serving_default(self, raw):
    """One pass over each user's sequences for all of its (B, C) candidates."""
    return {"scores": self.model(self.model_inputs(self._checked(raw)))}

  def _esu(self, raw):
    """The ESU alone over each candidate's chosen clusters (long_chosen (B, C, K))."""
    with self.tf.control_dependencies([self._chosen_in_range(raw)]):
      inputs = self.model_inputs(self._checked(raw))
    return {"scores": self.model({**inputs, features.CHOSEN: raw[features.CHOSEN]})}

  def _esu_cached(self, raw):
    """_esu over the chosen clusters' cached inherent projections (long_keys (B, U, H d_k),
    long_value_heads (B, U, H value_dim): item_keys' keys and value_heads of their items)."""
    tf = self.tf
    with tf.control_dependencies([self._chosen_in_range(raw)]):
      raw = self._checked(raw)
    inputs = self.model_inputs(raw, long_items=False)
    config = self.model.config
    for name, width in ((features.CACHED_KEYS, config.key_dim),
                        (features.CACHED_VALUE_HEADS, config.value_dim)):
      value = raw[name]
      inputs[name] = tf.reshape(value, tf.concat([tf.shape(value)[:2],
                                                  [config.num_heads, width]], 0))
    return {"scores": self.model({**inputs, features.CHOSEN: raw[features.CHOSEN]})}

  def _chosen_in_range(self, raw):
    """An assertion that long_chosen holds -1 or positions < long_length."""
    tf, chosen = self.tf, raw[features.CHOSEN]
    in_range = tf.logical_and(chosen >= -1, chosen < raw["long_length"][:, None, None])
    return tf.debugging.Assert(tf.reduce_all(in_range), [
        f"input {features.CHOSEN}: positions must be -1 or in [0, long_length)"])

  def _item_keys(self, raw):
    ids = self._lookup(raw, "")
    inputs = features.target_inputs(self.tf, self.spec, ids, self.tf.zeros_like(
        ids[schema.ITEM_ID]))
    inherent = self.model.embed_items(inputs, "target")
    return {"keys": self.model.attention.item_keys(inherent),
            "queries": self.model.attention.queries(inherent),
            "value_heads": self.model.esu.value_heads(inherent),
            "known": ids[schema.ITEM_ID] != OOV}

  def _cluster_bias(self, raw):
    raw = self._checked(raw)
    seq = self._sequence(raw, "long", raw["request_time"][:, None])
    bias = self.model.attention.summed_bias(self.model.cross_embedding(seq["long_cross"]),
                                            seq["long_size"])
    return {"bias": self.tf.where(seq["long_mask"], bias, 0.0)}


def next_version(base: str | pathlib.Path) -> int:
  """1 + the highest numeric version folder under `base` (1 when there is none)."""
  base = pathlib.Path(base)
  versions = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.exists() else []
  return max(versions, default=0) + 1


def export_saved_model(run_dir: str | pathlib.Path, base: str | pathlib.Path,
                       version: int | None = None, warmup_requests=None,
                       bound_pruning: bool = True) -> pathlib.Path:
  """Exports a trained run as `<base>/<version>/`, atomically; returns the version folder.

  Args:
    run_dir: a finished `twin-tf train` run (weights trained on TensorFlow or JAX).
    base: the model base path TF Serving watches.
    version: default next_version(base).
    warmup_requests: PredictRequests written to assets.extra (at most 1000); those of a
      signature this model does not export are left out. Each esu request also warms
      esu_cached (the same request with zero projections, esu_cached_warmup).
    bound_pruning: the GSU's (GsuTopK); False ranks every cluster (the same scores, slower on
      a trained TwinV2: for comparisons).
  """
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  from twin_tf.training.trainer import restore_model  # pylint: disable=import-outside-toplevel
  if keras.backend.backend() != "tensorflow":
    raise RuntimeError("export needs KERAS_BACKEND=tensorflow (weights from JAX runs load fine)")
  model, vocabularies, _ = restore_model(run_dir)
  if model.config.long_term == "gsu":
    model.gsu.bound_pruning = bound_pruning
  serving = ServingModule(model, vocabularies)
  base = pathlib.Path(base)
  base.mkdir(parents=True, exist_ok=True)
  version = version or next_version(base)
  final = base / str(version)
  if final.exists():
    raise FileExistsError(f"version {version} already exists under {base}")
  remove_abandoned_staging(base)
  # not numeric: TF Serving ignores it; the pid tells a later export whether it was abandoned
  staging = base / f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex}"
  signatures = {"serving_default": serving.module.serving_default,
                "esu": serving.module.esu, "item_keys": serving.module.item_keys,
                "cluster_bias": serving.module.cluster_bias}
  if model.config.long_term == "gsu":
    signatures["esu_cached"] = serving.module.esu_cached
  if model.config.long_term == "none":  # no attention, hence no esu and no GSU keys
    signatures = {"serving_default": serving.module.serving_default}
  try:
    tf.saved_model.save(serving.module, str(staging), signatures=signatures)
    (staging / EXTRA).mkdir(exist_ok=True)
    vocabularies.spec.save(staging / EXTRA)
    warmup_requests = [r for r in warmup_requests or ()
                       if (r.model_spec.signature_name or "serving_default") in signatures]
    if "esu_cached" in signatures:
      config = model.config
      warmup_requests += [
          esu_cached_warmup(r, vocabularies.spec, config.num_heads * config.key_dim,
                            config.num_heads * config.value_dim)
          for r in warmup_requests if r.model_spec.signature_name == "esu"]
    if warmup_requests:
      write_warmup(staging, warmup_requests)
    os.rename(staging, final)
  finally:
    if staging.exists():
      shutil.rmtree(staging)
  return final


def remove_abandoned_staging(base: pathlib.Path) -> list[pathlib.Path]:
  """Removes .tmp-<version>-<pid>-* folders of exports whose process is gone (killed
  midway); returns them. Folders of running exports are left alone."""
  removed = []
  for folder in base.glob(".tmp-*-*-*"):
    pid = folder.name.split("-")[2]
    if pid.isdigit() and not _alive(int(pid)):
      shutil.rmtree(folder, ignore_errors=True)
      removed.append(folder)
  return removed


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def esu_cached_warmup(request, spec: FeatureSpec, key_width: int, value_width: int):
  """An esu PredictRequest as an esu_cached one: without the long rows' item fields, with
  zero long_keys (B, U, key_width) and long_value_heads (B, U, value_width)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  cached = type(request)()
  cached.CopyFrom(request)
  cached.model_spec.signature_name = "esu_cached"
  for field in spec.candidate_fields:
    del cached.inputs[f"long_{field}"]
  rows = tuple(tf.make_ndarray(request.inputs["long_size"]).shape)  # (B, U)
  for name, width in ((features.CACHED_KEYS, key_width),
                      (features.CACHED_VALUE_HEADS, value_width)):
    cached.inputs[name].CopyFrom(tf.make_tensor_proto(np.zeros(rows + (width,), np.float32)))
  return cached


def read_warmup(version_dir: str | pathlib.Path) -> list:
  """The PredictRequests of a version's assets.extra warmup file ([] without one)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(version_dir) / EXTRA / WARMUP_FILE
  if not path.exists():
    return []
  return [prediction_log_pb2.PredictionLog.FromString(r).predict_log.request
          for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]


def write_warmup(version_dir: str | pathlib.Path, requests) -> None:
  """assets.extra/tf_serving_warmup_requests: TFRecord of PredictionLog (at most 1000)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=import-outside-toplevel
  requests = list(requests)
  if len(requests) > 1000:
    raise ValueError(f"TF Serving reads at most 1000 warmup records, got {len(requests)}")
  folder = pathlib.Path(version_dir) / EXTRA
  folder.mkdir(parents=True, exist_ok=True)
  with tf.io.TFRecordWriter(str(folder / WARMUP_FILE)) as writer:
    for request in requests:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
