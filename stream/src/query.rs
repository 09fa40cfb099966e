//! A running continuous query on one processor: per-partition window state, the
//! query's watermark, and the final stage that emits rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, TimestampMillisecondArray,
    UInt32Array,
};
use datafusion::arrow::compute::{cast, filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::{Float64Type, Schema, SchemaRef, TimestampMillisecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_plan::collect;
use datafusion::physical_plan::execution_plan::reset_plan_states;

use crate::checkpoint::window_state;
use crate::operator::{
    Emitted, FinalState, FinalWindows, PartitionState, PartitionWindows, Retraction,
};
use crate::plan::{Compiled, CompiledKind, PostStep, WindowedPlan};
use crate::watermark::WatermarkTracker;
use crate::{Error, Result};

/// What one step of a query produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Result rows (the query's output schema).
    pub rows: Vec<RecordBatch>,
    /// Late rows, as the pre-aggregation projection saw them (keys, event time,
    /// aggregate arguments), in [`QueryRuntime::late_schema`].
    pub late: Vec<RecordBatch>,
    /// Rows whose window time is NULL (the time expression of `tumble`/`hop`/`session`
    /// gave no time, so no window can hold them), in [`QueryRuntime::late_schema`]:
    /// for the caller to dead-letter, never dropped.
    pub untimed: Vec<RecordBatch>,
    /// Identities whose rows no longer exist (a window that stopped passing `HAVING`,
    /// sessions merged): a column per identity column, in the order of
    /// [`QueryRuntime::identity`]. For the sinks to delete before they take `rows`.
    pub retracted: Vec<RecordBatch>,
}

/// Counters of a query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryStats {
    pub rows_in: u64,
    pub rows_out: u64,
    pub late_rows: u64,
    pub open_groups: u64,
}

/// A query's state on this processor, as a value: what a checkpoint keeps of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryState {
    /// The query's watermark.
    pub watermark: Option<i64>,
    /// Each partition's watermark.
    pub partition_watermarks: BTreeMap<i32, Option<i64>>,
    /// First stages by slot: the partition, or 0 for session windows' shared stage.
    pub stages: BTreeMap<i32, PartitionState>,
    /// The final stage (windowed queries).
    pub fin: Option<FinalState>,
}

/// The file of a query's state holding its watermarks.
const WATERMARKS_FILE: &str = "watermarks.json";
/// The file holding the final stage.
const FINAL_FILE: &str = "final.arrow";

#[derive(serde::Serialize, serde::Deserialize)]
struct Watermarks {
    watermark: Option<i64>,
    partitions: BTreeMap<i32, Option<i64>>,
}

/// A continuous query's runtime state on this processor.
pub struct QueryRuntime {
    compiled: Compiled,
    watermarks: WatermarkTracker,
    partitions: BTreeMap<i32, PartitionWindows>,
    fin: Option<FinalWindows>,
    converter: Option<RowConverter>,
    lateness: i64,
    stats: QueryStats,
}

