//! `edgeflow_queries`: the continuous queries as a table (pull queries, psql, Grafana).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use edgeflow_stream::engine::Engine;
use tokio::sync::Mutex;

/// `edgeflow_queries`: the running continuous queries as a table.
pub(super) struct QueriesTable {
    pub(super) engine: Arc<Mutex<Engine>>,
}

impl std::fmt::Debug for QueriesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueriesTable")
    }
}

fn queries_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("windowed", DataType::Boolean, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("rows_in", DataType::UInt64, false),
        Field::new("rows_out", DataType::UInt64, false),
        Field::new("late_rows", DataType::UInt64, false),
        Field::new("open_groups", DataType::UInt64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("sql", DataType::Utf8, false),
    ]))
}

#[async_trait]
impl TableProvider for QueriesTable {
    fn schema(&self) -> SchemaRef {
        queries_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let qs = self.engine.lock().await.queries();
        let batch = RecordBatch::try_new(
            queries_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    qs.iter().map(|q| q.name.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    qs.iter().map(|q| q.stream.as_str()),
                )),
                Arc::new(BooleanArray::from(
                    qs.iter().map(|q| q.windowed).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMillisecondArray::from(
                        qs.iter().map(|q| q.watermark).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(UInt64Array::from_iter_values(
                    qs.iter().map(|q| q.stats.rows_in),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    qs.iter().map(|q| q.stats.rows_out),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    qs.iter().map(|q| q.stats.late_rows),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    qs.iter().map(|q| q.stats.open_groups),
                )),
                Arc::new(StringArray::from_iter_values(qs.iter().map(|q| {
                    if q.error.is_some() {
                        "failed"
                    } else {
                        "running"
                    }
                }))),
                Arc::new(StringArray::from(
                    qs.iter().map(|q| q.error.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from_iter_values(
                    qs.iter().map(|q| q.sql.as_str()),
                )),
            ],
        )?;
        MemTable::try_new(queries_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
