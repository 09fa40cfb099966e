//! The Parquet sink: a windowed query's rows as Parquet files on object storage.
//!
//! Layout: `<url>/<query>/date=YYYY-MM-DD/<HHMMSS>-part-<k>.parquet`, where the time
//! is the start of a *bucket* of `roll_interval` (windows are assigned to the bucket
//! containing their start). A bucket is written once it is final: when the watermark
//! has passed its end plus the window length plus the allowed lateness, so every
//! window in it has been emitted and can no longer change. Its rows (the last version
//! of each identity) are sorted by identity and cut into parts of at most
//! `max_rows_per_file` rows. The same input therefore always gives the same files
//! under the same names: a replay overwrites them with identical content, and an
//! object store's `put` replaces a file atomically.
//!
//! Rows for a bucket already written (a session outlasting the bucket's grace period)
//! rewrite it while it is still held (one more roll interval); later than that they go
//! to a file named after the rows' identities, `...-late-<digest>.parquet`, so a replay
//! overwrites that too. Open buckets live in memory until they are final; `flush`
//! (on shutdown) writes them as they are, and a later complete write replaces them.
//!
//! A retracted identity (see the crate docs) leaves its bucket while the bucket is held:
//! an open bucket is written without it, a written one is written again without it (and
//! parts the earlier write had beyond the new last part are deleted). Once a bucket is
//! released its files are final: a retraction for it is logged and the files keep the
//! row.
//!
//! The buckets held (open, and written but still held) are the sink's state in a
//! checkpoint: an Arrow IPC stream of the query's schema with one batch per bucket,
//! and the buckets' starts and flags as JSON in the schema's metadata
//! (`edgeflow.parquet_buckets`).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{
    cast, concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch, SortColumn,
};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::arrow::temporal_conversions::timestamp_ms_to_datetime;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::Mutex;

use crate::{identity_rows, last_per_identity, open_store, Error, QueryShape, Result, Sink};

/// The schema metadata key listing the buckets of a Parquet sink's state.
const STATE_KEY: &str = "edgeflow.parquet_buckets";

/// A held bucket in a state: its start and flags (its rows are the matching batch).
#[derive(serde::Serialize, serde::Deserialize)]
struct BucketState {
    start: i64,
    committed: bool,
    dirty: bool,
}

#[derive(Default)]
struct Bucket {
    batches: Vec<RecordBatch>,
    /// Written at least once.
    committed: bool,
    /// Rows arrived since the last write.
    dirty: bool,
}

/// Writes windowed results as Parquet.
pub struct ParquetSink {
    name: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    roll_ms: i64,
    max_rows: usize,
    buckets: Mutex<HashMap<String, BTreeMap<i64, Bucket>>>,
}