impl QueryRuntime {
    /// `delay_ms` / `idle_ms`: the stream's watermark delay and idle timeout;
    /// `lateness_ms`: how long windows accept late rows after they closed.
    pub fn new(compiled: Compiled, delay_ms: i64, idle_ms: i64, lateness_ms: i64) -> Result<Self> {
        let (fin, converter) = match &compiled.kind {
            CompiledKind::Windowed(w) => {
                let fields: Vec<SortField> = (0..w.n_keys)
                    .map(|i| SortField::new(w.pre.schema().field(i).data_type().clone()))
                    .collect();
                let conv = if fields.is_empty() {
                    None
                } else {
                    Some(RowConverter::new(fields)?)
                };
                (
                    Some(FinalWindows::new(w.spec, w.kinds.clone(), lateness_ms)),
                    conv,
                )
            }
            CompiledKind::Stateless(_) => (None, None),
        };
        Ok(Self {
            compiled,
            watermarks: WatermarkTracker::new(delay_ms, idle_ms),
            partitions: BTreeMap::new(),
            fin,
            converter,
            lateness: lateness_ms,
            stats: QueryStats::default(),
        })
    }

    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        self.compiled.output_schema.clone()
    }

    /// Output columns that identify a row.
    pub fn identity(&self) -> &[usize] {
        &self.compiled.identity
    }

    /// The output column holding the window start (windowed queries).
    pub fn window_column(&self) -> Option<usize> {
        self.compiled.window_column
    }

    /// The schema of late rows (the pre-aggregation projection: group keys, event
    /// time, aggregate arguments, with readable names), windowed queries.
    pub fn late_schema(&self) -> Option<SchemaRef> {
        match &self.compiled.kind {
            CompiledKind::Windowed(w) => Some(w.late_schema.clone()),
            CompiledKind::Stateless(_) => None,
        }
    }

    /// The window's length (tumble/hop size, session gap) in ms.
    pub fn window_len_ms(&self) -> Option<i64> {
        match &self.compiled.kind {
            CompiledKind::Windowed(w) => Some(w.spec.max_len()),
            CompiledKind::Stateless(_) => None,
        }
    }

    /// The query's watermark (ms).
    pub fn watermark(&self) -> Option<i64> {
        self.watermarks.current()
    }

    /// Counters.
    pub fn stats(&self) -> QueryStats {
        let mut s = self.stats.clone();
        s.open_groups = self
            .partitions
            .values()
            .map(|p| p.open_groups() as u64)
            .sum::<u64>()
            + self.fin.as_ref().map_or(0, |f| f.groups() as u64);
        s
    }

    /// The query's state as a value (between batches).
    pub fn snapshot(&self) -> QueryState {
        let (watermark, partition_watermarks) = self.watermarks.snapshot();
        QueryState {
            watermark,
            partition_watermarks,
            stages: self
                .partitions
                .iter()
                .map(|(p, w)| (*p, w.snapshot()))
                .collect(),
            fin: self.fin.as_ref().map(FinalWindows::snapshot),
        }
    }

    /// Takes the state of [`QueryRuntime::snapshot`] (of this query) back at `now_ms`:
    /// it goes on exactly as the runtime it was taken from.
    pub fn restore(&mut self, state: QueryState, now_ms: i64) -> Result<()> {
        let bad = |e: String| Error::Checkpoint(e);
        match &self.compiled.kind {
            CompiledKind::Windowed(w) => {
                let mut stages = BTreeMap::new();
                for (p, st) in state.stages {
                    let stage =
                        PartitionWindows::restore(w.spec, w.kinds.clone(), self.lateness, st)
                            .map_err(|e| bad(format!("partition {p}: {e}")))?;
                    stages.insert(p, stage);
                }
                let fin = match state.fin {
                    Some(f) => FinalWindows::restore(w.spec, w.kinds.clone(), self.lateness, f)
                        .map_err(|e| bad(format!("final stage: {e}")))?,
                    None => FinalWindows::new(w.spec, w.kinds.clone(), self.lateness),
                };
                self.partitions = stages;
                self.fin = Some(fin);
            }
            CompiledKind::Stateless(_) if !state.stages.is_empty() || state.fin.is_some() => {
                return Err(bad("window state for a query without windows".into()));
            }
            CompiledKind::Stateless(_) => {}
        }
        self.watermarks
            .restore(state.watermark, &state.partition_watermarks, now_ms);
        Ok(())
    }

    /// A state as files (name, bytes): the watermarks as JSON, each stage as Arrow IPC
    /// (see [`crate::checkpoint::window_state`]).
    pub fn encode_state(&self, state: &QueryState) -> Result<Vec<(String, Vec<u8>)>> {
        let marks = Watermarks {
            watermark: state.watermark,
            partitions: state.partition_watermarks.clone(),
        };
        let mut files = vec![(
            WATERMARKS_FILE.to_string(),
            serde_json::to_vec(&marks).map_err(|e| Error::Checkpoint(e.to_string()))?,
        )];
        if let CompiledKind::Windowed(w) = &self.compiled.kind {
            let keys = self.converter.as_ref();
            for (p, st) in &state.stages {
                files.push((
                    format!("stage={p}.arrow"),
                    window_state::encode_partition(st, &w.kinds, keys)?,
                ));
            }
            if let Some(f) = &state.fin {
                files.push((
                    FINAL_FILE.to_string(),
                    window_state::encode_final(f, &w.kinds, keys)?,
                ));
            }
        }
        Ok(files)
    }

    /// Reads [`QueryRuntime::encode_state`]'s files (name → bytes).
    pub fn decode_state(&self, files: &BTreeMap<String, impl AsRef<[u8]>>) -> Result<QueryState> {
        let bad = |e: String| Error::Checkpoint(e);
        let marks: Watermarks = files
            .get(WATERMARKS_FILE)
            .ok_or_else(|| bad(format!("no `{WATERMARKS_FILE}`")))
            .and_then(|b| serde_json::from_slice(b.as_ref()).map_err(|e| bad(e.to_string())))?;
        let mut state = QueryState {
            watermark: marks.watermark,
            partition_watermarks: marks.partitions,
            ..Default::default()
        };
        for (name, bytes) in files {
            let CompiledKind::Windowed(w) = &self.compiled.kind else {
                if name != WATERMARKS_FILE {
                    return Err(bad(format!(
                        "`{name}`: window state for a query without windows"
                    )));
                }
                continue;
            };
            let keys = self.converter.as_ref();
            if name == FINAL_FILE {
                state.fin = Some(window_state::decode_final(bytes.as_ref(), &w.kinds, keys)?);
            } else if let Some(p) = name
                .strip_prefix("stage=")
                .and_then(|r| r.strip_suffix(".arrow"))
            {
                let p: i32 = p
                    .parse()
                    .map_err(|_| bad(format!("`{name}` names no partition")))?;
                state.stages.insert(
                    p,
                    window_state::decode_partition(bytes.as_ref(), &w.kinds, keys)?,
                );
            } else if name != WATERMARKS_FILE {
                return Err(bad(format!("`{name}` is not a file of a query's state")));
            }
        }
        Ok(state)
    }

    /// Releases `partition` for another runtime: takes its share of the state out
    /// (its first stage, the final stage's windows it fed, its watermark) as a
    /// [`QueryState`] for [`QueryRuntime::adopt`], and stops tracking it.
    /// `message_key` is the stream's column the Kafka message key holds: a windowed
    /// query can only release a partition when its group keys include that column,
    /// so that every window is fed by one partition. Fails, changing nothing,
    /// otherwise (the reason names the query's keys).
    pub fn release(
        &mut self,
        partition: i32,
        message_key: &str,
        now_ms: i64,
    ) -> Result<QueryState> {
        self.check_release(partition, message_key)?;
        let mut state = QueryState {
            partition_watermarks: BTreeMap::from([(
                partition,
                self.watermarks.partition_watermark(partition),
            )]),
            ..Default::default()
        };
        if let Some(fin) = self.fin.as_mut() {
            state.fin = Some(
                fin.release(partition)
                    .map_err(|e| Error::Checkpoint(format!("partition {partition}: {e}")))?,
            );
            if let Some(stage) = self.partitions.remove(&partition) {
                state.stages.insert(partition, stage.snapshot());
            }
        }
        self.watermarks.remove_partition(partition, now_ms);
        Ok(state)
    }

    /// Whether [`QueryRuntime::release`] of `partition` would succeed; the error says
    /// why not.
    pub fn check_release(&self, partition: i32, message_key: &str) -> Result<()> {
        let bad = |e: String| Error::Checkpoint(format!("partition {partition}: {e}"));
        self.check_movable(message_key)
            .map_err(|e| bad(e.to_string()))?;
        match self.fin.as_ref() {
            Some(fin) => fin.check_release(partition).map_err(bad),
            None => Ok(()),
        }
    }

    /// Whether every window takes the rows of one partition, so that partitions can
    /// move between processors: the group keys include `message_key` (the column the
    /// Kafka message key holds), and the windows are not sessions.
    pub fn check_movable(&self, message_key: &str) -> Result<()> {
        let CompiledKind::Windowed(w) = &self.compiled.kind else {
            return Ok(());
        };
        if matches!(w.spec, crate::window::WindowSpec::Session { .. }) {
            return Err(Error::Checkpoint(
                "session windows take rows of every partition in one first stage; they \
                 cannot move between processors (that needs the exchange)"
                    .into(),
            ));
        }
        if !w
            .key_columns
            .iter()
            .any(|k| k.as_deref() == Some(message_key))
        {
            return Err(Error::Checkpoint(format!(
                "the query's group keys do not include the stream's message key \
                 `{message_key}`, so a window may take rows of several partitions; it \
                 cannot move between processors (keys that span partitions need the \
                 exchange)"
            )));
        }
        Ok(())
    }

    /// Takes over `partition` with the state another runtime released for it
    /// ([`QueryRuntime::release`]): it goes on as it would have there. This runtime's
    /// watermark does not go back for it: rows of the partition behind it are late
    /// here as they would be on any processor whose watermark has passed them, so
    /// `allowed_lateness` must cover how far processors' watermarks drift apart.
    pub fn adopt(&mut self, partition: i32, state: QueryState, now_ms: i64) -> Result<()> {
        let bad = |e: String| Error::Checkpoint(format!("partition {partition}: {e}"));
        if self.partitions.contains_key(&partition) {
            return Err(bad("this runtime already holds the partition".into()));
        }
        match &self.compiled.kind {
            CompiledKind::Windowed(w) => {
                for (p, st) in state.stages {
                    if p != partition {
                        return Err(bad(format!("the state holds partition {p}")));
                    }
                    let stage =
                        PartitionWindows::restore(w.spec, w.kinds.clone(), self.lateness, st)
                            .map_err(bad)?;
                    self.partitions.insert(p, stage);
                }
                if let (Some(f), Some(fin)) = (state.fin, self.fin.as_mut()) {
                    fin.adopt(f).map_err(bad)?;
                }
            }
            CompiledKind::Stateless(_) if !state.stages.is_empty() || state.fin.is_some() => {
                return Err(bad("window state for a query without windows".into()));
            }
            CompiledKind::Stateless(_) => {}
        }
        let wm = state
            .partition_watermarks
            .get(&partition)
            .copied()
            .flatten();
        self.watermarks.adopt_partition(partition, wm, now_ms);
        Ok(())
    }

    /// Starts tracking a partition (so the watermark waits for it).
    pub fn add_partition(&mut self, partition: i32, now_ms: i64) {
        self.watermarks.add_partition(partition, now_ms);
    }

    /// The source's word on a partition: `true` when records exist past what it has
    /// handed over (the partition is never idle then), `false` when it is caught up.
    pub fn set_backlog(&mut self, partition: i32, backlog: bool, now_ms: i64) {
        self.watermarks.set_backlog(partition, backlog, now_ms);
    }

    /// Processes one batch of a partition of the stream.
    pub async fn process(
        &mut self,
        partition: i32,
        batch: RecordBatch,
        max_event_time: Option<i64>,
        now_ms: i64,
    ) -> Result<Output> {
        self.stats.rows_in += batch.num_rows() as u64;
        let mut out = Output::default();
        self.compiled.slot.set(batch);
        let plan = match &self.compiled.kind {
            CompiledKind::Windowed(w) => w.pre.clone(),
            CompiledKind::Stateless(p) => p.clone(),
        };
        let plan = if self.compiled.reset {
            reset_plan_states(plan)?
        } else {
            plan
        };
        let produced = collect(plan, self.compiled.task_ctx.clone()).await?;
        match &self.compiled.kind {
            CompiledKind::Stateless(_) => {
                for b in produced {
                    if b.num_rows() > 0 {
                        self.stats.rows_out += b.num_rows() as u64;
                        out.rows.push(b);
                    }
                }
                if let Some(t) = max_event_time {
                    self.watermarks.observe(partition, t, now_ms);
                }
                return Ok(out);
            }
            CompiledKind::Windowed(w) => {
                let wm = self.watermarks.current();
                let lateness = self.lateness;
                // Sessions of one key can span partitions (e.g. GROUP BY site) and
                // only merge correctly while open, so session windows share one
                // first stage; fixed windows keep one per partition.
                let slot = if matches!(w.spec, crate::window::WindowSpec::Session { .. }) {
                    0
                } else {
                    partition
                };
                let part = self
                    .partitions
                    .entry(slot)
                    .or_insert_with(|| PartitionWindows::new(w.spec, w.kinds.clone(), lateness));
                for b in produced {
                    let (b, untimed) = split_untimed(b, w.n_keys)?;
                    if let Some(u) = untimed {
                        out.untimed.push(RecordBatch::try_new(
                            w.late_schema.clone(),
                            u.columns().to_vec(),
                        )?);
                    }
                    let late = fold(part, w, self.converter.as_ref(), &b, wm)?;
                    if !late.is_empty() {
                        self.stats.late_rows += late.len() as u64;
                        let idx =
                            UInt32Array::from(late.iter().map(|&i| i as u32).collect::<Vec<_>>());
                        let rows = take_record_batch(&b, &idx)?;
                        out.late.push(RecordBatch::try_new(
                            w.late_schema.clone(),
                            rows.columns().to_vec(),
                        )?);
                    }
                }
            }
        }
        if let Some(t) = max_event_time {
            self.watermarks.observe(partition, t, now_ms);
        }
        (out.rows, out.retracted) = self.emit()?;
        Ok(out)
    }

    /// Processing time passed: idle partitions may release the watermark. Returns
    /// the rows emitted and the identities retracted.
    pub fn tick(&mut self, now_ms: i64) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        self.watermarks.tick(now_ms);
        self.emit()
    }

    /// Emits what the watermark closed: rows, and identities retracted.
    fn emit(&mut self) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        let (Some(wm), Some(fin), CompiledKind::Windowed(w)) = (
            self.watermarks.current(),
            self.fin.as_mut(),
            &self.compiled.kind,
        ) else {
            return Ok(Default::default());
        };
        for (slot, p) in self.partitions.iter_mut() {
            fin.merge(*slot, p.drain(wm));
        }
        let converter = self.converter.as_ref();
        let mut rows = None;
        let (_, retracted) = fin.emit(wm, |emitted| {
            let batch = window_batch(w, converter, emitted)?;
            let (batch, shown) = post(&w.post, batch)?;
            rows = Some(batch);
            Ok::<_, Error>(shown)
        })?;
        let mut out = (Vec::new(), Vec::new());
        if let Some(batch) = rows.filter(|b| b.num_rows() > 0) {
            self.stats.rows_out += batch.num_rows() as u64;
            out.0.push(batch);
        }
        if !retracted.is_empty() {
            let schema = identity_schema(&self.compiled.output_schema, &self.compiled.identity);
            out.1
                .push(retraction_batch(w, converter, schema, &retracted)?);
        }
        Ok(out)
    }
}

