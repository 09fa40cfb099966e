//! The disk log's pure core: bookkeeping and decisions, no I/O, no clocks.
//!
//! The [`Ledger`] knows which segments exist (base seq, record count, bytes on disk), the
//! next sequence number, the ack floor (smallest unacked record), the acks above the floor,
//! the send cursor and the counters. It decides whether an append needs a new segment,
//! whether the log is full and, if so, what the full policy does about it, and which
//! segments may be deleted. The I/O shell in `mod.rs` carries the decisions out and tells
//! the ledger afterwards (`commit_append`, `remove_reclaimed`, `lose_tail`, ...).
//!
//! Invariants (checked by the property test below):
//! - segments are sorted by base and do not overlap; a segment holds the contiguous seqs
//!   `base..base + records`; gaps between segments are allowed (records lost to damage);
//! - `floor` is the smallest present, unacked seq, or `next_seq` when there is none;
//! - every bit in `acked` is a present seq above `floor`;
//! - `cursor >= floor`; records below the cursor have been handed to the forwarder;
//! - `total_bytes` is the sum of the segments' bytes.

use std::collections::VecDeque;

use super::segment::SEGMENT_HEADER_LEN;
use super::{FullPolicy, LogStats, Seq};

/// One segment file as the ledger sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    /// Seq of the segment's first record (also its file name).
    pub base: Seq,
    /// Number of valid records, seqs `base..base + records`.
    pub records: u64,
    /// Bytes the segment file takes on disk (header, records and any skipped damage).
    pub bytes: u64,
}

impl SegmentMeta {
    /// One past the last seq of the segment.
    pub fn end(&self) -> Seq {
        self.base + self.records
    }
}

/// Size limits and full policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub segment_bytes: u64,
    pub max_bytes: u64,
    pub policy: FullPolicy,
}

/// What an append must do, decided by [`Ledger::plan_append`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppendPlan {
    /// Seq the record gets.
    pub seq: Seq,
    /// Start a new segment with base `seq` before writing.
    pub roll: bool,
    /// Bases of the oldest segments to delete first (after rolling), oldest first.
    pub delete: Vec<Seq>,
    /// Unacked records lost because the log was full (drop-oldest policy).
    pub dropped_records: u64,
    /// Bytes of the deleted segments that still held unacked records.
    pub dropped_bytes: u64,
}

/// The log is full and the policy is `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full {
    pub bytes: u64,
    pub max_bytes: u64,
}

/// Set of acked seqs above the floor: a bitset relative to a word-aligned base.
///
/// Costs one bit per seq between the floor and the highest ack, so out-of-order acks over
/// a window of a million records take 128 KiB.
#[derive(Clone, Debug, Default)]
struct AckBits {
    /// Seq of bit 0 of `words[0]`; a multiple of 64.
    base: Seq,
    words: VecDeque<u64>,
    count: u64,
}

impl AckBits {
    fn locate(&self, seq: Seq) -> Option<(usize, u32)> {
        if seq < self.base {
            return None;
        }
        let index = usize::try_from((seq - self.base) / 64).ok()?;
        Some((index, (seq % 64) as u32))
    }

    fn contains(&self, seq: Seq) -> bool {
        match self.locate(seq) {
            Some((i, bit)) => self.words.get(i).is_some_and(|w| w >> bit & 1 == 1),
            None => false,
        }
    }

    fn insert(&mut self, seq: Seq) -> bool {
        let aligned = seq - seq % 64;
        if self.words.is_empty() {
            self.base = aligned;
        }
        while aligned < self.base {
            self.words.push_front(0);
            self.base -= 64;
        }
        let Some((i, bit)) = self.locate(seq) else {
            return false;
        };
        while self.words.len() <= i {
            self.words.push_back(0);
        }
        let word = &mut self.words[i];
        let fresh = *word >> bit & 1 == 0;
        *word |= 1 << bit;
        if fresh {
            self.count += 1;
        }
        fresh
    }

