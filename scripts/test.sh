#!/usr/bin/env bash
# The test suite: formatting, lints, unit and integration tests (the integration tests start
# real Postgres 15, Redis and HTTP servers on free loopback ports and stop them afterwards).
# Needs: Postgres 15 server binaries, redis-server, redis-cli, promtool. `.ci/run` installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --all-targets --locked
echo "==> cargo test --doc"
cargo test --doc --locked
