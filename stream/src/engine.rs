//! The engine of a processor node: declared streams, reference tables, running
//! continuous queries and the live tables that pull queries read.
//!
//! The engine does no I/O of its own: batches come in through [`Engine::process`],
//! results go out as [`QueryOutput`]s for the caller to hand to sinks, and rows a query
//! cannot place (no window time) go out as dead letters for the caller to route like
//! the decoder's. What the source knows of each partition's backlog comes in through
//! [`Engine::set_backlog`] and decides when a partition may go idle. Pull queries run
//! on [`Engine::pull_context`], which shares the live tables and can be used
//! concurrently with processing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::common::config::Dialect;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use edgeflow_ingest::decode::{DeadLetter, DeadReason};
use edgeflow_ingest::format::Format;

use crate::checkpoint::{ipc_batches, ipc_bytes};
use crate::live::LiveTable;
use crate::plan::{compile, describe, planning_context, slot_table, Slot};
use crate::query::{QueryRuntime, QueryStats};
use crate::{udf, Error, Result};

/// A stream declared in config.
#[derive(Clone, Debug)]
pub struct StreamDecl {
    /// Table name in SQL.
    pub name: String,
    pub format: Format,
    pub watermark_delay_ms: i64,
    pub idle_timeout_ms: i64,
    /// Key columns of the `<name>_latest` table (empty: no such table).
    pub latest_key: Vec<String>,
    /// Rows kept in the latest table.
    pub latest_rows: usize,
}

/// A continuous query to run.
#[derive(Clone, Debug)]
pub struct QueryDecl {
    pub name: String,
    pub sql: String,
    pub allowed_lateness_ms: i64,
    /// Rows kept in the query's live table.
    pub live_rows: usize,
}

/// What a query produced in one step.
#[derive(Debug)]
pub struct QueryOutput {
    pub query: String,
    pub rows: Vec<RecordBatch>,
    /// Identities whose rows no longer exist (a window that stopped passing `HAVING`,
    /// sessions merged): a column per identity column, in the order of
    /// [`QueryInfo::identity`]. Sinks delete them before they take `rows`.
    pub retracted: Vec<RecordBatch>,
    pub late: Vec<RecordBatch>,
    /// Rows the query could not place in a window (their window time is NULL), one
    /// dead letter each (reason `null_event_time`, the row as JSON in the query's late
    /// schema, offset -1: a derived row, not one record).
    pub dead: Vec<DeadLetter>,
    /// The query failed in this step with this error and stopped (the step's rows
    /// are not in the output: the batch is not half applied to the sinks).
    pub failed: Option<String>,
}

/// Marks `q` failed and says so in an output of its own.
fn failure(q: &mut Running, error: String) -> QueryOutput {
    tracing::error!(query = %q.decl.name, %error, "continuous query failed and stopped");
    q.error = Some(error.clone());
    QueryOutput {
        query: q.decl.name.clone(),
        rows: Vec::new(),
        retracted: Vec::new(),
        late: Vec::new(),
        dead: Vec::new(),
        failed: Some(error),
    }
}

/// A running query as reported to users.
#[derive(Clone, Debug)]
pub struct QueryInfo {
    pub name: String,
    pub stream: String,
    pub sql: String,
    pub schema: SchemaRef,
    /// Output columns that identify a row.
    pub identity: Vec<usize>,
    /// Whether rows are windows (emitted when the watermark passes).
    pub windowed: bool,
    /// The output column holding the window start.
    pub window_column: Option<usize>,
    /// The window's length (tumble/hop size, session gap), ms.
    pub window_len_ms: Option<i64>,
    pub allowed_lateness_ms: i64,
    /// The schema of late rows (windowed queries): group keys `__k0..`, event time
    /// `__ts`, aggregate arguments `__a0..`.
    pub late_schema: Option<SchemaRef>,
    pub watermark: Option<i64>,
    pub stats: QueryStats,
    /// Why the query stopped, if it failed (see [`Engine::fail_query`]); a failed query
    /// reads no more input, and its live table keeps what it had.
    pub error: Option<String>,
}

struct StreamState {
    decl: StreamDecl,
    latest: Option<(Arc<LiveTable>, Vec<usize>)>,
    /// Tracked partitions, with the source's last word on their backlog (for queries
    /// created later).
    partitions: BTreeMap<i32, Option<bool>>,
}

struct Running {
    decl: QueryDecl,
    stream: String,
    runtime: QueryRuntime,
    live: Arc<LiveTable>,
    windowed: bool,
    error: Option<String>,
}

/// The file naming what a query's checkpointed state was taken for.
const QUERY_FILE: &str = "query.json";
/// The file of a query's live table rows.
const LIVE_FILE: &str = "live.arrow";
/// The file of a stream's latest table rows.
const LATEST_FILE: &str = "latest.arrow";

#[derive(serde::Serialize, serde::Deserialize)]
struct QueryIdentity {
    sql: String,
    allowed_lateness_ms: i64,
}

/// The identity file of a query's state.
fn query_identity(decl: &QueryDecl) -> Result<Vec<u8>> {
    let id = QueryIdentity {
        sql: decl.sql.clone(),
        allowed_lateness_ms: decl.allowed_lateness_ms,
    };
    serde_json::to_vec(&id).map_err(|e| Error::Checkpoint(e.to_string()))
}

