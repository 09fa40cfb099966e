//! Payload decoding: MQTT payload bytes → readings `(sensor, field, timestamp, value)`.
//!
//! Formats:
//! - **JSON object**: `{"ts": 1732630000000, "value": 21.5}` or several named fields
//!   `{"ts": ..., "temperature": 21.5, "humidity": 40}`. Every numeric key other than the
//!   timestamp and sensor-id keys is a field (or only those in `decode.fields`). The sensor
//!   id comes from the topic pattern or the `sensor_id_field` key.
//! - **SenML** (RFC 8428) JSON array: base name/time/value resolved per record; `v` and
//!   `vb` values are readings (`vb` as 1/0), `vs`/`vd` are a `wrong_type`. Times are
//!   seconds; values below 2^28 are relative to the arrival time, as the RFC says. With a
//!   sensor id from the topic the field is the resolved name (`bn` + `n`); otherwise the
//!   base name (its trailing `:`, `/` or `-` removed) is the sensor id and `n` the field.
//! - **Bare number**: `21.5`; the field is `decode.number_field`.
//!
//! Timestamps in the payload win; otherwise the arrival time is used. Numeric timestamps
//! are epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude;
//! strings are RFC 3339 in UTC (`2026-11-26T14:00:00.250Z`).
//!
//! Decoding is all-or-nothing per payload: either every reading in it is accepted or the
//! payload is rejected with one [`Reason`], so a dead-lettered payload can be replayed.
//! Nothing here panics on input.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::config::DecodeConfig;
pub use crate::config::PayloadFormat;
use crate::topic::TopicPattern;

/// Why a payload was rejected; the label is used in metrics and dead-letter records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Oversized,
    Malformed,
    WrongType,
    NonFinite,
    NoReadings,
    UnknownSensor,
    AbsurdTimestamp,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Oversized,
        Reason::Malformed,
        Reason::WrongType,
        Reason::NonFinite,
        Reason::NoReadings,
        Reason::UnknownSensor,
        Reason::AbsurdTimestamp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Oversized => "oversized",
            Reason::Malformed => "malformed",
            Reason::WrongType => "wrong_type",
            Reason::NonFinite => "non_finite",
            Reason::NoReadings => "no_readings",
            Reason::UnknownSensor => "unknown_sensor",
            Reason::AbsurdTimestamp => "absurd_timestamp",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected payload: the reason and a human-readable detail.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// One decoded reading; names are ranges into [`DecodeBuf`]'s text.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    sensor: Range<u32>,
    field: Range<u32>,
    pub ts_ms: i64,
    pub value: f64,
}

/// Reusable output buffer of [`Decoder::decode`]: no allocation per reading once warm.
#[derive(Default, Debug)]
pub struct DecodeBuf {
    text: String,
    site: Option<Range<u32>>,
    pub items: Vec<Item>,
}

impl DecodeBuf {
    pub fn clear(&mut self) {
        self.text.clear();
        self.site = None;
        self.items.clear();
    }
    pub fn sensor(&self, item: &Item) -> &str {
        self.slice(&item.sensor)
    }
    pub fn field(&self, item: &Item) -> &str {
        self.slice(&item.field)
    }
    pub fn site(&self) -> Option<&str> {
        self.site.as_ref().map(|r| self.slice(r))
    }
    fn slice(&self, r: &Range<u32>) -> &str {
        self.text
            .get(r.start as usize..r.end as usize)
            .unwrap_or("")
    }
    fn push_text(&mut self, parts: &[&str]) -> Range<u32> {
        let start = self.text.len() as u32;
        for p in parts {
            self.text.push_str(p);
        }
        start..self.text.len() as u32
    }
}

/// Decodes payloads by the `[decode]` config.
#[derive(Clone, Debug)]
pub struct Decoder {
    ts_field: String,
    sensor_field: String,
    fields: Vec<String>,
    number_field: String,
    known: HashSet<String>,
    max_future_ms: i64,
    max_past_ms: i64,
    max_payload: usize,
}

/// What one subscription contributes to decoding.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub format: PayloadFormat,
    pub pattern: Option<&'a TopicPattern>,
}

