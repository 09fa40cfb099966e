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
//!
//! A row that stops existing (its window no longer passes `HAVING` after a late row,
//! or its session merged into an earlier one) is **retracted** by identity
//! ([`Sink::retract`]): PostgreSQL deletes it, Kafka gets a tombstone (the identity's
//! key with no value), the Parquet sink drops it from its bucket while it holds the
//! bucket (a retraction for a bucket already released is logged, and its
//! file keeps the row), stdout prints the identity with `"_retracted":true`.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use object_store::path::Path;
use object_store::ObjectStore;

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
    /// A PostgreSQL failure; `code` is the server's SQLSTATE when the server answered.
    #[error("PostgreSQL: {message}")]
    Postgres {
        message: String,
        code: Option<String>,
    },
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
            Some(db) => Error::Postgres {
                message: match db.detail() {
                    Some(d) => format!("{} ({d})", db.message()),
                    None => db.message().to_string(),
                },
                code: Some(db.code().code().to_string()),
            },
            // A value the client cannot convert to the column's type fails the same
            // way every time: give it a code of its class (datatype mismatch).
            None if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<tokio_postgres::types::WrongType>()) =>
            {
                Error::Postgres {
                    message: e.to_string(),
                    code: Some("42804".into()),
                }
            }
            None => Error::Postgres {
                message: e.to_string(),
                code: None,
            },
        }
    }
}

impl Error {
    /// A PostgreSQL error the server did not send (connecting, a closed connection).
    pub(crate) fn postgres(message: String) -> Self {
        Error::Postgres {
            message,
            code: None,
        }
    }

    /// Whether writing again later may succeed: the failure was in reaching the
    /// destination (network, a restarting server, a busy broker), not in what was
    /// written. A write that failed for a reason that is not retryable (a table whose
    /// columns do not fit the query, a record too large for the topic, no permission)
    /// fails the same way every time: the caller stops the query with the error
    /// instead of retrying for ever.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Postgres { code: None, .. } | Error::Io(_) => true,
            Error::Postgres {
                code: Some(code), ..
            } => postgres_retryable(code),
            Error::Kafka(e) => kafka_retryable(e),
            Error::ObjectStore(e) => object_store_retryable(e),
            Error::Config(_) | Error::Arrow(_) | Error::Parquet(_) => false,
        }
    }
}

/// SQLSTATE classes worth another try: connection exceptions (08), transaction
/// rollbacks such as serialization failures and deadlocks (40), insufficient resources
/// such as a full disk (53), operator intervention such as a server shutting down
/// (57), system errors (58). Everything else (syntax or undefined objects 42, data
/// exceptions 22, constraint violations 23, ...) says something about the statement.
pub fn postgres_retryable(sqlstate: &str) -> bool {
    matches!(
        sqlstate.get(..2),
        Some("08") | Some("40") | Some("53") | Some("57") | Some("58")
    )
}

/// Kafka failures that writing again cannot fix: the record itself is refused, or
/// the client may not write to the topic. The rest (timeouts, leaders moving, a broker
/// down, a full queue) are transient.
pub fn kafka_retryable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};
    let Some(code) = e.rdkafka_error_code() else {
        return !matches!(
            e,
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)
        );
    };
    !matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::MessageBatchTooLarge
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::UnsupportedForMessageFormat
            | C::UnsupportedVersion
            | C::InvalidArgument
            | C::Fatal
    )
}

