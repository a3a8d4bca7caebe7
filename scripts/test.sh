#!/usr/bin/env bash
# The test suite: the docs' links, the Python linter, formatting, lints, unit and integration
# tests (the integration tests start real Postgres 15, Redis and HTTP servers on free loopback
# ports and stop them afterwards).
# Needs: Postgres 15 server binaries, redis-server, redis-cli, openssl, promtool, python3 with
# venv (for the ministack Route53 emulator and the schemathesis API fuzzer, installed into a
# cache dir on first use), chromium (the status page is checked in a headless browser). The
# Kubernetes manifests are checked by deploy/check (kubectl and kubernetes-validate from PyPI,
# in a cache venv too).
# scripts/install-deps.sh installs what is missing first (with apt-get, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

MINISTACK="$(scripts/ministack-venv.sh)"
export MINISTACK
SCHEMATHESIS="$(scripts/schemathesis-venv.sh)"
export SCHEMATHESIS
echo "==> docs: every relative link and runbook anchor resolves"
scripts/check-links
scripts/lint-python
echo "==> promtool: the alert rules and their unit tests"
promtool check rules deploy/monitoring/failoverd.rules.yml
(cd deploy/monitoring && promtool test rules failoverd.rules.test.yml)
echo "==> deploy/check: the Kubernetes manifests, the dashboard, the IAM policies"
cargo build --locked --quiet --bin failoverd
deploy/check --failoverd target/debug/failoverd
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "==> cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets --locked 2>&1 | tee "$log"
# One closing line over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
