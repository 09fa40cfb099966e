//! edgeflow sinks: stdout, Kafka, Parquet on object storage and PostgreSQL, each writing
//! idempotently by the output row's identity. Built by the stream-processor work.
