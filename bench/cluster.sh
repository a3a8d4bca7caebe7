#!/usr/bin/env bash
# bench/cluster.sh: how fast the agents replace a dead leader, and how fast a dead API
# becomes Down by the quorum verdict, with three failoverd processes on loopback.
#
# Runs the ignored measurement test in tests/cluster.rs in release mode. It kills the leader
# FAILOVERD_KILLS times (default 10), restarting it each time, and prints the median time
# until the two others agree on a new leader (default timeouts: heartbeat 100 ms, election
# base 300 ms, staggered per agent); then it stops one region's API and times its Down
# verdict on the leader.
# Everything runs on 127.0.0.1; every process is stopped when the test ends.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building (release)..." >&2
cargo test --release --locked --test cluster --no-run 2>&1 | tail -n 1 >&2
cargo test --release --locked --test cluster -- --ignored --nocapture \
  measure_leader_failover_and_report_to_verdict 2>&1 | grep -E '^\[|^leader failover|^API gone|test result'
