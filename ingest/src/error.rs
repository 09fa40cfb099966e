//! The crate's error type.

/// Errors of the ingest crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stream declaration is not usable (names the key and what is allowed).
    #[error("invalid stream declaration: {0}")]
    Config(String),
    /// The Kafka client failed.
    #[error("Kafka: {0}; is the broker up? check `kafka.brokers`")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Building an Arrow batch failed.
    #[error("Arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
