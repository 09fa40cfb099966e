//! The Kafka forwarder: reads the forward log in order, produces each record, and acks it
//! in the log once Kafka has acknowledged it (`acks=all`, idempotent producer). A record
//! leaves the disk only after that acknowledgement, so a Kafka outage just grows the log.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::{watch, Notify};

use crate::config::{is_secret_property, KafkaConfig};
use crate::disklog::DiskLog;
use crate::metrics::Metrics;
use crate::record::{decode_out, TopicKind};
use crate::Result;

/// Most records handed to the producer and not yet acknowledged.
const MAX_IN_FLIGHT: usize = 16384;

/// Builds the idempotent producer from the `[kafka]` config.
pub fn producer(cfg: &KafkaConfig) -> Result<FutureProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &cfg.compression)
        .set("partitioner", &cfg.partitioner)
        .set("linger.ms", "5")
        // Never give up on a record: the disk log holds it until Kafka takes it.
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "262144");
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
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
    tracing::debug!(brokers = %cfg.brokers, extra = ?shown, "creating Kafka producer");
    Ok(c.create()?)
}

/// The topics records are routed to.
#[derive(Clone, Debug)]
pub struct Topics {
    pub aggregates: String,
    pub readings: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn from_config(cfg: &KafkaConfig) -> Self {
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
#[allow(clippy::too_many_arguments)] // the forwarder's collaborators, each used once
pub async fn run(
    log: Arc<Mutex<DiskLog>>,
    data_ready: Arc<Notify>,
    mut producer: FutureProducer,
    kafka: KafkaConfig,
    topics: Topics,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    drain_grace: Duration,
) {
    let mut in_flight = FuturesUnordered::new();
    let mut last_persist = Instant::now();
    let mut error_backoff = Duration::from_millis(100);
    let mut shutdown_at: Option<Instant> = None;
    let mut failed = false;
    loop {
        if failed {
            // A rejected record can leave an idempotent producer's sequence state out of
            // step with the broker; start over with a fresh producer (new producer id) and
            // resend everything not acknowledged. Duplicates are dropped downstream by
            // identity.
            failed = false;
            in_flight = FuturesUnordered::new();
            lock(&log).rewind_unsent();
            tokio::time::sleep(error_backoff).await;
            error_backoff = (error_backoff * 2).min(Duration::from_secs(10));
            match self::producer(&kafka) {
                Ok(p) => producer = p,
                Err(e) => tracing::error!(error = %e, "recreating the Kafka producer failed"),
            }
        }
        if shutdown_at.is_none() && *shutdown.borrow() {
            shutdown_at = Some(Instant::now());
        }
        if let Some(t) = shutdown_at {
            let pending = lock(&log).stats().pending_records;
            if pending == 0 || t.elapsed() >= drain_grace {
                break;
            }
        }
        // Hand the producer what the log has, up to the in-flight bound.
        let mut handed = 0;
        if in_flight.len() < MAX_IN_FLIGHT {
            let room = MAX_IN_FLIGHT - in_flight.len();
            let batch = match lock(&log).read_unsent(room, 1 << 20) {
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
                        // Checksummed by the log, so this is a bug, not disk damage; skip it
                        // rather than wedge the pipeline.
                        tracing::error!(seq, error = %e, "undecodable forward-log record skipped");
                        lock(&log).ack(seq);
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
                let mut fr = FutureRecord::to(topics.name(rec.topic))
                    .payload(rec.value)
                    .headers(headers);
                if !rec.key.is_empty() {
                    fr = fr.key(rec.key);
                }
                let sent_at = Instant::now();
                loop {
                    match producer.send_result(fr) {
                        Ok(fut) => {
                            in_flight.push(async move { (seq, sent_at, fut.await) });
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            fr = back;
                            // Let deliveries complete before trying again.
                            if let Some(done) = in_flight.next().await {
                                failed |= settle(&log, &metrics, done, &mut error_backoff);
                            } else {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                        Err((e, _)) => {
                            metrics.delivery_errors.fetch_add(1, Relaxed);
                            tracing::warn!(seq, error = %e, "could not enqueue record; will retry");
                            failed = true;
                            break;
                        }
                    }
                }
            }
        }
        // Collect deliveries without blocking when there is more to send.
        while let Some(Some(done)) = futures::FutureExt::now_or_never(in_flight.next()) {
            failed |= settle(&log, &metrics, done, &mut error_backoff);
        }
        if failed {
            continue;
        }
        if last_persist.elapsed() >= Duration::from_millis(500) {
            let mut l = lock(&log);
            if let Err(e) = l.persist_acks() {
                tracing::warn!(error = %e, "persisting forward-log acks failed");
            }
            let st = l.stats();
            drop(l);
            metrics
                .log_pending_records
                .store(st.pending_records, Relaxed);
            metrics.log_bytes.store(st.bytes_on_disk, Relaxed);
            metrics
                .log_dropped_records
                .store(st.dropped_records, Relaxed);
            last_persist = Instant::now();
        }
        if handed == 0 || in_flight.len() >= MAX_IN_FLIGHT {
            tokio::select! {
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    failed |= settle(&log, &metrics, done, &mut error_backoff);
                }
                _ = data_ready.notified(), if in_flight.len() < MAX_IN_FLIGHT => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.changed(), if shutdown_at.is_none() => {}
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(1));
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

type Delivery = (
    u64,
    Instant,
    std::result::Result<
        rdkafka::producer::future_producer::OwnedDeliveryResult,
        futures::channel::oneshot::Canceled,
    >,
);

/// Records a delivery outcome; returns `true` when the producer must be replaced.
fn settle(log: &Mutex<DiskLog>, metrics: &Metrics, done: Delivery, backoff: &mut Duration) -> bool {
    let (seq, sent_at, result) = done;
    match result {
        Ok(Ok(_)) => {
            lock(log).ack(seq);
            metrics.delivered.fetch_add(1, Relaxed);
            metrics.observe_delivery(sent_at.elapsed().as_micros() as u64);
            *backoff = Duration::from_millis(100);
            false
        }
        Ok(Err((e, _))) => {
            metrics.delivery_errors.fetch_add(1, Relaxed);
            tracing::warn!(seq, error = %e, retry_in = ?*backoff, "Kafka rejected a record; resending from the first unacknowledged with a new producer");
            true
        }
        Err(_) => true,
    }
}

fn lock(log: &Mutex<DiskLog>) -> std::sync::MutexGuard<'_, DiskLog> {
    // A panic while holding the lock would be a bug; the log's state is still consistent
    // (every mutation is a single step), so keep going with it.
    log.lock().unwrap_or_else(|p| p.into_inner())
}
