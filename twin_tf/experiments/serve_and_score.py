"""Main-job stage: start the DEVELOPMENT server on the exported model, score one real user's
test candidates over gRPC three ways, stop the server (all in this process; client and
server still talk over a real gRPC channel on 127.0.0.1).

  serving_default     the GSU inside the model (exact top-100)
  ClientSideGsu exact the key cache + exact retrieval + the esu signature
  ClientSideGsu scann the key cache + ScaNN + the esu signature
The user is the one with the most clusters; candidates are their test impressions. Returns
the user, the candidates, AUC of each way on those impressions, largest score differences.
"""

from __future__ import annotations

import pathlib

import numpy as np

from serving.client import TwinClient
from serving.dev_server import DevServer
from serving.gsu import ClientSideGsu
from twin_tf.data import schema
from twin_tf.export import requests
from twin_tf.training import metrics
from twin_tf.training.input_pipeline import load_example_data


def score_user(model_base_path: str, examples: str, key_cache_dir: str, reference_time: int,
               max_candidates: int = 100) -> dict:
  data = load_example_data(examples)
  row = int(np.argmax(data.cluster_len))
  imp = data.impressions["test"]
  picked = np.flatnonzero(imp["user_row"] == row)[:max_candidates]
  candidates = requests.candidates_of(data, picked)
  request, short = requests.user_request(data, row, candidates, reference_time,
                                         data.num_pre_cutoff[row])

  server = DevServer(model_base_path, "twin")
  port, _ = server.start()
  client = TwinClient(f"127.0.0.1:{port}")
  try:
    in_model = client.predict(request)[0]
    gsu = ClientSideGsu(client, key_cache_dir)
    user_id = int(data.user_ids[row])
    by_way = {"serving_default": in_model,
              "client_gsu_exact": gsu.score(user_id, candidates, short, reference_time),
              "client_gsu_scann": gsu.score(user_id, candidates, short, reference_time,
                                            "scann")}
  finally:
    client.close()
    server.stop()
  labels = imp[schema.LABEL][picked]
  return {"user_id": user_id, "clusters": int(data.cluster_len[row]),
          "candidates": int(len(picked)),
          "auc": {k: metrics.auc(labels, v) for k, v in by_way.items()},
          "max_abs_diff_vs_serving_default": {
              k: float(np.abs(v - in_model).max()) for k, v in by_way.items()}}



def serve_and_score(work: pathlib.Path, examples: pathlib.Path, reference_time: int) -> dict:
  """score_user over the main job's folders; prints and returns its figures."""
  result = score_user(str(work / "serving" / "twin"), str(examples), str(work / "key_cache"),
                      reference_time)
  print(f"user {result['user_id']} ({result['clusters']} clusters), {result['candidates']} "
        "test candidates over gRPC (DEVELOPMENT server): " + ", ".join(
            f"{k} AUC {v:.4f}" for k, v in result["auc"].items()))
  print("largest score difference to serving_default: " + ", ".join(
      f"{k} {v:.2e}" for k, v in result["max_abs_diff_vs_serving_default"].items()))
  return result
