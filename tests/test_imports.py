"""The package's imports: no cycle anywhere, and dependencies point along the data flow.

Every import statement counts, the ones inside functions too (they are deferred, not absent).
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("twin_tf", "beam_pipelines", "serving")

# Lowest first. A module may import modules of its own group or of a lower layer; two groups
# of one layer never import each other.
LAYERS = (
    ("twin_tf", "twin_tf.config"),
    ("twin_tf.data",),
    ("twin_tf.clustering", "twin_tf.model"),
    ("twin_tf.training",),
    ("twin_tf.export",),
    ("beam_pipelines", "serving"),
    ("twin_tf.commands",),
    ("twin_tf.experiments",),
    ("twin_tf.cli",),
)


def _modules() -> dict[str, pathlib.Path]:
  found = {}
  for package in PACKAGES:
    for path in (REPO / package).rglob("*.py"):
      parts = path.relative_to(REPO).with_suffix("").parts
      found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return found


def _imports(path: pathlib.Path, modules) -> set[str]:
  """The project's modules that `path` imports (a name imported from a package resolves to
  its submodule when there is one)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
               else node.module for alias in node.names]
    else:
      continue
    found.update(name for name in names if name in modules)
  return found


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _group(module: str) -> tuple[int, str]:
  """(layer, group prefix) of a module: the longest prefix listed in LAYERS."""
  matches = [(len(prefix), rank, prefix) for rank, groups in enumerate(LAYERS)
             for prefix in groups if module == prefix or module.startswith(prefix + ".")]
  if not matches:
    pytest.fail(f"{module} belongs to no layer; add its package to LAYERS")
  _, rank, prefix = max(matches)
  return rank, prefix


def test_no_import_cycle():
  graph = _graph()
  state = {}  # module -> "active" while on the stack, "done" after

  def visit(module, stack):
    state[module] = "active"
    for target in sorted(graph[module]):
      if state.get(target) == "active":
        cycle = stack[stack.index(target):] + [target]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if target not in state:
        visit(target, stack + [target])
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])


def test_dependencies_follow_the_data_flow():
  wrong = []
  for module, targets in _graph().items():
    rank, group = _group(module)
    for target in targets:
      target_rank, target_group = _group(target)
      if target_group != group and target_rank >= rank:
        wrong.append(f"{module} imports {target}")
  assert not wrong, "imports against the layering (tests/test_imports.py LAYERS):\n" + \
      "\n".join(sorted(wrong))


def test_the_walk_sees_real_imports():
  """The checks above would pass vacuously on an empty graph."""
  graph = _graph()
  assert "twin_tf.model.layers.sequence_ops" in graph["twin_tf.model.layers.gsu"]
  assert "twin_tf.clustering.records" in graph["beam_pipelines.cluster_behaviors"]
  assert "beam_pipelines.cluster_behaviors" in graph["twin_tf.commands"]
  assert _group("twin_tf.model.layers.gsu") == (2, "twin_tf.model")
