"""Training and evaluation with Keras fit/evaluate, checkpoints and crash recovery.

A run directory holds:
  config.json              the TrainConfig
  model.json               the preset's ModelConfig it trained (a changed preset retrains:
                           experiments.quality's _finished)
  feature_spec.json        the examples' item features and flags (twin_tf.data.feature_spec)
  vocabulary.npz           known ids of each data vocabulary (twin_tf.model.vocabulary)
  item_embeddings.npz      the pretrained item vectors the model's frozen table holds (with
                           TrainConfig.item_embeddings)
  oov.json                 per split and feature, the share of targets out of vocabulary
  backup/                  the last mid-epoch backup (training.resume): a killed run resumes
                           from its last backed-up batch
  checkpoints/best.weights.h5   best validation AUC so far (ModelCheckpoint)
  logs/                    TensorBoard
  model.weights.h5         final weights (the best epoch), Keras format, either backend
  metrics_<split>.json     written by evaluate
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time

import numpy as np

from twin_tf import config as config_lib
from twin_tf import strict_json
from twin_tf.clustering.embeddings import ItemEmbeddingTable
from twin_tf.config import TrainConfig  # noqa: F401  (also imported from here)
from twin_tf.data import schema
from twin_tf.model import features
from twin_tf.model.ctr_model import PRESETS, build_model
from twin_tf.model.vocabulary import Vocabularies
from twin_tf.training import (diversity, liveness, metrics, processes, ranking, resume,
                              streaming)
from twin_tf.training.input_pipeline import DatasetBuilder, ExampleData
from twin_tf.training.optimizer import EmbeddingAdam

PRETRAINED_FILE = "item_embeddings.npz"  # the run's copy of TrainConfig.item_embeddings
MODEL_FILE = "model.json"  # the preset's ModelConfig the run trained


def _builder(config: TrainConfig, data: ExampleData) -> DatasetBuilder:
  preset = PRESETS[config.model]
  return DatasetBuilder(data, preset.long_term_source, config.max_raw, config.seed,
                        budget=config.budget, min_bucket=min_bucket(preset))


def _streaming(config: TrainConfig, scan: streaming.RecordScan) -> streaming.StreamingInput:
  preset = PRESETS[config.model]
  return streaming.StreamingInput(config.examples, preset.long_term_source, config.max_raw,
                                  config.seed, budget=config.budget,
                                  min_bucket=min_bucket(preset), scan=scan)


def min_bucket(preset) -> int:
  """The shortest long-term length worth a bucket: the GSU's top-k (the model pads shorter
  sequences to it), 1 without long-term attention."""
  return preset.gsu_top_k if preset.long_term != "none" else 1


def train(config: TrainConfig, data: ExampleData | None = None, verbose: int = 1,
          extra_callbacks=()) -> dict:
  """Trains one model; resumes from output_dir/backup if a previous run was killed.

  Batches stream from the examples' group records (training.streaming); `data` (the same
  examples, in memory) only lends its vocabularies.

  Returns:
    the Keras history ({metric: [value per epoch]}) of this call.
  """
  import keras  # pylint: disable=import-outside-toplevel
  if config.model not in PRESETS:
    raise ValueError(f"unknown model {config.model!r}; presets: {sorted(PRESETS)}")
  process, processes_count = processes.current()
  out = run_folder(config, process)
  out.mkdir(parents=True, exist_ok=True)
  print(config_lib.describe(config), flush=True)
  config_lib.save(config, out / "config.json")
  config_lib.save(PRESETS[config.model], out / MODEL_FILE)
  keras.utils.set_random_seed(config.seed)
  scan = streaming.scan_records(config.examples, data.vocabularies if data else None)
  vocabularies, oov = scan.vocabularies, scan.oov
  vocabularies.save(out)
  (out / "oov.json").write_text(json.dumps(oov, indent=2) + "\n")
  print("out of vocabulary (share of targets): " + "; ".join(
      f"{split} " + ", ".join(f"{f} {share:.1%}" for f, share in shares.items())
      for split, shares in oov.items()), flush=True)
  streamed = _streaming(config, scan)
  devices = _data_parallel(config, processes_count)
  shard = (process, processes_count) if processes_count > 1 else None

  def epoch_data(epoch: int):
    """The training batches of one epoch, shuffled with that epoch's own seed."""
    return streamed.dataset("train", config.batch_size, shuffle=True,
                            seed=config.seed * 100_003 + epoch, multiple_of=devices,
                            shard=shard)

  batches_per_epoch = streamed.num_batches("train", config.batch_size, devices)
  validation_ds = streamed.dataset("validation", config.batch_size * 4, multiple_of=devices,
                                   shard=shard)

  pretrained = None
  if config.item_embeddings:
    pretrained = ItemEmbeddingTable.load(config.item_embeddings)
    pretrained.save(out / PRETRAINED_FILE)
  model = _built_model(config.model, vocabularies, config.item_l2, pretrained)
  model.dense_normalization.set_statistics(scan.dense_mean, scan.dense_std)
  learning_rate = config.learning_rate
  if config.cosine_decay:
    learning_rate = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=config.epochs * batches_per_epoch, alpha=0.1)
  model.compile(optimizer=EmbeddingAdam(learning_rate),
                loss="binary_crossentropy",
                metrics=[keras.metrics.AUC(name="auc")],
                # JAX: one jit-compiled step per padded length (a handful of buckets);
                # TensorFlow: graph mode, since XLA would recompile for every bucket
                jit_compile=keras.backend.backend() == "jax")
  epoch, batch, best_auc = resume.restore(model, out / "backup")
  if epoch or batch:
    print(f"resuming from the backup: epoch {epoch + 1}, after its first {batch} batches",
          flush=True)
  (out / "checkpoints").mkdir(exist_ok=True)
  backup = resume.Backup(out / "backup",
                         resume.backup_interval(config.backup_every, batches_per_epoch),
                         best_auc)
  callbacks = [
      backup,
      keras.callbacks.ModelCheckpoint(str(out / "checkpoints" / "best.weights.h5"),
                                      monitor="val_auc", mode="max", save_best_only=True,
                                      save_weights_only=True, initial_value_threshold=best_auc),
      keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience,
                                    restore_best_weights=True),
      keras.callbacks.TensorBoard(str(out / "logs")),
      *extra_callbacks,
  ]
  fit = functools.partial(model.fit, validation_data=validation_ds, callbacks=callbacks,
                          verbose=verbose, shuffle=False)  # the data shuffles itself
  start, history = time.time(), {}
  if batch:  # the rest of the interrupted epoch, then the others
    backup.batch_offset = batch
    _extend(history, fit(epoch_data(epoch).skip(batch), epochs=epoch + 1, initial_epoch=epoch))
    epoch += 1
  if epoch < config.epochs and not model.stop_training:
    stream = epoch_data(epoch)
    for later in range(epoch + 1, config.epochs):
      stream = stream.concatenate(epoch_data(later))
    _extend(history, fit(stream, epochs=config.epochs, initial_epoch=epoch,
                         steps_per_epoch=batches_per_epoch))
  resume.remove(out / "backup")
  keras.distribution.set_distribution(None)
  best = out / "checkpoints" / "best.weights.h5"
  if best.exists():  # EarlyStopping restores only when it stopped early
    model.load_weights(str(best))
  model.save_weights(str(out / "model.weights.h5"))
  print(f"trained {config.model} in {time.time() - start:.0f} s -> {out / 'model.weights.h5'}")
  return history


