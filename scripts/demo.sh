#!/usr/bin/env bash
# The closest thing to `edgeflow demo` until the embedded one exists: runs the whole
# pipeline on this machine and queries it.
#
#   simulated sensors --MQTT--> Mosquitto --> edgeflow-edge --> Kafka (tansu)
#       --> edgeflow process (continuous queries, Parquet) --> edgeflow sql
#
# Brokers run as local Docker images built by scripts/test-env.sh (no registry needed).
# Options (environment): DEMO_SECONDS (default 30), DEMO_SENSORS (200), DEMO_RATE (1000/s),
# DEMO_MQTT_PORT (1883), DEMO_KAFKA_PORT (9092), DEMO_METRICS (127.0.0.1:9464),
# DEMO_PG_PORT (5433), DEMO_HTTP_PORT (8081).
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
pg_port="${DEMO_PG_PORT:-5433}"
http_port="${DEMO_HTTP_PORT:-8081}"

echo "demo: building edgeflow and edgeflow-edge (release)"
cargo build --release --quiet -p edgeflow -p edgeflow-edge
bin="$CARGO_TARGET_DIR/release"

work="$(mktemp -d)"
containers=()
agent_pid=""
processor_pid=""
cleanup() {
    [[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
    [[ -n $processor_pid ]] && kill "$processor_pid" 2>/dev/null && wait "$processor_pid" 2>/dev/null || true
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
# The processor: configs/processor.toml with the demo's brokers, ports and directories,
# and short windows so results show within the demo.
sed -e "s|^brokers = .*|brokers = \"127.0.0.1:$kafka_port\"|" \
    -e "s|^pg_listen = .*|pg_listen = \"127.0.0.1:$pg_port\"|" \
    -e "s|^http_listen = .*|http_listen = \"127.0.0.1:$http_port\"|" \
    -e "s|^url = \"data/parquet\"|url = \"$work/parquet\"|" \
    -e "s|^url = \"checkpoints\"|url = \"$work/checkpoints\"|" \
    -e "s|^idle_timeout = .*|idle_timeout = \"3s\"|" \
    -e "s|^watermark_delay = .*|watermark_delay = \"2s\"|" \
    -e "s|^roll_interval = .*|roll_interval = \"1m\"|" \
    -e "s|INTERVAL '1 minute') AS minute|INTERVAL '20 seconds') AS minute|" \
    -e "s|tumble(window_start, INTERVAL '1 minute')$|tumble(window_start, INTERVAL '20 seconds')|" \
    configs/processor.toml >"$work/processor.toml"
"$bin/edgeflow" process --config "$work/processor.toml" >"$work/processor.out" 2>"$work/processor.log" &
processor_pid=$!
echo "demo: processor running (SQL: psql -h 127.0.0.1 -p $pg_port -U edgeflow edgeflow; log: $work/processor.log)"
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
echo "demo: waiting for the processor's last windows to close"
sleep 8
sql() { "$bin/edgeflow" sql --server "127.0.0.1:$http_port" "$1"; }
echo "demo: the latest aggregate of a few sensors (pull query on aggregates_latest):"
sql "SELECT sensor, field, window_start, \"count\", mean FROM aggregates_latest ORDER BY sensor LIMIT 5"
echo "demo: 20-second roll-ups of the edge's 10-second windows (continuous query temp_1m):"
sql "SELECT * FROM temp_1m ORDER BY minute DESC, sensor LIMIT 5"
echo "demo: the running continuous queries:"
sql "SELECT name, watermark, rows_in, rows_out FROM edgeflow_queries"
echo "demo: Parquet files written: $(find "$work/parquet" -name '*.parquet' 2>/dev/null | wc -l)"
