//! A single-node Kafka-compatible broker in Docker, plus admin and read-back helpers.
//!
//! Only manual partition assignment (`assign`) is used: edgeflow assigns partitions
//! itself, and consumer-group joins are slow on tansu (~20 s).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use testcontainers::core::IntoContainerPort;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::docker;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start the image in `EDGEFLOW_KAFKA_IMAGE` (`EDGEFLOW_KAFKA_FLAVOR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaFlavor {
    /// `apache/kafka` (default): KRaft single node configured through `KAFKA_*` variables.
    Apache,
    /// tansu (`edgeflow/tansu:local`): `tansu broker --listener-url .. --storage-engine ..`.
    Tansu,
}

impl KafkaFlavor {
    fn from_env() -> Self {
        match std::env::var("EDGEFLOW_KAFKA_FLAVOR")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "apache" => KafkaFlavor::Apache,
            "tansu" => KafkaFlavor::Tansu,
            other => panic!("EDGEFLOW_KAFKA_FLAVOR={other:?}: expected `apache` or `tansu`"),
        }
    }
}

/// Where the broker keeps its data.
///
/// tansu 0.6's sqlite engine serializes every storage request through one task whose
/// loop ends at the first error (including a reply nobody waits for any more); after
/// that every request fails and the broker exits (code 0). It happened once in our runs,
/// under heavy machine load. [`Kafka::consume_all`] reports a dead broker with its log;
/// tests that never restart Kafka can use [`Kafka::start_in_memory`], whose engine has
/// no such task and is ~30x faster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaStorage {
    /// On the container's disk: records survive [`Kafka::stop`] + [`Kafka::start_again`].
    /// tansu: `sqlite://tansu.db` (~9 ms produce→consume). Apache: its log dirs.
    Durable,
    /// tansu: `memory://tansu/` (~0.3 ms produce→consume), lost on stop; for latency
    /// benchmarks. Apache Kafka has no such mode and uses its log dirs anyway.
    Memory,
}

/// One record read back by [`Kafka::consume_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// In wire order; a header may repeat.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Milliseconds since the epoch, if the record has a timestamp.
    pub timestamp_ms: Option<i64>,
}

impl ConsumedRecord {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The key as UTF-8 (lossy), for assertions.
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The payload as UTF-8 (lossy), for assertions.
    pub fn payload_str(&self) -> Option<String> {
        self.payload
            .as_deref()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

/// A fresh single-node Kafka-compatible broker, removed on drop.
///
/// The host port equals the container port and the broker advertises
/// `127.0.0.1:PORT`, so clients on the host follow the metadata to the right place and
/// the address survives [`Kafka::stop`] / [`Kafka::start_again`].
pub struct Kafka {
    container: ContainerAsync<GenericImage>,
    port: u16,
    flavor: KafkaFlavor,
    storage: KafkaStorage,
}

impl Kafka {
    /// Starts the broker with [`KafkaStorage::Durable`] storage, so that the "Kafka is down
    /// for a while" tests can [`stop`](Kafka::stop) and [`start_again`](Kafka::start_again)
    /// it without losing records.
    pub async fn start() -> Self {
        Self::start_with(KafkaStorage::Durable).await
    }

    /// Starts the broker keeping records in memory where the broker can (tansu): fastest,
    /// for latency measurements; records do not survive a stop.
    pub async fn start_in_memory() -> Self {
        Self::start_with(KafkaStorage::Memory).await
    }

    /// Starts the image named by `EDGEFLOW_KAFKA_IMAGE` (default `apache/kafka:3.9.0`) as
    /// `EDGEFLOW_KAFKA_FLAVOR` says, and returns once it serves metadata.
    pub async fn start_with(storage: KafkaStorage) -> Self {
        let flavor = KafkaFlavor::from_env();
        let (name, tag) = docker::image_from_env("EDGEFLOW_KAFKA_IMAGE", "apache/kafka:3.9.0");
        let (container, port) = docker::start("the Kafka broker", |port| {
            let image = GenericImage::new(name.clone(), tag.clone());
            match flavor {
                KafkaFlavor::Tansu => {
                    let engine = match storage {
                        // Relative to the image's working directory (/var/lib/tansu), on
                        // the container's own disk: kept by `docker stop`/`docker start`.
                        KafkaStorage::Durable => "sqlite://tansu.db",
                        KafkaStorage::Memory => "memory://tansu/",
                    };
                    image.with_mapped_port(port, port.tcp()).with_cmd([
                        "broker".to_owned(),
                        "--listener-url".to_owned(),
                        format!("tcp://0.0.0.0:{port}"),
                        "--advertised-listener-url".to_owned(),
                        format!("tcp://127.0.0.1:{port}"),
                        "--storage-engine".to_owned(),
                        engine.to_owned(),
                    ])
                }
                KafkaFlavor::Apache => {
                    apache_kraft_env(image.with_mapped_port(port, port.tcp()), port)
                }
            }
        })
        .await;
        let kafka = Kafka {
            container,
            port,
            flavor,
            storage,
        };
        kafka.wait_ready().await;
        kafka
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn flavor(&self) -> KafkaFlavor {
        self.flavor
    }

    pub fn storage(&self) -> KafkaStorage {
        self.storage
    }

    /// A client config with `bootstrap.servers` set; add producer/consumer settings.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Creates `topic` with `partitions` partitions (replication 1) and waits until its
    /// metadata shows every partition with a leader.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .unwrap_or_else(|e| panic!("cannot create a Kafka admin client: {e}"));
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .unwrap_or_else(|e| panic!("CreateTopics({topic}) failed: {e}"));
        for result in results {
            if let Err((name, code)) = result {
                panic!("CreateTopics({name}, {partitions} partitions) failed: {code}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.partition_count(topic).await {
                Ok(n) if n == partitions => return,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!(
                    "topic {topic} created but its metadata shows {other:?} partitions with a \
                     leader, expected {partitions}"
                ),
            }
        }
    }

    /// Number of partitions of `topic` that have a leader, from fresh metadata.
    pub async fn partition_count(&self, topic: &str) -> Result<i32, KafkaError> {
        let consumer = self.base_consumer();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            let count = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions())
                .filter(|p| p.leader() >= 0 && p.error().is_none())
                .count();
            Ok(i32::try_from(count).unwrap_or(i32::MAX))
        })
        .await
        .unwrap_or_else(|e| panic!("metadata task failed: {e}"))
    }

