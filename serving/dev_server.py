"""DEVELOPMENT SERVER, not TF Serving: the PredictionService / ModelService gRPC API and the
REST predict API over a TF Serving model base path, for development and end-to-end tests.

Production runs `tensorflow/serving` (serving/docker-compose.yml). This server speaks the same
protocol on the same `<model_base_path>/<version>/` layout so that clients and tests can run
where the real model server cannot be installed:
  - serves the highest version; a new version folder is picked up while running (polling),
    loaded, then made current; requests in flight keep the version they started on; the older
    version is then unloaded;
  - errors as TF Serving gives them: NOT_FOUND (unknown model or version), FAILED_PRECONDITION
    (unknown signature), INVALID_ARGUMENT (missing / extra inputs, wrong dtype or rank, and,
    beyond TF Serving, NaN values, negative ids, lengths out of range, empty candidates and
    oversized requests), each message naming the input;
  - listens on 127.0.0.1 by default.

  python -m serving.dev_server --model_base_path work_dir/serving/twin --model_name twin \
      --port 8500 --rest_port 8501
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import gc
import http.server
import json
import logging
import math
import pathlib
import re
import signal
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
  get_model_metadata_pb2,
  get_model_status_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from twin_tf.data import feature_spec, schema
from twin_tf.data.feature_spec import FeatureSpec
from twin_tf.export.saved_model import CANDIDATE_DENSE, EXTRA, read_warmup
from twin_tf.model import features
from twin_tf.model.features import CHOSEN

CACHED = (features.CACHED_KEYS, features.CACHED_VALUE_HEADS)  # esu_cached's (B, U, width)

MAX_REQUEST_ELEMENTS = 20_000_000  # per input; bigger requests are refused, not attempted
# Messages up to 2 GiB, as TF Serving accepts (gRPC's default is 4 MiB): a request of 10^5
# clusters (about 5.6 MB) must pass over gRPC, not only over REST.
MAX_MESSAGE_BYTES = 2**31 - 1
GRPC_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
LOG = logging.getLogger("twin_tf.dev_server")


class RequestError(Exception):
  """An error with a gRPC status code, raised to the client as TF Serving would."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code, self.message = code, message


@dataclasses.dataclass
class LoadedVersion:
  version: int
  loaded: object  # the tf.saved_model.load result
  signature_defs: dict  # name -> SignatureDef proto
  spec: FeatureSpec  # the export's (its field names and flags)


def _signature_defs(version_dir: pathlib.Path) -> dict:
  saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
  return {k: v for k, v in saved.meta_graphs[0].signature_def.items()
          if not k.startswith("__")}


VERSION_FOLDER = re.compile(r"^[0-9]+$")  # ASCII digits: "²".isdigit() is True too
MAX_REST_BODY = 1 << 30  # bytes


class VersionStore:
  """The loaded versions of one model; polls its base path for new version folders.

  A new version is loaded and warmed with its own warmup requests
  (assets.extra/tf_serving_warmup_requests, as TF Serving replays them) before it takes
  traffic; the previous one serves until then. A version that fails to load is logged once
  and tried again only when its folder changes. With `version`, only that version is
  served (TF Serving's "specific" version policy), whatever is published beside it.
  """

  def __init__(self, base_path: str | pathlib.Path, poll_seconds: float = 1.0,
               version: int | None = None):
    self.base_path, self.poll_seconds = pathlib.Path(base_path), poll_seconds
    self.version = version
    self._current: LoadedVersion | None = None
    self._failed: dict[int, float] = {}  # version -> folder mtime when it failed
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = None

  def refresh(self) -> None:
    """Loads and warms the highest complete version if it is new, then makes it current."""
    versions = sorted(int(p.name) for p in self.base_path.iterdir()
                      if VERSION_FOLDER.match(p.name) and (p / "saved_model.pb").exists() and
                      self.version in (None, int(p.name))) \
        if self.base_path.exists() else []
    if not versions or (self._current and self._current.version == versions[-1]):
      return
    version_dir = self.base_path / str(versions[-1])
    stamp = version_dir.stat().st_mtime
    if self._failed.get(versions[-1]) == stamp:
      return  # unchanged since it failed: logged already
    try:
      loaded = LoadedVersion(versions[-1], tf.saved_model.load(str(version_dir)),
                             _signature_defs(version_dir),
                             feature_spec.load(version_dir / EXTRA))
      warmed = warm_up(loaded, version_dir)
    except Exception:  # pylint: disable=broad-except
      self._failed[versions[-1]] = stamp
      LOG.exception("could not load %s; serving %s until that folder changes", version_dir,
                    f"version {self._current.version}" if self._current else "nothing")
      return
    with self._lock:
      previous, self._current = self._current, loaded  # in-flight requests keep `previous`
    LOG.info("serving version %d after %d warmup requests%s", loaded.version, warmed,
             f" (unloaded {previous.version})" if previous else "")

  def get(self, version: int | None = None) -> LoadedVersion:
    with self._lock:
      current = self._current
    if current is None:
      raise RequestError(grpc.StatusCode.NOT_FOUND, "no version of the model is loaded")
    if version not in (None, 0, current.version):
      raise RequestError(grpc.StatusCode.NOT_FOUND,
                         f"version {version} is not available (serving {current.version})")
    return current

  def start(self) -> None:
    self.refresh()
    self._thread = threading.Thread(target=self._poll, daemon=True)
    self._thread.start()

  def _poll(self) -> None:
    while not self._stop.wait(self.poll_seconds):
      try:
        self.refresh()
      except Exception:  # pylint: disable=broad-except  (a folder gone mid-scan, a full disk)
        LOG.exception("polling %s failed; polling on", self.base_path)

  def stop(self) -> None:
    self._stop.set()


