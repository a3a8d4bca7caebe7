#!/usr/bin/env bash
# Prints the path of a `ruff` (the Python linter scripts/lint-python runs), installing it first
# into a virtualenv under the cache directory when it is not there yet.
set -euo pipefail
version="0.17.6"
venv="${FAILOVERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/failoverd}/ruff-$version"
if [ ! -x "$venv/bin/ruff" ]; then
  echo "==> installing ruff $version into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "ruff==$version" >&2
fi
echo "$venv/bin/ruff"