def run_folder(config: TrainConfig, process: int = 0) -> pathlib.Path:
  """Where a process of the run writes: output_dir for process 0 (the run), its own
  output_dir/process-<i> for the others (their copies, so that nothing is written twice)."""
  out = pathlib.Path(config.output_dir)
  return out / f"process-{process}" if process else out


def _data_parallel(config: TrainConfig, processes_count: int = 1) -> int:
  """With config.data_parallel or several processes (training.processes), Keras'
  DataParallel over every device of every process (JAX only); returns the number of devices
  batches are split over (1 without). Each process feeds its own slice of a batch."""
  import keras  # pylint: disable=import-outside-toplevel
  if not config.data_parallel and processes_count == 1:
    return 1
  if keras.backend.backend() != "jax":
    raise ValueError("data_parallel needs KERAS_BACKEND=jax (Keras' distribution API)")
  devices = keras.distribution.list_devices()
  keras.distribution.set_distribution(keras.distribution.DataParallel(
      devices=devices, auto_shard_dataset=False))  # the input is sliced per process already
  print(f"data parallel over {len(devices)} devices in {processes_count} process(es): "
        f"{devices}", flush=True)
  return len(devices)


def _extend(history: dict, more) -> None:
  for key, values in more.history.items():
    history.setdefault(key, []).extend(values)


def _built_model(model_name: str, vocabularies: Vocabularies, item_l2: float = 0.0,
                 pretrained: ItemEmbeddingTable | None = None):
  """A new model with its variables created (by a call on placeholder inputs), with the
  pretrained item vectors of `pretrained` in its frozen table (None: no such table)."""
  model = build_model(dataclasses.replace(PRESETS[model_name], item_l2=item_l2,
                                          pretrained_dim=pretrained.dim if pretrained else 0),
                      vocabularies.spec, vocabularies.sizes())
  model(features.placeholder_inputs(vocabularies.spec))
  if pretrained:
    model.item_embedding.set_pretrained(pretrained_rows(pretrained, vocabularies))
  return model


def pretrained_rows(table: ItemEmbeddingTable, vocabularies: Vocabularies) -> np.ndarray:
  """(item vocabulary size, d): row i the vector of the item of index i, zeros for padding,
  out-of-vocabulary and items the table has no vector for."""
  vocabulary = vocabularies[schema.ITEM_ID]
  if vocabulary.hash_buckets:
    raise ValueError("pretrained item vectors need an item-id vocabulary built from the data, "
                     "not a hashed one")
  rows = np.zeros((len(vocabulary), table.dim), np.float32)
  rows[2:], _ = table.lookup(vocabulary.ids)
  return rows


