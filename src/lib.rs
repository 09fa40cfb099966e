//! The `edgeflow` CLI's library: the processor node (`edgeflow process`).

pub mod processor;
