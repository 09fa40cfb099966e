//! The agent's TOML configuration (`configs/edge.toml` documents every key).
//!
//! Every struct denies unknown keys, so a typo is an error that names the key. Values with
//! constraints are newtypes ([`HumanDuration`], [`ByteSize`]) that fail at load time.
//! After parsing, [`EdgeConfig::validate`] reports *all* semantic problems at once.
//!
//! Secrets come from the environment, never from files checked into a repo:
//! `EDGEFLOW_MQTT_USERNAME` / `EDGEFLOW_MQTT_PASSWORD` override `mqtt.username` /
//! `mqtt.password`, and `EDGEFLOW_KAFKA_PROPERTY_<NAME>` sets a librdkafka property, with `_`
//! standing for `.` (e.g. `EDGEFLOW_KAFKA_PROPERTY_SASL_PASSWORD` sets `sasl.password`). Secrets are
//! redacted from `Debug` output and never logged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::disklog::FullPolicy;
use crate::topic::TopicPattern;
use crate::{Error, Result};
use edgeflow_wire::kafka::{is_secret_property, reserved_property_problems, GUARANTEE_PROPERTIES};
use edgeflow_wire::units::{ByteSize, HumanDuration};

/// The whole agent configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Identity of this gateway; part of every forwarded record's identity.
    pub gateway_id: String,
    /// Directory for the store-and-forward log, the input journal and window snapshots.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `aggregate` (tumbling-window pre-aggregation) or `passthrough` (every reading).
    #[serde(default)]
    pub mode: Mode,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub decode: DecodeConfig,
    #[serde(default)]
    pub window: WindowConfig,
    #[serde(default)]
    pub store: StoreConfig,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data/edge")
}

/// What the agent forwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Per-(sensor, field) tumbling-window aggregates.
    #[default]
    Aggregate,
    /// Every reading, unaggregated (latency-critical streams, benchmarking).
    Passthrough,
}

/// MQTT protocol version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

/// The MQTT source.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    #[serde(default = "default_mqtt_host")]
    pub host: String,
    /// Broker port (1883 plain, 8883 TLS by convention).
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// `"3.1.1"` or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Client id; must be stable across restarts for the persistent session to work.
    /// Defaults to `edgeflow-edge-<gateway_id>`.
    pub client_id: Option<String>,
    /// Keep the broker session across disconnects (unacknowledged QoS 1/2 messages are
    /// redelivered after a crash). Leave `true` unless every subscription is QoS 0.
    #[serde(default = "default_true")]
    pub persistent_session: bool,
    /// Session expiry for MQTT 5 persistent sessions.
    #[serde(default = "default_session_expiry")]
    pub session_expiry: HumanDuration,
    pub username: Option<String>,
    /// Prefer `EDGEFLOW_MQTT_PASSWORD` in the environment.
    pub password: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: HumanDuration,
    /// First reconnect delay; doubled after each failure up to `reconnect_max`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min: HumanDuration,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: HumanDuration,
    /// Largest accepted payload; larger ones are dead-lettered as `oversized`.
    #[serde(default = "default_max_payload")]
    pub max_payload: ByteSize,
    /// MQTT 5 receive maximum: how many unacknowledged QoS 1/2 messages the broker may
    /// have in flight to the agent. Acknowledgements wait for a group commit, so this
    /// (and the broker's own per-client limit) bounds throughput.
    #[serde(default = "default_receive_maximum")]
    pub receive_maximum: u16,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// One or more topic filters to subscribe to.
    pub subscriptions: Vec<Subscription>,
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("persistent_session", &self.persistent_session)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

fn default_mqtt_host() -> String {
    "localhost".into()
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_true() -> bool {
    true
}
fn default_session_expiry() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}
fn default_keep_alive() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_reconnect_min() -> HumanDuration {
    HumanDuration::from_millis(100)
}
fn default_reconnect_max() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_max_payload() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_receive_maximum() -> u16 {
    1000
}

/// TLS towards the MQTT broker.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate for mutual TLS (with `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// One MQTT subscription and how to read what arrives on it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Topic filter, `+` and `#` wildcards allowed.
    pub filter: String,
    /// 0, 1 or 2. QoS 1/2 messages are acknowledged only once durable in the agent.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// `auto` (by first byte), `json`, `senml` or `number`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Where the sensor id (and optionally the site) sits in the topic, e.g.
    /// `sensors/{site}/{sensor_id}/telemetry`. Without it the id comes from the payload.
    pub topic_pattern: Option<TopicPattern>,
}