impl Decoder {
    pub fn new(cfg: &DecodeConfig, max_payload: usize) -> Self {
        Decoder {
            ts_field: cfg.timestamp_field.clone(),
            sensor_field: cfg.sensor_id_field.clone(),
            fields: cfg.fields.clone(),
            number_field: cfg.number_field.clone(),
            known: cfg.known_sensors.iter().cloned().collect(),
            max_future_ms: cfg.max_future.as_millis_i64(),
            max_past_ms: cfg.max_past.as_millis_i64(),
            max_payload,
        }
    }

    /// Decodes one payload into `out` (cleared first). `arrival_ms` is the wall-clock
    /// arrival time, used when the payload carries no timestamp.
    pub fn decode(
        &self,
        src: Source<'_>,
        topic: &str,
        payload: &[u8],
        arrival_ms: i64,
        out: &mut DecodeBuf,
    ) -> Result<(), Rejection> {
        out.clear();
        if payload.len() > self.max_payload {
            return Err(Rejection::new(
                Reason::Oversized,
                format!(
                    "payload of {} bytes exceeds mqtt.max_payload ({} bytes)",
                    payload.len(),
                    self.max_payload
                ),
            ));
        }
        let mut topic_sensor = None;
        if let Some(p) = src.pattern {
            let Some(m) = p.extract(topic) else {
                return Err(Rejection::new(
                    Reason::UnknownSensor,
                    format!("topic `{topic}` does not fit the subscription's topic_pattern"),
                ));
            };
            topic_sensor = m.sensor_id;
            if let Some(site) = m.site {
                out.site = Some(out.push_text(&[site]));
            }
        }
        let format = match src.format {
            PayloadFormat::Auto => match payload.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => PayloadFormat::Json,
                Some(b'[') => PayloadFormat::Senml,
                _ => PayloadFormat::Number,
            },
            f => f,
        };
        match format {
            PayloadFormat::Json => self.decode_json(topic_sensor, payload, arrival_ms, out)?,
            PayloadFormat::Senml => self.decode_senml(topic_sensor, payload, arrival_ms, out)?,
            PayloadFormat::Number | PayloadFormat::Auto => {
                self.decode_number(topic_sensor, payload, arrival_ms, out)?
            }
        }
        if out.items.is_empty() {
            return Err(Rejection::new(
                Reason::NoReadings,
                "payload holds no numeric reading",
            ));
        }
        for item in &out.items {
            let sensor = out.sensor(item);
            if sensor.is_empty() {
                return Err(Rejection::new(
                    Reason::UnknownSensor,
                    format!(
                        "no sensor id: the topic has no {{sensor_id}} and the payload no `{}`",
                        self.sensor_field
                    ),
                ));
            }
            if !self.known.is_empty() && !self.known.contains(sensor) {
                return Err(Rejection::new(
                    Reason::UnknownSensor,
                    format!("sensor `{sensor}` is not in decode.known_sensors"),
                ));
            }
            if item.ts_ms > arrival_ms.saturating_add(self.max_future_ms)
                || item.ts_ms < arrival_ms.saturating_sub(self.max_past_ms)
            {
                return Err(Rejection::new(
                    Reason::AbsurdTimestamp,
                    format!(
                        "timestamp {} ms is outside [arrival - max_past, arrival + max_future] = [{}, {}]",
                        item.ts_ms,
                        arrival_ms.saturating_sub(self.max_past_ms),
                        arrival_ms.saturating_add(self.max_future_ms)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn decode_number(
        &self,
        topic_sensor: Option<&str>,
        payload: &[u8],
        arrival_ms: i64,
        out: &mut DecodeBuf,
    ) -> Result<(), Rejection> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| Rejection::new(Reason::Malformed, "payload is not UTF-8"))?
            .trim();
        let value: f64 = text.parse().map_err(|_| {
            Rejection::new(
                Reason::Malformed,
                format!("`{}` is not a number", truncate(text, 64)),
            )
        })?;
        check_finite(value, &self.number_field)?;
        let sensor = out.push_text(&[topic_sensor.unwrap_or("")]);
        let field = out.push_text(&[&self.number_field]);
        out.items.push(Item {
            sensor,
            field,
            ts_ms: arrival_ms,
            value,
        });
        Ok(())
    }

    fn decode_json(
        &self,
        topic_sensor: Option<&str>,
        payload: &[u8],
        arrival_ms: i64,
        out: &mut DecodeBuf,
    ) -> Result<(), Rejection> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let mut obj = JsonObject {
            dec: self,
            out,
            ts: None,
            sensor: None,
            error: None,
        };
        let parsed = (&mut obj).deserialize(&mut de).and_then(|_| de.end());
        if let Some(rej) = obj.error.take() {
            return Err(rej);
        }
        parsed.map_err(|e| Rejection::new(Reason::Malformed, format!("invalid JSON: {e}")))?;
        let ts = obj.ts.unwrap_or(arrival_ms);
        let sensor_text: Cow<'_, str> = match (topic_sensor, obj.sensor.take()) {
            (Some(t), _) => Cow::Borrowed(t),
            (None, Some(s)) => Cow::Owned(s),
            (None, None) => Cow::Borrowed(""),
        };
        let sensor = out.push_text(&[&sensor_text]);
        for item in &mut out.items {
            item.sensor = sensor.clone();
            item.ts_ms = ts;
        }
        Ok(())
    }

    fn decode_senml(
        &self,
        topic_sensor: Option<&str>,
        payload: &[u8],
        arrival_ms: i64,
        out: &mut DecodeBuf,
    ) -> Result<(), Rejection> {
        let records: Vec<SenmlRecord<'_>> = serde_json::from_slice(payload)
            .map_err(|e| Rejection::new(Reason::Malformed, format!("invalid SenML: {e}")))?;
        let mut bn: Cow<'_, str> = Cow::Borrowed("");
        let mut bt = 0.0f64;
        let mut bv = 0.0f64;
        for (i, r) in records.iter().enumerate() {
            if let Some(b) = &r.bn {
                bn = b.clone();
            }
            if let Some(t) = r.bt {
                bt = t;
            }
            if let Some(v) = r.bv {
                bv = v;
            }
            if r.vs.is_some() || r.vd.is_some() {
                return Err(Rejection::new(
                    Reason::WrongType,
                    format!("SenML record {i} has a string/data value; only numbers and booleans are readings"),
                ));
            }
            let value = match (r.v, r.vb, r.s) {
                (Some(v), _, _) => bv + v,
                (None, Some(b), _) => f64::from(u8::from(b)),
                (None, None, Some(s)) => s,
                (None, None, None) => {
                    if r.n.is_none() && r.t.is_none() {
                        // A base-only record (bn/bt/bu) carries no reading.
                        continue;
                    }
                    return Err(Rejection::new(
                        Reason::Malformed,
                        format!("SenML record {i} has no value"),
                    ));
                }
            };
            check_finite(value, r.n.as_deref().unwrap_or("v"))?;
            let t = bt + r.t.unwrap_or(0.0);
            let ts_ms = if !t.is_finite() {
                return Err(Rejection::new(
                    Reason::NonFinite,
                    format!("SenML record {i} has a non-finite time"),
                ));
            } else if t.abs() < (1u64 << 28) as f64 {
                // RFC 8428 §4.5.3: relative to now.
                arrival_ms.saturating_add(seconds_to_ms(t))
            } else {
                seconds_to_ms(t)
            };
            let n = r.n.as_deref().unwrap_or("");
            let (sensor, field) = match topic_sensor {
                Some(s) => (out.push_text(&[s]), out.push_text(&[&bn, n])),
                None => {
                    let s = bn.trim_end_matches([':', '/', '-']);
                    (out.push_text(&[s]), out.push_text(&[n]))
                }
            };
            if field.is_empty() {
                return Err(Rejection::new(
                    Reason::Malformed,
                    format!("SenML record {i} has no name"),
                ));
            }
            out.items.push(Item {
                sensor,
                field,
                ts_ms,
                value,
            });
        }
        Ok(())
    }
}

fn check_finite(v: f64, field: &str) -> Result<(), Rejection> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Rejection::new(
            Reason::NonFinite,
            format!("`{}` is {v}", truncate(field, 64)),
        ))
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Seconds to whole milliseconds, rounded down. A decimal time such as `1764000000.123`
/// has no exact binary value, and multiplying it by 1000 can land just below the
/// millisecond it names (`…122.99998`); rounding to the microsecond first keeps it.
fn seconds_to_ms(t: f64) -> i64 {
    ((t * 1e6).round() / 1e3).floor() as i64
}

