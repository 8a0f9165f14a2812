"""The main of every py_test in BUILD: pytest on the test files given as arguments.

Bazel runs a py_test's main as a script and passes only on exit status 0, so the status is
pytest's own: a failing (or missing) test fails the target. Slow tests stay deselected, as in
`make test`.
"""

import sys

import pytest

if __name__ == "__main__":
  sys.exit(pytest.main(["-q", "-m", "not slow", "-p", "no:cacheprovider", *sys.argv[1:]]))
