//! Checkpoints: what a processor writes so that it restarts where it stopped.
//!
//! A checkpoint is an **epoch**: a set of state files (operator state as Arrow IPC,
//! one file per owner: a query's partition, a query's merge stage, a sink's buffer)
//! plus the source offsets the state reflects. The epoch becomes visible with one
//! atomic write of its **manifest**, which lists every file with its length and
//! CRC-32, and every partition's next offset. Until then it does not exist: a crash
//! while its files are written leaves the previous epoch in force.
//!
//! Layout under the store's root (a directory, `file://`, `s3://...`):
//!
//! ```text
//! epochs/<epoch, 20 digits>/<file>     state files, written first
//! manifests/<epoch, 20 digits>.json    the manifest, written last, atomically
//! ```
//!
//! Restoring takes the newest manifest whose own checksum and whose files' lengths and
//! checksums all verify; a corrupt or truncated epoch is skipped with a clear log line
//! and counted, and the one before it is used. Garbage collection keeps the newest
//! `keep` complete epochs and removes older ones, and the files of epochs that never
//! got a manifest once a newer epoch is complete.
//!
//! [`manifest`] and [`protocol`] decide (pure, property-tested); [`store`] moves the
//! bytes (object storage through `object_store`); [`window_state`] encodes the window
//! operators' state as Arrow IPC.

pub mod manifest;
pub mod protocol;
pub mod store;
pub mod window_state;

pub use manifest::{Manifest, SourceOffset, StateFile};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

/// Batches as one Arrow IPC stream (a table's rows in a checkpoint).
pub fn ipc_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> crate::Result<Vec<u8>> {
    let mut w = StreamWriter::try_new(Vec::new(), schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(w.into_inner()?)
}

/// The batches of an Arrow IPC stream, checked against the schema they must have.
pub fn ipc_batches(bytes: &[u8], schema: &SchemaRef) -> crate::Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(bytes, None)?;
    if reader.schema().fields() != schema.fields() {
        return Err(crate::Error::Checkpoint(
            "rows of another schema than the table's".into(),
        ));
    }
    let mut out = Vec::new();
    for b in reader {
        out.push(RecordBatch::try_new(schema.clone(), b?.columns().to_vec())?);
    }
    Ok(out)
}
pub use protocol::{gc_plan, latest_state_of, next_epoch, recovery_order, Listing};
pub use store::{CheckpointStore, Restored};
