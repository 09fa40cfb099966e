use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use edgeflow_wire as wire;
use edgeflow_wire::Aggregate;
use proptest::prelude::*;

use super::*;
use crate::format::{ColumnType, Format, FormatKind};

fn agg(sensor: &str, start: i64, count: u64, sum: f64) -> Aggregate {
    Aggregate {
        sensor: Arc::from(sensor),
        site: (start % 2 == 0).then(|| Arc::from("plant")),
        field: Arc::from("temp"),
        window_start: start,
        window_end: start + 10_000,
        revision: 0,
        count,
        min: -1.0,
        max: sum,
        sum,
        first_ts: start + 1,
        first: -1.0,
        last_ts: start + 9_999,
        last: sum,
    }
}

fn aggregates() -> BatchDecoder {
    BatchDecoder::new(Format::new(FormatKind::EdgeAggregates, vec![], None).unwrap())
}

fn rec<'a>(payload: &'a [u8], encoding: &'a str) -> RawRecord<'a> {
    RawRecord {
        partition: 3,
        offset: 7,
        key: Some(b"k"),
        payload: Some(payload),
        encoding: Some(encoding),
        kind: Some("aggregate"),
    }
}

#[test]
fn both_edge_encodings_decode_to_the_same_rows() {
    let a = agg("s-1", 20_000, 4, 12.0);
    let (mut j, mut b) = (Vec::new(), Vec::new());
    wire::aggregate_json("gw", &a, &mut j);
    wire::aggregate_binary("gw", &a, &mut b);
    let mut d = aggregates();
    d.push(&rec(&j, wire::ENCODING_JSON)).unwrap();
    d.push(&rec(&b, wire::ENCODING_BINARY)).unwrap();
    assert_eq!(d.max_event_time(), Some(20_000));
    let batch = d.finish().unwrap().unwrap();
    assert_eq!(batch.num_rows(), 2);
    for col in batch.columns() {
        let (x, y) = (col.slice(0, 1), col.slice(1, 1));
        assert_eq!(x.to_data(), y.to_data());
    }
    let mean = batch.column(11).as_primitive::<Float64Type>();
    assert_eq!(mean.value(0), 3.0);
    let start = batch.column(4).as_primitive::<TimestampMillisecondType>();
    assert_eq!(start.value(0), 20_000);
    assert!(d.finish().unwrap().is_none(), "finish starts a new batch");
}

// Records written by hand from docs/wire-format.md (the aggregate is the document's
// own example, in JSON and in its binary-v1 dump), not produced by the edge's encoder;
// the edge's wire tests check that its encoder gives exactly these bytes.

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

/// An `edge-aggregates` row: its strings, times, unsigned integers and floats, each
/// group in schema order.
type AggregateRow = (Vec<Option<String>>, Vec<i64>, Vec<u64>, Vec<f64>);

/// Row `row` of an `edge-aggregates` batch.
fn aggregate_row(b: &RecordBatch, row: usize) -> AggregateRow {
    let s = |c: usize| {
        let a = b.column(c).as_string::<i32>();
        a.is_valid(row).then(|| a.value(row).to_string())
    };
    let t = |c: usize| {
        b.column(c)
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
    };
    let u = |c: usize| b.column(c).as_primitive::<UInt64Type>().value(row);
    let f = |c: usize| b.column(c).as_primitive::<Float64Type>().value(row);
    (
        vec![s(0), s(1), s(2), s(3)],
        vec![t(4), t(5), t(12), t(14)],
        vec![u(6), u(7)],
        vec![f(8), f(9), f(10), f(11), f(13), f(15)],
    )
}

