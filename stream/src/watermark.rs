//! Event-time watermarks per partition, and the watermark of a query over its
//! partitions. Pure: the caller passes processing time in.
//!
//! - A partition's watermark is the largest event time it has delivered minus the
//!   stream's `watermark_delay`. It never goes backwards.
//! - The source may say, per partition, whether records exist past what it has handed
//!   over ([`WatermarkTracker::set_backlog`]): *a backlog* (its read position is behind
//!   the partition's end, or rows it read are still in an open batch) or *caught up*.
//!   A partition with a known backlog is never idle, however long it has been silent:
//!   the rows it still holds may be older than every other partition's.
//! - Otherwise (caught up, or nothing known) a partition is idle once it has delivered
//!   nothing for `idle_timeout` (processing time) since its last batch, since it was
//!   added, or since it caught up after a backlog, whichever is latest. An idle
//!   partition does not hold the query back; it becomes active again with its next
//!   batch or its next backlog.
//! - A query's watermark is the minimum over its active (not idle) partitions. A
//!   partition that is active but has delivered nothing yet holds the watermark where
//!   it is (so a new query waits for every partition that has, or may have, data).
//! - When every partition is idle, the query's watermark is the largest partition
//!   watermark, so the last windows of a stream that stopped still close. With a
//!   source that reports backlogs this happens only when every partition has been
//!   caught up for `idle_timeout`: nothing that is already in Kafka can become late.
//! - The query's watermark never goes backwards (removing a partition, a partition
//!   rejoining with older data, nothing moves it back).

use std::collections::BTreeMap;

/// Watermark state of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Partition {
    /// Largest event time minus delay, if any row was seen.
    watermark: Option<i64>,
    /// Processing time (ms) the idle clock starts from: the last batch, being added,
    /// or catching up after a backlog.
    last_active: i64,
    /// What the source said last: `Some(true)` a backlog, `Some(false)` caught up.
    backlog: Option<bool>,
}

impl Partition {
    fn new(now_ms: i64) -> Self {
        Self {
            watermark: None,
            last_active: now_ms,
            backlog: None,
        }
    }

    fn idle(&self, now_ms: i64, idle_timeout: i64) -> bool {
        self.backlog != Some(true) && now_ms.saturating_sub(self.last_active) >= idle_timeout
    }
}

/// The watermark tracker of one query (or stream) over its partitions.
#[derive(Clone, Debug)]
pub struct WatermarkTracker {
    delay: i64,
    idle_timeout: i64,
    partitions: BTreeMap<i32, Partition>,
    current: Option<i64>,
}

impl WatermarkTracker {
    /// `delay_ms`: how far behind the largest event time the watermark trails;
    /// `idle_timeout_ms`: after how long without data a caught-up partition stops
    /// holding it back.
    pub fn new(delay_ms: i64, idle_timeout_ms: i64) -> Self {
        Self {
            delay: delay_ms.max(0),
            idle_timeout: idle_timeout_ms.max(0),
            partitions: BTreeMap::new(),
            current: None,
        }
    }

    /// Starts tracking `partition` (idempotent).
    pub fn add_partition(&mut self, partition: i32, now_ms: i64) {
        self.partitions
            .entry(partition)
            .or_insert_with(|| Partition::new(now_ms));
    }

    /// Stops tracking `partition` (it moved to another processor).
    pub fn remove_partition(&mut self, partition: i32, now_ms: i64) -> Option<i64> {
        self.partitions.remove(&partition);
        self.advance(now_ms)
    }

    /// Starts tracking `partition`, moved here from another processor with the
    /// watermark it had reached there (its idle clock starts now). The query's
    /// watermark does not go back for it.
    pub fn adopt_partition(&mut self, partition: i32, watermark: Option<i64>, now_ms: i64) {
        let mut p = Partition::new(now_ms);
        p.watermark = watermark;
        self.partitions.insert(partition, p);
    }

