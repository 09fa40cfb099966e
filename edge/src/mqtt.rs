//! The MQTT source: a thin shell over rumqttc (MQTT 3.1.1 and 5).
//!
//! Acknowledgements are manual: a QoS 1/2 message is handed to the pipeline with an
//! [`AckToken`], and the pipeline acknowledges it only after the message's effect is on
//! disk (group commit). With a persistent session the broker redelivers whatever was not
//! acknowledged when the agent died.
//!
//! Broker settings the agent needs: acknowledgements wait for a group commit (a few ms),
//! so the number of unacknowledged QoS 1/2 messages the broker allows per client bounds
//! throughput to roughly `window / commit latency`. Mosquitto's `max_inflight_messages`
//! defaults to 20; set it to about `mqtt.receive_maximum` (1000), and
//! raise `max_queued_messages` so a persistent session can buffer an agent restart. MQTT 5
//! clients announce `mqtt.receive_maximum` themselves. The window is also what bounds the
//! agent's memory for messages received and not yet taken by the pipeline, so keep it
//! finite (Mosquitto: `max_inflight_messages 1000`, not 0).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::{EdgeConfig, MqttProtocol};
use crate::metrics::Metrics;
use crate::{Error, Result};

/// What the pipeline needs to acknowledge a message later.
#[derive(Debug)]
pub enum AckToken {
    V4(rumqttc::Publish),
    V5(rumqttc::v5::mqttbytes::v5::Publish),
}

/// One received MQTT message.
#[derive(Debug)]
pub struct Message {
    pub topic: Bytes,
    pub payload: Bytes,
    /// Present for QoS 1/2.
    pub ack: Option<AckToken>,
}

