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
