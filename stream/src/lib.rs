//! edgeflow stream: partitioned Arrow/DataFusion operators over the ingested streams,
//! event time and watermarks, windows, live tables, SQL, the partition-assignment core and
//! checkpoints. Built by the stream-processor work; see `docs/architecture.md`.
