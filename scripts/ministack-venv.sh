#!/usr/bin/env bash
# Prints the path of a `ministack` (the Route53 emulator the tests use), installing it first
# into a virtualenv under the cache directory when it is not there yet.
set -euo pipefail
version="1.5.33"
venv="${FAILOVERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/failoverd}/ministack-$version"
if [ ! -x "$venv/bin/ministack" ]; then
  echo "==> installing ministack $version into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "ministack==$version" >&2
fi
echo "$venv/bin/ministack"
