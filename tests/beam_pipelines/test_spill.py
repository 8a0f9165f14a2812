"""beam_pipelines.spill: grouped values through files give the groups of the shuffle."""

import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines import spill


def _groups(folder):
  """Random column batches under 5 keys, grouped with spilling to `folder` (None: not):
  per key, its values' sums in a sorted list (order-free), and the dtypes seen."""
  rng = np.random.default_rng(0)
  elements = [(int(k), {"a": rng.integers(-9, 9, n).astype(np.int16),
                        "b": rng.standard_normal((n, 3)).astype(np.float32)})
              for k, n in zip(rng.integers(0, 5, 60), rng.integers(0, 400, 60))]
  expected = {}
  for key, value in elements:
    expected.setdefault(key, []).append((int(value["a"].sum()), round(float(
        value["b"].sum()), 3), str(value["a"].dtype), value["b"].shape[1]))
  with TestPipeline(runner="FnApiRunner") as pipeline:
    grouped = (spill.spilled(pipeline | beam.Create(elements), folder)
               | beam.GroupByKey()
               | beam.MapTuple(lambda key, values: (key, sorted(
                   (int(v["a"].sum()), round(float(v["b"].sum()), 3), str(v["a"].dtype),
                    v["b"].shape[1]) for v in spill.load(values)))))
    assert_that(grouped, equal_to([(k, sorted(v)) for k, v in expected.items()]))


def test_spilled_values_group_as_the_shuffle_groups_them(tmp_path):
  _groups(None)
  _groups(str(tmp_path / "spill"))
  files = list((tmp_path / "spill").iterdir())
  assert files and all(f.suffix == ".pickles" for f in files)
  spill.remove_folder(str(tmp_path / "spill"))
  assert not (tmp_path / "spill").exists()


def test_a_spill_file_cut_short_is_an_error_naming_it(tmp_path):
  path = tmp_path / "a.pickles"
  data = pickle.dumps({"x": np.arange(100)})
  path.write_bytes(data[:-10])
  with pytest.raises(IOError, match="a.pickles.*cut short"):
    spill.load([spill.Spilled(str(path), 0, len(data))])
  path.write_bytes(b"xx" + data)
  (value,) = spill.load([spill.Spilled(str(path), 2, len(data))])
  np.testing.assert_array_equal(value["x"], np.arange(100))
  assert spill.load([7]) == [7]  # values that were not spilled pass as they are


def test_local_runners_spill_under_the_output_and_others_use_their_shuffle():
  assert spill.folder_for("out", None, "FnApiRunner").startswith("out/spill-")
  assert spill.folder_for("gs://b/out/", None, None).startswith("gs://b/out/spill-")
  assert spill.folder_for("out", "/tmp/s", "DataflowRunner").startswith("/tmp/s/spill-")
  assert spill.folder_for("out", None, "DataflowRunner") is None
  assert spill.folder_for("out", "none", "FnApiRunner") is None
  first, second = (spill.folder_for("out", None, None) for _ in range(2))
  assert first != second  # one folder per run
