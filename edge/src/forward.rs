//! The Kafka forwarder: reads the forward log in order, produces each record, and acks it
//! in the log once Kafka has acknowledged it (`acks=all`, idempotent producer). A record
//! leaves the disk only after that acknowledgement, so a Kafka outage just grows the log.
//!
//! Deliveries are reported by librdkafka's callback, with the record's log sequence
//! number as the opaque value: no future, channel or allocation per record. Each producer
//! has a generation; reports from a replaced producer (purged on drop) are ignored.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use tokio::sync::{watch, Notify};

use edgeflow_wire::clock::now_ms;
use edgeflow_wire::kafka::{is_secret_property, producer_config};

use crate::config::KafkaConfig;
use crate::disklog::DiskLog;
use crate::metrics::Metrics;
use crate::quarantine::Quarantine;
use crate::record::{decode_out, TopicKind};
use crate::Result;

/// Most key + value bytes handed to the producer and not yet acknowledged. Bounds the
/// producer's memory (a window boundary emits every sensor's aggregate at once) while
/// keeping enough in flight to fill batches.
const MAX_IN_FLIGHT_BYTES: usize = 2 << 20;
/// Records read from the log per step.
const READ_BATCH: usize = 512;

/// State shared by the forwarder loop and the producer's delivery callback.
struct Shared {
    log: Arc<Mutex<DiskLog>>,
    metrics: Arc<Metrics>,
    /// Generation of the producer whose reports count.
    generation: AtomicU64,
    /// Key + value bytes produced and not yet reported.
    in_flight: AtomicUsize,
    failed: AtomicBool,
    progress: Notify,
}

/// The producer's context: routes delivery reports into the log.
struct Deliveries {
    generation: u64,
    shared: Arc<Shared>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let s = &self.shared;
        if s.generation.load(SeqCst) != self.generation {
            return;
        }
        let m = match result {
            Ok(m) => m,
            Err((_, m)) => m,
        };
        s.in_flight
            .fetch_sub(m.payload_len() + m.key_len(), Relaxed);
        match result {
            Ok(m) => {
                lock(&s.log).ack(seq as u64);
                s.metrics.delivered.inc();
                if let Some(sent) = m.timestamp().to_millis() {
                    let ms = now_ms().saturating_sub(sent).max(0);
                    s.metrics.observe_delivery(ms as u64 * 1000);
                }
            }
            Err((e, _)) => {
                s.metrics.delivery_errors.inc();
                if !s.failed.swap(true, SeqCst) {
                    tracing::warn!(seq, error = %e, "Kafka rejected a record; resending from the first unacknowledged with a new producer");
                }
            }
        }
        s.progress.notify_one();
    }
}

type DeliveringProducer = ThreadedProducer<Deliveries>;

fn client_config(cfg: &KafkaConfig) -> rdkafka::ClientConfig {
    // The guarantee wins over the user's properties (the config check refuses
    // properties that would try to change it), and so do the forwarder's own settings.
    let mut c = producer_config(&cfg.brokers, &cfg.properties, &[]);
    c.set("compression.type", &cfg.compression)
        .set("partitioner", &cfg.partitioner)
        .set("linger.ms", "5")
        // Never give up on a record: the disk log holds it until Kafka takes it.
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", "100000");
    c
}

/// Checks that the `[kafka]` config makes a producer (bad librdkafka properties fail
/// here, at start-up, with librdkafka's message).
pub fn check_config(cfg: &KafkaConfig) -> Result<()> {
    let shown: Vec<String> = cfg
        .properties
        .keys()
        .map(|k| {
            if is_secret_property(k) {
                format!("{k}=<redacted>")
            } else {
                k.clone()
            }
        })
        .collect();
    tracing::debug!(brokers = %cfg.brokers, extra = ?shown, "checking the Kafka producer config");
    let _: rdkafka::producer::BaseProducer = client_config(cfg).create()?;
    Ok(())
}

fn producer(cfg: &KafkaConfig, shared: &Arc<Shared>) -> Result<DeliveringProducer> {
    let generation = shared.generation.fetch_add(1, SeqCst) + 1;
    shared.in_flight.store(0, SeqCst);
    shared.failed.store(false, SeqCst);
    let ctx = Deliveries {
        generation,
        shared: shared.clone(),
    };
    Ok(client_config(cfg).create_with_context(ctx)?)
}

/// The topics records are routed to.
#[derive(Clone, Debug)]
struct Topics {
    aggregates: String,
    readings: String,
    dead_letter: String,
}

impl Topics {
    fn from_config(cfg: &KafkaConfig) -> Self {
        Topics {
            aggregates: cfg.aggregates_topic.clone(),
            readings: cfg.readings_topic.clone(),
            dead_letter: cfg.dead_letter_topic.clone(),
        }
    }
    fn name(&self, k: TopicKind) -> &str {
        match k {
            TopicKind::Aggregates => &self.aggregates,
            TopicKind::Readings => &self.readings,
            TopicKind::DeadLetter => &self.dead_letter,
        }
    }
}

