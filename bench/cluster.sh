#!/usr/bin/env bash
# bench/cluster.sh: how fast the agents replace a dead leader, and how fast a dead API
# becomes Down by the quorum verdict, with three failoverd processes on loopback.
#
# Runs the ignored measurement test in tests/cluster.rs in release mode, once with direct
# links and once with LINK_DELAY_MS (default 50) added in each direction between agents.
# The delay comes from the test's TCP proxies: this machine's kernel has no netem qdisc, so
# `tc netem` in namespaces cannot be used here. Each run kills the leader FAILOVERD_KILLS
# times (default 10), restarting it each time, and prints the median time until the two
# others agree on a new leader (default timeouts: heartbeat 100 ms, election base 300 ms,
# staggered per agent); then it stops one region's API and times its Down verdict.
# Everything runs on 127.0.0.1; every process is stopped when the test ends.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building (release)..." >&2
cargo test --release --locked --test cluster --no-run 2>&1 | tail -n 1 >&2
for delay in 0 "${LINK_DELAY_MS:-50}"; do
  echo "== links +${delay} ms each way ==" >&2
  FAILOVERD_LINK_DELAY_MS=$delay cargo test --release --locked --test cluster -- --ignored \
    --nocapture measure_leader_failover_and_report_to_verdict 2>&1 \
    | grep --line-buffered -E '^\[|^links|^leader failover|^API gone|test result'
done
