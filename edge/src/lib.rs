//! `edgeflow-edge`: the gateway agent.
//!
//! Sensors publish over MQTT; the agent decodes each payload into readings ([`decode`]),
//! pre-aggregates them into per-(sensor, field) tumbling windows ([`window`]), keeps the
//! results on disk ([`disklog`]) until Kafka has acknowledged them, and forwards them in
//! the edge wire format ([`wire`]).
//!
//! Deciding logic (decoding, windows, the disk-log ledger) is pure and property-tested;
//! the I/O shells ([`mqtt`], [`forward`], [`agent`]) only move bytes.

pub mod agent;
pub mod config;
pub mod crash;
pub mod decode;
pub mod disklog;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod mqtt;
pub mod quarantine;
pub mod record;
pub mod redelivery;
pub mod topic;
pub mod window;

/// The wire format the agent writes (its own crate, shared with the processors).
pub use edgeflow_wire as wire;
/// Config value types (shared with the processors).
pub use edgeflow_wire::units;

pub use error::{Error, Result};
