//! The PostgreSQL sink: upserts rows into a table per query.
//!
//! The table (by default named after the query) is created if absent, with one
//! column per output column and a unique constraint on the row identity. The
//! constraint is `NULLS NOT DISTINCT` (PostgreSQL 15 or later), because a group key
//! can be NULL (`GROUP BY site` over sensors without a site) and such a row must be
//! upserted like any other, not refused. Rows are written in multi-row
//! `INSERT ... ON CONFLICT (identity) DO UPDATE` statements, so a window emitted again
//! replaces its row and a replay after a crash changes nothing. A retracted identity
//! is deleted (`DELETE ... WHERE` each identity column `IS NOT DISTINCT FROM` its value).
//!
//! Types: text ← strings, double precision ← floats, bigint ← integers, boolean,
//! timestamptz ← timestamps. Column names longer than PostgreSQL's 63 bytes are
//! refused: alias them in the query.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::{last_per_identity, Error, QueryShape, Result, Sink};

/// PostgreSQL's limit on bind parameters per statement.
const MAX_PARAMS: usize = 65_535;
/// The oldest server the sink works with (`server_version_num` of 15.0).
const MIN_SERVER_VERSION: i64 = 150_000;
/// Rows per statement at most.
const MAX_ROWS: usize = 1_000;

/// Upserts rows into PostgreSQL.
pub struct PostgresSink {
    name: String,
    url: String,
    /// Table per query (default: the query's name).
    tables: HashMap<String, String>,
    client: Mutex<Option<Client>>,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn pg_type(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            "double precision"
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "bigint",
        DataType::Boolean => "boolean",
        DataType::Timestamp(..) => "timestamptz",
        _ => return None,
    })
}

impl PostgresSink {
    /// `url`: `postgres://user:password@host:port/db`; `tables`: query → table.
    pub fn new(name: &str, url: &str, tables: HashMap<String, String>) -> Self {
        Self {
            name: name.to_string(),
            url: url.to_string(),
            tables,
            client: Mutex::new(None),
        }
    }

    /// Runs `sql(rows)` over the rows of `batch`, as many rows a statement as the
    /// parameter limit allows, each row's columns in turn as parameters.
    async fn execute_rows(&self, batch: &RecordBatch, sql: impl Fn(usize) -> String) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let cols = params(batch)?;
        let ncols = batch.num_columns().max(1);
        let per_stmt = (MAX_PARAMS / ncols).clamp(1, MAX_ROWS);
        let mut slot = self.client.lock().await;
        let client = self.client(&mut slot).await?;
        let mut start = 0;
        while start < batch.num_rows() {
            let rows = per_stmt.min(batch.num_rows() - start);
            let mut refs: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows * ncols);
            for r in start..start + rows {
                for c in &cols {
                    refs.push(c[r].as_ref() as &(dyn ToSql + Sync));
                }
            }
            let stmt = client.prepare(&sql(rows)).await?;
            client.execute(&stmt, &refs).await?;
            start += rows;
        }
        Ok(())
    }

    fn table(&self, query: &str) -> String {
        self.tables
            .get(query)
            .cloned()
            .unwrap_or_else(|| query.to_string())
    }

    async fn client<'a>(&self, slot: &'a mut Option<Client>) -> Result<&'a Client> {
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|e| {
                    Error::postgres(format!(
                        "cannot connect for sink `{}`: {e}; is PostgreSQL up? check the sink's `url`",
                        self.name
                    ))
                })?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "PostgreSQL connection closed");
                }
            });
            *slot = Some(client);
        }
        slot.as_ref()
            .ok_or_else(|| Error::postgres("no connection".into()))
    }
}

/// The `CREATE TABLE IF NOT EXISTS` statement for a query.
pub fn create_table_sql(table: &str, shape: &QueryShape) -> Result<String> {
    let mut cols = Vec::new();
    for f in shape.schema.fields() {
        if f.name().len() > 63 {
            return Err(Error::Config(format!(
                "query `{}`: column name `{}` is longer than PostgreSQL's 63 bytes; alias it (AS short_name)",
                shape.query,
                f.name()
            )));
        }
        let t = pg_type(f.data_type()).ok_or_else(|| {
            Error::Config(format!(
                "query `{}`: column `{}` has type {}, which the PostgreSQL sink cannot store",
                shape.query,
                f.name(),
                f.data_type()
            ))
        })?;
        cols.push(format!("{} {t}", quote(f.name())));
    }
    let pk: Vec<String> = shape.identity_names().iter().map(|n| quote(n)).collect();
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, UNIQUE NULLS NOT DISTINCT ({}))",
        quote(table),
        cols.join(", "),
        pk.join(", ")
    ))
}

