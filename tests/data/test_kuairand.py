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


def _copy_with(kuairand_dir, tmp_path, file, column, value, extra=""):
  """A copy of the fixture whose `file`'s first data row has `value` in `column` (and
  `extra` appended to the row); returns (folder, the changed file)."""
  for path in kuairand_dir.iterdir():
    (tmp_path / path.name).write_bytes(path.read_bytes())
  changed = tmp_path / file
  lines = changed.read_bytes().split(b"\n")
  header = lines[0].decode().split(",")
  row = next(csv.reader([lines[1].decode()]))
  row[header.index(column)] = "\0"
  lines[1] = ",".join(f'"{v}"' if "," in v else v for v in row).encode().replace(
      b"\0", value) + extra.encode()
  changed.write_bytes(b"\n".join(lines))
  return tmp_path, changed


@pytest.mark.parametrize("file, column, value, extra, field", [
    ("log_standard_4_08_to_4_21_1k.csv", "time_ms", b"inf", "", "timestamp"),
    ("log_standard_4_08_to_4_21_1k.csv", "time_ms", b"nan", "", "timestamp"),
    ("log_standard_4_08_to_4_21_1k.csv", "user_id", b"7\xff", "", "user_id"),
    ("log_standard_4_08_to_4_21_1k.csv", "is_click", b"1", ",9,9", "row"),
    ("video_features_basic_1k.csv", "author_id", b"inf", "", "author_id"),
    ("video_features_basic_1k.csv", "music_id", b"3\xfe", "", "music_id"),
])
def test_one_bad_value_is_one_dead_letter_not_a_failed_convert(kuairand_dir, tmp_path, file,
                                                                column, value, extra, field):
  """Each of these failed the whole convert (OverflowError, ValueError, UnicodeDecodeError)
  or, for a row longer than its header, was accepted."""
  folder, changed = _copy_with(kuairand_dir, tmp_path, file, column, value, extra)
  columns, dead = kuairand.load_kuairand(folder)
  assert [(d["field"], d["source"]) for d in dead] == [(field, f"{changed}:2")]
  assert len(columns[schema.USER_ID]) > 0


def test_a_log_without_time_or_behaviors_fails_by_name(kuairand_dir, tmp_path):
  for path in kuairand_dir.iterdir():
    (tmp_path / path.name).write_bytes(path.read_bytes())
  logs_ = sorted(tmp_path.glob("log_standard_*.csv"))
  for path in logs_:
    path.write_text(path.read_text().splitlines()[0] + "\n")  # headers only
  with pytest.raises(ValueError, match="no valid behavior"):
    kuairand.load_kuairand(tmp_path)
  header = logs_[0].read_text().replace("time_ms", "time")
  logs_[0].write_text(header)
  with pytest.raises(ValueError, match="no column time_ms"):
    kuairand.load_kuairand(tmp_path)