def validate_inputs(signature_def, arrays: dict[str, np.ndarray],
                    spec: FeatureSpec | None = None) -> None:
  """Raises INVALID_ARGUMENT naming the input for any mismatch with the signature, and for
  values the model would silently mis-score: inputs of one sequence (or of the candidates)
  that disagree in shape, an empty batch, and, with the export's FeatureSpec, completion
  groups above features.MAX_GROUPS, flags other than 0/1 and sizes <= 0 at valid positions
  (each would land in another feature's rows of the shared tables)."""
  expected = signature_def.inputs
  missing = sorted(set(expected) - set(arrays))
  extra = sorted(set(arrays) - set(expected))
  if missing or extra:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"inputs do not match the signature: missing {missing}, extra {extra}")
  if all(arrays[name].shape[:1] == (0,) for name in expected):  # before ranks: JSON's [] is 1-D
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "empty batch (B = 0)")
  for name in expected:  # first: JSON cannot carry the trailing sizes of an empty array
    if name.startswith("candidate_") and arrays[name].ndim > 1 and arrays[name].shape[1] == 0:
      _refuse(name, "no candidates")
  for name, info in expected.items():
    value = arrays[name]
    want = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
    if value.dtype != want:
      _refuse(name, f"dtype {value.dtype}, expected {np.dtype(want)}")
    dims = [d.size for d in info.tensor_shape.dim]
    if len(dims) != value.ndim:
      _refuse(name, f"rank {value.ndim} (shape {value.shape}), expected rank {len(dims)}")
    if any(0 <= d != v for d, v in zip(dims, value.shape)):
      _refuse(name, f"shape {value.shape}, expected {tuple(d if d >= 0 else None for d in dims)}")
    if value.size > MAX_REQUEST_ELEMENTS:
      _refuse(name, f"{value.size:,} values, over the limit of {MAX_REQUEST_ELEMENTS:,} per "
              "input")
    if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
      _refuse(name, "NaN or infinity")
    if np.issubdtype(value.dtype, np.integer) and np.any(value < (-1 if name == CHOSEN else 0)):
      _refuse(name, "values below -1" if name == CHOSEN else "negative values")
  batch = {arrays[name].shape[0] for name in expected}
  if len(batch) > 1:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"inputs disagree on the batch size: {sorted(batch)}")
  _check_shapes(arrays)
  if spec is not None:
    _check_ranges(arrays, spec)


def _refuse(name: str, reason: str):
  raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: {reason}")


