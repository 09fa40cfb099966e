//! `edgeflow-wire`: the edge wire format (edge → Kafka), shared by the agent that
//! writes it and the processors that read it, so a processor build does not carry the
//! agent (its MQTT client, disk log and HTTP server).
//!
//! `docs/wire-format.md` is the reference for consumers; this crate implements it. Also
//! here, because both sides need them: the config value types ([`units`]), the Kafka
//! client settings every client of the project starts from ([`kafka`]) and the wall
//! clock ([`clock`]).
//!
//! Kafka records: key = sensor id (UTF-8), so one sensor's data stays in one partition.
//! Headers:
//! - `edgeflow-encoding`: `json` or `binary-v1`
//! - `edgeflow-kind`: `aggregate`, `reading` or `dead-letter`
//! - dead letters also carry `edgeflow-reason`, `edgeflow-detail`, `edgeflow-mqtt-topic`
//!   and `edgeflow-gateway`; their value is the original payload, untouched.
//!
//! Identity (for dropping duplicates downstream): an aggregate is identified by
//! `(gateway, sensor, field, window_start, revision)`, a reading by
//! `(gateway, sensor, field, ts)`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod clock;
pub mod kafka;
pub mod units;

/// A closed window's aggregate (or a correction for one), as the agent's window
/// aggregator emits it and the encoders below write it.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    pub sensor: Arc<str>,
    pub site: Option<Arc<str>>,
    pub field: Arc<str>,
    pub window_start: i64,
    pub window_end: i64,
    /// 0 for the window itself; for a correction, the late reading's journal seq + 1.
    pub revision: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub first_ts: i64,
    pub first: f64,
    pub last_ts: i64,
    pub last: f64,
}

impl Aggregate {
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Header names.
pub const HEADER_ENCODING: &str = "edgeflow-encoding";
pub const HEADER_KIND: &str = "edgeflow-kind";
pub const HEADER_REASON: &str = "edgeflow-reason";
pub const HEADER_DETAIL: &str = "edgeflow-detail";
pub const HEADER_MQTT_TOPIC: &str = "edgeflow-mqtt-topic";
pub const HEADER_GATEWAY: &str = "edgeflow-gateway";

/// `edgeflow-encoding` values.
pub const ENCODING_JSON: &str = "json";
pub const ENCODING_BINARY: &str = "binary-v1";

const BINARY_VERSION: u8 = 1;
const KIND_AGGREGATE: u8 = 1;
const KIND_READING: u8 = 2;
const NO_SITE: u16 = u16::MAX;

/// Errors decoding a wire record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("record is truncated at byte {0}")]
    Truncated(usize),
    #[error("unknown binary version {0}")]
    Version(u8),
    #[error("unexpected record kind {0}")]
    Kind(u8),
    #[error("string is not UTF-8 at byte {0}")]
    Utf8(usize),
    #[error("invalid JSON record: {0}")]
    Json(String),
    #[error("unknown encoding `{0}`")]
    Encoding(String),
}

/// An aggregate as it travels on Kafka (owned; what consumers decode).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggregateRecord {
    pub gateway: String,
    pub sensor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub field: String,
    pub window_start: i64,
    pub window_end: i64,
    pub revision: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub mean: f64,
    pub first_ts: i64,
    pub first: f64,
    pub last_ts: i64,
    pub last: f64,
}

impl AggregateRecord {
    /// The record as a borrowed view (what decoders that build columns take).
    pub fn view(&self) -> AggregateView<'_> {
        AggregateView {
            gateway: &self.gateway,
            sensor: &self.sensor,
            site: self.site.as_deref(),
            field: &self.field,
            window_start: self.window_start,
            window_end: self.window_end,
            revision: self.revision,
            count: self.count,
            min: self.min,
            max: self.max,
            sum: self.sum,
            first_ts: self.first_ts,
            first: self.first,
            last_ts: self.last_ts,
            last: self.last,
        }
    }

    /// The identity under which duplicates are dropped.
    pub fn identity(&self) -> (String, String, String, i64, u64) {
        (
            self.gateway.clone(),
            self.sensor.clone(),
            self.field.clone(),
            self.window_start,
            self.revision,
        )
    }
}