    fn remove(&mut self, seq: Seq) -> bool {
        let Some((i, bit)) = self.locate(seq) else {
            return false;
        };
        let Some(word) = self.words.get_mut(i) else {
            return false;
        };
        let present = *word >> bit & 1 == 1;
        *word &= !(1 << bit);
        if present {
            self.count -= 1;
        }
        present
    }

    /// (word index, mask) pairs covering the seqs `lo..hi` that fall inside the bitset.
    fn masks(&self, lo: Seq, hi: Seq) -> Vec<(usize, u64)> {
        let end = self.base + 64 * self.words.len() as u64;
        let (lo, hi) = (lo.max(self.base), hi.min(end));
        let mut out = Vec::new();
        let mut at = lo;
        while at < hi {
            let word_start = at - at % 64;
            let from = at - word_start;
            let to = (hi - word_start).min(64);
            let width = to - from;
            let mask = if width == 64 {
                u64::MAX
            } else {
                ((1u64 << width) - 1) << from
            };
            out.push((((word_start - self.base) / 64) as usize, mask));
            at = word_start + to;
        }
        out
    }

    fn count_range(&self, lo: Seq, hi: Seq) -> u64 {
        self.masks(lo, hi)
            .into_iter()
            .map(|(i, mask)| u64::from((self.words[i] & mask).count_ones()))
            .sum()
    }

    fn clear_range(&mut self, lo: Seq, hi: Seq) {
        for (i, mask) in self.masks(lo, hi) {
            let word = &mut self.words[i];
            self.count -= u64::from((*word & mask).count_ones());
            *word &= !mask;
        }
    }

    /// Forgets every seq below `floor` and releases whole words.
    fn clear_below(&mut self, floor: Seq) {
        self.clear_range(self.base, floor);
        while self.words.front() == Some(&0) {
            self.words.pop_front();
            self.base += 64;
        }
        while self.words.back() == Some(&0) {
            self.words.pop_back();
        }
        if self.words.is_empty() {
            self.base = 0;
        }
    }
}

/// Bookkeeping of the disk log; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Ledger {
    limits: Limits,
    segments: VecDeque<SegmentMeta>,
    next_seq: Seq,
    floor: Seq,
    acked: AckBits,
    cursor: Seq,
    /// Records below this seq may be handed out by [`Ledger::next_unsent`]; later ones
    /// were appended but not yet published (see [`Ledger::publish`]).
    published: Seq,
    persisted_floor: Seq,
    total_bytes: u64,
    dropped_records: u64,
    dropped_bytes: u64,
    torn_bytes: u64,
    corrupt_records: u64,
}

impl Ledger {
    /// An empty log whose first record gets seq `next_seq`.
    #[cfg(test)]
    pub fn new(limits: Limits, next_seq: Seq) -> Ledger {
        Ledger::recover(limits, Vec::new(), Some(next_seq), 0)
    }

    /// The ledger of a log found on disk.
    ///
    /// `segments` are the scanned segment files, sorted and not overlapping (the shell
    /// checks); `persisted_floor` is the ack floor from the ack file. The next seq is past
    /// both the last record and the persisted floor, so seqs never go backwards below
    /// anything durable.
    pub fn recover(
        limits: Limits,
        segments: Vec<SegmentMeta>,
        persisted_floor: Option<Seq>,
        torn_bytes: u64,
    ) -> Ledger {
        let persisted = persisted_floor.unwrap_or(0);
        let last_end = segments.last().map_or(0, SegmentMeta::end);
        let next_seq = last_end.max(persisted);
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let mut ledger = Ledger {
            limits,
            segments: segments.into(),
            next_seq,
            floor: persisted,
            acked: AckBits::default(),
            cursor: persisted,
            // Whatever a restart finds on disk was published by the run that wrote it.
            published: next_seq,
            persisted_floor: persisted,
            total_bytes,
            dropped_records: 0,
            dropped_bytes: 0,
            torn_bytes,
            corrupt_records: 0,
        };
        ledger.settle();
        ledger
    }