def _check_shapes(arrays: dict[str, np.ndarray]) -> None:
  """Every field of a sequence (and of the candidates) has one shape; lengths, dense
  features, the esu's chosen positions and esu_cached's projections agree with it."""
  candidate = sorted(n for n in arrays if n.startswith("candidate_") and n != CANDIDATE_DENSE)
  shapes = {}
  for prefix, names in (("candidate", candidate),) + tuple(
      (p, sorted(n for n in arrays
                 if n.startswith(f"{p}_") and n not in (f"{p}_length", CHOSEN) + CACHED))
      for p in ("long", "short")):
    if not names:
      continue
    common = collections.Counter(arrays[n].shape for n in names).most_common(1)[0][0]
    reference = next(n for n in names if arrays[n].shape == common)
    shapes[prefix] = (reference, common)
    for name in names:  # the odd one out is named, whatever order the request listed them in
      if arrays[name].shape != common:
        _refuse(name, f"shape {arrays[name].shape} disagrees with {reference!r} {common}")
  for prefix in ("long", "short"):
    if prefix in shapes and f"{prefix}_length" in arrays:
      if arrays[f"{prefix}_length"].shape != shapes[prefix][1][:-1]:
        _refuse(f"{prefix}_length", f"shape {arrays[f'{prefix}_length'].shape}, expected "
                f"{shapes[prefix][1][:-1]} (one length per sequence)")
      width = shapes[prefix][1][-1]
      if np.any(arrays[f"{prefix}_length"] > width):
        _refuse(f"{prefix}_length", f"a length exceeds the padded width {width}")
  for name in CACHED:  # (B, U, width) beside the long rows' (B, U)
    if name in arrays and "long" in shapes and arrays[name].shape[:2] != shapes["long"][1]:
      _refuse(name, f"shape {arrays[name].shape} disagrees with {shapes['long'][0]!r} "
              f"{shapes['long'][1]}")
  if "candidate" in shapes:
    c_name, c_shape = shapes["candidate"]
    if CANDIDATE_DENSE in arrays and arrays[CANDIDATE_DENSE].shape[:2] != c_shape:
      _refuse(CANDIDATE_DENSE, f"shape {arrays[CANDIDATE_DENSE].shape} disagrees with "
              f"{c_name!r} {c_shape}")
    if CHOSEN in arrays:  # esu: positions into long_* per candidate
      chosen = arrays[CHOSEN]
      if chosen.shape[:2] != c_shape:
        _refuse(CHOSEN, f"shape {chosen.shape}: (B, C, K) with (B, C) = {c_shape} of {c_name!r}")
      if "long_length" in arrays and np.any(chosen >= arrays["long_length"][:, None, None]):
        _refuse(CHOSEN, "positions must be -1 or below long_length")


def _check_ranges(arrays: dict[str, np.ndarray], spec: FeatureSpec) -> None:
  for prefix in ("long", "short"):
    if f"{prefix}_length" not in arrays:
      continue
    size = arrays[f"{prefix}_size"]
    valid = np.arange(size.shape[-1]) < arrays[f"{prefix}_length"][..., None]
    limits = {f"{prefix}_{schema.GROUP}": features.MAX_GROUPS}
    limits.update({f"{prefix}_{flag}": 1 for flag in spec.behavior_flags})
    for name, limit in limits.items():
      if name in arrays and np.any(arrays[name][valid] > limit):
        _refuse(name, f"values above {limit} at valid positions (at most {limit})")
    if np.any(size[valid] <= 0):
      _refuse(f"{prefix}_size", "sizes must be > 0 at valid positions")


def warm_up(loaded: LoadedVersion, version_dir: pathlib.Path) -> int:
  """Replays the version's warmup requests (each signature they name); returns their count."""
  requests = read_warmup(version_dir)
  for request in requests:
    signature = request.model_spec.signature_name or "serving_default"
    loaded.loaded.signatures[signature](**{k: tf.constant(tf.make_ndarray(v))
                                           for k, v in request.inputs.items()})
  return len(requests)


def _current_signature(store: VersionStore, model_name: str, request_model: str,
                       version: int | None, signature: str):
  """(loaded version, signature name) a request asks for: NOT_FOUND for an unknown model or
  version (before the signature is looked at), FAILED_PRECONDITION for a missing signature."""
  if request_model != model_name:
    raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {request_model!r} is not served")
  current = store.get(version)
  signature = signature or "serving_default"
  if signature not in current.signature_defs:
    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                       f"signature {signature!r} not found; the model has "
                       f"{sorted(current.signature_defs)}")
  return current, signature


