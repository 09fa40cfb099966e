//! The window functions of the SQL dialect: `tumble`, `hop` and `session`.
//!
//! In a continuous query's `GROUP BY` they name the window (see [`crate::plan`]); their
//! value in the result is the window's start. `tumble(ts, size)` is also an ordinary
//! scalar function (the start of the tumbling window containing `ts`), usable in pull
//! queries; `hop` and `session` assign a row to several or data-dependent windows and
//! are only meaningful in a continuous query's `GROUP BY`.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{
    DataType, IntervalMonthDayNano, IntervalUnit, TimeUnit, TimestampMillisecondType,
};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};

use crate::window::floor_to;

/// The timestamp type of window starts: milliseconds, UTC.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")))
}

fn interval() -> DataType {
    DataType::Interval(IntervalUnit::MonthDayNano)
}

/// An interval literal as milliseconds, or why it is not a usable window length.
pub fn interval_ms(v: &ScalarValue) -> Result<i64, String> {
    let i: IntervalMonthDayNano = match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => *i,
        ScalarValue::IntervalDayTime(Some(d)) => {
            return Ok(d.days as i64 * 86_400_000 + d.milliseconds as i64)
        }
        other => {
            return Err(format!(
                "expected an interval such as INTERVAL '1 minute', got {other}"
            ))
        }
    };
    if i.months != 0 {
        return Err("month intervals have no fixed length; use days".into());
    }
    let ms = i.days as i64 * 86_400_000 + i.nanoseconds / 1_000_000;
    if ms <= 0 {
        return Err(format!("the interval must be at least 1 ms, got {ms} ms"));
    }
    Ok(ms)
}

fn tumble_impl(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let size = match &args[1] {
        ColumnarValue::Scalar(s) => match interval_ms(s) {
            Ok(ms) => ms,
            Err(e) => return exec_err!("tumble(): {e}"),
        },
        ColumnarValue::Array(_) => {
            return exec_err!("tumble(): the size must be a constant interval")
        }
    };
    match &args[0] {
        ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(v, tz)) => {
            Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
                v.map(|t| floor_to(t, size)),
                tz.clone(),
            )))
        }
        ColumnarValue::Scalar(other) => exec_err!("tumble(): expected a timestamp, got {other}"),
        ColumnarValue::Array(a) => {
            let ts = a.as_primitive::<TimestampMillisecondType>();
            let out: TimestampMillisecondArray = ts.unary(|t| floor_to(t, size));
            let out = out.with_timezone_opt(ts.timezone().map(Arc::<str>::from));
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }
    }
}

/// `tumble(ts, size)`.
pub fn tumble() -> ScalarUDF {
    create_udf(
        "tumble",
        vec![ts_type(), interval()],
        ts_type(),
        Volatility::Immutable,
        Arc::new(tumble_impl),
    )
}

type ScalarFn = Arc<dyn Fn(&[ColumnarValue]) -> Result<ColumnarValue> + Send + Sync>;

fn only_in_group_by(name: &'static str) -> ScalarFn {
    Arc::new(move |_| {
        exec_err!("{name}() names a window; use it in the GROUP BY of a continuous query")
    })
}

/// `hop(ts, slide, size)`.
pub fn hop() -> ScalarUDF {
    create_udf(
        "hop",
        vec![ts_type(), interval(), interval()],
        ts_type(),
        Volatility::Immutable,
        only_in_group_by("hop"),
    )
}

/// `session(ts, gap)`.
pub fn session() -> ScalarUDF {
    create_udf(
        "session",
        vec![ts_type(), interval()],
        ts_type(),
        Volatility::Immutable,
        only_in_group_by("session"),
    )
}

/// Registers the window functions with a session.
pub fn register(ctx: &datafusion::prelude::SessionContext) {
    ctx.register_udf(tumble());
    ctx.register_udf(hop());
    ctx.register_udf(session());
}
