//! The Kafka sink: one record per row. Key: the row's identity as a JSON array
//! (`["t-17","2025-11-24T16:00:00Z"]`), so one identity always lands in one
//! partition and a compacted topic keeps its latest version; value: the row as a JSON
//! object; header `edgeflow-query`: the query's name. The producer is idempotent with
//! `acks=all`; a write returns once every record is acknowledged.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use edgeflow_wire::kafka::producer_config;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::json::rows_as_json;
use crate::{QueryShape, Result, Sink};

/// Header naming the query a record came from.
pub const HEADER_QUERY: &str = "edgeflow-query";

/// Produces rows to a Kafka topic.
pub struct KafkaSink {
    name: String,
    topic: String,
    producer: FutureProducer,
}

impl KafkaSink {
    /// `properties`: extra librdkafka settings (security and the like).
    pub fn new(
        name: &str,
        brokers: &str,
        topic: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Self> {
        // The delivery guarantee comes after the user's properties: not theirs to change.
        let c = producer_config(
            brokers,
            properties,
            &[("compression.type", "zstd"), ("linger.ms", "5")],
        );
        Ok(Self {
            name: name.to_string(),
            topic: topic.to_string(),
            producer: c.create()?,
        })
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, _shape: &QueryShape) -> Result<()> {
        Ok(())
    }

    async fn write(&self, shape: &QueryShape, batch: &RecordBatch) -> Result<()> {
        let rows = rows_as_json(batch)?;
        let names = shape.identity_names();
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = rows
            .iter()
            .map(|row| {
                let key: Vec<&serde_json::Value> = names
                    .iter()
                    .map(|n| row.get(*n).unwrap_or(&serde_json::Value::Null))
                    .collect();
                (
                    serde_json::to_vec(&key).unwrap_or_default(),
                    serde_json::to_vec(row).unwrap_or_default(),
                )
            })
            .collect();
        let mut pending = Vec::with_capacity(encoded.len());
        for (key, value) in &encoded {
            let headers = OwnedHeaders::new().insert(Header {
                key: HEADER_QUERY,
                value: Some(shape.query.as_bytes()),
            });
            let record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(value)
                .headers(headers);
            pending.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for p in pending {
            p.await.map_err(|(e, _)| e)?;
        }
        Ok(())
    }
}
