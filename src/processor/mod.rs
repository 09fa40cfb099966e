//! `edgeflow process`: a processor node.
//!
//! - [`config`]: the configuration (`configs/processor.toml`);
//! - [`node`]: streams, queries and sinks, and the statements that change them; `run`
//!   (the loop from Kafka through the engine), `delivery` (rows to sinks, retries,
//!   failed queries) and `queries_table` (`edgeflow_queries`) beside it;
//! - [`control`]: `CREATE/DROP MATERIALIZED VIEW` (continuous queries at run time);
//! - [`pg`]: the PostgreSQL wire protocol; [`http`]: `POST /sql`, `/metrics`, `/health`;
//! - [`metrics`]: counters, gauges and histograms, exposed as OpenMetrics text.

mod cluster_table;
pub mod config;
pub mod control;
mod delivery;
pub mod http;
pub mod metrics;
pub mod node;
pub mod pg;
mod queries_table;
mod run;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};

pub use config::ProcessorConfig;
pub use node::Node;

/// Checks a configuration without any I/O beyond reading its reference tables: every
/// stream's format, every table, and every query's SQL (planned against the streams).
pub async fn check(config: &ProcessorConfig) -> Result<()> {
    plan(config).await.map(|_| ())
}

/// An engine with the configuration's streams (no partitions), reference tables and
/// queries, no sinks.
pub(crate) async fn plan(config: &ProcessorConfig) -> Result<edgeflow_stream::engine::Engine> {
    use edgeflow_stream::engine::{Engine, QueryDecl, StreamDecl};
    let mut engine = Engine::new();
    for s in &config.streams {
        engine.add_stream(StreamDecl {
            name: s.name.clone(),
            format: s.format().with_context(|| format!("stream `{}`", s.name))?,
            watermark_delay_ms: s.watermark_delay.as_millis_i64(),
            idle_timeout_ms: s.idle_timeout.as_millis_i64(),
            latest_key: s.latest_key.clone(),
            latest_rows: s.latest_rows,
        })?;
    }
    for t in &config.tables {
        engine.add_reference_table(&t.name, &t.path).await?;
    }
    for q in &config.queries {
        engine
            .create_query(
                QueryDecl {
                    name: q.name.clone(),
                    sql: q.sql.clone(),
                    allowed_lateness_ms: q.allowed_lateness.as_millis_i64(),
                    live_rows: q.live_rows,
                },
                0,
            )
            .await
            .with_context(|| format!("query `{}`", q.name))?;
    }
    if config.cluster.is_some() {
        for s in &config.streams {
            engine
                .check_movable(&s.name, &s.message_key)
                .with_context(|| format!("stream `{}` in a cluster", s.name))?;
        }
    }
    Ok(engine)
}

/// Builds and runs a processor until `shutdown` resolves: Kafka ingest, the
/// continuous queries, and the SQL servers named in `[server]`.
pub async fn run(
    config: ProcessorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let node = Node::build(config.clone()).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if !config.server.http_listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.server.http_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on server.http_listen = {}",
                    config.server.http_listen
                )
            })?;
        tracing::info!(addr = %listener.local_addr()?, "HTTP: POST /sql, GET /queries, /metrics, /health");
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(http::serve(
            node.clone(),
            listener,
            async move {
                let _ = rx.changed().await;
            },
        )));
    }
    let pg_task = if config.server.pg_listen.is_empty() {
        None
    } else {
        let addr: SocketAddr = config
            .server
            .pg_listen
            .parse()
            .context("server.pg_listen")?;
        tracing::info!(%addr, "PostgreSQL wire protocol (psql, Grafana)");
        Some(tokio::spawn(pg::serve(
            node.clone(),
            addr.ip().to_string(),
            addr.port(),
        )))
    };
    let result = run::run(Arc::clone(&node), shutdown).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(t) = pg_task {
        t.abort();
    }
    result
}