def predict(store: VersionStore, model_name: str, request_model: str, version: int | None,
            signature: str, arrays: dict[str, np.ndarray]) -> tuple[int, dict]:
  """(version, outputs) of one request, or RequestError."""
  current, signature = _current_signature(store, model_name, request_model, version,
                                          signature)
  validate_inputs(current.signature_defs[signature], arrays, current.spec)
  try:
    outputs = current.loaded.signatures[signature](**{k: tf.constant(v)
                                                      for k, v in arrays.items()})
  except tf.errors.InvalidArgumentError as error:  # what validation could not foresee
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, error.message) from None
  return current.version, {k: v.numpy() for k, v in outputs.items()}


def request_arrays(inputs) -> dict[str, np.ndarray]:
  """A PredictRequest's TensorProtos -> arrays; INVALID_ARGUMENT naming a malformed one."""
  arrays = {}
  for name, proto in inputs.items():
    _check_declared_shape(name, proto)
    try:
      arrays[name] = tf.make_ndarray(proto)
    except (TypeError, ValueError, KeyError) as error:
      _refuse(name, f"malformed TensorProto ({error})")
  return arrays


def _check_declared_shape(name: str, proto) -> None:
  """INVALID_ARGUMENT for a TensorProto whose shape is unknown, negative or larger than
  MAX_REQUEST_ELEMENTS, before tf.make_ndarray allocates it (a few-byte TensorProto can
  declare 2**44 values)."""
  if proto.tensor_shape.unknown_rank:
    _refuse(name, "a tensor of unknown rank")
  dims = [d.size for d in proto.tensor_shape.dim]
  if any(d < 0 for d in dims):
    _refuse(name, f"a negative dimension in shape {dims}")
  if math.prod(dims) > MAX_REQUEST_ELEMENTS:
    _refuse(name, f"shape {dims} declares {math.prod(dims):,} values, over the limit of "
            f"{MAX_REQUEST_ELEMENTS:,} per input")


def _version_choice(model_spec) -> int | None:
  """The version a ModelSpec asks for (None: the latest); a version_label is refused (this
  server has no labels)."""
  if model_spec.WhichOneof("version_choice") == "version_label":
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"version_label {model_spec.version_label!r} is not known: this "
                       "server has no version labels; ask for a version number")
  return model_spec.version.value or None


def _requested_version(store: VersionStore, model_name: str, model_spec, context):
  """The loaded version a ModelSpec asks for, or the call aborts with NOT_FOUND."""
  try:
    if model_spec.name != model_name:
      raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {model_spec.name!r} is not served")
    return store.get(_version_choice(model_spec))
  except RequestError as error:
    context.abort(error.code, error.message)
    raise  # abort raises; this keeps the control flow explicit


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, store: VersionStore, model_name: str):
    self.store, self.model_name = store, model_name

  def Predict(self, request, context):  # pylint: disable=invalid-name
    try:
      arrays = request_arrays(request.inputs)
      version, outputs = predict(self.store, self.model_name, request.model_spec.name,
                                 _version_choice(request.model_spec),
                                 request.model_spec.signature_name, arrays)
    except RequestError as error:
      context.abort(error.code, error.message)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = self.model_name
    response.model_spec.version.value = version
    response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
    for name, value in outputs.items():
      response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
    return response

  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    current = _requested_version(self.store, self.model_name, request.model_spec, context)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, definition in current.signature_defs.items():
      signature_map.signature_def[name].CopyFrom(definition)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = self.model_name
    response.model_spec.version.value = current.version
    response.metadata["signature_def"].Pack(signature_map)
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, store: VersionStore, model_name: str):
    self.store, self.model_name = store, model_name

  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    current = _requested_version(self.store, self.model_name, request.model_spec, context)
    response = get_model_status_pb2.GetModelStatusResponse()
    status = response.model_version_status.add()
    status.version = current.version
    status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    return response


_REST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict|/metadata)?$")
_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
                grpc.StatusCode.NOT_FOUND: 404}