    #[cfg(test)]
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Smallest unacked seq (or `next_seq` when everything is acked).
    #[cfg(test)]
    pub fn floor(&self) -> Seq {
        self.floor
    }

    #[cfg(test)]
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    pub fn segments(&self) -> impl Iterator<Item = &SegmentMeta> {
        self.segments.iter()
    }

    /// Index of the first segment whose end is past `seq` (the one holding it, or the next).
    fn segment_index(&self, seq: Seq) -> usize {
        self.segments.partition_point(|s| s.end() <= seq)
    }

    /// Whether `seq` is a record in some segment.
    pub fn is_present(&self, seq: Seq) -> bool {
        self.segments
            .get(self.segment_index(seq))
            .is_some_and(|s| s.base <= seq)
    }

    #[cfg(test)]
    pub fn is_acked(&self, seq: Seq) -> bool {
        seq < self.floor || self.acked.contains(seq)
    }

    /// Unacked records of a segment.
    fn unacked_in(&self, s: &SegmentMeta) -> u64 {
        let lo = s.base.max(self.floor);
        let hi = s.end();
        if lo >= hi {
            return 0;
        }
        (hi - lo) - self.acked.count_range(lo, hi)
    }

    /// Number of unacked records.
    pub fn pending(&self) -> u64 {
        let first = self.segment_index(self.floor);
        let present: u64 = self
            .segments
            .iter()
            .skip(first)
            .map(|s| s.end() - s.base.max(self.floor))
            .sum();
        present - self.acked.count
    }

    /// Moves the floor past acked seqs and gaps; keeps `acked` and `cursor` consistent.
    fn settle(&mut self) {
        loop {
            if self.floor >= self.next_seq {
                self.floor = self.next_seq;
                break;
            }
            let Some(seg) = self.segments.get(self.segment_index(self.floor)).copied() else {
                self.floor = self.next_seq;
                break;
            };
            if self.floor < seg.base {
                self.floor = seg.base;
                continue;
            }
            while self.floor < seg.end() && self.acked.remove(self.floor) {
                self.floor += 1;
            }
            if self.floor < seg.end() {
                break;
            }
        }
        self.acked.clear_below(self.floor);
        self.cursor = self.cursor.max(self.floor);
    }

    /// Decides how to append a record of `record_bytes` bytes (header included).
    pub fn plan_append(&self, record_bytes: u64) -> Result<AppendPlan, Full> {
        let Limits {
            segment_bytes,
            max_bytes,
            policy,
        } = self.limits;
        let n = self.segments.len();
        let mut roll = match self.segments.back() {
            None => true,
            Some(active) => {
                active.end() != self.next_seq
                    || (active.records > 0 && active.bytes + record_bytes > segment_bytes)
            }
        };
        let need = |roll: bool, freed: u64| {
            self.total_bytes - freed + record_bytes + if roll { SEGMENT_HEADER_LEN } else { 0 }
        };
        // The active (last) segment may only go when a new one replaces it.
        let deletable = |roll: bool| if roll { n } else { n.saturating_sub(1) };
        let mut del = 0;
        let mut freed = 0;

        // 1. Wholly acked segments go first; nothing is lost.
        while need(roll, freed) > max_bytes
            && del < deletable(roll)
            && self.segments[del].end() <= self.floor
        {
            freed += self.segments[del].bytes;
            del += 1;
        }
        if need(roll, freed) > max_bytes && !roll && del + 1 == n {
            let active = self.segments[del];
            if active.records > 0 && active.end() <= self.floor {
                roll = true;
                freed += active.bytes;
                del += 1;
            }
        }

        // 2. Still full: the policy decides.
        let mut dropped_records = 0;
        let mut dropped_bytes = 0;
        if need(roll, freed) > max_bytes {
            // The record would be alone in the log: accept it even if it is oversized,
            // otherwise it could never be written.
            let alone = |roll: bool, del: usize| {
                (roll && del == n) || (!roll && del + 1 == n && self.segments[del].records == 0)
            };
            match policy {
                FullPolicy::Block => {
                    if !alone(roll, del) {
                        return Err(Full {
                            bytes: self.total_bytes,
                            max_bytes,
                        });
                    }
                }
                FullPolicy::DropOldest => {
                    loop {
                        if need(roll, freed) <= max_bytes {
                            break;
                        }
                        if del == deletable(roll) {
                            if !roll && del + 1 == n && self.segments[del].records > 0 {
                                roll = true;
                            } else {
                                break;
                            }
                        }
                        let seg = &self.segments[del];
                        let lost = self.unacked_in(seg);
                        if lost > 0 {
                            dropped_records += lost;
                            dropped_bytes += seg.bytes;
                        }
                        freed += seg.bytes;
                        del += 1;
                    }
                    debug_assert!(need(roll, freed) <= max_bytes || alone(roll, del));
                }
            }
        }

        Ok(AppendPlan {
            seq: self.next_seq,
            roll,
            delete: self.segments.iter().take(del).map(|s| s.base).collect(),
            dropped_records,
            dropped_bytes,
        })
    }

