//! Shared harness for edgeflow's integration tests: real brokers in Docker and the real
//! `edgeflow-edge` binary as a child process.
//!
//! Use it from a test file in `tests/` with `mod common;`:
//!
//! ```ignore
//! mod common;
//! use common::{unique_topic, EdgeAgent, Kafka, Mosquitto};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn readings_reach_kafka() {
//!     let (mqtt, kafka) = tokio::join!(Mosquitto::start(), Kafka::start());
//!     let topic = unique_topic("readings");
//!     kafka.create_topic(&topic, 3).await;
//!     // ... EdgeAgent::builder().config(..).spawn(), publish, kafka.consume_all(..)
//! }
//! ```
//!
//! # Brokers and images
//!
//! | broker                 | image variable          | default                |
//! |------------------------|-------------------------|------------------------|
//! | MQTT ([`Mosquitto`])   | `EDGEFLOW_MQTT_IMAGE`   | `eclipse-mosquitto:2`  |
//! | Kafka ([`Kafka`])      | `EDGEFLOW_KAFKA_IMAGE`  | `apache/kafka:3.9.0`   |
//!
//! `EDGEFLOW_KAFKA_FLAVOR` says how to start the Kafka image: `apache` (default; KRaft
//! single node) or `tansu` (the Kafka-compatible broker tansu). `scripts/test-env.sh`
//! builds local images that need no registry (`edgeflow/mosquitto:local`,
//! `edgeflow/tansu:local`) and prints the variables; `scripts/test.sh` does both.
//!
//! Each broker gets a fresh container. Host port == container port, chosen free on the
//! host, so Kafka can advertise `127.0.0.1:PORT` and a stopped/started container keeps
//! its address. Containers are removed on drop (label `edgeflow.test=true`).
//! Docker not reachable, or an image neither present nor pullable, is a test failure with
//! a message saying how to fix it, never a skip.
//!
//! # Timing
//!
//! Nothing here sleeps and hopes: readiness is checked at the protocol level (MQTT
//! CONNACK, Kafka metadata), and [`wait_until`] polls a condition with a deadline.
// Every test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

mod docker;
mod edge;
mod kafka;
mod mqtt;
mod postgres;

pub use edge::{EdgeAgent, EdgeAgentBuilder};
pub use kafka::{ConsumedRecord, Kafka, KafkaFlavor, KafkaStorage};
pub use mqtt::{Mosquitto, Publisher};
pub use postgres::{psql, Postgres, PsqlOutput};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A topic name no other test (in this or a concurrent test process) uses:
/// `{prefix}-{pid}-{time}-{counter}`, restricted to characters that are legal in both
/// Kafka topic names and MQTT topic levels.
pub fn unique_topic(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000_000_000)
        .unwrap_or_default();
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{}-{micros}-{n}", std::process::id())
}

/// Polls `check` every 25 ms until it returns `Some`, and returns that value; panics with
/// `what` if `timeout` passes first.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET path` over plain HTTP/1.1 on `addr` (`host:port`): the whole response, headers
/// included.
pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    body
}
