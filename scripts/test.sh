#!/usr/bin/env bash
# THE test command (README; CI's .ci/run calls it): sets up everything the tests need on
# this machine (scripts/test-env.sh: Debian packages, the tansu broker, local broker
# images), then checks formatting and lints and runs every test of the workspace:
# unit, property, doc and integration tests against the real brokers.
# No test is skipped for lack of a broker: if one cannot be had, this fails and says why.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
start=$SECONDS

# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh
cache="${EDGEFLOW_CACHE:-$HOME/.cache/edgeflow}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
echo "test: environment ready after $((SECONDS - start))s; target dir $CARGO_TARGET_DIR"

cargo fmt --all -- --check
# A bench build reuses the release build only while both resolve the same features.
bash scripts/check-features.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
# Integration tests start their own containers; a few at a time keeps 2 cores responsive.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --doc --locked 2>&1 | tee -a "$log"
# Benches in test mode: each benchmark runs once, as a smoke test.
cargo test --workspace --benches --locked 2>&1 | tee -a "$log"
cargo test --workspace --lib --bins --tests --locked -- --test-threads 4 2>&1 | tee -a "$log"
# One closing line over every test binary above (pipefail already stopped on a failure).
passed=$(grep -o '[0-9]* passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -o '[0-9]* failed' "$log" | awk '{s+=$1} END {print s+0}')
echo "test: all done in $((SECONDS - start))s"
echo "summary: $passed passed, $failed failed"
