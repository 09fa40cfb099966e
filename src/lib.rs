//! The `edgeflow` CLI's library: the processor node (`edgeflow process`) and the
//! cluster's control log (`edgeflow cluster`).

pub mod cluster;

pub mod processor;
