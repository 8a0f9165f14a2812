"""Frozen configuration dataclasses, one per stage, with the paper's defaults.

Each stage prints its config in full at the start of a run and saves it next to its outputs.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Optional, TypeVar

CLUSTERING_METHODS = ("hierarchical", "time_chunks")


@dataclasses.dataclass(frozen=True)
class ClusteringConfig:
  """Hierarchical clustering of one user's life-cycle behaviors (TWIN-V2 section 3.2).

  Attributes:
    num_groups: M, equal-width bins of the completion ratio r = min(play_time/duration, 1).
      Behaviors with unknown duration (0) form an extra group M.
    gamma: the largest cluster allowed; clusters are split until every one has <= gamma.
    k_exponent: k-means inside a cluster of n behaviors uses k = ceil(n ** k_exponent).
    max_iter: cap on Lloyd iterations per k-means level.
    kmeans_tol: a k-means batch has converged once at most this fraction of labels moved.
    seed: seeds k-means++; the same seed and input give the same clusters.
    cutoff_timestamp: only behaviors strictly before this unix time enter the clusters.
    cutoff_quantile: per-user alternative: the cutoff is the timestamp at this quantile of
      the user's behaviors (0.8 keeps the first 80% of the life-cycle). Ignored when
      cutoff_timestamp is set; no cutoff when both are None.
    max_clusters: a sequence budget L: a user with more clusters is clustered again with
      gamma doubled until at most L clusters remain (every non-empty completion group keeps
      at least one). Under a budget, behaviors of items without an embedding join the
      k-means as one identical point (chunked in time order) instead of staying singletons.
      None: no budget.
    method: "hierarchical" (TWIN-V2's recursive k-means) or "time_chunks" (each group's
      behaviors cut into consecutive chunks of gamma in time order: same sizes, no
      similarity; the control for the clustering method).
    staleness_days: leave the behaviors of the last `staleness_days` before the cutoff out
      of the clusters, as a clustering run that long before the cutoff would have; the
      cutoff (where impressions start) stays. 0: clusters as fresh as the cutoff.
    snapshots: S, the cluster snapshots of each user's life-cycle before the cutoff, as a
      periodic offline re-clustering leaves them: the behaviors before the cutoff fall into
      S periods of equal count; the snapshot at the start of period k (k = 1..S-1) clusters
      the behaviors before it, and the behaviors of period k become training impressions
      that read it (build_examples). The cutoff's own clusters are the last snapshot. 1: the
      cutoff's only (the behaviors before it are history, never impressions).
  """

  num_groups: int = 5
  gamma: int = 20
  k_exponent: float = 0.3
  max_iter: int = 20
  kmeans_tol: float = 1e-3
  seed: int = 0
  cutoff_timestamp: Optional[int] = None
  cutoff_quantile: Optional[float] = None
  max_clusters: Optional[int] = None
  method: str = "hierarchical"
  staleness_days: float = 0.0
  snapshots: int = 1

  def __post_init__(self):
    if self.num_groups < 1:
      raise ValueError(f"num_groups must be >= 1, got {self.num_groups}")
    if self.gamma < 1:
      raise ValueError(f"gamma must be >= 1, got {self.gamma}")
    if not 0 < self.k_exponent < 1:
      raise ValueError(f"k_exponent must be in (0, 1), got {self.k_exponent}")
    if self.method not in CLUSTERING_METHODS:
      raise ValueError(f"method must be one of {CLUSTERING_METHODS}, got {self.method!r}")
    if self.max_clusters is not None and self.max_clusters < 1:
      raise ValueError(f"max_clusters must be >= 1, got {self.max_clusters}")
    if self.cutoff_quantile is not None and not 0 < self.cutoff_quantile <= 1:
      raise ValueError(f"cutoff_quantile must be in (0, 1], got {self.cutoff_quantile}")
    if self.staleness_days < 0:
      raise ValueError(f"staleness_days must be >= 0, got {self.staleness_days}")
    if self.snapshots < 1:
      raise ValueError(f"snapshots must be >= 1, got {self.snapshots}")


EMBEDDING_METHODS = ("ppmi-svd", "spectral")


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
  """Bootstrap item embeddings from co-occurrence (twin_tf.clustering.embeddings).

  Attributes:
    dim: embedding size.
    window: two behaviors of a user co-occur when at most `window` positions apart in time.
    min_count: items seen fewer times get no embedding (their behaviors become singletons).
    seed: seeds the SVD's start vector.
    method: "ppmi-svd" (the co-occurrence matrix in memory: O(window x behaviors)) or
      "spectral" (streamed: O(items x dim) memory, for large logs).
  """

  dim: int = 32
  window: int = 10
  min_count: int = 2
  seed: int = 0
  method: str = "ppmi-svd"

  def __post_init__(self):
    if self.method not in EMBEDDING_METHODS:
      raise ValueError(f"method must be one of {EMBEDDING_METHODS}, got {self.method!r}")
    for name in ("dim", "window", "min_count"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Attributes:
    examples: folder written by beam_pipelines.build_examples.
    output_dir: the run directory.
    model: a preset of twin_tf.model.ctr_model.PRESETS.
    epochs, batch_size, learning_rate: Adam on binary cross-entropy.
    patience: epochs without a better validation AUC before stopping (best weights kept).
    seed: weights, shuffling and the uniform-sampling ablation.
    max_raw: raw behaviors kept for the Twin / SIM long-term sequence (most recent).
    budget: the sequence budget L, the long-term length the GSU scores (its cost): Twin /
      SIM read the most recent L raw behaviors, TwinV2-uniform L sampled ones, and TwinV2's
      clusters must already fit (examples clustered with ClusteringConfig.max_clusters = L).
      None: no budget (max_raw raw behaviors; uniform samples as many as the user's clusters).
    backup_every: batches between mid-epoch backups (twin_tf.training.resume; 0: only at
      epoch ends; None: a tenth of an epoch, at least 1).
    item_l2: L2 penalty on the item-id embedding table (0: none).
    cosine_decay: decay the learning rate along a cosine to 10% over `epochs`.
    data_parallel: train data parallel over every local device (JAX: multi-GPU, multi-host,
      Keras' DataParallel); batches are split evenly, so each bucket leaves out its last
      few (fewer than the device count) examples of an epoch, others every epoch.
    item_embeddings: pretrained item vectors (`twin-tf embeddings`' .npz, the clustering's
      item space) appended, frozen, to every item's inherent features; copied into the run.
      None: none.
  """

  examples: str = "work_dir/examples"
  output_dir: str = "work_dir/runs/TwinV2-seed0"
  model: str = "TwinV2"
  epochs: int = 3
  batch_size: int = 256
  learning_rate: float = 1e-3
  patience: int = 1
  seed: int = 0
  max_raw: int = 10_000
  budget: Optional[int] = None
  backup_every: Optional[int] = None
  item_l2: float = 0.0
  cosine_decay: bool = False
  data_parallel: bool = False
  item_embeddings: Optional[str] = None


