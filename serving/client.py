"""gRPC / REST client of a twin-tf model on TF Serving (or the development server).

  client = TwinClient("127.0.0.1:8500", model_name="twin")
  scores = client.predict(request_arrays)             # (B, C) click probabilities
  client.metadata()                                    # the signatures TF Serving reports

`request_arrays` is the serving_default layout of twin_tf/export/saved_model.py;
`pad_request` builds it from per-user lists of different lengths. UNAVAILABLE is retried a
bounded number of times with backoff; INVALID_ARGUMENT, FAILED_PRECONDITION and NOT_FOUND
raise at once, with the server's message.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
  get_model_metadata_pb2,
  get_model_status_pb2,
  model_service_pb2_grpc,
  predict_pb2,
  prediction_service_pb2_grpc,
)

from twin_tf.data import schema
from twin_tf.export.saved_model import CANDIDATE_DENSE
from twin_tf.model import features


class ServingError(Exception):
  """A request the server refused; `code` is the gRPC status name."""

  def __init__(self, code: str, message: str):
    super().__init__(f"{code}: {message}")
    self.code, self.message = code, message


class InvalidRequestError(ServingError):
  """INVALID_ARGUMENT or FAILED_PRECONDITION: fix the request."""


class ModelNotFoundError(ServingError):
  """NOT_FOUND: unknown model or version."""


def _error(code: str, message: str) -> ServingError:
  if code == "NOT_FOUND":
    return ModelNotFoundError(code, message)
  if code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"):
    return InvalidRequestError(code, message)
  return ServingError(code, message)


def pad_request(users: list[dict], request_times) -> dict[str, np.ndarray]:
  """Per-user variable-length lists -> the padded serving_default arrays.

  Args:
    users: one dict per request row with "long" and "short" ({field: list} for every
      sequence field of the export's FeatureSpec, twin_tf.export.saved_model, plus "size" for
      long) and "candidates" ({field: list} for its candidate fields, and "dense": one list of
      the D dense features per candidate). All rows need the same number of candidates and
      the fields of the first row.
    request_times: unix seconds per row.
  """
  arrays = {"request_time": np.asarray(request_times, np.int64)}
  sequence_fields = [f for f in users[0]["short"] if f != "size"]
  for prefix in ("long", "short"):
    lengths = [len(u[prefix][schema.ITEM_ID]) for u in users]
    width = max(max(lengths), 1)
    for field in sequence_fields + ["size"]:
      dtype = np.float32 if field == "size" else np.int64
      out = np.zeros((len(users), width), dtype)
      for row, user in enumerate(users):
        values = user[prefix].get(field, np.ones(lengths[row]) if field == "size" else None)
        out[row, :lengths[row]] = values
      arrays[f"{prefix}_{field}"] = out
    arrays[f"{prefix}_length"] = np.asarray(lengths, np.int32)
  counts = {len(u["candidates"][schema.ITEM_ID]) for u in users}
  if len(counts) != 1:
    raise ValueError(f"every row needs the same number of candidates, got {sorted(counts)}")
  for field in (f for f in users[0]["candidates"] if f != features.DENSE):
    arrays[f"candidate_{field}"] = np.asarray([u["candidates"][field] for u in users], np.int64)
  arrays[CANDIDATE_DENSE] = np.asarray([u["candidates"][features.DENSE] for u in users],
                                       np.float32).reshape(len(users), counts.pop(), -1)
  return arrays


class TwinClient:
  """Predict / GetModelMetadata / GetModelStatus over gRPC, and :predict over REST."""

  def __init__(self, target: str = "127.0.0.1:8500", model_name: str = "twin",
               timeout: float = 10.0, retries: int = 3, backoff: float = 0.2,
               rest_url: str | None = None):
    self.model_name, self.timeout, self.retries, self.backoff = model_name, timeout, retries, \
        backoff
    self.rest_url = rest_url
    self._channel = grpc.insecure_channel(target, options=[  # TF Serving's limit: INT_MAX
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_receive_message_length", 2**31 - 1)])
    self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

  def _call(self, method, request):
    for attempt in range(self.retries + 1):
      try:
        return method(request, timeout=self.timeout)
      except grpc.RpcError as error:
        code = error.code()
        if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
          time.sleep(self.backoff * 2 ** attempt)
          continue
        raise _error(code.name, error.details()) from None
    raise AssertionError("unreachable")

  def _spec(self, spec, version, signature=None):
    spec.name = self.model_name
    if version:
      spec.version.value = version
    if signature:
      spec.signature_name = signature

  def predict(self, arrays: dict, signature: str = "serving_default",
              version: int | None = None) -> np.ndarray:
    """Scores of a request (serving_default or esu layout)."""
    return self.predict_with_version(arrays, signature, version)[0]

  def predict_with_version(self, arrays: dict, signature: str = "serving_default",
                           version: int | None = None) -> tuple[np.ndarray, int]:
    """(scores, the version that answered)."""
    outputs, answered = self.predict_outputs(arrays, signature, version)
    return outputs["scores"], answered

  def predict_outputs(self, arrays: dict, signature: str, version: int | None = None
                      ) -> tuple[dict[str, np.ndarray], int]:
    """(every output of `signature`, the version that answered)."""
    request = predict_pb2.PredictRequest()
    self._spec(request.model_spec, version, signature)
    for name, value in arrays.items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = self._call(self._predictions.Predict, request)
    outputs = {name: tf.make_ndarray(value) for name, value in response.outputs.items()}
    return outputs, response.model_spec.version.value

  def metadata(self, version: int | None = None):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    self._spec(request.model_spec, version)
    response = self._call(self._predictions.GetModelMetadata, request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    return response.model_spec.version.value, signatures

  def status(self):
    request = get_model_status_pb2.GetModelStatusRequest()
    self._spec(request.model_spec, None)
    return self._call(self._models.GetModelStatus, request)

  def predict_rest(self, arrays: dict, signature: str = "serving_default",
                   version: int | None = None) -> np.ndarray:
    """The same over REST: POST /v1/models/{name}[/versions/{v}]:predict (columnar)."""
    if not self.rest_url:
      raise ValueError("TwinClient(rest_url=...) is needed for REST")
    path = f"/v1/models/{self.model_name}" + (f"/versions/{version}" if version else "")
    body = json.dumps({"signature_name": signature,
                       "inputs": {k: np.asarray(v).tolist() for k, v in arrays.items()}})
    request = urllib.request.Request(f"{self.rest_url}{path}:predict", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        return np.asarray(json.loads(response.read())["outputs"]["scores"], np.float32)
    except urllib.error.HTTPError as error:
      message = json.loads(error.read() or b"{}").get("error", str(error))
      code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}.get(error.code, "UNKNOWN")
      raise _error(code, message) from None

  def close(self) -> None:
    self._channel.close()
