//! Event-time watermarks per partition, and the watermark of a query over its
//! partitions. Pure: the caller passes processing time in.
//!
//! - A partition's watermark is the largest event time it has delivered minus the
//!   stream's `watermark_delay`. It never goes backwards.
//! - A query's watermark is the minimum over its *active* partitions. A partition that
//!   has delivered nothing for `idle_timeout` (processing time) is idle and does not
//!   hold the query back; it becomes active again with its next batch.
//! - A partition that has never delivered anything is active until it has been idle for
//!   `idle_timeout` since it was added (so a new query waits that long for every
//!   partition before emitting anything).
//! - When every partition is idle, the query's watermark is the largest partition
//!   watermark, so the last windows of a stream that stopped still close.
//! - The query's watermark never goes backwards either.

use std::collections::BTreeMap;

/// Watermark state of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Partition {
    /// Largest event time minus delay, if any row was seen.
    watermark: Option<i64>,
    /// Processing time (ms) of the last batch, or of being added.
    last_active: i64,
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
    /// `idle_timeout_ms`: after how long without data a partition stops holding it back.
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
        self.partitions.entry(partition).or_insert(Partition {
            watermark: None,
            last_active: now_ms,
        });
    }

    /// Stops tracking `partition` (it moved to another processor).
    pub fn remove_partition(&mut self, partition: i32, now_ms: i64) -> Option<i64> {
        self.partitions.remove(&partition);
        self.advance(now_ms)
    }

    /// A batch arrived on `partition` with largest event time `max_event_time`.
    /// Returns the query's watermark afterwards.
    pub fn observe(&mut self, partition: i32, max_event_time: i64, now_ms: i64) -> Option<i64> {
        let p = self.partitions.entry(partition).or_insert(Partition {
            watermark: None,
            last_active: now_ms,
        });
        let w = max_event_time.saturating_sub(self.delay);
        p.watermark = Some(p.watermark.map_or(w, |old| old.max(w)));
        p.last_active = now_ms;
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
            .is_some_and(|p| now_ms.saturating_sub(p.last_active) >= self.idle_timeout)
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
            let idle = now_ms.saturating_sub(p.last_active) >= self.idle_timeout;
            if idle {
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

    proptest! {
        /// Against a model: the watermark never decreases and never passes the
        /// largest event time minus the delay; with every partition fresh and fed it
        /// is exactly the minimum over partitions.
        #[test]
        fn watermark_is_monotone_and_bounded(
            events in proptest::collection::vec((0i32..4, 0i64..100_000, 0i64..2_000), 1..200),
            delay in 0i64..5_000,
        ) {
            let mut w = WatermarkTracker::new(delay, 1_000_000);
            let mut now = 0;
            let mut prev = None;
            let mut max_seen = i64::MIN;
            let mut per: BTreeMap<i32, i64> = BTreeMap::new();
            for (p, t, dt) in events {
                now += dt;
                max_seen = max_seen.max(t);
                let e = per.entry(p).or_insert(t);
                *e = (*e).max(t);
                let cur = w.observe(p, t, now);
                prop_assert!(cur >= prev);
                if let Some(c) = cur {
                    prop_assert!(c <= max_seen - delay);
                    let model = per.values().min().copied().map(|m| m - delay);
                    prop_assert_eq!(Some(c), model.max(prev));
                }
                prev = cur;
            }
        }
    }
}
