//! `edgeflow-stream`: the processor's operators and SQL over live streams.

pub mod accum;
pub mod checkpoint;
pub mod cluster;
pub mod engine;
pub mod error;
pub mod live;
pub mod operator;
pub mod plan;
pub mod query;
pub mod udf;
pub mod watermark;
pub mod window;

pub use error::{Error, Result};