/// A single reading as it travels on Kafka in pass-through mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadingRecord {
    pub gateway: String,
    pub sensor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub field: String,
    pub ts: i64,
    pub value: f64,
}

impl ReadingRecord {
    /// The record as a borrowed view.
    pub fn view(&self) -> ReadingView<'_> {
        ReadingView {
            gateway: &self.gateway,
            sensor: &self.sensor,
            site: self.site.as_deref(),
            field: &self.field,
            ts: self.ts,
            value: self.value,
        }
    }
}

#[derive(Serialize)]
struct AggregateJson<'a> {
    gateway: &'a str,
    sensor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<&'a str>,
    field: &'a str,
    window_start: i64,
    window_end: i64,
    revision: u64,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    mean: f64,
    first_ts: i64,
    first: f64,
    last_ts: i64,
    last: f64,
}

#[derive(Serialize)]
struct ReadingJson<'a> {
    gateway: &'a str,
    sensor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    site: Option<&'a str>,
    field: &'a str,
    ts: i64,
    value: f64,
}

/// Appends an aggregate's JSON encoding to `buf`.
pub fn aggregate_json(gateway: &str, a: &Aggregate, buf: &mut Vec<u8>) {
    let j = AggregateJson {
        gateway,
        sensor: &a.sensor,
        site: a.site.as_deref(),
        field: &a.field,
        window_start: a.window_start,
        window_end: a.window_end,
        revision: a.revision,
        count: a.count,
        min: a.min,
        max: a.max,
        sum: a.sum,
        mean: a.mean(),
        first_ts: a.first_ts,
        first: a.first,
        last_ts: a.last_ts,
        last: a.last,
    };
    // Serializing plain numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, &j);
}

/// Appends an aggregate's binary-v1 encoding to `buf`.
pub fn aggregate_binary(gateway: &str, a: &Aggregate, buf: &mut Vec<u8>) {
    buf.push(BINARY_VERSION);
    buf.push(KIND_AGGREGATE);
    put_str(buf, gateway);
    put_str(buf, &a.sensor);
    put_opt_str(buf, a.site.as_deref());
    put_str(buf, &a.field);
    for v in [a.window_start, a.window_end] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&a.revision.to_le_bytes());
    buf.extend_from_slice(&a.count.to_le_bytes());
    for v in [a.min, a.max, a.sum] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&a.first_ts.to_le_bytes());
    buf.extend_from_slice(&a.first.to_le_bytes());
    buf.extend_from_slice(&a.last_ts.to_le_bytes());
    buf.extend_from_slice(&a.last.to_le_bytes());
}

/// Borrowed view of one reading for encoding.
#[derive(Clone, Copy, Debug)]
pub struct ReadingRef<'a> {
    pub sensor: &'a str,
    pub site: Option<&'a str>,
    pub field: &'a str,
    pub ts: i64,
    pub value: f64,
}

/// Appends a reading's JSON encoding to `buf`.
pub fn reading_json(gateway: &str, r: &ReadingRef<'_>, buf: &mut Vec<u8>) {
    let j = ReadingJson {
        gateway,
        sensor: r.sensor,
        site: r.site,
        field: r.field,
        ts: r.ts,
        value: r.value,
    };
    let _ = serde_json::to_writer(&mut *buf, &j);
}

/// Appends a reading's binary-v1 encoding to `buf`.
pub fn reading_binary(gateway: &str, r: &ReadingRef<'_>, buf: &mut Vec<u8>) {
    buf.push(BINARY_VERSION);
    buf.push(KIND_READING);
    put_str(buf, gateway);
    put_str(buf, r.sensor);
    put_opt_str(buf, r.site);
    put_str(buf, r.field);
    buf.extend_from_slice(&r.ts.to_le_bytes());
    buf.extend_from_slice(&r.value.to_le_bytes());
}

