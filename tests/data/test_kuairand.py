"""The KuaiRand loader on a SYNTHETIC folder in the published format (tests/conftest.py)."""

import csv
import zlib

import numpy as np
import pytest

from twin_tf.data import kuairand, schema
from twin_tf.data.feature_spec import KUAIRAND


def _rows(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_log_rows_map_onto_the_schema(kuairand_dir):
  columns, dead = kuairand.load_kuairand(kuairand_dir)
  raw = _rows(kuairand_dir / "log_standard_4_08_to_4_21_1k.csv") + _rows(
      kuairand_dir / "log_standard_4_22_to_5_08_1k.csv")
  videos = {int(r["video_id"]): r for r in _rows(kuairand_dir / "video_features_basic_1k.csv")}
  assert not dead and len(columns[schema.USER_ID]) == len(raw)
  assert set(columns) == set(KUAIRAND.field_names)
  for i in (0, len(raw) // 2, len(raw) - 1):
    r = raw[i]
    assert columns[schema.USER_ID][i] == int(r["user_id"])
    assert columns[schema.TIMESTAMP][i] == int(r["time_ms"]) // 1000
    assert columns[schema.PLAY_TIME][i] == pytest.approx(int(r["play_time_ms"]) / 1000)
    assert columns[schema.DURATION][i] == pytest.approx(int(r["duration_ms"]) / 1000)
    assert columns[schema.LABEL][i] == int(r["is_click"])
    for flag in ("is_like", "is_follow", "is_comment"):
      assert columns[flag][i] == int(r[flag])
    video = videos.get(int(r["video_id"]))
    if video is None:  # not in the features file: unknown features
      assert all(columns[f][i] == 0 for f in KUAIRAND.item_feature_names)
      continue
    assert columns["tag"][i] == int(video["tag"].split(",")[0])
    assert columns["author_id"][i] == int(video["author_id"])
    assert columns["music_id"][i] == int(video["music_id"] or 0)
    assert columns["upload_type"][i] == zlib.crc32(video["upload_type"].encode())
  missing = columns[schema.ITEM_ID] == 299
  assert missing.any() and np.all(columns["author_id"][missing] == 0)
  assert np.all(columns["music_id"][columns[schema.ITEM_ID] == 7] == 0)  # empty music_id


def test_malformed_rows_become_dead_letters_naming_file_line_and_field(kuairand_dir, tmp_path):
  for path in kuairand_dir.iterdir():
    (tmp_path / path.name).write_text(path.read_text())
  log = tmp_path / "log_standard_4_08_to_4_21_1k.csv"
  lines = log.read_text().splitlines()
  header = lines[0].split(",")
  bad = lines[1].split(",")
  bad[header.index("time_ms")] = "soon"
  log.write_text("\n".join([lines[0], ",".join(bad)] + lines[2:]) + "\n")
  videos = tmp_path / "video_features_basic_1k.csv"
  vlines = videos.read_text().splitlines()
  vheader = vlines[0].split(",")
  vbad = next(csv.reader([vlines[1]]))
  vbad[vheader.index("author_id")] = "x"
  videos.write_text("\n".join([vlines[0], ",".join(f'"{v}"' for v in vbad)] + vlines[2:])
                    + "\n")
  columns, dead = kuairand.load_kuairand(tmp_path)
  assert len(dead) == 2
  by_field = {d["field"]: d for d in dead}
  assert by_field["timestamp"]["source"] == f"{log}:2"
  assert by_field["author_id"]["source"] == f"{videos}:2"
  assert len(columns[schema.USER_ID]) == sum(
      len(_rows(p)) for p in tmp_path.glob("log_standard_*.csv")) - 1


def test_a_wrong_folder_names_the_files_expected(tmp_path):
  with pytest.raises(FileNotFoundError, match="video_features_basic_"):
    kuairand.load_kuairand(tmp_path)