/// Takes the identity file out of a query's state files and checks that the state
/// belongs to the query as declared now.
fn check_identity(name: &str, decl: &QueryDecl, files: &mut BTreeMap<String, &[u8]>) -> Result<()> {
    let id: QueryIdentity = files
        .remove(QUERY_FILE)
        .ok_or_else(|| Error::Checkpoint(format!("query `{name}`: no `{QUERY_FILE}`")))
        .and_then(|b| {
            serde_json::from_slice(b).map_err(|e| Error::Checkpoint(format!("query `{name}`: {e}")))
        })?;
    if id.sql != decl.sql || id.allowed_lateness_ms != decl.allowed_lateness_ms {
        return Err(Error::Checkpoint(format!(
            "query `{name}` changed since the state was written (its SQL or allowed lateness \
             differs), so its windows do not fit it; give the changed query a new name, or \
             remove the checkpoint to start over"
        )));
    }
    Ok(())
}

/// State files grouped by query (`query=<name>/<file>` → name → file → bytes).
fn files_by_query(
    files: &BTreeMap<String, impl AsRef<[u8]>>,
) -> BTreeMap<&str, BTreeMap<String, &[u8]>> {
    let mut by_query: BTreeMap<&str, BTreeMap<String, &[u8]>> = BTreeMap::new();
    for (name, bytes) in files {
        if let Some((query, file)) = name.strip_prefix("query=").and_then(|r| r.split_once('/')) {
            by_query
                .entry(query)
                .or_default()
                .insert(file.to_string(), bytes.as_ref());
        }
    }
    by_query
}

/// The processor's streams, tables and queries.
pub struct Engine {
    pull: SessionContext,
    refs: BTreeMap<String, Arc<MemTable>>,
    streams: BTreeMap<String, StreamState>,
    queries: BTreeMap<String, Running>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::Name(format!(
            "{kind} name `{name}` must be letters, digits and _ (not starting with a digit), so SQL can name it"
        )))
    }
}

impl Engine {
    pub fn new() -> Self {
        let pull =
            SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        udf::register(&pull);
        Self {
            pull,
            refs: BTreeMap::new(),
            streams: BTreeMap::new(),
            queries: BTreeMap::new(),
        }
    }

    /// The context pull queries run on (live tables, latest tables, reference tables).
    pub fn pull_context(&self) -> SessionContext {
        self.pull.clone()
    }

    fn taken(&self, name: &str) -> bool {
        self.streams.contains_key(name)
            || self.refs.contains_key(name)
            || self.queries.contains_key(name)
            || self.streams.keys().any(|s| format!("{s}_latest") == name)
    }

