"""Benchmark: serving latency for one request of C = 200 candidates over L = 10^3, 10^4, 10^5
clusters, on real requests of a trained model whose attention is live.

The request is built from a trained run's own data (tiled_real_request): one real test user's
recent behaviors and request time, C distinct real test items as candidates, and L clusters
drawn from every user's real clusters (all of them once, then drawn again with replacement up
to L; MovieLens has about 8,000). Two models, both exports of the same trained run:
  live     the run as trained (the default TwinV2: normalized attention, every cluster can
           reach some candidate's top 100, so the GSU's bound pruning ranks all);
  current  the same weights with the query kernel scaled by 1e-4: the target term as small
           as in the models before normalized attention (dead attention), where the bound
           pruning ranks only ~100-140 clusters (today's model at the issue's filing).
Measured on one CPU core (process pinned, TensorFlow intra/inter-op threads 1, BLAS 1):
  in_process       serving_default called in process (exact: projects and ranks the clusters
                   per request);
  cached_exact     the exact path over cached keys (CachedKeysPath): the candidates' queries
                   from a warm QueryCache (the item_keys signature once per candidate, as
                   ClientSideGsu keeps them per model version), ExactRetriever (the (C x D) by
                   (D x L) product and an early-settling top-k, a block of candidates at a
                   time) over the user's cached GSU key vectors (item_keys + cluster_bias at
                   the request time, as beam_pipelines.cache_keys builds them offline), then
                   the esu_cached signature on the chosen clusters (`unique` of them), their
                   keys and value heads' inherent part from the cache, their cross features
                   computed;
                   max_abs_diff_from_in_process: its scores against serving_default's;
                   stages_p50_ms: where its time goes (CachedKeysPath.stage_timings): queries,
                   search, esu_request, esu_cached, and esu_cached_best_row_only (the call
                   with K = 1: the short-term module, the MLP, the checks);
  scann            the same with ScaNN (scann_config(L)) as the retriever; recall_at_100
                   against the exact top 100 of the same vectors, counting a found cluster whose
                   score ties the 100th (the drawn-again clusters are exact copies);
  dev_server_grpc  serving_default through the development server over gRPC (server and
                   client in this process: serialization both ways included);
  peak_fraction    the request's multiply-adds (request_macs: GSU and ESU products) over the
                   single-core rate of a plain matmul of the GSU's size (C x D by D x L),
                   divided by the path's p50: in peak_fraction_by_path for in_process and
                   cached_exact, the larger (the fastest exact path's) in peak_fraction.
`reaching`: clusters that can reach some candidate's top 100 by the GSU's bound.

  python bench/serving.py --run-dir work_dir/runs/TwinV2-seed0 [--clusters 1000 10000 100000]

Last line: {"candidates", "request", "peak_gmacs", "runs": [{"clusters", "model", "reaching",
"in_process": {"p50_ms", "p99_ms", "rps", "requests"}, "cached_exact": {...,
"max_abs_diff_from_in_process", "stages_p50_ms"}, "scann": {..., "recall_at_100", "mode"},
"dev_server_grpc": {...}, "peak_fraction", "peak_fraction_by_path"}, ...]}
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ[_name] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEAD_ATTENTION_SCALE = 1e-4


def tiled_real_request(data, clusters: int, candidates: int, seed: int = 0) -> dict:
  """serving_default arrays (B = 1) from real data (ExampleData): the test user with the
  most clusters gives the recent behaviors; C distinct test items (first occurrences) are the
  candidates; the long part is L clusters drawn from every user's clusters, each once before
  any is drawn again, in time order; the request comes one second after the latest."""
  from twin_tf.data import schema
  from twin_tf.export.requests import candidates_of, user_request
  test = data.impressions["test"]
  row = int(test["user_row"][np.argmax(data.cluster_len[test["user_row"]])])
  impression = int(np.flatnonzero(test["user_row"] == row)[-1])
  _, first = np.unique(test[schema.ITEM_ID], return_index=True)
  request, _ = user_request(data, row, candidates_of(data, np.sort(first)[:candidates]),
                            0, int(test["history_end"][impression]))
  valid = np.arange(data.clusters[schema.ITEM_ID].shape[1]) < data.cluster_len[:, None]
  pool = {f: v[valid] for f, v in data.clusters.items()}  # (N,) every user's clusters
  rng = np.random.default_rng(seed)
  count = len(pool[schema.ITEM_ID])
  drawn = np.concatenate([rng.permutation(count)[:clusters],
                          rng.integers(0, count, max(clusters - count, 0))])
  drawn = drawn[np.argsort(pool[schema.TIMESTAMP][drawn], kind="stable")]
  for field in data.spec.sequence_fields:
    request[f"long_{field}"] = pool[field][drawn][None].astype(np.int64)
  request["long_size"] = pool[schema.CLUSTER_SIZE][drawn][None].astype(np.float32)
  request["long_length"] = np.array([clusters], np.int32)
  request["request_time"] = np.array([int(pool[schema.TIMESTAMP].max()) + 1], np.int64)
  return request


def request_macs(model, clusters: int, candidates: int, ranked: int,
                 unique: int | None = None) -> tuple[int, int]:
  """Multiply-adds of the products of one request (B = 1), and the width of its GSU product.
  serving_default (unique None): the query's fold through W_h (summed_factors), the
  (C x `ranked`) product over D_h + 1 (ranked: the clusters the GSU multiplies, all of them
  unless its bound pruning pays), and the ESU's per-head scores and pooling of the K chosen
  rows of each candidate. Over cached keys, with `unique` clusters chosen by some candidate:
  the queries' projection, the (C x L) product over H d_k + 1, the esu_cached signature's
  value heads of the unique clusters' cross features (their keys and inherent value heads
  come from the cache), and its elementwise scores and pooling. The short-term module and
  the MLP (under 3% at L = 10^3) are left out."""
  config = model.config
  inherent = model.item_embedding.output_dim
  heads_dim = config.num_heads * config.key_dim
  values = inherent + model.cross_embedding.dim * len(model.cross_embedding.vocab_sizes)
  chosen = candidates * min(config.gsu_top_k, clusters)
  queries = candidates * heads_dim * inherent
  if unique is None:
    width = inherent + 1
    esu = chosen * values * 2 * config.num_heads + chosen * config.num_heads * values
    return int(queries + candidates * ranked * width + esu), width
  width = heads_dim + 1
  value_heads = config.num_heads * config.value_dim
  esu = unique * (values - inherent) * value_heads + chosen * (heads_dim + value_heads)
  return int(queries + candidates * clusters * width + esu), width


def peak_gmacs(tf, clusters: int, candidates: int, width: int) -> float:
  """Single-core multiply-adds per second (10^9) of a plain (C x D) x (D x L) float32 matmul:
  the faster of TensorFlow's and numpy's (the exact path over cached keys multiplies in
  numpy)."""
  from timing import timings
  rng = np.random.default_rng(0)
  a = rng.standard_normal((candidates, width)).astype(np.float32)
  b = rng.standard_normal((width, clusters)).astype(np.float32)
  x, y = tf.constant(a), tf.constant(b)
  matmul = tf.function(lambda x, y: tf.matmul(x, y))
  seconds = min(timings(lambda: matmul(x, y).numpy(), 50)["p50_ms"],
                timings(lambda: a @ b, 50)["p50_ms"]) / 1000
  return candidates * width * clusters / seconds / 1e9


def dead_attention_run(run_dir: str, folder: pathlib.Path) -> pathlib.Path:
  """A copy of the run whose query kernel is scaled by DEAD_ATTENTION_SCALE."""
  from twin_tf.training.trainer import restore_model
  copy = folder / "current-run"
  shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs"))
  model, _, _ = restore_model(copy)
  kernel = model.attention.query_projection.kernel
  kernel.assign(kernel * DEAD_ATTENTION_SCALE)
  model.save_weights(str(copy / "model.weights.h5"))
  return copy


class CachedKeysPath:
  """The paths over the user's cached GSU key vectors: the candidates' queries (a QueryCache
  over the item_keys signature) -> a retriever ("exact": ExactRetriever, one product and an
  early-settling top-k; "scann") -> the esu_cached signature on the clusters chosen, with
  their cached projections."""

  def __init__(self, version_dir: pathlib.Path, request: dict, spec):
    import tensorflow as tf

    from serving.gsu import QueryCache
    from twin_tf.data import schema
    from twin_tf.export.key_cache import ModelKeys, key_vectors
    from twin_tf.export.retrieval import ExactRetriever, ScannRetriever
    self.tf = tf
    keys = ModelKeys(version_dir)
    loaded = tf.saved_model.load(str(version_dir))
    self.item_keys, self.esu = loaded.signatures["item_keys"], loaded.signatures["esu_cached"]
    self.esu_inputs = set(self.esu.structured_input_signature[1])
    self._loaded = loaded
    self.clusters = {f: request[f"long_{f}"][0] for f in spec.sequence_fields}
    items = keys.item_keys({f: self.clusters[f] for f in spec.candidate_fields})
    self.clusters[schema.CLUSTER_SIZE] = request["long_size"][0]
    self.vectors = key_vectors(items["keys"], keys.cluster_bias(
        self.clusters, int(request["request_time"][0])))
    self.value_vectors = items["value_heads"]
    self.retrievers = {"exact": ExactRetriever(self.vectors),
                       "scann": ScannRetriever(self.vectors)}
    self.candidates = {f: request[f"candidate_{f}"][0] for f in spec.candidate_fields}
    self.query_cache = QueryCache(lambda arrays, _: self.item_keys(**{
        f: tf.constant(v) for f, v in arrays.items()})["queries"].numpy())
    self.fixed = {k: tf.constant(v) for k, v in request.items() if not k.startswith("long_")}

  def queries(self) -> np.ndarray:
    return self.query_cache.vectors(self.candidates, 1)

  def score(self, retriever: str) -> np.ndarray:
    """(C,) scores of the candidates over the clusters the retriever chose, (C, K)."""
    chosen = self.retrievers[retriever].search(self.queries())
    return self.esu(**self._esu_inputs(chosen))["scores"].numpy()[0]

  def _esu_inputs(self, chosen: np.ndarray) -> dict:
    """The esu_cached request's tensors for the (C, K) clusters chosen."""
    from serving.gsu import esu_long_inputs
    inputs = dict(self.fixed)
    inputs.update({k: self.tf.constant(v) for k, v in esu_long_inputs(
        self.clusters, chosen, (self.vectors, self.value_vectors)).items()
                   if k in self.esu_inputs})
    return inputs

  def stage_timings(self, requests: int) -> dict:
    """p50 ms of each step of score("exact"), timed within the same requests in sequence (a
    step sees the caches the one before it left): the queries, the exact search (product and
    top-k), the esu_cached request's arrays and tensors, the esu_cached call; and that call
    with each candidate's best cluster alone (K = 1: what does not grow with the chosen rows,
    timed on its own)."""
    import time

    from timing import timings
    steps, warmup = ("queries", "search", "esu_request", "esu_cached"), 5
    seconds = {step: [] for step in steps}
    for _ in range(warmup + requests):
      marks = [time.perf_counter()]
      queries = self.queries()
      marks.append(time.perf_counter())
      chosen = self.retrievers["exact"].search(queries)
      marks.append(time.perf_counter())
      inputs = self._esu_inputs(chosen)
      marks.append(time.perf_counter())
      self.esu(**inputs)["scores"].numpy()
      marks.append(time.perf_counter())
      for step, start, end in zip(steps, marks, marks[1:]):
        seconds[step].append(end - start)
    out = {step: round(float(np.percentile(v[warmup:], 50)) * 1000, 2)
           for step, v in seconds.items()}
    best = self._esu_inputs(chosen[:, :1])
    out["esu_cached_best_row_only"] = timings(lambda: self.esu(**best)["scores"].numpy(),
                                              requests)["p50_ms"]
    return out

  def recall_at_100(self) -> float:
    """Mean share per candidate of ScaNN's 100 whose exact score reaches the exact 100th."""
    queries = self.queries()
    scores = queries @ self.vectors.T  # (C, L)
    exact = self.retrievers["exact"].search(queries, 100)
    kth = np.take_along_axis(scores, exact[:, -1:], axis=1)  # (C, 1)
    found = np.take_along_axis(scores, self.retrievers["scann"].search(queries), axis=1)
    return float(np.mean(found >= kth - 1e-6 * np.abs(kth)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--run-dir", default=str(REPO / "work_dir/runs/TwinV2-seed0"))
  parser.add_argument("--clusters", type=int, nargs="+", default=[10**3, 10**4, 10**5])
  parser.add_argument("--candidates", type=int, default=200)
  parser.add_argument("--requests", type=int, default=300,
                      help="timed requests per path (a tenth of it at L >= 10^5)")
  args = parser.parse_args()
  from timing import one_core_tensorflow, serving_timings, timings
  tf = one_core_tensorflow()

  from twin_tf.export import saved_model
  from twin_tf.model.layers import gsu
  from twin_tf.training.input_pipeline import load_example_data
  from twin_tf.training.trainer import restore_model

  _, vocabularies, train_config = restore_model(args.run_dir)
  data = load_example_data(train_config.examples, vocabularies)
  runs, peaks = [], {}
  with tempfile.TemporaryDirectory() as folder:
    folder = pathlib.Path(folder)
    for label, run_dir in (("live", args.run_dir),
                           ("current", dead_attention_run(args.run_dir, folder))):
      model, _, _ = restore_model(run_dir)
      serving = saved_model.ServingModule(model, vocabularies)
      base = folder / label / "twin"
      version = saved_model.export_saved_model(run_dir, base)
      for clusters in args.clusters:
        requests = args.requests if clusters < 10**5 else max(args.requests // 10, 20)
        arrays = tiled_real_request(data, clusters, args.candidates)
        reach = int(model.gsu_reach(serving.model_inputs(
            {k: tf.constant(v) for k, v in arrays.items()}))[0])
        in_process, through_grpc = serving_timings(base, arrays, requests)
        cached = CachedKeysPath(version, arrays, vocabularies.spec)
        exact_scores = tf.saved_model.load(str(version)).signatures["serving_default"](
            **{k: tf.constant(v) for k, v in arrays.items()})["scores"].numpy()[0]
        unique = len(np.unique(cached.retrievers["exact"].search(cached.queries())))
        cached_exact = {**timings(lambda: cached.score("exact"), requests), "unique": unique,
                        "max_abs_diff_from_in_process": float(np.abs(
                            cached.score("exact") - exact_scores).max()),
                        "stages_p50_ms": cached.stage_timings(requests)}
        scann = {**timings(lambda: cached.score("scann"), requests),
                 "mode": cached.retrievers["scann"].config.mode,
                 "recall_at_100": round(cached.recall_at_100(), 4)}
        ranked = reach if reach <= gsu.PRUNE_MAX_SHARE * clusters else clusters
        fractions = {}
        for path, timed in (("in_process", in_process), ("cached_exact", cached_exact)):
          macs, width = request_macs(model, clusters, args.candidates, ranked,
                                     unique if path == "cached_exact" else None)
          if (clusters, width) not in peaks:
            peaks[clusters, width] = peak_gmacs(tf, clusters, args.candidates, width)
          fractions[path] = macs / (peaks[clusters, width] * 1e9) / (timed["p50_ms"] / 1000)
        print(f"{label} model, L = {clusters:,} ({reach:,} can reach a top 100), one core: "
              f"exact in process p50 {in_process['p50_ms']} ms, p99 {in_process['p99_ms']} "
              f"ms ({fractions['in_process']:.2f} of a plain matmul's rate); exact over "
              f"cached keys p50 {cached_exact['p50_ms']} ms, p99 {cached_exact['p99_ms']} ms "
              f"({fractions['cached_exact']:.2f}; scores within "
              f"{cached_exact['max_abs_diff_from_in_process']:.1e} of in process); ScaNN "
              f"path ({scann['mode']}) p50 {scann['p50_ms']} ms, p99 {scann['p99_ms']} ms, "
              f"recall@100 {scann['recall_at_100']}; exact over gRPC p50 "
              f"{through_grpc['p50_ms']} ms, p99 {through_grpc['p99_ms']} ms; over cached keys "
              f"by step (p50 ms): {cached_exact['stages_p50_ms']}", flush=True)
        runs.append({"clusters": clusters, "model": label, "reaching": reach,
                     "in_process": in_process, "cached_exact": cached_exact, "scann": scann,
                     "dev_server_grpc": through_grpc,
                     "peak_fraction": round(max(fractions.values()), 3),
                     "peak_fraction_by_path": {k: round(v, 3) for k, v in fractions.items()}})
  print(json.dumps({"candidates": args.candidates, "request": "real clusters, tiled",
                    "run_dir": str(args.run_dir),
                    "peak_gmacs": {f"{c}x{w}": round(v, 1) for (c, w), v in peaks.items()},
                    "runs": runs}))


if __name__ == "__main__":
  sys.path[:0] = [str(REPO), str(REPO / "bench")]
  main()
