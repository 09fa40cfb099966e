//! The agent's own MQTT 3.1.1 session loop, built on rumqttc's packet codec.
//!
//! Why not rumqttc's `EventLoop`: with manual acknowledgements it writes and flushes every
//! PUBACK on its own (one system call and one event-loop turn per message), which capped
//! a bare manual-ack subscriber at ~0.57× the rate of an auto-ack one on the development
//! machine. Here the pipeline hands over all acknowledgements of a group commit at once
//! and they leave in one write.
//!
//! Acknowledgements carry the number of the connection their message arrived on. One from
//! an earlier connection is dropped: the broker redelivers that message on the new
//! connection (persistent session), and acknowledging the old packet id could acknowledge
//! a different, newer message that reuses the id.
//!
//! QoS 2 is received at least once: PUBREC is sent once the message is durable, PUBCOMP
//! as soon as PUBREL arrives.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{
    Codec, ConnectReturnCode, Packet, PubAck, PubComp, PubRec, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;

use super::{AckToken, Message};
use crate::metrics::Metrics;

/// How to reach and log in to the broker.
#[derive(Clone)]
pub struct Options {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    pub clean_session: bool,
    pub login: Option<(String, String)>,
    pub tls: Option<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>>,
    pub max_incoming: usize,
    pub subscriptions: Vec<(String, u8)>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Runs sessions (reconnecting with backoff) until `shutdown`. Messages go to `tx`; the
/// acknowledgements of each group commit come back on `acks`.
pub async fn run(
    opts: Options,
    tx: mpsc::UnboundedSender<Message>,
    mut acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = opts.reconnect_min;
    let mut connection = 0u64;
    loop {
        connection += 1;
        let result = tokio::select! {
            r = session(&opts, connection, &tx, &mut acks, &metrics, &mut backoff) => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        metrics.set_mqtt_connected(false);
        match result {
            Ok(()) => break,
            Err(e) => {
                metrics.mqtt_connection_errors.inc();
                tracing::warn!(error = %e, retry_in = ?backoff, "MQTT connection lost");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        backoff = (backoff * 2).min(opts.reconnect_max);
    }
    metrics.set_mqtt_connected(false);
}

async fn connect(opts: &Options) -> Result<Box<dyn Stream>, String> {
    let addr = format!("{}:{}", opts.host, opts.port);
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match &opts.tls {
        None => Ok(Box::new(tcp)),
        Some(cfg) => {
            let name =
                rumqttc::tokio_rustls::rustls::pki_types::ServerName::try_from(opts.host.clone())
                    .map_err(|e| format!("`{}` is not a valid TLS server name: {e}", opts.host))?;
            let tls = rumqttc::tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
            Ok(Box::new(tls))
        }
    }
}

/// One connection: CONNECT, SUBSCRIBE, then read messages and write acknowledgements.
/// `Ok(())` only when the broker or the pipeline ends it for good.
async fn session(
    opts: &Options,
    connection: u64,
    tx: &mpsc::UnboundedSender<Message>,
    acks: &mut mpsc::UnboundedReceiver<Vec<AckToken>>,
    metrics: &Metrics,
    backoff: &mut Duration,
) -> Result<(), String> {
    let stream = connect(opts).await?;
    let codec = Codec {
        max_incoming_size: opts.max_incoming,
        max_outgoing_size: 64 * 1024,
    };
    let mut framed = Framed::new(stream, codec);
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(opts.client_id.clone());
    connect.keep_alive = opts.keep_alive.as_secs().min(u16::MAX as u64) as u16;
    connect.clean_session = opts.clean_session;
    if let Some((u, p)) = &opts.login {
        connect.set_login(u.clone(), p.clone());
    }
    framed
        .send(Packet::Connect(connect))
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    let connack = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await
        .map_err(|_| "no CONNACK within 10 s".to_string())?;
    let session_present = match connack {
        Some(Ok(Packet::ConnAck(a))) if a.code == ConnectReturnCode::Success => a.session_present,
        Some(Ok(Packet::ConnAck(a))) => {
            return Err(format!(
                "the broker refused the connection: {:?} (check mqtt.username / EDGEFLOW_MQTT_PASSWORD and mqtt.client_id)",
                a.code
            ))
        }
        Some(Ok(other)) => return Err(format!("expected CONNACK, got {other:?}")),
        Some(Err(e)) => return Err(format!("reading CONNACK: {e}")),
        None => return Err("the broker closed the connection before CONNACK".into()),
    };
    *backoff = opts.reconnect_min;
    metrics.set_mqtt_connected(true);
    metrics.mqtt_connects.inc();
    tracing::info!(session_present, "connected to MQTT broker");
    let filters = opts
        .subscriptions
        .iter()
        .map(|(f, q)| SubscribeFilter::new(f.clone(), qos(*q)));
    let mut subscribe = Subscribe::new_many(filters);
    subscribe.pkid = 1;
    framed
        .send(Packet::Subscribe(subscribe))
        .await
        .map_err(|e| format!("sending SUBSCRIBE: {e}"))?;

    let keep_alive = opts.keep_alive.max(Duration::from_secs(1));
    let mut ping = tokio::time::interval(keep_alive);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            packet = framed.next() => {
                let packet = match packet {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => return Err(format!("reading from the broker: {e}")),
                    None => return Err("the broker closed the connection".into()),
                };
                match packet {
                    Packet::Publish(p) => {
                        let ack = match p.qos {
                            QoS::AtMostOnce => None,
                            QoS::AtLeastOnce => Some(AckToken::V311 { pkid: p.pkid, qos2: false, connection }),
                            QoS::ExactlyOnce => Some(AckToken::V311 { pkid: p.pkid, qos2: true, connection }),
                        };
                        let msg = Message { topic: Bytes::from(p.topic), payload: p.payload, ack, dup: p.dup };
                        if tx.send(msg).is_err() {
                            return Ok(());
                        }
                    }
                    Packet::PubRel(r) => {
                        framed.send(Packet::PubComp(PubComp::new(r.pkid))).await
                            .map_err(|e| format!("sending PUBCOMP: {e}"))?;
                    }
                    Packet::SubAck(s) => {
                        for (code, (filter, _)) in s.return_codes.iter().zip(&opts.subscriptions) {
                            match code {
                                SubscribeReasonCode::Failure => tracing::error!(filter, "the broker refused the subscription"),
                                SubscribeReasonCode::Success(q) => tracing::info!(filter, granted_qos = ?q, "subscribed"),
                            }
                        }
                    }
                    Packet::PingResp => awaiting_pong = false,
                    Packet::Disconnect => return Err("the broker sent DISCONNECT".into()),
                    _ => {}
                }
            }
            batch = acks.recv() => {
                let Some(batch) = batch else { return Ok(()) };
                let mut n = 0usize;
                for t in batch.into_iter().chain(std::iter::from_fn(|| acks.try_recv().ok()).flatten()) {
                    if let AckToken::V311 { pkid, qos2, connection: c } = t {
                        if c != connection {
                            continue;
                        }
                        let packet = if qos2 {
                            Packet::PubRec(PubRec::new(pkid))
                        } else {
                            Packet::PubAck(PubAck::new(pkid))
                        };
                        framed.feed(packet).await.map_err(|e| format!("writing acknowledgements: {e}"))?;
                        n += 1;
                    }
                }
                if n > 0 {
                    framed.flush().await.map_err(|e| format!("writing acknowledgements: {e}"))?;
                    ping.reset();
                }
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    return Err(format!("no PINGRESP within the keep-alive ({keep_alive:?})"));
                }
                framed.send(Packet::PingReq).await.map_err(|e| format!("sending PINGREQ: {e}"))?;
                awaiting_pong = true;
            }
        }
    }
}

/// Builds the TLS client config from PEM files.
pub fn tls_config(
    ca: &[u8],
    client_auth: Option<(&[u8], &[u8])>,
) -> Result<Arc<rumqttc::tokio_rustls::rustls::ClientConfig>, String> {
    use rumqttc::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| format!("mqtt.tls.ca_file: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("mqtt.tls.ca_file: {e}"))?;
    }
    if roots.is_empty() {
        return Err("mqtt.tls.ca_file holds no PEM certificate".into());
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let cfg = match client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("mqtt.tls.client_cert_file: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("mqtt.tls.client_key_file: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("mqtt.tls client certificate: {e}"))?
        }
    };
    Ok(Arc::new(cfg))
}
