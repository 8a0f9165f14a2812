"""Mid-epoch backups: a killed training run continues from its last backed-up batch.

`<run>/backup/` holds, replaced file by file (each written beside and renamed into place):
  model.weights.h5   the model's weights and its optimizer's variables (moments, iteration
                     count: the learning-rate schedule continues where it was)
  progress.json      {"epoch": e, "batch": batches of epoch e done, "best": best validation
                     AUC so far (the best-checkpoint threshold), or null}
It is written every `every` batches and at each epoch end, and removed when training ends.
The trainer shuffles each epoch with its own seed, so a resumed run trains exactly the
batches the killed one had not backed up, in the same order.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import keras

PROGRESS, WEIGHTS = "progress.json", "model.weights.h5"


def backup_interval(configured: int | None, batches_per_epoch: int) -> int:
  """Batches between backups: `configured` (0: only at epoch ends), else a tenth of an epoch
  (at least 1), so a run of any size is backed up about ten times an epoch."""
  if configured is not None:
    return configured
  return max(1, batches_per_epoch // 10)


class Backup(keras.callbacks.Callback):
  """Writes the backup every `every` batches (0: never mid-epoch) and at every epoch end.

  `batch_offset`: batches of the current epoch trained before this fit call began (a
  resumed partial epoch); the trainer sets it.
  """

  def __init__(self, folder: str | pathlib.Path, every: int, best: float | None = None):
    super().__init__()
    self.folder, self.every, self.best = pathlib.Path(folder), every, best
    self.batch_offset, self._epoch = 0, 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    done = self.batch_offset + batch + 1
    if self.every and done % self.every == 0:
      self._save(self._epoch, done)

  def on_epoch_end(self, epoch, logs=None):
    auc = (logs or {}).get("val_auc")
    if auc is not None and (self.best is None or auc > self.best):
      self.best = float(auc)
    self.batch_offset = 0
    self._save(epoch + 1, 0)

  def _save(self, epoch: int, batch: int) -> None:
    self.folder.mkdir(parents=True, exist_ok=True)
    self.model.save_weights(str(self.folder / f"tmp.{WEIGHTS}"))  # with the optimizer's
    (self.folder / f"tmp.{PROGRESS}").write_text(json.dumps(
        {"epoch": epoch, "batch": batch, "best": self.best}))
    for name in (WEIGHTS, PROGRESS):  # progress last: it names a complete backup
      os.replace(self.folder / f"tmp.{name}", self.folder / name)


def restore(model, folder: str | pathlib.Path) -> tuple[int, int, float | None]:
  """Loads a backup into a compiled model; (epoch, batches of it done, best validation AUC),
  or (0, 0, None) when there is none."""
  folder = pathlib.Path(folder)
  if not (folder / PROGRESS).exists():
    return 0, 0, None
  progress = json.loads((folder / PROGRESS).read_text())
  if not model.optimizer.built:  # so that its variables load with the model's
    model.optimizer.build(model.trainable_variables)
  model.load_weights(str(folder / WEIGHTS))
  return int(progress["epoch"]), int(progress["batch"]), progress["best"]


def remove(folder: str | pathlib.Path) -> None:
  shutil.rmtree(folder, ignore_errors=True)