/// Interprets a numeric timestamp by magnitude: s, ms, µs or ns since the epoch.
pub fn epoch_number_to_ms(n: f64) -> Option<i64> {
    if !n.is_finite() {
        return None;
    }
    let a = n.abs();
    let ms = if a < 1e11 {
        return Some(seconds_to_ms(n));
    } else if a < 1e14 {
        n
    } else if a < 1e17 {
        n / 1e3
    } else {
        n / 1e6
    };
    Some(ms as i64)
}

/// Parses an RFC 3339 UTC timestamp into epoch milliseconds.
pub fn rfc3339_to_ms(s: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// A JSON scalar as seen by the object decoder.
enum Scalar<'a> {
    Num(f64),
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other("a boolean"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Other("null"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Streams a JSON object's entries straight into the [`DecodeBuf`].
struct JsonObject<'d, 'o> {
    dec: &'d Decoder,
    out: &'o mut DecodeBuf,
    ts: Option<i64>,
    sensor: Option<String>,
    error: Option<Rejection>,
}

impl<'de> DeserializeSeed<'de> for &mut JsonObject<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut JsonObject<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of readings")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let val: Scalar<'de> = map.next_value()?;
            if self.error.is_some() {
                continue;
            }
            let dec = self.dec;
            if *key == *dec.ts_field {
                self.ts = match val {
                    Scalar::Num(n) => epoch_number_to_ms(n),
                    Scalar::Str(s) => rfc3339_to_ms(&s),
                    Scalar::Other(_) => None,
                };
                if self.ts.is_none() {
                    self.error = Some(Rejection::new(
                        Reason::Malformed,
                        format!(
                            "`{}` is not an epoch number or an RFC 3339 UTC time",
                            dec.ts_field
                        ),
                    ));
                }
                continue;
            }
            if *key == *dec.sensor_field {
                match val {
                    Scalar::Str(s) => self.sensor = Some(s.into_owned()),
                    Scalar::Num(n) => self.sensor = Some(format!("{n}")),
                    Scalar::Other(what) => {
                        self.error = Some(Rejection::new(
                            Reason::WrongType,
                            format!("`{}` is {what}, expected a string", dec.sensor_field),
                        ))
                    }
                }
                continue;
            }
            let wanted = dec.fields.is_empty() || dec.fields.iter().any(|f| *f == *key);
            if !wanted {
                continue;
            }
            match val {
                Scalar::Num(v) => {
                    if !v.is_finite() {
                        self.error = Some(Rejection::new(
                            Reason::NonFinite,
                            format!("`{}` is not finite", truncate(&key, 64)),
                        ));
                        continue;
                    }
                    let field = self.out.push_text(&[&key]);
                    self.out.items.push(Item {
                        sensor: 0..0,
                        field,
                        ts_ms: 0,
                        value: v,
                    });
                }
                // With no field list, non-numeric keys such as units are metadata; but a
                // named field (or the conventional `value`) must be a number.
                Scalar::Str(_) | Scalar::Other(_)
                    if dec.fields.is_empty() && *key != *dec.number_field => {}
                other => {
                    let what = match other {
                        Scalar::Str(_) => "a string",
                        Scalar::Other(w) => w,
                        Scalar::Num(_) => "a number",
                    };
                    self.error = Some(Rejection::new(
                        Reason::WrongType,
                        format!("`{}` is {what}, expected a number", truncate(&key, 64)),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct SenmlRecord<'a> {
    #[serde(borrow, default)]
    bn: Option<Cow<'a, str>>,
    #[serde(default)]
    bt: Option<f64>,
    #[serde(default)]
    bv: Option<f64>,
    #[serde(borrow, default)]
    n: Option<Cow<'a, str>>,
    #[serde(default)]
    t: Option<f64>,
    #[serde(default)]
    v: Option<f64>,
    #[serde(default)]
    vb: Option<bool>,
    #[serde(borrow, default)]
    vs: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    vd: Option<Cow<'a, str>>,
    #[serde(default)]
    s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000;

    fn decoder() -> Decoder {
        Decoder::new(&DecodeConfig::default(), 1024)
    }

    fn run(
        d: &Decoder,
        fmt: PayloadFormat,
        pattern: Option<&str>,
        topic: &str,
        payload: &str,
    ) -> Result<Vec<(String, String, i64, f64)>, Rejection> {
        let p: Option<TopicPattern> = pattern.map(|p| p.parse().unwrap());
        let mut buf = DecodeBuf::default();
        d.decode(
            Source {
                format: fmt,
                pattern: p.as_ref(),
            },
            topic,
            payload.as_bytes(),
            NOW,
            &mut buf,
        )?;
        Ok(buf
            .items
            .iter()
            .map(|i| {
                (
                    buf.sensor(i).to_string(),
                    buf.field(i).to_string(),
                    i.ts_ms,
                    i.value,
                )
            })
            .collect())
    }

    const PAT: Option<&str> = Some("sensors/{site}/{sensor_id}/telemetry");
    const TOPIC: &str = "sensors/a/s1/telemetry";

    #[test]
    fn json_single_value_with_timestamp_in_ms() {
        let r = run(
            &decoder(),
            PayloadFormat::Auto,
            PAT,
            TOPIC,
            r#"{"ts":1764000000500,"value":21.5}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![("s1".into(), "value".into(), 1_764_000_000_500, 21.5)]
        );
    }

    #[test]
    fn json_named_fields_and_seconds_timestamp() {
        let r = run(
            &decoder(),
            PayloadFormat::Json,
            PAT,
            TOPIC,
            r#"{"temperature":20,"ts":1764000001.25,"unit":"C","humidity":40.5}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![
                ("s1".into(), "temperature".into(), 1_764_000_001_250, 20.0),
                ("s1".into(), "humidity".into(), 1_764_000_001_250, 40.5)
            ]
        );
    }

    #[test]
    fn json_sensor_from_payload_and_rfc3339_time() {
        let r = run(
            &decoder(),
            PayloadFormat::Json,
            None,
            "x",
            r#"{"sensor_id":"dev-9","ts":"2025-11-24T16:00:00.500Z","value":1}"#,
        )
        .unwrap();
        assert_eq!(r[0].0, "dev-9");
        assert_eq!(r[0].2, 1_764_000_000_500);
    }

    #[test]
    fn missing_timestamp_uses_arrival_time() {
        let r = run(
            &decoder(),
            PayloadFormat::Json,
            PAT,
            TOPIC,
            r#"{"value":3}"#,
        )
        .unwrap();
        assert_eq!(r[0].2, NOW);
    }

    #[test]
    fn senml_pack_resolves_base_name_and_time() {
        let r = run(&decoder(), PayloadFormat::Auto, None, "x",
            r#"[{"bn":"urn:dev:ow:10e2:","bt":1764000000,"n":"temp","u":"Cel","v":23.1},{"n":"hum","t":1,"v":40},{"n":"door","vb":true}]"#).unwrap();
        assert_eq!(
            r,
            vec![
                (
                    "urn:dev:ow:10e2".into(),
                    "temp".into(),
                    1_764_000_000_000,
                    23.1
                ),
                (
                    "urn:dev:ow:10e2".into(),
                    "hum".into(),
                    1_764_000_001_000,
                    40.0
                ),
                (
                    "urn:dev:ow:10e2".into(),
                    "door".into(),
                    1_764_000_000_000,
                    1.0
                )
            ]
        );
    }

    #[test]
    fn decimal_seconds_name_the_millisecond_they_say() {
        // 1.001 s is 1000.9999… ms in binary; truncating it lost a millisecond.
        for ms in [1i64, 1001, 1003, 59_999, 299_999] {
            let secs = format!("{}.{:03}", ms / 1000, ms % 1000);
            let senml = format!(r#"[{{"n":"value","t":{secs},"v":1}}]"#);
            let r = run(&decoder(), PayloadFormat::Auto, PAT, TOPIC, &senml).unwrap();
            assert_eq!(r[0].2, NOW + ms, "SenML relative time {secs} s");
            let r = run(
                &decoder(),
                PayloadFormat::Auto,
                PAT,
                TOPIC,
                &format!("[{{\"n\":\"value\",\"t\":-{secs},\"v\":1}}]"),
            )
            .unwrap();
            assert_eq!(r[0].2, NOW - ms, "SenML relative time -{secs} s");
            assert_eq!(
                epoch_number_to_ms(secs.parse().unwrap()),
                Some(ms),
                "{secs} s"
            );
        }
    }

    #[test]
    fn bare_number_uses_topic_sensor() {
        let r = run(&decoder(), PayloadFormat::Auto, PAT, TOPIC, " 17.25\n").unwrap();
        assert_eq!(r, vec![("s1".into(), "value".into(), NOW, 17.25)]);
    }

    fn reason(r: Result<Vec<(String, String, i64, f64)>, Rejection>) -> Reason {
        r.unwrap_err().reason
    }

    #[test]
    fn every_malformed_kind_has_its_reason() {
        let d = decoder();
        use PayloadFormat::*;
        assert_eq!(
            reason(run(&d, Auto, PAT, TOPIC, &"1".repeat(2000))),
            Reason::Oversized
        );
        assert_eq!(
            reason(run(&d, Auto, PAT, TOPIC, "{\"value\": 1")),
            Reason::Malformed
        );
        assert_eq!(
            reason(run(&d, Auto, PAT, TOPIC, "hello")),
            Reason::Malformed
        );
        assert_eq!(reason(run(&d, Auto, PAT, TOPIC, "NaN")), Reason::NonFinite);
        assert_eq!(reason(run(&d, Auto, PAT, TOPIC, "inf")), Reason::NonFinite);
        assert_eq!(
            reason(run(&d, Auto, PAT, TOPIC, r#"{"value":"hot"}"#)),
            Reason::WrongType
        );
        assert_eq!(
            reason(run(&d, Auto, PAT, TOPIC, r#"[{"n":"a","vs":"x"}]"#)),
            Reason::WrongType
        );
        assert_eq!(
            reason(run(&d, Auto, PAT, TOPIC, r#"{"unit":"C"}"#)),
            Reason::NoReadings
        );
        assert_eq!(
            reason(run(&d, Auto, None, "x", r#"{"value":1}"#)),
            Reason::UnknownSensor
        );
        assert_eq!(
            reason(run(&d, Auto, PAT, "other/topic", "1")),
            Reason::UnknownSensor
        );
        assert_eq!(
            reason(run(&d, Auto, PAT, TOPIC, r#"{"ts":1,"value":1}"#)),
            Reason::AbsurdTimestamp
        );
        assert_eq!(
            reason(run(
                &d,
                Auto,
                PAT,
                TOPIC,
                r#"{"ts":99999999999999,"value":1}"#
            )),
            Reason::AbsurdTimestamp
        );
        assert_eq!(
            reason(run(&d, Auto, PAT, TOPIC, r#"{"ts":true,"value":1}"#)),
            Reason::Malformed
        );
        let known = DecodeConfig {
            known_sensors: vec!["s2".into()],
            ..Default::default()
        };
        let d2 = Decoder::new(&known, 1024);
        assert_eq!(
            reason(run(&d2, Auto, PAT, TOPIC, "1")),
            Reason::UnknownSensor
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let d = decoder();
            let p: TopicPattern = "s/{sensor_id}".parse().unwrap();
            let mut buf = DecodeBuf::default();
            for f in [PayloadFormat::Auto, PayloadFormat::Json, PayloadFormat::Senml, PayloadFormat::Number] {
                let _ = d.decode(Source { format: f, pattern: Some(&p) }, "s/x", &bytes, NOW, &mut buf);
            }
        }
    }
}
