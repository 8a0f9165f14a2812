"""Shared fixtures: the real MovieLens data (read in place from ../shared/data), SYNTHETIC
users and a SYNTHETIC KuaiRand folder."""

from __future__ import annotations

import csv
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
  from twin_tf.data.feature_spec import MOVIELENS
  rng = np.random.default_rng(seed)
  centers = rng.standard_normal((topics, dim)).astype(np.float32)
  item_topic = rng.integers(0, topics, num_items)
  vectors = centers[item_topic] + 0.3 * rng.standard_normal((num_items, dim)).astype(np.float32)
  item_ids = np.arange(1, num_items + 1, dtype=np.int64)
  columns = MOVIELENS.empty_columns(num_behaviors)
  columns[schema.USER_ID][:] = 7
  columns[schema.ITEM_ID] = rng.choice(item_ids, num_behaviors)
  columns[schema.TIMESTAMP] = np.sort(rng.integers(1_500_000_000, 1_600_000_000,
                                                   num_behaviors))
  columns[schema.DURATION] = rng.uniform(5, 300, num_behaviors).astype(np.float32)
  columns[schema.PLAY_TIME] = (columns[schema.DURATION] *
                               rng.uniform(0, 1.2, num_behaviors)).astype(np.float32)
  columns[schema.LABEL] = rng.integers(0, 2, num_behaviors)
  columns["category"] = item_topic[columns[schema.ITEM_ID] - 1] + 1
  columns["year_bucket"] = rng.integers(0, 20, num_behaviors)
  columns["tagged"] = rng.integers(0, 2, num_behaviors)
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


LOG_COLUMNS = ("user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like",
               "is_follow", "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms",
               "duration_ms", "profile_stay_time", "comment_stay_time", "is_profile_enter",
               "is_rand", "tab")
VIDEO_COLUMNS = ("video_id", "author_id", "video_type", "upload_dt", "upload_type",
                 "visible_status", "video_duration", "server_width", "server_height",
                 "music_id", "music_type", "tag")


def write_kuairand_fixture(folder: pathlib.Path, users: int = 20, seed: int = 0
                           ) -> pathlib.Path:
  """A SYNTHETIC KuaiRand-1K folder: the published file names and columns, made-up values.

  Users watch 60-140 of 300 videos over 4/08-5/08/2022, split over the two standard log
  files; each user prefers one tag and clicks videos of it more often. Video 299 is missing
  from the features file, video 7 has no music, and every tag lists two tags ("t,1").
  """
  import datetime
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  num_videos, start_ms = 300, 1_649_376_000_000  # 2022-04-08 00:00 UTC
  tags = rng.integers(2, 12, num_videos)
  durations = rng.integers(5_000, 120_000, num_videos)
  with open(folder / "video_features_basic_1k.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(VIDEO_COLUMNS)
    for video in range(num_videos - 1):
      writer.writerow([video, 3_000_000 + video % 40, "NORMAL", "2022-03-01",
                       rng.choice(["ShortImport", "LongImport", "Web"]), "public",
                       durations[video], 720, 1280, "" if video == 7 else 50_000 + video % 25,
                       "1", f"{tags[video]},1"])
  rows = {"log_standard_4_08_to_4_21_1k.csv": [], "log_standard_4_22_to_5_08_1k.csv": []}
  for user in range(users):
    favourite = rng.integers(2, 12)
    times = np.sort(rng.integers(start_ms, start_ms + 30 * 86_400_000, rng.integers(60, 141)))
    for time_ms in times:
      video = int(rng.integers(0, num_videos))
      liked = tags[video] == favourite
      click = int(rng.random() < (0.7 if liked else 0.25))
      play = int(durations[video] * rng.uniform(0.5 if liked else 0.0, 1.2))
      moment = datetime.datetime.fromtimestamp(time_ms / 1000, datetime.timezone.utc)
      name = list(rows)[int(time_ms >= start_ms + 14 * 86_400_000)]  # 4/08-4/21, 4/22-
      rows[name].append([user, video, moment.strftime("%Y%m%d"), moment.strftime("%H%M"),
                         int(time_ms), click, int(click and rng.random() < 0.3),
                         int(rng.random() < 0.02), int(rng.random() < 0.05), 0, 0,
                         int(play > 7000), play, durations[video], 0, 0, 0, 0, 1])
  for name, lines in rows.items():
    with open(folder / name, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(LOG_COLUMNS)
      writer.writerows(lines)
  return folder


@pytest.fixture(scope="session")
def kuairand_dir(tmp_path_factory) -> pathlib.Path:
  return write_kuairand_fixture(tmp_path_factory.mktemp("kuairand") / "KuaiRand-1K")
