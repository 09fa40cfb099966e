//! Smoke tests of the integration-test harness (`tests/common`) against the real brokers:
//! if these fail, fix the environment (`scripts/test-env.sh`) before reading anything
//! into the other integration tests.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::{unique_topic, EdgeAgent, Kafka, Mosquitto};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_with_mosquitto_pub_reaches_a_rumqttc_subscriber() {
    let broker = Mosquitto::start().await;
    let topic = format!("sensors/{}/temperature", unique_topic("smoke"));

    let mut options = MqttOptions::new(unique_topic("subscriber"), broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 16);
    client
        .subscribe(&topic, QoS::AtLeastOnce)
        .await
        .expect("queue SUBSCRIBE");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) =
                events.poll().await.expect("MQTT connection")
            {
                break;
            }
        }
    })
    .await
    .expect("SUBACK within 10 s");

    let payload = r#"{"sensor":"s-1","temperature":21.5}"#;
    let (host, port, pub_topic) = (
        broker.host().to_owned(),
        broker.port().to_string(),
        topic.clone(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new("mosquitto_pub")
            .args([
                "-h", &host, "-p", &port, "-q", "1", "-t", &pub_topic, "-m", payload,
            ])
            .output()
    })
    .await
    .expect("mosquitto_pub task")
    .expect("mosquitto_pub not found: install mosquitto-clients (scripts/test-env.sh does)");
    assert!(
        output.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let received = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) =
                events.poll().await.expect("MQTT connection")
            {
                break publish;
            }
        }
    })
    .await
    .expect("PUBLISH within 10 s");
    assert_eq!(received.topic, topic);
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert_eq!(&received.payload[..], payload.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_zstd_producer_round_trips_keyed_records_with_headers() {
    idempotent_producer_round_trips_records("zstd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_lz4_producer_round_trips_keyed_records_with_headers() {
    idempotent_producer_round_trips_records("lz4").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_a_kafka_stop_and_start_and_the_producer_resumes_without_duplicates() {
    let kafka = Kafka::start().await;
    let topic = unique_topic("restart");
    kafka.create_topic(&topic, PARTITIONS).await;
    let producer = idempotent_producer(&kafka, "zstd");

    let before: Vec<_> = (0..50).map(|i| send(&producer, &topic, i)).collect();
    for delivery in before {
        delivery.await;
    }

    kafka.stop().await;
    // Produced while the broker is down: librdkafka queues and retries them.
    let during: Vec<_> = (50..100).map(|i| send(&producer, &topic, i)).collect();
    // A deliberate outage, long enough for the producer to notice the broker is gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    kafka.start_again().await;

    tokio::time::timeout(Duration::from_secs(60), async {
        for delivery in during {
            delivery.await;
        }
    })
    .await
    .expect("records produced during the outage are delivered within 60 s of the restart");
    assert!(
        producer.client().fatal_error().is_none(),
        "idempotent producer hit a fatal error: {:?}",
        producer.client().fatal_error()
    );

    let records = kafka
        .consume_all(&topic, PARTITIONS, 100, Duration::from_secs(30))
        .await;
    assert_records_are_exactly(&records, 0..100);
}

/// `edgeflow simulate` through Mosquitto: what a subscriber receives is exactly what the
/// readings file lists (read back by the edge agent's decoder, an independent reader of
/// the formats: malformed messages rejected, every other one the reading the file names),
/// and a second run with the same seed and start writes the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_publishes_what_its_readings_file_lists_and_repeats_it() {
    use edgeflow_edge::config::DecodeConfig;
    use edgeflow_edge::decode::{DecodeBuf, Decoder, PayloadFormat, Source};

    const PER_RUN: usize = 3_000;
    let broker = Mosquitto::start().await;
    let mut options = MqttOptions::new(unique_topic("subscriber"), broker.host(), broker.port());
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 1_000);
    client
        .subscribe("sensors/#", QoS::AtLeastOnce)
        .await
        .expect("queue SUBSCRIBE");
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let collector = tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        let mut received = Vec::new();
        while received.len() < 2 * PER_RUN {
            match events.poll().await.expect("MQTT connection") {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => received.push((p.topic, p.payload)),
                _ => {}
            }
        }
        received
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("SUBACK within 10 s")
        .expect("subscriber");

    let dir = tempfile::tempdir().expect("temp dir");
    // A fixed start near now: the decoder refuses times more than 7 days old.
    let start_ms = edgeflow_wire::clock::now_ms() / 60_000 * 60_000;
    let simulate = |file: &std::path::Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .args(["simulate", "--host", broker.host(), "--port"])
            .arg(broker.port().to_string())
            .args([
                "--sensors",
                "60",
                "--rate",
                "5000",
                "--seed",
                "11",
                "--qos",
                "1",
            ])
            .args(["--malformed", "0.05", "--late", "0.05", "--dropout", "0.01"])
            .args(["--formats", "json=1,senml=1,number=1"])
            .arg(format!("--count={PER_RUN}"))
            .arg(format!("--start-ms={start_ms}"))
            .arg("--readings")
            .arg(file)
            .output()
            .expect("run edgeflow simulate");
        assert!(
            output.status.success(),
            "edgeflow simulate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read_to_string(file).expect("readings file")
    };
    let first = simulate(&dir.path().join("first.jsonl"));
    let second = simulate(&dir.path().join("second.jsonl"));
    assert_eq!(
        first, second,
        "the same seed and start wrote different readings"
    );

    let received = tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("every message within 30 s")
        .expect("collector");
    // (topic, sensor, event time or None for the arrival time, value bits), or the
    // topic alone for a rejected message.
    type Key = (String, Option<(String, Option<i64>, u64)>);
    let decoder = Decoder::new(&DecodeConfig::default(), 1 << 16);
    let pattern = "sensors/{site}/{sensor_id}/telemetry"
        .parse()
        .expect("pattern");
    let mut buf = DecodeBuf::default();
    let mut got: Vec<Key> = received
        .iter()
        .map(|(topic, payload)| {
            let arrival = edgeflow_wire::clock::now_ms();
            let source = Source {
                format: PayloadFormat::Auto,
                pattern: Some(&pattern),
            };
            match decoder.decode(source, topic, payload, arrival, &mut buf) {
                Err(_) => (topic.clone(), None),
                Ok(()) => {
                    assert_eq!(buf.items.len(), 1, "{payload:?}");
                    let item = &buf.items[0];
                    // A bare number carries no time: the decoder used the arrival time.
                    let ts = matches!(payload.first(), Some(b'{' | b'[')).then_some(item.ts_ms);
                    let reading = (buf.sensor(item).to_string(), ts, item.value.to_bits());
                    (topic.clone(), Some(reading))
                }
            }
        })
        .collect();
    let mut want: Vec<Key> = first
        .lines()
        .chain(second.lines())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("readings line");
            let topic = v["topic"].as_str().expect("topic").to_string();
            if !v["defect"].is_null() {
                return (topic, None);
            }
            let sensor = v["sensor"].as_str().expect("sensor").to_string();
            let value = v["value"].as_f64().expect("value").to_bits();
            (topic, Some((sensor, v["ts_ms"].as_i64(), value)))
        })
        .collect();
    assert_eq!(want.len(), 2 * PER_RUN);
    let malformed = want.iter().filter(|k| k.1.is_none()).count();
    assert!(
        malformed > 2 * PER_RUN / 100,
        "only {malformed} malformed messages"
    );
    got.sort();
    want.sort();
    assert!(
        got == want,
        "the messages received differ from the readings files"
    );
}

