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
    /// A partition's open batch could not be closed (the decoder builds columns of
    /// its own schema, so this is a bug): the source stops rather than skip it.
    #[error("cannot close the batch of `{topic}` partition {partition} ending before offset {next_offset}: {message}")]
    Batch {
        topic: String,
        partition: i32,
        next_offset: i64,
        message: String,
    },
    /// Building an Arrow batch failed.
    #[error("Arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
