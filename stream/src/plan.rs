//! Continuous queries: SQL planned by DataFusion, run incrementally.
//!
//! A continuous query is an ordinary `SELECT` over one stream (plus, optionally,
//! static reference tables joined to it). DataFusion parses, resolves and type-checks
//! it as a batch query; the planner then cuts the logical plan in three:
//!
//! 1. **pre**: everything below the `GROUP BY` (scan, joins with reference tables,
//!    `WHERE`), extended with a projection of the group keys, the window's time column
//!    and the aggregate arguments. It runs on every incoming batch, through DataFusion.
//! 2. **window aggregation**: the `GROUP BY` itself, run by this crate's incremental
//!    two-stage operator ([`crate::operator`]) with the window named by exactly one of
//!    `tumble(ts, size)`, `hop(ts, slide, size)` or `session(ts, gap)` among the
//!    group expressions.
//! 3. **post**: `HAVING` and the `SELECT` list over the aggregate's output, evaluated as
//!    DataFusion physical expressions on every emitted batch of windows.
//!
//! A query without `GROUP BY` is a continuous filter/projection: its whole plan runs on
//! every batch and its rows are emitted at once.
//!
//! Supported aggregates: `count(*)`, `count(x)`, `sum`, `min`, `max`, `avg`/`mean`,
//! `stddev`/`stddev_samp`, `stddev_pop`, `var`/`var_samp`/`variance`, `var_pop`,
//! `first_value`, `last_value` (by event time), `approx_percentile_cont(p) WITHIN
//! GROUP (ORDER BY x)` and `approx_median(x)`. Arguments are numeric (computed as
//! DOUBLE); results take the type DataFusion gives them.
//!
//! Every output row has an identity: the query's name, its group keys and its window
//! start. A windowed query must therefore select every group expression.

