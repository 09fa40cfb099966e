//! The Kafka sink: one record per row. Key: the row's identity as a JSON array
//! (`["t-17","2025-11-24T16:00:00Z"]`), so one identity always lands in one
//! partition and a compacted topic keeps its latest version; value: the row as a JSON
//! object; header `edgeflow-query`: the query's name. A retracted identity is a
//! tombstone: its key with no value (a compacted topic then forgets the identity).
//! The producer is idempotent with `acks=all`; a write returns once every record is
//! acknowledged.

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

    async fn retract(&self, shape: &QueryShape, ids: &RecordBatch) -> Result<()> {
        // `ids` has the identity columns under their own names: the same key.
        let names = shape.identity_names();
        let records = rows_as_json(ids)?
            .iter()
            .map(|row| (identity_key(&names, row), None))
            .collect();
        self.send(shape, records).await
    }

    async fn write(&self, shape: &QueryShape, batch: &RecordBatch) -> Result<()> {
        let names = shape.identity_names();
        let records = rows_as_json(batch)?
            .iter()
            .map(|row| {
                (
                    identity_key(&names, row),
                    Some(serde_json::to_vec(row).unwrap_or_default()),
                )
            })
            .collect();
        self.send(shape, records).await
    }
}

/// A row's key: its identity columns' values as a JSON array.
fn identity_key(names: &[&str], row: &serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    let key: Vec<&serde_json::Value> = names
        .iter()
        .map(|n| row.get(*n).unwrap_or(&serde_json::Value::Null))
        .collect();
    serde_json::to_vec(&key).unwrap_or_default()
}

impl KafkaSink {
    /// Produces (key, value) records (no value: a tombstone) and waits for every
    /// acknowledgement.
    async fn send(
        &self,
        shape: &QueryShape,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<()> {
        let mut pending = Vec::with_capacity(records.len());
        for (key, value) in &records {
            let headers = OwnedHeaders::new().insert(Header {
                key: HEADER_QUERY,
                value: Some(shape.query.as_bytes()),
            });
            let mut record = FutureRecord::to(&self.topic).key(key).headers(headers);
            if let Some(v) = value {
                record = record.payload(v);
            }
            pending.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for p in pending {
            p.await.map_err(|(e, _)| e)?;
        }
        Ok(())
    }
}
