//! Agent metrics (Prometheus text format) and the `/metrics` + `/health` endpoints.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::decode::Reason;

/// Upper bounds (ms) of the Kafka delivery-latency histogram buckets.
pub const LATENCY_BUCKETS_MS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// All counters and gauges, shared by the agent's tasks.
#[derive(Default, Debug)]
pub struct Metrics {
    pub payloads_in: AtomicU64,
    pub readings_in: AtomicU64,
    pub aggregates_out: AtomicU64,
    pub corrections_out: AtomicU64,
    pub readings_out: AtomicU64,
    pub late_readings: AtomicU64,
    pub late_dropped: AtomicU64,
    pub quarantined_records: AtomicU64,
    pub redeliveries_skipped: AtomicU64,
    pub dead_letters: [AtomicU64; Reason::ALL.len()],
    pub delivered: AtomicU64,
    pub delivery_errors: AtomicU64,
    pub log_pending_records: AtomicU64,
    pub log_bytes: AtomicU64,
    pub log_dropped_records: AtomicU64,
    pub journal_bytes: AtomicU64,
    pub group_commits: AtomicU64,
    pub active_sensors: AtomicU64,
    pub mqtt_connected: AtomicBool,
    pub mqtt_connects: AtomicU64,
    pub mqtt_connection_errors: AtomicU64,
    pub pipeline_alive: AtomicBool,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    pub fn dead_letter(&self, reason: Reason) {
        self.dead_letters[reason.index()].fetch_add(1, Relaxed);
    }

    /// Records one Kafka delivery latency (enqueue to acknowledgement).
    pub fn observe_delivery(&self, micros: u64) {
        let ms = micros as f64 / 1000.0;
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(micros, Relaxed);
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let c = |s: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        c(
            &mut s,
            "edgeflow_edge_payloads_in_total",
            "MQTT payloads received.",
            "counter",
            self.payloads_in.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_readings_in_total",
            "Readings decoded from payloads.",
            "counter",
            self.readings_in.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_aggregates_out_total",
            "Window aggregates written to the forward log.",
            "counter",
            self.aggregates_out.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_corrections_out_total",
            "Corrections for late readings written to the forward log.",
            "counter",
            self.corrections_out.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_readings_out_total",
            "Pass-through readings written to the forward log.",
            "counter",
            self.readings_out.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_late_readings_total",
            "Readings later than the allowed lateness.",
            "counter",
            self.late_readings.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_late_dropped_total",
            "Late readings dropped (late_policy = drop).",
            "counter",
            self.late_dropped.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_quarantined_records_total",
            "Journal or forward-log records that could not be decoded, kept in data_dir/quarantine.",
            "counter",
            self.quarantined_records.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_redeliveries_skipped_total",
            "MQTT messages the broker sent again after they were journaled (a lost acknowledgement): acknowledged, not counted again.",
            "counter",
            self.redeliveries_skipped.load(Relaxed),
        );
        let _ = writeln!(s, "# HELP edgeflow_edge_dead_letters_total Payloads rejected and dead-lettered, by reason.\n# TYPE edgeflow_edge_dead_letters_total counter");
        for r in Reason::ALL {
            let _ = writeln!(
                s,
                "edgeflow_edge_dead_letters_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.dead_letters[r.index()].load(Relaxed)
            );
        }
        c(
            &mut s,
            "edgeflow_edge_kafka_delivered_total",
            "Records acknowledged by Kafka.",
            "counter",
            self.delivered.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_kafka_delivery_errors_total",
            "Failed Kafka deliveries (retried).",
            "counter",
            self.delivery_errors.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_store_pending_records",
            "Records in the forward log not yet acknowledged by Kafka.",
            "gauge",
            self.log_pending_records.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_store_bytes",
            "Bytes of the forward log on disk.",
            "gauge",
            self.log_bytes.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_store_dropped_records_total",
            "Records dropped by the drop_oldest policy.",
            "counter",
            self.log_dropped_records.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_journal_bytes",
            "Bytes of the input journal on disk.",
            "gauge",
            self.journal_bytes.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_group_commits_total",
            "Group commits (fsync, then MQTT acknowledgements).",
            "counter",
            self.group_commits.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_active_sensors",
            "Sensors with state in the window aggregator.",
            "gauge",
            self.active_sensors.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_mqtt_connected",
            "1 while connected to the MQTT broker.",
            "gauge",
            u64::from(self.mqtt_connected.load(Relaxed)),
        );
        c(
            &mut s,
            "edgeflow_edge_mqtt_connects_total",
            "Successful MQTT connections.",
            "counter",
            self.mqtt_connects.load(Relaxed),
        );
        c(
            &mut s,
            "edgeflow_edge_mqtt_connection_errors_total",
            "MQTT connection errors.",
            "counter",
            self.mqtt_connection_errors.load(Relaxed),
        );
        let name = "edgeflow_edge_kafka_delivery_latency_seconds";
        let _ = writeln!(s, "# HELP {name} Time from handing a record to the producer to its acknowledgement.\n# TYPE {name} histogram");
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                s,
                "{name}_bucket{{le=\"{}\"}} {}",
                b / 1000.0,
                self.latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            s,
            "{name}_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_count {count}");
        s
    }

    fn health(&self) -> (StatusCode, String) {
        let alive = self.pipeline_alive.load(Relaxed);
        let connected = self.mqtt_connected.load(Relaxed);
        let status = match (alive, connected) {
            (false, _) => "stopped",
            (true, true) => "ok",
            (true, false) => "degraded",
        };
        let body = format!(
            "{{\"status\":\"{status}\",\"mqtt_connected\":{connected},\"store_pending_records\":{},\"store_bytes\":{}}}",
            self.log_pending_records.load(Relaxed),
            self.log_bytes.load(Relaxed)
        );
        let code = if alive {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body)
    }
}

/// Binds the metrics listener; returns the bound address and the server future.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let m1 = metrics.clone();
    let m2 = metrics;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m1.clone();
                async move {
                    ([("content-type", "text/plain; version=0.0.4")], m.render()).into_response()
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let m = m2.clone();
                async move {
                    let (code, body) = m.health();
                    (code, [("content-type", "application/json")], body).into_response()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_delivery(700); // 0.7 ms
        m.observe_delivery(30_000); // 30 ms
        let text = m.render();
        assert!(
            text.contains("edgeflow_edge_kafka_delivery_latency_seconds_bucket{le=\"0.0005\"} 0")
        );
        assert!(
            text.contains("edgeflow_edge_kafka_delivery_latency_seconds_bucket{le=\"0.001\"} 1")
        );
        assert!(text.contains("edgeflow_edge_kafka_delivery_latency_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("edgeflow_edge_kafka_delivery_latency_seconds_count 2"));
        assert!(text.contains("edgeflow_edge_dead_letters_total{reason=\"oversized\"} 0"));
    }
}