/// The identity columns of `output`, in identity order.
fn identity_schema(output: &SchemaRef, identity: &[usize]) -> SchemaRef {
    Arc::new(Schema::new(
        identity
            .iter()
            .map(|&i| output.field(i).clone())
            .collect::<Vec<_>>(),
    ))
}

/// Retracted identities as a batch of `schema` (the output's identity columns). The
/// identity columns are the group columns themselves (see `plan`), so they are
/// rebuilt from the key and the window start.
fn retraction_batch(
    w: &WindowedPlan,
    converter: Option<&RowConverter>,
    schema: SchemaRef,
    retracted: &[Retraction],
) -> Result<RecordBatch> {
    let cols = group_columns(w, converter, retracted.iter().map(|r| (&*r.key, r.start)))?;
    let cols = cols
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| to_type(c, f.data_type()))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// Splits a pre-projected batch into the rows with a window time and those without
/// (`None` when every row has one).
fn split_untimed(b: RecordBatch, n_keys: usize) -> Result<(RecordBatch, Option<RecordBatch>)> {
    let ts = b.column(n_keys);
    if ts.null_count() == 0 {
        return Ok((b, None));
    }
    let timed = BooleanArray::from_iter((0..ts.len()).map(|i| Some(ts.is_valid(i))));
    let untimed = BooleanArray::from_iter((0..ts.len()).map(|i| Some(ts.is_null(i))));
    Ok((
        filter_record_batch(&b, &timed)?,
        Some(filter_record_batch(&b, &untimed)?),
    ))
}

