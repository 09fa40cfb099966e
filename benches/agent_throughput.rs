//! End-to-end throughput of the `edgeflow-edge` binary against real brokers.
//!
//! Run: `cargo bench --bench agent_throughput` (full sizes). Without `--bench` among the
//! arguments (e.g. `cargo test --all-targets`) a tiny smoke version runs instead.
//!
//! Environment: the harness variables (`EDGEFLOW_KAFKA_IMAGE`, `EDGEFLOW_KAFKA_FLAVOR`,
//! Docker) for Kafka; `/usr/sbin/mosquitto` (or `EDGEFLOW_BENCH_MOSQUITTO`) for MQTT;
//! `EDGEFLOW_BENCH_N` (drain messages, default 200,000), `EDGEFLOW_BENCH_BACKLOG_MB`
//! (default 150). In full mode the agent is built with `cargo build --release -p
//! edgeflow-edge` unless `EDGEFLOW_EDGE_BIN` points at a binary.
//!
//! MQTT broker: a native `mosquitto -c <tmp conf>` on a free port, one fresh broker per
//! measurement, for every part. The Docker harness copies one fixed config into the
//! container, and part 1 needs a second config (`max_inflight_messages 20`); running every
//! part on the same native broker keeps the bare-vs-agent comparison apples to apples (and
//! keeps Docker's port proxy out of the MQTT path). Kafka is the harness's (Docker).
//!
//! Measurements:
//! 1. Drain rate of a pre-loaded persistent session (N QoS 1 messages queued while the
//!    client is offline): bare rumqttc subscriber vs. the agent (passthrough, aggregate),
//!    plus passthrough against a broker allowing 20 messages in flight.
//! 2. VmRSS / VmHWM of the agent (aggregate) with 10,000 sensors publishing for 10 s.
//! 3. Size of a stripped copy of the agent binary.
//! 4. Backlog drain: Kafka paused, the forward log filled to ~150 MB, Kafka resumed; time
//!    until every record is delivered (and `store_pending_records` is 0).
//!
//! Results are printed as a table and written to `<target>/agent_throughput.json`.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{unique_topic, wait_until, EdgeAgent, Kafka, Publisher};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FILTER: &str = "sensors/+/+/telemetry";

struct Sizes {
    full: bool,
    drain_n: u64,
    inflight20_n: u64,
    rss_sensors: u64,
    rss_rate: u64,
    rss_secs: u64,
    backlog_mb: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            full,
            drain_n: env_u64("EDGEFLOW_BENCH_N").unwrap_or(200_000),
            inflight20_n: 20_000,
            rss_sensors: 10_000,
            rss_rate: 10_000,
            rss_secs: 10,
            backlog_mb: env_u64("EDGEFLOW_BENCH_BACKLOG_MB").unwrap_or(150),
        }
    } else {
        Sizes {
            full,
            drain_n: env_u64("EDGEFLOW_BENCH_N").unwrap_or(2_000),
            inflight20_n: 1_000,
            rss_sensors: 10_000,
            rss_rate: 1_000,
            rss_secs: 2,
            backlog_mb: env_u64("EDGEFLOW_BENCH_BACKLOG_MB").unwrap_or(5),
        }
    };
    // Before any thread exists: point the harness at a release build in full mode.
    let bin = agent_binary(full);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(sizes, bin));
}

/// Full mode: `cargo build --release -p edgeflow-edge` (unless EDGEFLOW_EDGE_BIN is set)
/// and export EDGEFLOW_EDGE_BIN for the harness. Smoke mode: the harness's default (the
/// bench's own profile).
fn agent_binary(full: bool) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EDGEFLOW_EDGE_BIN") {
        return Some(PathBuf::from(p));
    }
    if !full {
        return None;
    }
    // <target>/release/deps/agent_throughput-<hash>
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building: cargo build --release -p edgeflow-edge --bin edgeflow-edge");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "edgeflow-edge",
            "--bin",
            "edgeflow-edge",
        ])
        .arg("--target-dir")
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "cargo build --release -p edgeflow-edge failed"
    );
    let bin = target.join("release").join("edgeflow-edge");
    std::env::set_var("EDGEFLOW_EDGE_BIN", &bin);
    Some(bin)
}