    /// Records that the shell carried out `plan` (rolled, deleted, wrote the record).
    pub fn commit_append(&mut self, plan: &AppendPlan, record_bytes: u64) {
        debug_assert_eq!(plan.seq, self.next_seq);
        for base in &plan.delete {
            if let Some(seg) = self.segments.pop_front() {
                debug_assert_eq!(seg.base, *base);
                self.total_bytes -= seg.bytes;
            }
        }
        self.dropped_records += plan.dropped_records;
        self.dropped_bytes += plan.dropped_bytes;
        if plan.roll {
            self.segments.push_back(SegmentMeta {
                base: plan.seq,
                records: 0,
                bytes: SEGMENT_HEADER_LEN,
            });
            self.total_bytes += SEGMENT_HEADER_LEN;
        }
        if let Some(active) = self.segments.back_mut() {
            active.records += 1;
            active.bytes += record_bytes;
        }
        self.total_bytes += record_bytes;
        self.next_seq += 1;
        self.settle();
    }

    /// Record `seq` was delivered. Unknown, duplicate and future seqs are ignored.
    pub fn ack(&mut self, seq: Seq) {
        if seq < self.floor || seq >= self.next_seq || !self.is_present(seq) {
            return;
        }
        self.acked.insert(seq);
        if seq == self.floor {
            self.settle();
        }
    }

    /// Every record up to and including `seq` is done.
    pub fn ack_through(&mut self, seq: Seq) {
        let floor = seq.saturating_add(1).min(self.next_seq);
        if floor > self.floor {
            self.floor = floor;
            self.settle();
        }
    }

    /// The next record to hand to the forwarder: `(segment base, seq)`, the first present,
    /// unacked, published seq at or after the cursor.
    pub fn next_unsent(&self) -> Option<(Seq, Seq)> {
        let mut seq = self.cursor.max(self.floor);
        loop {
            let seg = self.segments.get(self.segment_index(seq))?;
            seq = seq.max(seg.base);
            let end = seg.end().min(self.published);
            while seq < end && self.acked.contains(seq) {
                seq += 1;
            }
            if seq < end {
                return Some((seg.base, seq));
            }
            if end < seg.end() {
                return None;
            }
        }
    }

    /// Every record appended so far may be handed out.
    pub fn publish(&mut self) {
        self.published = self.next_seq;
    }

    /// `seq` was handed to the forwarder.
    pub fn mark_sent(&mut self, seq: Seq) {
        self.cursor = self.cursor.max(seq + 1);
    }