def restore_model(run_dir: str | pathlib.Path):
  """(model with the run's final weights, its Vocabularies, TrainConfig) of a finished run,
  on the current Keras backend."""
  run_dir = pathlib.Path(run_dir)
  config = config_lib.load(TrainConfig, run_dir / "config.json")
  vocabularies = Vocabularies.load(run_dir)
  pretrained = (ItemEmbeddingTable.load(run_dir / PRETRAINED_FILE)
                if (run_dir / PRETRAINED_FILE).exists() else None)
  model = _built_model(config.model, vocabularies, pretrained=pretrained)
  model.load_weights(str(run_dir / "model.weights.h5"))
  return model, vocabularies, config


def load_trained(config: TrainConfig, data: ExampleData):
  """The model of a finished run and a DatasetBuilder for its long-term source."""
  model, _, _ = restore_model(config.output_dir)
  return model, _builder(config, data)


def evaluate(config: TrainConfig, split: str = "test", data: ExampleData | None = None
             ) -> dict:
  """AUC, GAUC, logloss, GAUC per life-cycle-length quartile, the diversity of each user's
  top-10 (training.diversity), per-user NDCG@10 / recall@10 (training.ranking) and the
  attention's liveness (training.liveness; None without a GSU) of a trained run. Writes
  metrics_<split>.json and the scores, predictions_<split>.npz.

  data: the examples in memory (the studies; predictions by impression index into
  data.impressions[split], liveness over users in id order), or None: streamed from the
  group records, memory bounded by the batch (_evaluate_streamed).
  """
  out = pathlib.Path(config.output_dir)
  if data is None:
    return _evaluate_streamed(config, split)
  model, builder = load_trained(config, data)
  dataset, order = builder.dataset(split, config.batch_size * 4)
  scores = model.predict(dataset, verbose=0).reshape(-1)
  result = {"model": config.model, "seed": config.seed,
            **split_metrics(data, split, scores, order),
            "attention": liveness.attention_liveness(model, builder, split)}
  (out / f"metrics_{split}.json").write_text(strict_json.dumps(result, indent=2) + "\n")
  np.savez(out / f"predictions_{split}.npz", impression=order, score=scores)
  return result


def _evaluate_streamed(config: TrainConfig, split: str) -> dict:
  """evaluate() over the split's group records streamed batch by batch (memory bounded by
  the batch and the (N,) scores and keys); predictions_<split>.npz holds each impression's
  user_id, timestamp, item_id and score. The attention's liveness samples users in the
  order the stream meets them (liveness.StreamedLiveness)."""
  out = pathlib.Path(config.output_dir)
  model, vocabularies, _ = restore_model(out)
  streamed = _streaming(config, streaming.scan_records(config.examples, vocabularies))
  live = liveness.StreamedLiveness(model)
  scores, labels, keys = [], [], []
  for inputs, label, key in streamed.dataset(split, config.batch_size * 4,
                                             keys=True).as_numpy_iterator():
    scores.append(np.asarray(model.predict_on_batch(inputs)).reshape(-1))
    labels.append(label)
    keys.append(key)
    live.add(inputs, key[schema.USER_ID])
  scores = np.concatenate(scores) if scores else np.zeros(0, np.float32)
  labels = np.concatenate(labels) if labels else np.zeros(0, np.float32)
  key = {k: np.concatenate([b[k] for b in keys]) if keys else np.zeros(0, np.int64)
         for k in (*streaming.KEYS, schema.TIMESTAMP)}
  result = {"model": config.model, "seed": config.seed,
            **impression_metrics(split, labels, scores, key[schema.USER_ID],
                                 key[streaming.NUM_PRE_CUTOFF], key["raw_primary"]),
            "attention": live.result()}
  (out / f"metrics_{split}.json").write_text(strict_json.dumps(result, indent=2) + "\n")
  np.savez(out / f"predictions_{split}.npz", user_id=key[schema.USER_ID],
           timestamp=key[schema.TIMESTAMP], item_id=key["raw_item_id"], score=scores)
  return result


def split_metrics(data: ExampleData, split: str, scores: np.ndarray, order: np.ndarray
                  ) -> dict:
  """Every offline metric of scores (N,) for the impressions data.impressions[split][order]:
  AUC, GAUC, logloss, GAUC per activity quartile, top-10 diversity, NDCG@10 / recall@10."""
  impressions = data.impressions[split]
  return impression_metrics(split, impressions[schema.LABEL][order], scores,
                            impressions[schema.USER_ID][order],
                            data.num_pre_cutoff[impressions["user_row"][order]],
                            impressions[data.spec.primary][order])


def impression_metrics(split: str, labels: np.ndarray, scores: np.ndarray, users: np.ndarray,
                       activity: np.ndarray, primary: np.ndarray) -> dict:
  """split_metrics of (N,) arrays per impression: label, score, user, the user's behaviors
  before the cutoff, the candidate's primary feature."""
  return {"split": split, "impressions": int(len(labels)),
          **metrics.all_metrics(labels, scores, users, activity),
          "diversity": diversity.diversity(scores, users, primary),
          "ranking": ranking.ranking_metrics(scores, users, labels)}
