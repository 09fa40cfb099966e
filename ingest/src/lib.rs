//! `edgeflow-ingest`: Kafka partitions into Arrow `RecordBatch`es.
//!
//! A processor owns an explicit set of (topic, partition, offset) assignments. The
//! [`source::KafkaSource`] consumes exactly those with `assign` (never a consumer-group
//! subscription, never auto-commit: offsets belong to the processor's checkpoints) and
//! hands each partition's records to a [`decode::BatchDecoder`], which turns them into
//! RecordBatches of the stream's [`format::Format`] schema. A batch is closed when it
//! holds `batch_size` rows or its first row has waited `linger`.
//!
//! Records that do not decode are not dropped: each becomes a [`decode::DeadLetter`]
//! with the reason, the partition and offset, and the original bytes.
//!
//! The decoder is pure (bytes in, batches and dead letters out); the source is the thin
//! I/O shell around it.

pub mod decode;
pub mod error;
pub mod format;
pub mod resume;
pub mod source;

pub use error::{Error, Result};