def rest_array(name: str, value, dtype) -> np.ndarray:
  """A JSON value -> the signature's dtype; INVALID_ARGUMENT for what would change on the
  way (a fractional or boolean value for an integer input, an integer beyond int64, text)."""
  try:
    raw = np.asarray(value)
  except (ValueError, OverflowError) as error:
    _refuse(name, f"not a rectangular array of numbers ({error})")
  if raw.dtype == object and all(isinstance(v, int) for v in raw.ravel()):
    _refuse(name, "values beyond int64")  # numpy keeps Python ints over 2**63 as objects
  if raw.dtype == object or raw.dtype.kind in "USb":
    _refuse(name, f"values must be numbers, got {raw.dtype.kind!r} values")
  if np.issubdtype(dtype, np.integer) and raw.dtype.kind == "f" and raw.size and (
      not np.all(np.isfinite(raw)) or np.any(raw != np.trunc(raw))):
    _refuse(name, f"fractional values for an {np.dtype(dtype)} input")
  try:
    with np.errstate(over="raise", invalid="raise"):
      out = raw.astype(dtype)
  except (OverflowError, FloatingPointError) as error:
    _refuse(name, f"values beyond {np.dtype(dtype)} ({error})")
  if raw.dtype.kind == "f" and np.issubdtype(dtype, np.integer) and np.any(out != raw):
    _refuse(name, f"values beyond {np.dtype(dtype)}")
  return out


def _rest_predict(store: VersionStore, model_name: str, match, raw_body: bytes) -> dict:
  """POST :predict with columnar {"signature_name", "inputs": {name: nested lists}}."""
  try:
    body = json.loads(raw_body or b"{}")
  except (ValueError, UnicodeDecodeError, RecursionError) as error:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"body is not JSON (or nested too deep): {error}"[:300]) from None
  if not isinstance(body, dict) or not isinstance(body.get("inputs", {}), dict):
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       'body must be a JSON object with "inputs": {name: values} (columnar)')
  if not isinstance(body.get("signature_name", ""), str):
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "signature_name must be a string")
  version = int(match.group(2)) if match.group(2) else None
  current, signature = _current_signature(store, model_name, match.group(1), version,
                                          body.get("signature_name", "serving_default"))
  definition = current.signature_defs[signature]
  arrays = {}
  for name, value in body.get("inputs", {}).items():
    info = definition.inputs.get(name)
    # an unknown input's value is never read (it may be anything); validation names it
    arrays[name] = (rest_array(name, value, tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
                    if info else np.zeros(0))
  answered, outputs = predict(store, model_name, match.group(1), version, signature, arrays)
  return {"outputs": {k: v.tolist() for k, v in outputs.items()}, "model_version": answered}


def _rest_get(store: VersionStore, model_name: str, match) -> dict:
  """GET model status (TF Serving's JSON) or /metadata (the signature defs)."""
  if match.group(1) != model_name:
    raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {match.group(1)!r} is not served")
  current = store.get(int(match.group(2)) if match.group(2) else None)
  if match.group(3) == "/metadata":
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for name, definition in current.signature_defs.items():
      signatures.signature_def[name].CopyFrom(definition)
    return {"model_spec": {"name": model_name, "version": str(current.version)},
            "metadata": {"signature_def": json_format.MessageToDict(signatures)}}
  return {"model_version_status": [{"version": str(current.version), "state": "AVAILABLE",
                                    "status": {"error_code": "OK", "error_message": ""}}]}


def _rest_handler(store: VersionStore, model_name: str):

  class Handler(http.server.BaseHTTPRequestHandler):
    """POST /v1/models/{name}[/versions/{v}]:predict (columnar "inputs" JSON); GET
    /v1/models/{name}[/versions/{v}] (status) and .../metadata. Every error is a JSON
    {"error": message} with TF Serving's HTTP status: 400 for a bad request, 404 for an
    unknown model, version or endpoint, 405 for another method."""

    def do_POST(self):  # pylint: disable=invalid-name
      self._answer(lambda match: _rest_predict(store, model_name, match, self._body()))

    def _body(self) -> bytes:
      """The request body; INVALID_ARGUMENT for a Content-Length that is not a whole number
      of bytes in [0, MAX_REST_BODY]."""
      length = (self.headers.get("Content-Length") or "0").strip()
      if not length.isascii() or not length.isdigit() or int(length) > MAX_REST_BODY:
        self.close_connection = True  # the body, if any, is not read
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Content-Length {length[:40]!r} is not a byte count in "
                           f"[0, {MAX_REST_BODY:,}]")
      return self.rfile.read(int(length))

    def do_GET(self):  # pylint: disable=invalid-name
      self._answer(lambda match: _rest_get(store, model_name, match))

    def __getattr__(self, name: str):
      """Any other method (PUT, DELETE, HEAD, "BREW", ...): 405, not http.server's 501."""
      if not name.startswith("do_"):
        raise AttributeError(name)
      return lambda: self._reply(405, {"error": f"method {self.command} is not allowed; "
                                                "POST :predict or GET status / metadata"})

    def _answer(self, handle):
      match = _REST_PATH.match(self.path)
      try:
        if not match or (self.command == "POST") != (match.group(3) == ":predict"):
          raise RequestError(grpc.StatusCode.NOT_FOUND,
                             f"no such endpoint: {self.command} {self.path}")
        self._reply(200, handle(match))
      except RequestError as error:
        self._reply(_HTTP_STATUS.get(error.code, 500), {"error": error.message})
      except Exception as error:  # pylint: disable=broad-except
        LOG.exception("REST %s %s", self.command, self.path)
        self._reply(500, {"error": f"internal error: {type(error).__name__}: {error}"})

    def _reply(self, status: int, payload: dict):
      data = json.dumps(payload).encode()
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):  # quiet
      pass

  return Handler


