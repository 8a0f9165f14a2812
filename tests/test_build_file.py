"""BUILD (Bazel, for monorepo users) lists exactly the modules and tests on disk."""

import pathlib
import re

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
