//! `edgeflow`: the project's command line.
//!
//! The gateway agent is the `edgeflow-edge` binary. This one carries the tools around it:
//! - `edgeflow simulate`: publishes synthetic sensor readings over MQTT;
//! - `edgeflow create-topics`: creates the Kafka topics the agent writes to;
//! - `edgeflow tail`: prints the records of a Kafka topic, decoded from the edge wire format;
//! - `edgeflow process`: runs a stream processor node (`configs/processor.toml`);
//! - `edgeflow sql`: runs a statement on a processor over HTTP and prints the rows;
//! - `edgeflow cluster status`: prints the cluster as its control log says.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use edgeflow_wire::kafka::{client_config, consumer_config};
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser)]
#[command(
    name = "edgeflow",
    version,
    about = "edgeflow: edge-to-cloud IoT stream pipeline"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish synthetic readings: JSON `{"ts":..,"value":..}` on
    /// `sensors/<site>/<sensor>/telemetry`.
    Simulate {
        #[arg(long, default_value = "localhost")]
        host: String,
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// Number of distinct sensors.
        #[arg(long, default_value_t = 100)]
        sensors: u32,
        /// Readings per second over all sensors (0 = as fast as possible).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Stop after this many readings (0 = run until interrupted).
        #[arg(long, default_value_t = 0)]
        count: u64,
        /// MQTT QoS 0, 1 or 2.
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// Seed of the value generator (runs are reproducible).
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Create Kafka topics (no-op for topics that exist).
    CreateTopics {
        #[arg(long, default_value = "localhost:9092")]
        brokers: String,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        topics: Vec<String>,
    },
    /// Run a stream processor: Kafka partitions through continuous queries into sinks;
    /// SQL over the PostgreSQL wire protocol and HTTP.
    Process {
        #[arg(long, default_value = "configs/processor.toml")]
        config: std::path::PathBuf,
        /// Check the configuration and exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Run one SQL statement on a processor (pull query, or CREATE/DROP MATERIALIZED
    /// VIEW) and print the result.
    Sql {
        /// The processor's HTTP address (`server.http_listen`).
        #[arg(long, default_value = "127.0.0.1:8081")]
        server: String,
        statement: String,
    },
    /// The processors' cluster.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Print a topic's records from the beginning of every partition as JSON lines.
    Tail {
        #[arg(long, default_value = "localhost:9092")]
        brokers: String,
        topic: String,
        /// Keep following new records.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Fold the control log to its end and print the members, the generation, each
    /// partition's holder, target owner and load, and the balance (`Δ`).
    Status {
        /// A processor's config (its `[kafka]`, `[[streams]]` and `[cluster]`).
        #[arg(long, default_value = "configs/processor.toml")]
        config: std::path::PathBuf,
        /// Print the fold as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.cmd {
        Cmd::Simulate {
            host,
            port,
            sensors,
            rate,
            count,
            qos,
            seed,
        } => rt.block_on(simulate(host, port, sensors, rate, count, qos, seed)),
        Cmd::CreateTopics {
            brokers,
            partitions,
            topics,
        } => rt.block_on(create_topics(&brokers, partitions, &topics)),
        Cmd::Tail {
            brokers,
            topic,
            follow,
        } => tail(&brokers, &topic, follow),
        Cmd::Process {
            config,
            check_config,
        } => {
            let cfg = edgeflow::processor::ProcessorConfig::load(&config)?;
            if check_config {
                rt.block_on(edgeflow::processor::check(&cfg))
                    .with_context(|| format!("{}", config.display()))?;
                println!("{}: ok", config.display());
                return Ok(());
            }
            init_tracing();
            rt.block_on(edgeflow::processor::run(cfg, shutdown_signal()))
        }
        Cmd::Sql { server, statement } => rt.block_on(sql(&server, &statement)),
        Cmd::Cluster {
            cmd: ClusterCmd::Status { config, json },
        } => {
            let cfg = edgeflow::processor::ProcessorConfig::load(&config)?;
            let (state, undecodable) = rt
                .block_on(edgeflow::cluster::status(&cfg))
                .with_context(|| format!("{}", config.display()))?;
            if json {
                let mut v = state.snapshot()?;
                v["delta"] = serde_json::json!(state.delta());
                v["undecodable"] = serde_json::json!(undecodable);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let topic = cfg
                    .cluster
                    .as_ref()
                    .map_or("", |c| c.control_topic.as_str());
                print!(
                    "{}",
                    edgeflow::cluster::status_text(&state, topic, undecodable)
                );
            }
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout belongs to the stdout sink.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `edgeflow sql`: one HTTP/1.1 request to the processor's `POST /sql`, Arrow back.
async fn sql(server: &str, statement: &str) -> Result<()> {
    use datafusion::arrow::ipc::reader::StreamReader;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(server)
        .await
        .with_context(|| format!("cannot reach the processor at {server}; is `edgeflow process` running? (--server = its server.http_listen)"))?;
    let req = format!(
        "POST /sql HTTP/1.1\r\nHost: {server}\r\nAccept: application/vnd.apache.arrow.stream\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{statement}",
        statement.len()
    );
    conn.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    conn.read_to_end(&mut resp).await?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the processor sent no HTTP response")?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let body = &resp[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    if status != 200 {
        let msg = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).to_string());
        bail!("{msg}");
    }
    if content_type.contains("arrow") {
        if body.is_empty() {
            println!("(0 rows)");
            return Ok(());
        }
        let reader = StreamReader::try_new(std::io::Cursor::new(body.to_vec()), None)?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        println!("{}", pretty_format_batches(&batches)?);
        println!("({rows} rows)");
    } else {
        println!("{}", String::from_utf8_lossy(body));
    }
    Ok(())
}

async fn simulate(
    host: String,
    port: u16,
    sensors: u32,
    rate: u64,
    count: u64,
    qos: u8,
    seed: u64,
) -> Result<()> {
    let qos = match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        2 => rumqttc::QoS::ExactlyOnce,
        q => bail!("--qos {q}: allowed values are 0, 1, 2"),
    };
    if sensors == 0 {
        bail!("--sensors must be at least 1");
    }
    let id = format!("edgeflow-simulate-{}", std::process::id());
    let mut opts = rumqttc::MqttOptions::new(id, host.clone(), port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000);
    let (client, mut ev) = rumqttc::AsyncClient::new(opts, 10_000);
    // Counts the broker's acknowledgements (PUBACK for QoS 1, PUBCOMP for QoS 2), so the
    // command ends only when the broker has every reading.
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0u64);
    let driver = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match ev.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))
                | Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_))) => {
                    acked += 1;
                    let _ = acked_tx.send(acked);
                }
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("simulate: MQTT {host}:{port}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
    let needs_ack = qos != rumqttc::QoS::AtMostOnce;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut values: Vec<f64> = (0..sensors).map(|_| rng.random_range(15.0..25.0)).collect();
    let start = Instant::now();
    let mut sent = 0u64;
    while count == 0 || sent < count {
        let i = (sent % sensors as u64) as usize;
        values[i] += rng.random_range(-0.5..0.5);
        let ts = edgeflow_wire::clock::now_ms();
        let topic = format!("sensors/site-{}/s-{:06}/telemetry", i % 4, i);
        let payload = format!("{{\"ts\":{ts},\"value\":{:.3}}}", values[i]);
        client
            .publish(topic, qos, false, payload)
            .await
            .context("publishing")?;
        sent += 1;
        if rate > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        if sent.is_multiple_of(10_000) {
            eprintln!(
                "simulate: {sent} readings, {:.0}/s",
                sent as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    if needs_ack {
        acked_rx
            .wait_for(|a| *a >= sent)
            .await
            .context("the MQTT connection ended before the broker acknowledged every reading")?;
    }
    client.disconnect().await.ok();
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    eprintln!("simulate: published {sent} readings");
    Ok(())
}

async fn create_topics(brokers: &str, partitions: i32, topics: &[String]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, &BTreeMap::new(), &[])
        .create()
        .context("creating the Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .with_context(|| format!("creating topics on {brokers}"))?;
    for r in results {
        match r {
            Ok(t) => println!("created {t}"),
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                println!("exists  {t}")
            }
            Err((t, e)) => bail!("creating {t}: {e}"),
        }
    }
    Ok(())
}

fn tail(brokers: &str, topic: &str, follow: bool) -> Result<()> {
    let consumer: BaseConsumer =
        consumer_config(brokers, &BTreeMap::new(), &[("group.id", "edgeflow-tail")])
            .create()
            .context("creating the Kafka consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("fetching metadata of {topic} from {brokers}"))?;
    let parts = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if parts == 0 {
        bail!("topic {topic} does not exist on {brokers}");
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut idle_since = Instant::now();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                let header = |name: &str| {
                    m.headers().and_then(|h| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                let kind = header(edgeflow_wire::HEADER_KIND).unwrap_or_default();
                let enc = header(edgeflow_wire::HEADER_ENCODING).unwrap_or_default();
                let payload = m.payload().unwrap_or_default();
                let line = match kind.as_str() {
                    "aggregate" => edgeflow_wire::decode_aggregate(&enc, payload)
                        .map(|a| serde_json::to_string(&a).unwrap_or_default())
                        .unwrap_or_else(|e| format!("{{\"undecodable\":\"{e}\"}}")),
                    "reading" => edgeflow_wire::decode_reading(&enc, payload)
                        .map(|r| serde_json::to_string(&r).unwrap_or_default())
                        .unwrap_or_else(|e| format!("{{\"undecodable\":\"{e}\"}}")),
                    _ => serde_json::json!({
                        "kind": kind,
                        "reason": header(edgeflow_wire::HEADER_REASON),
                        "detail": header(edgeflow_wire::HEADER_DETAIL),
                        "payload": String::from_utf8_lossy(payload),
                    })
                    .to_string(),
                };
                if writeln!(out, "{line}").is_err() {
                    // The reader went away (e.g. `| head`): stop quietly.
                    return Ok(());
                }
            }
            Some(Err(e)) => eprintln!("tail: {e}"),
            None => {
                if !follow && idle_since.elapsed() > Duration::from_secs(2) {
                    return Ok(());
                }
            }
        }
    }
}
