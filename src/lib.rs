//! The `edgeflow` CLI's library: the processor node (`edgeflow process`), the cluster's
//! control log (`edgeflow cluster`) and the simulated sensors (`edgeflow simulate`).

pub mod cluster;

pub mod processor;

pub mod simulate;