impl ParquetSink {
    pub fn new(name: &str, location: &str, roll_ms: i64, max_rows_per_file: usize) -> Result<Self> {
        if roll_ms <= 0 {
            return Err(Error::Config(format!(
                "sink `{name}`: roll_interval must be positive"
            )));
        }
        let (store, prefix) = open_store(location)?;
        Ok(Self {
            name: name.to_string(),
            store,
            prefix,
            roll_ms,
            max_rows: max_rows_per_file.max(1),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn bucket_path(&self, query: &str, bucket: i64, suffix: &str) -> Path {
        let (date, hms) = civil(bucket);
        let mut p = self.prefix.clone();
        for part in [
            query.to_string(),
            format!("date={date}"),
            format!("{hms}-{suffix}.parquet"),
        ] {
            p = p.clone().join(part);
        }
        p
    }

    async fn write_files(
        &self,
        shape: &QueryShape,
        bucket: i64,
        batches: &[RecordBatch],
        late: bool,
    ) -> Result<usize> {
        let all = concat_batches(&shape.schema, batches)?;
        let rows = sorted_unique(shape, &all)?;
        let suffix_base = if late {
            format!("late-{:016x}", digest(shape, &rows)?)
        } else {
            "part".to_string()
        };
        let mut k = 0;
        let mut start = 0;
        while start < rows.num_rows() || (start == 0 && rows.num_rows() == 0) {
            let n = self.max_rows.min(rows.num_rows() - start);
            let part = rows.slice(start, n);
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut w = ArrowWriter::try_new(Vec::new(), shape.schema.clone(), Some(props))?;
            w.write(&part)?;
            let bytes = w.into_inner()?;
            let path = self.bucket_path(&shape.query, bucket, &format!("{suffix_base}-{k}"));
            self.store.put(&path, PutPayload::from(bytes)).await?;
            k += 1;
            start += n;
            if n == 0 {
                break;
            }
        }
        if !late {
            // A rewrite with fewer rows (after retractions) has fewer parts: the parts
            // of the earlier write past them go.
            for j in k.. {
                let path = self.bucket_path(&shape.query, bucket, &format!("{suffix_base}-{j}"));
                match self.store.head(&path).await {
                    Ok(_) => self.store.delete(&path).await?,
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(k)
    }
}

/// A window-start column as ms.
fn window_starts(col: &ArrayRef) -> Result<Vec<i64>> {
    let w = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    let w = cast(&w, &DataType::Int64)?;
    Ok(w.as_primitive::<Int64Type>().values().to_vec())
}

/// Rows sorted by identity, one per identity (the last).
fn sorted_unique(shape: &QueryShape, batch: &RecordBatch) -> Result<RecordBatch> {
    let b = last_per_identity(shape, batch)?;
    if b.num_rows() == 0 || shape.identity.is_empty() {
        return Ok(b);
    }
    let cols: Vec<SortColumn> = shape
        .identity
        .iter()
        .map(|&i| SortColumn {
            values: b.column(i).clone(),
            options: None,
        })
        .collect();
    let idx = lexsort_to_indices(&cols, None)?;
    Ok(take_record_batch(&b, &idx)?)
}

/// A digest of a batch's identities (for naming late files).
fn digest(shape: &QueryShape, rows: &RecordBatch) -> Result<u64> {
    let r = identity_rows(shape, rows)?;
    // FNV-1a: stable across runs and platforms.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for i in 0..rows.num_rows() {
        r.row(i).data().hash(&mut h);
    }
    Ok(h.finish())
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// (`YYYY-MM-DD`, `HHMMSS`) of a UTC time in ms; a time outside the calendar's range
/// (hundreds of thousands of years away) is `out-of-range` and its ms.
pub fn civil(ms: i64) -> (String, String) {
    match timestamp_ms_to_datetime(ms) {
        Some(t) => (
            t.format("%Y-%m-%d").to_string(),
            t.format("%H%M%S").to_string(),
        ),
        None => ("out-of-range".to_string(), ms.to_string()),
    }
}

#[async_trait]
impl Sink for ParquetSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, shape: &QueryShape) -> Result<()> {
        if shape.window_column.is_none() {
            return Err(Error::Config(format!(
                "sink `{}` (parquet) writes windowed queries, whose files are final once their windows are; query `{}` has no window",
                self.name, shape.query
            )));
        }
        Ok(())
    }

    async fn write(&self, shape: &QueryShape, batch: &RecordBatch) -> Result<()> {
        let Some(wcol) = shape.window_column else {
            return Ok(());
        };
        let mut by_bucket: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (i, start) in window_starts(batch.column(wcol))?.iter().enumerate() {
            let b = start.div_euclid(self.roll_ms) * self.roll_ms;
            by_bucket.entry(b).or_default().push(i as u32);
        }
        let mut late = Vec::new();
        {
            let mut all = self.buckets.lock().await;
            let q = all.entry(shape.query.clone()).or_default();
            let oldest_held = q.keys().next().copied();
            for (b, idx) in by_bucket {
                let rows = take_record_batch(batch, &UInt32Array::from(idx))?;
                match q.get_mut(&b) {
                    Some(bucket) => {
                        bucket.batches.push(rows);
                        bucket.dirty = true;
                    }
                    None if oldest_held.is_some_and(|o| b < o) => late.push((b, rows)),
                    None => {
                        q.insert(
                            b,
                            Bucket {
                                batches: vec![rows],
                                committed: false,
                                dirty: true,
                            },
                        );
                    }
                }
            }
        }
        for (b, rows) in late {
            tracing::warn!(query = %shape.query, bucket = b, "rows for a Parquet bucket already released; writing a late file");
            self.write_files(shape, b, &[rows], true).await?;
        }
        Ok(())
    }

    async fn retract(&self, shape: &QueryShape, ids: &RecordBatch) -> Result<()> {
        let Some(wpos) = shape
            .identity
            .iter()
            .position(|&i| Some(i) == shape.window_column)
        else {
            return Ok(());
        };
        let starts = window_starts(ids.column(wpos))?;
        let id_rows = crate::rows_of(ids.columns())?;
        let mut by_bucket: BTreeMap<i64, std::collections::HashSet<&[u8]>> = BTreeMap::new();
        for (i, start) in starts.iter().enumerate() {
            let b = start.div_euclid(self.roll_ms) * self.roll_ms;
            by_bucket
                .entry(b)
                .or_default()
                .insert(id_rows.row(i).data());
        }
        let mut all = self.buckets.lock().await;
        let Some(q) = all.get_mut(&shape.query) else {
            return Ok(());
        };
        let oldest_held = q.keys().next().copied();
        for (b, gone) in by_bucket {
            let Some(bucket) = q.get_mut(&b) else {
                if oldest_held.is_some_and(|o| b < o) {
                    tracing::warn!(query = %shape.query, bucket = b, rows = gone.len(), "rows retracted from a Parquet bucket already released; its files keep them");
                }
                continue;
            };
            for batch in &mut bucket.batches {
                let rows = identity_rows(shape, batch)?;
                let keep = BooleanArray::from_iter(
                    (0..batch.num_rows()).map(|i| Some(!gone.contains(rows.row(i).data()))),
                );
                *batch = filter_record_batch(batch, &keep)?;
            }
            // Written again (without them) once final.
            bucket.dirty = true;
        }
        Ok(())
    }

    async fn watermark(&self, shape: &QueryShape, wm: i64) -> Result<()> {
        let grace = shape.window_len_ms.unwrap_or(0) + shape.allowed_lateness_ms;
        let mut ready = Vec::new();
        {
            let mut all = self.buckets.lock().await;
            let Some(q) = all.get_mut(&shape.query) else {
                return Ok(());
            };
            for (b, bucket) in q.iter_mut() {
                if bucket.dirty && b + self.roll_ms + grace <= wm {
                    bucket.dirty = false;
                    bucket.committed = true;
                    ready.push((*b, bucket.batches.clone()));
                }
            }
            // Hold written buckets one more roll interval, then release them.
            q.retain(|b, bucket| {
                !(bucket.committed && !bucket.dirty && b + 2 * self.roll_ms + grace <= wm)
            });
        }
        for (b, batches) in ready {
            let files = self.write_files(shape, b, &batches, false).await?;
            tracing::debug!(query = %shape.query, bucket = b, files, "Parquet bucket written");
        }
        Ok(())
    }

    async fn snapshot(&self, shape: &QueryShape) -> Result<Option<Vec<u8>>> {
        use datafusion::arrow::ipc::writer::StreamWriter;
        let all = self.buckets.lock().await;
        let Some(q) = all.get(&shape.query).filter(|q| !q.is_empty()) else {
            return Ok(None);
        };
        let list: Vec<BucketState> = q
            .iter()
            .map(|(start, b)| BucketState {
                start: *start,
                committed: b.committed,
                dirty: b.dirty,
            })
            .collect();
        let json = serde_json::to_string(&list).map_err(|e| Error::Config(e.to_string()))?;
        let schema = Arc::new(shape.schema.as_ref().clone().with_metadata(
            std::collections::HashMap::from([(STATE_KEY.to_string(), json)]),
        ));
        let mut w = StreamWriter::try_new(Vec::new(), &schema)?;
        for b in q.values() {
            let rows = concat_batches(&shape.schema, &b.batches)?;
            w.write(&RecordBatch::try_new(
                schema.clone(),
                rows.columns().to_vec(),
            )?)?;
        }
        w.finish()?;
        Ok(Some(w.into_inner()?))
    }

    async fn restore(&self, shape: &QueryShape, state: &[u8]) -> Result<()> {
        use datafusion::arrow::ipc::reader::StreamReader;
        let reader = StreamReader::try_new(state, None)?;
        let refused = |why: String| {
            Error::Config(format!(
                "sink `{}`: the checkpointed buckets of query `{}` {why}",
                self.name, shape.query
            ))
        };
        let schema = reader.schema();
        if schema.fields() != shape.schema.fields() {
            return Err(refused("have other columns than the query".into()));
        }
        let list: Vec<BucketState> = schema
            .metadata()
            .get(STATE_KEY)
            .ok_or_else(|| refused(format!("lack `{STATE_KEY}`")))
            .and_then(|j| serde_json::from_str(j).map_err(|e| refused(e.to_string())))?;
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        if batches.len() != list.len() {
            return Err(refused("do not match their list".into()));
        }
        let mut held = BTreeMap::new();
        for (b, rows) in list.into_iter().zip(batches) {
            let rows = RecordBatch::try_new(shape.schema.clone(), rows.columns().to_vec())?;
            held.insert(
                b.start,
                Bucket {
                    batches: vec![rows],
                    committed: b.committed,
                    dirty: b.dirty,
                },
            );
        }
        self.buckets.lock().await.insert(shape.query.clone(), held);
        Ok(())
    }

    /// Writes the query's open buckets as they are (on shutdown); a later complete
    /// write of the same bucket replaces them.
    async fn flush(&self, shape: &QueryShape) -> Result<()> {
        let pending: Vec<(i64, Vec<RecordBatch>)> = {
            let mut all = self.buckets.lock().await;
            let Some(q) = all.get_mut(&shape.query) else {
                return Ok(());
            };
            q.iter_mut()
                .filter(|(_, b)| b.dirty)
                .map(|(k, b)| {
                    b.dirty = false;
                    (*k, b.batches.clone())
                })
                .collect()
        };
        for (b, batches) in pending {
            self.write_files(shape, b, &batches, false).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn shape() -> QueryShape {
        QueryShape {
            query: "q".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("sensor", DataType::Utf8, true),
                Field::new(
                    "minute",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    true,
                ),
                Field::new("n", DataType::Int64, true),
            ])),
            identity: vec![0, 1],
            window_column: Some(1),
            allowed_lateness_ms: 0,
            window_len_ms: Some(60_000),
        }
    }

    fn rows(rows: &[(&str, i64, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            shape().schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .expect("batch")
    }

    /// Every file under `dir`, by path relative to it, with its bytes.
    fn files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).expect("dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    let rel = p
                        .strip_prefix(dir)
                        .expect("under dir")
                        .display()
                        .to_string();
                    out.insert(rel, std::fs::read(&p).expect("file"));
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn a_sink_restored_from_its_state_writes_the_files_the_original_writes() {
        const MIN: i64 = 60_000;
        let (a_dir, b_dir) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let path = |d: &tempfile::TempDir| d.path().display().to_string();
        let a = ParquetSink::new("lake", &path(&a_dir), 2 * MIN, 2).expect("sink");
        let b = ParquetSink::new("lake", &path(&b_dir), 2 * MIN, 2).expect("sink");
        let s = shape();
        assert_eq!(
            a.snapshot(&s).await.expect("snapshot"),
            None,
            "nothing held"
        );
        // Bucket [0, 2 min) is written and held; bucket [2, 4 min) is open.
        a.write(&s, &rows(&[("x", 0, 1), ("y", MIN, 2), ("x", 2 * MIN, 3)]))
            .await
            .expect("write");
        a.watermark(&s, 3 * MIN).await.expect("watermark");
        let state = a
            .snapshot(&s)
            .await
            .expect("snapshot")
            .expect("buckets held");
        b.restore(&s, &state).await.expect("restore");
        // From here both get the same: a window of the held bucket emitted again, more
        // rows for the open one, and watermarks that write and then release both.
        for sink in [&a, &b] {
            sink.write(&s, &rows(&[("y", MIN, 5), ("z", 3 * MIN, 4)]))
                .await
                .expect("write");
            sink.watermark(&s, 6 * MIN).await.expect("watermark");
            sink.watermark(&s, 20 * MIN).await.expect("watermark");
            assert_eq!(
                sink.snapshot(&s).await.expect("snapshot"),
                None,
                "all released"
            );
        }
        let (fa, fb) = (files(a_dir.path()), files(b_dir.path()));
        assert_eq!(fa.len(), 2, "one file per bucket: {:?}", fa.keys());
        assert_eq!(fa, fb, "the same files, byte for byte");
        let mut other = shape();
        other.schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let e = b.restore(&other, &state).await.unwrap_err().to_string();
        assert!(e.contains("other columns"), "{e}");
    }

    /// The rows of every Parquet file under `dir`, as (sensor, n), by file.
    fn parquet_rows(dir: &std::path::Path) -> BTreeMap<String, Vec<(String, i64)>> {
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        files(dir)
            .into_keys()
            .map(|name| {
                let file = std::fs::File::open(dir.join(&name)).expect("open");
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .expect("a Parquet file")
                    .build()
                    .expect("reader");
                let mut out = Vec::new();
                for b in reader {
                    let b = b.expect("batch");
                    let (s, n) = (
                        b.column(0).as_string::<i32>(),
                        b.column(2).as_primitive::<Int64Type>(),
                    );
                    out.extend((0..b.num_rows()).map(|i| (s.value(i).to_string(), n.value(i))));
                }
                (name, out)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_retracted_row_leaves_its_held_bucket_and_the_rewrite_drops_stale_parts() {
        const MIN: i64 = 60_000;
        let dir = tempfile::tempdir().expect("dir");
        let sink =
            ParquetSink::new("lake", &dir.path().display().to_string(), 2 * MIN, 2).expect("sink");
        let s = shape();
        let ids = |ids: &[(&str, i64)]| {
            let schema = Arc::new(Schema::new(vec![
                s.schema.field(0).clone(),
                s.schema.field(1).clone(),
            ]));
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from_iter_values(ids.iter().map(|r| r.0))),
                    Arc::new(
                        TimestampMillisecondArray::from_iter_values(ids.iter().map(|r| r.1))
                            .with_timezone("UTC"),
                    ),
                ],
            )
            .expect("ids")
        };
        // Bucket [0, 2 min): three rows, written at 3 min as two parts.
        sink.write(&s, &rows(&[("x", 0, 1), ("y", 0, 2), ("z", MIN, 3)]))
            .await
            .expect("write");
        sink.watermark(&s, 3 * MIN).await.expect("watermark");
        let before = parquet_rows(dir.path());
        assert_eq!(before.len(), 2, "{before:?}");
        // Two of them retracted while the bucket is held: its rewrite has one part.
        sink.retract(&s, &ids(&[("x", 0), ("z", MIN), ("never", 0)]))
            .await
            .expect("retract");
        sink.watermark(&s, 4 * MIN).await.expect("watermark");
        let after = parquet_rows(dir.path());
        assert_eq!(
            after.into_values().collect::<Vec<_>>(),
            vec![vec![("y".to_string(), 2)]],
            "only y is left, in one part"
        );
        // Released at 20 min: a later retraction cannot reach the file (and is no error).
        sink.watermark(&s, 20 * MIN).await.expect("watermark");
        sink.retract(&s, &ids(&[("y", 0)])).await.expect("retract");
        assert_eq!(parquet_rows(dir.path()).len(), 1);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), ("1970-01-01".into(), "000000".into()));
        assert_eq!(
            civil(1_764_000_000_000),
            ("2025-11-24".into(), "160000".into())
        );
        assert_eq!(
            civil(951_782_400_000),
            ("2000-02-29".into(), "000000".into())
        );
        assert_eq!(civil(-1_000), ("1969-12-31".into(), "235959".into()));
        assert_eq!(
            civil(i64::MAX),
            ("out-of-range".into(), i64::MAX.to_string())
        );
    }
}