#[test]
fn the_documented_aggregate_bytes_decode_to_the_documented_columns() {
    let mut d = aggregates();
    let records = [
        (AGGREGATE_JSON.as_bytes(), wire::ENCODING_JSON),
        (AGGREGATE_BINARY, wire::ENCODING_BINARY),
        (CORRECTION_JSON.as_bytes(), wire::ENCODING_JSON),
        (CORRECTION_BINARY, wire::ENCODING_BINARY),
    ];
    for (bytes, enc) in records {
        d.push(&rec(bytes, enc))
            .unwrap_or_else(|e| panic!("{enc}: {}", e.detail));
    }
    assert_eq!(d.max_event_time(), Some(1_764_000_000_000));
    let b = d.finish().unwrap().unwrap();
    assert_eq!(b.num_rows(), 4);
    let strings = |site: Option<&str>| {
        vec![
            Some("gw-01".to_string()),
            Some("t-17".into()),
            site.map(String::from),
            Some("temperature".into()),
        ]
    };
    let window = (
        strings(Some("plant-a")),
        // window_start, window_end, first_ts, last_ts
        vec![
            1_764_000_000_000,
            1_764_000_010_000,
            1_764_000_000_120,
            1_764_000_009_980,
        ],
        // revision, count
        vec![0, 10],
        // min, max, sum, mean (sum / count, not sent in binary), first, last
        vec![20.5, 22.0, 213.0, 21.3, 20.5, 21.75],
    );
    let correction = (
        strings(None),
        vec![
            1_764_000_000_000,
            1_764_000_010_000,
            1_764_000_009_980,
            1_764_000_009_980,
        ],
        vec![7, 1],
        vec![-3.5, -3.5, -3.5, -3.5, -3.5, -3.5],
    );
    for (row, want) in [
        (0, &window),
        (1, &window),
        (2, &correction),
        (3, &correction),
    ] {
        assert_eq!(&aggregate_row(&b, row), want, "row {row}");
    }
}

#[test]
fn the_documented_reading_bytes_decode_to_the_documented_columns() {
    let mut d = BatchDecoder::new(Format::new(FormatKind::EdgeReadings, vec![], None).unwrap());
    for (bytes, enc) in [
        (READING_JSON.as_bytes(), wire::ENCODING_JSON),
        (READING_BINARY, wire::ENCODING_BINARY),
    ] {
        let r = RawRecord {
            kind: Some("reading"),
            ..rec(bytes, enc)
        };
        d.push(&r).unwrap_or_else(|e| panic!("{enc}: {}", e.detail));
    }
    let b = d.finish().unwrap().unwrap();
    assert_eq!(b.num_rows(), 2);
    for row in 0..2 {
        let s = |c: usize| {
            let a = b.column(c).as_string::<i32>();
            a.is_valid(row).then(|| a.value(row))
        };
        assert_eq!(
            [s(0), s(1), s(2), s(3)],
            [Some("gw-01"), Some("t-17"), None, Some("temperature")]
        );
        let ts = b.column(4).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(row), 1_764_000_000_120);
        let value = b.column(5).as_primitive::<Float64Type>();
        assert_eq!(value.value(row), 0.1);
    }
}

#[test]
fn every_bad_record_kind_is_a_dead_letter_with_its_reason() {
    let mut d = aggregates();
    let mut b = Vec::new();
    wire::aggregate_binary("gw", &agg("s", 0, 1, 1.0), &mut b);
    let cases: Vec<(RawRecord<'_>, DeadReason)> = vec![
        (
            RawRecord {
                payload: None,
                ..rec(&b, wire::ENCODING_BINARY)
            },
            DeadReason::Empty,
        ),
        (rec(&b, "avro"), DeadReason::UnknownEncoding),
        (
            RawRecord {
                kind: Some("dead-letter"),
                ..rec(&b, wire::ENCODING_BINARY)
            },
            DeadReason::WrongKind,
        ),
        (rec(&b[..10], wire::ENCODING_BINARY), DeadReason::Malformed),
        (
            rec(b"{\"sensor\":1}", wire::ENCODING_JSON),
            DeadReason::Malformed,
        ),
    ];
    for (r, reason) in cases {
        let dl = d.push(&r).unwrap_err();
        assert_eq!(dl.reason, reason, "{}", dl.detail);
        assert_eq!((dl.partition, dl.offset), (3, 7));
        assert!(!dl.detail.is_empty());
    }
    assert!(d.is_empty());
}

