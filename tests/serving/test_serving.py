"""End to end: export -> development server (gRPC + REST) -> client, errors, load with a new
version published mid-run. The server is the development server, not TF Serving."""

import concurrent.futures
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving import dev_server
from serving.client import InvalidRequestError, ModelNotFoundError, TwinClient, pad_request
from twin_tf.data.feature_spec import MOVIELENS
from twin_tf.export import requests, saved_model
from twin_tf.training.input_pipeline import DatasetBuilder, load_example_data
from twin_tf.training.trainer import TrainConfig, restore_model, train


@pytest.fixture(scope="module")
def served(real_examples, tmp_path_factory):
  data = load_example_data(real_examples[0])
  runs = []
  for seed in (0, 1):
    config = TrainConfig(examples=str(real_examples[0]), epochs=1, batch_size=64, seed=seed,
                         output_dir=str(tmp_path_factory.mktemp(f"run{seed}")))
    train(config, data, verbose=0)
    runs.append(config)
  base = tmp_path_factory.mktemp("serving")
  saved_model.export_saved_model(runs[0].output_dir, base / "twin")
  server = dev_server.DevServer(base / "twin", "twin", poll_seconds=0.2)
  grpc_port, rest_port = server.start()
  client = TwinClient(f"127.0.0.1:{grpc_port}", rest_url=f"http://127.0.0.1:{rest_port}")
  yield dict(data=data, runs=runs, base=base, server=server, client=client)
  client.close()
  server.stop()


def _request(data, count=6):
  return requests.impression_requests(data, np.arange(count))[0]


