//! The MQTT source: MQTT 3.1.1 through the agent's own session loop on rumqttc's packet
//! codec ([`v311`], which batches acknowledgements), MQTT 5 through rumqttc's event loop.
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

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::{EdgeConfig, MqttProtocol};
use crate::metrics::Metrics;
use crate::{Error, Result};

mod v311;

/// What the pipeline needs to acknowledge a message later.
#[derive(Debug)]
pub enum AckToken {
    /// MQTT 3.1.1: the packet id on the connection (numbered by the session loop) it
    /// arrived on; `qos2` answers with PUBREC instead of PUBACK.
    V311 {
        pkid: u16,
        qos2: bool,
        connection: u64,
    },
    /// MQTT 5: the message and the connection it arrived on (see [`Acker::V5`]).
    V5 {
        publish: Box<rumqttc::v5::mqttbytes::v5::Publish>,
        connection: u64,
    },
}

/// One received MQTT message.
#[derive(Debug)]
pub struct Message {
    pub topic: Bytes,
    pub payload: Bytes,
    /// Present for QoS 1/2.
    pub ack: Option<AckToken>,
    /// The broker's DUP flag: it sent this message before (a redelivery).
    pub dup: bool,
}

impl AckToken {
    /// The message's packet id.
    pub fn pkid(&self) -> u16 {
        match self {
            AckToken::V311 { pkid, .. } => *pkid,
            AckToken::V5 { publish, .. } => publish.pkid,
        }
    }
}

/// Sends acknowledgements to the broker.
#[derive(Clone)]
pub enum Acker {
    V311(mpsc::UnboundedSender<Vec<AckToken>>),
    /// The client, and the number of the current connection: it moves on as soon as a
    /// connection is lost, and tokens of an earlier one are not acknowledged (their packet
    /// ids mean nothing to the next connection, or another message there; the broker
    /// redelivers them to a persistent session).
    V5 {
        client: rumqttc::v5::AsyncClient,
        connection: Arc<AtomicU64>,
    },
}

