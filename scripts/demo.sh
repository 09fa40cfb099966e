#!/usr/bin/env bash
# The closest thing to `edgeflow demo` until the processor exists: runs the whole edge
# path on this machine and shows what arrives in Kafka.
#
#   simulated sensors --MQTT--> Mosquitto --> edgeflow-edge --> Kafka (tansu) --> edgeflow tail
#
# Brokers run as local Docker images built by scripts/test-env.sh (no registry needed).
# Options (environment): DEMO_SECONDS (default 30), DEMO_SENSORS (200), DEMO_RATE (1000/s),
# DEMO_MQTT_PORT (1883), DEMO_KAFKA_PORT (9092), DEMO_METRICS (127.0.0.1:9464).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${EDGEFLOW_CACHE:-$HOME/.cache/edgeflow}/target}"

seconds="${DEMO_SECONDS:-30}"
sensors="${DEMO_SENSORS:-200}"
rate="${DEMO_RATE:-1000}"
mqtt_port="${DEMO_MQTT_PORT:-1883}"
kafka_port="${DEMO_KAFKA_PORT:-9092}"
metrics="${DEMO_METRICS:-127.0.0.1:9464}"

echo "demo: building edgeflow and edgeflow-edge (release)"
cargo build --release --quiet -p edgeflow -p edgeflow-edge
bin="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
containers=()
agent_pid=""
cleanup() {
    [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
    ((${#containers[@]})) && docker rm -f "${containers[@]}" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

containers+=("$(docker run -d -p "127.0.0.1:$mqtt_port:1883" "$EDGEFLOW_MQTT_IMAGE")")
containers+=("$(docker run -d -p "127.0.0.1:$kafka_port:$kafka_port" "$EDGEFLOW_KAFKA_IMAGE" broker \
    --listener-url "tcp://0.0.0.0:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/)")
echo "demo: waiting for the brokers"
for _ in $(seq 1 100); do
    if "$bin/edgeflow" create-topics --brokers "127.0.0.1:$kafka_port" --partitions 3 \
        edgeflow.aggregates edgeflow.readings edgeflow.dead-letter >/dev/null 2>&1; then
        break
    fi
    sleep 0.2
done

sed -e "s|^data_dir = .*|data_dir = \"$work/data\"|" \
    -e "s|^port = 1883|port = $mqtt_port|" \
    -e "s|^brokers = .*|brokers = \"127.0.0.1:$kafka_port\"|" \
    -e "s|^listen = .*|listen = \"$metrics\"|" \
    configs/edge.toml >"$work/edge.toml"
"$bin/edgeflow-edge" --config "$work/edge.toml" >"$work/agent.log" 2>&1 &
agent_pid=$!
sleep 1
echo "demo: publishing $rate readings/s from $sensors sensors for ${seconds}s (agent log: $work/agent.log)"
"$bin/edgeflow" simulate --port "$mqtt_port" --sensors "$sensors" --rate "$rate" \
    --count $((rate * seconds)) 2>&1 | tail -n 1
echo "demo: stopping the agent (SIGTERM flushes open windows)"
kill -TERM "$agent_pid"
wait "$agent_pid" || true
agent_pid=""
echo "demo: the first aggregates in Kafka:"
"$bin/edgeflow" tail --brokers "127.0.0.1:$kafka_port" edgeflow.aggregates | head -n 5
n="$("$bin/edgeflow" tail --brokers "127.0.0.1:$kafka_port" edgeflow.aggregates | wc -l)"
echo "demo: $n window aggregates forwarded for $((rate * seconds)) readings"
