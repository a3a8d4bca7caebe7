#!/usr/bin/env bash
# bench/probe_cost.sh: what an HTTP probe costs failoverd in CPU and memory.
#
# Why: Prometheus blackbox_exporter, the usual alternative, was recorded on this kind of
# machine at about 800 µs of CPU per HTTP probe (at 1000 probes/s, ~35 MB RSS). Our goals are a third of that
# with a new connection per probe (`connection = "fresh"`, <= 267 µs), under 60 µs with a kept
# connection (`connection = "reuse"`), and under 40 MB RSS at 1000 targets. This script
# measures those figures on this machine, so a change to the prober can be checked against
# them. It is run by hand, not in CI: the numbers depend on the machine and on what else runs.
#
# What it does:
#   1. `cargo build --release`.
#   2. Starts a private nginx on 127.0.0.1 (temp prefix, 2 workers, keepalive, no access log)
#      that answers `GET /health` with 200 "ok".
#   3. For each target count N (TARGETS) and each connection mode (MODES), writes a config
#      with N API targets (interval 1 s, timeout 500 ms, so N probes/s), starts
#      `failoverd run`, waits for /readyz, warms up, then over DURATION seconds reads
#        - utime+stime of the process from /proc/PID/stat (clock ticks, `getconf CLK_TCK`),
#        - the sum of every `failoverd_probes_total` series from /metrics,
#        - VmHWM (peak RSS) from /proc/PID/status,
#        - nginx's accepted connections (stub_status), to show how often a connection was
#          actually reused,
#      and derives probes/s, CPU µs per probe, % of one core and peak RSS.
#   4. If `prometheus-blackbox-exporter` (Debian package) is installed, measures it the same
#      way at N probes/s, driven by a few rate-limited serial curl loops (bounded in count).
#   5. Prints a markdown table to stdout with PASS/MISS against the goals.
#
# Caveats, printed with the results as well:
#   - All targets point at one nginx, so they share one host:port. failoverd shares one HTTP
#     client (and so one connection pool, keeping idle connections per host for reuse) among
#     all targets of the same mode: in `reuse` mode the N targets take turns on one or a few
#     connections instead of holding N of them, as they would with N real hosts. Each target
#     has its own query string (/health?t=i) but the pool is keyed by scheme+host+port, so
#     that changes nothing about pooling. Set PORTS=K to have nginx listen on K ports and
#     spread the targets over them (PORTS=N gives every target its own host:port).
#   - CPU is counted in clock ticks (usually 10 ms): keep DURATION x N large enough
#     (the defaults give 30 000 probes per row) or the per-probe figure is coarse.
#   - The client (failoverd) and the server (nginx) share this machine's cores.
#
# Usage:  bash bench/probe_cost.sh
# Environment:
#   TARGETS="100 1000"  target counts          MODES="fresh reuse"  connection modes
#   DURATION=30         seconds measured       WARMUP=5             seconds before measuring
#   PORTS=1             nginx ports to spread the targets over
#   BLACKBOX=auto       auto: measure blackbox_exporter if installed; 0: never
#   READY_DEADLINE=60   seconds to wait for /readyz
# Everything listens on and talks to 127.0.0.1 only. Every process it starts is stopped by
# PID on exit, and its temp dir is removed.

set -euo pipefail

TARGETS=${TARGETS:-"100 1000"}
MODES=${MODES:-"fresh reuse"}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
PORTS=${PORTS:-1}
BLACKBOX=${BLACKBOX:-auto}
READY_DEADLINE=${READY_DEADLINE:-60}

# The recorded baseline (measured earlier on this kind of machine, not in this run) and the goals.
BASELINE_US=800
BASELINE_RATE=1000
BASELINE_RSS_MB=35
GOAL_FRESH_US=267
GOAL_REUSE_US=60
GOAL_RSS_MB=40
GOAL_RSS_TARGETS=1000

log() { printf '%s\n' "$*" >&2; }
die() {
    log "probe_cost: $*"
    exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_positive() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0)); }
for n in $TARGETS; do
    is_positive "$n" || die "TARGETS must be positive integers, got '$n'"
done
for m in $MODES; do
    [[ $m == fresh || $m == reuse ]] || die "MODES may only contain fresh and reuse, got '$m'"
done
is_positive "$DURATION" || die "DURATION must be a positive integer"
is_uint "$WARMUP" || die "WARMUP must be a non-negative integer"
is_positive "$READY_DEADLINE" || die "READY_DEADLINE must be positive"
if ! is_positive "$PORTS" || ((PORTS > 2000)); then die "PORTS must be in 1..2000"; fi