fn default_qos() -> u8 {
    1
}

/// How a subscription's payloads are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// `{` → JSON object, `[` → SenML, anything else → bare number.
    #[default]
    Auto,
    Json,
    Senml,
    Number,
}

/// Payload decoding.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// JSON key of the timestamp (epoch s/ms/µs/ns by magnitude, or RFC 3339 in UTC).
    #[serde(default = "default_ts_field")]
    pub timestamp_field: String,
    /// JSON key (or SenML base name) carrying the sensor id when the topic has none.
    #[serde(default = "default_sensor_field")]
    pub sensor_id_field: String,
    /// Only these JSON keys are readings; empty means every numeric key except the
    /// timestamp and sensor id.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Field name given to a bare-number payload.
    #[serde(default = "default_value_field")]
    pub number_field: String,
    /// If not empty, readings from other sensor ids are dead-lettered as `unknown_sensor`.
    #[serde(default)]
    pub known_sensors: Vec<String>,
    /// Timestamps further ahead of the arrival time are `absurd_timestamp`.
    #[serde(default = "default_max_future")]
    pub max_future: HumanDuration,
    /// Timestamps further behind the arrival time are `absurd_timestamp`.
    #[serde(default = "default_max_past")]
    pub max_past: HumanDuration,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            timestamp_field: default_ts_field(),
            sensor_id_field: default_sensor_field(),
            fields: Vec::new(),
            number_field: default_value_field(),
            known_sensors: Vec::new(),
            max_future: default_max_future(),
            max_past: default_max_past(),
        }
    }
}

fn default_ts_field() -> String {
    "ts".into()
}
fn default_sensor_field() -> String {
    "sensor_id".into()
}
fn default_value_field() -> String {
    "value".into()
}
fn default_max_future() -> HumanDuration {
    HumanDuration::from_secs(5 * 60)
}
fn default_max_past() -> HumanDuration {
    HumanDuration::from_secs(7 * 24 * 3600)
}

/// What to do with a reading later than the allowed lateness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Forward a correction: a partial aggregate of the late reading for its window.
    #[default]
    Correction,
    /// Count and drop it.
    Drop,
}

/// Tumbling-window pre-aggregation.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Window length; windows are aligned to the epoch.
    #[serde(default = "default_window_size")]
    pub size: HumanDuration,
    /// How far behind a sensor's newest event time a reading may be and still count.
    #[serde(default = "default_lateness")]
    pub allowed_lateness: HumanDuration,
    #[serde(default)]
    pub late_policy: LatePolicy,
    /// Sensors silent this long (arrival time) are evicted, their windows flushed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            size: default_window_size(),
            allowed_lateness: default_lateness(),
            late_policy: LatePolicy::default(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_window_size() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_lateness() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// The on-disk store-and-forward log and input journal.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Upper bound of the forward log on disk.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: ByteSize,
    /// When the log is full: `block` (stop acknowledging MQTT until Kafka drains it) or
    /// `drop_oldest` (delete the oldest segment, counted in the metrics).
    #[serde(default = "default_full_policy")]
    pub full_policy: FullPolicy,
    /// Group-commit interval: records are fsynced, then their MQTT messages acknowledged.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: HumanDuration,
    /// How often the window state is snapshotted so the journal can be truncated.
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: HumanDuration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            full_policy: default_full_policy(),
            commit_interval: default_commit_interval(),
            snapshot_interval: default_snapshot_interval(),
        }
    }
}

fn default_max_bytes() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_segment_bytes() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_full_policy() -> FullPolicy {
    FullPolicy::Block
}
fn default_commit_interval() -> HumanDuration {
    HumanDuration::from_millis(5)
}
fn default_snapshot_interval() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// Record encoding on the Kafka topics (see `docs/wire-format.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Json,
    Binary,
}

/// The Kafka forwarder.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    #[serde(default = "default_aggregates_topic")]
    pub aggregates_topic: String,
    #[serde(default = "default_readings_topic")]
    pub readings_topic: String,
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// librdkafka partitioner; `murmur2_random` matches the Java client's placement.
    #[serde(default = "default_partitioner")]
    pub partitioner: String,
    /// Extra librdkafka producer properties (SASL/SSL for managed services, tuning).
    /// Secrets belong in `EDGEFLOW_KAFKA_PROPERTY_<NAME>` environment variables.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("aggregates_topic", &self.aggregates_topic)
            .field("readings_topic", &self.readings_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("encoding", &self.encoding)
            .field("compression", &self.compression)
            .field("properties", &props)
            .finish()
    }
}