#[test]
fn the_harness_builds_and_runs_the_edge_binary() {
    // Whatever the agent's CLI becomes, `--help` must exit successfully. The runtime is
    // only needed for the async wait.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut agent = EdgeAgent::builder().config("").arg("--help").spawn();
    let status = runtime.block_on(agent.wait_exit(Duration::from_secs(30)));
    assert!(
        status.success(),
        "edgeflow-edge --help: {status}\n{}",
        agent.log_text()
    );
}

async fn idempotent_producer_round_trips_records(compression: &str) {
    let kafka = Kafka::start().await;
    let topic = unique_topic(&format!("roundtrip-{compression}"));
    kafka.create_topic(&topic, PARTITIONS).await;
    let producer = idempotent_producer(&kafka, compression);

    let deliveries: Vec<_> = (0..200).map(|i| send(&producer, &topic, i)).collect();
    for delivery in deliveries {
        delivery.await;
    }
    assert!(
        producer.client().fatal_error().is_none(),
        "idempotent producer hit a fatal error: {:?}",
        producer.client().fatal_error()
    );

    let records = kafka
        .consume_all(&topic, PARTITIONS, 200, Duration::from_secs(30))
        .await;
    assert_records_are_exactly(&records, 0..200);
    for record in &records {
        assert_eq!(
            record.header("content-type"),
            Some(&b"application/json"[..])
        );
        assert_eq!(record.headers.len(), 3, "headers of {record:?}");
        assert!(
            record
                .headers
                .iter()
                .any(|(k, v)| k == "no-value" && v.is_none()),
            "a header without a value is kept: {record:?}"
        );
        assert!(record.timestamp_ms.is_some());
    }
}

