//! Recognising an MQTT broker's redelivery of a message the agent already journaled.
//!
//! The agent acknowledges a QoS 1/2 message only after its readings are durable in the
//! input journal. A crash (or a lost connection) between that fsync and the broker
//! receiving the PUBACK/PUBREC makes the broker send the message again: with a persistent
//! session it re-sends every unacknowledged PUBLISH, under its original packet id and
//! with the DUP flag set. Without this table those readings would be counted twice.
//!
//! The table remembers, for the last `window` deliveries the agent journaled, each one's
//! packet id and [`digest`] (of topic and payload). A message is a redelivery when its
//! DUP flag is set and the most recent journaled delivery with its packet id has its
//! digest: the agent then acknowledges it without decoding it again.
//!
//! Why a window of the last deliveries suffices: a broker keeps at most its in-flight
//! limit of unacknowledged messages per client (MQTT 5: the receive maximum the agent
//! announces; MQTT 3.1.1: the broker's own limit, which `mqtt.receive_maximum` must be at
//! least as large as), so every message it may redeliver is among the last that many it
//! sent. The window is twice `mqtt.receive_maximum`.
//!
//! A new message never has DUP set. The one case this cannot tell apart: a message whose
//! acknowledgement the broker did receive, followed on the same packet id by a message
//! with exactly the same topic and payload that was not yet journaled when the agent
//! crashed; the second would be taken for the first. That needs a broker that reuses a
//! packet id at once, a sensor repeating a payload within one group commit, and a crash.
//!
//! Pure: no I/O. The table is part of the window snapshot and rebuilt from the journal's
//! delivery entries on recovery.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Digest of a message: FNV-1a (64 bit) over the topic's length (u32 LE), the topic and the
/// payload. Stable across versions and machines: it is stored in the journal.
pub fn digest(topic: &[u8], payload: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let len = (topic.len() as u32).to_le_bytes();
    for &b in len.iter().chain(topic).chain(payload) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// One journaled delivery: packet id and digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub pkid: u16,
    pub digest: u64,
}

/// The last `window` journaled deliveries; see the module docs.
#[derive(Clone, Debug)]
pub struct Deliveries {
    window: usize,
    /// Deliveries in journal order with their ordinal; entries replaced since (same packet
    /// id, later delivery) stay here until they leave the window.
    order: VecDeque<(u64, Delivery)>,
    /// Packet id → (ordinal, digest) of its latest delivery in the window.
    latest: HashMap<u16, (u64, u64)>,
    next: u64,
}

impl Deliveries {
    /// An empty table remembering the last `window` deliveries (at least 1).
    pub fn new(window: usize) -> Self {
        Deliveries {
            window: window.max(1),
            order: VecDeque::new(),
            latest: HashMap::new(),
            next: 0,
        }
    }

    /// How many deliveries the table remembers.
    pub fn window(&self) -> usize {
        self.window
    }

    /// A delivery was journaled.
    pub fn record(&mut self, d: Delivery) {
        let n = self.next;
        self.next += 1;
        self.order.push_back((n, d));
        self.latest.insert(d.pkid, (n, d.digest));
        while self.order.len() > self.window {
            if let Some((old, od)) = self.order.pop_front() {
                if self.latest.get(&od.pkid).is_some_and(|(m, _)| *m == old) {
                    self.latest.remove(&od.pkid);
                }
            }
        }
    }

    /// Whether a message with this packet id, DUP flag and digest is a redelivery of a
    /// journaled one.
    pub fn is_redelivery(&self, pkid: u16, dup: bool, digest: u64) -> bool {
        dup && self.latest.get(&pkid).is_some_and(|(_, d)| *d == digest)
    }

    /// The window's deliveries, oldest first (for the snapshot).
    pub fn to_vec(&self) -> Vec<Delivery> {
        self.order.iter().map(|(_, d)| *d).collect()
    }

    /// A table holding `deliveries` (oldest first), as [`Deliveries::to_vec`] gave them.
    pub fn restore(window: usize, deliveries: &[Delivery]) -> Self {
        let mut t = Deliveries::new(window);
        for d in deliveries {
            t.record(*d);
        }
        t
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_digest_is_stable_and_separates_topic_from_payload() {
        // Pinned: the digest is stored in journals.
        // (values computed independently from the definition above)
        assert_eq!(digest(b"", b""), 0x4d25_767f_9dce_13f5);
        assert_eq!(digest(b"sensors/a/temp", b"21.5"), 0xba77_6552_b746_4525);
        assert_ne!(digest(b"ab", b"c"), digest(b"a", b"bc"));
        assert_ne!(digest(b"t", b"1"), digest(b"t", b"2"));
    }

    #[test]
    fn only_a_dup_with_the_latest_digest_of_its_packet_id_is_a_redelivery() {
        let mut t = Deliveries::new(10);
        t.record(Delivery {
            pkid: 1,
            digest: 10,
        });
        t.record(Delivery {
            pkid: 2,
            digest: 20,
        });
        assert!(t.is_redelivery(1, true, 10));
        assert!(
            !t.is_redelivery(1, false, 10),
            "a first delivery is never one"
        );
        assert!(
            !t.is_redelivery(1, true, 11),
            "another message under the same id"
        );
        t.record(Delivery {
            pkid: 1,
            digest: 12,
        });
        assert!(!t.is_redelivery(1, true, 10), "the id was reused since");
        assert!(t.is_redelivery(1, true, 12));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Record(u16, u64),
        Ask(u16, bool, u64),
        SnapshotRestore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..8u16, 0..4u64).prop_map(|(p, d)| Op::Record(p, d)),
            3 => (0..8u16, any::<bool>(), 0..4u64).prop_map(|(p, dup, d)| Op::Ask(p, dup, d)),
            1 => Just(Op::SnapshotRestore),
        ]
    }

    proptest! {
        /// Model: every delivery ever recorded, in order; the answer looks at the last
        /// `window` of them only.
        #[test]
        fn the_table_answers_like_a_list_of_the_last_deliveries(
            window in 1..12usize,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let mut t = Deliveries::new(window);
            let mut all: Vec<(u16, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Record(pkid, digest) => {
                        t.record(Delivery { pkid, digest });
                        all.push((pkid, digest));
                    }
                    Op::Ask(pkid, dup, digest) => {
                        let recent = &all[all.len().saturating_sub(window)..];
                        let expected = dup
                            && recent.iter().rev().find(|(p, _)| *p == pkid).is_some_and(|(_, d)| *d == digest);
                        prop_assert_eq!(t.is_redelivery(pkid, dup, digest), expected);
                    }
                    Op::SnapshotRestore => {
                        t = Deliveries::restore(window, &t.to_vec());
                    }
                }
            }
        }
    }
}
