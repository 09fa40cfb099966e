//! `edgeflow-sinks`: where continuous-query results go.
//!
//! | sink | writes | idempotence |
//! |---|---|---|
//! | [`stdout::StdoutSink`] | JSON lines | none (for people and pipes) |
//! | [`kafka::KafkaSink`] | one record per row, keyed by the row's identity | idempotent producer; a replay appends records with the same key and value (compacted topics and consumers keep the last per key) |
//! | [`parquet::ParquetSink`] | Parquet files on object storage, by date and time bucket | files are named by (query, bucket, part) and hold a bucket's rows sorted by identity, so a replay rewrites the same files |
//! | [`postgres::PostgresSink`] | rows of a table created if absent, unique (nulls not distinct) on the identity | `INSERT ... ON CONFLICT DO UPDATE` (upsert) |
//!
//! Every row a continuous query emits has an identity: the query's name, its group
//! keys and its window start (for a filter/projection query, the whole row). A window
//! that is emitted again (after a late row) has the same identity and replaces the
//! earlier version, and a replay of the same input writes the same rows again, which
//! upserting sinks absorb.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

pub mod json;
pub mod kafka;
pub mod parquet;
pub mod postgres;
pub mod stdout;

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid sink configuration: {0}")]
    Config(String),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("object storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error("Parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message (with its detail) is what helps; the wrapper says little.
        match e.as_db_error() {
            Some(db) => Error::Postgres(match db.detail() {
                Some(d) => format!("{} ({d})", db.message()),
                None => db.message().to_string(),
            }),
            None => Error::Postgres(e.to_string()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a sink knows about the query it writes for.
#[derive(Clone, Debug)]
pub struct QueryShape {
    /// The query's name.
    pub query: String,
    pub schema: SchemaRef,
    /// Columns whose values identify a row.
    pub identity: Vec<usize>,
    /// The window-start column, for windowed queries.
    pub window_column: Option<usize>,
    /// How long after a window closes it may still change (ms).
    pub allowed_lateness_ms: i64,
    /// The window's length (tumble/hop size, session gap), ms.
    pub window_len_ms: Option<i64>,
}

impl QueryShape {
    /// Names of the identity columns.
    pub fn identity_names(&self) -> Vec<&str> {
        self.identity
            .iter()
            .map(|&i| self.schema.field(i).name().as_str())
            .collect()
    }
}

/// A destination for one or more queries' rows.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The sink's name in config.
    fn name(&self) -> &str;

    /// A query starts writing here (create its table, check its shape).
    async fn open(&self, shape: &QueryShape) -> Result<()>;

    /// Rows of a query.
    async fn write(&self, shape: &QueryShape, batch: &RecordBatch) -> Result<()>;

    /// The query's watermark reached `watermark_ms`: its windows ending more than the
    /// allowed lateness before it are final.
    async fn watermark(&self, _shape: &QueryShape, _watermark_ms: i64) -> Result<()> {
        Ok(())
    }

    /// Makes everything a query wrote so far durable (on shutdown).
    async fn flush(&self, _shape: &QueryShape) -> Result<()> {
        Ok(())
    }
}

/// A shared sink.
pub type SinkRef = Arc<dyn Sink>;

/// The identity of every row of `batch` in Arrow's row format (comparable bytes).
pub(crate) fn identity_rows(
    shape: &QueryShape,
    batch: &RecordBatch,
) -> Result<datafusion::arrow::row::Rows> {
    use datafusion::arrow::row::{RowConverter, SortField};
    let conv = RowConverter::new(
        shape
            .identity
            .iter()
            .map(|&i| SortField::new(batch.schema().field(i).data_type().clone()))
            .collect(),
    )?;
    let cols: Vec<_> = shape
        .identity
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    Ok(conv.convert_columns(&cols)?)
}

/// Keeps the last row of each identity (in row order).
pub fn last_per_identity(shape: &QueryShape, batch: &RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::UInt32Array;
    use datafusion::arrow::compute::take_record_batch;
    if shape.identity.is_empty() {
        return Ok(batch.clone());
    }
    let rows = identity_rows(shape, batch)?;
    let mut last: std::collections::HashMap<&[u8], u32> = std::collections::HashMap::new();
    for i in 0..batch.num_rows() {
        last.insert(rows.row(i).data(), i as u32);
    }
    if last.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    let mut keep: Vec<u32> = last.into_values().collect();
    keep.sort_unstable();
    Ok(take_record_batch(batch, &UInt32Array::from(keep))?)
}
