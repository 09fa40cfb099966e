//! Stream formats and their Arrow schemas.
//!
//! | format | what produces it | columns |
//! |---|---|---|
//! | `edge-aggregates` | the edge agent (window aggregates) | `gateway, sensor, site, field, window_start, window_end, revision, count, min, max, sum, mean, first_ts, first, last_ts, last` |
//! | `edge-readings` | the edge agent in pass-through mode | `gateway, sensor, site, field, ts, value` |
//! | `json` | any other system: one JSON object per record | declared in config |
//!
//! The edge formats accept both edge encodings (`edgeflow-encoding: json` or
//! `binary-v1`, see the wire-format reference); a record without the header is read as
//! JSON. Times are `Timestamp(Millisecond, "UTC")`; `site` is the only nullable edge
//! column. Every stream has one event-time column (a timestamp), by default
//! `window_start` for aggregates and `ts` for readings.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{Error, Result};

/// Which decoder a stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatKind {
    EdgeAggregates,
    EdgeReadings,
    Json,
}

impl FromStr for FormatKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "edge-aggregates" => Ok(Self::EdgeAggregates),
            "edge-readings" => Ok(Self::EdgeReadings),
            "json" => Ok(Self::Json),
            other => Err(Error::Config(format!(
                "unknown format `{other}`; expected one of edge-aggregates, edge-readings, json"
            ))),
        }
    }
}

impl fmt::Display for FormatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EdgeAggregates => "edge-aggregates",
            Self::EdgeReadings => "edge-readings",
            Self::Json => "json",
        })
    }
}

/// The type of a declared JSON column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit float (JSON numbers).
    Double,
    /// 64-bit signed integer.
    Bigint,
    /// true/false.
    Boolean,
    /// Milliseconds since the epoch (a JSON number) or an RFC 3339 string.
    Timestamp,
}

impl FromStr for ColumnType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "string" | "text" => Ok(Self::String),
            "double" | "float" => Ok(Self::Double),
            "bigint" | "int" => Ok(Self::Bigint),
            "boolean" | "bool" => Ok(Self::Boolean),
            "timestamp" => Ok(Self::Timestamp),
            other => Err(Error::Config(format!(
                "unknown column type `{other}`; expected one of string, double, bigint, boolean, timestamp"
            ))),
        }
    }
}

impl ColumnType {
    /// The Arrow type of the column.
    pub fn data_type(self) -> DataType {
        match self {
            Self::String => DataType::Utf8,
            Self::Double => DataType::Float64,
            Self::Bigint => DataType::Int64,
            Self::Boolean => DataType::Boolean,
            Self::Timestamp => timestamp_type(),
        }
    }
}

/// The timestamp type of every time column: milliseconds, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some(Arc::from("UTC")))
}

/// A stream's format: its decoder, schema and event-time column.
#[derive(Clone, Debug)]
pub struct Format {
    kind: FormatKind,
    schema: SchemaRef,
    /// Declared JSON columns (empty for the edge formats).
    columns: Vec<(String, ColumnType)>,
    event_time: usize,
}

