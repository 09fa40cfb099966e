//! Live tables: a continuous query's recent results, or a stream's latest row per key,
//! kept in memory and queryable through DataFusion (pull queries).
//!
//! Rows with an identity (a continuous query's group keys and window start, or a
//! stream's key columns) *replace* earlier rows with the same identity: a window
//! re-emitted after a late row appears once, with its latest values; the latest-value
//! table holds one row per key. Rows are kept in arrival order up to `max_rows` live
//! rows; beyond that the oldest go first. Superseded rows are masked out and
//! compacted away once they outnumber the live ones.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, RwLock};

use ahash::RandomState;
use async_trait::async_trait;
use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::Result;

struct Segment {
    id: u64,
    batch: RecordBatch,
    alive: Vec<bool>,
    alive_count: usize,
}

struct Inner {
    converter: Option<RowConverter>,
    identity: Vec<usize>,
    segments: VecDeque<Segment>,
    index: HashMap<Box<[u8]>, (u64, u32), RandomState>,
    next_id: u64,
    live: usize,
    stored: usize,
    max_rows: usize,
}

impl Inner {
    /// The identity of every row of `batch` in row format (`None`: no identity).
    fn identity_rows(&self, batch: &RecordBatch) -> Result<Option<Rows>> {
        let Some(conv) = &self.converter else {
            return Ok(None);
        };
        let cols: Vec<_> = self
            .identity
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        Ok(Some(conv.convert_columns(&cols)?))
    }
}

/// A live table.
pub struct LiveTable {
    schema: SchemaRef,
    inner: RwLock<Inner>,
}

impl fmt::Debug for LiveTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveTable")
            .field("schema", &self.schema)
            .finish()
    }
}

impl LiveTable {
    /// `identity`: columns whose values identify a row (empty: rows are only
    /// appended); `max_rows`: live rows kept.
    pub fn new(schema: SchemaRef, identity: Vec<usize>, max_rows: usize) -> Result<Self> {
        let converter = if identity.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                identity
                    .iter()
                    .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                    .collect(),
            )?)
        };
        Ok(Self {
            schema,
            inner: RwLock::new(Inner {
                converter,
                identity,
                segments: VecDeque::new(),
                index: HashMap::default(),
                next_id: 0,
                live: 0,
                stored: 0,
                max_rows: max_rows.max(1),
            }),
        })
    }

    /// The table's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.read().live
    }

    /// Whether there are no live rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds rows (replacing rows with the same identity).
    pub fn insert(&self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        let id = inner.next_id;
        inner.next_id += 1;
        let n = batch.num_rows();
        let mut seg = Segment {
            id,
            batch: batch.clone(),
            alive: vec![true; n],
            alive_count: n,
        };
        if let Some(rows) = inner.identity_rows(batch)? {
            for i in 0..n {
                let key: Box<[u8]> = Box::from(rows.row(i).data());
                if let Some((sid, r)) = inner.index.insert(key, (id, i as u32)) {
                    if sid == id {
                        seg.alive[r as usize] = false;
                        seg.alive_count -= 1;
                    } else if let Some(old) = inner.segments.iter_mut().find(|s| s.id == sid) {
                        if old.alive[r as usize] {
                            old.alive[r as usize] = false;
                            old.alive_count -= 1;
                            inner.live -= 1;
                        }
                    }
                }
            }
        }
        inner.live += seg.alive_count;
        inner.stored += n;
        inner.segments.push_back(seg);
        // Retention: drop the oldest segments beyond max_rows.
        while inner.live > inner.max_rows && inner.segments.len() > 1 {
            let Some(old) = inner.segments.pop_front() else {
                break;
            };
            inner.live -= old.alive_count;
            inner.stored -= old.batch.num_rows();
            if let Some(rows) = inner.identity_rows(&old.batch)? {
                for (i, alive) in old.alive.iter().enumerate() {
                    if *alive {
                        inner.index.remove(rows.row(i).data());
                    }
                }
            }
        }
        inner.segments.retain(|s| s.alive_count > 0);
        if inner.stored > 2 * inner.live + 4096 {
            compact(inner, &self.schema)?;
        }
        Ok(())
    }

    /// The live rows, oldest first.
    pub fn snapshot(&self) -> Result<Vec<RecordBatch>> {
        let g = self.read();
        let mut out = Vec::with_capacity(g.segments.len());
        for s in &g.segments {
            if s.alive_count == s.batch.num_rows() {
                out.push(s.batch.clone());
            } else if s.alive_count > 0 {
                let mask = BooleanArray::from(s.alive.clone());
                out.push(filter_record_batch(&s.batch, &mask)?);
            }
        }
        Ok(out)
    }
}

/// Rewrites the table as one segment of live rows.
fn compact(inner: &mut Inner, schema: &SchemaRef) -> Result<()> {
    let mut live = Vec::new();
    for s in &inner.segments {
        let mask = BooleanArray::from(s.alive.clone());
        live.push(filter_record_batch(&s.batch, &mask)?);
    }
    let batch = concat_batches(schema, &live)?;
    let id = inner.next_id;
    inner.next_id += 1;
    inner.index.clear();
    if let Some(rows) = inner.identity_rows(&batch)? {
        for i in 0..batch.num_rows() {
            inner
                .index
                .insert(Box::from(rows.row(i).data()), (id, i as u32));
        }
    }
    let n = batch.num_rows();
    inner.segments.clear();
    inner.segments.push_back(Segment {
        id,
        batch,
        alive: vec![true; n],
        alive_count: n,
    });
    inner.live = n;
    inner.stored = n;
    Ok(())
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
        let batches = self
            .snapshot()
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let mem = MemTable::try_new(self.schema.clone(), vec![batches])?;
        mem.scan(state, projection, filters, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("w", DataType::Int64, false),
            Field::new("v", DataType::Float64, true),
        ]))
    }

    fn batch(rows: &[(&str, i64, f64)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn rows(t: &LiveTable) -> Vec<(String, i64, f64)> {
        let mut out = Vec::new();
        for b in t.snapshot().unwrap() {
            let k = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let w = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
            for i in 0..b.num_rows() {
                out.push((k.value(i).to_string(), w.value(i), v.value(i)));
            }
        }
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    }

    #[test]
    fn a_row_with_the_same_identity_replaces_the_old_one() {
        let t = LiveTable::new(schema(), vec![0, 1], 100).unwrap();
        t.insert(&batch(&[("a", 0, 1.0), ("b", 0, 2.0)])).unwrap();
        t.insert(&batch(&[("a", 0, 5.0), ("a", 10, 6.0), ("a", 10, 7.0)]))
            .unwrap();
        assert_eq!(
            rows(&t),
            vec![
                ("a".into(), 0, 5.0),
                ("a".into(), 10, 7.0),
                ("b".into(), 0, 2.0)
            ]
        );
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn the_oldest_rows_go_beyond_max_rows_and_compaction_keeps_content() {
        let t = LiveTable::new(schema(), vec![0], 3).unwrap();
        for i in 0..10_000 {
            t.insert(&batch(&[("a", i, i as f64), ("b", i, 0.0)]))
                .unwrap();
        }
        assert_eq!(
            rows(&t),
            vec![("a".into(), 9_999, 9_999.0), ("b".into(), 9_999, 0.0)]
        );
        let t = LiveTable::new(schema(), vec![], 4).unwrap();
        for i in 0..5 {
            t.insert(&batch(&[("x", i, 0.0), ("y", i, 0.0)])).unwrap();
        }
        assert_eq!(t.len(), 4);
    }
}
