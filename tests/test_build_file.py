"""BUILD (Bazel, for monorepo users) lists exactly the modules and tests on disk, and every
py_test runs pytest on its file."""

import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _targets():
  """{target name: set of srcs} from BUILD's py_library and py_binary rules."""
  text = (REPO / "BUILD").read_text()
  targets = {}
  for rule in re.finditer(r"py_(?:library|binary)\((.*?)\n\)", text, re.S):
    body = rule.group(1)
    name = re.search(r'name = "([^"]+)"', body).group(1)
    srcs = re.search(r"srcs = \[(.*?)\]", body, re.S).group(1)
    targets[name] = set(re.findall(r'"([^"]+\.py)"', srcs))
  return targets


def test_libraries_cover_every_module():
  targets = _targets()
  twin_tf = targets["twin_tf"] | targets["twin_tf_app"] | targets["twin_tf_cli"]
  assert sum(map(len, (targets["twin_tf"], targets["twin_tf_app"], targets["twin_tf_cli"]))
             ) == len(twin_tf), "a module is listed in two twin_tf targets"
  for package, listed in (("twin_tf", twin_tf), ("beam_pipelines", targets["beam_pipelines"]),
                          ("serving", targets["serving"]), ("bench", targets["bench"])):
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / package).rglob("*.py")}
    assert listed == on_disk, f"BUILD {package} srcs differ from the files on disk"


def test_library_target_holds_no_application_code():
  library = _targets()["twin_tf"]
  assert not {s for s in library if s.startswith(("twin_tf/experiments/",
                                                  "twin_tf/commands.py", "twin_tf/cli.py"))}


def test_one_py_test_per_test_file():
  text = (REPO / "BUILD").read_text()
  declared = set(re.findall(r'"([a-z_/]*test_[a-z_]+)"', re.search(r"TESTS = \[(.*?)\]", text,
                                                                     re.S).group(1)))
  tests = REPO / "tests"
  assert declared == {str(p.relative_to(tests).with_suffix("")) for p in tests.rglob("test_*.py")}
  assert "for name in TESTS]" in text


def test_every_py_test_runs_pytest_on_its_file():
  """A py_test whose main is the test file itself imports it and exits 0 without running a
  test; each one must run tests/bazel_pytest.py with its own file as the argument."""
  text = (REPO / "BUILD").read_text()
  rules = re.findall(r"\[py_test\((.*?)\n\) for name in TESTS\]", text, re.S)
  assert len(rules) == 1 and "py_test(" not in text.replace("[py_test(", ""), (
      "BUILD declares py_test outside the one comprehension over TESTS")
  rule = rules[0]
  assert re.search(r'main = "tests/bazel_pytest\.py"', rule)
  assert re.search(r'args = \["\$\(location tests/%s\.py\)" % name\]', rule)
  assert '"tests/bazel_pytest.py"' in re.search(r"srcs = \[(.*?)\]", rule, re.S).group(1)
  assert '"setup.cfg"' in re.search(r"data = \[(.*?)\]", rule, re.S).group(1)


def _run_main(tmp_path, body):
  test_file = tmp_path / "test_probe.py"
  test_file.write_text(body)
  return subprocess.run([sys.executable, str(REPO / "tests" / "bazel_pytest.py"),
                         str(test_file)], cwd=tmp_path, capture_output=True, text=True,
                        timeout=120)


def test_bazel_main_fails_when_a_test_fails(tmp_path):
  failed = _run_main(tmp_path, "def test_one():\n  assert True\n\n"
                     "def test_two():\n  assert False\n")
  assert failed.returncode == 1, failed.stdout
  assert "1 failed, 1 passed" in failed.stdout


def test_bazel_main_passes_only_when_tests_ran(tmp_path):
  passed = _run_main(tmp_path, "def test_one():\n  assert True\n")
  assert passed.returncode == 0 and "1 passed" in passed.stdout
  empty = _run_main(tmp_path, "x = 1\n")
  assert empty.returncode != 0, "a file without tests must not pass"