use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::{DFSchemaRef, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{cast, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::accum::AggKind;
use crate::udf::{self, interval_ms};
use crate::window::WindowSpec;
use crate::{Error, Result};

/// Where the per-batch plan reads its input: the batch being processed.
#[derive(Debug, Default)]
pub struct Slot {
    batches: Mutex<Vec<RecordBatch>>,
}

impl Slot {
    /// Puts the next input in place.
    pub fn set(&self, batch: RecordBatch) {
        let mut b = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        b.clear();
        b.push(batch);
    }
}

#[derive(Debug)]
struct SlotStream {
    schema: SchemaRef,
    slot: Arc<Slot>,
}

impl PartitionStream for SlotStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches =
            std::mem::take(&mut *self.slot.batches.lock().unwrap_or_else(|e| e.into_inner()));
        let stream = futures::stream::iter(batches.into_iter().map(Ok));
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// A stream as a table of the planning context: each execution reads the slot.
pub fn slot_table(schema: SchemaRef, slot: Arc<Slot>) -> Result<StreamingTable> {
    let part: Arc<dyn PartitionStream> = Arc::new(SlotStream {
        schema: schema.clone(),
        slot,
    });
    Ok(StreamingTable::try_new(schema, vec![part])?)
}

/// A planning context: one target partition, the window functions registered.
pub fn planning_context() -> SessionContext {
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    let ctx = SessionContext::new_with_config(config);
    udf::register(&ctx);
    ctx
}

/// One step after the window aggregation.
pub enum PostStep {
    /// `HAVING`: keep rows where the predicate is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// The `SELECT` list.
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
}

/// The compiled form of a windowed query.
pub struct WindowedPlan {
    pub spec: WindowSpec,
    /// Per batch: `[keys..., __ts, args...]`.
    pub pre: Arc<dyn ExecutionPlan>,
    /// `pre`'s schema with readable names, for late rows sent to a side output.
    pub late_schema: SchemaRef,
    /// Number of key columns at the front of `pre`'s output.
    pub n_keys: usize,
    /// For each group key that is a column of the input (possibly behind casts),
    /// its name: a query whose keys include the stream's message key groups within
    /// partitions.
    pub key_columns: Vec<Option<String>>,
    /// Aggregates, in the order of the `GROUP BY`'s aggregate list.
    pub kinds: Arc<[AggKind]>,
    /// For each aggregate, the column of `pre`'s output holding its argument.
    pub arg_columns: Vec<Option<usize>>,
    /// Position of the window among the group expressions.
    pub window_pos: usize,
    /// The aggregate's output schema (group expressions, then aggregates).
    pub agg_schema: SchemaRef,
    pub post: Vec<PostStep>,
}

/// What a continuous query compiles to.
pub enum CompiledKind {
    Windowed(WindowedPlan),
    /// No `GROUP BY`: the whole plan runs per batch.
    Stateless(Arc<dyn ExecutionPlan>),
}

/// A compiled continuous query.
pub struct Compiled {
    pub kind: CompiledKind,
    pub output_schema: SchemaRef,
    /// Output columns that identify a row (group keys and window start).
    pub identity: Vec<usize>,
    /// The output column holding the window start (windowed queries).
    pub window_column: Option<usize>,
    /// The per-batch plan's input.
    pub slot: Arc<Slot>,
    pub task_ctx: Arc<TaskContext>,
    /// The per-batch plan holds state between executions (a join's build side) and
    /// must be reset before each one.
    pub reset: bool,
}

/// Whether a physical plan caches state across executions (joins keep their build
/// side), so that re-running it on the next batch would reuse the first batch's rows.
fn has_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.name().contains("Join") || plan.children().iter().any(|c| has_join(c))
}

fn sql_err(msg: impl Into<String>) -> Error {
    Error::Sql(msg.into())
}

/// Plans `sql` as a continuous query over `stream` (a table of `ctx` backed by
/// `slot`). `ctx` also holds the reference tables.
pub async fn compile(ctx: &SessionContext, sql: &str, slot: Arc<Slot>) -> Result<Compiled> {
    let state = ctx.state();
    let plan = state
        .create_logical_plan(sql)
        .await
        .map_err(|e| sql_err(describe(e)))?;
    let plan = ctx
        .state()
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})
        .map_err(|e| sql_err(describe(e)))?;
    // The nodes above the aggregate, top first.
    let mut above: Vec<&LogicalPlan> = Vec::new();
    let mut node = &plan;
    let agg = loop {
        match node {
            LogicalPlan::Aggregate(a) => break Some(a),
            LogicalPlan::Projection(p) => {
                above.push(node);
                node = &p.input;
            }
            LogicalPlan::Filter(f) => {
                above.push(node);
                node = &f.input;
            }
            LogicalPlan::SubqueryAlias(s) => {
                above.push(node);
                node = &s.input;
            }
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
                return Err(sql_err(
                    "ORDER BY and LIMIT have no end on an unbounded stream; use them in a pull query over the continuous query's live table",
                ))
            }
            LogicalPlan::Distinct(_) => {
                return Err(sql_err("SELECT DISTINCT is not supported in a continuous query; GROUP BY the columns and a window instead"))
            }
            LogicalPlan::Window(_) => {
                return Err(sql_err("OVER (...) window functions are not supported in a continuous query; use tumble/hop/session in GROUP BY"))
            }
            LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Statement(_) | LogicalPlan::Copy(_) => {
                return Err(sql_err("a continuous query must be a SELECT"))
            }
            _ => break None,
        }
    };
    let task_ctx = ctx.task_ctx();
    let Some(agg) = agg else {
        check_no_aggregate(&plan)?;
        let output_schema = Arc::new(plan.schema().as_arrow().clone());
        let physical = state.create_physical_plan(&plan).await?;
        return Ok(Compiled {
            reset: has_join(&physical),
            kind: CompiledKind::Stateless(physical),
            identity: Vec::new(),
            window_column: None,
            output_schema,
            slot,
            task_ctx,
        });
    };
    check_no_aggregate(&agg.input)?;

    // The window among the group expressions.
    let mut window = None;
    let mut keys = Vec::new();
    for (i, g) in agg.group_expr.iter().enumerate() {
        match window_call(g)? {
            Some(w) => {
                if window.is_some() {
                    return Err(sql_err("GROUP BY names more than one window; use exactly one of tumble, hop, session"));
                }
                window = Some((i, w));
            }
            None => keys.push(g.clone()),
        }
    }
    let Some((window_pos, (spec, ts_expr))) = window else {
        return Err(sql_err(
            "a continuous query's GROUP BY needs a window, e.g. GROUP BY sensor, tumble(ts, INTERVAL '1 minute'); without one its groups would never close",
        ));
    };
    spec.validate().map_err(sql_err)?;

    // The aggregates and their arguments.
    let mut kinds = Vec::new();
    let mut arg_exprs: Vec<Expr> = Vec::new();
    let mut arg_columns = Vec::new();
    for e in &agg.aggr_expr {
        let (kind, arg) = aggregate_of(e)?;
        kinds.push(kind);
        match arg {
            // Aggregates of one expression (avg(v), max(v)) share its column.
            Some(a) => match arg_exprs.iter().position(|x| *x == a) {
                Some(j) => arg_columns.push(Some(keys.len() + 1 + j)),
                None => {
                    arg_columns.push(Some(keys.len() + 1 + arg_exprs.len()));
                    arg_exprs.push(a);
                }
            },
            None => arg_columns.push(None),
        }
    }

    // The per-batch pre-aggregation plan.
    let input = agg.input.as_ref().clone();
    let input_schema = input.schema().clone();
    let mut proj: Vec<Expr> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        proj.push(k.clone().alias(format!("__k{i}")));
    }
    proj.push(cast(ts_expr.clone(), udf::ts_type()).alias("__ts"));
    for (j, a) in arg_exprs.iter().enumerate() {
        let t = a
            .get_type(input_schema.as_ref())
            .map_err(|e| sql_err(describe(e)))?;
        if !t.is_numeric() && !matches!(t, DataType::Boolean | DataType::Null) {
            return Err(sql_err(format!(
                "aggregate argument `{a}` has type {t}; continuous aggregates take numbers"
            )));
        }
        proj.push(cast(a.clone(), DataType::Float64).alias(format!("__a{j}")));
    }
    let pre_plan = LogicalPlanBuilder::from(input).project(proj)?.build()?;
    let pre = state.create_physical_plan(&pre_plan).await?;
    let late_schema = late_schema(&pre.schema(), &keys, &ts_expr, &arg_exprs);

    // The post-aggregation steps, bottom up.
    let agg_schema: DFSchemaRef = agg.schema.clone();
    let mut schema = agg_schema.clone();
    let mut post = Vec::new();
    // Which aggregate-output columns each current column came from (for identity).
    let n_group = agg.group_expr.len();
    let mut origin: Vec<Option<usize>> = (0..schema.fields().len())
        .map(|i| (i < n_group).then_some(i))
        .collect();
    for node in above.iter().rev() {
        match node {
            LogicalPlan::Filter(f) => {
                post.push(PostStep::Filter(
                    state.create_physical_expr(f.predicate.clone(), &schema)?,
                ));
            }
            LogicalPlan::Projection(p) => {
                let mut exprs = Vec::new();
                let mut next_origin = Vec::new();
                for e in &p.expr {
                    exprs.push(state.create_physical_expr(e.clone(), &schema)?);
                    let inner = match e {
                        Expr::Alias(a) => a.expr.as_ref(),
                        other => other,
                    };
                    next_origin.push(match inner {
                        Expr::Column(c) => schema.index_of_column(c).ok().and_then(|i| origin[i]),
                        _ => None,
                    });
                }
                let out = Arc::new(p.schema.as_arrow().clone());
                post.push(PostStep::Project(exprs, out));
                origin = next_origin;
                schema = p.schema.clone();
            }
            LogicalPlan::SubqueryAlias(s) => {
                schema = s.schema.clone();
            }
            _ => unreachable!("only projections, filters and aliases are collected"),
        }
    }
    let mut identity = Vec::new();
    for g in 0..n_group {
        match origin.iter().position(|o| *o == Some(g)) {
            Some(i) => identity.push(i),
            None => {
                return Err(sql_err(format!(
                    "select every GROUP BY expression so each row has an identity; `{}` is missing from the SELECT list",
                    agg.group_expr[g]
                )))
            }
        }
    }
    let window_column = origin.iter().position(|o| *o == Some(window_pos));
    Ok(Compiled {
        window_column,
        reset: has_join(&pre),
        kind: CompiledKind::Windowed(WindowedPlan {
            spec,
            pre,
            late_schema,
            n_keys: keys.len(),
            key_columns: keys
                .iter()
                .map(|k| column_name(k).map(str::to_string))
                .collect(),
            kinds: Arc::from(kinds),
            arg_columns,
            window_pos,
            agg_schema: Arc::new(agg_schema.as_arrow().clone()),
            post,
        }),
        output_schema: Arc::new(schema.as_arrow().clone()),
        identity,
        slot,
        task_ctx,
    })
}