impl Acker {
    /// Acknowledges a group commit's messages, in the order they arrived.
    pub async fn ack_all(&self, tokens: Vec<AckToken>) {
        match self {
            Acker::V311(tx) => {
                // Fails only when the session loop is gone (shutdown); the broker will
                // redeliver.
                let _ = tx.send(tokens);
            }
            Acker::V5 { client, connection } => {
                for t in tokens {
                    if let AckToken::V5 {
                        publish,
                        connection: c,
                    } = t
                    {
                        if c != connection.load(SeqCst) {
                            tracing::debug!(
                                pkid = publish.pkid,
                                "acknowledgement of an earlier connection dropped"
                            );
                            continue;
                        }
                        if let Err(e) = client.ack(&publish).await {
                            tracing::debug!(error = %e, "could not send MQTT acknowledgement");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Sends DISCONNECT on MQTT 5; the 3.1.1 session loop closes its connection itself
    /// when shutdown is signalled.
    pub async fn disconnect(&self) {
        if let Acker::V5 { client, .. } = self {
            let _ = client.disconnect().await;
        }
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        1 => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        _ => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// PEM bytes: the CA file, and the client certificate and key for mutual TLS.
type TlsFiles = (Vec<u8>, Option<(Vec<u8>, Vec<u8>)>);

fn read_tls_files(cfg: &EdgeConfig) -> Result<Option<TlsFiles>> {
    let Some(tls) = &cfg.mqtt.tls else {
        return Ok(None);
    };
    // rustls builds its client config with the process's crypto provider: ring, named
    // here so that no other provider compiled into the same binary makes it ambiguous.
    // (Installed already, by an earlier connection or the host program: that one stays.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| Error::io("reading TLS file", p, e));
    let ca = read(&tls.ca_file)?;
    let client_auth = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        _ => None,
    };
    Ok(Some((ca, client_auth)))
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
    let max_packet = (m.max_payload.0 as usize).saturating_add(64 * 1024);
    let client_id = cfg.client_id();
    match m.protocol {
        MqttProtocol::V311 => {
            let tls = match read_tls_files(cfg)? {
                None => None,
                Some((ca, auth)) => Some(
                    v311::tls_config(
                        &ca,
                        auth.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
                    )
                    .map_err(Error::Config)?,
                ),
            };
            let opts = v311::Options {
                host: m.host.clone(),
                port: m.port,
                client_id,
                keep_alive: m.keep_alive.0,
                clean_session: !m.persistent_session,
                login: m
                    .username
                    .clone()
                    .map(|u| (u, m.password.clone().unwrap_or_default())),
                tls,
                max_incoming: max_packet,
                subscriptions: subs,
                reconnect_min: backoff_min,
                reconnect_max: backoff_max,
            };
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            let handle = tokio::spawn(v311::run(opts, tx, ack_rx, metrics, shutdown));
            Ok((Acker::V311(ack_tx), rx, handle))
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
            if let Some((ca, client_auth)) = read_tls_files(cfg)? {
                o.set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
                    ca,
                    alpn: None,
                    client_auth,
                }));
            }
            let (client, mut ev) = rumqttc::v5::AsyncClient::new(o, 4096);
            let sub_client = client.clone();
            let connection = Arc::new(AtomicU64::new(0));
            let current = connection.clone();
            let handle = tokio::spawn(async move {
                let mut backoff: Duration = backoff_min;
                loop {
                    let polled = tokio::select! {
                        p = ev.poll() => p,
                        _ = shutdown.changed() => break,
                    };
                    match polled {
                        Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                            let ack =
                                (p.qos != rumqttc::v5::mqttbytes::QoS::AtMostOnce).then(|| {
                                    AckToken::V5 {
                                        publish: Box::new(p.clone()),
                                        connection: current.load(SeqCst),
                                    }
                                });
                            let msg = Message {
                                topic: p.topic.clone(),
                                payload: p.payload.clone(),
                                ack,
                                dup: p.dup,
                            };
                            if tx.send(msg).is_err() {
                                break;
                            }
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(ack))) => {
                            backoff = backoff_min;
                            metrics.set_mqtt_connected(true);
                            metrics.mqtt_connects.inc();
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
                        Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(ack))) => {
                            for (code, (filter, _)) in ack.return_codes.iter().zip(&subs) {
                                if matches!(
                                    code,
                                    rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                                ) {
                                    tracing::info!(filter, reason = ?code, "subscribed");
                                } else {
                                    tracing::error!(filter, reason = ?code, "the broker refused the subscription");
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            // The event loop has dropped the acknowledgements still queued
                            // for the lost connection; later ones must not reach the next.
                            current.fetch_add(1, SeqCst);
                            metrics.set_mqtt_connected(false);
                            metrics.mqtt_connection_errors.inc();
                            tracing::warn!(error = %e, retry_in = ?backoff, "MQTT connection lost");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = shutdown.changed() => break,
                            }
                            backoff = (backoff * 2).min(backoff_max);
                        }
                    }
                }
                metrics.set_mqtt_connected(false);
            });
            Ok((Acker::V5 { client, connection }, rx, handle))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::Publish;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::Request;

    fn token(pkid: u16, connection: u64) -> AckToken {
        let mut publish = Publish::new("t", QoS::AtLeastOnce, "1", None);
        publish.pkid = pkid;
        AckToken::V5 {
            publish: Box::new(publish),
            connection,
        }
    }

    #[tokio::test]
    async fn v5_acknowledgements_of_an_earlier_connection_are_not_sent() {
        let (tx, rx) = flume::unbounded();
        let connection = Arc::new(AtomicU64::new(3));
        let acker = Acker::V5 {
            client: rumqttc::v5::AsyncClient::from_senders(tx),
            connection: connection.clone(),
        };
        acker
            .ack_all(vec![token(7, 2), token(8, 3), token(9, 2), token(10, 3)])
            .await;
        let sent: Vec<u16> = rx
            .drain()
            .map(|r| match r {
                Request::PubAck(a) => a.pkid,
                other => panic!("unexpected request {other:?}"),
            })
            .collect();
        assert_eq!(sent, [8, 10], "only the current connection's packet ids");

        // the connection is lost: nothing it received is acknowledged any more
        connection.fetch_add(1, SeqCst);
        acker.ack_all(vec![token(11, 3)]).await;
        assert!(rx.is_empty());
    }
}