fn idempotent_producer(kafka: &Kafka, compression: &str) -> FutureProducer {
    kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", compression)
        .set("linger.ms", "5")
        .create()
        .expect("idempotent producer")
}

/// Sends record `i` (key `sensor-{i % 7}`, payload and a `seq` header carrying `i`) and
/// returns a future that panics unless it is delivered.
fn send(producer: &FutureProducer, topic: &str, i: u32) -> impl std::future::Future<Output = ()> {
    let key = format!("sensor-{}", i % 7);
    let payload = format!(r#"{{"seq":{i},"value":{}}}"#, f64::from(i) * 0.5);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header {
            key: "seq",
            value: Some(&i.to_be_bytes()),
        })
        .insert(Header {
            key: "no-value",
            value: None::<&[u8]>,
        });
    let record = FutureRecord::to(topic)
        .key(&key)
        .payload(&payload)
        .headers(headers);
    let delivery = producer
        .send_result(record)
        .unwrap_or_else(|(e, _)| panic!("enqueue record {i}: {e}"));
    async move {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => panic!("record {i} not delivered: {e}"),
            Err(_canceled) => panic!("record {i}: producer dropped"),
        }
    }
}

/// Every `seq` in `expected` exactly once, each key in one partition, and per key in
/// sequence order (what an idempotent producer guarantees).
fn assert_records_are_exactly(records: &[common::ConsumedRecord], expected: std::ops::Range<u32>) {
    let seqs: Vec<u32> = records
        .iter()
        .map(|r| {
            let bytes: [u8; 4] = r
                .header("seq")
                .and_then(|v| v.try_into().ok())
                .unwrap_or_else(|| panic!("record without a 4-byte seq header: {r:?}"));
            u32::from_be_bytes(bytes)
        })
        .collect();
    let unique: HashSet<u32> = seqs.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "duplicates among {} records: {seqs:?}",
        seqs.len()
    );
    assert_eq!(
        unique,
        expected.clone().collect::<HashSet<_>>(),
        "records read back"
    );

    let mut by_key: BTreeMap<String, Vec<(i32, i64, u32)>> = BTreeMap::new();
    for (record, seq) in records.iter().zip(&seqs) {
        let key = record.key_str().expect("every record has a key");
        assert_eq!(
            record.payload_str().as_deref(),
            Some(format!(r#"{{"seq":{seq},"value":{}}}"#, f64::from(*seq) * 0.5).as_str())
        );
        by_key
            .entry(key)
            .or_default()
            .push((record.partition, record.offset, *seq));
    }
    for (key, mut entries) in by_key {
        let partitions: HashSet<i32> = entries.iter().map(|e| e.0).collect();
        assert_eq!(
            partitions.len(),
            1,
            "key {key} spread over partitions {partitions:?}"
        );
        entries.sort_by_key(|e| e.1);
        let in_offset_order: Vec<u32> = entries.iter().map(|e| e.2).collect();
        let mut sorted = in_offset_order.clone();
        sorted.sort_unstable();
        assert_eq!(
            in_offset_order, sorted,
            "key {key}: seqs out of order in the log"
        );
    }
}