    /// A batch arrived on `partition` with largest event time `max_event_time`.
    /// Returns the query's watermark afterwards.
    pub fn observe(&mut self, partition: i32, max_event_time: i64, now_ms: i64) -> Option<i64> {
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition::new(now_ms));
        let w = max_event_time.saturating_sub(self.delay);
        p.watermark = Some(p.watermark.map_or(w, |old| old.max(w)));
        p.last_active = p.last_active.max(now_ms);
        self.advance(now_ms)
    }

    /// The source's word on `partition` at `now_ms`: `true` when records exist past
    /// what it has handed over (the partition is then never idle), `false` when it is
    /// caught up (after a backlog, the idle clock starts now). Returns the query's
    /// watermark afterwards.
    pub fn set_backlog(&mut self, partition: i32, backlog: bool, now_ms: i64) -> Option<i64> {
        let p = self
            .partitions
            .entry(partition)
            .or_insert_with(|| Partition::new(now_ms));
        if p.backlog == Some(true) && !backlog {
            p.last_active = p.last_active.max(now_ms);
        }
        p.backlog = Some(backlog);
        self.advance(now_ms)
    }

    /// Processing time passed (idle partitions may stop holding the watermark back).
    pub fn tick(&mut self, now_ms: i64) -> Option<i64> {
        self.advance(now_ms)
    }

    /// The query's current watermark (ms), if it has one yet.
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// The watermark a partition has reached, if any.
    pub fn partition_watermark(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).and_then(|p| p.watermark)
    }

    /// Whether `partition` counts as idle at `now_ms`.
    pub fn is_idle(&self, partition: i32, now_ms: i64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|p| p.idle(now_ms, self.idle_timeout))
    }

    /// The event-time part of the state, for a checkpoint: the query's watermark and
    /// each partition's. (Idleness and backlogs are about processing time and the
    /// source: a restored tracker starts them afresh.)
    pub fn snapshot(&self) -> (Option<i64>, BTreeMap<i32, Option<i64>>) {
        (
            self.current,
            self.partitions
                .iter()
                .map(|(p, s)| (*p, s.watermark))
                .collect(),
        )
    }

    /// Takes back [`WatermarkTracker::snapshot`]'s state at `now_ms` for the
    /// partitions tracked now: their watermarks as they were (none for a partition the
    /// snapshot does not know), every idle clock starting now, no backlog known. A
    /// partition of the snapshot that is not tracked any more is left out, so it holds
    /// nothing back.
    pub fn restore(
        &mut self,
        current: Option<i64>,
        partitions: &BTreeMap<i32, Option<i64>>,
        now_ms: i64,
    ) {
        self.current = current;
        for (p, s) in self.partitions.iter_mut() {
            *s = Partition::new(now_ms);
            s.watermark = partitions.get(p).copied().flatten();
        }
    }

    fn advance(&mut self, now_ms: i64) -> Option<i64> {
        let mut min_active: Option<i64> = None;
        let mut any_active = false;
        let mut blocked = false;
        let mut max_all: Option<i64> = None;
        for p in self.partitions.values() {
            if let Some(w) = p.watermark {
                max_all = Some(max_all.map_or(w, |m| m.max(w)));
            }
            if p.idle(now_ms, self.idle_timeout) {
                continue;
            }
            any_active = true;
            match p.watermark {
                Some(w) => min_active = Some(min_active.map_or(w, |m| m.min(w))),
                None => blocked = true,
            }
        }
        let candidate = if blocked {
            None
        } else if any_active {
            min_active
        } else {
            max_all
        };
        if let Some(c) = candidate {
            self.current = Some(self.current.map_or(c, |old| old.max(c)));
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_restored_tracker_keeps_the_watermarks_of_the_partitions_it_tracks() {
        let mut t = WatermarkTracker::new(0, 1_000);
        for p in [0, 1, 2] {
            t.add_partition(p, 0);
        }
        t.observe(0, 500, 0);
        t.observe(1, 300, 0);
        t.observe(2, 400, 0);
        let (current, marks) = t.snapshot();
        assert_eq!(current, Some(300));
        // Partition 1 went elsewhere and partition 3 is new here.
        let mut r = WatermarkTracker::new(0, 1_000);
        for p in [0, 2, 3] {
            r.add_partition(p, 10_000);
        }
        r.restore(current, &marks, 10_000);
        assert_eq!(r.partition_watermark(0), Some(500));
        assert_eq!(r.partition_watermark(1), None, "not tracked any more");
        assert_eq!(r.partition_watermark(3), None, "new: waits for its data");
        assert_eq!(r.current(), Some(300));
        // Partition 3 holds the watermark until it delivers, not partition 1.
        assert_eq!(r.tick(10_500), Some(300));
        r.observe(3, 450, 10_600);
        assert_eq!(r.current(), Some(400));
        // Idle clocks start at the restore.
        assert!(!r.is_idle(0, 10_900) && r.is_idle(0, 11_000));
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let mut w = WatermarkTracker::new(1_000, 10_000);
        w.add_partition(0, 0);
        w.add_partition(1, 0);
        assert_eq!(w.observe(0, 50_000, 1), None, "partition 1 has no data yet");
        assert_eq!(w.observe(1, 20_000, 2), Some(19_000));
        assert_eq!(w.observe(1, 60_000, 3), Some(49_000));
    }

    #[test]
    fn an_idle_partition_stops_holding_it_back_and_rejoins_with_data() {
        let mut w = WatermarkTracker::new(0, 5_000);
        w.add_partition(0, 0);
        w.add_partition(1, 0);
        w.observe(0, 10_000, 0);
        w.observe(1, 2_000, 0);
        assert_eq!(w.current(), Some(2_000));
        w.observe(0, 30_000, 6_000);
        assert_eq!(w.tick(6_000), Some(30_000), "partition 1 idle since 0");
        w.observe(1, 3_000, 7_000);
        assert_eq!(w.current(), Some(30_000), "never goes backwards");
        w.observe(1, 40_000, 8_000);
        w.observe(0, 50_000, 8_000);
        assert_eq!(w.current(), Some(40_000));
    }

    #[test]
    fn when_every_partition_is_idle_the_largest_watermark_wins() {
        let mut w = WatermarkTracker::new(0, 1_000);
        w.observe(0, 10, 0);
        w.observe(1, 500, 0);
        assert_eq!(w.current(), Some(10));
        assert_eq!(w.tick(1_000), Some(500));
    }

    #[test]
    fn a_partition_that_never_delivers_blocks_until_its_idle_timeout() {
        let mut w = WatermarkTracker::new(0, 1_000);
        w.add_partition(0, 0);
        w.add_partition(1, 0);
        w.observe(0, 10, 10);
        assert_eq!(w.tick(999), None);
        assert_eq!(w.tick(1_000), Some(10));
    }

    #[test]
    fn a_partition_with_a_backlog_is_never_idle() {
        // Partition 1 lags: it has read up to event time 10 s, and Kafka holds more.
        let mut w = WatermarkTracker::new(0, 5_000);
        w.add_partition(0, 0);
        w.add_partition(1, 0);
        w.observe(0, 50_000, 0);
        w.observe(1, 10_000, 0);
        w.set_backlog(0, false, 0);
        w.set_backlog(1, true, 0);
        assert_eq!(w.tick(1_000_000), Some(10_000), "silent, but not caught up");
        assert!(w.is_idle(0, 1_000_000));
        assert!(!w.is_idle(1, 1_000_000));
        // It catches up: the idle clock starts then, not at its last batch.
        w.set_backlog(1, false, 1_000_000);
        assert_eq!(w.tick(1_004_999), Some(10_000));
        assert_eq!(
            w.tick(1_005_000),
            Some(50_000),
            "every partition caught up and idle"
        );
    }

    #[test]
    fn when_every_partition_is_silent_a_backlog_still_holds_the_watermark() {
        // The processor stalled (a slow sink, say): no batch from anyone for a long time.
        let mut w = WatermarkTracker::new(0, 1_000);
        w.add_partition(0, 0);
        w.add_partition(1, 0);
        w.observe(0, 500, 0);
        w.observe(1, 10, 0);
        w.set_backlog(0, true, 0);
        w.set_backlog(1, true, 0);
        assert_eq!(w.tick(60_000), Some(10));
        w.observe(1, 400, 60_001);
        assert_eq!(w.current(), Some(400));
    }

    #[test]
    fn a_partition_known_to_have_a_backlog_blocks_until_it_delivers() {
        let mut w = WatermarkTracker::new(0, 1_000);
        w.add_partition(0, 0);
        w.add_partition(1, 0);
        w.set_backlog(1, true, 0);
        w.observe(0, 10, 10);
        assert_eq!(
            w.tick(100_000),
            None,
            "partition 1 has data it has not delivered"
        );
        w.observe(1, 5, 100_001);
        assert_eq!(w.current(), Some(5));
    }

    #[test]
    fn caught_up_without_a_backlog_before_keeps_the_idle_clock() {
        let mut w = WatermarkTracker::new(0, 1_000);
        w.observe(0, 10, 0);
        w.observe(1, 500, 0);
        w.set_backlog(0, false, 900);
        w.set_backlog(1, false, 900);
        assert_eq!(w.tick(1_000), Some(500), "caught up is not new activity");
    }

    /// One step of the property test below.
    #[derive(Clone, Debug)]
    enum Op {
        Add(i32),
        Observe(i32, i64),
        Backlog(i32, bool),
        Tick,
        Remove(i32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0i32..4).prop_map(Op::Add),
            6 => (0i32..4, 0i64..100_000).prop_map(|(p, t)| Op::Observe(p, t)),
            3 => (0i32..4, any::<bool>()).prop_map(|(p, b)| Op::Backlog(p, b)),
            3 => Just(Op::Tick),
            1 => (0i32..4).prop_map(Op::Remove),
        ]
    }

    /// What the model says at processing time `now`, recomputed from the whole history
    /// (every step so far, with its processing time): for each partition tracked now,
    /// whether it is idle, its watermark, and whether its source reported a backlog;
    /// and the candidate for the query's watermark.
    struct ModelView {
        partitions: BTreeMap<i32, (bool, Option<i64>, bool)>,
        candidate: Option<i64>,
    }

    fn model(history: &[(i64, Op)], now: i64, delay: i64, idle_timeout: i64) -> ModelView {
        // The steps of each partition since it was last removed.
        let mut steps: BTreeMap<i32, Vec<(i64, &Op)>> = BTreeMap::new();
        for (t, op) in history {
            match op {
                Op::Remove(p) => {
                    steps.remove(p);
                }
                Op::Add(p) | Op::Observe(p, _) | Op::Backlog(p, _) => {
                    steps.entry(*p).or_default().push((*t, op))
                }
                Op::Tick => {}
            }
        }
        let mut partitions = BTreeMap::new();
        for (p, s) in &steps {
            let watermark = s
                .iter()
                .filter_map(|(_, o)| match o {
                    Op::Observe(_, e) => Some(e - delay),
                    _ => None,
                })
                .max();
            let flags: Vec<(i64, bool)> = s
                .iter()
                .filter_map(|(t, o)| match o {
                    Op::Backlog(_, b) => Some((*t, *b)),
                    _ => None,
                })
                .collect();
            let backlog = flags.last().is_some_and(|(_, b)| *b);
            // The idle clock: the first step (being added), every batch, and every
            // report of "caught up" that ended a backlog.
            let first = s.first().map_or(now, |(t, _)| *t);
            let batches = s
                .iter()
                .filter(|(_, o)| matches!(o, Op::Observe(..)))
                .map(|(t, _)| *t);
            let caught_up = flags
                .windows(2)
                .filter(|w| w[0].1 && !w[1].1)
                .map(|w| w[1].0);
            let since = batches.chain(caught_up).fold(first, i64::max);
            let idle = !backlog && now - since >= idle_timeout;
            partitions.insert(*p, (idle, watermark, backlog));
        }
        let active: Vec<Option<i64>> = partitions
            .values()
            .filter(|(idle, _, _)| !idle)
            .map(|(_, w, _)| *w)
            .collect();
        let candidate = if active.iter().any(Option::is_none) {
            None
        } else if !active.is_empty() {
            active.iter().flatten().min().copied()
        } else {
            partitions.values().filter_map(|(_, w, _)| *w).max()
        };
        ModelView {
            partitions,
            candidate,
        }
    }

    proptest! {
        /// Against an independent model (the whole history recomputed at every step):
        /// partitions come and go, go silent, report backlogs and catching up, with
        /// idle timeouts short enough to matter. Also, without the model: the
        /// watermark never decreases, never passes the largest event time minus the
        /// delay, and never passes a partition with a known backlog.
        #[test]
        fn watermark_follows_the_model_through_idleness_and_backlogs(
            steps in proptest::collection::vec((op(), 0i64..1_500), 1..150),
            delay in 0i64..5_000,
            idle_timeout in prop_oneof![0i64..4_000, Just(1_000_000i64)],
        ) {
            let mut w = WatermarkTracker::new(delay, idle_timeout);
            let mut history: Vec<(i64, Op)> = Vec::new();
            let mut now = 0;
            let mut expected: Option<i64> = None;
            let mut max_event: Option<i64> = None;
            for (op, dt) in steps {
                now += dt;
                let prev = w.current();
                history.push((now, op.clone()));
                let view = model(&history, now, delay, idle_timeout);
                // `add_partition` does not recompute the watermark; every other step does.
                if !matches!(op, Op::Add(_)) {
                    if let Some(c) = view.candidate {
                        expected = Some(expected.map_or(c, |e| e.max(c)));
                    }
                }
                let got = match op {
                    Op::Add(p) => {
                        w.add_partition(p, now);
                        w.current()
                    }
                    Op::Observe(p, t) => {
                        max_event = Some(max_event.map_or(t, |m| m.max(t)));
                        w.observe(p, t, now)
                    }
                    Op::Backlog(p, b) => w.set_backlog(p, b, now),
                    Op::Tick => w.tick(now),
                    Op::Remove(p) => w.remove_partition(p, now),
                };
                prop_assert_eq!(got, expected, "after {:?} at {}", history.last(), now);
                prop_assert_eq!(w.current(), got);
                for p in 0..4 {
                    let model_idle = view.partitions.get(&p).is_some_and(|s| s.0);
                    prop_assert_eq!(w.is_idle(p, now), model_idle, "partition {} at {}", p, now);
                    prop_assert_eq!(
                        w.partition_watermark(p),
                        view.partitions.get(&p).and_then(|s| s.1)
                    );
                }
                // Without the model.
                prop_assert!(got >= prev, "went backwards");
                if let Some(g) = got {
                    let bound = max_event.map(|m| m - delay);
                    prop_assert!(Some(g) <= bound, "passed the largest event time");
                }
                if got > prev {
                    for (p, (_, pw, backlog)) in &view.partitions {
                        if *backlog {
                            prop_assert!(
                                pw.is_some_and(|pw| got <= Some(pw)),
                                "passed partition {}, which has a backlog", p
                            );
                        }
                    }
                }
            }
        }
    }
}
