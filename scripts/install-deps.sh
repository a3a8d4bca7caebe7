#!/usr/bin/env bash
# Installs what the tests and the lab need and this machine lacks, with apt-get (as root):
# Postgres 15 server binaries, redis-server, redis-cli, promtool, python3 with venv, openssl,
# chromium, runuser and /bin/kill. Does nothing when all of them are there; not as root, it
# names what is missing and the command that installs it, and fails.
# Called by scripts/test.sh and .ci/run.
set -euo pipefail

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v promtool >/dev/null || missing+=(prometheus)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
command -v runuser >/dev/null || missing+=(util-linux)
# The harness stops servers it did not spawn itself (postmasters) with /bin/kill.
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || missing+=(procps)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v openssl >/dev/null || missing+=(openssl)
# The status page is checked in a headless browser.
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${missing[*]}: as root, apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "==> installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Postgres refuses to run as root: as root, the harness runs it as the `postgres` user the
# package creates.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "no user postgres to run Postgres as (the postgresql-15 package creates it)" >&2
  exit 1
fi