// ---------------------------------------------------------------------------------------
// Native Mosquitto

struct NativeMosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NativeMosquitto {
    async fn start(max_inflight: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_inflight_messages {max_inflight}\nmax_queued_messages 10000000\n\
                 max_queued_bytes 0\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            ),
        )
        .unwrap();
        let bin = std::env::var("EDGEFLOW_BENCH_MOSQUITTO")
            .unwrap_or_else(|_| "/usr/sbin/mosquitto".to_owned());
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e} (apt-get install mosquitto)"));
        let m = NativeMosquitto {
            child,
            port,
            _dir: dir,
        };
        wait_until(
            "native mosquitto listens",
            Duration::from_secs(10),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        m
    }
}

impl Drop for NativeMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// MQTT clients

fn now_ms() -> i64 {
    edgeflow_wire::clock::now_ms()
}

/// Connects `client_id` with clean_session=false, subscribes to FILTER (QoS 1), and
/// disconnects: the broker then queues matching QoS 1 messages for it.
async fn create_session(port: u16, client_id: &str) {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 10);
    client.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = ev.poll().await.expect("session setup") {
            break;
        }
    }
    client.disconnect().await.unwrap();
    loop {
        match ev.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
            _ => {}
        }
    }
}

/// A QoS 1 publisher counting PUBACKs.
fn telemetry_topic(i: u64, sensors: u64) -> String {
    let s = i % sensors;
    format!("sensors/site-{}/s-{s}/telemetry", s % 8)
}

fn telemetry_payload(i: u64) -> Vec<u8> {
    // ~80 bytes with the topic's share; the payload itself is ~30 bytes like the brief's.
    format!(
        r#"{{"ts":{},"value":{:.2}}}"#,
        now_ms(),
        20.0 + (i % 500) as f64 / 100.0
    )
    .into_bytes()
}

/// Queues `n` messages (1,000 sensors) for the offline session `client_id`.
async fn preload(port: u16, client_id: &str, n: u64) -> f64 {
    create_session(port, client_id).await;
    let mut p = Publisher::connect("127.0.0.1", port).await;
    let t = Instant::now();
    for i in 0..n {
        p.publish(&telemetry_topic(i, 1_000), telemetry_payload(i))
            .await;
    }
    p.wait_all_acked(Duration::from_secs(300)).await;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    p.close().await;
    rate
}

