//! edgeflow ingest: consumes explicitly assigned Kafka partitions (never consumer-group
//! `subscribe`, never auto-commit) and turns the edge wire format into Arrow record batches.
//!
//! The wire format it reads is documented in `docs/wire-format.md` and implemented by
//! `edgeflow_edge::wire`. The consumer itself is built by the stream-processor work.