/// The name of the column `e` is, possibly behind casts the planner added.
fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(&c.name),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        _ => None,
    }
}

/// The schema of late rows: the pre-aggregation columns named after what they hold
/// (a column's own name, else the expression's text; the event time keeps its
/// column's name, else `event_time`), made unique with a `_2`, `_3`... suffix.
fn late_schema(pre: &SchemaRef, keys: &[Expr], ts: &Expr, args: &[Expr]) -> SchemaRef {
    let column = column_name;
    let name = |e: &Expr| column(e).map_or_else(|| e.schema_name().to_string(), str::to_string);
    let ts_name = column(ts).unwrap_or("event_time").to_string();
    let wanted = keys
        .iter()
        .map(name)
        .chain(std::iter::once(ts_name))
        .chain(args.iter().map(name));
    let mut used = std::collections::HashSet::new();
    let fields: Vec<Field> = pre
        .fields()
        .iter()
        .zip(wanted)
        .map(|(f, want)| {
            let mut n = want.clone();
            let mut k = 1;
            while !used.insert(n.clone()) {
                k += 1;
                n = format!("{want}_{k}");
            }
            f.as_ref().clone().with_name(n)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// DataFusion's message without its internal prefixes.
pub fn describe(e: datafusion::error::DataFusionError) -> String {
    let s = e.strip_backtrace();
    for prefix in [
        "Error during planning: ",
        "SQL error: ",
        "Schema error: ",
        "Execution error: ",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    s
}

fn check_no_aggregate(plan: &LogicalPlan) -> Result<()> {
    let mut found = None;
    plan.apply(|p| {
        match p {
            LogicalPlan::Aggregate(_) => {
                found = Some("an aggregate below the top of the query (in a subquery or join)")
            }
            LogicalPlan::Window(_) => found = Some("OVER (...) window functions"),
            LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => found = Some("ORDER BY / LIMIT"),
            LogicalPlan::Distinct(_) => found = Some("DISTINCT"),
            _ => {}
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    match found {
        Some(what) => Err(sql_err(format!(
            "{what} is not supported in a continuous query; the supported shape is SELECT ... FROM stream [JOIN table ...] [WHERE ...] [GROUP BY keys, tumble|hop|session(...)] [HAVING ...]"
        ))),
        None => Ok(()),
    }
}

use datafusion::common::tree_node::TreeNode;

/// If `e` is a window call, its spec and time expression.
fn window_call(e: &Expr) -> Result<Option<(WindowSpec, Expr)>> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::ScalarFunction(f) = e else {
        return Ok(None);
    };
    let name = f.func.name();
    let lit = |i: usize| -> Result<i64> {
        match f.args.get(i) {
            Some(Expr::Literal(v, _)) => {
                interval_ms(v).map_err(|m| sql_err(format!("{name}(): {m}")))
            }
            Some(Expr::Cast(c)) => match c.expr.as_ref() {
                Expr::Literal(v, _) => {
                    interval_ms(v).map_err(|m| sql_err(format!("{name}(): {m}")))
                }
                other => Err(sql_err(format!(
                    "{name}(): the length must be a constant interval, got `{other}`"
                ))),
            },
            Some(other) => Err(sql_err(format!(
                "{name}(): the length must be a constant interval, got `{other}`"
            ))),
            None => Err(sql_err(format!("{name}(): missing argument"))),
        }
    };
    let spec = match name {
        "tumble" => WindowSpec::Tumble { size: lit(1)? },
        "hop" => WindowSpec::Hop {
            slide: lit(1)?,
            size: lit(2)?,
        },
        "session" => WindowSpec::Session { gap: lit(1)? },
        _ => return Ok(None),
    };
    Ok(Some((spec, f.args[0].clone())))
}

/// The aggregate kind of an aggregate expression and its argument.
fn aggregate_of(e: &Expr) -> Result<(AggKind, Option<Expr>)> {
    let inner = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(f) = inner else {
        return Err(sql_err(format!("`{e}` is not an aggregate")));
    };
    let name = f.func.name().to_ascii_lowercase();
    let p = &f.params;
    if p.distinct {
        return Err(sql_err(format!(
            "{name}(DISTINCT ...) is not supported in a continuous query"
        )));
    }
    if p.filter.is_some() {
        return Err(sql_err(format!("{name}(...) FILTER (WHERE ...) is not supported; move the condition into WHERE or CASE")));
    }
    let arg = p.args.first().cloned();
    let count_star = |a: &Option<Expr>| {
        matches!(
            a,
            None | Some(Expr::Literal(ScalarValue::Int64(Some(_)), _))
        )
    };
    let kind = match name.as_str() {
        "count" if count_star(&arg) => return Ok((AggKind::CountStar, None)),
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" | "mean" => AggKind::Avg,
        "stddev" | "stddev_samp" => AggKind::StddevSamp,
        "stddev_pop" => AggKind::StddevPop,
        "var" | "var_samp" | "var_sample" | "variance" => AggKind::VarSamp,
        "var_pop" | "var_population" => AggKind::VarPop,
        "first_value" => AggKind::First,
        "last_value" => AggKind::Last,
        "approx_median" => AggKind::Percentile(0.5),
        "approx_percentile_cont" => {
            let q = match p.args.get(1) {
                Some(Expr::Literal(v, _)) => v.to_string().parse::<f64>().ok(),
                Some(Expr::Cast(c)) => match c.expr.as_ref() {
                    Expr::Literal(v, _) => v.to_string().parse::<f64>().ok(),
                    _ => None,
                },
                _ => None,
            };
            match q {
                Some(q) if (0.0..=1.0).contains(&q) => AggKind::Percentile(q),
                _ => return Err(sql_err("approx_percentile_cont: the percentile must be a constant between 0 and 1")),
            }
        }
        other => {
            return Err(sql_err(format!(
                "aggregate {other}() is not supported in a continuous query; supported: count, sum, min, max, avg, stddev, stddev_pop, var, var_pop, first_value, last_value, approx_percentile_cont, approx_median"
            )))
        }
    };
    if !p.order_by.is_empty()
        && !matches!(
            kind,
            AggKind::Percentile(_) | AggKind::First | AggKind::Last
        )
    {
        return Err(sql_err(format!(
            "{name}(... ORDER BY ...) is not supported"
        )));
    }
    Ok((kind, arg))
}

/// A Field for a window-start column.
pub fn window_field(name: &str) -> Field {
    Field::new(name, udf::ts_type(), false)
}

/// An empty schema (for queries that emitted nothing yet).
pub fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}
