//! HTTP: `POST /sql` (a statement in the body; JSON rows back, or an Arrow IPC stream
//! with `Accept: application/vnd.apache.arrow.stream`), `GET /queries`,
//! `GET /metrics` (OpenMetrics text), `GET /health`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::ipc::writer::StreamWriter;
use tokio::net::TcpListener;

use super::node::{Executed, Node};

/// The media type of Arrow IPC streams.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

fn json_error(status: StatusCode, msg: String) -> Response {
    let body = serde_json::json!({ "error": msg }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn sql(State(node): State<Arc<Node>>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "the body must be UTF-8 SQL text".into(),
        );
    };
    if text.trim().is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "the body is empty; send one SQL statement".into(),
        );
    }
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    match node.execute(text).await {
        Err(e) => json_error(StatusCode::BAD_REQUEST, format!("{e:#}")),
        Ok(Executed::Done(tag)) => {
            let body = serde_json::json!({ "ok": tag }).to_string();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(Executed::Rows(batches)) if arrow => match arrow_ipc(&batches) {
            Ok(bytes) => ([(header::CONTENT_TYPE, ARROW_STREAM)], bytes).into_response(),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        Ok(Executed::Rows(batches)) => {
            let mut rows = Vec::new();
            for b in &batches {
                match edgeflow_sinks::json::rows_as_json(b) {
                    Ok(r) => rows.extend(r.into_iter().map(serde_json::Value::Object)),
                    Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            let body = serde_json::Value::Array(rows).to_string();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

fn arrow_ipc(batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let mut w = StreamWriter::try_new(Vec::new(), &first.schema()).map_err(|e| e.to_string())?;
    for b in batches {
        w.write(b).map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

async fn queries(State(node): State<Arc<Node>>) -> Response {
    let list: Vec<serde_json::Value> = node
        .queries()
        .await
        .into_iter()
        .map(|q| {
            serde_json::json!({
                "name": q.name,
                "stream": q.stream,
                "sql": q.sql,
                "windowed": q.windowed,
                "watermark_ms": q.watermark,
                "rows_in": q.stats.rows_in,
                "rows_out": q.stats.rows_out,
                "late_rows": q.stats.late_rows,
                "state": if q.error.is_some() { "failed" } else { "running" },
                "error": q.error,
                "columns": q.schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>(),
                "identity": q.identity.iter().map(|&i| q.schema.field(i).name().clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(list).to_string(),
    )
        .into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    (
        [(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
        node.metrics_text().await,
    )
        .into_response()
}

async fn health() -> &'static str {
    "ok"
}

/// Serves HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/sql", post(sql))
        .route("/queries", get(queries))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(node);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
