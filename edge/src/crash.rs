//! Crash points, for tests that kill the agent at chosen moments of its durability cycles.
//!
//! Compiled in only with the cargo feature `crash-points` (the integration tests build the
//! agent with it); without it [`point`] is empty and costs nothing.
//!
//! With the feature, `EDGEFLOW_EDGE_CRASH_AT=<point>:<n>` makes the process abort the
//! `n`-th time it passes `<point>`: no destructor runs and no buffer is flushed, as when a
//! gateway loses power (the page cache survives, unlike a power cut; unsynced data in the
//! agent's own buffers does not).
//!
//! The points, in the order a group commit passes them:
//! - `journal.appended`: a reading was appended to the journal, not yet fsynced;
//! - `commit.journal_synced`: the journal is fsynced, the aggregates built from it are
//!   not yet in the forward log;
//! - `commit.forward_written`: those aggregates are in the forward log, not yet published
//!   to the forwarder (nor fsynced), the MQTT messages not acknowledged;
//! - `commit.acked`: acknowledgements handed to the MQTT session, maybe not yet sent;
//! - `snapshot.written`: a window snapshot is durable, the journal not yet truncated;
//! - `snapshot.truncated`: the journal is truncated up to the snapshot;
//! - `forward.sent`: records handed to the Kafka producer, not yet acknowledged;
//! - `forward.acks_persisted`: the forward log's ack floor was written.

/// Aborts the process here if `EDGEFLOW_EDGE_CRASH_AT` names this point and this is its
/// `n`-th pass; see the module docs.
#[cfg(feature = "crash-points")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("EDGEFLOW_EDGE_CRASH_AT").ok()?;
        let (p, n) = v.rsplit_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    if let Some((p, n)) = spec {
        if p == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 >= *n {
            eprintln!("crash point {name} reached: aborting");
            std::process::abort();
        }
    }
}

/// Without the `crash-points` feature: nothing.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &str) {}
