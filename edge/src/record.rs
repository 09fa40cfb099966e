//! Bodies of the agent's two disk logs (framing and checksums are [`crate::disklog`]'s).
//!
//! **Forward log** ([`OutRecord`]): a Kafka record ready to send.
//! `u8 version(1) | u8 topic | u16 key_len | key | u8 n_headers |
//!  n × (u16 name_len | name | u16 value_len | value) | u32 value_len | value`,
//! little-endian; `topic` is 0 = aggregates, 1 = readings, 2 = dead letters.
//!
//! **Input journal** ([`JournalEntry`]): what the window aggregator was fed, so that
//! snapshot + journal replay rebuilds its state exactly.
//! Reading: `u8 1 | i64 ts | f64 value | i64 arrival | str sensor | opt-str site | str field`;
//! tick: `u8 2 | i64 now`; delivery (an MQTT QoS 1/2 message, written before its
//! readings: see [`crate::redelivery`]): `u8 3 | u16 packet id | u64 digest`
//! (strings are `u16 len | UTF-8`, an absent site is len 0xFFFF).

use edgeflow_wire::{put_str, Reader, WireError};

const OUT_VERSION: u8 = 1;

/// Which configured topic a forward-log record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicKind {
    Aggregates = 0,
    Readings = 1,
    DeadLetter = 2,
}

impl TopicKind {
    fn from_u8(v: u8) -> Result<Self, WireError> {
        match v {
            0 => Ok(TopicKind::Aggregates),
            1 => Ok(TopicKind::Readings),
            2 => Ok(TopicKind::DeadLetter),
            k => Err(WireError::Kind(k)),
        }
    }
}

/// Borrowed view of a forward-log record.
#[derive(Clone, Debug, PartialEq)]
pub struct OutRecord<'a> {
    pub topic: TopicKind,
    pub key: &'a [u8],
    pub headers: Vec<(&'a str, &'a [u8])>,
    pub value: &'a [u8],
}

/// Encodes a forward-log record into `buf` (cleared first).
pub fn encode_out(
    buf: &mut Vec<u8>,
    topic: TopicKind,
    key: &[u8],
    headers: &[(&str, &[u8])],
    value: &[u8],
) {
    buf.clear();
    buf.push(OUT_VERSION);
    buf.push(topic as u8);
    put_bytes16(buf, key);
    buf.push(headers.len().min(255) as u8);
    for (name, v) in headers.iter().take(255) {
        put_bytes16(buf, name.as_bytes());
        put_bytes16(buf, v);
    }
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(value);
}

/// Decodes a forward-log record.
pub fn decode_out(bytes: &[u8]) -> Result<OutRecord<'_>, WireError> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != OUT_VERSION {
        return Err(WireError::Version(v));
    }
    let topic = TopicKind::from_u8(r.u8()?)?;
    let klen = r.u16()? as usize;
    let key = r.take(klen)?;
    let n = r.u8()?;
    let mut headers = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name = r.str()?;
        let vlen = r.u16()? as usize;
        headers.push((name, r.take(vlen)?));
    }
    let vlen = r.u32()? as usize;
    let value = r.take(vlen)?;
    Ok(OutRecord {
        topic,
        key,
        headers,
        value,
    })
}

fn put_bytes16(buf: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(n as u16).to_le_bytes());
    buf.extend_from_slice(&b[..n]);
}

/// One input-journal entry.
#[derive(Clone, Debug, PartialEq)]
pub enum JournalEntry<'a> {
    Reading {
        sensor: &'a str,
        site: Option<&'a str>,
        field: &'a str,
        ts: i64,
        value: f64,
        arrival: i64,
    },
    Tick {
        now: i64,
    },
    Delivery(crate::redelivery::Delivery),
}

