"""The exported SavedModel as TF Serving runs it: signatures, session loader, warmup."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from serving.gsu import esu_long_inputs
from twin_tf.export import requests, saved_model
from twin_tf.training.input_pipeline import DatasetBuilder, load_example_data
from twin_tf.training.trainer import TrainConfig, evaluate, restore_model, train


@pytest.fixture(scope="module")
def run(real_examples, tmp_path_factory):
  data = load_example_data(real_examples[0])
  config = TrainConfig(examples=str(real_examples[0]), epochs=1, batch_size=64,
                       output_dir=str(tmp_path_factory.mktemp("run")))
  train(config, data, verbose=0)
  return config, data


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
  config, data = run
  base = tmp_path_factory.mktemp("serving") / "twin"
  request = requests.impression_requests(data, np.arange(3))[0]
  version = saved_model.export_saved_model(config.output_dir, base,
                                      warmup_requests=[requests.predict_request(request, "twin")])
  return version, config, data


def _run_in_session(version, signature, arrays):
  """Runs a signature the way TF Serving does: TF1 session on the signature's tensor names."""
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version))
    sig = meta.signature_def[signature]
    feed = {sig.inputs[k].name: v for k, v in arrays.items()}
    return session.run(sig.outputs["scores"].name, feed_dict=feed)


def test_saved_model_cli_lists_the_signatures(exported):
  version, _, _ = exported
  shown = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli",
                          "show", "--dir", str(version), "--tag_set", "serve"],
                         capture_output=True, text=True, check=True).stdout
  for name in ("serving_default", "esu", "esu_cached", "item_keys"):
    assert name in shown


def test_session_loader_agrees_with_keras_model(exported):
  """Impressions scored through the SavedModel equal the Keras model on the training input
  pipeline's batches of the same impressions, to 1e-5."""
  version, config, data = exported
  model, _, _ = restore_model(config.output_dir)
  dataset, order = DatasetBuilder(data, "clusters").dataset("test", 16)
  inputs, _ = next(iter(dataset))
  impressions = order[:16]
  expected = model(inputs).numpy()
  request, _ = requests.impression_requests(data, impressions)
  served = _run_in_session(version, "serving_default", request)
  assert served.shape == (16, 1)
  np.testing.assert_allclose(served[:, 0], expected, rtol=1e-5, atol=1e-6)


def test_esu_with_every_cluster_selected_equals_serving_default(exported):
  version, _, data = exported
  request, _ = requests.impression_requests(data, np.arange(4))
  assert request["long_length"].max() <= 100  # so the GSU keeps every cluster
  chosen = {**request, "long_chosen": requests.every_position_chosen(request)}
  np.testing.assert_allclose(_run_in_session(version, "esu", chosen),
                             _run_in_session(version, "serving_default", request),
                             rtol=1e-5, atol=1e-6)


def test_esu_over_the_union_of_chosen_clusters_equals_esu_over_all_of_them(exported):
  """The client sends only the clusters some candidate chose, each once (esu_long_inputs):
  the scores are those of the same choices as positions into the whole sequence; -1 chooses
  nothing."""
  version, _, data = exported
  request, _ = requests.impression_requests(data, np.array([0]))
  length = int(request["long_length"][0])
  assert length >= 4
  rng = np.random.default_rng(0)
  chosen = rng.integers(0, length, (1, 3, 4)).astype(np.int32)  # (B, C = 3, K), repeats
  none = np.zeros(chosen.shape, bool)
  none[0, 1, 2:] = True
  request = {k: (np.repeat(v, 3, axis=1) if k.startswith("candidate_") else v)
             for k, v in request.items()}
  whole = _run_in_session(version, "esu", {**request, "long_chosen": np.where(none, -1, chosen)})
  clusters = {f: request[f"long_{f}"][0, :length] for f in data.spec.sequence_fields}
  clusters["cluster_size"] = request["long_size"][0, :length]
  union = esu_long_inputs(clusters, chosen[0])
  assert union["long_length"][0] == len(np.unique(chosen))
  union["long_chosen"] = np.where(none, -1, union["long_chosen"])
  short = {k: v for k, v in request.items() if not k.startswith("long_")}
  np.testing.assert_allclose(_run_in_session(version, "esu", {**short, **union}), whole,
                             rtol=1e-5, atol=1e-6)


