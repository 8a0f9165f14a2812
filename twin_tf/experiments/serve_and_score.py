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


def scored_user(data, max_candidates: int) -> tuple[int, str | None]:
  """(row, None) of the user with the most clusters among those whose first max_candidates
  test impressions hold both labels (an AUC needs both); without any such user, (the row of
  the user with the most clusters, why no AUC exists)."""
  imp = data.impressions["test"]
  first = np.zeros(len(imp[schema.LABEL]), bool)
  for row in np.unique(imp["user_row"]):
    first[np.flatnonzero(imp["user_row"] == row)[:max_candidates]] = True
  users = len(data.user_ids)
  positives = np.bincount(imp["user_row"][first], imp[schema.LABEL][first], minlength=users)
  counts = np.bincount(imp["user_row"][first], minlength=users)
  both = (positives > 0) & (positives < counts)
  if not both.any():
    return int(np.argmax(data.cluster_len)), ("no user's test impressions hold both labels: "
                                              "AUC is undefined")
  return int(np.argmax(np.where(both, data.cluster_len, -1))), None


def score_user(model_base_path: str, examples: str, key_cache_dir: str, reference_time: int,
               max_candidates: int = 100, version: int | None = None) -> dict:
  """Serves `version` of the model (None: the latest) and scores one user's test candidates
  three ways (in-model GSU, client-side exact and ScaNN GSU over the key cache)."""
  data = load_example_data(examples)
  imp = data.impressions["test"]
  row, reason = scored_user(data, max_candidates)
  picked = np.flatnonzero(imp["user_row"] == row)[:max_candidates]
  candidates = requests.candidates_of(data, picked)
  request, short = requests.user_request(data, row, candidates, reference_time,
                                         data.num_pre_cutoff[row])

  server = DevServer(model_base_path, "twin", version=version)
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
          "auc": {k: None if reason else metrics.auc(labels, v) for k, v in by_way.items()},
          **({"auc_reason": reason} if reason else {}),
          "max_abs_diff_vs_serving_default": {
              k: float(np.abs(v - in_model).max()) for k, v in by_way.items()}}



def serve_and_score(work: pathlib.Path, examples: pathlib.Path, reference_time: int,
                    version: int) -> dict:
  """score_user over the main job's folders, serving the job's own exported `version` (a
  later export into the same base path, as the README shows, leaves the check as it was);
  prints and returns its figures."""
  result = score_user(str(work / "serving" / "twin"), str(examples), str(work / "key_cache"),
                      reference_time, version=version)
  aucs = result.get("auc_reason") or ", ".join(f"{k} AUC {v:.4f}"
                                                for k, v in result["auc"].items())
  print(f"user {result['user_id']} ({result['clusters']} clusters), {result['candidates']} "
        f"test candidates over gRPC (DEVELOPMENT server): {aucs}")
  print("largest score difference to serving_default: " + ", ".join(
      f"{k} {v:.2e}" for k, v in result["max_abs_diff_vs_serving_default"].items()))
  return result
