#!/usr/bin/env bash
# Prints the path of a virtualenv holding Patroni (the Postgres failover manager the
# benchmark compares with), installing it first. Patroni runs as the postgres user, which must
# be able to read the venv and its Python: so Debian's /usr/bin/python3 (not one under a home
# directory), and, as root, a venv under /var/cache rather than /root.
set -euo pipefail
version="4.1.5"
if [ "$(id -u)" = 0 ]; then
  cache="${FAILOVERD_SHARED_CACHE:-/var/cache/failoverd}"
else
  cache="${FAILOVERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/failoverd}"
fi
venv="$cache/patroni-$version"
if [ ! -x "$venv/bin/patroni" ]; then
  echo "==> installing patroni $version into $venv" >&2
  mkdir -p "$cache"
  chmod 755 "$cache"
  /usr/bin/python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "patroni[etcd3,psycopg3]==$version" "psycopg[binary]==3.3.9" >&2
  chmod -R a+rX "$venv"
fi
echo "$venv"
