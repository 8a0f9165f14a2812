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
import concurrent.futures
import dataclasses
import http.server
import json
import logging
import pathlib
import re
import signal
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
  get_model_metadata_pb2,
  get_model_status_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

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


def _signature_defs(version_dir: pathlib.Path) -> dict:
  saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
  return {k: v for k, v in saved.meta_graphs[0].signature_def.items()
          if not k.startswith("__")}


class VersionStore:
  """The loaded versions of one model; polls its base path for new version folders."""

  def __init__(self, base_path: str | pathlib.Path, poll_seconds: float = 1.0):
    self.base_path, self.poll_seconds = pathlib.Path(base_path), poll_seconds
    self._current: LoadedVersion | None = None
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = None

  def refresh(self) -> None:
    """Loads the highest complete version if it is new, then makes it current."""
    versions = sorted(int(p.name) for p in self.base_path.iterdir()
                      if p.name.isdigit() and (p / "saved_model.pb").exists()) \
        if self.base_path.exists() else []
    if not versions or (self._current and self._current.version == versions[-1]):
      return
    version_dir = self.base_path / str(versions[-1])
    try:
      loaded = LoadedVersion(versions[-1], tf.saved_model.load(str(version_dir)),
                             _signature_defs(version_dir))
    except Exception:  # pylint: disable=broad-except
      LOG.exception("could not load %s; will retry", version_dir)
      return
    with self._lock:
      previous, self._current = self._current, loaded  # in-flight requests keep `previous`
    LOG.info("serving version %d%s", loaded.version,
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
      self.refresh()

  def stop(self) -> None:
    self._stop.set()


def validate_inputs(signature_def, arrays: dict[str, np.ndarray]) -> None:
  """Raises INVALID_ARGUMENT naming the input for any mismatch with the signature, and for
  values the model would silently mis-score."""
  expected = signature_def.inputs
  missing = sorted(set(expected) - set(arrays))
  extra = sorted(set(arrays) - set(expected))
  if missing or extra:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"inputs do not match the signature: missing {missing}, extra {extra}")
  for name in expected:  # first: JSON cannot carry the trailing sizes of an empty array
    if name.startswith("candidate_") and arrays[name].ndim > 1 and arrays[name].shape[1] == 0:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: no candidates")
  for name, info in expected.items():
    value = arrays[name]
    want = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
    if value.dtype != want:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"input {name!r}: dtype {value.dtype}, expected {np.dtype(want)}")
    if len(info.tensor_shape.dim) != value.ndim:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"input {name!r}: rank {value.ndim} (shape {value.shape}), "
                         f"expected rank {len(info.tensor_shape.dim)}")
    if value.size > MAX_REQUEST_ELEMENTS:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"input {name!r}: {value.size:,} values, over the limit of "
                         f"{MAX_REQUEST_ELEMENTS:,} per input")
    if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: NaN or infinity")
    if np.issubdtype(value.dtype, np.integer) and np.any(value < 0):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: negative values")
  batch = {arrays[name].shape[0] for name in expected}
  if len(batch) > 1:
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"inputs disagree on the batch size: {sorted(batch)}")
  for name in expected:
    if name.endswith("_length"):
      width = arrays[name.replace("_length", "_item_id")].shape[-1]
      if np.any(arrays[name] > width):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input {name!r}: a length exceeds the padded width {width}")


def predict(store: VersionStore, model_name: str, request_model: str, version: int | None,
            signature: str, arrays: dict[str, np.ndarray]) -> tuple[int, dict]:
  """(version, outputs) of one request, or RequestError."""
  if request_model != model_name:
    raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {request_model!r} is not served")
  current = store.get(version)
  signature = signature or "serving_default"
  if signature not in current.signature_defs:
    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                       f"signature {signature!r} not found; the model has "
                       f"{sorted(current.signature_defs)}")
  validate_inputs(current.signature_defs[signature], arrays)
  outputs = current.loaded.signatures[signature](**{k: tf.constant(v) for k, v in arrays.items()})
  return current.version, {k: v.numpy() for k, v in outputs.items()}


def _requested_version(store: VersionStore, model_name: str, model_spec, context):
  """The loaded version a ModelSpec asks for, or the call aborts with NOT_FOUND."""
  try:
    if model_spec.name != model_name:
      raise RequestError(grpc.StatusCode.NOT_FOUND, f"model {model_spec.name!r} is not served")
    return store.get(model_spec.version.value or None)
  except RequestError as error:
    context.abort(error.code, error.message)
    raise  # abort raises; this keeps the control flow explicit


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, store: VersionStore, model_name: str):
    self.store, self.model_name = store, model_name

  def Predict(self, request, context):  # pylint: disable=invalid-name
    try:
      arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
      version, outputs = predict(self.store, self.model_name, request.model_spec.name,
                                 request.model_spec.version.value or None,
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


_REST_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")
_HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
                grpc.StatusCode.NOT_FOUND: 404}


def _rest_handler(store: VersionStore, model_name: str):

  class Handler(http.server.BaseHTTPRequestHandler):
    """POST /v1/models/{name}[/versions/{v}]:predict, columnar "inputs" JSON."""

    def do_POST(self):  # pylint: disable=invalid-name
      match = _REST_PATH.match(self.path)
      try:
        if not match:
          raise RequestError(grpc.StatusCode.NOT_FOUND, f"no such endpoint {self.path}")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        signature = body.get("signature_name", "serving_default")
        current = store.get(int(match.group(2)) if match.group(2) else None)
        definition = current.signature_defs.get(signature)
        if definition is None:
          raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"signature {signature!r} not found")
        arrays = {}
        for name, value in (body.get("inputs") or {}).items():
          info = definition.inputs.get(name)
          dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype if info else None
          arrays[name] = np.asarray(value, dtype=dtype)
        version, outputs = predict(store, model_name, match.group(1),
                                   int(match.group(2)) if match.group(2) else None,
                                   signature, arrays)
        self._reply(200, {"outputs": {k: v.tolist() for k, v in outputs.items()},
                          "model_version": version})
      except RequestError as error:
        self._reply(_HTTP_STATUS.get(error.code, 500), {"error": error.message})
      except (ValueError, TypeError) as error:
        self._reply(400, {"error": f"malformed request: {error}"})

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
  <version>/ folders), serving it as `model_name`; `start()` returns (grpc_port, rest_port)."""

  def __init__(self, model_base_path, model_name: str = "twin", host: str = "127.0.0.1",
               port: int = 0, rest_port: int = 0, poll_seconds: float = 1.0, workers: int = 8):
    self.store = VersionStore(pathlib.Path(model_base_path), poll_seconds)
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
    self.store.start()
    self._grpc.start()
    threading.Thread(target=self._rest.serve_forever, daemon=True).start()
    return self.port, self.rest_port

  def stop(self) -> None:
    self.store.stop()
    self._rest.shutdown()
    self._grpc.stop(grace=1).wait()


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
  serve_until_signal(DevServer(args.model_base_path, args.model_name, args.host, args.port,
                               args.rest_port, args.poll_seconds))


if __name__ == "__main__":
  main()
