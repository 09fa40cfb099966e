//! Live tables: a continuous query's recent results, or a stream's latest row per key,
//! kept in memory and queryable through DataFusion (pull queries).
//!
//! Rows with an identity (a continuous query's group keys and window start, or a
//! stream's key columns) *replace* earlier rows with the same identity: a window
//! re-emitted after a late row appears once, with its latest values; the latest-value
//! table holds one row per key. Rows are kept in arrival order up to `max_rows` live
//! rows; beyond that the oldest go first. Superseded rows are masked out and
//! compacted away once they outnumber the live ones.
//!
//! A pull query whose `WHERE` fixes every identity column by equality
//! (`sensor = 's-1'` on a latest-value table keyed by sensor) is a point lookup in the
//! identity index; one that fixes the first identity column (`sensor = 's-1'` on a
//! table keyed by sensor and field) looks up a second index, from the first column's
//! value to the identities of its live rows. Other queries scan the live rows.

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
use datafusion::common::ScalarValue;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
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
    /// Oldest first; ids increase from front to back.
    segments: VecDeque<Segment>,
    index: HashMap<Box<[u8]>, (u64, u32), RandomState>,
    /// Identities of more than one column: the first column's value (row format) →
    /// the identities of the live rows with that value, for lookups by it alone.
    by_first: Option<FirstIndex>,
    next_id: u64,
    live: usize,
    stored: usize,
    max_rows: usize,
}

/// A value or identity in row format.
type RowBytes = Box<[u8]>;

struct FirstIndex {
    /// The first identity column.
    column: usize,
    converter: RowConverter,
    keys: HashMap<RowBytes, Vec<RowBytes>, RandomState>,
}

impl FirstIndex {
    /// The first identity column of `batch` in row format.
    fn rows(&self, batch: &RecordBatch) -> Result<Rows> {
        Ok(self
            .converter
            .convert_columns(&[batch.column(self.column).clone()])?)
    }

    fn add(&mut self, first: &[u8], key: Box<[u8]>) {
        self.keys.entry(Box::from(first)).or_default().push(key);
    }

    fn remove(&mut self, first: &[u8], key: &[u8]) {
        if let Some(list) = self.keys.get_mut(first) {
            list.retain(|k| &**k != key);
            if list.is_empty() {
                self.keys.remove(first);
            }
        }
    }
}

impl Inner {
    /// The segment with id `sid`: ids increase from front to back, so a binary search.
    fn segment(&self, sid: u64) -> Option<&Segment> {
        let i = self.segments.binary_search_by_key(&sid, |s| s.id).ok()?;
        self.segments.get(i)
    }

