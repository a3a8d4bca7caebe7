#!/usr/bin/env bash
# Prints the path of the lab's Python (with psycopg, which the region APIs, the workload and
# the checker use), installing it first into a virtualenv under the cache directory.
set -euo pipefail
version="3.3.9"
venv="${FAILOVERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/failoverd}/lab-psycopg-$version"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import psycopg' 2>/dev/null; then
  echo "==> installing psycopg $version into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "psycopg[binary]==$version" >&2
fi
echo "$venv/bin/python"
