#!/usr/bin/env bash
# Time from losing a whole region (its agent, API, Redis master and Postgres primary) to each
# failover milestone, with default settings: three agents, Postgres 15 primary + two
# replicas, a Redis master + replica, ministack for Route53, all on loopback. RUNS (default 10) fresh labs; prints each
# run as it ends, then median/min/max per milestone. DEBUG_HISTORY=1 also prints each
# run's history.
set -euo pipefail
cd "$(dirname "$0")/.."
MINISTACK="$(scripts/ministack-venv.sh)"
export MINISTACK
RUNS="${RUNS:-10}" cargo test --release --locked --test failover -- \
  --ignored --nocapture --test-threads 1 measure_region_loss_milestones
