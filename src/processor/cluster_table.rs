//! `edgeflow_cluster`: the cluster as this node's fold of the control log sees it, a row
//! per partition (pull queries, psql, Grafana). Empty on a node without `[cluster]`.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    BooleanArray, Float64Array, Int32Array, RecordBatch, StringArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::watch;

use crate::cluster::View;

/// `edgeflow_cluster`: each partition's holder, generation, state, target and load.
pub(super) struct ClusterTable {
    /// This node's id.
    pub(super) node: String,
    /// The member's fold, once the node has joined.
    pub(super) view: Arc<OnceLock<watch::Receiver<View>>>,
}

impl std::fmt::Debug for ClusterTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTable")
    }
}

fn cluster_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("holder", DataType::Utf8, true),
        Field::new("generation", DataType::UInt64, true),
        Field::new("state", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, true),
        Field::new("load", DataType::Float64, false),
        Field::new("here", DataType::Boolean, false),
    ]))
}

#[async_trait]
impl TableProvider for ClusterTable {
    fn schema(&self) -> SchemaRef {
        cluster_schema()
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
        let view = self.view.get().map(|v| v.borrow().clone());
        let (mut topic, mut partition, mut holder, mut generation) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut st, mut target, mut load, mut here) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Some(v) = &view {
            let loads = v.state.loads();
            for p in v.state.partitions() {
                let h = v.state.holdings().get(p);
                topic.push(p.topic.clone());
                partition.push(p.partition);
                holder.push(h.map(|h| h.member.clone()));
                generation.push(h.map(|h| h.generation));
                st.push(match h {
                    None => "free",
                    Some(h) if h.releasing => "releasing",
                    Some(_) => "owned",
                });
                target.push(v.state.target().get(p).cloned());
                load.push(loads.get(p).map_or(0.0, |l| l.load));
                here.push(h.is_some_and(|h| h.member == self.node));
            }
        }
        let batch = RecordBatch::try_new(
            cluster_schema(),
            vec![
                Arc::new(StringArray::from(topic)),
                Arc::new(Int32Array::from(partition)),
                Arc::new(StringArray::from(holder)),
                Arc::new(UInt64Array::from(generation)),
                Arc::new(StringArray::from(st)),
                Arc::new(StringArray::from(target)),
                Arc::new(Float64Array::from(load)),
                Arc::new(BooleanArray::from(here)),
            ],
        )?;
        MemTable::try_new(cluster_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}