def _cached_union(version, data, bad_value=None):
  """(esu request over a union of chosen clusters, the same as an esu_cached request whose
  long_keys and long_value_heads come from the item_keys signature of the clusters' items;
  bad_value: put into long_value_heads)."""
  request, _ = requests.impression_requests(data, np.array([0]))
  length = int(request["long_length"][0])
  chosen = np.random.default_rng(1).integers(0, length, (1, 3, 4)).astype(np.int32)
  chosen[0, 2, 1:] = -1
  request = {k: (np.repeat(v, 3, axis=1) if k.startswith("candidate_") else v)
             for k, v in request.items()}
  clusters = {f: request[f"long_{f}"][0, :length] for f in data.spec.sequence_fields}
  clusters["cluster_size"] = request["long_size"][0, :length]
  items = tf.saved_model.load(str(version)).signatures["item_keys"](
      **{f: tf.constant(clusters[f]) for f in data.spec.candidate_fields})
  keys = np.concatenate([items["keys"].numpy().reshape(length, -1),
                         np.zeros((length, 1), np.float32)], axis=1)  # + a bias column
  values = items["value_heads"].numpy().reshape(length, -1)
  if bad_value is not None:
    values[chosen[0, 0, 0]] = bad_value
  short = {k: v for k, v in request.items() if not k.startswith("long_")}
  union = {**short, **esu_long_inputs(clusters, chosen[0])}
  cached = {**short, **esu_long_inputs(clusters, chosen[0], (keys, values))}
  for f in data.spec.candidate_fields:
    del cached[f"long_{f}"]
  return union, cached


def test_esu_cached_over_the_key_cache_projections_equals_esu(exported):
  """esu_cached with the clusters' keys and value heads from item_keys (as the key cache
  holds them) scores as esu, which featurizes the clusters' items itself."""
  version, _, data = exported
  union, cached = _cached_union(version, data)
  np.testing.assert_allclose(_run_in_session(version, "esu_cached", cached),
                             _run_in_session(version, "esu", union), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_esu_cached_refuses_bad_projections_naming_the_input(exported, value):
  version, _, data = exported
  _, cached = _cached_union(version, data, value)
  with pytest.raises(tf.errors.InvalidArgumentError, match="input long_value_heads:"):
    _run_in_session(version, "esu_cached", cached)


@pytest.mark.parametrize("position", [-2, 10**6])
def test_esu_refuses_chosen_positions_out_of_range(exported, position):
  version, _, data = exported
  request, _ = requests.impression_requests(data, np.array([0]))
  chosen = requests.every_position_chosen(request)
  chosen[0, 0, 0] = position
  with pytest.raises(tf.errors.InvalidArgumentError, match="input long_chosen:"):
    _run_in_session(version, "esu", {**request, "long_chosen": chosen})


@pytest.mark.parametrize("name, position, value", [
    ("long_size", 0, np.nan), ("long_size", 0, np.inf), ("long_size", 0, 0.0),
    ("short_size", 0, -1.0), ("candidate_dense", 0, np.inf)])
def test_bad_float_inputs_are_invalid_argument_naming_the_input(exported, name, position,
                                                                  value):
  """What TF Serving runs (the session loader) refuses a NaN / infinite float input and a
  size <= 0 at a valid position with InvalidArgumentError naming it, in every signature
  that takes it; a size of 0 at padding is fine."""
  version, _, data = exported
  request, _ = requests.impression_requests(data, np.arange(4))
  bad = {k: v.copy() for k, v in request.items()}
  bad[name].reshape(len(bad[name]), -1)[0, position] = value
  with pytest.raises(tf.errors.InvalidArgumentError, match=f"input {name}:"):
    _run_in_session(version, "serving_default", bad)
  if name == "long_size":
    chosen = {**bad, "long_chosen": requests.every_position_chosen(bad)}
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"input {name}:"):
      _run_in_session(version, "esu", chosen)
  padded = {k: v.copy() for k, v in request.items()}
  padded["long_length"][0] -= 1  # its last cluster becomes padding, of size 0
  padded["long_size"][0, padded["long_length"][0]:] = 0.0
  assert np.all(np.isfinite(_run_in_session(version, "serving_default", padded)))


