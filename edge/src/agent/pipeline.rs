//! The pipeline's loop: MQTT messages in, decoded, journaled (aggregate mode) or put in
//! the forward log (pass-through), rejected payloads dead-lettered; group commits,
//! ticks and snapshots on their intervals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::config::{EdgeConfig, Encoding, Mode};
use crate::decode::{DecodeBuf, Decoder, Rejection, Source};
use crate::disklog::{DiskLog, DiskLogConfig, FullPolicy};
use crate::metrics::Metrics;
use crate::mqtt::{Acker, Message};
use crate::quarantine::Quarantine;
use crate::record::{encode_journal, encode_out, JournalEntry, TopicKind};
use crate::redelivery::{digest, Deliveries, Delivery};
use crate::topic::filter_matches;
use crate::window::{Aggregator, Input, WindowSpec};
use crate::wire;
use crate::Result;
use edgeflow_wire::clock::now_ms;

use super::commit::{append_forward, encoding_name};
use super::{Pipeline, MAX_BATCH};

impl Pipeline {
    pub(super) fn new(
        cfg: &EdgeConfig,
        forward: Arc<Mutex<DiskLog>>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self> {
        let spec = WindowSpec::from_config(&cfg.window);
        let (journal, journal_next) = if cfg.mode == Mode::Aggregate {
            let (j, r) = DiskLog::open(DiskLogConfig {
                dir: cfg.data_dir.join("journal"),
                segment_bytes: cfg.store.segment_bytes.0,
                // The journal is truncated at every snapshot; the bound only guards a
                // stuck snapshot, and blocking (not dropping) keeps acknowledged readings.
                max_bytes: cfg.store.max_bytes.0,
                full_policy: FullPolicy::Block,
            })?;
            tracing::info!(
                records = r.records,
                torn_bytes = r.torn_bytes_skipped,
                "input journal opened"
            );
            (Some(j), r.next_seq)
        } else {
            (None, 0)
        };
        let tick_ms = (spec.size_ms / 10).clamp(100, 1000) as u64;
        Ok(Pipeline {
            gateway: cfg.gateway_id.clone(),
            mode: cfg.mode,
            encoding: cfg.kafka.encoding,
            decoder: Decoder::new(&cfg.decode, cfg.mqtt.max_payload.0 as usize),
            subs: cfg
                .mqtt
                .subscriptions
                .iter()
                .map(|s| (s.filter.clone(), s.format, s.topic_pattern.clone()))
                .collect(),
            forward,
            journal,
            journal_next,
            agg: Aggregator::new(spec),
            deliveries: Deliveries::new(delivery_window(cfg)),
            snapshot_path: cfg.data_dir.join("window.snapshot"),
            quarantine: Quarantine::new(&cfg.data_dir),
            metrics,
            commit_interval: cfg.store.commit_interval.0,
            snapshot_interval: cfg.store.snapshot_interval.0,
            tick_interval: Duration::from_millis(tick_ms),
            buf: DecodeBuf::default(),
            out: Vec::new(),
            enc: Vec::new(),
            rec: Vec::new(),
            pending_acks: Vec::new(),
            journal_dirty: false,
            forward_dirty: false,
            forward_must_sync: false,
            shutdown,
        })
    }

    pub(super) async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Message>,
        acker: &Acker,
        data_ready: &Notify,
    ) -> Result<()> {
        let mut shutdown = self.shutdown.clone();
        let mut next_tick = Instant::now() + self.tick_interval;
        let mut next_snapshot = Instant::now() + self.snapshot_interval;
        let mut batch_started: Option<Instant> = None;
        loop {
            let deadline = next_tick.min(next_snapshot);
            let mut handled = 0usize;
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                m = rx.recv() => match m {
                    Some(m) => { self.handle(m).await?; handled += 1; }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
            if handled > 0 && batch_started.is_none() {
                batch_started = Some(Instant::now());
            }
            // Take whatever else is already waiting: it joins this group commit.
            while handled < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => {
                        self.handle(m).await?;
                        handled += 1;
                    }
                    Err(_) => break,
                }
                if batch_started.is_some_and(|t| t.elapsed() >= self.commit_interval) {
                    break;
                }
            }
            let now = Instant::now();
            let tick = now >= next_tick;
            if tick {
                next_tick = now + self.tick_interval;
            }
            self.commit(acker, data_ready, tick).await?;
            batch_started = None;
            if now >= next_snapshot {
                self.snapshot().await?;
                next_snapshot = Instant::now() + self.snapshot_interval;
            }
        }
        // Graceful shutdown: emit open windows, make everything durable, acknowledge.
        let mut out = std::mem::take(&mut self.out);
        self.agg.flush_all(&mut out);
        self.out = out;
        self.forward_must_sync = true;
        self.commit(acker, data_ready, false).await?;
        self.snapshot().await?;
        tracing::info!("pipeline stopped; open windows flushed to the forward log");
        Ok(())
    }

    pub(super) async fn handle(&mut self, msg: Message) -> Result<()> {
        self.metrics.payloads_in.inc();
        if self.mode == Mode::Aggregate {
            if let Some(token) = &msg.ack {
                // The journal keeps which deliveries it holds, so that the broker sending one
                // again (its acknowledgement was lost with a connection or a crash) is
                // acknowledged without being counted twice.
                let d = Delivery {
                    pkid: token.pkid(),
                    digest: digest(&msg.topic, &msg.payload),
                };
                if self.deliveries.is_redelivery(d.pkid, msg.dup, d.digest) {
                    self.metrics.redeliveries_skipped.inc();
                    tracing::debug!(
                        pkid = d.pkid,
                        "MQTT redelivery of a journaled message acknowledged again"
                    );
                    self.pending_acks.extend(msg.ack);
                    return Ok(());
                }
                encode_journal(&mut self.rec, &JournalEntry::Delivery(d));
                let seq = self.append_journal().await?;
                self.journal_next = seq + 1;
                self.journal_dirty = true;
                self.deliveries.record(d);
            }
        }
        let arrival = now_ms();
        let topic = std::str::from_utf8(&msg.topic).unwrap_or("");
        let sub = self.subs.iter().find(|(f, _, _)| filter_matches(f, topic));
        let decoded = match sub {
            Some((_, format, pattern)) => self.decoder.decode(
                Source {
                    format: *format,
                    pattern: pattern.as_ref(),
                },
                topic,
                &msg.payload,
                arrival,
                &mut self.buf,
            ),
            None => Err(Rejection {
                reason: crate::decode::Reason::UnknownSensor,
                detail: format!(
                    "topic `{}` matches no subscription",
                    String::from_utf8_lossy(&msg.topic)
                ),
            }),
        };
        match decoded {
            Ok(()) => self.accept(arrival).await?,
            Err(rej) => self.dead_letter(&msg, &rej).await?,
        }
        if let Some(t) = msg.ack {
            self.pending_acks.push(t);
        }
        Ok(())
    }

    pub(super) async fn accept(&mut self, arrival: i64) -> Result<()> {
        // Lent out for the loop, which needs `self` mutably (a full journal snapshots).
        let buf = std::mem::take(&mut self.buf);
        let result = self.accept_from(&buf, arrival).await;
        self.buf = buf;
        result
    }

    pub(super) async fn accept_from(&mut self, buf: &DecodeBuf, arrival: i64) -> Result<()> {
        let n = buf.items.len();
        self.metrics.readings_in.inc_by(n as u64);
        let site = buf.site();
        for item in &buf.items {
            let (sensor, field, ts, value) =
                (buf.sensor(item), buf.field(item), item.ts_ms, item.value);
            match self.mode {
                Mode::Passthrough => {
                    let r = wire::ReadingRef {
                        sensor,
                        site,
                        field,
                        ts,
                        value,
                    };
                    self.enc.clear();
                    match self.encoding {
                        Encoding::Json => wire::reading_json(&self.gateway, &r, &mut self.enc),
                        Encoding::Binary => wire::reading_binary(&self.gateway, &r, &mut self.enc),
                    }
                    encode_out(
                        &mut self.rec,
                        TopicKind::Readings,
                        sensor.as_bytes(),
                        &[
                            (
                                wire::HEADER_ENCODING,
                                encoding_name(self.encoding).as_bytes(),
                            ),
                            (wire::HEADER_KIND, b"reading"),
                        ],
                        &self.enc,
                    );
                    append_forward(&self.forward, &self.rec, &self.shutdown).await?;
                    self.forward_dirty = true;
                    self.forward_must_sync = true;
                    self.metrics.readings_out.inc();
                }
                Mode::Aggregate => {
                    let entry = JournalEntry::Reading {
                        sensor,
                        site,
                        field,
                        ts,
                        value,
                        arrival,
                    };
                    encode_journal(&mut self.rec, &entry);
                    let seq = self.append_journal().await?;
                    self.journal_next = seq + 1;
                    self.journal_dirty = true;
                    crate::crash::point("journal.appended");
                    let mut out = std::mem::take(&mut self.out);
                    self.agg.ingest(
                        Input {
                            sensor,
                            site,
                            field,
                            ts_ms: ts,
                            value,
                            arrival_ms: arrival,
                            seq,
                        },
                        &mut out,
                    );
                    // What the reading emitted (a correction) waits in `out` for the
                    // group commit: it reaches the forward log once the journal holds the
                    // reading durably.
                    self.out = out;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn dead_letter(&mut self, msg: &Message, rej: &Rejection) -> Result<()> {
        self.metrics.dead_letter(rej.reason);
        tracing::debug!(reason = %rej.reason, detail = %rej.detail, "payload dead-lettered");
        encode_out(
            &mut self.rec,
            TopicKind::DeadLetter,
            &msg.topic,
            &[
                (wire::HEADER_KIND, b"dead-letter"),
                (wire::HEADER_REASON, rej.reason.as_str().as_bytes()),
                (wire::HEADER_DETAIL, rej.detail.as_bytes()),
                (wire::HEADER_MQTT_TOPIC, &msg.topic),
                (wire::HEADER_GATEWAY, self.gateway.as_bytes()),
            ],
            &msg.payload,
        );
        append_forward(&self.forward, &self.rec, &self.shutdown).await?;
        self.forward_dirty = true;
        self.forward_must_sync = true;
        Ok(())
    }
}

/// How many journaled deliveries to remember: twice the in-flight window (see
/// [`crate::redelivery`]).
fn delivery_window(cfg: &EdgeConfig) -> usize {
    2 * usize::from(cfg.mqtt.receive_maximum.max(1))
}
