//! Agent metrics and the `/metrics` + `/health` endpoints.
//!
//! The metrics are `prometheus-client` counters, gauges and a histogram, shared by the
//! agent's tasks; the counters and gauges are plain atomics, so the per-message path
//! never takes a lock. `/metrics` serves them in the OpenMetrics text format
//! ([`CONTENT_TYPE`]). Counters are registered without `_total` and the encoder appends
//! it, so the samples are named `edgeflow_edge_<name>_total` as listed in the README
//! (the `# HELP`/`# TYPE` lines name the family, without the suffix).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::decode::Reason;

/// The media type of `/metrics`: OpenMetrics text, which `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (ms) of the Kafka delivery-latency histogram buckets (exposed in seconds).
pub const LATENCY_BUCKETS_MS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// A gauge of a count or a size (exposed as an integer).
pub type Level = Gauge<u64, AtomicU64>;

/// The label set of the dead-letter counters.
type ReasonLabel = [(&'static str, &'static str); 1];

/// Dead letters by reason: every reason's counter is made up front, so each is exposed
/// (0 until it happens) and counting one needs no lookup.
#[derive(Debug)]
struct DeadLetters {
    family: Family<ReasonLabel, Counter>,
    by_reason: [Counter; Reason::ALL.len()],
}

impl Default for DeadLetters {
    fn default() -> Self {
        let family = Family::<ReasonLabel, Counter>::default();
        let by_reason = Reason::ALL.map(|r| family.get_or_create_owned(&[("reason", r.as_str())]));
        DeadLetters { family, by_reason }
    }
}

/// Time from handing a record to the producer to its acknowledgement, in seconds.
#[derive(Debug)]
struct DeliveryLatency(Histogram);

impl Default for DeliveryLatency {
    fn default() -> Self {
        DeliveryLatency(Histogram::new(LATENCY_BUCKETS_MS.map(|ms| ms / 1000.0)))
    }
}

/// Sets a counter that mirrors a total kept elsewhere (the aggregator's late readings, the
/// forward log's dropped records), which only grows there.
pub fn set_total(counter: &Counter, total: u64) {
    counter.inner().store(total, Relaxed);
}

/// All counters and gauges, shared by the agent's tasks.
#[derive(Default, Debug)]
pub struct Metrics {
    pub payloads_in: Counter,
    pub readings_in: Counter,
    pub aggregates_out: Counter,
    pub corrections_out: Counter,
    pub readings_out: Counter,
    pub late_readings: Counter,
    pub late_dropped: Counter,
    pub quarantined_records: Counter,
    pub redeliveries_skipped: Counter,
    dead_letters: DeadLetters,
    pub delivered: Counter,
    pub delivery_errors: Counter,
    pub log_pending_records: Level,
    pub log_bytes: Level,
    pub log_dropped_records: Counter,
    pub journal_bytes: Level,
    pub group_commits: Counter,
    pub active_sensors: Level,
    /// 1 while connected to the MQTT broker, else 0.
    pub mqtt_connected: Level,
    pub mqtt_connects: Counter,
    pub mqtt_connection_errors: Counter,
    /// Not exposed as a metric: `/health` reports it.
    pub pipeline_alive: AtomicBool,
    delivery_latency: DeliveryLatency,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    pub fn dead_letter(&self, reason: Reason) {
        self.dead_letters.by_reason[reason.index()].inc();
    }

    /// Records one Kafka delivery latency (enqueue to acknowledgement).
    pub fn observe_delivery(&self, micros: u64) {
        self.delivery_latency.0.observe(micros as f64 / 1e6);
    }

    /// Sets whether the agent is connected to the MQTT broker.
    pub fn set_mqtt_connected(&self, connected: bool) {
        self.mqtt_connected.set(u64::from(connected));
    }