/// Folds one pre-projected batch, every row of which has a window time, into a
/// partition's windows; returns late row indexes.
fn fold(
    part: &mut PartitionWindows,
    w: &WindowedPlan,
    converter: Option<&RowConverter>,
    b: &RecordBatch,
    wm: Option<i64>,
) -> Result<Vec<usize>> {
    let rows = match converter {
        Some(c) => Some(c.convert_columns(&b.columns()[..w.n_keys])?),
        None => None,
    };
    let ts_col = b
        .column(w.n_keys)
        .as_primitive::<TimestampMillisecondType>();
    if ts_col.null_count() > 0 {
        return Err(Error::Sql(
            "internal: rows without a window time reached the window operator".into(),
        ));
    }
    let ts = ts_col.values();
    let args: Vec<Option<&Float64Array>> = w
        .arg_columns
        .iter()
        .map(|c| c.map(|i| b.column(i).as_primitive::<Float64Type>()))
        .collect();
    let late = match &rows {
        Some(r) => part.process(|i| r.row(i).data(), ts, &args, wm),
        None => part.process(|_| &[], ts, &args, wm),
    };
    Ok(late)
}

/// Emitted windows as a batch of the aggregate's output schema.
fn window_batch(
    w: &WindowedPlan,
    converter: Option<&RowConverter>,
    emitted: &[Emitted],
) -> Result<RecordBatch> {
    let keys = group_columns(w, converter, emitted.iter().map(|e| (&*e.key, e.start)))?;
    let schema = &w.agg_schema;
    let n_group = keys.len();
    let mut cols = keys;
    for (j, _) in w.kinds.iter().enumerate() {
        let vals = Float64Array::from(emitted.iter().map(|e| e.values[j]).collect::<Vec<_>>());
        let target = schema.field(n_group + j).data_type();
        cols.push(to_type(Arc::new(vals), target)?);
    }
    // The aggregate schema's fields may be declared non-nullable where our values are
    // not null; build with its field list.
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

/// The group columns of windows given as (key in row format, window start): the keys,
/// with the window start (in the aggregate schema's timestamp type) at its position.
fn group_columns<'k>(
    w: &WindowedPlan,
    converter: Option<&RowConverter>,
    windows: impl Iterator<Item = (&'k [u8], i64)> + Clone,
) -> Result<Vec<ArrayRef>> {
    let mut cols: Vec<ArrayRef> = match converter {
        Some(c) => {
            let parser = c.parser();
            c.convert_rows(windows.clone().map(|(k, _)| parser.parse(k)))?
        }
        None => Vec::new(),
    };
    let tz = match w.agg_schema.field(w.window_pos).data_type() {
        datafusion::arrow::datatypes::DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let starts = TimestampMillisecondArray::from(windows.map(|(_, s)| s).collect::<Vec<_>>())
        .with_timezone_opt(tz);
    cols.insert(w.window_pos, Arc::new(starts));
    Ok(cols)
}

fn to_type(a: ArrayRef, target: &datafusion::arrow::datatypes::DataType) -> Result<ArrayRef> {
    use datafusion::arrow::datatypes::DataType as T;
    if a.data_type() == target {
        return Ok(a);
    }
    let via_int = matches!(
        target,
        T::Timestamp(..) | T::Date32 | T::Date64 | T::Duration(_)
    );
    let a = if via_int { cast(&a, &T::Int64)? } else { a };
    cast(&a, target).map_err(Error::from)
}

/// Runs the steps after the window aggregation (`HAVING`, the `SELECT` list) over
/// emitted windows: the output rows, and for each window whether it is among them.
fn post(steps: &[PostStep], mut batch: RecordBatch) -> Result<(RecordBatch, Vec<bool>)> {
    let mut shown = vec![true; batch.num_rows()];
    for s in steps {
        batch = match s {
            PostStep::Filter(pred) => {
                let v = pred.evaluate(&batch)?.into_array(batch.num_rows())?;
                let mask = v
                    .as_boolean_opt()
                    .ok_or_else(|| Error::Sql("HAVING must be a boolean condition".into()))?;
                // The rows still in `batch` are the shown ones, in order.
                for (row, s) in shown.iter_mut().filter(|s| **s).enumerate() {
                    *s = mask.is_valid(row) && mask.value(row);
                }
                filter_record_batch(&batch, mask)?
            }
            PostStep::Project(exprs, schema) => {
                let cols = exprs
                    .iter()
                    .map(|e| {
                        e.evaluate(&batch)
                            .and_then(|v| v.into_array(batch.num_rows()))
                    })
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                RecordBatch::try_new(schema.clone(), cols)?
            }
        };
    }
    Ok((batch, shown))
}
