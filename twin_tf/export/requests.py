"""Building TF Serving requests in the exported signatures' layout (saved_model.py)."""

from __future__ import annotations

import numpy as np

from twin_tf.data import schema
from twin_tf.export.saved_model import CANDIDATE_DENSE
from twin_tf.model import features
from twin_tf.training.input_pipeline import ExampleData


def impression_requests(data: ExampleData, impressions: np.ndarray, split: str = "test"):
  """serving_default arrays scoring impressions of `split`, one request row each.

  Long: the user's clusters; short: the 50 behaviors before the impression (valid ones first);
  candidate: the impression's item (C = 1). Returns (arrays, user rows).
  """
  imp = data.impressions[split]
  rows = imp["user_row"][impressions]
  width = max(int(data.cluster_len[rows].max()), 1)
  request = {"request_time": imp[schema.TIMESTAMP][impressions]}
  spec = data.spec
  for field in spec.sequence_fields:
    request[f"long_{field}"] = data.clusters[field][rows][:, :width]
  request["long_size"] = data.clusters[schema.CLUSTER_SIZE][rows][:, :width].astype(np.float32)
  request["long_length"] = data.cluster_len[rows].astype(np.int32)
  end = imp["history_end"][impressions]
  start = np.maximum(end - features.SHORT_LENGTH, 0)
  position = start[:, None] + np.arange(features.SHORT_LENGTH)[None]  # valid ones first
  for field in spec.sequence_fields:
    request[f"short_{field}"] = np.take_along_axis(
        data.history[field][rows], np.minimum(position, data.history[field].shape[1] - 1), 1)
  request["short_size"] = np.ones(position.shape, np.float32)
  request["short_length"] = (end - start).astype(np.int32)
  for field in spec.candidate_fields:
    request[f"candidate_{field}"] = imp[field][impressions][:, None]
  request[CANDIDATE_DENSE] = imp[features.DENSE][impressions][:, None, :]
  return request, rows


def warmup_requests(data: ExampleData, count: int, model_name: str) -> list:
  """PredictRequests for every signature (serving_default, esu, item_keys, cluster_bias) from
  the first `count` test impressions, so that a version is warm for all of them."""
  out = []
  for i in range(min(count, len(data.impressions["test"][schema.LABEL]))):
    arrays, _ = impression_requests(data, np.array([i]))
    chosen = {**arrays, features.CHOSEN: every_position_chosen(arrays)}
    items = {f: arrays[f"candidate_{f}"][0] for f in data.spec.candidate_fields}
    bias = {k: v for k, v in arrays.items() if k.startswith("long_") or k == "request_time"}
    out += [predict_request(arrays, model_name), predict_request(chosen, model_name, "esu"),
            predict_request(items, model_name, "item_keys"),
            predict_request(bias, model_name, "cluster_bias")]
  return out


def every_position_chosen(arrays: dict) -> np.ndarray:
  """long_chosen (B, C, L) of a serving_default request: every candidate chooses all of its
  user's valid positions (-1 after long_length); its esu request scores as serving_default
  does when L <= the GSU's top K."""
  length = arrays[f"long_{schema.ITEM_ID}"].shape[1]
  positions = np.arange(length, dtype=np.int32)
  chosen = np.where(positions < arrays["long_length"][:, None], positions, -1)  # (B, L)
  candidates = arrays[f"candidate_{schema.ITEM_ID}"].shape[1]
  return np.repeat(chosen[:, None, :], candidates, axis=1)


def predict_request(arrays: dict, model_name: str, signature: str = "serving_default"):
  """A tensorflow_serving PredictRequest with one input per array."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = model_name, signature
  for name, value in arrays.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  return request


def user_request(data: ExampleData, row: int, candidates: dict, request_time: int,
                 history_end: int) -> tuple[dict, dict]:
  """One user's serving_default arrays (B = 1) scoring C candidates.

  Long: the user's clusters; short: the SHORT_LENGTH behaviors before `history_end`;
  candidates: {f: (C,)} for data.spec.candidate_fields and {"dense": (C, D)} (candidates_of
  gives them for impressions). Returns (arrays, short {f: (S,)} as ClientSideGsu takes it).
  """
  length = data.cluster_len[row]
  short = {f: data.history[f][row, max(0, history_end - features.SHORT_LENGTH):history_end]
           for f in data.spec.sequence_fields}
  request = {"request_time": np.array([request_time], np.int64),
             "long_size": data.clusters[schema.CLUSTER_SIZE][row:row + 1, :length].astype(
                 np.float32),
             "long_length": np.array([length], np.int32),
             "short_size": np.ones((1, len(short[schema.ITEM_ID])), np.float32),
             "short_length": np.array([len(short[schema.ITEM_ID])], np.int32)}
  for f in data.spec.sequence_fields:
    request[f"long_{f}"] = data.clusters[f][row:row + 1, :length]
    request[f"short_{f}"] = short[f][None]
  for f in data.spec.candidate_fields:
    request[f"candidate_{f}"] = np.asarray(candidates[f])[None]
  request[CANDIDATE_DENSE] = np.asarray(candidates[features.DENSE], np.float32)[None]
  return request, short


def candidates_of(data: ExampleData, impressions: np.ndarray, split: str = "test") -> dict:
  """The candidate fields of impressions: {f: (C,)} for data.spec.candidate_fields, "dense":
  (C, D)."""
  imp = data.impressions[split]
  return {f: imp[f][impressions] for f in data.spec.candidate_fields + (features.DENSE,)}
