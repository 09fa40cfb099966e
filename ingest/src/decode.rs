//! Kafka records into Arrow batches: the pure decoding core.
//!
//! [`BatchDecoder::push_at`] appends one record to the batch being built, or returns a
//! [`DeadLetter`] that says why it could not (the batch is untouched: a record is
//! appended whole or not at all). [`BatchDecoder::finish`] closes the batch.
//!
//! A stream may bound how far in the future an event time can be
//! ([`BatchDecoder::with_max_future`]): one absurd time (a gateway whose clock says
//! 2099) would otherwise move its partition's watermark past every real window for
//! good. A record whose event time is more than the bound ahead of the clock passed
//! to [`BatchDecoder::push_at`] is a dead letter (`future_event_time`). Time is an
//! argument: the decoder reads no clock.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder, UInt64Builder,
};
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use edgeflow_wire::{self as wire, AggregateRecord, ReadingRecord};
use serde_json::Value;

use crate::format::{ColumnType, Format, FormatKind};
use crate::Result;

/// One Kafka record as the decoder sees it (borrowed from the consumer's message).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawRecord<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The `edgeflow-encoding` header, if any.
    pub encoding: Option<&'a str>,
    /// The `edgeflow-kind` header, if any.
    pub kind: Option<&'a str>,
}

/// Why a record went to the dead-letter path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// No value at all (a tombstone).
    Empty,
    /// The `edgeflow-encoding` header names an encoding this version does not know.
    UnknownEncoding,
    /// The `edgeflow-kind` header says the record is not what the stream carries.
    WrongKind,
    /// The bytes do not parse in the record's encoding.
    Malformed,
    /// A required field (the event time) is absent or null.
    MissingField,
    /// A field has the wrong JSON type for its declared column.
    WrongType,
    /// The event time is further ahead of the processor's clock than the stream's
    /// `max_future`.
    FutureEventTime,
    /// A continuous query's window time (the expression in `tumble`/`hop`/`session`)
    /// is NULL for the row, so no window can hold it.
    NullEventTime,
}

impl DeadReason {
    /// Every reason, for metrics.
    pub const ALL: [DeadReason; 8] = [
        Self::Empty,
        Self::UnknownEncoding,
        Self::WrongKind,
        Self::Malformed,
        Self::MissingField,
        Self::WrongType,
        Self::FutureEventTime,
        Self::NullEventTime,
    ];

    /// The reason's position in [`DeadReason::ALL`] (for per-reason counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason's name (metrics label, dead-letter header).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::UnknownEncoding => "unknown_encoding",
            Self::WrongKind => "wrong_kind",
            Self::Malformed => "malformed",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::FutureEventTime => "future_event_time",
            Self::NullEventTime => "null_event_time",
        }
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that could not be decoded (or a row a continuous query could not place),
/// with everything needed to inspect or replay it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub partition: i32,
    /// The record's offset; -1 for a row a query derived from records (its payload is
    /// then the row as JSON, not a record's bytes).
    pub offset: i64,
    pub reason: DeadReason,
    /// Human-readable detail (what was wrong and where).
    pub detail: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Builds one RecordBatch of a stream's format from Kafka records.
pub struct BatchDecoder {
    format: Format,
    cols: Columns,
    rows: usize,
    max_event_time: Option<i64>,
    /// How far ahead of the clock an event time may be (ms).
    max_future: Option<i64>,
}

enum Columns {
    Aggregates(Box<AggregateColumns>),
    Readings(Box<ReadingColumns>),
    Json(Vec<JsonColumn>),
}

fn ts_builder(capacity: usize) -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC")
}

struct AggregateColumns {
    gateway: StringBuilder,
    sensor: StringBuilder,
    site: StringBuilder,
    field: StringBuilder,
    window_start: TimestampMillisecondBuilder,
    window_end: TimestampMillisecondBuilder,
    revision: UInt64Builder,
    count: UInt64Builder,
    min: Float64Builder,
    max: Float64Builder,
    sum: Float64Builder,
    mean: Float64Builder,
    first_ts: TimestampMillisecondBuilder,
    first: Float64Builder,
    last_ts: TimestampMillisecondBuilder,
    last: Float64Builder,
}

