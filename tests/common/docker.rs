//! Starting containers with testcontainers, with errors that say what to do.
//!
//! testcontainers 0.28 talks to the engine through bollard 0.21, whose request paths carry
//! no API version (`Url::join` drops the `/v1.xx` prefix), so it also works against old
//! engines such as Debian 12's Docker 20.10 (API 1.41).

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use testcontainers::core::error::ClientError;
use testcontainers::runners::AsyncRunner;
use testcontainers::{
    ContainerAsync, ContainerRequest, GenericImage, ImageExt, TestcontainersError,
};

pub(crate) const SETUP_HINT: &str =
    "Run `scripts/test-env.sh` (builds edgeflow/mosquitto:local and \
     edgeflow/tansu:local without a registry and prints the EDGEFLOW_* variables to export), \
     or run the tests through `scripts/test.sh`";

/// An image reference from `var`, or `default`, split into (name, tag).
pub(crate) fn image_from_env(var: &str, default: &str) -> (String, String) {
    let reference = std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    split_image(reference.trim())
}

fn split_image(reference: &str) -> (String, String) {
    // A ':' after the last '/' separates the tag ("localhost:5000/x" has no tag).
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            reference[..last_slash + i].to_owned(),
            reference[last_slash + i + 1..].to_owned(),
        ),
        None => (reference.to_owned(), "latest".to_owned()),
    }
}

/// A TCP port that is free on the host right now and not handed out before by this
/// process. Another process may still take it before Docker binds it; [`start`] retries
/// with a new port in that case.
pub(crate) fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("cannot find a free TCP port on 127.0.0.1: {e}"));
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Starts the container built by `request(host_port)`, retrying with another port when
/// the chosen one was taken meanwhile. Panics with a fix-it message on any other error.
pub(crate) async fn start<F>(what: &str, mut request: F) -> (ContainerAsync<GenericImage>, u16)
where
    F: FnMut(u16) -> ContainerRequest<GenericImage>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let req = request(port).with_label("edgeflow.test", "true");
        let descriptor = req.descriptor();
        match req.start().await {
            Ok(container) => return (container, port),
            Err(e) if attempt < 5 && is_port_conflict(&e) => continue,
            Err(e) => panic!("{}", explain(what, &descriptor, &e)),
        }
    }
}

fn is_port_conflict(e: &TestcontainersError) -> bool {
    let text = e.to_string();
    text.contains("port is already allocated") || text.contains("address already in use")
}

fn explain(what: &str, image: &str, e: &TestcontainersError) -> String {
    let text = e.to_string();
    let advice = match e {
        TestcontainersError::Client(ClientError::Init(_)) => {
            "Docker is not reachable. Start the Docker daemon and check DOCKER_HOST / access to \
             /var/run/docker.sock."
                .to_owned()
        }
        TestcontainersError::Client(ClientError::PullImage { .. }) => {
            format!("Image {image} is not present locally and could not be pulled. {SETUP_HINT}.")
        }
        _ if text.contains("docker.sock") || text.contains("Connection refused") => {
            "Docker is not reachable. Start the Docker daemon and check DOCKER_HOST / access to \
             /var/run/docker.sock."
                .to_owned()
        }
        _ => format!("If the image is missing or stale: {SETUP_HINT}."),
    };
    format!("could not start {what} from image {image}: {text}\n{advice}")
}

/// Everything the container wrote so far (stdout then stderr), for failure messages.
pub(crate) async fn logs(container: &ContainerAsync<GenericImage>) -> String {
    let out = container.stdout_to_vec().await.unwrap_or_default();
    let err = container.stderr_to_vec().await.unwrap_or_default();
    format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    )
}
