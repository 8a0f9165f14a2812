"""Shared fixtures: the real MovieLens data (read in place from ../shared/data)."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.get("TWIN_TF_DATA", REPO.parent / "shared" / "data" /
                                       "ml-latest-small"))


@pytest.fixture(scope="session")
def movielens_dir() -> pathlib.Path:
  if not (DATA_DIR / "ratings.csv").exists():
    pytest.skip(f"MovieLens not found at {DATA_DIR}; set TWIN_TF_DATA")
  return DATA_DIR


@pytest.fixture(scope="session")
def movielens(movielens_dir):
  """(columns, dead letters, catalog) of the whole real dataset."""
  from twin_tf.data.movielens import load_movielens
  return load_movielens(movielens_dir)


@pytest.fixture(scope="session")
def movielens_embeddings(movielens):
  from twin_tf.clustering.embeddings import bootstrap_embeddings
  return bootstrap_embeddings(movielens[0])


def synthetic_user(num_behaviors: int, dim: int = 16, topics: int = 12, seed: int = 0,
                   num_items: int = 5000):
  """A SYNTHETIC user: items drawn from a mixture of topics, random play completion.

  Returns (columns, ItemEmbeddingTable).
  """
  from twin_tf.clustering.embeddings import ItemEmbeddingTable
  from twin_tf.data import schema
  rng = np.random.default_rng(seed)
  centers = rng.standard_normal((topics, dim)).astype(np.float32)
  item_topic = rng.integers(0, topics, num_items)
  vectors = centers[item_topic] + 0.3 * rng.standard_normal((num_items, dim)).astype(np.float32)
  item_ids = np.arange(1, num_items + 1, dtype=np.int64)
  columns = schema.empty_columns(num_behaviors)
  columns[schema.USER_ID][:] = 7
  columns[schema.ITEM_ID] = rng.choice(item_ids, num_behaviors)
  columns[schema.TIMESTAMP] = np.sort(rng.integers(1_500_000_000, 1_600_000_000,
                                                   num_behaviors))
  columns[schema.DURATION] = rng.uniform(5, 300, num_behaviors).astype(np.float32)
  columns[schema.PLAY_TIME] = (columns[schema.DURATION] *
                               rng.uniform(0, 1.2, num_behaviors)).astype(np.float32)
  columns[schema.LABEL] = rng.integers(0, 2, num_behaviors)
  columns[schema.CATEGORY] = item_topic[columns[schema.ITEM_ID] - 1] + 1
  columns[schema.YEAR_BUCKET] = rng.integers(0, 20, num_behaviors)
  columns[schema.TAGGED] = rng.integers(0, 2, num_behaviors)
  return columns, ItemEmbeddingTable(item_ids, vectors)


def forty_real_users(columns):
  """The behaviors of 40 real users: the first 39 ids and the longest history."""
  from twin_tf.data import schema
  users, counts = np.unique(columns["user_id"], return_counts=True)
  chosen = np.union1d(users[:39], users[np.argmax(counts)])
  return schema.take(columns, np.isin(columns["user_id"], chosen))


@pytest.fixture(scope="session")
def real_examples(movielens, tmp_path_factory):
  """Clusters and training examples of 40 real users (the longest history among them), made
  by the two Beam pipelines under FnApiRunner: (examples folder, behavior columns)."""
  from beam_pipelines import build_examples, cluster_behaviors
  from twin_tf.clustering.embeddings import bootstrap_embeddings
  from twin_tf.data import logs
  columns = movielens[0]
  subset = forty_real_users(columns)
  folder = tmp_path_factory.mktemp("examples")
  logs.write_behavior_log(subset, folder / "behaviors.parquet")
  bootstrap_embeddings(columns).save(folder / "emb.npz")
  cluster_behaviors.run([f"--input={folder / 'behaviors.parquet'}",
                         f"--embeddings={folder / 'emb.npz'}", f"--output={folder / 'clusters'}",
                         "--cutoff_quantile=0.5"])
  build_examples.run([f"--input={folder / 'behaviors.parquet'}",
                      f"--clusters={folder / 'clusters' / 'clusters-*'}",
                      f"--output={folder / 'examples'}"])
  return folder / "examples", subset