for tool in curl awk getconf; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/failoverd
CLK_TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/probe_cost.XXXXXX")
CURL=(curl --noproxy '*' -sS)

# ---------------------------------------------------------------------------------------
# Process bookkeeping: every PID we start is tracked and stopped on exit.

TRACKED=()

track() { TRACKED+=("$1"); }
untrack() {
    local keep=() p
    for p in ${TRACKED[@]+"${TRACKED[@]}"}; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    TRACKED=(${keep[@]+"${keep[@]}"})
}

# Whether PID runs (a zombie, exited but not yet reaped, does not count).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# Stops PID (SIGTERM, then SIGKILL after 10 s) and its direct children (nginx workers),
# reaps it and sets STOP_RC to its exit status.
STOP_RC=0
stop_pid() {
    local pid=$1 children i
    children=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "  PID $pid did not stop within 10 s of SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    STOP_RC=0
    wait "$pid" 2>/dev/null || STOP_RC=$?
    for i in $children; do
        if alive "$i"; then kill -KILL "$i" 2>/dev/null || true; fi
    done
    untrack "$pid"
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in ${TRACKED[@]+"${TRACKED[@]}"}; do
        stop_pid "$pid"
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------
# Helpers.

# A port in 20000..31999 (below the usual ephemeral range) with nothing listening on
# 127.0.0.1, followed by COUNT-1 free ports after it.
free_ports() {
    local count=$1 base p try ok
    for ((try = 0; try < 200; try++)); do
        base=$((20000 + RANDOM % (12000 - count)))
        ok=1
        for ((p = base; p < base + count; p++)); do
            # Connection refused means nothing listens there.
            if (: <>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
                ok=0
                break
            fi
        done
        if ((ok)); then
            echo "$base"
            return 0
        fi
    done
    die "no run of $count free ports found on 127.0.0.1"
}

http_code() {
    "${CURL[@]}" -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

# utime+stime of PID in clock ticks (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat") || return 1
    stat=${stat##*) }
    awk '{ print $12 + $13 }' <<<"$stat"
}

# A field of /proc/PID/status in kB (VmHWM, VmRSS).
status_kb() {
    awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"
}

# "total ok": failoverd_probes_total summed over every series, and over result="ok".
probe_counts() {
    "${CURL[@]}" -f --max-time 10 "http://$1/metrics" |
        awk '/^failoverd_probes_total[{ ]/ { t += $NF; if ($0 ~ /result="ok"/) o += $NF }
             END { printf "%d %d\n", t, o }'
}

# "accepts requests" of our nginx, less this script's own stub_status reads (each is one
# connection and one request), or "0 0" without stub_status. Call it in the current shell
# (not in $(...)) so that the count of reads is kept.
STUB_READS=0
nginx_counts() {
    if ((HAVE_STUB)); then
        STUB_READS=$((STUB_READS + 1))
        "${CURL[@]}" -f --max-time 5 "http://127.0.0.1:$NGINX_PORT/nginx_status" |
            awk -v own="$STUB_READS" 'NR == 3 { print $1 - own, $3 - own }'
    else
        echo "0 0"
    fi
}

# Runs a counter function in the current shell and reads its two numbers into the named
# variables: `sample VAR1 VAR2 FUNCTION [ARG]`.
sample() {
    local -n _a=$1 _b=$2
    "${@:3}" >"$WORK/sample" || return 1
    read -r _a _b <"$WORK/sample" || return 1
    [[ -n $_a && -n $_b ]]
}

now() { date +%s.%N; }

# Sleeps SECONDS one second at a time, printing a dot each second, tracking the highest
# VmRSS of PID in PEAK_RSS_KB; fails if PID dies.
PEAK_RSS_KB=0
wait_watching() {
    local secs=$1 pid=$2 i rss
    for ((i = 0; i < secs; i++)); do
        sleep 1
        alive "$pid" || return 1
        rss=$(status_kb "$pid" VmRSS || echo 0)
        ((rss > PEAK_RSS_KB)) && PEAK_RSS_KB=$rss
        printf '.' >&2
    done
}

# ---------------------------------------------------------------------------------------
# 1. Build.

log "==> cargo build --release (in $ROOT)"
(cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
[[ -x $BIN ]] || die "no binary at $BIN after the build"

# ---------------------------------------------------------------------------------------
# 2. nginx.

NGINX=$(command -v nginx || true)
[[ -n $NGINX ]] || { [[ -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx; }
if [[ -z $NGINX ]]; then
    if ((EUID == 0)); then
        log "==> nginx is missing: apt-get install -y nginx-light"
        apt-get install -y nginx-light >&2 ||
            { apt-get update >&2 && apt-get install -y nginx-light >&2; } ||
            die "cannot install nginx-light"
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    else
        die "nginx is not installed; install it with: sudo apt-get install nginx-light"
    fi
fi
HAVE_STUB=0
if "$NGINX" -V 2>&1 | grep -q http_stub_status_module; then HAVE_STUB=1; fi

NGINX_DIR=$WORK/nginx
mkdir -p "$NGINX_DIR/tmp" "$NGINX_DIR/logs"
NGINX_PORT=$(free_ports "$PORTS")
listen_lines=""
for ((p = NGINX_PORT; p < NGINX_PORT + PORTS; p++)); do
    listen_lines+="        listen 127.0.0.1:$p;"$'\n'
done
stub_location=""
if ((HAVE_STUB)); then
    stub_location="        location = /nginx_status { stub_status; }"
fi
user_line=""
# As root, workers would otherwise run as "nobody"; root keeps the temp prefix readable.
if ((EUID == 0)); then user_line="user root;"; fi
cat >"$NGINX_DIR/nginx.conf" <<EOF
$user_line
worker_processes 2;
worker_rlimit_nofile 16384;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    default_type text/plain;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    client_body_temp_path $NGINX_DIR/tmp/body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;
    server {
$listen_lines
        location = /health { return 200 "ok"; }
$stub_location
    }
}
EOF

log "==> starting nginx on 127.0.0.1:$NGINX_PORT$( ((PORTS > 1)) && echo "..$((NGINX_PORT + PORTS - 1))")"
"$NGINX" -p "$NGINX_DIR/" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/logs/error.log" \
    -g 'daemon off;' 2>>"$NGINX_DIR/logs/stderr.log" &
NGINX_PID=$!
track "$NGINX_PID"
for ((i = 0; i < 50; i++)); do
    [[ $(http_code "http://127.0.0.1:$NGINX_PORT/health") == 200 ]] && break
    alive "$NGINX_PID" || break
    sleep 0.1
done
if [[ $(http_code "http://127.0.0.1:$NGINX_PORT/health") != 200 ]]; then
    cat "$NGINX_DIR/logs/error.log" "$NGINX_DIR/logs/stderr.log" >&2 2>/dev/null || true
    die "nginx did not come up on 127.0.0.1:$NGINX_PORT"
fi

# ---------------------------------------------------------------------------------------
# 3. failoverd runs.

BLACKBOX_BIN=""
if [[ $BLACKBOX != 0 ]]; then
    BLACKBOX_BIN=$(command -v prometheus-blackbox-exporter || command -v blackbox_exporter || true)
fi
BLACKBOX_NOTE=""
if [[ -n $BLACKBOX_BIN ]] && ((!HAVE_STUB)); then
    BLACKBOX_NOTE="blackbox_exporter is installed but not measured: counting its probes needs nginx's stub_status module."
    BLACKBOX_BIN=""
fi

n_targets=$(wc -w <<<"$TARGETS")
n_modes=$(wc -w <<<"$MODES")
TOTAL_STEPS=$((n_targets * n_modes))
[[ -n $BLACKBOX_BIN ]] && TOTAL_STEPS=$((TOTAL_STEPS + n_targets))
STEP=0

# One result row per line: targets mode rate us_per_probe pct_core rss_mb conns_per_probe
# failed_probes total_probes nginx_requests_per_probe
RESULTS=()
NOTES=()

write_config() { # FILE N MODE ADMIN_PORT DATA_DIR
    local file=$1 n=$2 mode=$3 admin_port=$4 data_dir=$5 i port
    {
        cat <<EOF
[agent]
id = "bench"
region = "bench"
admin_listen = "127.0.0.1:$admin_port"
data_dir = "$data_dir"
shutdown_grace = "5s"

[probe]
interval = "1s"
timeout = "500ms"

[[regions]]
name = "bench"
EOF
        for ((i = 1; i <= n; i++)); do
            port=$((NGINX_PORT + (i - 1) % PORTS))
            printf '\n[[regions.api]]\nname = "t%05d"\nurl = "http://127.0.0.1:%d/health?t=%d"\nconnection = "%s"\n' \
                "$i" "$port" "$i" "$mode"
        done
    } >"$file"
}

# Measures PID over DURATION after a warm-up; COUNTER is a function printing "total ok"
# probes so far. Appends a row to RESULTS.
measure() { # LABEL N MODE PID COUNTER [COUNTER_ARG]
    local label=$1 n=$2 mode=$3 pid=$4 counter=$5 arg=${6:-}
    local c0 ok0 c1 ok1 t0 t1 cpu0 cpu1 nc0 nc1 nr0 nr1 hwm end_rss

    log "[$STEP/$TOTAL_STEPS] $label: warming up $WARMUP s"
    PEAK_RSS_KB=0
    wait_watching "$WARMUP" "$pid" || return 1
    ((WARMUP > 0)) && printf '\n' >&2

    sample c0 ok0 "$counter" "$arg" || return 1
    sample nc0 nr0 nginx_counts || return 1
    t0=$(now)
    cpu0=$(cpu_ticks "$pid") || return 1
    log "[$STEP/$TOTAL_STEPS] $label: measuring $DURATION s"
    wait_watching "$DURATION" "$pid" || return 1
    printf '\n' >&2
    cpu1=$(cpu_ticks "$pid") || return 1
    t1=$(now)
    sample c1 ok1 "$counter" "$arg" || return 1
    sample nc1 nr1 nginx_counts || return 1
    hwm=$(status_kb "$pid" VmHWM || echo 0)
    ((hwm > PEAK_RSS_KB)) && PEAK_RSS_KB=$hwm
    end_rss=$(status_kb "$pid" VmRSS || echo 0)

    RESULTS+=("$(awk -v n="$n" -v mode="$mode" -v c="$((c1 - c0))" -v ok="$((ok1 - ok0))" \
        -v ticks="$((cpu1 - cpu0))" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
        -v rss="$PEAK_RSS_KB" -v end_rss="$end_rss" -v nc="$((nc1 - nc0))" -v nr="$((nr1 - nr0))" -v stub="$HAVE_STUB" 'BEGIN {
            wall = t1 - t0; cpu_us = ticks / hz * 1e6
            rate = c / wall
            us = c > 0 ? cpu_us / c : -1
            pct = cpu_us / 1e6 / wall * 100
            conns = (stub && c > 0) ? sprintf("%.3f", nc / c) : "n/a"
            reqs = (stub && c > 0) ? sprintf("%.3f", nr / c) : "n/a"
            printf "%d %s %.1f %.1f %.1f %.1f %s %d %d %s %.1f\n", n, mode, rate, us, pct, rss / 1024, conns, c - ok, c, reqs, end_rss / 1024
        }')")
    log "    -> ${RESULTS[-1]}"
}

for n in $TARGETS; do
    for mode in $MODES; do
        STEP=$((STEP + 1))
        label="$n targets $mode"
        run_dir=$WORK/run-$n-$mode
        mkdir -p "$run_dir/data"
        admin_port=$(free_ports 1)
        write_config "$run_dir/failoverd.toml" "$n" "$mode" "$admin_port" "$run_dir/data"
        admin=127.0.0.1:$admin_port

        log "[$STEP/$TOTAL_STEPS] $label: starting failoverd (admin $admin)"
        "$BIN" run --config "$run_dir/failoverd.toml" --log-format json \
            >"$run_dir/stdout.log" 2>"$run_dir/failoverd.log" &
        pid=$!
        track "$pid"

        deadline=$((SECONDS + READY_DEADLINE))
        while [[ $(http_code "http://$admin/readyz") != 200 ]]; do
            if ! alive "$pid"; then
                tail -n 20 "$run_dir/failoverd.log" >&2 || true
                die "$label: failoverd exited before it was ready (log above)"
            fi
            if ((SECONDS >= deadline)); then
                tail -n 20 "$run_dir/failoverd.log" >&2 || true
                die "$label: /readyz not 200 within $READY_DEADLINE s"
            fi
            sleep 0.2
        done

        if ! measure "$label" "$n" "$mode" "$pid" probe_counts "$admin"; then
            tail -n 20 "$run_dir/failoverd.log" >&2 || true
            die "$label: measurement failed (did failoverd die? log above)"
        fi

        stop_pid "$pid"
        if ((STOP_RC != 0)); then
            NOTES+=("$label: failoverd exited with status $STOP_RC after SIGTERM (expected 0).")
        fi
        bad=$(grep -cE '"level":"(WARN|ERROR)"' "$run_dir/failoverd.log" || true)
        if ((bad > 0)); then
            NOTES+=("$label: $bad WARN/ERROR log lines, first: $(grep -m1 -E '"level":"(WARN|ERROR)"' "$run_dir/failoverd.log" | cut -c1-300)")
        fi
    done
done

# ---------------------------------------------------------------------------------------
# 4. blackbox_exporter, if installed: same nginx, N probes/s, fresh connections (it has no
#    other mode). Driven by serial `curl --rate` loops of at most 100 probes/s each (curl
#    only rate-limits serial transfers), each bounded to a fixed number of requests. Its
#    probes are counted as requests reaching nginx.

# "total ok" probes of blackbox_exporter: the requests that reached nginx (every one is a
# probe: nothing else talks to nginx then). Whether they passed is not counted.
bb_counts() {
    local requests
    nginx_counts >"$WORK/bb_sample" || return 1
    requests=$(awk '{ print $2 }' "$WORK/bb_sample")
    echo "$requests $requests"
}

if [[ -n $BLACKBOX_BIN ]]; then
    for n in $TARGETS; do
        STEP=$((STEP + 1))
        label="$n probes/s blackbox_exporter"
        run_dir=$WORK/run-$n-blackbox
        mkdir -p "$run_dir"
        bb_port=$(free_ports 1)
        cat >"$run_dir/blackbox.yml" <<EOF
modules:
  http_2xx:
    prober: http
    timeout: 500ms
    http:
      preferred_ip_protocol: ip4
EOF
        log "[$STEP/$TOTAL_STEPS] $label: starting $BLACKBOX_BIN on 127.0.0.1:$bb_port"
        "$BLACKBOX_BIN" --config.file="$run_dir/blackbox.yml" \
            --web.listen-address="127.0.0.1:$bb_port" --log.level=warn \
            >"$run_dir/stdout.log" 2>"$run_dir/blackbox.log" &
        bb_pid=$!
        track "$bb_pid"
        for ((i = 0; i < 100; i++)); do
            [[ $(http_code "http://127.0.0.1:$bb_port/-/healthy") == 200 ]] && break
            alive "$bb_pid" || break
            sleep 0.1
        done
        [[ $(http_code "http://127.0.0.1:$bb_port/-/healthy") == 200 ]] ||
            die "$label: blackbox_exporter did not come up (see $run_dir/blackbox.log)"

        drivers=$(((n + 99) / 100))
        total_secs=$((WARMUP + DURATION + 10))
        driver_pids=()
        for ((d = 0; d < drivers; d++)); do
            rate=$((n / drivers + (d < n % drivers ? 1 : 0)))
            port=$((NGINX_PORT + d % PORTS))
            target="http://127.0.0.1:$port/health"
            "${CURL[@]}" --rate "$rate/s" --max-time 2 -o /dev/null \
                "http://127.0.0.1:$bb_port/probe?module=http_2xx&target=$target&d=$d&i=[1-$((rate * total_secs))]" \
                >/dev/null 2>&1 &
            driver_pids+=("$!")
            track "$!"
        done
        if ! measure "$label" "$n" blackbox "$bb_pid" bb_counts; then
            die "$label: measurement failed (see $run_dir/blackbox.log)"
        fi
        for d in "${driver_pids[@]}"; do stop_pid "$d"; done
        stop_pid "$bb_pid"
    done
fi

# ---------------------------------------------------------------------------------------
# 5. Report.

bb_us_for() { # measured blackbox µs/probe at N targets, or empty
    local row
    for row in "${RESULTS[@]}"; do
        read -r -a f <<<"$row"
        if [[ ${f[0]} == "$1" && ${f[1]} == blackbox ]]; then
            echo "${f[3]}"
            return 0
        fi
    done
}

echo
echo "## failoverd HTTP probe cost"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)),"
echo "$("$BIN" --version), DURATION=${DURATION}s after ${WARMUP}s warm-up, interval 1s, timeout 500ms,"
echo "nginx with 2 workers on 127.0.0.1 ($PORTS port(s)); CPU from /proc utime+stime at $CLK_TCK ticks/s."
echo
echo "| targets | mode | probes/s | CPU µs/probe | % core | peak RSS MB | RSS at end MB | vs blackbox_exporter (recorded) | vs blackbox_exporter (this run) | new conns/probe | failed probes | CPU goal | RSS goal |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
for row in "${RESULTS[@]}"; do
    read -r n mode rate us pct rss conns failed total reqs end_rss <<<"$row"
    # Each probe is one GET: nginx should count as many requests as failoverd counts probes.
    if [[ $mode != blackbox && $reqs != n/a ]] &&
        awk -v r="$reqs" 'BEGIN { exit !(r < 0.98 || r > 1.02) }'; then
        NOTES+=("$n targets $mode: nginx served $reqs requests per probe counted in failoverd_probes_total (expected 1).")
    fi
    bb_us=$(bb_us_for "$n")
    awk -v n="$n" -v mode="$mode" -v rate="$rate" -v us="$us" -v pct="$pct" -v rss="$rss" -v end_rss="$end_rss" \
        -v conns="$conns" -v failed="$failed" -v total="$total" -v base="$BASELINE_US" \
        -v bb="$bb_us" -v gf="$GOAL_FRESH_US" -v gr="$GOAL_REUSE_US" -v grss="$GOAL_RSS_MB" \
        -v grss_n="$GOAL_RSS_TARGETS" 'BEGIN {
            vs_rec = us >= 0 ? sprintf("%.2f×", us / base) : "n/a"
            vs_run = (bb != "" && bb > 0 && us >= 0 && mode != "blackbox") ? sprintf("%.2f×", us / bb) : "n/a"
            if (mode == "fresh")      cpu_goal = (us >= 0 && us <= gf ? "PASS" : "MISS") " (<= " gf ")"
            else if (mode == "reuse") cpu_goal = (us >= 0 && us < gr ? "PASS" : "MISS") " (< " gr ")"
            else                      cpu_goal = "n/a"
            if (mode != "blackbox" && n == grss_n) rss_goal = (rss < grss ? "PASS" : "MISS") " (< " grss ")"
            else rss_goal = "n/a"
            name = mode == "blackbox" ? "blackbox_exporter" : mode
            printf "| %d | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %s | %s | %s | %d / %d | %s | %s |\n",
                n, name, rate, us, pct, rss, end_rss, vs_rec, vs_run, conns, failed, total, cpu_goal, rss_goal
        }'
done
echo
echo "- \"vs blackbox_exporter (recorded)\": CPU µs/probe divided by ${BASELINE_US} µs, the figure recorded"
echo "  recorded earlier on this kind of machine (blackbox_exporter at ${BASELINE_RATE} probes/s, ~${BASELINE_RSS_MB} MB RSS); below 1× is cheaper."
echo "  That baseline was NOT measured in this run."
if [[ -n $BLACKBOX_BIN ]]; then
    echo "- \"vs blackbox_exporter (this run)\": against $BLACKBOX_BIN measured here at the same N"
    echo "  probes/s, same nginx (its probes always open a new connection, so compare with fresh)."
else
    echo "- \"vs blackbox_exporter (this run)\": n/a, blackbox_exporter was not measured"
    echo "  (${BLACKBOX_NOTE:-install the Debian package prometheus-blackbox-exporter to measure it})."
fi
echo "- Goals: fresh <= ${GOAL_FRESH_US} µs/probe (a third of ${BASELINE_US}), reuse < ${GOAL_REUSE_US} µs/probe,"
echo "  peak RSS < ${GOAL_RSS_MB} MB at ${GOAL_RSS_TARGETS} targets (RSS goal n/a for other counts)."
echo "- % core: CPU seconds per wall second of the whole process (probes, metrics, admin API)."
echo "  Peak RSS: VmHWM (MB = MiB), over the whole life of the process; RSS at end: VmRSS when the"
echo "  measurement ended. The script reads /metrics (it counts probes there) as Prometheus would"
echo "  scrape, so the RSS includes what a scrape costs (the per-target series are streamed in chunks)."
if ((HAVE_STUB)); then
    echo "- new conns/probe: connections nginx accepted per probe; ~1 means a new connection per"
    echo "  probe, ~0 means kept connections were reused."
fi
if ((PORTS == 1)); then
    echo "- All targets share one host:port, so in reuse mode they share the pool of connections"
    echo "  failoverd keeps per host (it shares a client per TLS settings and mode). With N real hosts"
    echo "  each target would hold its own connection; PORTS=N approximates that."
fi
for note in ${NOTES[@]+"${NOTES[@]}"}; do
    echo "- $note"
done
