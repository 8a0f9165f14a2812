"""requirement() as rules_python's pip_parse spells it, for a checkout without rules_python.

Each requirement is an empty py_library: the packages themselves are the ones installed for
the Python interpreter that Bazel finds on PATH (the project's virtualenv, `make setup`).
"""

# Every distribution BUILD names; setup.cfg pins their versions.
PACKAGES = [
    "apache-beam",
    "grpcio",
    "hypothesis",
    "keras",
    "keras-rs",
    "lightgbm",
    "matplotlib",
    "numpy",
    "pyarrow",
    "pytest",
    "pyyaml",
    "scann",
    "scipy",
    "tensorflow",
    "tensorflow-serving-api",
]

def target_name(package):
    return package.lower().replace("-", "_").replace(".", "_")

def requirement(package):
    if package not in PACKAGES:
        fail("@pypi has no package %r: add it to bazel/pypi/requirements.bzl" % package)
    return "@pypi//:" + target_name(package)