/// Bare rumqttc subscriber (QoS 1, automatic acks) resuming session `client_id`.
/// Returns messages/s from the start of the connect to the last message.
async fn bare_drain(port: u16, client_id: &str, n: u64) -> f64 {
    let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 10_000);
    let mut got = 0u64;
    let t0 = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    while got < n {
        assert!(
            Instant::now() < deadline,
            "bare subscriber: {got}/{n} after 600 s"
        );
        if let Event::Incoming(Packet::Publish(_)) = ev.poll().await.expect("bare subscriber") {
            got += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !matches!(
            ev.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
    n as f64 / secs
}

// ---------------------------------------------------------------------------------------
// Agent

struct Topics {
    aggregates: String,
    readings: String,
    dead_letter: String,
}

async fn kafka_topics(kafka: &Kafka) -> Topics {
    let t = Topics {
        aggregates: unique_topic("bench-agg"),
        readings: unique_topic("bench-raw"),
        dead_letter: unique_topic("bench-dlq"),
    };
    for k in [&t.aggregates, &t.readings, &t.dead_letter] {
        kafka.create_topic(k, 3).await;
    }
    t
}

fn agent_config(
    dir: &Path,
    mode: &str,
    port: u16,
    client_id: &str,
    kafka: &Kafka,
    t: &Topics,
) -> String {
    format!(
        r#"
gateway_id = "gw-bench"
data_dir = "{data}"
mode = "{mode}"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "{client_id}"
reconnect_max = "1s"

[[mqtt.subscriptions]]
filter = "{FILTER}"
qos = 1
topic_pattern = "sensors/{{site}}/{{sensor_id}}/telemetry"

[kafka]
brokers = "{brokers}"
aggregates_topic = "{agg}"
readings_topic = "{raw}"
dead_letter_topic = "{dlq}"

[metrics]
listen = "127.0.0.1:0"
"#,
        data = dir.join("data").display(),
        brokers = kafka.bootstrap(),
        agg = t.aggregates,
        raw = t.readings,
        dlq = t.dead_letter,
    )
}

async fn spawn_agent(
    name: &str,
    mode: &str,
    port: u16,
    client_id: &str,
    kafka: &Kafka,
    t: &Topics,
) -> (EdgeAgent, String) {
    let b = EdgeAgent::builder()
        .name(name)
        .env("RUST_LOG", "warn,edgeflow_edge=info");
    let cfg = agent_config(b.workdir(), mode, port, client_id, kafka, t);
    let mut agent = b.config(cfg).spawn();
    let line = agent
        .wait_for_log_line("metrics listening on", Duration::from_secs(60))
        .await;
    let addr = line
        .split("metrics listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("address in the log line")
        .to_string();
    (agent, addr)
}

async fn scrape(addr: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const READINGS_IN: &str = "edgeflow_edge_readings_in_total";
const PAYLOADS_IN: &str = "edgeflow_edge_payloads_in_total";
const DELIVERED: &str = "edgeflow_edge_kafka_delivered_total";
const PENDING: &str = "edgeflow_edge_store_pending_records";
const STORE_BYTES: &str = "edgeflow_edge_store_bytes";

/// Polls the agent's metrics every 5 ms until `done` holds; rate = n / (t1 - t0), t0 being
/// when the agent logged its metrics address (it connects to MQTT right after), so the
/// MQTT connect is inside the timed span, as for the bare subscriber. With a small N
/// (smoke) this is dominated by start-up and the last Kafka round trip.
async fn agent_drain(
    addr: &str,
    t0: Instant,
    n: u64,
    done: impl Fn(&str) -> bool,
) -> Result<f64, String> {
    let mut last = (0u64, Instant::now());
    loop {
        let m = scrape(addr).await;
        let now = Instant::now();
        if done(&m) {
            return Ok(n as f64 / (now - t0).as_secs_f64());
        }
        // No progress for STALL: report it instead of waiting forever.
        let progress = metric(&m, PAYLOADS_IN) + metric(&m, DELIVERED);
        if progress != last.0 {
            last = (progress, now);
        } else if now - last.1 > STALL {
            return Err(format!(
                "STALLED: payloads_in {} / {n}, delivered {}, group_commits {}",
                metric(&m, PAYLOADS_IN),
                metric(&m, DELIVERED),
                metric(&m, "edgeflow_edge_group_commits_total")
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const STALL: Duration = Duration::from_secs(10);

fn show(r: &Result<f64, String>) -> String {
    match r {
        Ok(v) => format!("{v:.0} msg/s"),
        Err(_) => "STALLED".into(),
    }
}

fn ratio(r: &Result<f64, String>, bare: f64) -> String {
    match r {
        Ok(v) => format!("ratio {:.3} (target >= 0.9)", v / bare),
        Err(e) => e.clone(),
    }
}

async fn drain_agent_case(
    kafka: &Kafka,
    mode: &str,
    max_inflight: u32,
    n: u64,
) -> Result<f64, String> {
    let mqtt = NativeMosquitto::start(max_inflight).await;
    let t = kafka_topics(kafka).await;
    let client_id = unique_topic("edge-drain");
    preload(mqtt.port, &client_id, n).await;
    let (agent, addr) = spawn_agent(
        &format!("edge-{mode}"),
        mode,
        mqtt.port,
        &client_id,
        kafka,
        &t,
    )
    .await;
    let t0 = Instant::now();
    let rate = if mode == "passthrough" {
        agent_drain(&addr, t0, n, |m| {
            metric(m, READINGS_IN) >= n && metric(m, DELIVERED) >= n
        })
        .await
    } else {
        agent_drain(&addr, t0, n, |m| {
            metric(m, READINGS_IN) >= n && metric(m, PENDING) == 0
        })
        .await
    };
    drop(agent);
    rate
}

// ---------------------------------------------------------------------------------------
// Parts 2-4

fn proc_status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct RssResult {
    rss_kb: u64,
    hwm_kb: u64,
    active_sensors: u64,
    achieved_rate: f64,
}

async fn rss_case(kafka: &Kafka, s: &Sizes) -> RssResult {
    let mqtt = NativeMosquitto::start(1000).await;
    let t = kafka_topics(kafka).await;
    let (agent, addr) = spawn_agent(
        "edge-rss",
        "aggregate",
        mqtt.port,
        &unique_topic("edge-rss"),
        kafka,
        &t,
    )
    .await;
    wait_until(
        "agent connected to MQTT",
        Duration::from_secs(30),
        || async {
            (metric(&scrape(&addr).await, "edgeflow_edge_mqtt_connected") == 1).then_some(())
        },
    )
    .await;
    // The subscription is sent after CONNACK: wait until a probe reading arrives.
    let mut p = Publisher::connect("127.0.0.1", mqtt.port).await;
    wait_until("agent subscribed", Duration::from_secs(30), || {
        let addr = addr.clone();
        let client = p.client();
        async move {
            client
                .publish(
                    "sensors/site-0/probe/telemetry",
                    QoS::AtLeastOnce,
                    false,
                    telemetry_payload(0),
                )
                .await
                .unwrap();
            (metric(&scrape(&addr).await, READINGS_IN) > 0).then_some(())
        }
    })
    .await;
    let before = metric(&scrape(&addr).await, READINGS_IN);
    // Paced: rate/100 messages every 10 ms, round-robin over the sensors.
    let per_tick = (s.rss_rate / 100).max(1);
    let total = per_tick * 100 * s.rss_secs;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let t0 = Instant::now();
    let mut i = 0;
    while i < total {
        tick.tick().await;
        for _ in 0..per_tick {
            p.publish(&telemetry_topic(i, s.rss_sensors), telemetry_payload(i))
                .await;
            i += 1;
        }
    }
    let achieved_rate = total as f64 / t0.elapsed().as_secs_f64();
    p.wait_all_acked(Duration::from_secs(300)).await;
    wait_until(
        "agent took every reading",
        Duration::from_secs(120),
        || async { (metric(&scrape(&addr).await, READINGS_IN) >= before + total).then_some(()) },
    )
    .await;
    let m = scrape(&addr).await;
    let pid = agent.pid().unwrap();
    let r = RssResult {
        rss_kb: proc_status_kb(pid, "VmRSS:"),
        hwm_kb: proc_status_kb(pid, "VmHWM:"),
        active_sensors: metric(&m, "edgeflow_edge_active_sensors"),
        achieved_rate,
    };
    p.close().await;
    drop(agent);
    r
}

fn stripped_size(bin: &Path) -> u64 {
    let out = std::env::temp_dir().join(format!("edgeflow-edge-stripped-{}", std::process::id()));
    let st = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .expect("run strip");
    assert!(st.success(), "strip failed");
    let size = std::fs::metadata(&out).unwrap().len();
    let _ = std::fs::remove_file(&out);
    size
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

/// Fields per backlog payload: each numeric key is one reading, i.e. one Kafka record.
const BACKLOG_FIELDS: usize = 10;

fn backlog_payload(i: u64) -> Vec<u8> {
    let mut s = format!(r#"{{"ts":{}"#, now_ms());
    for f in 0..BACKLOG_FIELDS {
        s.push_str(&format!(
            r#","field_{f:02}_measurement":{}.{:03}"#,
            100 + f,
            i % 1000
        ));
    }
    s.push('}');
    s.into_bytes()
}

struct BacklogResult {
    disk_bytes: u64,
    store_bytes_metric: u64,
    records: u64,
    secs_delivered: f64,
    secs_pending_zero: f64,
    fill_secs: f64,
}

async fn backlog_case(kafka: &Kafka, target_mb: u64) -> BacklogResult {
    let mqtt = NativeMosquitto::start(1000).await;
    let t = kafka_topics(kafka).await;
    let (agent, addr) = spawn_agent(
        "edge-backlog",
        "passthrough",
        mqtt.port,
        &unique_topic("edge-backlog"),
        kafka,
        &t,
    )
    .await;
    let fwd_dir = agent.workdir().join("data").join("forward");
    let mut p = Publisher::connect("127.0.0.1", mqtt.port).await;
    // Warm-up: one record all the way to Kafka (producer metadata loaded).
    wait_until("warm-up record delivered", Duration::from_secs(60), || {
        let addr = addr.clone();
        let client = p.client();
        async move {
            client
                .publish(
                    "sensors/site-0/warmup/telemetry",
                    QoS::AtLeastOnce,
                    false,
                    telemetry_payload(0),
                )
                .await
                .unwrap();
            (metric(&scrape(&addr).await, DELIVERED) > 0).then_some(())
        }
    })
    .await;
    wait_until("warm-up settled", Duration::from_secs(30), || async {
        let m = scrape(&addr).await;
        (metric(&m, DELIVERED) >= metric(&m, READINGS_IN)).then_some(())
    })
    .await;
    kafka.pause().await;
    let target = target_mb * 1_000_000;
    let t_fill = Instant::now();
    let mut i = 0u64;
    // Long sensor ids make every record bigger (the id is the key and is in the value).
    let sensor_pad = "x".repeat(48);
    loop {
        for _ in 0..2_000 {
            let topic = format!(
                "sensors/site-{}/sensor-{sensor_pad}-{:05}/telemetry",
                i % 8,
                i % 10_000
            );
            p.publish(&topic, backlog_payload(i)).await;
            i += 1;
        }
        p.wait_all_acked(Duration::from_secs(300)).await;
        let sent_readings = i * BACKLOG_FIELDS as u64;
        // Wait for the agent to have taken what was published, then look at the log size.
        let addr2 = addr.clone();
        wait_until(
            "agent took the published chunk",
            Duration::from_secs(120),
            move || {
                let addr = addr2.clone();
                async move {
                    let m = scrape(&addr).await;
                    (metric(&m, READINGS_IN) >= sent_readings).then_some(())
                }
            },
        )
        .await;
        if dir_bytes(&fwd_dir) >= target {
            break;
        }
    }
    let fill_secs = t_fill.elapsed().as_secs_f64();
    let m = scrape(&addr).await;
    let readings = metric(&m, READINGS_IN);
    let store_bytes_metric = metric(&m, STORE_BYTES);
    let disk_bytes = dir_bytes(&fwd_dir);
    let delivered0 = metric(&m, DELIVERED);
    kafka.unpause().await;
    let t0 = Instant::now();
    let mut secs_delivered = None;
    let deadline = t0 + Duration::from_secs(900);
    let secs_pending_zero = loop {
        let m = scrape(&addr).await;
        if secs_delivered.is_none() && metric(&m, DELIVERED) >= readings {
            secs_delivered = Some(t0.elapsed().as_secs_f64());
        }
        if secs_delivered.is_some() && metric(&m, PENDING) == 0 {
            break t0.elapsed().as_secs_f64();
        }
        assert!(
            Instant::now() < deadline,
            "backlog did not drain; metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    p.close().await;
    drop(agent);
    BacklogResult {
        disk_bytes,
        store_bytes_metric,
        records: readings - delivered0,
        secs_delivered: secs_delivered.unwrap(),
        secs_pending_zero,
        fill_secs,
    }
}

// ---------------------------------------------------------------------------------------

async fn run(s: Sizes, bin: Option<PathBuf>) {
    let mode = if s.full { "full" } else { "smoke" };
    eprintln!("agent_throughput ({mode}): starting Kafka");
    let kafka = Kafka::start_in_memory().await;

    // 1. Drain rates.
    let n = s.drain_n;
    let bare = {
        let mqtt = NativeMosquitto::start(1000).await;
        let id = unique_topic("bare");
        let pub_rate = preload(mqtt.port, &id, n).await;
        eprintln!("preloaded {n} messages at {pub_rate:.0} msg/s");
        bare_drain(mqtt.port, &id, n).await
    };
    eprintln!("bare drain: {bare:.0} msg/s");
    let pass = drain_agent_case(&kafka, "passthrough", 0, n).await;
    eprintln!("agent passthrough drain: {pass:?}");
    let agg = drain_agent_case(&kafka, "aggregate", 0, n).await;
    eprintln!("agent aggregate drain: {agg:?}");
    let n20 = s.inflight20_n;
    let pass20 = drain_agent_case(&kafka, "passthrough", 20, n20).await;
    eprintln!("agent passthrough drain, max_inflight 20: {pass20:?}");

    // 2. Memory.
    let rss = rss_case(&kafka, &s).await;
    eprintln!("rss: {} kB (hwm {} kB)", rss.rss_kb, rss.hwm_kb);

    // 3. Binary size.
    let bin = bin.unwrap_or_else(common_edge_binary);
    let raw_size = std::fs::metadata(&bin).unwrap().len();
    let stripped = stripped_size(&bin);

    // 4. Backlog.
    let bl = backlog_case(&kafka, s.backlog_mb).await;
    let mb = bl.disk_bytes as f64 / 1e6;
    let mbps = mb / bl.secs_delivered;

    let rows: Vec<(String, String, String)> = vec![
        ("1a drain, bare rumqttc subscriber".into(), format!("{bare:.0} msg/s"), format!("N={n}")),
        ("1b drain, agent passthrough".into(), show(&pass), ratio(&pass, bare)),
        ("1c drain, agent aggregate".into(), show(&agg), ratio(&agg, bare)),
        ("1d drain, passthrough, max_inflight 20".into(), show(&pass20), format!("N={n20}; {}", ratio(&pass20, bare))),
        ("2 VmRSS aggregate, active sensors".into(), format!("{:.1} MB", rss.rss_kb as f64 / 1024.0), format!("VmHWM {:.1} MB, {} sensors, {:.0} msg/s (target < 20 MB)", rss.hwm_kb as f64 / 1024.0, rss.active_sensors, rss.achieved_rate)),
        ("3 stripped binary".into(), format!("{:.2} MB", stripped as f64 / 1e6), format!("{stripped} bytes; unstripped {raw_size} ({})", bin.display())),
        ("4 backlog drain".into(), format!("{mbps:.1} MB/s"), format!("{mb:.0} MB on disk (metric {:.0} MB), {} records in {:.2} s = {:.0} rec/s; pending==0 after {:.2} s; filled in {:.1} s (target >= 50 MB/s)", bl.store_bytes_metric as f64 / 1e6, bl.records, bl.secs_delivered, bl.records as f64 / bl.secs_delivered, bl.secs_pending_zero, bl.fill_secs)),
    ];
    println!(
        "\nagent_throughput ({mode}; native mosquitto, Kafka {:?} in Docker)",
        std::env::var("EDGEFLOW_KAFKA_FLAVOR").unwrap_or_else(|_| "apache".into())
    );
    println!("{:<40} {:>14}  notes", "measurement", "value");
    for (a, b, c) in &rows {
        println!("{a:<40} {b:>14}  {c}");
    }
    let json = serde_json::json!({
        "mode": mode,
        "drain_n": n,
        "drain_bare_msgs_per_s": bare,
        "drain_agent_passthrough_msgs_per_s": pass.as_ref().ok(),
        "drain_agent_aggregate_msgs_per_s": agg.as_ref().ok(),
        "drain_agent_passthrough_error": pass.as_ref().err(),
        "drain_agent_aggregate_error": agg.as_ref().err(),
        "drain_passthrough_inflight20_n": n20,
        "drain_passthrough_inflight20_msgs_per_s": pass20.as_ref().ok(),
        "rss_kb": rss.rss_kb,
        "hwm_kb": rss.hwm_kb,
        "rss_active_sensors": rss.active_sensors,
        "rss_publish_rate": rss.achieved_rate,
        "binary_bytes": raw_size,
        "stripped_binary_bytes": stripped,
        "backlog_disk_bytes": bl.disk_bytes,
        "backlog_store_bytes_metric": bl.store_bytes_metric,
        "backlog_records": bl.records,
        "backlog_secs_delivered": bl.secs_delivered,
        "backlog_secs_pending_zero": bl.secs_pending_zero,
        "backlog_mb_per_s": mbps,
    });
    let exe = std::env::current_exe().unwrap();
    if let Some(target) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
        let path = target.join("agent_throughput.json");
        if std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).is_ok() {
            println!("written to {}", path.display());
        }
    }
}

fn common_edge_binary() -> PathBuf {
    // The harness resolves (and builds) the binary on first spawn; ask it again.
    let b = EdgeAgent::builder();
    drop(b);
    std::env::var_os("EDGEFLOW_EDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent()
                .and_then(Path::parent)
                .unwrap()
                .join("edgeflow-edge")
        })
}
