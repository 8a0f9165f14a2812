"""Generated malformed requests against a running server, over gRPC and REST: what a client
can get wrong (inputs missing or extra, dtypes, ranks, shapes declared or real, values,
model specs, JSON bodies and depth, HTTP methods, paths and headers), each case a valid
request with up to three random changes. Counts every answer by status; a server-side
error for a client's mistake is gRPC UNKNOWN / INTERNAL or an HTTP 5xx.

  counts = run_fuzz("127.0.0.1", grpc_port, rest_port, base_arrays, cases=10_000)

Used by bench/reliability.py (`fuzz` in results/reliability.json) and tests/serving.
"""

from __future__ import annotations

import collections
import http.client
import json
import socket

import numpy as np

DTYPES = ("float16", "float32", "float64", "int8", "int32", "int64", "uint8", "uint64", "bool",
          "complex64", "str")
SIGNATURES = ("serving_default", "esu", "esu_cached", "item_keys", "cluster_bias", "", "nope",
              "__saved_model_init_op", "serving_default ")
EXTREMES = (np.nan, np.inf, -np.inf, -1, 0, 2**31, 2**62, -2**63, 1e38, 0.5)
SERVER_SIDE = ("UNKNOWN", "INTERNAL", "DATA_LOSS", "UNIMPLEMENTED")


def _pick(rng, options):
  """One of options (any mix of types; numpy's choice would make them one array)."""
  return options[int(rng.integers(len(options)))]


def _random_array(rng, dtype: str | None = None, shape=None):
  dtype = dtype or str(_pick(rng, DTYPES))
  shape = tuple(shape if shape is not None else rng.integers(0, 4, rng.integers(0, 4)))
  if dtype == "str":
    texts = [_pick(rng, [b"a", b"\xff\xfe", b"", b"12"]) for _ in range(int(np.prod(shape)))]
    return np.array(texts, dtype=object).reshape(shape)
  if dtype == "bool":
    return rng.integers(0, 2, shape).astype(bool)
  return (rng.standard_normal(shape) * 10 ** rng.integers(0, 6)).astype(dtype)


def _mutate_arrays(rng, arrays: dict) -> tuple[dict, str]:
  """One random change of a request's arrays; (arrays, what)."""
  arrays = dict(arrays)
  names = sorted(arrays)
  name = str(_pick(rng, names))
  value = arrays[name]
  kind = str(_pick(rng, ["drop", "extra", "dtype", "shape", "values", "batch", "empty",
                         "transpose", "scalar"]))
  if kind == "drop":
    del arrays[name]
  elif kind == "extra":
    arrays[str(_pick(rng, ["x", name + "_", "long_size ", "candidate_", ""]))] = \
        _random_array(rng)
  elif kind == "dtype":
    target = str(_pick(rng, DTYPES))
    arrays[name] = (_random_array(rng, "str", value.shape) if target == "str" else
                    np.nan_to_num(value).astype(target))
  elif kind == "shape":
    arrays[name] = _random_array(rng, str(value.dtype), rng.integers(0, 5, rng.integers(0, 5)))
  elif kind == "values" and value.size:
    value = value.copy()
    extreme = _pick(rng, EXTREMES)
    with np.errstate(all="ignore"):
      flat = value.reshape(-1)
      positions = rng.integers(0, value.size, rng.integers(1, 4))
      try:
        flat[positions] = extreme
      except (OverflowError, ValueError):
        flat[positions] = 0
    arrays[name] = value
  elif kind == "batch" and value.ndim:
    arrays[name] = np.concatenate([value, value[:1]], axis=0)
  elif kind == "empty" and value.ndim:
    arrays[name] = value[..., :0] if rng.random() < 0.5 else value[:0]
  elif kind == "transpose" and value.ndim >= 2:
    arrays[name] = np.ascontiguousarray(np.swapaxes(value, 0, -1))
  elif kind == "scalar":
    arrays[name] = np.asarray(value.reshape(-1)[:1].reshape(()) if value.size else 0)
  return arrays, f"{kind} {name}"


def _mutated(rng, arrays: dict) -> tuple[dict, list[str]]:
  """arrays after 0-2 changes of _mutate_arrays; (arrays, what each change was)."""
  what = []
  for _ in range(rng.integers(0, 3)):
    arrays, change = _mutate_arrays(rng, arrays)
    what.append(change)
  return arrays, what


