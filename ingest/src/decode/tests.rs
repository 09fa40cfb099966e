use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt64Type};
use edgeflow_edge::window::Aggregate;
use edgeflow_edge::wire;
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

    /// Valid records become rows equal to the edge's own decoding of them; damaged
    /// ones become dead letters; nothing is lost or invented.
    #[test]
    fn rows_plus_dead_letters_account_for_every_record(
        recs in proptest::collection::vec((0u64..50, 1u64..100, -1e6f64..1e6, any::<bool>(), 0usize..3), 1..60)
    ) {
        let mut d = aggregates();
        let mut expected = Vec::new();
        let mut dead = 0;
        for (i, (start, count, sum, binary, damage)) in recs.iter().enumerate() {
            let a = agg(&format!("s{i}"), *start as i64 * 10_000, *count, *sum);
            let mut buf = Vec::new();
            let enc = if *binary { wire::aggregate_binary("gw", &a, &mut buf); wire::ENCODING_BINARY }
                      else { wire::aggregate_json("gw", &a, &mut buf); wire::ENCODING_JSON };
            if *damage == 0 {
                buf.truncate(buf.len() / 2);
            }
            match d.push(&rec(&buf, enc)) {
                Ok(()) => expected.push(wire::decode_aggregate(enc, &buf).unwrap()),
                Err(_) => { dead += 1; prop_assert!(wire::decode_aggregate(enc, &buf).is_err()); }
            }
        }
        prop_assert_eq!(expected.len() + dead, recs.len());
        if let Some(b) = d.finish().unwrap() {
            prop_assert_eq!(b.num_rows(), expected.len());
            let sensor = b.column(1).as_string::<i32>();
            let count = b.column(7).as_primitive::<UInt64Type>();
            let sum = b.column(10).as_primitive::<Float64Type>();
            let site = b.column(2);
            for (i, e) in expected.iter().enumerate() {
                prop_assert_eq!(sensor.value(i), e.sensor.as_str());
                prop_assert_eq!(count.value(i), e.count);
                prop_assert_eq!(sum.value(i), e.sum);
                prop_assert_eq!(site.is_null(i), e.site.is_none());
            }
        } else {
            prop_assert!(expected.is_empty());
        }
    }
}
