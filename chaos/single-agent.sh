#!/usr/bin/env bash
# One failoverd agent watching a small three-region topology on this machine:
#   - Postgres 15: primary "eu-west-3", streaming replicas "eu-central-1" and "us-east-1"
#   - Redis: master in eu-west-3, replica in eu-central-1
#   - one HTTP API per region (python3 http.server serving /health)
# all on free 127.0.0.1 ports, under one temporary directory.
#
# Usage: chaos/single-agent.sh            run until Ctrl-C, then tear everything down
#        chaos/single-agent.sh --smoke    start, wait until every target is up, print the
#                                         status, tear down; exit non-zero on failure
# Installs missing packages with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-run}
PG_BIN=/usr/lib/postgresql/15/bin
STEPS=6

if [ -t 2 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
step() { printf '%s[%s/%s]%s %s\n' "$BOLD" "$1" "$STEPS" "$PLAIN" "$2" >&2; }
die() { echo "single-agent: $*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# --- 1. packages -------------------------------------------------------------------------
step 1 "checking packages"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
  echo "    installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

LAB=$(mktemp -d /tmp/failoverd-lab.XXXXXX)
chmod 755 "$LAB"
PIDS=()
PG_DIRS=()

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

teardown() {
  local code=$?
  trap - EXIT INT TERM
  echo "tearing down the lab in $LAB" >&2
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for d in "${PG_DIRS[@]}"; do
    [ -f "$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$LAB"
  exit "$code"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- 2. build ----------------------------------------------------------------------------
step 2 "building failoverd"
cargo build --quiet --locked --bin failoverd
BIN=$ROOT/target/debug/failoverd

# --- 3. Postgres -------------------------------------------------------------------------
step 3 "starting Postgres: primary eu-west-3, replicas eu-central-1 and us-east-1"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$LAB"
declare -A PG_PORT
for region in eu-west-3 eu-central-1 us-east-1; do PG_PORT[$region]=$(free_port); done
primary=$LAB/pg-eu-west-3
PG_DIRS+=("$primary")
as_pg "$PG_BIN/initdb" -D "$primary" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
cat >>"$primary/postgresql.conf" <<CONF
port = ${PG_PORT[eu-west-3]}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$LAB'
wal_level = replica
max_wal_senders = 10
hot_standby = on
wal_sender_timeout = 5s
wal_receiver_status_interval = 1s
cluster_name = 'pg-eu-west-3'
CONF
as_pg "$PG_BIN/pg_ctl" -D "$primary" -l "$LAB/pg-eu-west-3.log" -w start >/dev/null
for region in eu-central-1 us-east-1; do
  dir=$LAB/pg-$region
  PG_DIRS+=("$dir")
  as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "${PG_PORT[eu-west-3]}" -U postgres \
    -D "$dir" -R -X stream -c fast >/dev/null
  printf "port = %s\ncluster_name = 'pg-%s'\n" "${PG_PORT[$region]}" "$region" >>"$dir/postgresql.conf"
  as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$LAB/pg-$region.log" -w start >/dev/null
done

# --- 4. Redis and the APIs ---------------------------------------------------------------
step 4 "starting Redis (master eu-west-3, replica eu-central-1) and one API per region"
REDIS_MASTER=$(free_port)
REDIS_REPLICA=$(free_port)
redis_common=(--bind 127.0.0.1 --save "" --appendonly no --protected-mode no --dir "$LAB")
redis-server --port "$REDIS_MASTER" "${redis_common[@]}" --logfile "$LAB/redis-master.log" &
PIDS+=($!)
redis-server --port "$REDIS_REPLICA" "${redis_common[@]}" --logfile "$LAB/redis-replica.log" \
  --replicaof 127.0.0.1 "$REDIS_MASTER" &
PIDS+=($!)
declare -A API_PORT
for region in eu-west-3 eu-central-1 us-east-1; do
  API_PORT[$region]=$(free_port)
  mkdir -p "$LAB/api-$region"
  printf '{"status":"ok","region":"%s"}' "$region" >"$LAB/api-$region/health"
  python3 -m http.server --bind 127.0.0.1 --directory "$LAB/api-$region" "${API_PORT[$region]}" \
    >"$LAB/api-$region.log" 2>&1 &
  PIDS+=($!)
done

# --- 5. the agent ------------------------------------------------------------------------
step 5 "starting the failoverd agent"
ADMIN_PORT=$(free_port)
CONFIG=$LAB/failoverd.toml
{
  cat <<CONF
# Written by chaos/single-agent.sh: one agent watching all three regions.
[agent]
id = "eu-west-3-a"
region = "eu-west-3"
admin_listen = "127.0.0.1:$ADMIN_PORT"
data_dir = "$LAB/failoverd"
probe_scope = "all"
log_format = "text"

# One agent watches and reports; failing over takes the three-agent cluster.
[failover]
automatic = false

[probe]
interval = "1s"
timeout = "500ms"
rise = 2
fall = 3
CONF
  for region in eu-west-3 eu-central-1 us-east-1; do
    cat <<CONF

[[regions]]
name = "$region"
weight = 100
[[regions.api]]
name = "api"
url = "http://127.0.0.1:${API_PORT[$region]}/health"
json_pointer = "/status"
json_equals = "ok"
CONF
  done
  echo
  echo '[postgres]'
  echo 'cluster = "main"'
  for region in eu-west-3 eu-central-1 us-east-1; do
    cat <<CONF
[[postgres.members]]
name = "pg-$region"
region = "$region"
dsn = "host=127.0.0.1 port=${PG_PORT[$region]} user=postgres dbname=postgres"
CONF
  done
  cat <<CONF

[[redis.shards]]
name = "sessions"
mode = "replication"
members = [
  { name = "redis-eu-west-3", region = "eu-west-3", url = "redis://127.0.0.1:$REDIS_MASTER" },
  { name = "redis-eu-central-1", region = "eu-central-1", url = "redis://127.0.0.1:$REDIS_REPLICA" },
]
CONF
} >"$CONFIG"
"$BIN" check-config "$CONFIG" >/dev/null
"$BIN" run --config "$CONFIG" 2>"$LAB/failoverd.log" &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
ADMIN=http://127.0.0.1:$ADMIN_PORT

# --- 6. wait until every target is up ----------------------------------------------------
step 6 "waiting until every target is up"
status_table() {
  python3 - "$ADMIN/v1/status" <<'PY'
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
color = sys.stdout.isatty()
paint = {"up": "32", "down": "31", "unknown": "33"}
def mark(state):
    text = f"● {state:<8}"
    return f"\033[{paint[state]}m{text}\033[0m" if color else text
print(f"{'TARGET':<36} {'REGION':<14} {'STATE':<10} {'LATENCY':>9}  DETAIL")
for t in status["targets"]:
    last = t.get("last") or {}
    obs = last.get("observation") or {}
    facts = obs.get("facts") or {}
    detail = last.get("error") or facts.get("role") or (f"HTTP {facts['status']}" if "status" in facts else "")
    lat = f"{obs['latency_ms']:.1f}ms" if "latency_ms" in obs else "-"
    print(f"{t['id']:<36} {t['region']:<14} {mark(t['state'])} {lat:>9}  {detail}")
s = status["summary"]
print(f"\n{s['up']} up, {s['down']} down, {s['unknown']} unknown")
PY
}
all_up() {
  python3 - "$ADMIN/v1/status" <<'PY'
import json, sys, urllib.request
try:
    s = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))["summary"]
except Exception:
    sys.exit(1)
sys.exit(0 if s["down"] == 0 and s["unknown"] == 0 else 1)
PY
}
for _ in $(seq 1 60); do
  kill -0 "$AGENT_PID" 2>/dev/null || { cat "$LAB/failoverd.log" >&2; die "the agent exited"; }
  all_up && break
  printf '.' >&2
  sleep 0.5
done
echo >&2
status_table
all_up || { tail -n 30 "$LAB/failoverd.log" >&2; die "not every target came up within 30 s"; }

if [ "$MODE" = "--smoke" ]; then
  curl_ok=$(python3 -c "import urllib.request;print(urllib.request.urlopen('$ADMIN/readyz').status)")
  [ "$curl_ok" = 200 ] || die "/readyz answered $curl_ok"
  echo "smoke: every target up, /readyz 200" >&2
  exit 0
fi

cat <<MSG

failoverd is running (logs: $LAB/failoverd.log, config: $CONFIG)
  status    curl -s $ADMIN/v1/status | python3 -m json.tool
  metrics   curl -s $ADMIN/metrics | grep ^failoverd_target_state
  ready     curl -s $ADMIN/readyz

Things to try in another terminal:
  crash the primary    kill -9 \$(head -1 $primary/postmaster.pid)
  restart it           $( [ "$(id -u)" = 0 ] && printf 'runuser -u postgres -- ' )$PG_BIN/pg_ctl -D $primary -l $LAB/pg-eu-west-3.log start
  pause a replica      psql -h 127.0.0.1 -p ${PG_PORT[eu-central-1]} -U postgres -c 'SELECT pg_wal_replay_pause()'
  kill the Redis master  kill -9 ${PIDS[0]}

Ctrl-C stops everything and removes $LAB.
MSG
while kill -0 "$AGENT_PID" 2>/dev/null; do
  sleep 5
  printf '\033[2m%s\033[0m\n' "$(date +%T)"
  status_table
done
wait "$AGENT_PID"