def test_item_keys_signature(exported):
  version, config, data = exported
  model, vocabularies, _ = restore_model(config.output_dir)
  loaded = tf.saved_model.load(str(version))
  raw = {"item_id": np.array([data.vocabularies["item_id"].ids[0], 999_999_999]),  # known and
         "category": np.array([3, 0]), "year_bucket": np.array([20, 999])}  # unknown ids
  out = loaded.signatures["item_keys"](**{f: tf.constant(v, tf.int64)
                                          for f, v in raw.items()})["keys"]
  expected = model.attention.item_keys(model.embed_items(
      {f"target_{f}": vocabularies[f].lookup(v) for f, v in raw.items()}, "target"))
  assert out.shape == (2, model.config.num_heads, model.config.key_dim)
  np.testing.assert_allclose(out.numpy(), np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_warmup_records_parse_as_prediction_logs(exported):
  from tensorflow_serving.apis import prediction_log_pb2
  version, _, _ = exported
  path = version / "assets.extra" / saved_model.WARMUP_FILE
  logs = [prediction_log_pb2.PredictionLog.FromString(r)
          for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
  assert len(logs) == 1
  assert logs[0].predict_log.request.model_spec.signature_name == "serving_default"
  assert "long_item_id" in logs[0].predict_log.request.inputs


def test_versions_are_numbered_and_written_atomically(exported, run):
  version, config, _ = exported
  base = version.parent
  assert version.name == "1" and saved_model.next_version(base) == 2
  assert [p.name for p in base.iterdir()] == ["1"]  # no staging folder left behind
  with pytest.raises(FileExistsError):
    saved_model.export_saved_model(config.output_dir, base, version=1)
  assert [p.name for p in base.iterdir()] == ["1"]


def test_jax_trained_run_exports_with_identical_predictions(real_examples, tmp_path):
  """`twin-tf train --backend jax` (CPU) -> weights in the Keras format -> the same test
  predictions on JAX and on TensorFlow -> a SavedModel that serves those predictions."""
  examples, run_dir = str(real_examples[0]), tmp_path / "jax-run"
  flags = [f"--examples={examples}", f"--output-dir={run_dir}", "--epochs=1",
           "--batch-size=64", "--backend=jax"]
  for command in ("train", "evaluate"):
    completed = subprocess.run([sys.executable, "-m", "twin_tf.cli", command, *flags],
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
  on_jax = dict(np.load(run_dir / "predictions_test.npz"))  # streamed, keyed by impression
  config = TrainConfig(examples=examples, output_dir=str(run_dir), epochs=1, batch_size=64)
  evaluate(config, "test")  # now on TensorFlow, same weights file, streamed the same way
  on_tf = dict(np.load(run_dir / "predictions_test.npz"))
  for key in ("user_id", "timestamp", "item_id"):
    np.testing.assert_array_equal(on_tf[key], on_jax[key])
  np.testing.assert_allclose(on_tf["score"], on_jax["score"], rtol=1e-5, atol=1e-6)
  data = load_example_data(examples)
  evaluate(config, "test", data)  # in memory: scores by impression index, for the requests
  indexed = dict(np.load(run_dir / "predictions_test.npz"))
  version = saved_model.export_saved_model(run_dir, tmp_path / "serving" / "twin")
  request, _ = requests.impression_requests(data, indexed["impression"][:16])
  served = _run_in_session(version, "serving_default", request)
  np.testing.assert_allclose(served[:, 0], indexed["score"][:16], rtol=1e-5, atol=1e-6)
