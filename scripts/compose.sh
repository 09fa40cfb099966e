#!/usr/bin/env bash
# Builds the local images docker-compose.yml needs (no registry), then runs
# `docker compose up` with any arguments given (e.g. `scripts/compose.sh -d`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh
cache="${EDGEFLOW_CACHE:-$HOME/.cache/edgeflow}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
cargo build --release --quiet -p edgeflow -p edgeflow-edge
ctx="$cache/docker-context/edge"
mkdir -p "$ctx"
cp docker/edge/Dockerfile "$ctx/"
cp "$CARGO_TARGET_DIR/release/edgeflow-edge" "$CARGO_TARGET_DIR/release/edgeflow" "$ctx/"
if docker buildx version >/dev/null 2>&1; then
    docker build -q -t edgeflow/edge:local "$ctx" >/dev/null
else
    DOCKER_BUILDKIT=0 docker build -q -t edgeflow/edge:local "$ctx" >/dev/null
fi
if docker compose version >/dev/null 2>&1; then
    exec docker compose up "$@"
else
    exec docker-compose up "$@"
fi