C = TypeVar("C")


def to_dict(config) -> dict[str, Any]:
  return dataclasses.asdict(config)


def as_saved(config) -> dict[str, Any]:
  """to_dict as `save` writes it and JSON reads it back (tuples as lists): to compare a
  config with a recorded one."""
  return json.loads(json.dumps(to_dict(config)))


def from_dict(cls: type[C], values: dict[str, Any]) -> C:
  """Builds `cls` from a dict, naming any key the dataclass does not have."""
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ValueError(f"unknown {cls.__name__} keys: {unknown}; known: {sorted(known)}")
  return cls(**values)


def load(cls: type[C], path: str | pathlib.Path) -> C:
  """Loads a config from a JSON or YAML file."""
  text = pathlib.Path(path).read_text()
  if str(path).endswith((".yaml", ".yml")):
    import yaml  # pylint: disable=import-outside-toplevel
    values = yaml.safe_load(text) or {}
  else:
    values = json.loads(text)
  return from_dict(cls, values)


def save(config, path: str | pathlib.Path) -> None:
  pathlib.Path(path).write_text(json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")


def describe(config) -> str:
  """The full config on one line, `Name: key=value, ...`, for the start of every run (a run
  also saves it beside its outputs)."""
  return f"{type(config).__name__}: " + ", ".join(f"{k}={v!r}"
                                                  for k, v in to_dict(config).items())
