//! The edge crate's one error type.

use std::path::PathBuf;

/// Errors of the edge agent's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration could not be read or is invalid; the message names every bad key.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An I/O error on a file or directory of the agent's own.
    #[error("{context} ({path}): {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The disk log is full and its policy is `block`.
    #[error("disk log is full ({bytes} bytes used of {max_bytes}); waiting for Kafka to acknowledge records")]
    LogFull { bytes: u64, max_bytes: u64 },

    /// The disk log's files are damaged in a way that cannot be skipped safely.
    #[error("disk log in {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Result with the edge crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done and on which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
