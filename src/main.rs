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
    /// Publish the readings of simulated sensors over MQTT, on
    /// `sensors/<site>/<sensor>/telemetry`, at a fixed rate (open loop: a broker that
    /// cannot keep up shows as lag, not as a slower plant). Deterministic for a seed.
    Simulate(SimulateArgs),
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

#[derive(clap::Args)]
struct SimulateArgs {
    #[arg(long, default_value = "localhost")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Number of sensors.
    #[arg(long, default_value_t = 100)]
    sensors: u32,
    /// Number of the first sensor (`s-000000`); separate simulators cover separate
    /// sensors with it.
    #[arg(long, default_value_t = 0)]
    first_sensor: u32,
    /// Number of sites the sensors are spread across.
    #[arg(long, default_value_t = 4)]
    sites: u32,
    /// Readings per second over all sensors.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Stop after this many messages (default: run until interrupted or `--duration`).
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. `30s`).
    #[arg(long)]
    duration: Option<humantime::Duration>,
    /// MQTT QoS 0, 1 or 2.
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Seed of every random choice: the same seed and start give the same messages.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Event time of the first slot, epoch milliseconds (default: now).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Payload formats' weights, e.g. `json=0.7,senml=0.2,number=0.1`. Each sensor
    /// speaks one; bare numbers carry no timestamp.
    #[arg(long, default_value = "json=0.7,senml=0.2,number=0.1")]
    formats: String,
    /// Fraction of malformed messages (cut-off JSON, text values, NaN, far-future
    /// timestamps, empty payloads).
    #[arg(long, default_value_t = 0.001)]
    malformed: f64,
    /// Fraction of late readings (event time up to `--max-late` before their slot).
    #[arg(long, default_value_t = 0.002)]
    late: f64,
    #[arg(long, default_value = "2m")]
    max_late: humantime::Duration,
    /// Every reading's event time is up to this much before its slot (out-of-order
    /// arrival within a sensor).
    #[arg(long, default_value = "200ms")]
    jitter: humantime::Duration,
    /// Chance per reading that its sensor then drops out for about `--dropout-for`.
    #[arg(long, default_value_t = 0.0002)]
    dropout: f64,
    #[arg(long, default_value = "30s")]
    dropout_for: humantime::Duration,
    /// Fraction of readings with a spike far off the signal.
    #[arg(long, default_value_t = 0.001)]
    spikes: f64,
    /// Well-behaved sensors only: JSON, in order, no defect, lateness, dropout or spike
    /// (the options above that set them are ignored).
    #[arg(long)]
    clean: bool,
    /// Write every message sent, as the simulator meant it, as JSON lines to this file.
    #[arg(long)]
    readings: Option<std::path::PathBuf>,
}

impl SimulateArgs {
    /// The scenario the options describe; `Generator::new` checks it.
    fn scenario(&self) -> Result<edgeflow::simulate::Scenario> {
        use edgeflow::simulate::{FormatMix, Scenario};
        let ms = |d: &humantime::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut formats = FormatMix {
            json: 0.0,
            senml: 0.0,
            number: 0.0,
        };
        for part in self.formats.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part.split_once('=').with_context(|| {
                format!("--formats: `{part}` is not `format=weight` (formats: json, senml, number)")
            })?;
            let weight: f64 = weight.trim().parse().with_context(|| {
                format!("--formats: the weight of `{}` is not a number", name.trim())
            })?;
            match name.trim() {
                "json" => formats.json = weight,
                "senml" => formats.senml = weight,
                "number" => formats.number = weight,
                other => {
                    bail!("--formats: unknown format `{other}`; allowed are json, senml, number")
                }
            }
        }
        let base = Scenario {
            seed: self.seed,
            sensors: self.sensors,
            first_sensor: self.first_sensor,
            sites: self.sites,
            rate: self.rate,
            start_ms: self.start_ms.unwrap_or_else(edgeflow_wire::clock::now_ms),
            ..if self.clean {
                Scenario::clean()
            } else {
                Scenario::default()
            }
        };
        let scenario = if self.clean {
            base
        } else {
            Scenario {
                formats,
                malformed: self.malformed,
                late: self.late,
                max_late_ms: ms(&self.max_late),
                jitter_ms: ms(&self.jitter),
                dropout: self.dropout,
                dropout_ms: ms(&self.dropout_for),
                spikes: self.spikes,
                ..base
            }
        };
        Ok(scenario)
    }
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
        Cmd::Simulate(args) => rt.block_on(simulate(args)),
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

async fn simulate(args: SimulateArgs) -> Result<()> {
    use edgeflow::simulate::{run, Generator};
    let scenario = args.scenario()?;
    let generator = Generator::new(&scenario).map_err(|e| anyhow::anyhow!("simulate: {e}"))?;
    let target = run::Target {
        host: args.host.clone(),
        port: args.port,
        qos: args.qos,
        client_id: format!("edgeflow-simulate-{}", std::process::id()),
    };
    let limits = run::Limits {
        count: args.count,
        duration: args.duration.map(Into::into),
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let summary = run::run(
        generator,
        &target,
        limits,
        args.readings.as_deref(),
        Some(Duration::from_secs(1)),
        Duration::from_secs(60),
        stop,
    )
    .await?;
    eprintln!(
        "simulate: published {} messages in {:.1} s ({:.0}/s; {} malformed, {} late), max lag {} ms",
        summary.sent,
        summary.elapsed_s,
        summary.rate,
        summary.malformed,
        summary.late,
        summary.max_lag_ms
    );
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