/// A binary-v1 aggregate decoded in place: strings borrow from the record bytes, so
/// decoding allocates nothing (what high-rate consumers use).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AggregateView<'a> {
    pub gateway: &'a str,
    pub sensor: &'a str,
    pub site: Option<&'a str>,
    pub field: &'a str,
    pub window_start: i64,
    pub window_end: i64,
    pub revision: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub first_ts: i64,
    pub first: f64,
    pub last_ts: i64,
    pub last: f64,
}

impl AggregateView<'_> {
    /// `sum / count` (0 for an empty aggregate, which the agent never sends).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The owned record.
    pub fn to_record(&self) -> AggregateRecord {
        AggregateRecord {
            gateway: self.gateway.to_string(),
            sensor: self.sensor.to_string(),
            site: self.site.map(str::to_string),
            field: self.field.to_string(),
            window_start: self.window_start,
            window_end: self.window_end,
            revision: self.revision,
            count: self.count,
            min: self.min,
            max: self.max,
            sum: self.sum,
            mean: self.mean(),
            first_ts: self.first_ts,
            first: self.first,
            last_ts: self.last_ts,
            last: self.last,
        }
    }
}

/// A binary-v1 reading decoded in place (see [`AggregateView`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadingView<'a> {
    pub gateway: &'a str,
    pub sensor: &'a str,
    pub site: Option<&'a str>,
    pub field: &'a str,
    pub ts: i64,
    pub value: f64,
}

/// Decodes a binary-v1 aggregate without copying its strings.
pub fn decode_aggregate_binary(bytes: &[u8]) -> Result<AggregateView<'_>, WireError> {
    let mut r = Reader::new(bytes);
    r.header(KIND_AGGREGATE)?;
    Ok(AggregateView {
        gateway: r.str()?,
        sensor: r.str()?,
        site: r.opt_str()?,
        field: r.str()?,
        window_start: r.i64()?,
        window_end: r.i64()?,
        revision: r.u64()?,
        count: r.u64()?,
        min: r.f64()?,
        max: r.f64()?,
        sum: r.f64()?,
        first_ts: r.i64()?,
        first: r.f64()?,
        last_ts: r.i64()?,
        last: r.f64()?,
    })
}

/// Decodes a binary-v1 reading without copying its strings.
pub fn decode_reading_binary(bytes: &[u8]) -> Result<ReadingView<'_>, WireError> {
    let mut r = Reader::new(bytes);
    r.header(KIND_READING)?;
    Ok(ReadingView {
        gateway: r.str()?,
        sensor: r.str()?,
        site: r.opt_str()?,
        field: r.str()?,
        ts: r.i64()?,
        value: r.f64()?,
    })
}

/// Decodes an aggregate record given its `edgeflow-encoding` header value.
pub fn decode_aggregate(encoding: &str, bytes: &[u8]) -> Result<AggregateRecord, WireError> {
    match encoding {
        ENCODING_JSON => serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string())),
        ENCODING_BINARY => decode_aggregate_binary(bytes).map(|v| v.to_record()),
        other => Err(WireError::Encoding(other.to_string())),
    }
}

/// Decodes a reading record given its `edgeflow-encoding` header value.
pub fn decode_reading(encoding: &str, bytes: &[u8]) -> Result<ReadingRecord, WireError> {
    match encoding {
        ENCODING_JSON => serde_json::from_slice(bytes).map_err(|e| WireError::Json(e.to_string())),
        ENCODING_BINARY => {
            let v = decode_reading_binary(bytes)?;
            Ok(ReadingRecord {
                gateway: v.gateway.to_string(),
                sensor: v.sensor.to_string(),
                site: v.site.map(str::to_string),
                field: v.field.to_string(),
                ts: v.ts,
                value: v.value,
            })
        }
        other => Err(WireError::Encoding(other.to_string())),
    }
}