/// Checks that a table (perhaps made before, by hand or by an older query) can take
/// the query's rows: every output column exists, and a unique constraint on exactly
/// the identity columns lets `ON CONFLICT` find a row's earlier version. Without one,
/// every write would fail (or, with `NULLS DISTINCT` and a NULL key, insert the row
/// again), so the query is refused when it starts, with what to change.
async fn check_table(client: &Client, sink: &str, table: &str, shape: &QueryShape) -> Result<()> {
    let quoted = quote(table);
    let rows = client
        .query(
            "SELECT a.attname::text, a.attnotnull, t.typname::text FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            &[&quoted],
        )
        .await?;
    let columns: HashMap<String, bool> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let types: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(2))).collect();
    let missing: Vec<&str> = shape
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !columns.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "sink `{sink}`: table {quoted} exists but has no column {} that query `{}` writes; \
             add the columns, drop the table so the sink creates it, or map the query to another \
             table in the sink's `tables`",
            missing.join(", "),
            shape.query
        )));
    }
    for f in shape.schema.fields() {
        let (Some(found), Some(sql_type)) = (types.get(f.name()), pg_type(f.data_type())) else {
            continue;
        };
        if !accepts(sql_type).contains(&found.as_str()) {
            return Err(Error::Config(format!(
                "sink `{sink}`: column {} of table {quoted} is {found}, but query `{}` writes {sql_type} \
                 there (the sink can write into: {}); change the column's type or drop the table \
                 so the sink creates it",
                quote(f.name()),
                shape.query,
                accepts(sql_type).join(", ")
            )));
        }
    }
    let identity: Vec<&str> = shape.identity_names();
    let mut wanted: Vec<&str> = identity.clone();
    wanted.sort_unstable();
    let unique = client
        .query(
            "SELECT i.indnullsnotdistinct, ARRAY(SELECT a.attname::text \
               FROM unnest(i.indkey::int2[]) AS k(n) \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n) \
             FROM pg_index i \
             WHERE i.indrelid = $1::text::regclass AND i.indisunique \
               AND i.indpred IS NULL AND i.indexprs IS NULL",
            &[&quoted],
        )
        .await?;
    let on_identity = unique
        .iter()
        .map(|r| (r.get::<_, bool>(0), r.get::<_, Vec<String>>(1)))
        .find(|(_, cols)| {
            let mut cols: Vec<&str> = cols.iter().map(String::as_str).collect();
            cols.sort_unstable();
            cols == wanted
        });
    let list = identity
        .iter()
        .map(|n| quote(n))
        .collect::<Vec<_>>()
        .join(", ");
    match on_identity {
        None => Err(Error::Config(format!(
            "sink `{sink}`: table {quoted} exists but has no unique constraint on the row identity \
             ({list}) of query `{}`, which the sink upserts by; add one \
             (ALTER TABLE {quoted} ADD UNIQUE NULLS NOT DISTINCT ({list})) or drop the table so \
             the sink creates it",
            shape.query
        ))),
        Some((false, _)) if identity.iter().any(|n| columns.get(*n) == Some(&false)) => {
            Err(Error::Config(format!(
                "sink `{sink}`: table {quoted}'s unique constraint on ({list}) treats NULLs as \
                 distinct, so a row with a NULL key would be inserted again at every write; \
                 recreate it as UNIQUE NULLS NOT DISTINCT ({list}) or make those columns NOT NULL"
            )))
        }
        Some(_) => Ok(()),
    }
}