    /// Hand out everything unacked again, from the floor.
    pub fn rewind(&mut self) {
        self.cursor = self.floor;
    }

    /// A copy whose cursor is at the floor and that hands out every record, published or
    /// not, for replaying.
    pub fn replay_view(&self) -> Ledger {
        let mut view = self.clone();
        view.rewind();
        view.publish();
        view
    }

    /// The floor to write to the ack file, if it moved since the last write.
    pub fn floor_to_persist(&self) -> Option<Seq> {
        (self.floor != self.persisted_floor).then_some(self.floor)
    }

    pub fn mark_persisted(&mut self, floor: Seq) {
        self.persisted_floor = floor;
    }

    /// Segments that hold only acked records and may be deleted (never the last one).
    pub fn reclaimable(&self) -> Vec<Seq> {
        let keep_last = self.segments.len().saturating_sub(1);
        self.segments
            .iter()
            .take(keep_last)
            .take_while(|s| s.end() <= self.floor)
            .map(|s| s.base)
            .collect()
    }

    /// The shell deleted the oldest segment, which [`Ledger::reclaimable`] named.
    pub fn remove_reclaimed(&mut self, base: Seq) {
        if self.segments.front().is_some_and(|s| s.base == base) && self.segments.len() > 1 {
            if let Some(seg) = self.segments.pop_front() {
                self.total_bytes -= seg.bytes;
            }
        }
    }