fn json_format() -> Format {
    Format::new(
        FormatKind::Json,
        vec![
            ("sensor".into(), ColumnType::String),
            ("at".into(), ColumnType::Timestamp),
            ("value".into(), ColumnType::Double),
            ("ok".into(), ColumnType::Boolean),
            ("n".into(), ColumnType::Bigint),
        ],
        Some("at"),
    )
    .unwrap()
}

#[test]
fn plain_json_fills_declared_columns_and_nulls_the_absent_ones() {
    let mut d = BatchDecoder::new(json_format());
    let one = RawRecord {
        payload: Some(br#"{"sensor":"a","at":1000,"value":1.5,"ok":true,"n":3,"extra":1}"#),
        ..Default::default()
    };
    let two = RawRecord {
        payload: Some(br#"{"sensor":"b","at":"1970-01-01T00:00:02Z"}"#),
        ..Default::default()
    };
    d.push(&one).unwrap();
    d.push(&two).unwrap();
    let b = d.finish().unwrap().unwrap();
    let at = b.column(1).as_primitive::<TimestampMillisecondType>();
    assert_eq!((at.value(0), at.value(1)), (1000, 2000));
    assert!(b.column(2).is_null(1));
    assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 1.5);
}

#[test]
fn plain_json_type_errors_name_the_field() {
    let mut d = BatchDecoder::new(json_format());
    let cases: [(&[u8], DeadReason, &str); 4] = [
        (
            br#"{"sensor":"a","at":1,"value":"hot"}"#,
            DeadReason::WrongType,
            "value",
        ),
        (
            br#"{"sensor":"a","value":1}"#,
            DeadReason::MissingField,
            "at",
        ),
        (
            br#"{"sensor":"a","at":"yesterday"}"#,
            DeadReason::WrongType,
            "at",
        ),
        (br#"[1,2]"#, DeadReason::Malformed, "JSON object"),
    ];
    for (payload, reason, mention) in cases {
        let dl = d
            .push(&RawRecord {
                payload: Some(payload),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(dl.reason, reason, "{}", dl.detail);
        assert!(dl.detail.contains(mention), "{}", dl.detail);
    }
    assert!(d.finish().unwrap().is_none());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                   binary in any::<bool>()) {
        let enc = if binary { wire::ENCODING_BINARY } else { wire::ENCODING_JSON };
        let mut d = aggregates();
        let _ = d.push(&rec(&bytes, enc));
        let mut j = BatchDecoder::new(json_format());
        let _ = j.push(&RawRecord { payload: Some(&bytes), ..Default::default() });
        d.finish().unwrap();
        j.finish().unwrap();
    }

    /// Intact records become rows holding exactly the generated values; damaged ones
    /// become dead letters with their reason and position; nothing is lost or invented.
    #[test]
    fn rows_plus_dead_letters_account_for_every_record(
        recs in proptest::collection::vec((generated(), any::<bool>(), 0u8..6), 1..60)
    ) {
        let mut d = aggregates();
        let mut kept = Vec::new();
        let mut want_dead = Vec::new();
        let mut got_dead = Vec::new();
        for (i, (g, binary, damage)) in recs.iter().enumerate() {
            let a = g.aggregate(&format!("s{i}"));
            let mut buf = Vec::new();
            let mut enc = if *binary {
                wire::aggregate_binary("gw", &a, &mut buf);
                wire::ENCODING_BINARY
            } else {
                wire::aggregate_json("gw", &a, &mut buf);
                wire::ENCODING_JSON
            };
            let mut kind = "aggregate";
            match damage {
                0 => {
                    buf.truncate(buf.len() / 2);
                    want_dead.push((i as i64, DeadReason::Malformed));
                }
                1 => {
                    // Labelled with the other encoding.
                    enc = if *binary { wire::ENCODING_JSON } else { wire::ENCODING_BINARY };
                    want_dead.push((i as i64, DeadReason::Malformed));
                }
                2 => {
                    kind = "reading";
                    want_dead.push((i as i64, DeadReason::WrongKind));
                }
                _ => kept.push((i, g)),
            }
            let r = RawRecord { offset: i as i64, kind: Some(kind), ..rec(&buf, enc) };
            if let Err(dl) = d.push(&r) {
                prop_assert_eq!(dl.payload.as_slice(), buf.as_slice());
                got_dead.push((dl.offset, dl.reason));
            }
        }
        prop_assert_eq!(got_dead, want_dead);
        prop_assert_eq!(d.len(), kept.len());
        prop_assert_eq!(
            d.max_event_time(),
            kept.iter().map(|(_, g)| g.start).max()
        );
        let Some(b) = d.finish().unwrap() else {
            prop_assert!(kept.is_empty());
            return Ok(());
        };
        prop_assert_eq!(b.num_rows(), kept.len());
        let s = |c: usize| b.column(c).as_string::<i32>();
        let t = |c: usize| b.column(c).as_primitive::<TimestampMillisecondType>();
        let u = |c: usize| b.column(c).as_primitive::<UInt64Type>();
        let f = |c: usize| b.column(c).as_primitive::<Float64Type>();
        for (row, (i, g)) in kept.iter().enumerate() {
            prop_assert_eq!(s(0).value(row), "gw");
            prop_assert_eq!(s(1).value(row), format!("s{i}"));
            prop_assert_eq!(b.column(2).is_valid(row).then(|| s(2).value(row)), g.site.then_some("plant"));
            prop_assert_eq!(s(3).value(row), "temp");
            prop_assert_eq!(t(4).value(row), g.start);
            prop_assert_eq!(t(5).value(row), g.start + g.len);
            prop_assert_eq!(u(6).value(row), g.revision);
            prop_assert_eq!(u(7).value(row), g.count);
            // Floats exactly, bit for bit, in both encodings.
            let floats = [(8, g.min), (9, g.max), (10, g.sum), (11, g.sum / g.count as f64),
                          (13, g.first), (15, g.last)];
            for (c, want) in floats {
                prop_assert_eq!(f(c).value(row).to_bits(), want.to_bits(), "column {} row {}", c, row);
            }
            prop_assert_eq!(t(12).value(row), g.start + g.first_at);
            prop_assert_eq!(t(14).value(row), g.start + g.last_at);
        }
    }
}

/// One aggregate's fields as generated (times relative to the window start).
#[derive(Clone, Debug)]
struct Generated {
    start: i64,
    len: i64,
    site: bool,
    revision: u64,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    first_at: i64,
    first: f64,
    last_at: i64,
    last: f64,
}

impl Generated {
    fn aggregate(&self, sensor: &str) -> Aggregate {
        Aggregate {
            sensor: Arc::from(sensor),
            site: self.site.then(|| Arc::from("plant")),
            field: Arc::from("temp"),
            window_start: self.start,
            window_end: self.start + self.len,
            revision: self.revision,
            count: self.count,
            min: self.min,
            max: self.max,
            sum: self.sum,
            first_ts: self.start + self.first_at,
            first: self.first,
            last_ts: self.start + self.last_at,
            last: self.last,
        }
    }
}

fn generated() -> impl Strategy<Value = Generated> {
    let value = || -1e9f64..1e9;
    (
        (
            -1_000_000_000_000i64..4_000_000_000_000,
            1i64..86_400_000,
            any::<bool>(),
        ),
        (any::<u64>(), 1u64..1_000_000),
        (value(), value(), value()),
        (0i64..86_400_000, value(), 0i64..86_400_000, value()),
    )
        .prop_map(
            |((start, len, site), (revision, count), (min, max, sum), (fa, first, la, last))| {
                Generated {
                    start,
                    len,
                    site,
                    revision,
                    count,
                    min,
                    max,
                    sum,
                    first_at: fa % len,
                    first,
                    last_at: la % len,
                    last,
                }
            },
        )
}

#[test]
fn every_reason_has_its_own_counter_slot() {
    for (i, r) in DeadReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i, "{r}");
    }
}