/// Runs until `shutdown` is true and (after the grace period) exits; what is not
/// delivered stays in the log for the next start.
pub async fn run(
    log: Arc<Mutex<DiskLog>>,
    quarantine: Quarantine,
    data_ready: Arc<Notify>,
    kafka: KafkaConfig,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    drain_grace: Duration,
) {
    let topics = Topics::from_config(&kafka);
    let shared = Arc::new(Shared {
        log: log.clone(),
        metrics: metrics.clone(),
        generation: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        progress: Notify::new(),
    });
    let mut producer: Option<DeliveringProducer> = None;
    let mut last_persist = Instant::now();
    let mut error_backoff = Duration::from_millis(100);
    let mut last_delivered = 0;
    let mut shutdown_at: Option<Instant> = None;
    loop {
        if shutdown_at.is_none() && *shutdown.borrow() {
            shutdown_at = Some(Instant::now());
        }
        if let Some(t) = shutdown_at {
            let pending = lock(&log).stats().pending_records;
            if pending == 0 || t.elapsed() >= drain_grace {
                break;
            }
        }
        if shared.failed.load(SeqCst) {
            // A rejected record can leave an idempotent producer's sequence state out of
            // step with the broker: start over with a fresh producer (new producer id) and
            // resend everything not acknowledged. Duplicates are dropped downstream.
            // Reports of the old producer (its purge on drop) no longer count.
            shared.generation.fetch_add(1, SeqCst);
            drop(producer.take());
            lock(&log).rewind_unsent();
            tokio::time::sleep(error_backoff).await;
            error_backoff = (error_backoff * 2).min(Duration::from_secs(10));
        }
        let p = match &producer {
            Some(p) => p,
            None => match self::producer(&kafka, &shared) {
                Ok(p) => producer.insert(p),
                Err(e) => {
                    tracing::error!(error = %e, "creating the Kafka producer failed");
                    tokio::time::sleep(error_backoff).await;
                    continue;
                }
            },
        };
        let mut room = MAX_IN_FLIGHT_BYTES.saturating_sub(shared.in_flight.load(Relaxed));
        if room < MAX_IN_FLIGHT_BYTES / 4 {
            // Refill in large steps: waking for every single delivery costs more than it
            // gains.
            room = 0;
        }
        let mut handed = 0;
        if room > 0 {
            let batch = match lock(&log).read_unsent(READ_BATCH, room) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "reading the forward log failed");
                    Vec::new()
                }
            };
            handed = batch.len();
            for (seq, bytes) in batch {
                let rec = match decode_out(&bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        // Checksummed by the log, so this is a bug, not disk damage: keep it
                        // aside rather than wedge the pipeline, or drop it.
                        match quarantine.keep("forward", seq, &bytes, &e.to_string()) {
                            Ok(kept) => {
                                metrics.quarantined_records.inc();
                                tracing::error!(seq, error = %e, kept = %kept.display(), "undecodable forward-log record quarantined");
                                lock(&log).ack(seq);
                            }
                            Err(qe) => {
                                // Not kept: it stays in the log and is tried again.
                                tracing::error!(seq, error = %e, quarantine_error = %qe, "undecodable forward-log record could not be quarantined");
                                shared.failed.store(true, SeqCst);
                                break;
                            }
                        }
                        continue;
                    }
                };
                let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
                for (k, v) in &rec.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(*v),
                    });
                }
                let mut br = BaseRecord::with_opaque_to(topics.name(rec.topic), seq as usize)
                    .payload(rec.value)
                    .headers(headers)
                    .timestamp(now_ms());
                if !rec.key.is_empty() {
                    br = br.key(rec.key);
                }
                let size = rec.value.len() + rec.key.len();
                shared.in_flight.fetch_add(size, Relaxed);
                loop {
                    match p.send(br) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            br = back;
                            // Let deliveries complete before trying again.
                            tokio::select! {
                                _ = shared.progress.notified() => {}
                                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                            }
                        }
                        Err((e, _)) => {
                            shared.in_flight.fetch_sub(size, Relaxed);
                            metrics.delivery_errors.inc();
                            tracing::warn!(seq, error = %e, "could not enqueue record; will retry");
                            shared.failed.store(true, SeqCst);
                            break;
                        }
                    }
                }
                if shared.failed.load(Relaxed) {
                    break;
                }
            }
            if handed > 0 {
                crate::crash::point("forward.sent");
            }
        }
        let delivered = metrics.delivered.get();
        if delivered > last_delivered {
            last_delivered = delivered;
            error_backoff = Duration::from_millis(100);
        }
        if last_persist.elapsed() >= Duration::from_millis(500) {
            let mut l = lock(&log);
            if let Err(e) = l.persist_acks() {
                tracing::warn!(error = %e, "persisting forward-log acks failed");
            }
            crate::crash::point("forward.acks_persisted");
            let st = l.stats();
            drop(l);
            metrics.log_pending_records.set(st.pending_records);
            metrics.log_bytes.set(st.bytes_on_disk);
            crate::metrics::set_total(&metrics.log_dropped_records, st.dropped_records);
            last_persist = Instant::now();
        }
        if handed == 0 || room == 0 {
            tokio::select! {
                _ = shared.progress.notified() => {}
                _ = data_ready.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.changed(), if shutdown_at.is_none() => {}
            }
        }
    }
    if let Some(p) = producer.take() {
        let _ = p.flush(Duration::from_secs(1));
        // Later reports (the purge on drop) must not touch the log.
        shared.generation.fetch_add(1, SeqCst);
        drop(p);
    }
    let mut l = lock(&log);
    let _ = l.persist_acks();
    let pending = l.stats().pending_records;
    if pending > 0 {
        tracing::info!(
            pending,
            "forwarder stopped; undelivered records stay on disk"
        );
    }
}

fn lock(log: &Mutex<DiskLog>) -> std::sync::MutexGuard<'_, DiskLog> {
    // A panic while holding the lock would be a bug; the log's state is still consistent
    // (every mutation is a single step), so keep going with it.
    log.lock().unwrap_or_else(|p| p.into_inner())
}
