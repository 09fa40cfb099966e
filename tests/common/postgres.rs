//! PostgreSQL for the sink tests, and the real `psql` client.
//!
//! The server comes from `EDGEFLOW_POSTGRES_URL` (an admin connection; `scripts/test-env.sh`
//! starts Debian's server and sets it) or, when that is unset, from a container of
//! `EDGEFLOW_POSTGRES_IMAGE` (default `postgres:16`). Each [`Postgres`] is a fresh
//! database of its own, dropped with it.

use std::process::Command;
use std::time::Duration;

use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio_postgres::{Client, NoTls};

use super::docker;

/// A private database on a real PostgreSQL server.
pub struct Postgres {
    admin_url: String,
    /// Connection URL of this test's database.
    pub url: String,
    pub db: String,
    _container: Option<ContainerAsync<GenericImage>>,
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn with_db(url: &str, db: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('/') {
        Some(i) => format!("{}/{db}", &url[..start + i]),
        None => format!("{url}/{db}"),
    }
}

impl Postgres {
    /// A fresh database (see the module docs for where the server comes from).
    pub async fn start() -> Self {
        let (admin_url, container) = match std::env::var("EDGEFLOW_POSTGRES_URL") {
            Ok(url) if !url.trim().is_empty() => (url, None),
            _ => {
                let (name, tag) = docker::image_from_env("EDGEFLOW_POSTGRES_IMAGE", "postgres:16");
                let (c, port) = docker::start("PostgreSQL", |port| {
                    GenericImage::new(name.clone(), tag.clone())
                        .with_mapped_port(port, testcontainers::core::IntoContainerPort::tcp(5432))
                        .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
                        .with_env_var("POSTGRES_USER", "edgeflow")
                })
                .await;
                (
                    format!("postgres://edgeflow@127.0.0.1:{port}/postgres"),
                    Some(c),
                )
            }
        };
        let admin = super::wait_until(
            "PostgreSQL accepts connections",
            Duration::from_secs(60),
            || {
                let url = admin_url.clone();
                async move { connect(&url).await.ok() }
            },
        )
        .await;
        let db = super::unique_topic("edgeflow_test").replace(['-', '.'], "_");
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create database {db} on {admin_url}: {e}"));
        let url = with_db(&admin_url, &db);
        Self {
            admin_url,
            url,
            db,
            _container: container,
        }
    }

    /// A client of this test's database.
    pub async fn client(&self) -> Client {
        connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let db = self.db.clone();
        // Best effort, off the async runtime: the database is throwaway anyway.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(c) = connect(&admin).await {
                        let _ = c
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// Output of one `psql` run.
pub struct PsqlOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real `psql` client: `psql -h host -p port -U edgeflow -d edgeflow -At -F '|' -c sql`.
pub fn psql(host: &str, port: u16, sql: &str) -> PsqlOutput {
    let out = Command::new("psql")
        .args(["-h", host, "-p", &port.to_string(), "-U", "edgeflow", "-d", "edgeflow"])
        .args(["-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap_or_else(|e| panic!("cannot run psql (apt-get install postgresql-client; scripts/test-env.sh does): {e}"));
    PsqlOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