fn object_store_retryable(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::InvalidPath { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
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

    /// Deletes the rows of identities that no longer exist (a window that stopped
    /// passing the query's `HAVING`, sessions merged into one): `ids` has a column per
    /// identity column, in the order of [`QueryShape::identity`]. It comes before the
    /// rows of the same step; an identity without a row is passed over.
    async fn retract(&self, shape: &QueryShape, ids: &RecordBatch) -> Result<()>;

    /// The query's watermark reached `watermark_ms`: its windows ending more than the
    /// allowed lateness before it are final.
    async fn watermark(&self, _shape: &QueryShape, _watermark_ms: i64) -> Result<()> {
        Ok(())
    }

    /// Makes everything a query wrote so far durable (on shutdown).
    async fn flush(&self, _shape: &QueryShape) -> Result<()> {
        Ok(())
    }

    /// What the sink holds for a query that is not written yet, as bytes for a
    /// checkpoint (`None` when it holds nothing between writes: its writes are the
    /// state). Taken between batches.
    async fn snapshot(&self, _shape: &QueryShape) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Takes back what [`Sink::snapshot`] returned, before the query writes anything.
    async fn restore(&self, shape: &QueryShape, _state: &[u8]) -> Result<()> {
        Err(Error::Config(format!(
            "sink `{}` keeps no state for query `{}`, yet a checkpoint holds some",
            self.name(),
            shape.query
        )))
    }
}

/// A shared sink.
pub type SinkRef = Arc<dyn Sink>;

/// Opens an object store by URL: `file:///dir`, a plain directory path, `s3://bucket/prefix`
/// (credentials from the usual `AWS_*` environment variables), `memory://`. The Parquet
/// sink writes there, and the processor keeps its checkpoints there.
pub fn open_store(location: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let url = if location.contains("://") {
        url::Url::parse(location)
            .map_err(|e| Error::Config(format!("`{location}` is not a URL: {e}")))?
    } else {
        std::fs::create_dir_all(location)?;
        let abs = std::fs::canonicalize(location)?;
        url::Url::from_directory_path(&abs)
            .map_err(|_| Error::Config(format!("`{location}` is not a usable directory")))?
    };
    if url.scheme() == "file" {
        if let Ok(p) = url.to_file_path() {
            std::fs::create_dir_all(p)?;
        }
    }
    let opts = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v));
    let (store, path) = object_store::parse_url_opts(&url, opts)?;
    Ok((Arc::from(store), path))
}

/// The identity of every row of `batch` in Arrow's row format (comparable bytes).
pub(crate) fn identity_rows(
    shape: &QueryShape,
    batch: &RecordBatch,
) -> Result<datafusion::arrow::row::Rows> {
    let cols: Vec<_> = shape
        .identity
        .iter()
        .map(|&i| batch.column(i).clone())
        .collect();
    rows_of(&cols)
}

/// Rows of `cols` in Arrow's row format: the same values of the same types give the
/// same bytes, whichever batch they come from.
pub(crate) fn rows_of(
    cols: &[datafusion::arrow::array::ArrayRef],
) -> Result<datafusion::arrow::row::Rows> {
    use datafusion::arrow::row::{RowConverter, SortField};
    let conv = RowConverter::new(
        cols.iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    Ok(conv.convert_columns(cols)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    #[test]
    fn postgres_errors_about_the_statement_are_not_retried() {
        // undefined column, datatype mismatch, no unique constraint for ON CONFLICT,
        // a value out of range, a NOT NULL violation
        for code in ["42703", "42804", "42P10", "22003", "23502"] {
            assert!(!postgres_retryable(code), "{code}");
        }
        // connection failure, serialization failure, deadlock, disk full,
        // admin shutdown, cannot connect now
        for code in ["08006", "40001", "40P01", "53100", "57P01", "57P03"] {
            assert!(postgres_retryable(code), "{code}");
        }
        let lost = Error::postgres("connection closed".into());
        assert!(
            lost.is_retryable(),
            "no SQLSTATE: the server was not reached"
        );
    }

    #[test]
    fn kafka_errors_about_the_record_or_permissions_are_not_retried() {
        let produce = |c| Error::Kafka(KafkaError::MessageProduction(c));
        for c in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidTopic,
        ] {
            assert!(!produce(c).is_retryable(), "{c:?}");
        }
        for c in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert!(produce(c).is_retryable(), "{c:?}");
        }
    }

    #[test]
    fn data_and_configuration_errors_are_not_retried() {
        assert!(!Error::Config("bad".into()).is_retryable());
        let arrow = datafusion::arrow::error::ArrowError::SchemaError("x".into());
        assert!(!Error::Arrow(arrow).is_retryable());
        let io = std::io::Error::other("disk");
        assert!(Error::Io(io).is_retryable());
    }
}