impl AggregateColumns {
    fn new(n: usize) -> Self {
        Self {
            gateway: StringBuilder::with_capacity(n, n * 8),
            sensor: StringBuilder::with_capacity(n, n * 8),
            site: StringBuilder::with_capacity(n, n * 8),
            field: StringBuilder::with_capacity(n, n * 8),
            window_start: ts_builder(n),
            window_end: ts_builder(n),
            revision: UInt64Builder::with_capacity(n),
            count: UInt64Builder::with_capacity(n),
            min: Float64Builder::with_capacity(n),
            max: Float64Builder::with_capacity(n),
            sum: Float64Builder::with_capacity(n),
            mean: Float64Builder::with_capacity(n),
            first_ts: ts_builder(n),
            first: Float64Builder::with_capacity(n),
            last_ts: ts_builder(n),
            last: Float64Builder::with_capacity(n),
        }
    }

    fn push(&mut self, a: &wire::AggregateView<'_>) {
        self.gateway.append_value(a.gateway);
        self.sensor.append_value(a.sensor);
        self.site.append_option(a.site);
        self.field.append_value(a.field);
        self.window_start.append_value(a.window_start);
        self.window_end.append_value(a.window_end);
        self.revision.append_value(a.revision);
        self.count.append_value(a.count);
        self.min.append_value(a.min);
        self.max.append_value(a.max);
        self.sum.append_value(a.sum);
        self.mean.append_value(a.mean());
        self.first_ts.append_value(a.first_ts);
        self.first.append_value(a.first);
        self.last_ts.append_value(a.last_ts);
        self.last.append_value(a.last);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.gateway.finish()),
            Arc::new(self.sensor.finish()),
            Arc::new(self.site.finish()),
            Arc::new(self.field.finish()),
            Arc::new(self.window_start.finish()),
            Arc::new(self.window_end.finish()),
            Arc::new(self.revision.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.mean.finish()),
            Arc::new(self.first_ts.finish()),
            Arc::new(self.first.finish()),
            Arc::new(self.last_ts.finish()),
            Arc::new(self.last.finish()),
        ]
    }
}

struct ReadingColumns {
    gateway: StringBuilder,
    sensor: StringBuilder,
    site: StringBuilder,
    field: StringBuilder,
    ts: TimestampMillisecondBuilder,
    value: Float64Builder,
}

impl ReadingColumns {
    fn new(n: usize) -> Self {
        Self {
            gateway: StringBuilder::with_capacity(n, n * 8),
            sensor: StringBuilder::with_capacity(n, n * 8),
            site: StringBuilder::with_capacity(n, n * 8),
            field: StringBuilder::with_capacity(n, n * 8),
            ts: ts_builder(n),
            value: Float64Builder::with_capacity(n),
        }
    }

    fn push(&mut self, r: &wire::ReadingView<'_>) {
        self.gateway.append_value(r.gateway);
        self.sensor.append_value(r.sensor);
        self.site.append_option(r.site);
        self.field.append_value(r.field);
        self.ts.append_value(r.ts);
        self.value.append_value(r.value);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.gateway.finish()),
            Arc::new(self.sensor.finish()),
            Arc::new(self.site.finish()),
            Arc::new(self.field.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.value.finish()),
        ]
    }
}