/// The column types (`pg_type.typname`) a value of the sink's type can be written to.
fn accepts(sql_type: &str) -> &'static [&'static str] {
    match sql_type {
        "text" => &["text", "varchar", "bpchar", "name"],
        "double precision" => &["float8"],
        "bigint" => &["int8"],
        "boolean" => &["bool"],
        _ => &["timestamptz", "timestamp"],
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

/// Column values of `batch` as statement parameters, column-major.
fn params(batch: &RecordBatch) -> Result<Vec<Vec<Param>>> {
    let n = batch.num_rows();
    let mut out = Vec::with_capacity(batch.num_columns());
    for col in batch.columns() {
        let mut v: Vec<Param> = Vec::with_capacity(n);
        match col.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let c = cast(col, &DataType::Utf8)?;
                let s = c.as_string::<i32>();
                for i in 0..n {
                    v.push(Box::new(s.is_valid(i).then(|| s.value(i).to_string())));
                }
            }
            DataType::Boolean => {
                let b = col.as_boolean();
                for i in 0..n {
                    v.push(Box::new(b.is_valid(i).then(|| b.value(i))));
                }
            }
            DataType::Timestamp(..) => {
                let c = cast(col, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
                let t = c.as_primitive::<TimestampMicrosecondType>();
                for i in 0..n {
                    v.push(Box::new(t.is_valid(i).then(|| micros_to_time(t.value(i)))));
                }
            }
            t if pg_type(t) == Some("bigint") => {
                let c = cast(col, &DataType::Int64)?;
                let x = c.as_primitive::<Int64Type>();
                for i in 0..n {
                    v.push(Box::new(x.is_valid(i).then(|| x.value(i))));
                }
            }
            _ => {
                let c = cast(col, &DataType::Float64)?;
                let x = c.as_primitive::<Float64Type>();
                for i in 0..n {
                    v.push(Box::new(x.is_valid(i).then(|| x.value(i))));
                }
            }
        }
        out.push(v);
    }
    Ok(out)
}

fn micros_to_time(us: i64) -> SystemTime {
    if us >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

/// The upsert statement for `rows` rows.
pub fn upsert_sql(table: &str, shape: &QueryShape, rows: usize) -> String {
    let names: Vec<String> = shape
        .schema
        .fields()
        .iter()
        .map(|f| quote(f.name()))
        .collect();
    let ncols = names.len();
    let mut values = Vec::with_capacity(rows);
    for r in 0..rows {
        let ps: Vec<String> = (0..ncols)
            .map(|c| format!("${}", r * ncols + c + 1))
            .collect();
        values.push(format!("({})", ps.join(", ")));
    }
    let pk: Vec<String> = shape.identity_names().iter().map(|n| quote(n)).collect();
    let updates: Vec<String> = shape
        .schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| !shape.identity.contains(i))
        .map(|(_, f)| format!("{0} = EXCLUDED.{0}", quote(f.name())))
        .collect();
    let conflict = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    format!(
        "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) {conflict}",
        quote(table),
        names.join(", "),
        values.join(", "),
        pk.join(", ")
    )
}

/// The `DELETE` of `rows` identities (parameters: each identity's columns in turn).
/// NULL keys match NULL, as the table's unique constraint treats them.
pub fn delete_sql(table: &str, shape: &QueryShape, rows: usize) -> String {
    let names: Vec<String> = shape.identity_names().iter().map(|n| quote(n)).collect();
    let ncols = names.len();
    let mut each = Vec::with_capacity(rows);
    for r in 0..rows {
        let conds: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(c, n)| format!("{n} IS NOT DISTINCT FROM ${}", r * ncols + c + 1))
            .collect();
        each.push(format!("({})", conds.join(" AND ")));
    }
    format!("DELETE FROM {} WHERE {}", quote(table), each.join(" OR "))
}

#[async_trait]
impl Sink for PostgresSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(&self, shape: &QueryShape) -> Result<()> {
        let sql = create_table_sql(&self.table(&shape.query), shape)?;
        let mut slot = self.client.lock().await;
        let client = self.client(&mut slot).await?;
        let version: i64 = client
            .query_one("SELECT current_setting('server_version_num')::bigint", &[])
            .await?
            .get(0);
        if version < MIN_SERVER_VERSION {
            return Err(Error::Config(format!(
                "sink `{}`: the PostgreSQL server is version {version}; the sink needs 15 or later (its tables are unique on the row identity with NULLS NOT DISTINCT)",
                self.name
            )));
        }
        client.batch_execute(&sql).await?;
        check_table(client, &self.name, &self.table(&shape.query), shape).await
    }

    async fn retract(&self, shape: &QueryShape, ids: &RecordBatch) -> Result<()> {
        let table = self.table(&shape.query);
        self.execute_rows(ids, |rows| delete_sql(&table, shape, rows))
            .await
    }

    async fn write(&self, shape: &QueryShape, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        // Rows with the same identity in one statement would conflict with each other:
        // keep the last of each.
        let batch = last_per_identity(shape, batch)?;
        let table = self.table(&shape.query);
        self.execute_rows(&batch, |rows| upsert_sql(&table, shape, rows))
            .await
    }
}