    fn segment_mut(&mut self, sid: u64) -> Option<&mut Segment> {
        let i = self.segments.binary_search_by_key(&sid, |s| s.id).ok()?;
        self.segments.get_mut(i)
    }

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
        let field = |i: usize| SortField::new(schema.field(i).data_type().clone());
        let converter = if identity.is_empty() {
            None
        } else {
            Some(RowConverter::new(
                identity.iter().map(|&i| field(i)).collect(),
            )?)
        };
        let by_first = if identity.len() > 1 {
            Some(FirstIndex {
                column: identity[0],
                converter: RowConverter::new(vec![field(identity[0])])?,
                keys: HashMap::default(),
            })
        } else {
            None
        };
        Ok(Self {
            schema,
            inner: RwLock::new(Inner {
                converter,
                identity,
                segments: VecDeque::new(),
                index: HashMap::default(),
                by_first,
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
            let mut new_keys = Vec::new();
            for i in 0..n {
                let key: Box<[u8]> = Box::from(rows.row(i).data());
                let replaced = inner.index.insert(key, (id, i as u32));
                if replaced.is_none() {
                    new_keys.push(i);
                }
                if let Some((sid, r)) = replaced {
                    if sid == id {
                        seg.alive[r as usize] = false;
                        seg.alive_count -= 1;
                    } else if let Some(old) = inner.segment_mut(sid) {
                        if old.alive[r as usize] {
                            old.alive[r as usize] = false;
                            old.alive_count -= 1;
                            inner.live -= 1;
                        }
                    }
                }
            }
            if let (Some(fi), false) = (inner.by_first.as_mut(), new_keys.is_empty()) {
                let first = fi.rows(batch)?;
                for i in new_keys {
                    fi.add(first.row(i).data(), Box::from(rows.row(i).data()));
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
                let first = match &inner.by_first {
                    Some(fi) => Some(fi.rows(&old.batch)?),
                    None => None,
                };
                for (i, alive) in old.alive.iter().enumerate() {
                    if *alive {
                        inner.index.remove(rows.row(i).data());
                        if let (Some(fi), Some(first)) = (inner.by_first.as_mut(), &first) {
                            fi.remove(first.row(i).data(), rows.row(i).data());
                        }
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

    /// Removes the rows of the identities in `ids`, whose columns are the identity
    /// columns in order (a continuous query's retractions). Identities without a
    /// live row are passed over.
    pub fn retract(&self, ids: &RecordBatch) -> Result<()> {
        if ids.num_rows() == 0 {
            return Ok(());
        }
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        let Some(conv) = &inner.converter else {
            return Ok(());
        };
        let rows = conv.convert_columns(ids.columns())?;
        let firsts = match &inner.by_first {
            Some(fi) => Some(fi.converter.convert_columns(&[ids.column(0).clone()])?),
            None => None,
        };
        for i in 0..ids.num_rows() {
            let key = rows.row(i).data();
            let Some((sid, r)) = inner.index.remove(key) else {
                continue;
            };
            if let (Some(fi), Some(firsts)) = (inner.by_first.as_mut(), &firsts) {
                fi.remove(firsts.row(i).data(), key);
            }
            if let Some(seg) = inner.segment_mut(sid) {
                if seg.alive[r as usize] {
                    seg.alive[r as usize] = false;
                    seg.alive_count -= 1;
                    inner.live -= 1;
                }
            }
        }
        let emptied: usize = inner
            .segments
            .iter()
            .filter(|s| s.alive_count == 0)
            .map(|s| s.batch.num_rows())
            .sum();
        inner.stored -= emptied;
        inner.segments.retain(|s| s.alive_count > 0);
        if inner.stored > 2 * inner.live + 4096 {
            compact(inner, &self.schema)?;
        }
        Ok(())
    }

    /// The live rows the filters select through the identity index, or `None` when
    /// the index does not help: the filters must fix every identity column, or the
    /// first one, by an equality with a literal. Other filters are left to the caller
    /// (the rows returned are a superset of the answer).
    pub fn lookup(&self, filters: &[Expr]) -> Result<Option<Vec<RecordBatch>>> {
        let g = self.read();
        let Some(conv) = &g.converter else {
            return Ok(None);
        };
        let mut key: Vec<Option<ScalarValue>> = vec![None; g.identity.len()];
        for f in filters {
            if let Some((pos, v)) = identity_equality(&self.schema, &g.identity, f) {
                match &key[pos] {
                    // `k = 1 AND k = 2`: no row.
                    Some(other) if *other != v => return Ok(Some(Vec::new())),
                    _ => key[pos] = Some(v),
                }
            }
        }
        let row_of = |k: &[u8]| {
            g.index.get(k).and_then(|&(sid, r)| {
                g.segment(sid)
                    .filter(|s| s.alive[r as usize])
                    .map(|s| s.batch.slice(r as usize, 1))
            })
        };
        let to_arrays = |vals: &[&ScalarValue]| {
            vals.iter()
                .map(|v| v.to_array_of_size(1))
                .collect::<datafusion::error::Result<Vec<_>>>()
        };
        if key.iter().all(Option::is_some) {
            let vals: Vec<&ScalarValue> = key.iter().flatten().collect();
            let rows = conv.convert_columns(&to_arrays(&vals)?)?;
            return Ok(Some(row_of(rows.row(0).data()).into_iter().collect()));
        }
        match (&key[0], &g.by_first) {
            (Some(v), Some(fi)) => {
                let first = fi.converter.convert_columns(&to_arrays(&[v])?)?;
                Ok(Some(
                    fi.keys
                        .get(first.row(0).data())
                        .map(|keys| keys.iter().filter_map(|k| row_of(k)).collect())
                        .unwrap_or_default(),
                ))
            }
            _ => Ok(None),
        }
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

/// `column = literal` (either way round) on an identity column: the position of the
/// column among the identity's, and the literal.
fn identity_equality(
    schema: &SchemaRef,
    identity: &[usize],
    e: &Expr,
) -> Option<(usize, ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = e
    else {
        return None;
    };
    let (col, lit) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return None,
    };
    let field = schema.index_of(&col.name).ok()?;
    let pos = identity.iter().position(|&i| i == field)?;
    // The planner coerces literals to the column's type; anything else scans.
    (lit.data_type() == *schema.field(field).data_type() && !lit.is_null())
        .then(|| (pos, lit.clone()))
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
        if let Some(fi) = inner.by_first.as_mut() {
            fi.keys.clear();
            let first = fi.rows(&batch)?;
            for i in 0..batch.num_rows() {
                fi.add(first.row(i).data(), Box::from(rows.row(i).data()));
            }
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

    /// Equalities between an identity column and a literal are pushed into the scan
    /// (DataFusion still applies them after it): when they fix the whole identity, or
    /// its first column, the scan is a lookup in an index (see [`LiveTable::lookup`]).
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        let identity = self.read().identity.clone();
        Ok(filters
            .iter()
            .map(|f| match identity_equality(&self.schema, &identity, f) {
                Some(_) => TableProviderFilterPushDown::Inexact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let external = |e: crate::Error| datafusion::error::DataFusionError::External(Box::new(e));
        let batches = match self.lookup(filters).map_err(external)? {
            Some(rows) => rows,
            None => self.snapshot().map_err(external)?,
        };
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

    fn key_filters(k: &str, w: i64) -> Vec<Expr> {
        use datafusion::prelude::{col, lit};
        vec![col("w").eq(lit(w)), lit(k).eq(col("k"))]
    }

    #[test]
    fn equalities_on_the_whole_identity_are_a_point_lookup() {
        let t = LiveTable::new(schema(), vec![0, 1], 100).unwrap();
        t.insert(&batch(&[("a", 0, 1.0), ("a", 10, 2.0), ("b", 0, 3.0)]))
            .unwrap();
        t.insert(&batch(&[("a", 10, 4.0)])).unwrap();
        let found = t.lookup(&key_filters("a", 10)).unwrap().expect("a lookup");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].num_rows(), 1);
        let v = found[0]
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(v.value(0), 4.0, "the latest version of the row");
        assert_eq!(t.lookup(&key_filters("c", 10)).unwrap(), Some(Vec::new()));
        // The first identity column alone: its live rows.
        use datafusion::prelude::{col, lit};
        let by_k = t
            .lookup(&[col("k").eq(lit("a"))])
            .unwrap()
            .expect("a lookup");
        assert_eq!(by_k.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
        // Another column alone, or no equality: a scan.
        assert_eq!(t.lookup(&[col("w").eq(lit(10i64))]).unwrap(), None);
        assert_eq!(t.lookup(&[col("w").gt(lit(3i64))]).unwrap(), None);
        // After compactions (superseded rows outnumber live ones) and retention.
        let t = LiveTable::new(schema(), vec![0, 1], 4).unwrap();
        for i in 0..10_000i64 {
            t.insert(&batch(&[("a", i % 3, i as f64), ("b", i % 2, 0.0)]))
                .unwrap();
        }
        let by_k = t
            .lookup(&[col("k").eq(lit("a"))])
            .unwrap()
            .expect("a lookup");
        let mut got: Vec<f64> = by_k
            .iter()
            .flat_map(|b| {
                let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
                v.values().to_vec()
            })
            .collect();
        got.sort_by(f64::total_cmp);
        let mut want: Vec<f64> = rows(&t)
            .iter()
            .filter(|r| r.0 == "a")
            .map(|r| r.2)
            .collect();
        want.sort_by(f64::total_cmp);
        assert_eq!(got, want);
        assert!(!got.is_empty() && got.len() <= 3);
        let mut contradictory = key_filters("a", 10);
        contradictory.push(col("w").eq(lit(0i64)));
        assert_eq!(t.lookup(&contradictory).unwrap(), Some(Vec::new()));
    }

    #[tokio::test]
    async fn pull_queries_agree_with_and_without_the_lookup() {
        use datafusion::prelude::SessionContext;
        let t = Arc::new(LiveTable::new(schema(), vec![0, 1], 100).unwrap());
        t.insert(&batch(&[("a", 0, 1.0), ("a", 10, 2.0), ("b", 0, 3.0)]))
            .unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("t", t).unwrap();
        for (sql, want) in [
            ("SELECT v FROM t WHERE k = 'a' AND w = 10", Some(2.0)),
            (
                "SELECT v FROM t WHERE w = 10 AND k = 'a' AND v > 1",
                Some(2.0),
            ),
            ("SELECT v FROM t WHERE k = 'a' AND w = 10 AND v > 5", None),
            ("SELECT v FROM t WHERE k = 'b' AND w = 10", None),
            ("SELECT v FROM t WHERE k = 'b'", Some(3.0)),
        ] {
            let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            let got: Vec<f64> = b
                .iter()
                .flat_map(|b| {
                    let v = b.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
                    v.values().to_vec()
                })
                .collect();
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{sql}");
        }
    }

    proptest::proptest! {
        /// A point lookup finds exactly what filtering every live row finds.
        #[test]
        fn lookups_match_a_scan(
            inserts in proptest::collection::vec(
                proptest::collection::vec((0u8..4, 0i64..4, -10.0f64..10.0), 1..6),
                1..12,
            ),
            max_rows in 1usize..20,
        ) {
            let t = LiveTable::new(schema(), vec![0, 1], max_rows).unwrap();
            let names = ["a", "b", "c", "d"];
            for rows in &inserts {
                let rows: Vec<(&str, i64, f64)> =
                    rows.iter().map(|r| (names[r.0 as usize], r.1, r.2)).collect();
                t.insert(&batch(&rows)).unwrap();
            }
            let all = rows(&t);
            for k in names {
                for w in 0..4 {
                    let want: Vec<f64> =
                        all.iter().filter(|r| r.0 == k && r.1 == w).map(|r| r.2).collect();
                    let got: Vec<f64> = t
                        .lookup(&key_filters(k, w))
                        .unwrap()
                        .expect("a lookup")
                        .iter()
                        .flat_map(|b| {
                            let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
                            v.values().to_vec()
                        })
                        .collect();
                    proptest::prop_assert_eq!(got, want, "{}, {}", k, w);
                }
                use datafusion::prelude::{col, lit};
                let mut want: Vec<(i64, f64)> =
                    all.iter().filter(|r| r.0 == k).map(|r| (r.1, r.2)).collect();
                let mut got: Vec<(i64, f64)> = t
                    .lookup(&[col("k").eq(lit(k))])
                    .unwrap()
                    .expect("a lookup by the first column")
                    .iter()
                    .flat_map(|b| {
                        let w = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                        let v = b.column(2).as_any().downcast_ref::<Float64Array>().unwrap();
                        w.values().iter().copied().zip(v.values().iter().copied()).collect::<Vec<_>>()
                    })
                    .collect();
                want.sort_by(|a, b| a.partial_cmp(b).unwrap());
                got.sort_by(|a, b| a.partial_cmp(b).unwrap());
                proptest::prop_assert_eq!(got, want, "{}", k);
            }
        }
    }
}
