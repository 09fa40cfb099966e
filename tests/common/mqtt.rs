//! An MQTT broker (Mosquitto) in Docker.

use std::time::{Duration, Instant};

use testcontainers::core::IntoContainerPort;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::docker;

/// The broker config: listens on 1883 on all interfaces, anonymous, no persistence, no
/// in-flight limit. Copied into whatever image runs, so the public `eclipse-mosquitto:2`
/// (which only listens on localhost by default) behaves like `edgeflow/mosquitto:local`.
const CONFIG: &[u8] = include_bytes!("../../docker/mosquitto/mosquitto.conf");
const CONFIG_PATH: &str = "/mosquitto/config/mosquitto.conf";
const MQTT_PORT: u16 = 1883;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh Mosquitto broker, removed on drop.
pub struct Mosquitto {
    container: ContainerAsync<GenericImage>,
    port: u16,
}

impl Mosquitto {
    /// Starts the image named by `EDGEFLOW_MQTT_IMAGE` (default `eclipse-mosquitto:2`) and
    /// returns once it answers an MQTT CONNECT.
    pub async fn start() -> Self {
        let (name, tag) = docker::image_from_env("EDGEFLOW_MQTT_IMAGE", "eclipse-mosquitto:2");
        let (container, port) = docker::start("the MQTT broker", |port| {
            GenericImage::new(name.clone(), tag.clone())
                .with_mapped_port(port, MQTT_PORT.tcp())
                .with_copy_to(CONFIG_PATH, CONFIG.to_vec())
                .with_cmd(["mosquitto", "-c", CONFIG_PATH])
        })
        .await;
        let mqtt = Mosquitto { container, port };
        mqtt.wait_ready().await;
        mqtt
    }