/// Encodes a journal entry into `buf` (cleared first).
pub fn encode_journal(buf: &mut Vec<u8>, e: &JournalEntry<'_>) {
    buf.clear();
    match e {
        JournalEntry::Reading {
            sensor,
            site,
            field,
            ts,
            value,
            arrival,
        } => {
            buf.push(1);
            buf.extend_from_slice(&ts.to_le_bytes());
            buf.extend_from_slice(&value.to_le_bytes());
            buf.extend_from_slice(&arrival.to_le_bytes());
            put_str(buf, sensor);
            match site {
                Some(s) => put_str(buf, s),
                None => buf.extend_from_slice(&u16::MAX.to_le_bytes()),
            }
            put_str(buf, field);
        }
        JournalEntry::Tick { now } => {
            buf.push(2);
            buf.extend_from_slice(&now.to_le_bytes());
        }
        JournalEntry::Delivery(d) => {
            buf.push(3);
            buf.extend_from_slice(&d.pkid.to_le_bytes());
            buf.extend_from_slice(&d.digest.to_le_bytes());
        }
    }
}

/// Decodes a journal entry.
pub fn decode_journal(bytes: &[u8]) -> Result<JournalEntry<'_>, WireError> {
    let mut r = Reader::new(bytes);
    match r.u8()? {
        1 => {
            let ts = r.i64()?;
            let value = r.f64()?;
            let arrival = r.i64()?;
            let sensor = r.str()?;
            let site = r.opt_str()?;
            let field = r.str()?;
            Ok(JournalEntry::Reading {
                sensor,
                site,
                field,
                ts,
                value,
                arrival,
            })
        }
        2 => Ok(JournalEntry::Tick { now: r.i64()? }),
        3 => {
            let pkid = r.u16()?;
            let digest = r.u64()?;
            Ok(JournalEntry::Delivery(crate::redelivery::Delivery {
                pkid,
                digest,
            }))
        }
        k => Err(WireError::Kind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_delivery_entry_has_the_documented_layout() {
        let d = crate::redelivery::Delivery {
            pkid: 0x0102,
            digest: 0x0a0b_0c0d_0e0f_1011,
        };
        let mut buf = Vec::new();
        encode_journal(&mut buf, &JournalEntry::Delivery(d));
        assert_eq!(
            buf,
            [3, 0x02, 0x01, 0x11, 0x10, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a]
        );
        assert_eq!(decode_journal(&buf), Ok(JournalEntry::Delivery(d)));
        assert!(decode_journal(&buf[..10]).is_err());
    }

    proptest! {
        #[test]
        fn out_records_round_trip(key in ".{0,40}", name in "[a-z-]{1,20}", hv in proptest::collection::vec(any::<u8>(), 0..50), value in proptest::collection::vec(any::<u8>(), 0..500)) {
            let mut buf = Vec::new();
            encode_out(&mut buf, TopicKind::DeadLetter, key.as_bytes(), &[(&name, &hv)], &value);
            let r = decode_out(&buf).unwrap();
            prop_assert_eq!(r.topic, TopicKind::DeadLetter);
            prop_assert_eq!(r.key, key.as_bytes());
            prop_assert_eq!(r.headers, vec![(name.as_str(), hv.as_slice())]);
            prop_assert_eq!(r.value, value.as_slice());
            for n in 0..buf.len() { prop_assert!(decode_out(&buf[..n]).is_err()); }
        }

        #[test]
        fn journal_entries_round_trip(sensor in ".{0,30}", site in proptest::option::of(".{0,10}"), field in ".{0,10}", ts in any::<i64>(), value in any::<f64>(), arrival in any::<i64>()) {
            let e = JournalEntry::Reading { sensor: &sensor, site: site.as_deref(), field: &field, ts, value, arrival };
            let mut buf = Vec::new();
            encode_journal(&mut buf, &e);
            let d = decode_journal(&buf).unwrap();
            // compare with NaN-safe bits
            match d {
                JournalEntry::Reading { sensor: s, site: si, field: f, ts: t, value: v, arrival: a } => {
                    prop_assert_eq!((s, si, f, t, v.to_bits(), a), (sensor.as_str(), site.as_deref(), field.as_str(), ts, value.to_bits(), arrival));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