    /// Records from `base + keep` on in segment `base` turned out unreadable (damage
    /// found after open). They are forgotten; the next append starts a new segment if
    /// this was the active one. Returns how many unacked records were lost.
    pub fn lose_tail(&mut self, base: Seq, keep: u64, damaged_bytes: u64) -> u64 {
        let index = self.segments.partition_point(|s| s.base < base);
        let Some(seg) = self.segments.get(index).copied() else {
            return 0;
        };
        if seg.base != base || keep >= seg.records {
            return 0;
        }
        let lost_part = SegmentMeta {
            base: base + keep,
            records: seg.records - keep,
            bytes: 0,
        };
        let lost = self.unacked_in(&lost_part);
        self.acked.clear_range(lost_part.base, lost_part.end());
        self.segments[index].records = keep;
        self.corrupt_records += lost;
        self.torn_bytes += damaged_bytes;
        self.settle();
        lost
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            pending_records: self.pending(),
            bytes_on_disk: self.total_bytes,
            segments: self.segments.len() as u64,
            first_unacked: self.floor,
            next_seq: self.next_seq,
            dropped_records: self.dropped_records,
            dropped_bytes: self.dropped_bytes,
            torn_bytes_skipped: self.torn_bytes,
            corrupt_records_skipped: self.corrupt_records,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    use super::*;
    use crate::disklog::segment::RECORD_HEADER_LEN;

    fn limits(segment_bytes: u64, max_bytes: u64, policy: FullPolicy) -> Limits {
        Limits {
            segment_bytes,
            max_bytes,
            policy,
        }
    }

    fn append(ledger: &mut Ledger, payload_len: u64) -> Result<AppendPlan, Full> {
        let bytes = RECORD_HEADER_LEN + payload_len;
        let plan = ledger.plan_append(bytes)?;
        ledger.commit_append(&plan, bytes);
        Ok(plan)
    }

    #[test]
    fn out_of_order_acks_move_the_floor_only_over_a_contiguous_prefix() {
        let mut l = Ledger::new(limits(1 << 20, 1 << 30, FullPolicy::Block), 0);
        for _ in 0..200 {
            append(&mut l, 10).unwrap();
        }
        l.ack(2);
        l.ack(1);
        l.ack(150);
        assert_eq!(l.floor(), 0);
        l.ack(0);
        assert_eq!(l.floor(), 3);
        for seq in (3..150).rev() {
            l.ack(seq);
        }
        assert_eq!(l.floor(), 151);
        assert_eq!(l.pending(), 49);
        l.ack_through(1_000);
        assert_eq!(l.floor(), 200);
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn a_new_segment_starts_when_the_active_one_would_overflow() {
        // header 16 + 3 records of 16+24 = 136 bytes per segment at most
        let mut l = Ledger::new(limits(136, 1 << 20, FullPolicy::Block), 0);
        let rolls: Vec<bool> = (0..7).map(|_| append(&mut l, 24).unwrap().roll).collect();
        assert_eq!(rolls, [true, false, false, true, false, false, true]);
        // an oversized record gets a segment of its own
        assert!(append(&mut l, 500).unwrap().roll);
        assert!(append(&mut l, 1).unwrap().roll);
    }

    #[test]
    fn block_refuses_when_full_and_accepts_again_once_acked_segments_can_go() {
        let mut l = Ledger::new(limits(136, 300, FullPolicy::Block), 0);
        for _ in 0..6 {
            append(&mut l, 24).unwrap();
        }
        // 2 segments of 136 bytes = 272; a third needs 16 + 40 more
        assert_eq!(
            l.plan_append(40),
            Err(Full {
                bytes: 272,
                max_bytes: 300
            })
        );
        l.ack_through(2);
        let plan = append(&mut l, 24).unwrap();
        assert_eq!(plan.delete, vec![0]);
        assert_eq!(plan.dropped_records, 0);
        assert_eq!(l.stats().dropped_records, 0);
    }

    #[test]
    fn drop_oldest_deletes_whole_oldest_segments_and_counts_unacked_records() {
        let mut l = Ledger::new(limits(136, 300, FullPolicy::DropOldest), 0);
        for _ in 0..6 {
            append(&mut l, 24).unwrap();
        }
        l.ack(1);
        let plan = append(&mut l, 24).unwrap();
        assert_eq!(plan.delete, vec![0]);
        assert_eq!(plan.dropped_records, 2);
        assert_eq!(plan.dropped_bytes, 136);
        assert_eq!(l.floor(), 3);
        assert_eq!(l.stats().dropped_records, 2);
    }

    #[test]
    fn recovery_skips_gaps_and_never_reuses_a_persisted_floor() {
        let segs = vec![
            SegmentMeta {
                base: 10,
                records: 5,
                bytes: 100,
            },
            SegmentMeta {
                base: 20,
                records: 2,
                bytes: 50,
            },
        ];
        let l = Ledger::recover(
            limits(1000, 10_000, FullPolicy::Block),
            segs.clone(),
            None,
            0,
        );
        assert_eq!((l.floor(), l.next_seq(), l.pending()), (10, 22, 7));
        let l = Ledger::recover(
            limits(1000, 10_000, FullPolicy::Block),
            segs.clone(),
            Some(17),
            0,
        );
        assert_eq!((l.floor(), l.next_seq(), l.pending()), (20, 22, 2));
        let l = Ledger::recover(limits(1000, 10_000, FullPolicy::Block), segs, Some(30), 0);
        assert_eq!((l.floor(), l.next_seq(), l.pending()), (30, 30, 0));
        assert!(
            l.plan_append(20).unwrap().roll,
            "the last segment ends at 22, not 30"
        );
        assert_eq!(l.reclaimable(), vec![10]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Append(u64),
        Ack(usize),
        AckThrough(usize),
        Read(usize),
        Rewind,
        Persist,
        LoseTail(usize, u64),
        Publish,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => prop_oneof![0..60u64, 0..400u64].prop_map(Op::Append),
            4 => any::<usize>().prop_map(Op::Ack),
            1 => any::<usize>().prop_map(Op::AckThrough),
            2 => (1..20usize).prop_map(Op::Read),
            1 => Just(Op::Rewind),
            1 => Just(Op::Persist),
            1 => (any::<usize>(), 0..8u64).prop_map(|(s, k)| Op::LoseTail(s, k)),
            3 => Just(Op::Publish),
        ]
    }

    #[derive(Debug)]
    struct Rec {
        bytes: u64,
        acked: bool,
    }

    /// The obvious model: every present record with its size and ack state.
    #[derive(Debug, Default)]
    struct Model {
        recs: BTreeMap<Seq, Rec>,
        next: Seq,
        cursor: Seq,
        /// Appended records below this may be handed out.
        published: Seq,
        sent: BTreeSet<Seq>,
        dropped: u64,
        corrupt: u64,
    }

    impl Model {
        fn floor(&self) -> Seq {
            self.recs
                .iter()
                .find(|(_, r)| !r.acked)
                .map_or(self.next, |(s, _)| *s)
        }

        fn pick(&self, i: usize) -> Seq {
            if self.recs.is_empty() || i % 8 == 7 {
                return self.next + (i % 3) as u64;
            }
            *self.recs.keys().nth(i % self.recs.len()).unwrap_or(&0)
        }

        /// Forgets records the ledger no longer has; returns (unacked count, their bytes)
        /// and checks that they came from the old end.
        fn forget_absent(&mut self, l: &Ledger) -> (u64, u64) {
            let gone: Vec<Seq> = self
                .recs
                .keys()
                .copied()
                .filter(|s| !l.is_present(*s))
                .collect();
            let (mut n, mut bytes) = (0, 0);
            for seq in gone {
                if let Some(r) = self.recs.remove(&seq) {
                    if !r.acked {
                        n += 1;
                        bytes += r.bytes;
                    }
                }
            }
            (n, bytes)
        }
    }

    fn check(l: &Ledger, m: &Model) {
        assert_eq!(l.next_seq(), m.next);
        assert_eq!(l.floor(), m.floor(), "floor");
        let unacked = m.recs.values().filter(|r| !r.acked).count() as u64;
        assert_eq!(l.pending(), unacked, "pending");
        let stats = l.stats();
        assert_eq!(stats.pending_records, unacked);
        assert_eq!(stats.dropped_records, m.dropped);
        assert_eq!(stats.corrupt_records_skipped, m.corrupt);
        let segs: Vec<SegmentMeta> = l.segments().copied().collect();
        for pair in segs.windows(2) {
            assert!(pair[0].end() <= pair[1].base, "segments overlap: {segs:?}");
        }
        let present: u64 = segs.iter().map(|s| s.records).sum();
        assert_eq!(present, m.recs.len() as u64, "present records");
        for seq in m.recs.keys() {
            assert!(l.is_present(*seq), "seq {seq} missing from ledger");
        }
        for (seq, r) in &m.recs {
            assert_eq!(l.is_acked(*seq), r.acked, "ack state of {seq}");
        }
        assert_eq!(l.total_bytes(), segs.iter().map(|s| s.bytes).sum::<u64>());
        // (records 0: a damaged segment keeps its bytes until it is deleted)
        let single_oversized = segs.len() == 1 && segs[0].records <= 1;
        assert!(
            l.total_bytes() <= l.limits.max_bytes || single_oversized,
            "{} bytes > max {} with {segs:?}",
            l.total_bytes(),
            l.limits.max_bytes
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 400,
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn ledger_matches_a_simple_model(
            segment_bytes in 64..1024u64,
            max_factor in 1..6u64,
            drop_oldest in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let policy = if drop_oldest { FullPolicy::DropOldest } else { FullPolicy::Block };
            let max_bytes = segment_bytes * max_factor;
            let mut l = Ledger::new(limits(segment_bytes, max_bytes, policy), 0);
            let mut m = Model::default();
            let mut exact_bytes = true;
            for op in ops {
                match op {
                    Op::Append(len) => {
                        let bytes = RECORD_HEADER_LEN + len;
                        let before = l.total_bytes();
                        match append(&mut l, len) {
                            Err(full) => {
                                prop_assert_eq!(policy, FullPolicy::Block);
                                // refused only when the record (and maybe a new segment
                                // header) does not fit
                                prop_assert!(before + bytes + SEGMENT_HEADER_LEN > max_bytes);
                                prop_assert_eq!(full.bytes, before);
                                prop_assert!(m.recs.values().any(|r| !r.acked));
                            }
                            Ok(plan) => {
                                prop_assert_eq!(plan.seq, m.next, "seqs are handed out once, in order");
                                m.recs.insert(plan.seq, Rec { bytes, acked: false });
                                m.next += 1;
                                let oldest_kept = l.segments().next().map_or(m.next, |s| s.base);
                                let (lost, lost_bytes) = m.forget_absent(&l);
                                prop_assert!(m.recs.keys().all(|s| *s >= oldest_kept));
                                prop_assert_eq!(lost, plan.dropped_records, "drop count");
                                prop_assert!(plan.dropped_bytes >= lost_bytes);
                                if policy == FullPolicy::Block {
                                    prop_assert_eq!(plan.dropped_records, 0);
                                }
                                m.dropped += lost;
                                let last = l.segments().last().copied().unwrap();
                                prop_assert_eq!(last.end(), l.next_seq());
                            }
                        }
                    }
                    Op::Ack(i) => {
                        let seq = m.pick(i);
                        l.ack(seq);
                        if let Some(r) = m.recs.get_mut(&seq) { r.acked = true; }
                    }
                    Op::AckThrough(i) => {
                        let seq = m.pick(i);
                        l.ack_through(seq);
                        for (_, r) in m.recs.range_mut(..=seq) { r.acked = true; }
                    }
                    Op::Read(n) => {
                        for _ in 0..n {
                            let floor = m.floor();
                            let expected = m.recs.range(m.cursor.max(floor)..m.published.max(m.cursor.max(floor)))
                                .find(|(_, r)| !r.acked).map(|(s, _)| *s);
                            let got = l.next_unsent();
                            prop_assert_eq!(got.map(|(_, s)| s), expected);
                            let Some((base, seq)) = got else { break };
                            let seg = l.segments().find(|s| s.base == base).copied().unwrap();
                            prop_assert!(seg.base <= seq && seq < seg.end());
                            prop_assert!(m.sent.insert(seq), "seq {} handed out twice", seq);
                            l.mark_sent(seq);
                            m.cursor = seq + 1;
                        }
                    }
                    Op::Rewind => {
                        l.rewind();
                        m.cursor = 0;
                        m.sent.clear();
                    }
                    Op::Persist => {
                        if let Some(floor) = l.floor_to_persist() {
                            prop_assert_eq!(floor, m.floor());
                            l.mark_persisted(floor);
                        }
                        prop_assert_eq!(l.floor_to_persist(), None);
                        for base in l.reclaimable() {
                            l.remove_reclaimed(base);
                        }
                        let (lost, _) = m.forget_absent(&l);
                        prop_assert_eq!(lost, 0, "only acked records are reclaimed");
                        prop_assert!(l.segments().count() >= 1 || m.next == 0);
                    }
                    Op::Publish => {
                        l.publish();
                        m.published = m.next;
                    }
                    Op::LoseTail(s, keep) => {
                        let segs: Vec<SegmentMeta> = l.segments().copied().collect();
                        if segs.is_empty() { continue; }
                        let seg = segs[s % segs.len()];
                        let lost = l.lose_tail(seg.base, keep, 7);
                        let (model_lost, _) = m.forget_absent(&l);
                        prop_assert_eq!(lost, model_lost);
                        m.corrupt += lost;
                        exact_bytes = false;
                    }
                }
                check(&l, &m);
                if exact_bytes {
                    let segs = l.segments().count() as u64;
                    let bytes: u64 = m.recs.values().map(|r| r.bytes).sum::<u64>()
                        + SEGMENT_HEADER_LEN * segs;
                    prop_assert_eq!(l.total_bytes(), bytes);
                }
            }
        }
    }
}