    /// Starts a broker that accepts only TLS (port 8883 in the container) and one user
    /// with a password. `certs` holds `ca.crt`, `server.crt` and `server.key` (PEM); the
    /// server certificate must name 127.0.0.1.
    pub async fn start_secured(certs: &std::path::Path, user: &str, password: &str) -> Self {
        const SECURED_PATH: &str = "/mosquitto/config/secured.conf";
        let base = String::from_utf8_lossy(CONFIG).replace("listener 1883 0.0.0.0", "");
        let config = format!(
            "{base}\nlistener 8883 0.0.0.0\nallow_anonymous false\n\
             password_file /mosquitto/config/passwd\n\
             cafile /mosquitto/certs/ca.crt\ncertfile /mosquitto/certs/server.crt\n\
             keyfile /mosquitto/certs/server.key\n"
        );
        let read = |name: &str| {
            std::fs::read(certs.join(name))
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", certs.join(name).display()))
        };
        let (ca, crt, key) = (read("ca.crt"), read("server.crt"), read("server.key"));
        let (name, tag) = docker::image_from_env("EDGEFLOW_MQTT_IMAGE", "eclipse-mosquitto:2");
        // The password file is made inside the container with the broker's own tool.
        let script = format!(
            "mosquitto_passwd -c -b /mosquitto/config/passwd '{user}' '{password}' && \
             chmod 0644 /mosquitto/config/passwd && exec mosquitto -c {SECURED_PATH}"
        );
        let (container, port) = docker::start("the TLS MQTT broker", |port| {
            GenericImage::new(name.clone(), tag.clone())
                .with_mapped_port(port, 8883.tcp())
                .with_copy_to(SECURED_PATH, config.clone().into_bytes())
                .with_copy_to("/mosquitto/certs/ca.crt", ca.clone())
                .with_copy_to("/mosquitto/certs/server.crt", crt.clone())
                .with_copy_to("/mosquitto/certs/server.key", key.clone())
                .with_cmd(["sh", "-c", script.as_str()])
        })
        .await;
        let mqtt = Mosquitto { container, port };
        // Ready when the real client gets through TLS and the login (Docker's port proxy
        // accepts TCP before the broker listens, and the broker's log is buffered).
        let ca_path = certs.join("ca.crt");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = tokio::process::Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile"])
                .arg(&ca_path)
                .args([
                    "-u",
                    user,
                    "-P",
                    password,
                    "-t",
                    "edgeflow/probe",
                    "-m",
                    "1",
                ])
                .output()
                .await
                .expect(
                    "mosquitto_pub not found: install mosquitto-clients (scripts/test-env.sh does)",
                );
            if out.status.success() {
                break;
            }
            if Instant::now() > deadline || matches!(mqtt.container.is_running().await, Ok(false)) {
                panic!(
                    "the TLS MQTT broker is not ready: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    mqtt.logs().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        mqtt
    }

    /// Host to connect to.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// Port to connect to (the same after [`Mosquitto::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host(), self.port)
    }

    /// Stops the broker (clients see their connections closed and then refused).
    pub async fn stop(&self) {
        self.container
            .stop_with_timeout(Some(5))
            .await
            .unwrap_or_else(|e| panic!("could not stop the MQTT broker: {e}"));
    }

    /// Starts the stopped broker again on the same port and waits until it is ready.
    /// Persistence is off, so retained messages and sessions are gone.
    pub async fn start_again(&self) {
        self.container
            .start()
            .await
            .unwrap_or_else(|e| panic!("could not restart the MQTT broker: {e}"));
        self.wait_ready().await;
    }

    /// The broker's log so far.
    pub async fn logs(&self) -> String {
        docker::logs(&self.container).await
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            match mqtt_connect_probe(self.port).await {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            if let Ok(false) = self.container.is_running().await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the MQTT broker on port {} is not ready after {READY_TIMEOUT:?} (last error: \
             {last_error})\n{}",
            self.port,
            self.logs().await
        );
    }
}

/// Sends an MQTT 3.1.1 CONNECT (clean session, empty client id) and expects CONNACK
/// "accepted". A TCP connect alone proves nothing: Docker's port proxy accepts
/// connections before the broker listens.
async fn mqtt_connect_probe(port: u16) -> Result<(), String> {
    const CONNECT: [u8; 14] = [
        0x10, 12, // CONNECT, remaining length
        0, 4, b'M', b'Q', b'T', b'T', 4,    // protocol name, level 4 (3.1.1)
        0x02, // clean session
        0, 10, // keep-alive 10 s
        0, 0, // empty client id
    ];
    let probe = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        stream
            .write_all(&CONNECT)
            .await
            .map_err(|e| e.to_string())?;
        let mut connack = [0u8; 4];
        stream
            .read_exact(&mut connack)
            .await
            .map_err(|e| e.to_string())?;
        if connack != [0x20, 2, 0, 0] {
            return Err(format!("unexpected CONNACK {connack:02x?}"));
        }
        // DISCONNECT
        let _ = stream.write_all(&[0xe0, 0]).await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .map_err(|_| "no CONNACK within 2 s".to_owned())?
}

/// A QoS 1 publisher (rumqttc) that counts the broker's PUBACKs, so a test or bench can
/// wait until the broker holds every message it published.
pub struct Publisher {
    client: rumqttc::AsyncClient,
    acked: tokio::sync::watch::Receiver<u64>,
    sent: u64,
}

impl Publisher {
    pub async fn connect(host: &str, port: u16) -> Self {
        let mut o = rumqttc::MqttOptions::new(super::unique_topic("pub"), host, port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut ev) = rumqttc::AsyncClient::new(o, 10_000);
        let (tx, acked) = tokio::sync::watch::channel(0u64);
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                match ev.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        n += 1;
                        let _ = tx.send(n);
                    }
                    Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => panic!("the publisher lost its broker: {e}"),
                }
            }
        });
        Publisher {
            client,
            acked,
            sent: 0,
        }
    }

    /// The client, for publishing from a closure (not counted by [`Publisher::sent`]).
    pub fn client(&self) -> rumqttc::AsyncClient {
        self.client.clone()
    }

    /// Messages published through [`Publisher::publish`].
    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("queue PUBLISH");
        self.sent += 1;
    }

    /// Waits until the broker acknowledged everything published so far.
    pub async fn wait_all_acked(&mut self, timeout: Duration) {
        let n = self.sent;
        tokio::time::timeout(timeout, self.acked.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| {
                panic!("the broker did not acknowledge {n} publishes within {timeout:?}")
            })
            .expect("publisher alive");
    }

    /// Waits for every acknowledgement, then disconnects.
    pub async fn close(mut self) {
        self.wait_all_acked(Duration::from_secs(300)).await;
        let _ = self.client.disconnect().await;
    }
}
