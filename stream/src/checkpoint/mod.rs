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
pub use protocol::{gc_plan, next_epoch, recovery_order, Listing};
pub use store::{CheckpointStore, Restored};
