//! Where a query's rows go: its sinks, written with retries for transient failures;
//! a failure that will not go away stops the query, with the reason.

use std::time::Duration;

use anyhow::{bail, Result};
use datafusion::arrow::array::RecordBatch;
use edgeflow_ingest::decode::DeadLetter;
use edgeflow_sinks::{QueryShape, SinkRef};
use edgeflow_stream::engine::QueryOutput;

use super::metrics::Metrics;
use super::node::Node;

/// Where a query's rows go.
pub(super) struct Route {
    pub(super) shape: QueryShape,
    pub(super) sinks: Vec<SinkRef>,
    pub(super) late_shape: Option<QueryShape>,
    pub(super) late_sinks: Vec<SinkRef>,
}

impl Node {
    /// Stops a query that cannot go on, saying why (in `/queries`, `edgeflow_queries`,
    /// the log and the metrics).
    pub(super) async fn fail_query(&self, name: &str, error: &str) {
        self.metrics.query_failures.inc();
        tracing::error!(query = name, error, "continuous query failed and stopped");
        // Gone already if it was dropped meanwhile: nothing left to stop.
        let _ = self.engine.lock().await.fail_query(name, error);
    }

    /// Hands outputs to sinks. A write that fails for a transient reason is retried
    /// with backoff (the pipeline waits rather than dropping rows); one that cannot
    /// succeed stops the query with the sink's error.
    pub(super) async fn deliver(&self, outputs: Vec<QueryOutput>, now: i64) {
        for out in outputs {
            if out.failed.is_some() {
                // The engine stopped it and logged why.
                self.metrics.query_failures.inc();
                continue;
            }
            let (shape, sinks, late_shape, late_sinks) = {
                let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
                let Some(r) = routes.get(&out.query) else {
                    continue;
                };
                (
                    r.shape.clone(),
                    r.sinks.clone(),
                    r.late_shape.clone(),
                    r.late_sinks.clone(),
                )
            };
            // Retractions first: an identity retracted and written in one step is
            // written.
            let mut writes = Vec::new();
            for b in &out.retracted {
                writes.extend(sinks.iter().map(|s| (s, &shape, b, Write::Retract)));
            }
            for b in &out.rows {
                self.metrics.observe_emit(&shape, b, now);
                writes.extend(sinks.iter().map(|s| (s, &shape, b, Write::Rows)));
            }
            if let Some(ls) = &late_shape {
                for b in &out.late {
                    writes.extend(late_sinks.iter().map(|s| (s, ls, b, Write::Rows)));
                }
            }
            for (sink, shape, batch, kind) in writes {
                if let Err(e) = write_with_retry(sink, shape, batch, kind, &self.metrics).await {
                    let error = format!("sink `{}` cannot take its rows: {e}", sink.name());
                    self.fail_query(&out.query, &error).await;
                    break;
                }
            }
        }
    }

    /// Tells sinks the queries' watermarks.
    pub(super) async fn watermarks(&self) {
        let infos = self.engine.lock().await.queries();
        for info in infos.into_iter().filter(|q| q.error.is_none()) {
            let Some(wm) = info.watermark else { continue };
            let route = {
                let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
                routes
                    .get(&info.name)
                    .map(|r| (r.shape.clone(), r.sinks.clone()))
            };
            if let Some((shape, sinks)) = route {
                for s in sinks {
                    match s.watermark(&shape, wm).await {
                        Ok(()) => {}
                        Err(e) if e.is_retryable() => {
                            self.metrics.sink_errors.inc();
                            tracing::warn!(sink = s.name(), query = %info.name, error = %e, "sink failed at a watermark; retrying at the next one");
                        }
                        Err(e) => {
                            self.metrics.sink_errors.inc();
                            let error = format!("sink `{}` failed at a watermark: {e}", s.name());
                            self.fail_query(&info.name, &error).await;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Makes what every sink holds durable (at shutdown); fails naming every sink
    /// that could not.
    pub(super) async fn flush_sinks(&self) -> Result<()> {
        let routes: Vec<(QueryShape, Vec<SinkRef>)> = {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            routes
                .values()
                .map(|r| (r.shape.clone(), r.sinks.clone()))
                .collect()
        };
        let mut failed = Vec::new();
        for (shape, sinks) in routes {
            for s in sinks {
                if let Err(e) = s.flush(&shape).await {
                    tracing::error!(sink = s.name(), query = %shape.query, error = %e, "flush failed");
                    failed.push(format!("sink `{}`, query `{}`: {e}", s.name(), shape.query));
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("sinks could not flush: {}", failed.join("; "))
        }
    }
}

/// What a sink is given.
#[derive(Clone, Copy)]
enum Write {
    Rows,
    /// Identities to delete.
    Retract,
}

/// Writes, retrying with backoff for as long as the failure is transient; a failure
/// that is not (see [`edgeflow_sinks::Error::is_retryable`]) is returned at once.
async fn write_with_retry(
    sink: &SinkRef,
    shape: &QueryShape,
    batch: &RecordBatch,
    kind: Write,
    metrics: &Metrics,
) -> Result<(), edgeflow_sinks::Error> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let written = match kind {
            Write::Rows => sink.write(shape, batch).await,
            Write::Retract => sink.retract(shape, batch).await,
        };
        match written {
            Ok(()) => {
                let n = batch.num_rows() as u64;
                match kind {
                    Write::Rows => metrics.sink_rows.inc_by(n),
                    Write::Retract => metrics.sink_retractions.inc_by(n),
                };
                return Ok(());
            }
            Err(e) if !e.is_retryable() => {
                metrics.sink_errors.inc();
                return Err(e);
            }
            Err(e) => {
                metrics.sink_errors.inc();
                tracing::warn!(sink = sink.name(), query = %shape.query, error = %e, retry_in = ?backoff, "sink write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Takes the dead letters out of query outputs (rows a query could not place).
pub(super) fn take_dead(outputs: &mut [QueryOutput]) -> Vec<DeadLetter> {
    outputs
        .iter_mut()
        .flat_map(|o| std::mem::take(&mut o.dead))
        .collect()
}
