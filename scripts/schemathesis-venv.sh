#!/usr/bin/env bash
# Prints the path of `schemathesis` (the OpenAPI fuzzer the API test runs against a live
# agent), installing it first into a virtualenv under the cache directory when it is not there.
set -euo pipefail
version="4.32.5"
venv="${FAILOVERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/failoverd}/schemathesis-$version"
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "==> installing schemathesis $version into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
fi
echo "$venv/bin/schemathesis"