def _listed(value: np.ndarray):
  """An array as JSON-able nested lists (text arrays flattened to strings)."""
  return value.tolist() if value.dtype != object else [str(v) for v in value.reshape(-1)]


def grpc_case(rng, arrays: dict, model_name: str):
  """A PredictRequest: 0-2 changes of arrays, then one change of its TensorProtos or its
  model spec (or none)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
  arrays, what = _mutated(rng, arrays)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  for name, value in arrays.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  kind = str(_pick(rng, ["none", "declared", "unknown_rank", "content", "spec", "version",
                         "label", "signature"]))
  names = sorted(request.inputs)
  proto = request.inputs[str(_pick(rng, names))] if names else None
  if kind == "declared" and proto is not None and proto.tensor_shape.dim:
    proto.tensor_shape.dim[int(rng.integers(0, len(proto.tensor_shape.dim)))].size = int(
        rng.choice([0, 1, 7, 2**20, 2**40, 2**62, -1, -5]))
  elif kind == "unknown_rank" and proto is not None:
    proto.tensor_shape.unknown_rank = True
  elif kind == "content" and proto is not None and proto.tensor_content:
    proto.tensor_content = proto.tensor_content[:int(rng.integers(0, len(
        proto.tensor_content)))] + bytes(rng.integers(0, 256, rng.integers(0, 9), np.uint8))
  elif kind == "spec":
    request.model_spec.name = str(_pick(rng, ["", "Twin", "twin ", "x" * 300, "\u00b2"]))
  elif kind == "version":
    request.model_spec.version.value = int(_pick(rng, [0, 2, 999, -1, 2**62]))
  elif kind == "label":
    request.model_spec.version_label = str(_pick(rng, ["stable", "", "1", "nope"]))
  elif kind == "signature":
    request.model_spec.signature_name = str(_pick(rng, SIGNATURES))
  what.append(kind)
  return request, ", ".join(what)


def _json_value(rng, value: np.ndarray):
  """A JSON-able value for an array, sometimes made wrong (ragged, text, null, huge)."""
  listed = _listed(value)
  kind = rng.integers(0, 10)
  if kind == 0 and isinstance(listed, list) and listed:
    return listed + [listed[0] if not isinstance(listed[0], list) else listed[0][:-1]]
  if kind == 1:
    return _pick(rng, ["abc", None, True, {}, [], [[]], [None], "1e400", 10**30])
  if kind == 2 and isinstance(listed, list):
    return [listed]
  return listed


def rest_case(rng, arrays: dict, model_name: str) -> tuple[str, str, dict, bytes, str]:
  """(method, path, headers, body, what): a :predict call, 0-2 changes of its arrays, a
  fifth of its values made wrong in JSON, then one change of its JSON, path, method or
  headers (or none)."""
  arrays, what = _mutated(rng, arrays)
  inputs = {}
  for name, value in arrays.items():
    with np.errstate(all="ignore"):
      inputs[name] = _json_value(rng, value) if rng.random() < 0.2 else _listed(value)
  document = {"signature_name": "serving_default", "inputs": inputs}
  method, path = "POST", f"/v1/models/{model_name}:predict"
  kind = str(_pick(rng, ["none", "json", "deep", "shape", "signature", "path", "method",
                         "length", "bytes", "instances"]))
  body = None
  if kind == "json":
    body = json.dumps(document, default=str)[:int(rng.integers(0, 200))].encode()
  elif kind == "deep":
    depth = int(_pick(rng, [100, 1000, 10**4, 10**5]))
    document["inputs"][str(_pick(rng, sorted(inputs) or ["x"]))] = None  # nested below
    nested = "[" * depth + "1" + "]" * depth
    body = json.dumps(document, default=str).replace("null", nested).encode()
  elif kind == "shape":
    document = _pick(rng, [[], "x", 1, None, {"inputs": []}, {"inputs": "x"}, {"inputs": None},
                           {"signature_name": "serving_default"}])
  elif kind == "signature":
    document["signature_name"] = _pick(rng, [None, 1, [], {}, "esu", "nope", True])
  elif kind == "path":
    path = str(_pick(rng, [
        f"/v1/models/{model_name}/versions/999:predict", f"/v1/models/{model_name}",
        f"/v1/models/{model_name}/versions/1:predict", "/v1/models/other:predict",
        f"/v1/models/{model_name}:classify", "/v1/models/../../etc/passwd:predict",
        f"/v1/models/{model_name}/versions/abc:predict", "/" + "a" * 70_000, "/",
        f"/v1/models/{model_name}:predict?x=1", f"/v1/models/{model_name}/metadata",
        "/v1/models/%00:predict", f"/v1/models/{model_name}/versions/{10**30}:predict"]))
  elif kind == "method":
    method = str(_pick(rng, ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"]))
  elif kind == "bytes":
    body = bytes(rng.integers(0, 256, rng.integers(0, 300), np.uint8))
  elif kind == "instances":
    document = {"instances": [inputs]}
  if body is None:
    with np.errstate(all="ignore"):
      body = json.dumps(document, default=str).encode()
  headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
  if kind == "length":
    headers["Content-Length"] = str(_pick(rng, ["-5", "abc", "", "1e3", str(10**14), "0",
                                                str(max(len(body) - 10, 0)), " 12", "\u0664"]))
  what.append(kind)
  return method, path, headers, body, ", ".join(what)


def _send_rest(host: str, port: int, method: str, path: str, headers: dict, body: bytes,
               timeout: float) -> int:
  """The HTTP status of one raw request (headers sent as given); 0 when no answer came."""
  lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
  lines += [f"{k}: {v}" for k, v in headers.items()]
  raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
  with socket.create_connection((host, port), timeout=timeout) as connection:
    try:
      connection.sendall(raw)
      connection.shutdown(socket.SHUT_WR)  # a short body ends here instead of waiting
    except OSError:  # the server may answer and close before reading a refused body (a
      pass  # broken pipe, then shutdown's "not connected"): its answer is still there to read
    response = http.client.HTTPResponse(connection, method=method)
    try:
      response.begin()
    except (http.client.HTTPException, OSError):
      return 0
    return response.status


def run_fuzz(host: str, grpc_port: int, rest_port: int, arrays: dict, cases: int,
             model_name: str = "twin", seed: int = 0, timeout: float = 30.0) -> dict:
  """`cases` requests, half over gRPC and half over REST, each a mutation of `arrays` (a
  valid serving_default request). Returns {"cases", "grpc": {status: count}, "rest":
  {http status: count}, "unknown" (gRPC UNKNOWN / INTERNAL / DATA_LOSS / UNIMPLEMENTED),
  "http_500" (any 5xx), "no_answer", "not_finite" (scored, but a score NaN or infinite),
  "examples": what produced those (at most 10)}."""
  import grpc  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  channel = grpc.insecure_channel(f"{host}:{grpc_port}",
                                  options=[("grpc.max_send_message_length", 2**31 - 1),
                                           ("grpc.max_receive_message_length", 2**31 - 1)])
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  grpc_counts, rest_counts = collections.Counter(), collections.Counter()
  examples = []
  for case in range(cases):
    if case % 2 == 0:
      request, what = grpc_case(rng, arrays, model_name)
      try:
        response = stub.Predict(request, timeout=timeout)
        finite = all(np.all(np.isfinite(tf.make_ndarray(v)))
                     for v in response.outputs.values())
        status = "OK" if finite else "OK_NOT_FINITE"
      except grpc.RpcError as error:
        status = error.code().name
      grpc_counts[status] += 1
      bad = status in SERVER_SIDE or status in ("DEADLINE_EXCEEDED", "OK_NOT_FINITE")
    else:
      method, path, headers, body, what = rest_case(rng, arrays, model_name)
      try:
        status = _send_rest(host, rest_port, method, path, headers, body, timeout)
      except OSError:
        status = 0
      rest_counts[str(status)] += 1
      bad = status == 0 or status >= 500
    if bad and len(examples) < 10:
      examples.append(f"{'gRPC' if case % 2 == 0 else 'REST'} {status}: {what}")
  channel.close()
  return {"cases": cases, "grpc": dict(grpc_counts), "rest": dict(rest_counts),
          "unknown": sum(grpc_counts[s] for s in SERVER_SIDE),
          "http_500": sum(n for s, n in rest_counts.items() if int(s) >= 500),
          "no_answer": rest_counts["0"] + grpc_counts["DEADLINE_EXCEEDED"],
          "not_finite": grpc_counts["OK_NOT_FINITE"],
          "examples": examples}