enum JsonColumn {
    String(StringBuilder),
    Double(Float64Builder),
    Bigint(Int64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

/// A JSON field value checked against its column's type.
enum Cell {
    Null,
    String(String),
    Double(f64),
    Bigint(i64),
    Boolean(bool),
    Timestamp(i64),
}

impl JsonColumn {
    fn new(t: ColumnType, n: usize) -> Self {
        match t {
            ColumnType::String => Self::String(StringBuilder::with_capacity(n, n * 8)),
            ColumnType::Double => Self::Double(Float64Builder::with_capacity(n)),
            ColumnType::Bigint => Self::Bigint(Int64Builder::with_capacity(n)),
            ColumnType::Boolean => Self::Boolean(BooleanBuilder::with_capacity(n)),
            ColumnType::Timestamp => Self::Timestamp(ts_builder(n)),
        }
    }

    fn push(&mut self, c: Cell) {
        match (self, c) {
            (Self::String(b), Cell::String(v)) => b.append_value(v),
            (Self::Double(b), Cell::Double(v)) => b.append_value(v),
            (Self::Bigint(b), Cell::Bigint(v)) => b.append_value(v),
            (Self::Boolean(b), Cell::Boolean(v)) => b.append_value(v),
            (Self::Timestamp(b), Cell::Timestamp(v)) => b.append_value(v),
            (Self::String(b), _) => b.append_null(),
            (Self::Double(b), _) => b.append_null(),
            (Self::Bigint(b), _) => b.append_null(),
            (Self::Boolean(b), _) => b.append_null(),
            (Self::Timestamp(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::String(b) => Arc::new(b.finish()),
            Self::Double(b) => Arc::new(b.finish()),
            Self::Bigint(b) => Arc::new(b.finish()),
            Self::Boolean(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

fn cell(t: ColumnType, v: &Value) -> Result<Cell, &'static str> {
    Ok(match (t, v) {
        (_, Value::Null) => Cell::Null,
        (ColumnType::String, Value::String(s)) => Cell::String(s.clone()),
        (ColumnType::String, Value::Number(n)) => Cell::String(n.to_string()),
        (ColumnType::Double, Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Cell::Double(f),
            _ => return Err("a finite number"),
        },
        (ColumnType::Bigint, Value::Number(n)) => match n.as_i64() {
            Some(i) => Cell::Bigint(i),
            None => return Err("an integer"),
        },
        (ColumnType::Boolean, Value::Bool(b)) => Cell::Boolean(*b),
        (ColumnType::Timestamp, Value::Number(n)) => match n.as_i64() {
            Some(ms) => Cell::Timestamp(ms),
            None => match n.as_f64() {
                Some(f) if f.is_finite() && f.abs() < 1e17 => Cell::Timestamp(f as i64),
                _ => return Err("milliseconds since the epoch or an RFC 3339 string"),
            },
        },
        (ColumnType::Timestamp, Value::String(s)) => match string_to_timestamp_nanos(s) {
            Ok(ns) => Cell::Timestamp(ns.div_euclid(1_000_000)),
            Err(_) => return Err("milliseconds since the epoch or an RFC 3339 string"),
        },
        (ColumnType::String, _) => return Err("a string"),
        (ColumnType::Double, _) => return Err("a number"),
        (ColumnType::Bigint, _) => return Err("an integer"),
        (ColumnType::Boolean, _) => return Err("true or false"),
        (ColumnType::Timestamp, _) => {
            return Err("milliseconds since the epoch or an RFC 3339 string")
        }
    })
}

/// Rows reserved up front for a batch.
const INITIAL_CAPACITY: usize = 1024;

impl BatchDecoder {
    /// A decoder for `format`.
    pub fn new(format: Format) -> Self {
        let cols = Self::columns(&format);
        Self {
            format,
            cols,
            rows: 0,
            max_event_time: None,
            max_future: None,
        }
    }

    /// Bounds event times to at most `max_future_ms` ahead of the clock given to
    /// [`BatchDecoder::push_at`] (`None`: no bound).
    pub fn with_max_future(mut self, max_future_ms: Option<i64>) -> Self {
        self.max_future = max_future_ms.map(|m| m.max(0));
        self
    }

    fn columns(format: &Format) -> Columns {
        let n = INITIAL_CAPACITY;
        match format.kind() {
            FormatKind::EdgeAggregates => Columns::Aggregates(Box::new(AggregateColumns::new(n))),
            FormatKind::EdgeReadings => Columns::Readings(Box::new(ReadingColumns::new(n))),
            FormatKind::Json => Columns::Json(
                format
                    .columns()
                    .iter()
                    .map(|(_, t)| JsonColumn::new(*t, n))
                    .collect(),
            ),
        }
    }

    /// The format being decoded.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// Rows in the open batch.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the open batch is empty.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The largest event time in the open batch (ms).
    pub fn max_event_time(&self) -> Option<i64> {
        self.max_event_time
    }

    fn saw(&mut self, ts: i64) {
        self.rows += 1;
        self.max_event_time = Some(self.max_event_time.map_or(ts, |m| m.max(ts)));
    }

    /// Appends one record, or says why it cannot be appended, with no bound on event
    /// times (no clock). A source uses [`BatchDecoder::push_at`].
    pub fn push(&mut self, rec: &RawRecord<'_>) -> Result<(), DeadLetter> {
        self.push_inner(rec, None)
    }

    /// Appends one record decoded at wall-clock time `now_ms`, or says why it cannot be
    /// appended (an event time past `now_ms` + `max_future` is one reason).
    pub fn push_at(&mut self, rec: &RawRecord<'_>, now_ms: i64) -> Result<(), DeadLetter> {
        self.push_inner(rec, Some(now_ms))
    }

    fn push_inner(&mut self, rec: &RawRecord<'_>, now_ms: Option<i64>) -> Result<(), DeadLetter> {
        let dead = |reason: DeadReason, detail: String| DeadLetter {
            partition: rec.partition,
            offset: rec.offset,
            reason,
            detail,
            key: rec.key.map(<[u8]>::to_vec),
            payload: rec.payload.map(<[u8]>::to_vec).unwrap_or_default(),
        };
        let Some(payload) = rec.payload else {
            return Err(dead(DeadReason::Empty, "the record has no value".into()));
        };
        let time_index = self.format.event_time_index();
        let limit = match (now_ms, self.max_future) {
            (Some(now), Some(m)) => Some((now, m)),
            _ => None,
        };
        let in_time = |ts: i64| {
            match limit {
            Some((now, max_future)) if ts.saturating_sub(now) > max_future => Err(dead(
                DeadReason::FutureEventTime,
                format!(
                    "event time {ts} ms is {} ms ahead of the processor's clock ({now} ms); the stream's max_future is {max_future} ms",
                    ts.saturating_sub(now)
                ),
            )),
            _ => Ok(()),
        }
        };
        match &mut self.cols {
            Columns::Aggregates(c) => {
                check_kind(rec.kind, "aggregate").map_err(|d| dead(DeadReason::WrongKind, d))?;
                let ts = match rec.encoding.unwrap_or(wire::ENCODING_JSON) {
                    wire::ENCODING_BINARY => {
                        let v = wire::decode_aggregate_binary(payload).map_err(|e| {
                            dead(DeadReason::Malformed, format!("binary-v1 aggregate: {e}"))
                        })?;
                        let ts = aggregate_time(&v, time_index);
                        in_time(ts)?;
                        c.push(&v);
                        ts
                    }
                    wire::ENCODING_JSON => {
                        let a: AggregateRecord = serde_json::from_slice(payload).map_err(|e| {
                            dead(DeadReason::Malformed, format!("JSON aggregate: {e}"))
                        })?;
                        let v = a.view();
                        let ts = aggregate_time(&v, time_index);
                        in_time(ts)?;
                        c.push(&v);
                        ts
                    }
                    other => return Err(dead(DeadReason::UnknownEncoding, unknown(other))),
                };
                self.saw(ts);
            }
            Columns::Readings(c) => {
                check_kind(rec.kind, "reading").map_err(|d| dead(DeadReason::WrongKind, d))?;
                let ts = match rec.encoding.unwrap_or(wire::ENCODING_JSON) {
                    wire::ENCODING_BINARY => {
                        let v = wire::decode_reading_binary(payload).map_err(|e| {
                            dead(DeadReason::Malformed, format!("binary-v1 reading: {e}"))
                        })?;
                        in_time(v.ts)?;
                        c.push(&v);
                        v.ts
                    }
                    wire::ENCODING_JSON => {
                        let r: ReadingRecord = serde_json::from_slice(payload).map_err(|e| {
                            dead(DeadReason::Malformed, format!("JSON reading: {e}"))
                        })?;
                        in_time(r.ts)?;
                        c.push(&r.view());
                        r.ts
                    }
                    other => return Err(dead(DeadReason::UnknownEncoding, unknown(other))),
                };
                self.saw(ts);
            }
            Columns::Json(builders) => {
                let obj: serde_json::Map<String, Value> = serde_json::from_slice(payload)
                    .map_err(|e| dead(DeadReason::Malformed, format!("JSON object: {e}")))?;
                let mut cells = Vec::with_capacity(builders.len());
                let mut ts = 0;
                for (i, (name, t)) in self.format.columns().iter().enumerate() {
                    let v = obj.get(name).unwrap_or(&Value::Null);
                    let c = cell(*t, v).map_err(|want| {
                        dead(
                            DeadReason::WrongType,
                            format!("field `{name}` must be {want}, got {v}"),
                        )
                    })?;
                    if i == time_index {
                        match c {
                            Cell::Timestamp(t) => ts = t,
                            _ => {
                                return Err(dead(
                                    DeadReason::MissingField,
                                    format!("event-time field `{name}` is missing or null"),
                                ))
                            }
                        }
                    }
                    cells.push(c);
                }
                in_time(ts)?;
                for (b, c) in builders.iter_mut().zip(cells) {
                    b.push(c);
                }
                self.saw(ts);
            }
        }
        Ok(())
    }

    /// Closes the open batch (`None` when it is empty) and starts a new one.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays = match &mut self.cols {
            Columns::Aggregates(c) => c.finish(),
            Columns::Readings(c) => c.finish(),
            Columns::Json(b) => b.iter_mut().map(JsonColumn::finish).collect(),
        };
        self.rows = 0;
        self.max_event_time = None;
        Ok(Some(RecordBatch::try_new(self.format.schema(), arrays)?))
    }
}

fn unknown(encoding: &str) -> String {
    format!(
        "unknown edgeflow-encoding `{encoding}`; this version reads `{}` and `{}`",
        wire::ENCODING_JSON,
        wire::ENCODING_BINARY
    )
}

fn check_kind(kind: Option<&str>, want: &str) -> Result<(), String> {
    match kind {
        None => Ok(()),
        Some(k) if k == want => Ok(()),
        Some(k) => Err(format!(
            "edgeflow-kind is `{k}`, but this stream carries `{want}` records"
        )),
    }
}

/// The event time of an aggregate row: the column chosen as event time.
fn aggregate_time(a: &wire::AggregateView<'_>, index: usize) -> i64 {
    // Timestamp columns of the aggregate schema, by index.
    match index {
        5 => a.window_end,
        12 => a.first_ts,
        14 => a.last_ts,
        _ => a.window_start,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod max_future_tests {
    use std::sync::Arc;

    use edgeflow_wire::Aggregate;

    use super::*;
    use crate::format::{ColumnType, Format, FormatKind};

    const NOW: i64 = 1_764_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn json_stream() -> BatchDecoder {
        let format = Format::new(
            FormatKind::Json,
            vec![
                ("sensor".into(), ColumnType::String),
                ("ts".into(), ColumnType::Timestamp),
                ("value".into(), ColumnType::Double),
            ],
            None,
        )
        .expect("format");
        BatchDecoder::new(format).with_max_future(Some(HOUR))
    }

    fn json(ts: i64) -> Vec<u8> {
        format!(r#"{{"sensor":"s-1","ts":{ts},"value":1.5}}"#).into_bytes()
    }

    fn raw(payload: &[u8]) -> RawRecord<'_> {
        RawRecord {
            partition: 2,
            offset: 41,
            payload: Some(payload),
            ..Default::default()
        }
    }

    fn raw_in<'a>(payload: &'a [u8], encoding: &'a str) -> RawRecord<'a> {
        RawRecord {
            payload: Some(payload),
            encoding: Some(encoding),
            ..Default::default()
        }
    }

    #[test]
    fn an_event_time_past_max_future_is_a_dead_letter_and_moves_nothing() {
        let mut d = json_stream();
        d.push_at(&raw(&json(NOW + HOUR)), NOW)
            .expect("exactly max_future ahead is accepted");
        let far = json(NOW + HOUR + 1);
        let dl = d.push_at(&raw(&far), NOW).expect_err("one ms more is not");
        assert_eq!(dl.reason, DeadReason::FutureEventTime);
        assert_eq!(dl.reason.as_str(), "future_event_time");
        assert_eq!((dl.partition, dl.offset), (2, 41));
        assert_eq!(
            dl.payload, far,
            "the record's bytes, for inspection or replay"
        );
        assert!(dl.detail.contains("max_future"), "{}", dl.detail);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d.max_event_time(),
            Some(NOW + HOUR),
            "the absurd time is not seen"
        );
        let batch = d.finish().expect("finish").expect("a batch");
        assert_eq!(batch.num_rows(), 1);
    }

    #[test]
    fn the_bound_follows_the_clock_passed_in() {
        let mut d = json_stream();
        let r = json(NOW + 2 * HOUR);
        assert!(d.push_at(&raw(&r), NOW).is_err());
        assert!(d.push_at(&raw(&r), NOW + HOUR).is_ok());
        // Old times are never bounded: a backlog read days later is fine.
        assert!(d.push_at(&raw(&json(NOW - 30 * 24 * HOUR)), NOW).is_ok());
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn edge_records_are_checked_before_any_column_is_appended() {
        let format = Format::new(FormatKind::EdgeAggregates, vec![], None).expect("format");
        let mut d = BatchDecoder::new(format).with_max_future(Some(HOUR));
        let agg = |start: i64| Aggregate {
            sensor: Arc::from("s-1"),
            site: None,
            field: Arc::from("temp"),
            window_start: start,
            window_end: start + 10_000,
            revision: 0,
            count: 1,
            min: 1.0,
            max: 1.0,
            sum: 1.0,
            first_ts: start,
            first: 1.0,
            last_ts: start,
            last: 1.0,
        };
        for (encoding, write) in [
            (
                edgeflow_wire::ENCODING_BINARY,
                edgeflow_wire::aggregate_binary as fn(&str, &Aggregate, &mut Vec<u8>),
            ),
            (edgeflow_wire::ENCODING_JSON, edgeflow_wire::aggregate_json),
        ] {
            let (mut far, mut near) = (Vec::new(), Vec::new());
            write("gw", &agg(NOW + 3 * HOUR), &mut far);
            write("gw", &agg(NOW), &mut near);
            let (far, near) = (raw_in(&far, encoding), raw_in(&near, encoding));
            let e = d.push_at(&far, NOW).expect_err(encoding);
            assert_eq!(e.reason, DeadReason::FutureEventTime);
            d.push_at(&near, NOW).expect(encoding);
        }
        // Every column has exactly the two accepted rows, or the batch would not build.
        let batch = d.finish().expect("columns of one length").expect("a batch");
        assert_eq!(batch.num_rows(), 2);
    }

    #[test]
    fn push_without_a_clock_applies_no_bound() {
        let mut d = json_stream();
        assert!(d.push(&raw(&json(NOW + 100 * HOUR))).is_ok());
    }
}