def test_grpc_and_rest_agree_with_the_keras_model(served):
  data, client = served["data"], served["client"]
  model, _, _ = restore_model(served["runs"][0].output_dir)
  dataset, order = DatasetBuilder(data, "clusters").dataset("test", 8)
  inputs, _ = next(iter(dataset))
  arrays, _ = requests.impression_requests(data, order[:8])
  expected = model(inputs).numpy()
  np.testing.assert_allclose(client.predict(arrays)[:, 0], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(client.predict_rest(arrays)[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_metadata_and_status(served):
  version, signatures = served["client"].metadata()
  assert version == 1
  assert {"serving_default", "esu", "item_keys"} <= set(signatures.signature_def)
  status = served["client"].status()
  assert status.model_version_status[0].state == 30  # AVAILABLE


def test_pad_request_builds_the_signature_layout(served):
  arrays = _request(served["data"], 2)
  users = []
  for row in range(2):
    user = {"long": {}, "short": {}, "candidates": {}}
    for prefix in ("long", "short"):
      n = arrays[f"{prefix}_length"][row]
      for field in MOVIELENS.sequence_fields + ("size",):
        user[prefix][field] = arrays[f"{prefix}_{field}"][row, :n]
    for field in MOVIELENS.candidate_fields:
      user["candidates"][field] = arrays[f"candidate_{field}"][row]
    user["candidates"]["dense"] = arrays[saved_model.CANDIDATE_DENSE][row].tolist()
    users.append(user)
  padded = pad_request(users, arrays["request_time"])
  np.testing.assert_allclose(served["client"].predict(padded), served["client"].predict(arrays),
                             rtol=1e-6)


@pytest.mark.parametrize("mutate,error,words", [
    (lambda a: a.pop("long_size"), InvalidRequestError, "missing ['long_size']"),
    (lambda a: a.update(bogus=np.zeros(6, np.int64)), InvalidRequestError, "extra ['bogus']"),
    (lambda a: a.update(long_size=a["long_size"].astype(np.float64)), InvalidRequestError,
     "'long_size': dtype float64"),
    (lambda a: a.update(request_time=a["request_time"][:, None]), InvalidRequestError,
     "'request_time': rank 2"),
    (lambda a: a["long_size"].__setitem__((0, 0), np.nan), InvalidRequestError,
     "'long_size': NaN"),
    (lambda a: a["candidate_item_id"].__setitem__((0, 0), -5), InvalidRequestError,
     "'candidate_item_id': negative"),
    (lambda a: a.update(long_length=a["long_length"] + 10_000), InvalidRequestError,
     "'long_length': a length exceeds"),
    (lambda a: [a.update({k: a[k][:, :0]}) for k in list(a) if k.startswith("candidate_")],
     InvalidRequestError, "no candidates"),
    (lambda a: a.update(long_group=a["long_group"][:, 1:]), InvalidRequestError,
     "'long_group': shape"),
    (lambda a: a.update(candidate_category=np.repeat(a["candidate_category"], 2, axis=1)),
     InvalidRequestError, "'candidate_category': shape"),
    (lambda a: a.update(candidate_dense=a["candidate_dense"][:, :, :3]), InvalidRequestError,
     "'candidate_dense': shape"),
    (lambda a: a["long_group"].__setitem__((0, 0), 100), InvalidRequestError,
     "'long_group': values above 10"),
    (lambda a: a["short_tagged"].__setitem__((0, -1), 7), InvalidRequestError,
     "'short_tagged': values above 1"),
    (lambda a: a["long_size"].__setitem__((0, 0), 0.0), InvalidRequestError,
     "'long_size': sizes must be > 0"),
    (lambda a: [a.update({k: v[:0]}) for k, v in list(a.items())], InvalidRequestError,
     "empty batch"),
])
def test_bad_requests_are_refused_precisely(served, mutate, error, words):
  arrays = _request(served["data"])
  mutate(arrays)
  calls = [served["client"].predict]
  if "dtype" not in words:  # JSON carries no dtype: REST converts to the signature's, as TF Serving
    calls.append(served["client"].predict_rest)
  for call in calls:
    with pytest.raises(error) as raised:
      call(arrays)
    assert words in raised.value.message
  assert served["client"].predict(_request(served["data"])).shape == (6, 1)  # still serving


@pytest.mark.parametrize("position, words", [
    (-2, "'long_chosen': values below -1"),
    (10_000, "'long_chosen': positions must be -1 or below long_length")])
def test_esu_positions_out_of_range_are_refused(served, position, words):
  """The esu signature's long_chosen: -1 (none) is scored, a position outside the user's
  clusters is INVALID_ARGUMENT naming it, over gRPC and REST."""
  arrays = _request(served["data"])
  arrays["long_chosen"] = requests.every_position_chosen(arrays)
  assert np.all(np.isfinite(served["client"].predict(arrays, signature="esu")))
  arrays["long_chosen"][0, 0, 0] = position
  for call in (served["client"].predict, served["client"].predict_rest):
    with pytest.raises(InvalidRequestError) as raised:
      call(arrays, signature="esu")
    assert words in raised.value.message


@pytest.mark.parametrize("mutate, words", [
    (lambda a: None, None),
    (lambda a: a.update(long_keys=a["long_keys"][:, 1:]), "'long_keys': shape"),
    (lambda a: a["long_value_heads"].__setitem__((0, 0, 0), np.nan),
     "'long_value_heads': NaN or infinity")])
def test_esu_cached_checks_the_projections_beside_the_clusters(served, mutate, words):
  """esu_cached's long_keys and long_value_heads are (B, U, width) beside the clusters'
  (B, U): a request with them is scored, one with a row too few or a NaN is INVALID_ARGUMENT
  naming it."""
  arrays = _request(served["data"])
  arrays["long_chosen"] = requests.every_position_chosen(arrays)
  width = arrays["long_size"].shape
  for name in ("long_keys", "long_value_heads"):
    arrays[name] = np.zeros(width + (4 * 16,), np.float32)
  for f in MOVIELENS.candidate_fields:
    del arrays[f"long_{f}"]
  mutate(arrays)
  if words is None:
    assert np.all(np.isfinite(served["client"].predict(arrays, signature="esu_cached")))
    return
  with pytest.raises(InvalidRequestError) as raised:
    served["client"].predict(arrays, signature="esu_cached")
  assert words in raised.value.message


def test_unknown_signature_model_and_version(served):
  arrays = _request(served["data"])
  with pytest.raises(InvalidRequestError) as raised:
    served["client"].predict(arrays, signature="nope")
  assert raised.value.code == "FAILED_PRECONDITION"
  with pytest.raises(ModelNotFoundError):
    served["client"].predict(arrays, version=99)
  other = TwinClient(served["client"]._channel._channel.target().decode(), model_name="other")
  with pytest.raises(ModelNotFoundError):
    other.predict(arrays)
  other.close()


def test_out_of_vocabulary_ids_are_scored(served):
  arrays = _request(served["data"])
  arrays["candidate_item_id"][:] = 987_654_321
  arrays["long_item_id"][:] = 987_654_321
  scores = served["client"].predict(arrays)
  assert np.all((scores > 0) & (scores < 1))


def test_oversized_request_is_refused(served, monkeypatch):
  monkeypatch.setattr(dev_server, "MAX_REQUEST_ELEMENTS", 100)
  with pytest.raises(InvalidRequestError, match="over the limit"):
    served["client"].predict(_request(served["data"]))


def test_new_version_mid_load_fails_no_request(served):
  """8 clients x 200 requests; version 2 is published (atomically) in the middle. Every
  response must equal the scores of the version that says it answered."""
  client, base = served["client"], served["base"]
  arrays = _request(served["data"])
  expected = {1: client.predict(arrays)}
  publish_at, total = 400, 8 * 200
  done = []

  def worker(_):
    out = []
    for _ in range(200):
      out.append(client.predict_with_version(arrays))
      done.append(1)
      if len(done) == publish_at:
        saved_model.export_saved_model(served["runs"][1].output_dir, base / "twin", version=2)
    return out

  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = [r for chunk in pool.map(worker, range(8)) for r in chunk]
  assert len(results) == total
  model, _, _ = restore_model(served["runs"][1].output_dir)
  versions = {v for _, v in results}
  assert 1 in versions
  for scores, version in results:
    if version == 1:
      np.testing.assert_allclose(scores, expected[1], rtol=1e-6)
  print("responses by version:", {v: sum(1 for _, w in results if w == v) for v in versions})
  for _ in range(100):  # the server moves to version 2 (if the run ended before it loaded)
    if client.predict_with_version(arrays)[1] == 2:
      break
    time.sleep(0.1)
  else:
    pytest.fail("version 2 was never served")
  if 2 in versions:
    second = [s for s, v in results if v == 2]
    assert all(np.allclose(s, second[0], rtol=1e-6) for s in second)
    assert not np.allclose(second[0], expected[1], rtol=1e-6)
  del model
  shutil.rmtree(base / "twin" / "2")


def test_client_retries_unavailable_then_raises():
  """No server on the port: the bounded retries end in a ServingError with UNAVAILABLE."""
  import socket

  from serving.client import ServingError
  with socket.socket() as sock:  # a free loopback port nobody listens on
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
  client = TwinClient(f"127.0.0.1:{port}", timeout=1.0, retries=2, backoff=0.05)
  start = time.perf_counter()
  with pytest.raises(ServingError) as raised:
    client.predict({"request_time": np.zeros(1, np.int64)})
  assert raised.value.code == "UNAVAILABLE"
  assert time.perf_counter() - start >= 0.05 + 0.1  # it waited between the attempts
  client.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_a_signal(served, signum):
  """`twin-tf serve` frees its ports and exits 0 on SIGTERM and Ctrl-C, without a traceback."""
  process = subprocess.Popen(
      [sys.executable, "-m", "twin_tf.cli", "serve",
       f"--model-base-path={served['base'] / 'twin'}", "--port=0", "--rest-port=0"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    for line in process.stdout:  # wait until it listens
      if "DEVELOPMENT server (not TF Serving): gRPC" in line:
        break
    process.send_signal(signum)
    out, err = process.communicate(timeout=30)
  finally:
    process.kill()
  assert process.returncode == 0, err[-2000:]
  assert "stopped" in out and "Traceback" not in err


def test_a_request_of_100k_clusters_passes_over_grpc(served):
  """About 5.6 MB on the wire: over gRPC's default 4 MiB, within TF Serving's limit."""
  arrays = _request(served["data"], 1)
  length = 100_000
  for field in MOVIELENS.sequence_fields:
    arrays[f"long_{field}"] = np.resize(arrays[f"long_{field}"], (1, length))
  arrays["long_size"] = np.ones((1, length), np.float32)
  arrays["long_length"] = np.array([length], np.int32)
  scores = served["client"].predict(arrays)
  assert scores.shape == (1, 1) and 0 < scores[0, 0] < 1


def test_a_malformed_tensor_proto_is_invalid_argument(served):
  from tensorflow_serving.apis import predict_pb2
  client = served["client"]
  for corrupt in ("short content", "unknown dtype"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "twin"
    for name, value in _request(served["data"]).items():
      request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    proto = request.inputs["long_size"]
    if corrupt == "short content":
      proto.tensor_content = proto.tensor_content[:5]
    else:
      proto.dtype = 999
    with pytest.raises(InvalidRequestError, match="'long_size': malformed TensorProto"):
      client._call(client._predictions.Predict, request)  # pylint: disable=protected-access


def _rest(served, method, path, body=None):
  """(HTTP status, JSON) of a raw REST call."""
  url = served["client"].rest_url + path
  data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
  request = urllib.request.Request(url, data=data, method=method)
  try:
    with urllib.request.urlopen(request, timeout=30) as response:
      return response.status, json.loads(response.read())
  except urllib.error.HTTPError as error:
    return error.code, json.loads(error.read())


@pytest.mark.parametrize("body, words", [
    ([1, 2], "JSON object"),
    ("text", "JSON object"),
    ({"inputs": [1, 2]}, "JSON object"),
    (b"{not json", "not JSON"),
])
def test_rest_refuses_malformed_bodies_with_400(served, body, words):
  status, answer = _rest(served, "POST", "/v1/models/twin:predict", body)
  assert status == 400 and words in answer["error"]


def test_rest_refuses_values_that_would_change_on_the_way(served):
  arrays = {k: np.asarray(v).tolist() for k, v in _request(served["data"]).items()}
  rows = len(arrays["request_time"])
  for name, value, words in (("candidate_item_id", [[2**70]] * rows, "beyond int64"),
                             ("candidate_item_id", [[1.5]] * rows, "fractional"),
                             ("request_time", ["soon"] * rows, "must be numbers")):
    status, answer = _rest(served, "POST", "/v1/models/twin:predict",
                           {"inputs": {**arrays, name: value}})
    assert status == 400 and words in answer["error"], (name, answer)


def test_rest_status_metadata_and_unknown_model(served):
  status, answer = _rest(served, "GET", "/v1/models/twin")
  assert status == 200 and answer["model_version_status"][0]["state"] == "AVAILABLE"
  status, answer = _rest(served, "GET", "/v1/models/twin/metadata")
  assert status == 200 and "serving_default" in answer["metadata"]["signature_def"][
      "signatureDef"]
  status, _ = _rest(served, "POST", "/v1/models/other:predict",
                    {"signature_name": "nope", "inputs": {}})
  assert status == 404  # the unknown model is named first, as TF Serving does


def test_a_new_version_is_warmed_before_it_serves(served, caplog):
  """The export writes warmup requests for every signature; the store replays them before
  the version takes traffic, so no client pays for its first calls."""
  base = served["base"] / "twin"
  data = served["data"]
  version = saved_model.export_saved_model(
      served["runs"][1].output_dir, base, version=5,
      warmup_requests=requests.warmup_requests(data, 2, "twin"))
  signatures = [r.model_spec.signature_name for r in saved_model.read_warmup(version)]
  assert sorted(set(signatures)) == ["cluster_bias", "esu", "esu_cached", "item_keys",
                                     "serving_default"]
  store = dev_server.VersionStore(base)
  with caplog.at_level(logging.INFO, logger="twin_tf.dev_server"):
    store.refresh()
  assert store.get().version == 5
  assert "after 10 warmup requests" in caplog.text
  shutil.rmtree(version)


def test_a_broken_version_is_logged_once_and_the_previous_keeps_serving(served, caplog):
  base = served["base"] / "twin"
  store = dev_server.VersionStore(base)
  store.refresh()
  broken = base / "7"
  broken.mkdir()
  (broken / "saved_model.pb").write_bytes(b"not a saved model")
  try:
    with caplog.at_level(logging.INFO, logger="twin_tf.dev_server"):
      for _ in range(3):
        store.refresh()
    assert caplog.text.count("could not load") == 1
    assert store.get().version == 1
  finally:
    shutil.rmtree(broken)


def test_an_abandoned_export_folder_is_removed_by_the_next_export(served, tmp_path):
  base = tmp_path / "twin"
  base.mkdir()
  abandoned = base / ".tmp-3-999999999-dead"  # no such process
  running = base / f".tmp-4-{os.getpid()}-live"
  abandoned.mkdir()
  running.mkdir()
  saved_model.export_saved_model(served["runs"][0].output_dir, base)
  assert not abandoned.exists() and running.exists()


MUTATIONS = ("value", "dtype", "drop_axis", "shrink_axis", "nan", "drop_input")
SIGNATURE_INPUTS = ("request_time", "long_item_id", "long_category", "long_year_bucket",
                    "long_group", "long_tagged", "long_timestamp", "long_size", "long_length",
                    "short_item_id", "short_group", "short_tagged", "short_size",
                    "short_length", "candidate_item_id", "candidate_category",
                    saved_model.CANDIDATE_DENSE)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(SIGNATURE_INPUTS), mutation=st.sampled_from(MUTATIONS),
       value=st.integers(min_value=-3, max_value=2**62), where=st.integers(0, 10**6),
       rest=st.booleans())
def test_any_mutated_request_is_scored_or_refused_as_invalid(served, name, mutation, value,
                                                             where, rest):
  """Property-based: a valid request with one input mutated is either scored (finite scores
  of the right shape) or refused with INVALID_ARGUMENT, over gRPC and REST; never UNKNOWN."""
  arrays = _request(served["data"], 2)
  array = arrays[name]
  if mutation == "value":
    flat = array.reshape(-1).copy()
    flat[where % flat.size] = min(value, np.iinfo(flat.dtype).max) if flat.dtype.kind == "i" \
        else value
    arrays[name] = flat.reshape(array.shape).astype(array.dtype)
  elif mutation == "dtype":
    arrays[name] = array.astype(np.int32 if array.dtype != np.int32 else np.int64)
  elif mutation == "drop_axis":
    arrays[name] = array[..., 0] if array.ndim > 1 else array[:, None]
  elif mutation == "shrink_axis":
    axis = where % array.ndim
    arrays[name] = np.take(array, range(max(array.shape[axis] - 1, 0)), axis=axis)
  elif mutation == "nan" and array.dtype.kind == "f":
    arrays[name] = np.where(np.arange(array.size).reshape(array.shape) == where % array.size,
                            np.nan, array).astype(array.dtype)
  elif mutation == "drop_input":
    del arrays[name]
  client = served["client"]
  if rest and mutation == "dtype":
    return  # JSON carries no dtype
  try:
    scores = (client.predict_rest if rest else client.predict)(arrays)
  except InvalidRequestError as error:
    assert error.code == "INVALID_ARGUMENT", error
    return
  assert scores.shape == (2, 1) and np.all(np.isfinite(scores))


def _proto_request(served, name, proto):
  from tensorflow_serving.apis import predict_pb2
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "twin"
  for key, value in _request(served["data"]).items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  request.inputs[name].CopyFrom(proto)
  return request


@pytest.mark.parametrize("shape, values, words", [
    ((2, 2**44), (), "declares 35,184,372,088,832 values"),  # a few bytes, 256 TiB declared
    ((2, 2**40), (5,), "declares"),  # one value spread over 2^41
    ((2, -3), (), "negative dimension"),
    (None, (), "unknown rank"),
])
def test_a_tensor_proto_is_sized_before_it_is_allocated(served, shape, values, words):
  """These were answered UNKNOWN ("Unable to allocate 256 TiB") or scored."""
  from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
  proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=list(values))
  if shape is None:
    proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(unknown_rank=True))
  else:
    proto.tensor_shape.dim.extend([tensor_shape_pb2.TensorShapeProto.Dim(size=s)
                                   for s in shape])
  client = served["client"]
  with pytest.raises(InvalidRequestError, match=f"'long_item_id'.*{words}"):
    client._call(client._predictions.Predict,  # pylint: disable=protected-access
                 _proto_request(served, "long_item_id", proto))


def test_a_version_label_is_refused_not_ignored(served):
  client = served["client"]
  request = _proto_request(served, "request_time",
                           tf.make_tensor_proto(_request(served["data"])["request_time"]))
  request.model_spec.version_label = "nope"
  with pytest.raises(InvalidRequestError, match="version_label 'nope'"):
    client._call(client._predictions.Predict, request)  # pylint: disable=protected-access


@pytest.mark.parametrize("body, words", [
    ({"signature_name": ["serving_default"], "inputs": {}}, "signature_name must be a string"),
    ({"signature_name": {"a": 1}, "inputs": {}}, "signature_name must be a string"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    ({"inputs": {"no_such_input": [[1, 2], [3]]}}, "extra ['no_such_input']"),
])
def test_rest_answers_400_not_500_for_these_bodies(served, body, words):
  status, answer = _rest(served, "POST", "/v1/models/twin:predict", body)
  assert status == 400 and words in answer["error"], answer


@pytest.mark.parametrize("length", ["-5", "abc", str(10**14)])
def test_rest_answers_400_for_a_bad_content_length(served, length):
  import http.client
  connection = http.client.HTTPConnection("127.0.0.1", served["server"].rest_port, timeout=30)
  connection.putrequest("POST", "/v1/models/twin:predict")
  connection.putheader("Content-Length", length)
  connection.endheaders()
  response = connection.getresponse()
  assert response.status == 400 and "Content-Length" in json.loads(response.read())["error"]
  connection.close()


def test_the_version_poller_survives_any_folder_name(served):
  """A folder named "²" (a digit to str.isdigit, not to int) killed the polling thread."""
  base = served["base"] / "twin"
  odd = base / "²"
  odd.mkdir()
  (odd / "saved_model.pb").write_bytes(b"")
  try:
    store = dev_server.VersionStore(base)
    store.refresh()
    assert store.get().version == 1
  finally:
    shutil.rmtree(odd)


def test_fuzzed_requests_get_no_server_side_error(served):
  """bench/fuzz.py at a small size (the reliability bench runs 10,000 cases): every
  generated malformed request over gRPC and REST is answered, and none with UNKNOWN /
  INTERNAL or an HTTP 5xx."""
  import importlib.util
  import pathlib
  path = pathlib.Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"
  spec = importlib.util.spec_from_file_location("bench_fuzz", path)
  fuzz = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(fuzz)
  server = served["server"]
  counts = fuzz.run_fuzz("127.0.0.1", server.port, server.rest_port, _request(served["data"], 2),
                         cases=400, seed=1)
  assert counts["unknown"] == counts["http_500"] == counts["no_answer"] == 0, \
      counts["examples"]
  assert counts["not_finite"] == 0, counts["examples"]
  assert counts["grpc"].get("INVALID_ARGUMENT", 0) > 50 and counts["rest"].get("400", 0) > 50
  assert counts["grpc"].get("OK", 0) > 0  # unmutated cases are scored