    /// High watermark (next offset) of each partition `0..partitions`.
    pub async fn end_offsets(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer = self.base_consumer();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            (0..partitions)
                .map(|p| {
                    consumer
                        .fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .map(|(_low, high)| high)
                        .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"))
                })
                .collect()
        })
        .await
        .unwrap_or_else(|e| panic!("watermark task failed: {e}"))
    }

    /// Reads `topic` partitions `0..partitions` from the beginning (manual `assign`, no
    /// consumer group, no commits) until at least `expected_min` records have arrived
    /// *and* every partition is at its end, or `timeout` passes. Returns the records in
    /// arrival order (ordered per partition); on timeout returns what it has, so the test's
    /// own assertion reports the shortfall. Reading to the end also exposes duplicates
    /// beyond `expected_min`.
    pub async fn consume_all(
        &self,
        topic: &str,
        partitions: i32,
        expected_min: usize,
        timeout: Duration,
    ) -> Vec<ConsumedRecord> {
        // librdkafka wants a group.id even for `assign`; nothing joins or commits.
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", super::unique_topic("edgeflow-test-readback"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "100")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a Kafka consumer: {e}"));
        let mut assignment = TopicPartitionList::new();
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .unwrap_or_else(|e| panic!("bad partition {topic}/{p}: {e}"));
        }
        consumer
            .assign(&assignment)
            .unwrap_or_else(|e| panic!("assign({topic}, 0..{partitions}) failed: {e}"));

        let deadline = tokio::time::Instant::now() + timeout;
        let mut records = Vec::new();
        let mut at_end: BTreeSet<i32> = BTreeSet::new();
        loop {
            if records.len() >= expected_min && at_end.len() == partitions as usize {
                return records;
            }
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_elapsed) => return records,
                Ok(Ok(message)) => {
                    at_end.remove(&message.partition());
                    let headers = message
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default();
                    records.push(ConsumedRecord {
                        partition: message.partition(),
                        offset: message.offset(),
                        key: message.key().map(<[u8]>::to_vec),
                        payload: message.payload().map(<[u8]>::to_vec),
                        headers,
                        timestamp_ms: message.timestamp().to_millis(),
                    });
                }
                Ok(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                // Transient (e.g. broker restarting); librdkafka retries by itself,
                // unless the broker is gone for good.
                Ok(Err(e)) => {
                    eprintln!("consume_all({topic}): {e}");
                    self.panic_if_exited(&format!("consume_all({topic})")).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Stops the broker (`docker stop`: SIGTERM, then SIGKILL after 10 s; tansu takes up
    /// to 5 s to exit while clients are connected). Clients see connections closed, then
    /// refused. With [`KafkaStorage::Durable`] the data stays in the container for
    /// [`Kafka::start_again`]. After the restart, librdkafka clients reconnect on their
    /// own backoff (`reconnect.backoff.max.ms`, default 10 s): the first delivery after a
    /// short outage took ~4-6 s in our runs.
    ///
    /// Use this (not [`Kafka::pause`]) for "Kafka is down": it is what an outage or a
    /// broker restart looks like to a client.
    pub async fn stop(&self) {
        self.container
            .stop_with_timeout(Some(10))
            .await
            .unwrap_or_else(|e| panic!("could not stop the Kafka broker: {e}"));
    }

    /// Starts the stopped broker again (same container, data and port) and waits until
    /// it serves metadata.
    pub async fn start_again(&self) {
        self.container
            .start()
            .await
            .unwrap_or_else(|e| panic!("could not restart the Kafka broker: {e}"));
        self.wait_ready().await;
    }

    /// Kills the broker (`docker kill`, SIGKILL): a crash rather than a shutdown.
    /// Committed data stays in the container for [`Kafka::start_again`].
    pub async fn kill(&self) {
        self.container
            .stop_with_timeout(Some(0))
            .await
            .unwrap_or_else(|e| panic!("could not kill the Kafka broker: {e}"));
    }

    /// Whether the broker's container is running (false after [`Kafka::stop`] or
    /// [`Kafka::kill`], or if the broker exited by itself).
    pub async fn is_running(&self) -> bool {
        self.container.is_running().await.unwrap_or(false)
    }

    /// Panics with the broker's log if its container is no longer running: turns "all
    /// brokers down" timeouts into a clear failure when the broker died.
    pub async fn panic_if_exited(&self, context: &str) {
        if !self.is_running().await {
            panic!(
                "{context}: the Kafka broker ({:?}) at {} is not running (it exited by itself \
                 unless the test stopped it)\n{}",
                self.flavor,
                self.bootstrap(),
                self.logs().await
            );
        }
    }

    /// Freezes the broker (`docker pause`): connections stay open but nothing answers,
    /// like a network partition. Clients see timeouts rather than refusals.
    pub async fn pause(&self) {
        self.container
            .pause()
            .await
            .unwrap_or_else(|e| panic!("could not pause the Kafka broker: {e}"));
    }

    /// Resumes a paused broker.
    pub async fn unpause(&self) {
        self.container
            .unpause()
            .await
            .unwrap_or_else(|e| panic!("could not unpause the Kafka broker: {e}"));
    }

    /// The broker's log so far.
    pub async fn logs(&self) -> String {
        docker::logs(&self.container).await
    }

    fn base_consumer(&self) -> BaseConsumer {
        self.client_config()
            .set("socket.connection.setup.timeout.ms", "2000")
            .create()
            .unwrap_or_else(|e| panic!("cannot create a Kafka client: {e}"))
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let consumer = std::sync::Arc::new(self.base_consumer());
        let mut last_error = String::new();
        while Instant::now() < deadline {
            let c = std::sync::Arc::clone(&consumer);
            let result = tokio::task::spawn_blocking(move || {
                c.fetch_metadata(None, Duration::from_secs(2))
                    .map(|m| m.brokers().len())
            })
            .await;
            match result {
                Ok(Ok(brokers)) if brokers > 0 => return,
                Ok(Ok(_)) => last_error = "metadata lists no broker".to_owned(),
                Ok(Err(e)) => last_error = e.to_string(),
                Err(e) => last_error = e.to_string(),
            }
            if let Ok(false) = self.container.is_running().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the Kafka broker ({:?}) at {} is not ready after {READY_TIMEOUT:?} (last error: \
             {last_error})\n{}",
            self.flavor,
            self.bootstrap(),
            self.logs().await
        );
    }
}

/// KRaft single-node settings for the `apache/kafka` image, advertising 127.0.0.1:PORT.
fn apache_kraft_env(
    request: testcontainers::ContainerRequest<GenericImage>,
    port: u16,
) -> testcontainers::ContainerRequest<GenericImage> {
    let env: HashMap<&str, String> = HashMap::from([
        ("KAFKA_NODE_ID", "1".to_owned()),
        ("KAFKA_PROCESS_ROLES", "broker,controller".to_owned()),
        (
            "KAFKA_LISTENERS",
            format!("PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:9093"),
        ),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            format!("PLAINTEXT://127.0.0.1:{port}"),
        ),
        ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER".to_owned()),
        (
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_owned(),
        ),
        (
            "KAFKA_CONTROLLER_QUORUM_VOTERS",
            "1@localhost:9093".to_owned(),
        ),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1".to_owned()),
        (
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
            "1".to_owned(),
        ),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1".to_owned()),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0".to_owned()),
        ("KAFKA_NUM_PARTITIONS", "1".to_owned()),
    ]);
    env.into_iter()
        .fold(request, |request, (k, v)| request.with_env_var(k, v))
}