    /// A registry of every metric, in the order they are exposed. Made per scrape: the
    /// registered clones are handles to the same atomics, and registering is cheap.
    fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("edgeflow_edge");
        r.register(
            "payloads_in",
            "MQTT payloads received",
            self.payloads_in.clone(),
        );
        r.register(
            "readings_in",
            "Readings decoded from payloads",
            self.readings_in.clone(),
        );
        r.register(
            "aggregates_out",
            "Window aggregates written to the forward log",
            self.aggregates_out.clone(),
        );
        r.register(
            "corrections_out",
            "Corrections for late readings written to the forward log",
            self.corrections_out.clone(),
        );
        r.register(
            "readings_out",
            "Pass-through readings written to the forward log",
            self.readings_out.clone(),
        );
        r.register(
            "late_readings",
            "Readings later than the allowed lateness",
            self.late_readings.clone(),
        );
        r.register(
            "late_dropped",
            "Late readings dropped (late_policy = drop)",
            self.late_dropped.clone(),
        );
        r.register(
            "quarantined_records",
            "Journal or forward-log records that could not be decoded, kept in data_dir/quarantine",
            self.quarantined_records.clone(),
        );
        r.register(
            "redeliveries_skipped",
            "MQTT messages the broker sent again after they were journaled (a lost acknowledgement): acknowledged, not counted again",
            self.redeliveries_skipped.clone(),
        );
        r.register(
            "dead_letters",
            "Payloads rejected and dead-lettered, by reason",
            self.dead_letters.family.clone(),
        );
        r.register(
            "kafka_delivered",
            "Records acknowledged by Kafka",
            self.delivered.clone(),
        );
        r.register(
            "kafka_delivery_errors",
            "Failed Kafka deliveries (retried)",
            self.delivery_errors.clone(),
        );
        r.register(
            "store_pending_records",
            "Records in the forward log not yet acknowledged by Kafka",
            self.log_pending_records.clone(),
        );
        r.register(
            "store_bytes",
            "Bytes of the forward log on disk",
            self.log_bytes.clone(),
        );
        r.register(
            "store_dropped_records",
            "Records dropped by the drop_oldest policy",
            self.log_dropped_records.clone(),
        );
        r.register(
            "journal_bytes",
            "Bytes of the input journal on disk",
            self.journal_bytes.clone(),
        );
        r.register(
            "group_commits",
            "Group commits (fsync, then MQTT acknowledgements)",
            self.group_commits.clone(),
        );
        r.register(
            "active_sensors",
            "Sensors with state in the window aggregator",
            self.active_sensors.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while connected to the MQTT broker",
            self.mqtt_connected.clone(),
        );
        r.register(
            "mqtt_connects",
            "Successful MQTT connections",
            self.mqtt_connects.clone(),
        );
        r.register(
            "mqtt_connection_errors",
            "MQTT connection errors",
            self.mqtt_connection_errors.clone(),
        );
        r.register(
            "kafka_delivery_latency_seconds",
            "Time from handing a record to the producer to its acknowledgement",
            self.delivery_latency.0.clone(),
        );
        r
    }

    /// Renders the OpenMetrics text exposition (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = encode(&mut s, &self.registry());
        s
    }

    fn health(&self) -> (StatusCode, String) {
        let alive = self.pipeline_alive.load(Relaxed);
        let connected = self.mqtt_connected.get() == 1;
        let status = match (alive, connected) {
            (false, _) => "stopped",
            (true, true) => "ok",
            (true, false) => "degraded",
        };
        let body = format!(
            "{{\"status\":\"{status}\",\"mqtt_connected\":{connected},\"store_pending_records\":{},\"store_bytes\":{}}}",
            self.log_pending_records.get(),
            self.log_bytes.get()
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
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render()).into_response() }
            }),
        )
        .route(
            "/health",
            get(move || {
                let m = m2.clone();
                async move {
                    let (code, body) = m.health();
                    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
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

    /// The value of the sample `name` the way the integration tests and benches read it:
    /// the line that starts with the name and a space, its last field as an integer.
    fn scraped(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

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

    #[test]
    fn every_metric_is_exposed_under_its_name_as_openmetrics_text() {
        let m = Metrics::default();
        m.payloads_in.inc_by(3);
        m.readings_in.inc_by(5);
        m.aggregates_out.inc_by(2);
        m.corrections_out.inc();
        m.readings_out.inc_by(4);
        set_total(&m.late_readings, 6);
        set_total(&m.late_dropped, 1);
        m.quarantined_records.inc();
        m.redeliveries_skipped.inc_by(2);
        m.dead_letter(Reason::Malformed);
        m.dead_letter(Reason::Malformed);
        m.dead_letter(Reason::AbsurdTimestamp);
        m.delivered.inc_by(7);
        m.delivery_errors.inc();
        m.log_pending_records.set(17);
        m.log_bytes.set(4096);
        set_total(&m.log_dropped_records, 3);
        m.journal_bytes.set(8192);
        m.group_commits.inc_by(9);
        m.active_sensors.set(11);
        m.set_mqtt_connected(true);
        m.mqtt_connects.inc();
        m.mqtt_connection_errors.inc_by(2);
        m.observe_delivery(250_000); // 0.25 s
        m.observe_delivery(2_000_000); // 2 s
        let text = m.render();
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "# HELP edgeflow_edge_payloads_in MQTT payloads received.",
            "# TYPE edgeflow_edge_payloads_in counter",
            "edgeflow_edge_payloads_in_total 3",
            "# TYPE edgeflow_edge_readings_in counter",
            "edgeflow_edge_readings_in_total 5",
            "edgeflow_edge_aggregates_out_total 2",
            "edgeflow_edge_corrections_out_total 1",
            "edgeflow_edge_readings_out_total 4",
            "edgeflow_edge_late_readings_total 6",
            "edgeflow_edge_late_dropped_total 1",
            "edgeflow_edge_quarantined_records_total 1",
            "edgeflow_edge_redeliveries_skipped_total 2",
            "# HELP edgeflow_edge_dead_letters Payloads rejected and dead-lettered, by reason.",
            "# TYPE edgeflow_edge_dead_letters counter",
            r#"edgeflow_edge_dead_letters_total{reason="oversized"} 0"#,
            r#"edgeflow_edge_dead_letters_total{reason="malformed"} 2"#,
            r#"edgeflow_edge_dead_letters_total{reason="wrong_type"} 0"#,
            r#"edgeflow_edge_dead_letters_total{reason="non_finite"} 0"#,
            r#"edgeflow_edge_dead_letters_total{reason="no_readings"} 0"#,
            r#"edgeflow_edge_dead_letters_total{reason="unknown_sensor"} 0"#,
            r#"edgeflow_edge_dead_letters_total{reason="absurd_timestamp"} 1"#,
            "# TYPE edgeflow_edge_kafka_delivered counter",
            "edgeflow_edge_kafka_delivered_total 7",
            "edgeflow_edge_kafka_delivery_errors_total 1",
            "# TYPE edgeflow_edge_store_pending_records gauge",
            "edgeflow_edge_store_pending_records 17",
            "# TYPE edgeflow_edge_store_bytes gauge",
            "edgeflow_edge_store_bytes 4096",
            "edgeflow_edge_store_dropped_records_total 3",
            "# TYPE edgeflow_edge_journal_bytes gauge",
            "edgeflow_edge_journal_bytes 8192",
            "edgeflow_edge_group_commits_total 9",
            "# TYPE edgeflow_edge_active_sensors gauge",
            "edgeflow_edge_active_sensors 11",
            "# HELP edgeflow_edge_mqtt_connected 1 while connected to the MQTT broker.",
            "# TYPE edgeflow_edge_mqtt_connected gauge",
            "edgeflow_edge_mqtt_connected 1",
            "edgeflow_edge_mqtt_connects_total 1",
            "edgeflow_edge_mqtt_connection_errors_total 2",
            "# TYPE edgeflow_edge_kafka_delivery_latency_seconds histogram",
            r#"edgeflow_edge_kafka_delivery_latency_seconds_bucket{le="0.1"} 0"#,
            r#"edgeflow_edge_kafka_delivery_latency_seconds_bucket{le="0.25"} 1"#,
            r#"edgeflow_edge_kafka_delivery_latency_seconds_bucket{le="1.0"} 1"#,
            r#"edgeflow_edge_kafka_delivery_latency_seconds_bucket{le="2.5"} 2"#,
            r#"edgeflow_edge_kafka_delivery_latency_seconds_bucket{le="10.0"} 2"#,
            r#"edgeflow_edge_kafka_delivery_latency_seconds_bucket{le="+Inf"} 2"#,
            "edgeflow_edge_kafka_delivery_latency_seconds_sum 2.25",
            "edgeflow_edge_kafka_delivery_latency_seconds_count 2",
        ] {
            assert!(lines.contains(&want), "missing `{want}` in\n{text}");
        }
        assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
        // What the integration tests and benches read still reads.
        assert_eq!(scraped(&text, "edgeflow_edge_readings_in_total"), Some(5));
        assert_eq!(scraped(&text, "edgeflow_edge_store_bytes"), Some(4096));
        assert_eq!(scraped(&text, "edgeflow_edge_mqtt_connected"), Some(1));
        assert_eq!(
            scraped(
                &text,
                r#"edgeflow_edge_dead_letters_total{reason="malformed"}"#
            ),
            Some(2)
        );
        // Every sample ends in a number; nothing else but the `# ` lines.
        for l in lines.iter().filter(|l| !l.starts_with("# ")) {
            let v = l.rsplit(' ').next().unwrap_or_default();
            assert!(v.parse::<f64>().is_ok(), "`{l}` does not end in a number");
        }
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_openmetrics_text() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let m = Metrics::new();
        m.payloads_in.inc();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = serve("127.0.0.1:0".parse().unwrap(), m, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).await.unwrap();
        let _ = stop.send(());
        server.await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("content-type: {CONTENT_TYPE}"))),
            "{head}"
        );
        assert!(
            body.contains("\nedgeflow_edge_payloads_in_total 1\n"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}