    /// Declares a stream.
    pub fn add_stream(&mut self, decl: StreamDecl) -> Result<()> {
        check_name("stream", &decl.name)?;
        if self.taken(&decl.name) {
            return Err(Error::Name(format!(
                "`{}` is already a stream, table or query",
                decl.name
            )));
        }
        let schema = decl.format.schema();
        let latest = if decl.latest_key.is_empty() {
            None
        } else {
            let mut idx = Vec::new();
            for k in &decl.latest_key {
                idx.push(schema.index_of(k).map_err(|_| {
                    Error::Config(format!(
                        "stream `{}`: latest_key column `{k}` does not exist; columns: {}",
                        decl.name,
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?);
            }
            let t = Arc::new(LiveTable::new(schema, idx.clone(), decl.latest_rows)?);
            self.pull
                .register_table(format!("{}_latest", decl.name), t.clone())?;
            Some((t, idx))
        };
        self.streams.insert(
            decl.name.clone(),
            StreamState {
                decl,
                latest,
                partitions: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Loads a static reference table (CSV with a header row, or Parquet) into memory.
    pub async fn add_reference_table(&mut self, name: &str, path: &str) -> Result<()> {
        check_name("table", name)?;
        if self.taken(name) {
            return Err(Error::Name(format!(
                "`{name}` is already a stream, table or query"
            )));
        }
        let ctx = SessionContext::new();
        let df = if path.ends_with(".parquet") {
            ctx.read_parquet(path, ParquetReadOptions::default()).await
        } else if path.ends_with(".csv") {
            ctx.read_csv(path, CsvReadOptions::new().has_header(true))
                .await
        } else {
            return Err(Error::Config(format!(
                "table `{name}`: `{path}` must end in .csv or .parquet"
            )));
        }
        .map_err(|e| {
            Error::Config(format!(
                "table `{name}`: cannot read `{path}`: {}",
                describe(e)
            ))
        })?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        let table = Arc::new(MemTable::try_new(schema, vec![batches])?);
        self.pull.register_table(name, table.clone())?;
        self.refs.insert(name.to_string(), table);
        Ok(())
    }

    /// Starts tracking a partition of a stream (its watermark waits for it).
    pub fn add_partition(&mut self, stream: &str, partition: i32, now_ms: i64) -> Result<()> {
        let s = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| Error::Name(format!("no stream `{stream}`")))?;
        s.partitions.entry(partition).or_insert(None);
        for q in self.queries.values_mut().filter(|q| q.stream == stream) {
            q.runtime.add_partition(partition, now_ms);
        }
        Ok(())
    }

    /// The source's word on a stream's partition at `now_ms`: `true` when records
    /// exist past what it has handed over (the partition then never goes idle),
    /// `false` when it has caught up (its idle clock starts).
    pub fn set_backlog(
        &mut self,
        stream: &str,
        partition: i32,
        backlog: bool,
        now_ms: i64,
    ) -> Result<()> {
        let s = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| Error::Name(format!("no stream `{stream}`")))?;
        s.partitions.insert(partition, Some(backlog));
        for q in self.queries.values_mut().filter(|q| q.stream == stream) {
            q.runtime.set_backlog(partition, backlog, now_ms);
        }
        Ok(())
    }

    /// Plans and starts a continuous query.
    pub async fn create_query(&mut self, decl: QueryDecl, now_ms: i64) -> Result<QueryInfo> {
        check_name("query", &decl.name)?;
        if self.taken(&decl.name) {
            return Err(Error::Name(format!(
                "`{}` is already a stream, table or query",
                decl.name
            )));
        }
        // Which stream does it read?
        let state = self.pull.state();
        let stmt = state
            .sql_to_statement(&decl.sql, &Dialect::Generic)
            .map_err(|e| Error::Sql(describe(e)))?;
        let tables = state
            .resolve_table_references(&stmt)
            .map_err(|e| Error::Sql(describe(e)))?;
        let used: BTreeSet<String> = tables
            .iter()
            .map(|t| t.table().to_string())
            .filter(|t| self.streams.contains_key(t))
            .collect();
        let stream = match used.len() {
            1 => used.into_iter().next().unwrap_or_default(),
            0 => {
                return Err(Error::Sql(format!(
                    "a continuous query reads one stream; declared streams: {}",
                    self.streams.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
            _ => {
                return Err(Error::Sql(format!(
                    "a continuous query reads exactly one stream; this one reads {}",
                    used.into_iter().collect::<Vec<_>>().join(", ")
                )))
            }
        };
        let s = &self.streams[&stream];
        let ctx = planning_context();
        let slot = Arc::new(Slot::default());
        ctx.register_table(
            stream.as_str(),
            Arc::new(slot_table(s.decl.format.schema(), slot.clone())?),
        )?;
        for (name, t) in &self.refs {
            ctx.register_table(name.as_str(), t.clone())?;
        }
        let compiled = compile(&ctx, &decl.sql, slot).await?;
        let windowed = matches!(compiled.kind, crate::plan::CompiledKind::Windowed(_));
        let identity = if windowed {
            compiled.identity.clone()
        } else {
            // A filter/projection row is identified by its content.
            (0..compiled.output_schema.fields().len()).collect()
        };
        let mut runtime = QueryRuntime::new(
            compiled,
            s.decl.watermark_delay_ms,
            s.decl.idle_timeout_ms,
            decl.allowed_lateness_ms,
        )?;
        for (p, backlog) in &s.partitions {
            runtime.add_partition(*p, now_ms);
            if let Some(b) = backlog {
                runtime.set_backlog(*p, *b, now_ms);
            }
        }
        let schema = runtime.schema();
        let live = Arc::new(LiveTable::new(
            schema.clone(),
            identity.clone(),
            decl.live_rows,
        )?);
        self.pull.register_table(decl.name.as_str(), live.clone())?;
        let info = QueryInfo {
            name: decl.name.clone(),
            stream: stream.clone(),
            sql: decl.sql.clone(),
            schema,
            identity,
            windowed,
            window_column: runtime.window_column(),
            window_len_ms: runtime.window_len_ms(),
            allowed_lateness_ms: decl.allowed_lateness_ms,
            late_schema: runtime.late_schema(),
            watermark: None,
            stats: QueryStats::default(),
            error: None,
        };
        self.queries.insert(
            decl.name.clone(),
            Running {
                decl,
                stream,
                runtime,
                live,
                windowed,
                error: None,
            },
        );
        Ok(info)
    }

    /// Stops a continuous query and removes its live table.
    pub fn drop_query(&mut self, name: &str) -> Result<()> {
        if self.queries.remove(name).is_none() {
            return Err(Error::Name(format!(
                "no continuous query `{name}`; running: {}",
                self.queries.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        self.pull.deregister_table(name)?;
        Ok(())
    }

    /// Every running query's state as checkpoint files, under `query=<name>/`: the
    /// query's own files (see [`QueryRuntime::encode_state`]), its live table's rows
    /// (`live.arrow`) and `query.json` with what the state was taken for (its SQL and
    /// allowed lateness); each stream's latest table under `stream=<name>/latest.arrow`.
    /// A failed query's state is left out (it may be half applied): after a restart
    /// it starts empty.
    pub fn checkpoint_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::new();
        for (name, s) in &self.streams {
            if let Some((t, _)) = &s.latest {
                let rows = ipc_bytes(&t.schema(), &t.snapshot()?)?;
                files.push((format!("stream={name}/{LATEST_FILE}"), rows));
            }
        }
        for q in self.queries.values().filter(|q| q.error.is_none()) {
            let dir = format!("query={}", q.decl.name);
            files.push((format!("{dir}/{QUERY_FILE}"), query_identity(&q.decl)?));
            for (name, bytes) in q.runtime.encode_state(&q.runtime.snapshot())? {
                files.push((format!("{dir}/{name}"), bytes));
            }
            let live = ipc_bytes(&q.live.schema(), &q.live.snapshot()?)?;
            files.push((format!("{dir}/{LIVE_FILE}"), live));
        }
        Ok(files)
    }

    /// Restores every running query from checkpoint files written by
    /// [`Engine::checkpoint_files`] (file name → bytes). A query without state in them
    /// starts empty; state of a query that is no longer defined is skipped with a
    /// warning; state of a query whose SQL or lateness changed since is refused (its
    /// windows would not fit), naming the query.
    pub fn restore_files(
        &mut self,
        files: &BTreeMap<String, impl AsRef<[u8]>>,
        now_ms: i64,
    ) -> Result<()> {
        for (name, bytes) in files {
            if let Some(stream) = name
                .strip_prefix("stream=")
                .and_then(|r| r.strip_suffix(&format!("/{LATEST_FILE}")))
            {
                match self.streams.get(stream).and_then(|s| s.latest.as_ref()) {
                    Some((t, _)) => {
                        for b in ipc_batches(bytes.as_ref(), &t.schema())
                            .map_err(|e| Error::Checkpoint(format!("{stream}_latest: {e}")))?
                        {
                            t.insert(&b)?;
                        }
                    }
                    None => tracing::warn!(
                        stream,
                        "the checkpoint holds a latest table the stream no longer has; skipped"
                    ),
                }
            }
        }
        for (name, mut files) in files_by_query(files) {
            let Some(q) = self.queries.get_mut(name) else {
                tracing::warn!(
                    query = name,
                    "the checkpoint holds state of a query that is not defined now; skipped"
                );
                continue;
            };
            check_identity(name, &q.decl, &mut files)?;
            if let Some(live) = files.remove(LIVE_FILE) {
                for b in ipc_batches(live, &q.live.schema())
                    .map_err(|e| Error::Checkpoint(format!("query `{name}`'s live table: {e}")))?
                {
                    q.live.insert(&b)?;
                }
            }
            q.runtime
                .decode_state(&files)
                .and_then(|st| q.runtime.restore(st, now_ms))
                .map_err(|e| Error::Checkpoint(format!("query `{name}`: {e}")))?;
        }
        Ok(())
    }

    /// Whether every running query over `stream` can move its partitions between
    /// processors ([`QueryRuntime::check_movable`]); the error names the query.
    pub fn check_movable(&self, stream: &str, message_key: &str) -> Result<()> {
        for q in self
            .queries
            .values()
            .filter(|q| q.stream == stream && q.error.is_none())
        {
            q.runtime
                .check_movable(message_key)
                .map_err(|e| Error::Checkpoint(format!("query `{}`: {e}", q.decl.name)))?;
        }
        Ok(())
    }

    /// Releases `partition` of `stream` for another processor: every query over the
    /// stream hands over its share of the state (the partition's first stage, the
    /// windows it fed, its watermark) and stops tracking the partition. Returns the
    /// state as checkpoint files in [`Engine::checkpoint_files`]' layout, for
    /// [`Engine::adopt_partition`]. `message_key` is the stream's column the Kafka
    /// message key holds. Either every query releases or none does: a query whose
    /// windows can take rows of several partitions (its group keys do not include
    /// `message_key`, or session windows) refuses, naming itself, and nothing changes.
    /// The query's live table keeps the rows already emitted.
    pub fn release_partition(
        &mut self,
        stream: &str,
        partition: i32,
        message_key: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let s = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| Error::Name(format!("no stream `{stream}`")))?;
        if !s.partitions.contains_key(&partition) {
            return Err(Error::Name(format!(
                "stream `{stream}` has no partition {partition} here"
            )));
        }
        let running = || {
            self.queries
                .values()
                .filter(|q| q.stream == stream && q.error.is_none())
        };
        for q in running() {
            q.runtime
                .check_release(partition, message_key)
                .map_err(|e| Error::Checkpoint(format!("query `{}`: {e}", q.decl.name)))?;
        }
        s.partitions.remove(&partition);
        let mut files = Vec::new();
        for q in self
            .queries
            .values_mut()
            .filter(|q| q.stream == stream && q.error.is_none())
        {
            let dir = format!("query={}", q.decl.name);
            files.push((format!("{dir}/{QUERY_FILE}"), query_identity(&q.decl)?));
            let state = q
                .runtime
                .release(partition, message_key, now_ms)
                .map_err(|e| Error::Checkpoint(format!("query `{}`: {e}", q.decl.name)))?;
            for (name, bytes) in q.runtime.encode_state(&state)? {
                files.push((format!("{dir}/{name}"), bytes));
            }
        }
        Ok(files)
    }

    /// Takes over `partition` of `stream` with the state another processor released
    /// ([`Engine::release_partition`]; file name → bytes): each query goes on with the
    /// partition as that processor would have. A query the files hold nothing for
    /// starts the partition empty; state of a query not defined here is skipped with a
    /// warning; state of a query whose SQL or lateness differs is refused.
    pub fn adopt_partition(
        &mut self,
        stream: &str,
        partition: i32,
        files: &BTreeMap<String, impl AsRef<[u8]>>,
        now_ms: i64,
    ) -> Result<()> {
        let s = self
            .streams
            .get_mut(stream)
            .ok_or_else(|| Error::Name(format!("no stream `{stream}`")))?;
        if s.partitions.contains_key(&partition) {
            return Err(Error::Name(format!(
                "stream `{stream}` already has partition {partition} here"
            )));
        }
        let mut by_query = files_by_query(files);
        // Every query's state is read before any is adopted.
        let mut states = Vec::new();
        for q in self
            .queries
            .values()
            .filter(|q| q.stream == stream && q.error.is_none())
        {
            let name = q.decl.name.as_str();
            let state = match by_query.remove(name) {
                Some(mut files) => {
                    check_identity(name, &q.decl, &mut files)?;
                    Some(
                        q.runtime
                            .decode_state(&files)
                            .map_err(|e| Error::Checkpoint(format!("query `{name}`: {e}")))?,
                    )
                }
                None => None,
            };
            states.push((name.to_string(), state));
        }
        for name in by_query.keys() {
            tracing::warn!(
                query = name,
                partition,
                "the released partition holds state of a query that is not defined here; skipped"
            );
        }
        s.partitions.insert(partition, None);
        for (name, state) in states {
            let q = self.queries.get_mut(&name).expect("listed above");
            match state {
                Some(st) => q
                    .runtime
                    .adopt(partition, st, now_ms)
                    .map_err(|e| Error::Checkpoint(format!("query `{name}`: {e}")))?,
                None => q.runtime.add_partition(partition, now_ms),
            }
        }
        Ok(())
    }

    /// The running queries.
    pub fn queries(&self) -> Vec<QueryInfo> {
        self.queries
            .values()
            .map(|q| QueryInfo {
                name: q.decl.name.clone(),
                stream: q.stream.clone(),
                sql: q.decl.sql.clone(),
                schema: q.runtime.schema(),
                identity: if q.windowed {
                    q.runtime.identity().to_vec()
                } else {
                    (0..q.runtime.schema().fields().len()).collect()
                },
                windowed: q.windowed,
                window_column: q.runtime.window_column(),
                window_len_ms: q.runtime.window_len_ms(),
                allowed_lateness_ms: q.decl.allowed_lateness_ms,
                late_schema: q.runtime.late_schema(),
                watermark: q.runtime.watermark(),
                stats: q.runtime.stats(),
                error: q.error.clone(),
            })
            .collect()
    }

    /// The declared streams' names.
    pub fn stream_names(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }

    /// One batch of a stream's partition: feeds the latest table and every query on
    /// the stream.
    pub async fn process(
        &mut self,
        stream: &str,
        partition: i32,
        batch: RecordBatch,
        max_event_time: Option<i64>,
        now_ms: i64,
    ) -> Result<Vec<QueryOutput>> {
        let s = self
            .streams
            .get(stream)
            .ok_or_else(|| Error::Name(format!("no stream `{stream}`")))?;
        if let Some((t, _)) = &s.latest {
            t.insert(&batch)?;
        }
        let mut out = Vec::new();
        for q in self
            .queries
            .values_mut()
            .filter(|q| q.stream == stream && q.error.is_none())
        {
            let step = async {
                let o = q
                    .runtime
                    .process(partition, batch.clone(), max_event_time, now_ms)
                    .await?;
                for b in &o.retracted {
                    q.live.retract(b)?;
                }
                for b in &o.rows {
                    q.live.insert(b)?;
                }
                let mut dead = Vec::new();
                for b in &o.untimed {
                    untimed_letters(&q.decl.name, partition, b, &mut dead)?;
                }
                Ok::<_, Error>(QueryOutput {
                    query: q.decl.name.clone(),
                    rows: o.rows,
                    retracted: o.retracted,
                    late: o.late,
                    dead,
                    failed: None,
                })
            };
            match step.await {
                Ok(o)
                    if o.rows.is_empty()
                        && o.retracted.is_empty()
                        && o.late.is_empty()
                        && o.dead.is_empty() => {}
                Ok(o) => out.push(o),
                Err(e) => {
                    let error = format!("processing partition {partition} of `{stream}`: {e}");
                    out.push(failure(q, error));
                }
            }
        }
        Ok(out)
    }

    /// Stops a query that cannot go on (its sink refused a write for a reason that
    /// will not go away, say): it reads no more input and reports `error` in
    /// [`QueryInfo::error`]. Idempotent; the first error is kept.
    pub fn fail_query(&mut self, name: &str, error: &str) -> Result<()> {
        let q = self
            .queries
            .get_mut(name)
            .ok_or_else(|| Error::Name(format!("no continuous query `{name}`")))?;
        if q.error.is_none() {
            q.error = Some(error.to_string());
        }
        Ok(())
    }

    /// Processing time passed (idle partitions may let windows close).
    pub fn tick(&mut self, now_ms: i64) -> Result<Vec<QueryOutput>> {
        let mut out = Vec::new();
        for q in self.queries.values_mut().filter(|q| q.error.is_none()) {
            let mut step = || {
                let (rows, retracted) = q.runtime.tick(now_ms)?;
                for b in &retracted {
                    q.live.retract(b)?;
                }
                for b in &rows {
                    q.live.insert(b)?;
                }
                Ok::<_, Error>((rows, retracted))
            };
            match step() {
                Ok((rows, retracted)) if rows.is_empty() && retracted.is_empty() => {}
                Ok((rows, retracted)) => out.push(QueryOutput {
                    query: q.decl.name.clone(),
                    rows,
                    retracted,
                    late: Vec::new(),
                    dead: Vec::new(),
                    failed: None,
                }),
                Err(e) => {
                    let error = format!("closing windows: {e}");
                    out.push(failure(q, error));
                }
            }
        }
        Ok(out)
    }

    /// Runs a pull query.
    pub async fn pull(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        pull(&self.pull, sql).await
    }
}

/// One dead letter per row of `batch` (rows whose window time is NULL): the row as a
/// JSON object, the query named in the detail.
fn untimed_letters(
    query: &str,
    partition: i32,
    batch: &RecordBatch,
    out: &mut Vec<DeadLetter>,
) -> Result<()> {
    for i in 0..batch.num_rows() {
        let mut w = LineDelimitedWriter::new(Vec::new());
        w.write(&batch.slice(i, 1))?;
        w.finish()?;
        let mut payload = w.into_inner();
        if payload.last() == Some(&b'\n') {
            payload.pop();
        }
        out.push(DeadLetter {
            partition,
            offset: -1,
            reason: DeadReason::NullEventTime,
            detail: format!(
                "query `{query}`: the window's time expression is NULL for this row, so no window can hold it"
            ),
            key: None,
            payload,
        });
    }
    Ok(())
}

/// Runs a pull query on a context (SELECT only; errors say where).
pub async fn pull(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx
        .sql_with_options(sql, options)
        .await
        .map_err(|e| Error::Sql(describe(e)))?;
    df.collect().await.map_err(|e| Error::Sql(describe(e)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    use edgeflow_ingest::decode::{BatchDecoder, RawRecord};
    use edgeflow_ingest::format::{ColumnType, FormatKind};

    use super::*;

    const T0: i64 = 1_764_000_000_000; // a whole minute
    const IDLE_MS: i64 = 10_000;

    /// The stream's format: JSON with its event time `ts` and a second, nullable time
    /// `at`.
    fn stream_format() -> Format {
        Format::new(
            FormatKind::Json,
            vec![
                ("sensor".into(), ColumnType::String),
                ("ts".into(), ColumnType::Timestamp),
                ("at".into(), ColumnType::Timestamp),
                ("value".into(), ColumnType::Double),
            ],
            None,
        )
        .expect("format")
    }

    /// An engine over the stream `s` (two partitions) running `query` as `q`.
    async fn engine_with(query: &str) -> Engine {
        engine_on(query, &[0, 1]).await
    }

    /// An engine over the stream `s` with `partitions` running `query` as `q`.
    async fn engine_on(query: &str, partitions: &[i32]) -> Engine {
        let mut e = Engine::new();
        e.add_stream(StreamDecl {
            name: "s".into(),
            format: stream_format(),
            watermark_delay_ms: 0,
            idle_timeout_ms: IDLE_MS,
            latest_key: vec!["sensor".into()],
            latest_rows: 10,
        })
        .expect("stream");
        for &p in partitions {
            e.add_partition("s", p, 0).expect("partition");
        }
        if !query.is_empty() {
            e.create_query(
                QueryDecl {
                    name: "q".into(),
                    sql: query.into(),
                    allowed_lateness_ms: 0,
                    live_rows: 100,
                },
                0,
            )
            .await
            .expect("query");
        }
        e
    }

    /// Rows `(sensor, ts, at)` as one batch of the stream, and its largest event time.
    fn batch(rows: &[(&str, i64, Option<i64>)]) -> (RecordBatch, Option<i64>) {
        let mut e = engine_format();
        for (sensor, ts, at) in rows {
            let at = at.map_or("null".to_string(), |a| a.to_string());
            let json = format!(r#"{{"sensor":"{sensor}","ts":{ts},"at":{at},"value":1}}"#);
            e.push(&RawRecord {
                payload: Some(json.as_bytes()),
                ..Default::default()
            })
            .expect("decodes");
        }
        let max = e.max_event_time();
        (e.finish().expect("finish").expect("rows"), max)
    }

    fn engine_format() -> BatchDecoder {
        BatchDecoder::new(stream_format())
    }

    fn counts(outputs: &[QueryOutput]) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for o in outputs {
            for b in &o.rows {
                let sensors = b.column(0).as_string::<i32>();
                let n = cast(b.column(2), &DataType::Int64).expect("count as int");
                let n = n.as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    out.push((sensors.value(i).to_string(), n.value(i)));
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn rows_whose_window_time_is_null_become_dead_letters() {
        let mut e = engine_with(
            "SELECT sensor, tumble(at, INTERVAL '1 minute') AS minute, count(*) AS n \
             FROM s GROUP BY sensor, tumble(at, INTERVAL '1 minute')",
        )
        .await;
        let rows = [
            ("a", T0 + 1_000, Some(T0 + 1_000)),
            ("b", T0 + 2_000, None),
            ("a", T0 + 3_000, Some(T0 + 3_000)),
            ("c", T0 + 4_000, None),
        ];
        let (b, max) = batch(&rows);
        let out = e.process("s", 0, b, max, 1).await.expect("process");
        let dead: Vec<&DeadLetter> = out.iter().flat_map(|o| &o.dead).collect();
        // The rows with a NULL `at`, one letter each, named by the query.
        assert_eq!(dead.len(), 2);
        for (letter, sensor) in dead.iter().zip(["b", "c"]) {
            assert_eq!(letter.reason, DeadReason::NullEventTime);
            assert_eq!((letter.partition, letter.offset), (0, -1));
            assert!(letter.detail.contains("`q`"), "{}", letter.detail);
            let row: serde_json::Value =
                serde_json::from_slice(&letter.payload).expect("the row as JSON");
            assert_eq!(row["sensor"], sensor, "{row}");
        }
        // The others are aggregated: close the window with both partitions' watermarks.
        let (b, max) = batch(&[("z", T0 + 120_000, Some(T0 + 120_000))]);
        let mut out = e.process("s", 0, b, max, 2).await.expect("process");
        let (b, max) = batch(&[("z", T0 + 120_000, Some(T0 + 120_000))]);
        out.extend(e.process("s", 1, b, max, 3).await.expect("process"));
        assert_eq!(counts(&out), vec![("a".to_string(), 2)]);
        assert!(out.iter().all(|o| o.dead.is_empty()));
    }

    #[tokio::test]
    async fn a_partition_with_a_backlog_holds_queries_created_before_and_after() {
        let sql = "SELECT sensor, tumble(ts, INTERVAL '1 minute') AS minute, count(*) AS n \
                   FROM s GROUP BY sensor, tumble(ts, INTERVAL '1 minute')";
        let mut e = engine_with(sql).await;
        e.set_backlog("s", 0, false, 0).expect("partition 0");
        e.set_backlog("s", 1, true, 0).expect("partition 1");
        assert!(e.set_backlog("nope", 1, true, 0).is_err());
        e.create_query(
            QueryDecl {
                name: "later".into(),
                sql: sql.into(),
                allowed_lateness_ms: 0,
                live_rows: 100,
            },
            0,
        )
        .await
        .expect("query");
        let (b, max) = batch(&[("a", T0 + 300_000, Some(T0))]);
        e.process("s", 0, b, max, 1).await.expect("process");
        let (b, max) = batch(&[("b", T0 + 1_000, Some(T0))]);
        e.process("s", 1, b, max, 1).await.expect("process");
        // Nothing arrives for far longer than the idle timeout: partition 1 still
        // has records in Kafka, so its minute stays open.
        assert!(e.tick(1 + 100 * IDLE_MS).expect("tick").is_empty());
        for q in e.queries() {
            assert_eq!(q.watermark, Some(T0 + 1_000), "query {}", q.name);
        }
        // It catches up; once it has been quiet for the idle timeout, the minute closes.
        e.set_backlog("s", 1, false, 2 + 100 * IDLE_MS)
            .expect("caught up");
        assert!(e.tick(1 + 101 * IDLE_MS).expect("tick").is_empty());
        let out = e.tick(2 + 101 * IDLE_MS).expect("tick");
        assert_eq!(out.len(), 2, "both queries emit");
        // The watermark is now partition 0's: b's minute closes, a's (5 minutes on) not.
        let b1 = ("b".to_string(), 1);
        assert_eq!(counts(&out), vec![b1.clone(), b1]);
    }

    #[tokio::test]
    async fn a_query_that_fails_stops_with_its_error_and_the_others_go_on() {
        let mut e = engine_with(
            "SELECT sensor, tumble(ts, INTERVAL '1 minute') AS minute, count(*) AS n \
             FROM s GROUP BY sensor, tumble(ts, INTERVAL '1 minute')",
        )
        .await;
        // Fails at run time on a sensor name that is not a number.
        e.create_query(
            QueryDecl {
                name: "numeric".into(),
                sql: "SELECT sensor, CAST(sensor AS BIGINT) AS n FROM s".into(),
                allowed_lateness_ms: 0,
                live_rows: 100,
            },
            0,
        )
        .await
        .expect("query");
        let (b, max) = batch(&[("17", T0 + 1_000, None)]);
        let out = e.process("s", 0, b, max, 1).await.expect("process");
        assert!(out.iter().all(|o| o.failed.is_none()), "17 is a number");
        let (b, max) = batch(&[("a", T0 + 2_000, None), ("18", T0 + 3_000, None)]);
        let out = e.process("s", 0, b, max, 2).await.expect("process");
        let failed: Vec<_> = out.iter().filter(|o| o.failed.is_some()).collect();
        assert_eq!(failed.len(), 1, "{out:?}");
        assert_eq!(failed[0].query, "numeric");
        assert!(failed[0].rows.is_empty(), "a failed step emits nothing");
        let error = failed[0].failed.clone().unwrap_or_default();
        assert!(error.contains("partition 0 of `s`"), "{error}");
        let info = |e: &Engine, name: &str| {
            e.queries()
                .into_iter()
                .find(|q| q.name == name)
                .expect("listed")
        };
        assert_eq!(info(&e, "numeric").error, Some(error.clone()));
        assert_eq!(info(&e, "q").error, None);
        let rows_in = info(&e, "numeric").stats.rows_in;
        // The failed query reads nothing more; the other one closes its minute.
        let (b, max) = batch(&[("z", T0 + 120_000, None)]);
        let mut out = e.process("s", 0, b, max, 3).await.expect("process");
        let (b, max) = batch(&[("z", T0 + 120_000, None)]);
        out.extend(e.process("s", 1, b, max, 4).await.expect("process"));
        assert!(out.iter().all(|o| o.query == "q" && o.failed.is_none()));
        assert_eq!(
            counts(&out),
            vec![
                ("17".to_string(), 1),
                ("18".to_string(), 1),
                ("a".to_string(), 1)
            ]
        );
        assert_eq!(info(&e, "numeric").stats.rows_in, rows_in);
        // Failing it again keeps the first error.
        e.fail_query("numeric", "later").expect("exists");
        assert_eq!(info(&e, "numeric").error, Some(error));
        assert!(e.fail_query("nope", "x").is_err());
    }

    /// Rows of query outputs, printed (order kept).
    fn printed(outputs: &[QueryOutput]) -> Vec<String> {
        outputs
            .iter()
            .flat_map(|o| &o.rows)
            .map(|b| {
                datafusion::arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
                    .expect("prints")
                    .to_string()
            })
            .collect()
    }

    /// One partition's batch: (partition, rows `(sensor, ts, at)`).
    type Step = (i32, Vec<(&'static str, i64, Option<i64>)>);

    async fn feed(e: &mut Engine, steps: &[Step], from: usize) -> Vec<QueryOutput> {
        let mut out = Vec::new();
        for (k, (p, rows)) in steps.iter().enumerate().skip(from) {
            let (b, max) = batch(rows);
            out.extend(e.process("s", *p, b, max, k as i64).await.expect("process"));
        }
        out
    }

    /// A roll-up per sensor and minute, with a sketch among its aggregates.
    const PER_SENSOR_MINUTE: &str =
        "SELECT sensor, tumble(ts, INTERVAL '1 minute') AS minute, count(*) AS n, \
         sum(value) AS total, approx_median(value) AS mid \
         FROM s GROUP BY sensor, tumble(ts, INTERVAL '1 minute')";

    #[tokio::test]
    async fn an_engine_restored_from_checkpoint_files_goes_on_as_the_original() {
        let sql = PER_SENSOR_MINUTE;
        // Two partitions, minutes interleaved, closing as both move on.
        let steps: Vec<Step> = (0..12)
            .map(|i| {
                let t = T0 + i as i64 * 20_000;
                (
                    i % 2,
                    vec![
                        ("a", t, None),
                        ("b", t + 1_000, None),
                        ("a", t + 5_000, None),
                    ],
                )
            })
            .collect();
        let mut whole = engine_with(sql).await;
        let all = feed(&mut whole, &steps, 0).await;
        assert!(printed(&all).len() >= 3, "minutes close along the way");
        for cut in [0, 1, 5, 12] {
            let mut first = engine_with(sql).await;
            feed(&mut first, &steps[..cut], 0).await;
            let files: BTreeMap<String, Vec<u8>> = first
                .checkpoint_files()
                .expect("files")
                .into_iter()
                .collect();
            assert!(
                files.contains_key("query=q/query.json"),
                "{:?}",
                files.keys()
            );
            let mut restored = engine_with(sql).await;
            restored.restore_files(&files, 100).expect("restores");
            let live = |e: &Engine| {
                e.queries
                    .get("q")
                    .map(|q| q.live.snapshot().expect("rows"))
                    .map(|b| {
                        datafusion::arrow::util::pretty::pretty_format_batches(&b)
                            .expect("prints")
                            .to_string()
                    })
            };
            assert_eq!(live(&restored), live(&first), "the live table is back");
            let latest = |e: &Engine| {
                let t = e.streams["s"]
                    .latest
                    .as_ref()
                    .map(|l| l.0.clone())
                    .expect("a latest table");
                datafusion::arrow::util::pretty::pretty_format_batches(&t.snapshot().expect("rows"))
                    .expect("prints")
                    .to_string()
            };
            assert_eq!(
                latest(&restored),
                latest(&first),
                "the latest table is back"
            );
            let rest = feed(&mut restored, &steps, cut).await;
            assert!(
                cut == 12 || !rest.is_empty(),
                "cut {cut}: the restored engine emits"
            );
            // What the uninterrupted engine emitted from the cut on, row for row.
            let mut tail = engine_with(sql).await;
            let before = feed(&mut tail, &steps[..cut], 0).await;
            assert_eq!(
                printed(&rest),
                printed(&all)[printed(&before).len()..].to_vec(),
                "cut before batch {cut}"
            );
        }
        // State of a query whose SQL changed is refused, naming it.
        let mut other = engine_with(&sql.replace("count(*)", "count(value)")).await;
        let files: BTreeMap<String, Vec<u8>> = whole
            .checkpoint_files()
            .expect("files")
            .into_iter()
            .collect();
        let e = other.restore_files(&files, 0).unwrap_err().to_string();
        assert!(e.contains("query `q` changed"), "{e}");
    }

    /// What a sink holds after `outputs`: each identity's last row, printed.
    fn upserted(outputs: &[QueryOutput]) -> BTreeMap<String, String> {
        let mut rows = BTreeMap::new();
        for b in outputs.iter().flat_map(|o| &o.rows) {
            for i in 0..b.num_rows() {
                let row = b.slice(i, 1);
                let text = datafusion::arrow::util::pretty::pretty_format_batches(
                    std::slice::from_ref(&row),
                )
                .expect("prints")
                .to_string();
                let id = datafusion::arrow::util::pretty::pretty_format_batches(&[row
                    .project(&[0, 1])
                    .expect("identity")])
                .expect("prints")
                .to_string();
                rows.insert(id, text);
            }
        }
        rows
    }

    #[tokio::test]
    async fn a_partition_released_by_one_engine_goes_on_in_another() {
        let sql = PER_SENSOR_MINUTE;
        // Sensor `a` on partition 0, `b` on partition 1 (the message key is the
        // sensor), minutes interleaved.
        let steps: Vec<Step> = (0..12)
            .map(|i| {
                let t = T0 + i as i64 * 20_000;
                let p = i % 2;
                let sensor = ["a", "b"][p as usize];
                (p, vec![(sensor, t, None), (sensor, t + 5_000, None)])
            })
            .collect();
        let end = 10 * IDLE_MS;
        let mut whole = engine_with(sql).await;
        let mut all = feed(&mut whole, &steps, 0).await;
        all.extend(whole.tick(end).expect("tick"));
        let want = upserted(&all);
        assert!(want.len() >= 6, "{want:?}");
        for cut in [0, 3, 7, 12] {
            let mut a = engine_with(sql).await;
            let mut got = feed(&mut a, &steps[..cut], 0).await;
            let files: BTreeMap<String, Vec<u8>> = a
                .release_partition("s", 1, "sensor", cut as i64)
                .expect("releases")
                .into_iter()
                .collect();
            let mut b = engine_on(sql, &[]).await;
            b.adopt_partition("s", 1, &files, cut as i64)
                .expect("adopts");
            for (k, (p, rows)) in steps.iter().enumerate().skip(cut) {
                let (batch, max) = batch(rows);
                let e = if *p == 0 { &mut a } else { &mut b };
                got.extend(
                    e.process("s", *p, batch, max, k as i64)
                        .await
                        .expect("process"),
                );
            }
            got.extend(a.tick(end).expect("tick"));
            got.extend(b.tick(end).expect("tick"));
            assert_eq!(upserted(&got), want, "partition 1 moved before batch {cut}");
            assert!(
                a.release_partition("s", 1, "sensor", end).is_err(),
                "the partition left"
            );
        }

        // A query whose windows take rows of several partitions refuses, naming
        // itself, and keeps the partition.
        let by_minute = "SELECT tumble(ts, INTERVAL '1 minute') AS minute, count(*) AS n \
                         FROM s GROUP BY tumble(ts, INTERVAL '1 minute')";
        let mut a = engine_with(by_minute).await;
        feed(&mut a, &steps[..4], 0).await;
        let e = a
            .release_partition("s", 1, "sensor", 4)
            .expect_err("keys span partitions")
            .to_string();
        assert!(
            e.contains("query `q`") && e.contains("message key `sensor`"),
            "{e}"
        );
        let rest = feed(&mut a, &steps, 4).await;
        assert!(
            !rest.is_empty(),
            "the refused partition is still processed here"
        );
    }
}
