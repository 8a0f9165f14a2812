"""Models train on the real fixture (TensorFlow), resume after a crash, and run on JAX."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from twin_tf.model.ctr_model import PRESETS, build_model
from twin_tf.training.input_pipeline import DatasetBuilder, load_example_data
from twin_tf.training.streaming import StreamingInput
from twin_tf.training.trainer import TrainConfig, evaluate, load_trained, restore_model, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data(real_examples):
  return load_example_data(real_examples[0])


@pytest.fixture(scope="module")
def trained(real_examples, data, tmp_path_factory):
  config = TrainConfig(examples=str(real_examples[0]), epochs=2, batch_size=64,
                       output_dir=str(tmp_path_factory.mktemp("run")))
  history = train(config, data, verbose=0)
  return config, history


def test_twinv2_trains_and_evaluates(trained, data):
  config, history = trained
  assert len(history["loss"]) >= 1 and all(np.isfinite(history["loss"]))
  assert history["loss"][-1] < 0.75
  result = evaluate(config, "test", data)
  assert 0 <= result["auc"] <= 1 and 0 <= result["gauc"] <= 1 and result["logloss"] > 0
  assert result["impressions"] == len(data.impressions["test"]["label"])
  with open(os.path.join(config.output_dir, "metrics_test.json")) as f:
    assert json.load(f)["auc"] == result["auc"]
  for name in ("model.weights.h5", "vocabulary.npz", "feature_spec.json", "oov.json",
               "config.json"):
    assert os.path.exists(os.path.join(config.output_dir, name))


def test_streamed_evaluation_equals_the_in_memory_one(trained, data):
  """Without `data`, evaluate streams the group records: the same scores for the same
  impressions (matched by user, time and item), the same AUC, GAUC, logloss, per-bucket GAUC
  and ranking figures, and liveness figures over its own user sample."""
  config, _ = trained
  in_memory = evaluate(config, "test", data)
  saved = np.load(os.path.join(config.output_dir, "predictions_test.npz"))
  impressions = data.impressions["test"]
  expected = {(impressions["user_id"][i], impressions["timestamp"][i],
               impressions["item_id"][i]): score
              for i, score in zip(saved["impression"], saved["score"])}
  streamed = evaluate(config, "test")
  saved = np.load(os.path.join(config.output_dir, "predictions_test.npz"))
  assert len(saved["score"]) == len(expected) == streamed["impressions"]
  got = {key: score for key, score in zip(zip(saved["user_id"], saved["timestamp"],
                                              saved["item_id"]), saved["score"])}
  keys = sorted(expected)
  np.testing.assert_allclose([got[k] for k in keys], [expected[k] for k in keys], atol=2e-6)
  for name in ("auc", "gauc", "logloss"):
    assert streamed[name] == pytest.approx(in_memory[name], abs=1e-5), name
  assert [b["gauc"] for b in streamed["gauc_by_bucket"]] == pytest.approx(
      [b["gauc"] for b in in_memory["gauc_by_bucket"]], abs=1e-5)
  assert streamed["ranking"] == pytest.approx(in_memory["ranking"], abs=1e-4)
  attention = streamed["attention"]
  assert attention["users"] > 0 and attention["target_std"] > 0 and attention["bias_std"] > 0
  assert 0 <= attention["jaccard"] <= 1


def test_the_first_test_impressions_load_with_only_their_users(real_examples, data):
  """export's warmup reads the first test impressions and only their users' records."""
  few = load_example_data(real_examples[0], data.vocabularies, first_test=5)
  assert list(few.impressions) == ["test"]
  for name, values in few.impressions["test"].items():
    if name != "user_row":
      np.testing.assert_array_equal(values, data.impressions["test"][name][:5])
  np.testing.assert_array_equal(few.user_ids, np.unique(data.impressions["test"]["user_id"][:5]))
  rows = np.searchsorted(data.user_ids, few.user_ids)
  np.testing.assert_array_equal(few.num_pre_cutoff, data.num_pre_cutoff[rows])
  length = few.history["item_id"].shape[1]
  np.testing.assert_array_equal(few.history["item_id"], data.history["item_id"][rows, :length])
  with pytest.raises(ValueError, match="vocabularies"):
    load_example_data(real_examples[0], first_test=5)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_forward_and_backward(name, data):
  model = build_model(name, data.spec, data.vocabularies.sizes())
  dataset, _ = DatasetBuilder(data, model.config.long_term_source, max_raw=300).dataset(
      "train", 16)
  inputs, labels = next(iter(dataset))
  model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=False)
  scores = model(inputs).numpy()
  before = [w.numpy().copy() for w in model.trainable_weights]
  assert np.isfinite(model.train_on_batch(inputs, labels))
  assert scores.shape == labels.shape and np.all((scores > 0) & (scores < 1))
  changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
  assert sum(changed) >= len(changed) // 2  # gradients reach most weights


def test_candidates_of_one_request_equal_single_scoring(trained, data):
  """(B, C) candidates share one pass over the user's sequences and score as C singles."""
  config, _ = trained
  model, builder = load_trained(config, data)
  inputs, _ = next(iter(builder.dataset("test", 4)[0]))
  single = model(inputs).numpy()  # (4,)
  row = {k: v.numpy() for k, v in inputs.items()}
  request = {k: (v[:1, None].repeat(4, axis=1) if k.startswith("target") else v[:1])
             for k, v in row.items()}
  for key in ("target_item_id", "target_category", "target_year_bucket", "dense"):
    request[key] = row[key][None, :]  # the 4 candidates against user row 0's sequences
  batched = model(request).numpy()[0]
  np.testing.assert_allclose(batched[0], single[0], rtol=1e-5, atol=1e-6)
  assert batched.shape == (4,)


