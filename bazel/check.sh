#!/usr/bin/env bash
# `make bazel`: query, build and test the Bazel targets offline, the way a monorepo would.
# Installs Debian's bazel-bootstrap (Bazel 4) and bazel-bootstrap-source when `bazel` is missing.
# Python is the interpreter first on PATH (the Makefile puts the virtualenv there). Bazel's own
# rules repositories (rules_cc, rules_java) cannot be fetched offline: they come from
# BAZEL_MOCK_REPOS, by default the mock repositories of Debian's bazel-bootstrap-source.
# BAZEL_TESTS picks the test targets (default: every one not tagged "heavy").
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bazel >/dev/null; then
  echo "bazel not found: installing Debian's bazel-bootstrap" >&2
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq bazel-bootstrap \
    bazel-bootstrap-source >/dev/null
fi

if [ -z "${BAZEL_MOCK_REPOS:-}" ] && command -v dpkg >/dev/null; then
  BAZEL_MOCK_REPOS=$(dpkg -L bazel-bootstrap-source 2>/dev/null | grep -m1 '/mock_repos$' || true)
fi
if [ -n "${BAZEL_MOCK_REPOS:-}" ]; then
  for repo in rules_cc rules_java; do
    [ -d "$BAZEL_MOCK_REPOS/$repo" ] || { echo "no $repo in $BAZEL_MOCK_REPOS" >&2; exit 1; }
  done
  printf 'build --override_repository=%s=%s/%s\n' \
    rules_cc "$BAZEL_MOCK_REPOS" rules_cc rules_java "$BAZEL_MOCK_REPOS" rules_java \
    > local.bazelrc
fi

echo "python: $(command -v python3) ($(python3 --version))"
targets=$(bazel query //... 2>/dev/null)
echo "bazel query //...: $(echo "$targets" | wc -l) targets"
bazel build //...
bazel test ${BAZEL_TESTS:---test_tag_filters=-heavy //...}
# What each test target's pytest ran, from its test log.
for log in $(find -L bazel-testlogs -name test.log | sort); do
  target=${log#bazel-testlogs/}; target=${target%/test.log}
  echo "//:$target: $(grep -E '^[0-9]+ (passed|failed)' "$log" | tail -1)"
done