class DevServer:
  """Both APIs over one VersionStore of `model_base_path` (TF Serving's: the folder of
  <version>/ folders), serving it as `model_name` (only `version` when given; else the
  latest); `start()` returns (grpc_port, rest_port)."""

  def __init__(self, model_base_path, model_name: str = "twin", host: str = "127.0.0.1",
               port: int = 0, rest_port: int = 0, poll_seconds: float = 1.0, workers: int = 8,
               version: int | None = None):
    self.store = VersionStore(pathlib.Path(model_base_path), poll_seconds, version)
    self.model_name, self.host = model_name, host
    self._grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers),
                             options=GRPC_OPTIONS)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(self.store, model_name), self._grpc)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(self.store, model_name), self._grpc)
    self.port = self._grpc.add_insecure_port(f"{host}:{port}")
    self._rest = http.server.ThreadingHTTPServer((host, rest_port),
                                                 _rest_handler(self.store, model_name))
    self.rest_port = self._rest.server_address[1]

  def start(self) -> tuple[int, int]:
    # What exists now (TensorFlow's and the server's modules: ~380,000 objects) lives as long
    # as the process: out of the collector's scans, a full collection pauses every request
    # ~10 ms instead of 125-230 ms (bench/reliability.py). Versions load after this, so an
    # unloaded version's objects are still collected.
    gc.freeze()
    self.store.start()
    self._grpc.start()
    threading.Thread(target=self._rest.serve_forever, daemon=True).start()
    return self.port, self.rest_port

  def stop(self) -> None:
    self.store.stop()
    self._rest.shutdown()
    self._grpc.stop(grace=1).wait()


def log_long_collections(threshold_ms: float = 50.0) -> None:
  """Logs every garbage collection that holds the interpreter for threshold_ms or more: it
  holds the GIL, so every request in the process waits for it."""
  started = []

  def callback(phase: str, info: dict) -> None:
    if phase == "start":
      started[:] = [time.perf_counter()]
    elif started:
      ms = (time.perf_counter() - started.pop()) * 1000
      if ms >= threshold_ms:
        LOG.warning("garbage collection (generation %d, %d objects freed) paused the server "
                    "%.0f ms", info["generation"], info["collected"], ms)

  gc.callbacks.append(callback)


def serve_until_signal(server: DevServer) -> None:
  """Starts `server`, prints where it listens, and stops it cleanly on SIGINT or SIGTERM."""
  stop = threading.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: stop.set())
  grpc_port, rest_port = server.start()
  print(f"twin-tf DEVELOPMENT server (not TF Serving): gRPC {server.host}:{grpc_port}, "
        f"REST http://{server.host}:{rest_port}; stop with Ctrl-C or SIGTERM", flush=True)
  stop.wait()
  server.stop()
  print("twin-tf DEVELOPMENT server stopped", flush=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="twin-tf DEVELOPMENT server (not TF Serving)")
  parser.add_argument("--model_base_path", required=True, help="folder of <version>/ folders")
  parser.add_argument("--model_name", default="twin")
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--port", type=int, default=8500)
  parser.add_argument("--rest_port", type=int, default=8501)
  parser.add_argument("--poll_seconds", type=float, default=2.0)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  log_long_collections()
  serve_until_signal(DevServer(args.model_base_path, args.model_name, args.host, args.port,
                               args.rest_port, args.poll_seconds))


if __name__ == "__main__":
  main()