/// Appends `s` as a u16 little-endian length and its bytes (the binary encodings'
/// strings; also the agent's disk records).
pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Names longer than 65,534 bytes are cut at a char boundary; ids are short in practice.
    let mut end = s.len().min(u16::MAX as usize - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.extend_from_slice(&(end as u16).to_le_bytes());
    buf.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.extend_from_slice(&NO_SITE.to_le_bytes()),
    }
}

/// A bounds-checked little-endian reader (of the binary encodings; also the agent's
/// disk records).
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `b` from its first byte.
    pub fn new(b: &'a [u8]) -> Self {
        Reader { b, pos: 0 }
    }

    fn header(&mut self, kind: u8) -> Result<(), WireError> {
        let v = self.u8()?;
        if v != BINARY_VERSION {
            return Err(WireError::Version(v));
        }
        let k = self.u8()?;
        if k != kind {
            return Err(WireError::Kind(k));
        }
        Ok(())
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(WireError::Truncated(self.pos))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(WireError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(a))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(self.u64()? as i64)
    }
    pub fn f64(&mut self) -> Result<f64, WireError> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub fn str(&mut self) -> Result<&'a str, WireError> {
        let n = self.u16()? as usize;
        let at = self.pos;
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Utf8(at))
    }
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, WireError> {
        let save = self.pos;
        if self.u16()? == NO_SITE {
            return Ok(None);
        }
        self.pos = save;
        self.str().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn agg() -> Aggregate {
        Aggregate {
            sensor: Arc::from("s-1"),
            site: Some(Arc::from("plant")),
            field: Arc::from("temp"),
            window_start: 1_000,
            window_end: 11_000,
            revision: 0,
            count: 4,
            min: -1.5,
            max: 9.0,
            sum: 12.0,
            first_ts: 1_001,
            first: 2.0,
            last_ts: 10_999,
            last: 9.0,
        }
    }

    #[test]
    fn both_encodings_round_trip_to_the_same_record() {
        let a = agg();
        let mut j = Vec::new();
        aggregate_json("gw", &a, &mut j);
        let mut b = Vec::new();
        aggregate_binary("gw", &a, &mut b);
        let from_json = decode_aggregate(ENCODING_JSON, &j).unwrap();
        let from_bin = decode_aggregate(ENCODING_BINARY, &b).unwrap();
        assert_eq!(from_json, from_bin);
        assert_eq!(from_json.mean, 3.0);
        assert_eq!(from_json.site.as_deref(), Some("plant"));
        assert!(b.len() < j.len());
    }

    #[test]
    fn truncated_binary_is_an_error_not_a_panic() {
        let mut b = Vec::new();
        aggregate_binary("gw", &agg(), &mut b);
        for n in 0..b.len() {
            assert!(decode_aggregate(ENCODING_BINARY, &b[..n]).is_err());
        }
    }

    // Fixtures written by hand from docs/wire-format.md (the aggregate is the
    // document's own example, in JSON and in its binary-v1 dump), not produced by the
    // encoder: the encoder must give exactly these bytes, and the processor's decoder
    // tests decode the same bytes.

    /// The document's JSON aggregate, without its line break.
    const AGGREGATE_JSON: &str = concat!(
        r#"{"gateway":"gw-01","sensor":"t-17","site":"plant-a","field":"temperature","#,
        r#""window_start":1764000000000,"window_end":1764000010000,"revision":0,"#,
        r#""count":10,"min":20.5,"max":22.0,"sum":213.0,"mean":21.3,"#,
        r#""first_ts":1764000000120,"first":20.5,"last_ts":1764000009980,"last":21.75}"#
    );

    /// The same aggregate in binary-v1: little-endian, `str` = u16 length + UTF-8.
    const AGGREGATE_BINARY: &[u8] = &[
        0x01, // version
        0x01, // kind: aggregate
        0x05, 0x00, b'g', b'w', b'-', b'0', b'1', // gateway
        0x04, 0x00, b't', b'-', b'1', b'7', // sensor
        0x07, 0x00, b'p', b'l', b'a', b'n', b't', b'-', b'a', // site
        0x0b, 0x00, b't', b'e', b'm', b'p', b'e', b'r', b'a', b't', b'u', b'r', b'e', // field
        0x00, 0xe8, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // window_start 1764000000000
        0x10, 0x0f, 0x98, 0xb6, 0x9a, 0x01, 0x00, 0x00, // window_end 1764000010000
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // revision 0
        0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // count 10
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x34, 0x40, // min 20.5
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x36, 0x40, // max 22.0
        0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x6a, 0x40, // sum 213.0
        0x78, 0xe8, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // first_ts 1764000000120
        0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x34, 0x40, // first 20.5
        0xfc, 0x0e, 0x98, 0xb6, 0x9a, 0x01, 0x00, 0x00, // last_ts 1764000009980
        0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x35, 0x40, // last 21.75
    ];

    /// A correction (revision 7) of one reading, from a topic without `{site}`.
    const CORRECTION_JSON: &str = concat!(
        r#"{"gateway":"gw-01","sensor":"t-17","field":"temperature","#,
        r#""window_start":1764000000000,"window_end":1764000010000,"revision":7,"#,
        r#""count":1,"min":-3.5,"max":-3.5,"sum":-3.5,"mean":-3.5,"#,
        r#""first_ts":1764000009980,"first":-3.5,"last_ts":1764000009980,"last":-3.5}"#
    );

    const CORRECTION_BINARY: &[u8] = &[
        0x01, // version
        0x01, // kind: aggregate
        0x05, 0x00, b'g', b'w', b'-', b'0', b'1', // gateway
        0x04, 0x00, b't', b'-', b'1', b'7', // sensor
        0xff, 0xff, // site: absent
        0x0b, 0x00, b't', b'e', b'm', b'p', b'e', b'r', b'a', b't', b'u', b'r', b'e', // field
        0x00, 0xe8, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // window_start 1764000000000
        0x10, 0x0f, 0x98, 0xb6, 0x9a, 0x01, 0x00, 0x00, // window_end 1764000010000
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // revision 7
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // count 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0xc0, // min -3.5
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0xc0, // max -3.5
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0xc0, // sum -3.5
        0xfc, 0x0e, 0x98, 0xb6, 0x9a, 0x01, 0x00, 0x00, // first_ts 1764000009980
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0xc0, // first -3.5
        0xfc, 0x0e, 0x98, 0xb6, 0x9a, 0x01, 0x00, 0x00, // last_ts 1764000009980
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0xc0, // last -3.5
    ];

    /// A reading in pass-through mode, from a topic without `{site}`.
    const READING_JSON: &str = concat!(
        r#"{"gateway":"gw-01","sensor":"t-17","field":"temperature","#,
        r#""ts":1764000000120,"value":0.1}"#
    );

    const READING_BINARY: &[u8] = &[
        0x01, // version
        0x02, // kind: reading
        0x05, 0x00, b'g', b'w', b'-', b'0', b'1', // gateway
        0x04, 0x00, b't', b'-', b'1', b'7', // sensor
        0xff, 0xff, // site: absent
        0x0b, 0x00, b't', b'e', b'm', b'p', b'e', b'r', b'a', b't', b'u', b'r', b'e', // field
        0x78, 0xe8, 0x97, 0xb6, 0x9a, 0x01, 0x00, 0x00, // ts 1764000000120
        0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f, // value 0.1
    ];

    /// The document's aggregate as the agent holds it.
    fn documented_aggregate() -> Aggregate {
        Aggregate {
            sensor: Arc::from("t-17"),
            site: Some(Arc::from("plant-a")),
            field: Arc::from("temperature"),
            window_start: 1_764_000_000_000,
            window_end: 1_764_000_010_000,
            revision: 0,
            count: 10,
            min: 20.5,
            max: 22.0,
            sum: 213.0,
            first_ts: 1_764_000_000_120,
            first: 20.5,
            last_ts: 1_764_000_009_980,
            last: 21.75,
        }
    }

    fn correction() -> Aggregate {
        Aggregate {
            sensor: Arc::from("t-17"),
            site: None,
            field: Arc::from("temperature"),
            window_start: 1_764_000_000_000,
            window_end: 1_764_000_010_000,
            revision: 7,
            count: 1,
            min: -3.5,
            max: -3.5,
            sum: -3.5,
            first_ts: 1_764_000_009_980,
            first: -3.5,
            last_ts: 1_764_000_009_980,
            last: -3.5,
        }
    }

    #[test]
    fn aggregates_encode_to_the_documented_bytes() {
        for (a, json, binary) in [
            (documented_aggregate(), AGGREGATE_JSON, AGGREGATE_BINARY),
            (correction(), CORRECTION_JSON, CORRECTION_BINARY),
        ] {
            let mut j = Vec::new();
            aggregate_json("gw-01", &a, &mut j);
            assert_eq!(String::from_utf8(j).unwrap(), json);
            let mut b = Vec::new();
            aggregate_binary("gw-01", &a, &mut b);
            assert_eq!(b, binary);
        }
    }

    #[test]
    fn readings_encode_to_the_documented_bytes() {
        let r = ReadingRef {
            sensor: "t-17",
            site: None,
            field: "temperature",
            ts: 1_764_000_000_120,
            value: 0.1,
        };
        let mut j = Vec::new();
        reading_json("gw-01", &r, &mut j);
        assert_eq!(String::from_utf8(j).unwrap(), READING_JSON);
        let mut b = Vec::new();
        reading_binary("gw-01", &r, &mut b);
        assert_eq!(b, READING_BINARY);
    }

    #[test]
    fn the_documented_bytes_decode_to_the_record() {
        let want = AggregateRecord {
            gateway: "gw-01".into(),
            sensor: "t-17".into(),
            site: Some("plant-a".into()),
            field: "temperature".into(),
            window_start: 1_764_000_000_000,
            window_end: 1_764_000_010_000,
            revision: 0,
            count: 10,
            min: 20.5,
            max: 22.0,
            sum: 213.0,
            mean: 21.3,
            first_ts: 1_764_000_000_120,
            first: 20.5,
            last_ts: 1_764_000_009_980,
            last: 21.75,
        };
        assert_eq!(
            decode_aggregate(ENCODING_JSON, AGGREGATE_JSON.as_bytes()),
            Ok(want.clone())
        );
        assert_eq!(
            decode_aggregate(ENCODING_BINARY, AGGREGATE_BINARY),
            Ok(want)
        );
        let reading = ReadingRecord {
            gateway: "gw-01".into(),
            sensor: "t-17".into(),
            site: None,
            field: "temperature".into(),
            ts: 1_764_000_000_120,
            value: 0.1,
        };
        assert_eq!(
            decode_reading(ENCODING_JSON, READING_JSON.as_bytes()),
            Ok(reading.clone())
        );
        assert_eq!(decode_reading(ENCODING_BINARY, READING_BINARY), Ok(reading));
    }

    #[test]
    fn readings_round_trip() {
        let r = ReadingRef {
            sensor: "s",
            site: None,
            field: "v",
            ts: 5,
            value: 1.25,
        };
        let mut j = Vec::new();
        reading_json("gw", &r, &mut j);
        let mut b = Vec::new();
        reading_binary("gw", &r, &mut b);
        assert_eq!(
            decode_reading(ENCODING_JSON, &j).unwrap(),
            decode_reading(ENCODING_BINARY, &b).unwrap()
        );
    }
}