/// Properties the agent's forwarder sets itself on top of [`GUARANTEE_PROPERTIES`]: it never
/// gives up on a record (the forward log holds it until Kafka takes it).
const FORWARDER_PROPERTIES: [&str; 3] = [
    "message.timeout.ms",
    "delivery.timeout.ms",
    "bootstrap.servers",
];

fn default_aggregates_topic() -> String {
    "edgeflow.aggregates".into()
}
fn default_readings_topic() -> String {
    "edgeflow.readings".into()
}
fn default_dead_letter_topic() -> String {
    "edgeflow.dead-letter".into()
}
fn default_compression() -> String {
    "lz4".into()
}
fn default_partitioner() -> String {
    "murmur2_random".into()
}

/// `/metrics` and `/health`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address; port 0 picks a free port (logged at start-up).
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

impl EdgeConfig {
    /// Reads, parses, applies environment overrides and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut cfg = Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        cfg.apply_env(std::env::vars());
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (no environment, no validation).
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Applies secret overrides from environment variables (see the module docs).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (k, v) in vars {
            match k.as_str() {
                "EDGEFLOW_MQTT_USERNAME" => self.mqtt.username = Some(v),
                "EDGEFLOW_MQTT_PASSWORD" => self.mqtt.password = Some(v),
                _ => {
                    if let Some(prop) = k.strip_prefix("EDGEFLOW_KAFKA_PROPERTY_") {
                        if !prop.is_empty() {
                            let name = prop.to_ascii_lowercase().replace('_', ".");
                            self.kafka.properties.insert(name, v);
                        }
                    }
                }
            }
        }
    }

    /// The MQTT client id in effect.
    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("edgeflow-edge-{}", self.gateway_id))
    }

    /// Checks every semantic constraint and reports all violations in one error.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.gateway_id.trim().is_empty() {
            problems.push("gateway_id: must not be empty".to_string());
        }
        if self.mqtt.subscriptions.is_empty() {
            problems.push("mqtt.subscriptions: at least one subscription is needed".into());
        }
        for (i, s) in self.mqtt.subscriptions.iter().enumerate() {
            if s.qos > 2 {
                problems.push(format!(
                    "mqtt.subscriptions[{i}].qos: {} is not a QoS level; allowed: 0, 1, 2",
                    s.qos
                ));
            }
            if let Err(e) = crate::topic::validate_filter(&s.filter) {
                problems.push(format!("mqtt.subscriptions[{i}].filter: {e}"));
            }
            if let Some(p) = &s.topic_pattern {
                if let Err(e) = p.check_against_filter(&s.filter) {
                    problems.push(format!("mqtt.subscriptions[{i}].topic_pattern: {e}"));
                }
            }
        }
        if self.mqtt.keep_alive.0.as_secs() < 1 {
            problems.push("mqtt.keep_alive: must be at least 1s".into());
        }
        if self.mqtt.reconnect_min > self.mqtt.reconnect_max {
            problems.push("mqtt.reconnect_min: must not exceed mqtt.reconnect_max".into());
        }
        if self.mqtt.receive_maximum == 0 {
            problems.push("mqtt.receive_maximum: must be at least 1".into());
        }
        if let Some(tls) = &self.mqtt.tls {
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                problems.push(
                    "mqtt.tls: client_cert_file and client_key_file must be given together".into(),
                );
            }
        }
        if self.window.size.0.as_millis() < 1 {
            problems.push("window.size: must be at least 1ms".into());
        }
        if self.window.idle_timeout < self.decode.max_future {
            problems.push(format!(
                "window.idle_timeout: must be at least decode.max_future ({}) so an evicted sensor cannot reopen an emitted window",
                self.decode.max_future
            ));
        }
        if self.store.segment_bytes.0 < 4096 {
            problems.push("store.segment_bytes: must be at least 4KiB".into());
        }
        if self.store.max_bytes.0 < 2 * self.store.segment_bytes.0 {
            problems.push(format!(
                "store.max_bytes: must be at least twice store.segment_bytes ({})",
                self.store.segment_bytes
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            problems.push("kafka.brokers: must name at least one host:port".into());
        }
        let reserved: Vec<&str> = GUARANTEE_PROPERTIES
            .iter()
            .chain(&FORWARDER_PROPERTIES)
            .chain(&["compression.type", "partitioner"])
            .copied()
            .collect();
        problems.extend(reserved_property_problems(
            "kafka.properties",
            self.kafka.properties.keys(),
            &reserved,
        ));
        const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
        if !COMPRESSIONS.contains(&self.kafka.compression.as_str()) {
            problems.push(format!(
                "kafka.compression: `{}` is not supported; allowed: {}",
                self.kafka.compression,
                COMPRESSIONS.join(", ")
            ));
        }
        for (name, what) in [
            (&self.kafka.aggregates_topic, "kafka.aggregates_topic"),
            (&self.kafka.readings_topic, "kafka.readings_topic"),
            (&self.kafka.dead_letter_topic, "kafka.dead_letter_topic"),
        ] {
            if name.is_empty()
                || name.len() > 249
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                problems.push(format!(
                    "{what}: `{name}` is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"
                ));
            }
        }
        if self.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "metrics.listen: `{}` is not an address such as 127.0.0.1:9464",
                self.metrics.listen
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
gateway_id = "gw"
[mqtt]
[[mqtt.subscriptions]]
filter = "sensors/+/telemetry"
topic_pattern = "sensors/{sensor_id}/telemetry"
[kafka]
brokers = "localhost:9092"
"#;

    #[test]
    fn minimal_config_gets_sane_defaults() {
        let c = EdgeConfig::parse(MINIMAL).unwrap();
        c.validate().unwrap();
        assert_eq!(c.mode, Mode::Aggregate);
        assert_eq!(c.mqtt.subscriptions[0].qos, 1);
        assert_eq!(c.window.size.0.as_secs(), 10);
        assert_eq!(c.client_id(), "edgeflow-edge-gw");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let text = MINIMAL.replace("[kafka]", "[kafka]\nbrokerz = \"x\"");
        let err = EdgeConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("brokerz"), "{err}");
        let text = MINIMAL.replace("gateway_id", "colour = 1\ngateway_id");
        let err = EdgeConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let text = MINIMAL.replace("[kafka]", "[window]\nsize = \"soon\"\n[kafka]");
        let err = EdgeConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("size") && err.contains("soon"), "{err}");
        let text = MINIMAL.replace("[kafka]", "[store]\nfull_policy = \"panic\"\n[kafka]");
        let err = EdgeConfig::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("block") && err.contains("drop_oldest"),
            "{err}"
        );
    }

    #[test]
    fn validation_reports_every_problem_at_once() {
        let mut c = EdgeConfig::parse(MINIMAL).unwrap();
        c.mqtt.subscriptions[0].qos = 3;
        c.kafka.compression = "brotli".into();
        c.kafka.aggregates_topic = "bad topic".into();
        let err = c.validate().unwrap_err().to_string();
        for key in ["qos", "kafka.compression", "kafka.aggregates_topic"] {
            assert!(err.contains(key), "{key} missing in {err}");
        }
    }

    #[test]
    fn properties_that_would_change_the_delivery_guarantee_are_refused_by_name() {
        let mut c = EdgeConfig::parse(MINIMAL).unwrap();
        c.kafka.properties.insert("acks".into(), "1".into());
        c.kafka
            .properties
            .insert("Enable.Idempotence".into(), "false".into());
        c.kafka
            .properties
            .insert("message.timeout.ms".into(), "1000".into());
        c.kafka
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let err = c.validate().unwrap_err().to_string();
        for key in ["acks", "Enable.Idempotence", "message.timeout.ms"] {
            assert!(err.contains(&format!("kafka.properties.{key}:")), "{err}");
        }
        assert!(!err.contains("security.protocol"), "{err}");
        // the same through the environment
        let mut c = EdgeConfig::parse(MINIMAL).unwrap();
        c.apply_env([("EDGEFLOW_KAFKA_PROPERTY_ACKS".to_string(), "0".to_string())]);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("kafka.properties.acks"));
    }

    #[test]
    fn secrets_come_from_the_environment_and_are_redacted() {
        let mut c = EdgeConfig::parse(MINIMAL).unwrap();
        c.apply_env([
            ("EDGEFLOW_MQTT_PASSWORD".to_string(), "hunter2".to_string()),
            (
                "EDGEFLOW_KAFKA_PROPERTY_SASL_PASSWORD".to_string(),
                "s3cret".to_string(),
            ),
        ]);
        assert_eq!(c.mqtt.password.as_deref(), Some("hunter2"));
        assert_eq!(
            c.kafka.properties.get("sasl.password").map(String::as_str),
            Some("s3cret")
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