impl Format {
    /// Builds a format. `columns` is required for `json` and must be empty otherwise;
    /// `event_time` names a timestamp column (default: `window_start` / `ts`).
    pub fn new(
        kind: FormatKind,
        columns: Vec<(String, ColumnType)>,
        event_time: Option<&str>,
    ) -> Result<Self> {
        let (schema, default_time) = match kind {
            FormatKind::EdgeAggregates => (aggregate_schema(), "window_start"),
            FormatKind::EdgeReadings => (reading_schema(), "ts"),
            FormatKind::Json => {
                if columns.is_empty() {
                    return Err(Error::Config(
                        "format `json` needs `columns`, e.g. columns = { sensor = \"string\", ts = \"timestamp\", value = \"double\" }".into(),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for (name, _) in &columns {
                    if !seen.insert(name.as_str()) {
                        return Err(Error::Config(format!("column `{name}` is declared twice")));
                    }
                }
                let fields: Vec<Field> = columns
                    .iter()
                    .map(|(n, t)| Field::new(n, t.data_type(), true))
                    .collect();
                (Arc::new(Schema::new(fields)), "ts")
            }
        };
        if kind != FormatKind::Json && !columns.is_empty() {
            return Err(Error::Config(format!(
                "format `{kind}` has a fixed schema; remove `columns`"
            )));
        }
        let time_name = event_time.unwrap_or(default_time);
        let event_time = match schema.index_of(time_name) {
            Ok(i) if schema.field(i).data_type() == &timestamp_type() => i,
            Ok(_) => {
                return Err(Error::Config(format!(
                    "event_time column `{time_name}` is not a timestamp; timestamp columns: {}",
                    timestamp_columns(&schema)
                )))
            }
            Err(_) => {
                return Err(Error::Config(format!(
                    "event_time column `{time_name}` does not exist; timestamp columns: {}",
                    timestamp_columns(&schema)
                )))
            }
        };
        // The event-time column is never null.
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[event_time] = fields[event_time].clone().with_nullable(false);
        Ok(Self {
            kind,
            schema: Arc::new(Schema::new(fields)),
            columns,
            event_time,
        })
    }

    /// The decoder this format uses.
    pub fn kind(&self) -> FormatKind {
        self.kind
    }

    /// The Arrow schema of the stream's batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Index of the event-time column in [`Format::schema`].
    pub fn event_time_index(&self) -> usize {
        self.event_time
    }

    /// Name of the event-time column.
    pub fn event_time_name(&self) -> &str {
        self.schema.field(self.event_time).name()
    }

    /// Declared JSON columns.
    pub fn columns(&self) -> &[(String, ColumnType)] {
        &self.columns
    }
}

fn timestamp_columns(schema: &Schema) -> String {
    let names: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| f.data_type() == &timestamp_type())
        .map(|f| f.name().as_str())
        .collect();
    if names.is_empty() {
        "none (declare one with type \"timestamp\")".into()
    } else {
        names.join(", ")
    }
}

/// Schema of `edge-aggregates`.
pub fn aggregate_schema() -> SchemaRef {
    let ts = timestamp_type;
    Arc::new(Schema::new(vec![
        Field::new("gateway", DataType::Utf8, false),
        Field::new("sensor", DataType::Utf8, false),
        Field::new("site", DataType::Utf8, true),
        Field::new("field", DataType::Utf8, false),
        Field::new("window_start", ts(), false),
        Field::new("window_end", ts(), false),
        Field::new("revision", DataType::UInt64, false),
        Field::new("count", DataType::UInt64, false),
        Field::new("min", DataType::Float64, false),
        Field::new("max", DataType::Float64, false),
        Field::new("sum", DataType::Float64, false),
        Field::new("mean", DataType::Float64, false),
        Field::new("first_ts", ts(), false),
        Field::new("first", DataType::Float64, false),
        Field::new("last_ts", ts(), false),
        Field::new("last", DataType::Float64, false),
    ]))
}

/// Schema of `edge-readings`.
pub fn reading_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("gateway", DataType::Utf8, false),
        Field::new("sensor", DataType::Utf8, false),
        Field::new("site", DataType::Utf8, true),
        Field::new("field", DataType::Utf8, false),
        Field::new("ts", timestamp_type(), false),
        Field::new("value", DataType::Float64, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_formats_default_their_event_time() {
        let a = Format::new(FormatKind::EdgeAggregates, vec![], None).unwrap();
        assert_eq!(a.event_time_name(), "window_start");
        let r = Format::new(FormatKind::EdgeReadings, vec![], None).unwrap();
        assert_eq!(r.event_time_name(), "ts");
    }

    #[test]
    fn a_wrong_event_time_names_the_timestamp_columns() {
        let e = Format::new(FormatKind::EdgeAggregates, vec![], Some("count"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a timestamp"), "{e}");
        assert!(
            e.contains("window_start, window_end, first_ts, last_ts"),
            "{e}"
        );
        let e = Format::new(FormatKind::EdgeReadings, vec![], Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn json_needs_columns_and_a_timestamp() {
        assert!(Format::new(FormatKind::Json, vec![], None).is_err());
        let cols = vec![
            ("id".to_string(), ColumnType::String),
            ("at".to_string(), ColumnType::Timestamp),
        ];
        let f = Format::new(FormatKind::Json, cols, Some("at")).unwrap();
        assert_eq!(f.event_time_index(), 1);
        assert!(!f.schema().field(1).is_nullable());
        assert!("varchar".parse::<ColumnType>().is_err());
        assert!("edge".parse::<FormatKind>().is_err());
    }
}
