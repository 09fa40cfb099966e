//! Publishing a [`Generator`]'s messages over MQTT on their open-loop schedule.

use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{Generator, Reading};

/// Where and how to publish.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// MQTT QoS 0, 1 or 2.
    pub qos: u8,
    pub client_id: String,
}

/// When to stop (whichever comes first; neither means at `stop`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// After this many messages.
    pub count: Option<u64>,
    /// After this long.
    pub duration: Option<Duration>,
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Messages published.
    pub sent: u64,
    /// Of them malformed on purpose.
    pub malformed: u64,
    /// Of them late on purpose.
    pub late: u64,
    /// Acknowledged by the broker (QoS 1 and 2).
    pub acked: u64,
    pub elapsed_s: f64,
    /// Messages per second over the run.
    pub rate: f64,
    /// How far the publisher was behind its schedule at most, milliseconds.
    pub max_lag_ms: u64,
}

/// One line of the readings file: every message sent, as the simulator meant it.
#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    sensor: &'a str,
    #[serde(flatten)]
    reading: &'a Reading,
}

/// Publishes `generator`'s messages to `target` until `limits` or `stop`, then waits
/// (at most `ack_timeout`) for the broker to acknowledge every QoS 1/2 message. With
/// `readings`, every message sent is written there as a JSON line. With `progress`, a
/// line of rates and lag goes to stderr at that interval.
pub async fn run(
    mut generator: Generator,
    target: &Target,
    limits: Limits,
    readings: Option<&Path>,
    progress: Option<Duration>,
    ack_timeout: Duration,
    stop: impl Future<Output = ()>,
) -> Result<Summary> {
    let qos = match target.qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        2 => rumqttc::QoS::ExactlyOnce,
        q => bail!("qos {q}: allowed values are 0, 1, 2"),
    };
    let mut file = match readings {
        Some(path) => Some(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(path)
                .with_context(|| format!("creating the readings file {}", path.display()))?,
        )),
        None => None,
    };
    let mut opts =
        rumqttc::MqttOptions::new(target.client_id.clone(), target.host.clone(), target.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 10_000);
    // Counts the broker's acknowledgements (PUBACK for QoS 1, PUBCOMP for QoS 2).
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0u64);
    let address = format!("{}:{}", target.host, target.port);
    let driver = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))
                | Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_))) => {
                    acked += 1;
                    let _ = acked_tx.send(acked);
                }
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("simulate: MQTT {address}: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });

    let rate = generator.scenario().rate;
    let first_slot = generator.slot();
    let start = Instant::now();
    let deadline = limits.duration.map(|d| start + d);
    let mut summary = Summary::default();
    let mut next_progress = progress.map(|p| start + p);
    let (mut topic, mut payload) = (String::new(), Vec::new());
    tokio::pin!(stop);
    loop {
        if limits.count.is_some_and(|c| summary.sent >= c) {
            break;
        }
        let reading = generator.next_reading();
        let due = start + Duration::from_secs_f64((reading.slot - first_slot) as f64 / rate);
        if deadline.is_some_and(|d| due >= d) {
            break;
        }
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = &mut stop => break,
            }
        } else {
            let lag = now.saturating_duration_since(due).as_millis() as u64;
            summary.max_lag_ms = summary.max_lag_ms.max(lag);
        }
        generator.encode(&reading, &mut topic, &mut payload);
        tokio::select! {
            sent = client.publish(topic.as_str(), qos, false, payload.clone()) => {
                sent.context("publishing")?;
            }
            _ = &mut stop => break,
        }
        summary.sent += 1;
        summary.malformed += u64::from(reading.defect.is_some());
        summary.late += u64::from(reading.late);
        if let Some(f) = file.as_mut() {
            let sensor = generator.scenario().sensor_id(reading.sensor);
            serde_json::to_writer(
                &mut *f,
                &Line {
                    topic: &topic,
                    sensor: &sensor,
                    reading: &reading,
                },
            )
            .context("writing the readings file")?;
            f.write_all(b"\n").context("writing the readings file")?;
        }
        if let (Some(p), Some(at)) = (progress, next_progress) {
            if Instant::now() >= at {
                next_progress = Some(at + p);
                let elapsed = start.elapsed().as_secs_f64();
                eprintln!(
                    "simulate: {} sent ({:.0}/s), lag {} ms (max {}), {} malformed, {} late, {} acked",
                    summary.sent,
                    summary.sent as f64 / elapsed,
                    Instant::now().saturating_duration_since(due).as_millis(),
                    summary.max_lag_ms,
                    summary.malformed,
                    summary.late,
                    *acked_rx.borrow(),
                );
            }
        }
    }
    if let Some(mut f) = file {
        f.flush().context("writing the readings file")?;
    }
    if qos != rumqttc::QoS::AtMostOnce {
        let sent = summary.sent;
        let waited = tokio::time::timeout(ack_timeout, acked_rx.wait_for(|a| *a >= sent))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => {}
            Ok(false) => {
                bail!("the MQTT connection ended before the broker acknowledged every message")
            }
            Err(_) => bail!(
                "the broker acknowledged {} of {sent} messages within {ack_timeout:?}",
                *acked_rx.borrow()
            ),
        }
    }
    summary.acked = *acked_rx.borrow();
    summary.elapsed_s = start.elapsed().as_secs_f64();
    summary.rate = summary.sent as f64 / summary.elapsed_s.max(1e-9);
    client.disconnect().await.ok();
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    Ok(summary)
}
