"""KuaiRand (Kuaishou's public recommendation log) as TWIN-V2 behavior logs.

Reads the published files as they are, from one folder (KuaiRand-1K, -Pure or -27K: the
variants differ only in the file-name suffix, and -27K splits its logs into parts):
  log_standard_*.csv        user_id, video_id, date, hourmin, time_ms, is_click, is_like,
                            is_follow, is_comment, is_forward, is_hate, long_view,
                            play_time_ms, duration_ms, profile_stay_time, comment_stay_time,
                            is_profile_enter, is_rand, tab
  video_features_basic_*.csv  video_id, author_id, video_type, upload_dt, upload_type,
                            visible_status, video_duration, server_width, server_height,
                            music_id, music_type, tag
The random-exposure logs (log_random_*) are not read: they are a separate evaluation set.

Mapping onto the schema (feature_spec.KUAIRAND):
  user_id, item_id   user_id, video_id.
  timestamp          time_ms // 1000 (unix seconds).
  play_time          play_time_ms / 1000; duration: duration_ms / 1000 (0 or empty: unknown),
                     so the completion groups are real play-completion bands.
  label              is_click.
  tag                the video's first tag (`tag` is comma-separated, "28,1" -> 28; 0 none).
  author_id, music_id  as published (0 when empty); hashed into the model's vocabularies.
  upload_type        a string ("ShortImport", ...): crc32 of the string, so the same name
                     always gets the same id (0 when empty).
  is_like, is_follow, is_comment   the behavior's flags (cross features).
Videos missing from the features file get 0 (unknown) features; malformed log rows become dead
letters naming the file, line and field.

Download: https://kuairand.com (KuaiRand-1K: data/KuaiRand-1K.tar.gz, CC BY-SA 4.0); unpack
and pass the folder that holds the CSV files.
"""

from __future__ import annotations

import csv
import math
import pathlib
import zlib

import numpy as np

from twin_tf.data import logs, schema
from twin_tf.data.feature_spec import KUAIRAND

LOG_PATTERN = "log_standard_*.csv"
VIDEO_PATTERN = "video_features_basic_*.csv"
FLAGS = KUAIRAND.behavior_flags  # is_like, is_follow, is_comment: same names in the log
# What the mapping reads of a log row.
LOG_COLUMNS = ("user_id", "video_id", "time_ms", "is_click", "play_time_ms",
               "duration_ms") + FLAGS


def _files(data_dir: pathlib.Path, pattern: str) -> list[pathlib.Path]:
  files = sorted(data_dir.glob(pattern))
  if not files:
    raise FileNotFoundError(
        f"{data_dir} holds no {pattern}: expected an unpacked KuaiRand folder "
        f"({LOG_PATTERN} and {VIDEO_PATTERN}, e.g. log_standard_4_08_to_4_21_1k.csv and "
        "video_features_basic_1k.csv)")
  return files


def published_id(row: dict, field: str) -> int:
  """A published id ("123", "123.0"; for `tag` the first of "28,1") -> int, 0 when empty.

  Raises:
    logs.MalformedRecord: naming the field, when it is not a non-negative integer.
  """
  value = (row.get(field) or "").strip()
  if field == "tag":
    value = value.split(",")[0].strip()
  if not value or value.lower() == "nan":
    return 0
  try:
    number = float(value)
  except ValueError:
    number = -1.0
  if not math.isfinite(number) or number < 0 or number != int(number):
    raise logs.MalformedRecord(field, f"not a non-negative integer: {row.get(field)!r}")
  return int(number)


def string_id(value) -> int:
  """A categorical string -> a stable non-negative id (crc32), 0 when empty."""
  value = (value or "").strip()
  return zlib.crc32(value.encode()) if value else 0


def _rows(path: pathlib.Path, required: tuple[str, ...]):
  """(line, row) of a published CSV file: bytes that are not UTF-8 read as U+FFFD
  (validation names them), a byte-order mark dropped. A header without a required column is
  a ValueError naming the file and the columns."""
  with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
    reader = csv.DictReader(f)
    missing = [c for c in required if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(f"{path}: no column {', '.join(missing)} in its header "
                       f"{reader.fieldnames}: not a KuaiRand {path.name.split('_')[0]} file")
    yield from enumerate(reader, start=2)


def load_video_features(data_dir: str | pathlib.Path
                        ) -> tuple[dict[int, tuple[int, ...]], list[dict]]:
  """(video_id -> (tag, author_id, music_id, upload_type) ids in KUAIRAND's feature order,
  dead letters of unreadable rows)."""
  videos, dead = {}, []
  for path in _files(pathlib.Path(data_dir), VIDEO_PATTERN):
    for line, row in _rows(path, ("video_id",)):
      try:
        logs.refuse_unreadable_row(row)
        video, tag, author, music = (published_id(row, field) for field in (
            "video_id", "tag", "author_id", "music_id"))
      except logs.MalformedRecord as error:
        dead.append(logs.dead_letter(row, error, f"{path}:{line}"))
        continue
      videos[video] = (tag, author, music, string_id(row.get("upload_type")))
  return videos, dead


def _behavior_record(raw: dict) -> dict:
  """A log row -> a raw behavior record (validation names what is wrong)."""

  def seconds(name, scale):
    value = raw.get(name)
    try:
      return float(value) / scale if value not in (None, "") else value
    except ValueError:
      return value  # left for validation to name

  record = {schema.USER_ID: raw.get("user_id"), schema.ITEM_ID: raw.get("video_id"),
            schema.TIMESTAMP: seconds("time_ms", 1000.0), schema.LABEL: raw.get("is_click"),
            schema.PLAY_TIME: seconds("play_time_ms", 1000.0),
            schema.DURATION: seconds("duration_ms", 1000.0) or 0.0}
  if isinstance(record[schema.TIMESTAMP], float) and math.isfinite(record[schema.TIMESTAMP]):
    record[schema.TIMESTAMP] = int(record[schema.TIMESTAMP])  # inf / NaN: named by validation
  record.update({flag: raw.get(flag) for flag in FLAGS})
  return record


def load_kuairand(data_dir: str | pathlib.Path) -> tuple[dict[str, np.ndarray], list[dict]]:
  """The standard logs of a KuaiRand folder as behavior-log columns (feature_spec.KUAIRAND).

  Returns:
    (columns of valid behaviors, dead letters of malformed log and video-feature rows).
  Raises:
    ValueError: a log file without a column the mapping reads, or no valid behavior at all.
  """
  data_dir = pathlib.Path(data_dir)
  videos, dead = load_video_features(data_dir)
  valid = []
  logs_read = _files(data_dir, LOG_PATTERN)
  for path in logs_read:
    for line, raw in _rows(path, LOG_COLUMNS):
      try:
        logs.refuse_unreadable_row(raw)
        row = logs.validate_record(_behavior_record(raw), KUAIRAND)
      except logs.MalformedRecord as error:
        dead.append(logs.dead_letter(raw, error, f"{path}:{line}"))
        continue
      row.update(zip(KUAIRAND.item_feature_names, videos.get(row[schema.ITEM_ID], (0,) * 4)))
      valid.append(row)
  if not valid:
    raise ValueError(f"{data_dir}: no valid behavior in {[p.name for p in logs_read]} "
                     f"({len(dead)} dead letters)")
  return logs.rows_to_columns(valid, KUAIRAND), dead