/// Sends acknowledgements to the broker.
#[derive(Clone)]
pub enum Acker {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Acker {
    pub async fn ack(&self, token: &AckToken) {
        let r = match (self, token) {
            (Acker::V4(c), AckToken::V4(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Acker::V5(c), AckToken::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("protocol mismatch".to_string()),
        };
        if let Err(e) = r {
            // The event loop is gone (shutdown); the broker will redeliver.
            tracing::debug!(error = %e, "could not send MQTT acknowledgement");
        }
    }

    pub async fn disconnect(&self) {
        let _ = match self {
            Acker::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Acker::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn tls_transport(cfg: &EdgeConfig) -> Result<Option<rumqttc::TlsConfiguration>> {
    let Some(tls) = &cfg.mqtt.tls else {
        return Ok(None);
    };
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::io("reading TLS file", p, e));
    let ca = read(&tls.ca_file)?;
    let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        _ => None,
    };
    Ok(Some(rumqttc::TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    }))
}

/// Starts the MQTT event loop; messages arrive on the returned channel.
/// The loop reconnects with exponential backoff until `shutdown` fires.
pub fn start(
    cfg: &EdgeConfig,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(
    Acker,
    mpsc::UnboundedReceiver<Message>,
    tokio::task::JoinHandle<()>,
)> {
    let m = &cfg.mqtt;
    // Unbounded on purpose: the event loop must never stop polling while the pipeline waits
    // to send acknowledgements through it (that would deadlock). The broker's in-flight
    // window bounds what can be waiting here: QoS 1/2 messages are only acknowledged after
    // the pipeline has taken them.
    let (tx, rx) = mpsc::unbounded_channel::<Message>();
    let subs: Vec<(String, u8)> = m
        .subscriptions
        .iter()
        .map(|s| (s.filter.clone(), s.qos))
        .collect();
    let backoff_min = m.reconnect_min.0;
    let backoff_max = m.reconnect_max.0;
    let tls = tls_transport(cfg)?;
    let max_packet = (m.max_payload.0 as usize).saturating_add(64 * 1024);
    let client_id = cfg.client_id();
    match m.protocol {
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(client_id, m.host.clone(), m.port);
            o.set_keep_alive(m.keep_alive.0)
                .set_clean_session(!m.persistent_session)
                .set_manual_acks(true)
                .set_max_packet_size(max_packet, 64 * 1024)
                .set_inflight(100);
            if let (Some(u), p) = (&m.username, &m.password) {
                o.set_credentials(u.clone(), p.clone().unwrap_or_default());
            }
            if let Some(t) = tls {
                o.set_transport(rumqttc::Transport::Tls(t));
            }
            let (client, mut ev) = rumqttc::AsyncClient::new(o, 4096);
            let sub_client = client.clone();
            let handle = tokio::spawn(async move {
                let mut backoff = backoff_min;
                loop {
                    let polled = tokio::select! {
                        p = ev.poll() => p,
                        _ = shutdown.changed() => break,
                    };
                    match polled {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            let ack = (p.qos != rumqttc::QoS::AtMostOnce)
                                .then(|| AckToken::V4(p.clone()));
                            let msg = Message {
                                topic: p.topic.clone().into(),
                                payload: p.payload.clone(),
                                ack,
                            };
                            if tx.send(msg).is_err() {
                                break;
                            }
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                            backoff = backoff_min;
                            metrics.mqtt_connected.store(true, Relaxed);
                            metrics.mqtt_connects.fetch_add(1, Relaxed);
                            tracing::info!(
                                session_present = ack.session_present,
                                "connected to MQTT broker"
                            );
                            let c = sub_client.clone();
                            let subs = subs.clone();
                            tokio::spawn(async move {
                                let topics = subs
                                    .into_iter()
                                    .map(|(f, q)| rumqttc::SubscribeFilter::new(f, qos4(q)));
                                if let Err(e) = c.subscribe_many(topics).await {
                                    tracing::warn!(error = %e, "MQTT subscribe failed");
                                }
                            });
                        }
                        Ok(_) => {}
                        Err(e) => {
                            metrics.mqtt_connected.store(false, Relaxed);
                            metrics.mqtt_connection_errors.fetch_add(1, Relaxed);
                            tracing::warn!(error = %e, retry_in = ?backoff, "MQTT connection lost");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = shutdown.changed() => break,
                            }
                            backoff = (backoff * 2).min(backoff_max);
                        }
                    }
                }
                metrics.mqtt_connected.store(false, Relaxed);
            });
            Ok((Acker::V4(client), rx, handle))
        }
        MqttProtocol::V5 => {
            use rumqttc::v5::mqttbytes::v5::Packet;
            let mut o = rumqttc::v5::MqttOptions::new(client_id, m.host.clone(), m.port);
            o.set_keep_alive(m.keep_alive.0)
                .set_clean_start(!m.persistent_session)
                .set_manual_acks(true)
                .set_max_packet_size(Some(max_packet as u32))
                .set_receive_maximum(Some(m.receive_maximum));
            if m.persistent_session {
                o.set_session_expiry_interval(Some(
                    m.session_expiry.0.as_secs().min(u32::MAX as u64) as u32,
                ));
            }
            if let (Some(u), p) = (&m.username, &m.password) {
                o.set_credentials(u.clone(), p.clone().unwrap_or_default());
            }
            if let Some(t) = tls {
                o.set_transport(rumqttc::Transport::Tls(t));
            }
            let (client, mut ev) = rumqttc::v5::AsyncClient::new(o, 4096);
            let sub_client = client.clone();
            let handle = tokio::spawn(async move {
                let mut backoff: Duration = backoff_min;
                loop {
                    let polled = tokio::select! {
                        p = ev.poll() => p,
                        _ = shutdown.changed() => break,
                    };
                    match polled {
                        Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                            let ack = (p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce)
                                .then(|| AckToken::V5(p.clone()));
                            let msg = Message {
                                topic: p.topic.clone(),
                                payload: p.payload.clone(),
                                ack,
                            };
                            if tx.send(msg).is_err() {
                                break;
                            }
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(ack))) => {
                            backoff = backoff_min;
                            metrics.mqtt_connected.store(true, Relaxed);
                            metrics.mqtt_connects.fetch_add(1, Relaxed);
                            tracing::info!(
                                session_present = ack.session_present,
                                "connected to MQTT broker (v5)"
                            );
                            let c = sub_client.clone();
                            let subs = subs.clone();
                            tokio::spawn(async move {
                                let topics = subs.into_iter().map(|(f, q)| {
                                    rumqttc::v5::mqttbytes::v5::Filter::new(f, qos5(q))
                                });
                                if let Err(e) = c.subscribe_many(topics).await {
                                    tracing::warn!(error = %e, "MQTT subscribe failed");
                                }
                            });
                        }
                        Ok(_) => {}
                        Err(e) => {
                            metrics.mqtt_connected.store(false, Relaxed);
                            metrics.mqtt_connection_errors.fetch_add(1, Relaxed);
                            tracing::warn!(error = %e, retry_in = ?backoff, "MQTT connection lost");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = shutdown.changed() => break,
                            }
                            backoff = (backoff * 2).min(backoff_max);
                        }
                    }
                }
                metrics.mqtt_connected.store(false, Relaxed);
            });
            Ok((Acker::V5(client), rx, handle))
        }
    }
}