class _CrashAfter(keras.callbacks.Callback):
  def __init__(self, batches):
    super().__init__()
    self.batches, self.seen = batches, 0

  def on_train_batch_end(self, batch, logs=None):
    self.seen += 1
    if self.seen == self.batches:
      raise RuntimeError("simulated crash")


class _Count(keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.batches = 0

  def on_train_batch_end(self, batch, logs=None):
    self.batches += 1


def test_killed_run_resumes_from_its_last_backed_up_batch(real_examples, data, tmp_path):
  """Killed after the 5th batch of epoch 2, backups every 3 batches: the rerun trains only
  what was not backed up (from batch 4 of epoch 2 on), and ends with the weights of a run
  that was never killed."""
  config = TrainConfig(examples=str(real_examples[0]), model="DIN", epochs=2, batch_size=32,
                       backup_every=3, patience=5, output_dir=str(tmp_path / "run"))
  per_epoch = StreamingInput(real_examples[0], PRESETS["DIN"].long_term_source).num_batches(
      "train", 32)  # batches per bucket, rounded up, summed
  with pytest.raises(RuntimeError, match="simulated crash"):
    train(config, data, verbose=0, extra_callbacks=[_CrashAfter(per_epoch + 5)])
  progress = json.loads((tmp_path / "run" / "backup" / "progress.json").read_text())
  assert (progress["epoch"], progress["batch"]) == (1, 3)
  resumed = _Count()
  train(config, data, verbose=0, extra_callbacks=[resumed])
  assert resumed.batches == per_epoch - 3
  assert not (tmp_path / "run" / "backup").exists()  # removed once training ended
  whole = TrainConfig(**{**config.__dict__, "output_dir": str(tmp_path / "whole")})
  train(whole, data, verbose=0)
  for a, b in zip(restore_model(config.output_dir)[0].weights,
                  restore_model(whole.output_dir)[0].weights):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_backups_scale_with_the_epoch():
  from twin_tf.training.resume import backup_interval
  assert [backup_interval(None, n) for n in (7, 95, 12_000)] == [1, 9, 1200]
  assert backup_interval(0, 500) == 0 and backup_interval(25, 500) == 25


def test_jax_backend_trains_and_loads_tensorflow_weights(trained, data, tmp_path):
  """Forward + backward on JAX (CPU), and the TF-trained weights give the same scores."""
  config, _ = trained
  model, builder = load_trained(config, data)
  inputs, labels = next(iter(builder.dataset("test", 8)[0]))
  batch = {k: v.numpy() for k, v in inputs.items()}
  np.savez(tmp_path / "batch.npz", labels=labels.numpy(), **batch)
  expected = model(inputs).numpy()
  script = f"""
import json, numpy as np, keras
from twin_tf.data.feature_spec import MOVIELENS
from twin_tf.model.ctr_model import build_model
assert keras.backend.backend() == "jax"
loaded = np.load({str(tmp_path / 'batch.npz')!r})
batch = {{k: loaded[k] for k in loaded.files if k != "labels"}}
model = build_model({config.model!r}, MOVIELENS, {data.vocabularies.sizes()!r})
model(batch)
model.load_weights({os.path.join(config.output_dir, 'model.weights.h5')!r})
scores = np.asarray(model(batch))
model.compile(optimizer="adam", loss="binary_crossentropy")
loss = float(model.train_on_batch(batch, loaded["labels"]))
model.save_weights({str(tmp_path / 'jax.weights.h5')!r})
print(json.dumps({{"scores": scores.tolist(), "loss": loss,
                   "trained_scores": np.asarray(model(batch)).tolist()}}))
"""
  completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env={**os.environ, "KERAS_BACKEND": "jax"}, cwd=REPO, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  result = json.loads(completed.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(result["scores"], expected, rtol=1e-5, atol=1e-6)
  assert np.isfinite(result["loss"])
  # ... and weights trained on JAX load on TensorFlow with the same scores
  model.load_weights(str(tmp_path / "jax.weights.h5"))
  np.testing.assert_allclose(model(inputs).numpy(), result["trained_scores"], rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(result["trained_scores"], expected)


def test_item_keys_are_the_attention_keys(trained, data):
  """The cacheable keys equal what alpha' uses: K_h W_h / sqrt(d_k) of the item features
  (scaled to unit RMS first: TwinV2's attention is normalized)."""
  config, _ = trained
  model, _ = load_trained(config, data)
  ids = [np.array([2, 5, 9]), np.array([1, 3, 0]), np.array([2, 4, 0])]  # vocabulary indexes
  inherent = np.asarray(model.item_embedding(ids))
  keys = np.asarray(model.attention.item_keys(inherent))
  kernel = np.asarray(model.attention.key_projection.kernel)
  assert model.attention.normalized
  unit = inherent / np.sqrt(np.mean(inherent ** 2, axis=-1, keepdims=True) + 1e-6)
  expected = np.einsum("nd,dhk->nhk", unit, kernel) / np.sqrt(model.config.key_dim)
  np.testing.assert_allclose(keys, expected, rtol=1e-5, atol=1e-6)


def test_data_parallel_on_two_devices_gives_the_one_device_loss(real_examples, tmp_path):
  """Keras' DataParallel on JAX over two virtual CPU devices (XLA's host platform device
  count): the same loss as one device, step after step, and a whole run trains."""
  script = f"""
import numpy as np, keras
from twin_tf.data.feature_spec import MOVIELENS
from twin_tf.model import features
from twin_tf.model.ctr_model import build_model
from twin_tf.training.trainer import TrainConfig, train
assert len(keras.distribution.list_devices()) == 2
rng = np.random.default_rng(0)
batch = features.placeholder_inputs(MOVIELENS, 8, 120)
for key in ("target_item_id", "long_item_id", "short_item_id", "long_category"):
  batch[key] = rng.integers(2, 10, batch[key].shape).astype(np.int32)
for prefix in ("long", "short"):
  batch[prefix + "_mask"][:] = True
  batch[prefix + "_size"][:] = 1.0
labels = rng.integers(0, 2, 8).astype(np.float32)
losses = []
for devices in (None, keras.distribution.list_devices()):
  keras.utils.set_random_seed(0)
  keras.distribution.set_distribution(devices and keras.distribution.DataParallel(devices=devices))
  model = build_model("TwinV2", MOVIELENS, {{"item_id": 50, "category": 10, "year_bucket": 10}})
  model(features.placeholder_inputs(MOVIELENS))
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
  losses.append([float(model.train_on_batch(batch, labels)) for _ in range(3)])
keras.distribution.set_distribution(None)
np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
history = train(TrainConfig(examples={str(real_examples[0])!r}, output_dir={str(tmp_path)!r},
                            epochs=1, batch_size=64, data_parallel=True), verbose=0)
assert np.isfinite(history["loss"][0])
print("ok", losses)
"""
  env = {**os.environ, "KERAS_BACKEND": "jax",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, cwd=REPO, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  assert (tmp_path / "model.weights.h5").exists()


def test_pretrained_item_vectors_are_frozen_rows_of_their_table(real_examples, data, tmp_path):
  """TrainConfig.item_embeddings: row i of the model's frozen table is the vector of the item
  of vocabulary index i (zeros where the table has none), training leaves it as it is, the
  run keeps its copy and restore_model reads it back."""
  from twin_tf.clustering.embeddings import ItemEmbeddingTable
  vocabulary = data.vocabularies["item_id"]
  known = vocabulary.ids[::2]  # half of the items have a vector
  vectors = np.random.default_rng(5).standard_normal((len(known), 4)).astype("float32")
  ItemEmbeddingTable(known, vectors).save(tmp_path / "emb.npz")
  config = TrainConfig(examples=str(real_examples[0]), epochs=1, batch_size=64,
                       output_dir=str(tmp_path / "run"), item_embeddings=str(tmp_path / "emb.npz"))
  train(config, data, verbose=0)
  model, _, _ = restore_model(config.output_dir)
  table = np.asarray(model.item_embedding.pretrained)
  expected = np.zeros((len(vocabulary), 4), "float32")
  expected[vocabulary.lookup(known)] = vectors
  np.testing.assert_array_equal(table, expected)
  assert not any(w is model.item_embedding.pretrained for w in model.trainable_weights)
  assert model.config.pretrained_dim == 4
