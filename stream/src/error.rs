//! The crate's error type.

use datafusion::error::DataFusionError;

/// Errors of the stream crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's SQL is not valid or not supported as asked; the message says where
    /// and what to write instead.
    #[error("{0}")]
    Sql(String),
    /// A configuration problem (names the key and what is allowed).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A name (query, stream, table) that does not exist or already exists.
    #[error("{0}")]
    Name(String),
    /// DataFusion failed while planning or executing.
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// Arrow failed building a batch.
    #[error("Arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A checkpoint could not be written or read as asked.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The checkpoint store failed (object storage).
    #[error("checkpoint store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The ingest layer failed.
    #[error(transparent)]
    Ingest(#[from] edgeflow_ingest::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
