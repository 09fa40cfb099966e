use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const KINDS: [AggKind; 8] = [
    AggKind::CountStar,
    AggKind::Count,
    AggKind::Sum,
    AggKind::Min,
    AggKind::Max,
    AggKind::Avg,
    AggKind::First,
    AggKind::Last,
];

/// The partitions of the stream.
const PARTITIONS: usize = 2;

/// An input row: (key, event time, value or NULL).
type InRow = (u8, i64, Option<f64>);
/// A batch of one partition, as the source hands it over.
type Batch = (usize, Vec<InRow>);
/// A window row's identity: (key, window start).
type Identity = (u8, i64);
/// What the operator emitted last under an identity: (window end, aggregate values).
type Row = (i64, Vec<Option<f64>>);
/// A window the model expects: (window end, aggregate values, the values tying for
/// `first_value` and for `last_value`).
type Expected = (i64, Vec<Option<f64>>, [Vec<f64>; 2]);
/// Accepted rows of a window or key: (event time, value).
type Rows = Vec<(i64, Option<f64>)>;

/// What comes out of a run: what a sink holds at the end (each shown identity's last
/// row; retractions delete) and the late rows, as (batch, row) positions.
#[derive(Debug)]
struct Outcome {
    rows: BTreeMap<Identity, Row>,
    late: BTreeSet<(usize, usize)>,
    /// Everything the final stage emitted and retracted, in order.
    log: Vec<Event>,
}

#[derive(Debug, PartialEq)]
enum Event {
    /// A row, and whether it is shown.
    Emit(Emitted, bool),
    Retract(Retraction),
}

/// The `HAVING` of the tests (when on): `count(*) % 3 != 1`, so that late rows move
/// windows in and out of it.
fn passes(having: bool, values: &[Option<f64>]) -> bool {
    !having || values[0].is_some_and(|c| c as i64 % 3 != 1)
}

fn is_session(spec: WindowSpec) -> bool {
    matches!(spec, WindowSpec::Session { .. })
}

/// Runs batches through the two stages as the query runtime does: a batch of
/// partition p is folded into p's first stage (sessions: the one first stage) with the
/// query's watermark before it; then p's watermark advances to the batch's largest
/// event time minus `delays[p]`, the query's watermark becomes the minimum over the
/// partitions (none until each has delivered), and every first stage drains into the
/// final stage, which emits. With `cut = Some(b)`, every stage is snapshotted before
/// batch `b`, dropped and restored from its snapshot (a restart from a checkpoint).
fn run(
    spec: WindowSpec,
    lateness: i64,
    having: bool,
    delays: [i64; PARTITIONS],
    batches: &[Batch],
    cut: Option<usize>,
) -> Outcome {
    let kinds: Arc<[AggKind]> = Arc::from(KINDS.to_vec());
    let mut parts: Vec<PartitionWindows> = (0..PARTITIONS)
        .map(|_| PartitionWindows::new(spec, kinds.clone(), lateness))
        .collect();
    let fin_kinds = kinds.clone();
    let mut fin = FinalWindows::new(spec, kinds, lateness);
    let mut part_wm: [Option<i64>; PARTITIONS] = [None; PARTITIONS];
    let mut wm: Option<i64> = None;
    let mut late = BTreeSet::new();
    let mut sink = SinkModel::default();
    let shown = |e: &[Emitted]| Ok::<_, ()>(e.iter().map(|e| passes(having, &e.values)).collect());
    let mut record = |out, w| sink.take(out, w, having);
    for (b, (p, batch)) in batches.iter().enumerate() {
        if cut == Some(b) {
            let states: Vec<PartitionState> = parts.iter().map(|p| p.snapshot()).collect();
            let final_state = fin.snapshot();
            parts = states
                .iter()
                .map(|s| {
                    let p = PartitionWindows::restore(spec, fin_kinds.clone(), lateness, s.clone())
                        .expect("restores");
                    assert_eq!(&p.snapshot(), s, "a restored stage snapshots the same");
                    p
                })
                .collect();
            fin = FinalWindows::restore(spec, fin_kinds.clone(), lateness, final_state.clone())
                .expect("restores");
            assert_eq!(fin.snapshot(), final_state);
        }
        let stage = if is_session(spec) { 0 } else { *p };
        let keys: Vec<[u8; 1]> = batch.iter().map(|r| [r.0]).collect();
        let ts: Vec<i64> = batch.iter().map(|r| r.1).collect();
        let vals = Float64Array::from(batch.iter().map(|r| r.2).collect::<Vec<_>>());
        let args: Vec<Option<&Float64Array>> =
            KINDS.iter().map(|k| k.has_arg().then_some(&vals)).collect();
        for i in parts[stage].process(|i| &keys[i], &ts, &args, wm) {
            late.insert((b, i));
        }
        if let Some(m) = ts.iter().max() {
            let w = m - delays[*p];
            part_wm[*p] = Some(part_wm[*p].map_or(w, |old| old.max(w)));
        }
        let min = part_wm
            .iter()
            .try_fold(i64::MAX, |acc, w| w.map(|w| acc.min(w)));
        if let Some(m) = min {
            wm = Some(wm.map_or(m, |old| old.max(m)));
        }
        if let Some(w) = wm {
            for part in &mut parts {
                fin.merge(0, part.drain(w));
            }
            record(fin.emit(w, shown).expect("emits"), w);
        }
    }
    let end = i64::MAX / 4;
    for part in &mut parts {
        fin.merge(0, part.drain(end));
        assert_eq!(part.open_groups(), 0);
    }
    record(fin.emit(end, shown).expect("emits"), end);
    assert_eq!(fin.groups(), 0, "everything is dropped after its lateness");
    let total_late: u64 = parts.iter().map(|p| p.late_rows()).sum();
    assert_eq!(
        total_late,
        late.len() as u64,
        "late_rows counts the late rows"
    );
    Outcome {
        rows: sink.rows,
        late,
        log: sink.log,
    }
}

/// A sink as the tests see it: each shown identity's last row; retractions delete.
#[derive(Default)]
struct SinkModel {
    rows: BTreeMap<Identity, Row>,
    log: Vec<Event>,
}

impl SinkModel {
    /// Takes what a final stage emitted at watermark `w`: deletes first, then upserts.
    fn take(
        &mut self,
        (emitted, retracted): (Vec<Emitted>, Vec<Retraction>),
        w: i64,
        having: bool,
    ) {
        for r in retracted {
            assert!(
                self.rows.remove(&(r.key[0], r.start)).is_some(),
                "{r:?} retracts a row that is not shown"
            );
            self.log.push(Event::Retract(r));
        }
        for e in emitted {
            assert!(
                e.end <= w,
                "{e:?} emitted before the watermark {w} passed its end"
            );
            let show = passes(having, &e.values);
            self.log.push(Event::Emit(e.clone(), show));
            if show {
                self.rows.insert((e.key[0], e.start), (e.end, e.values));
            }
        }
    }
}

/// One query runtime of [`run_moving`]: the first stages of the partitions it owns,
/// their watermarks, its final stage and its watermark.
struct Runtime {
    parts: BTreeMap<usize, PartitionWindows>,
    part_wm: BTreeMap<usize, Option<i64>>,
    fin: FinalWindows,
    wm: Option<i64>,
}

impl Runtime {
    /// The minimum over the owned partitions once each has delivered; never back.
    fn advance(&mut self) {
        let min = self.part_wm.values().try_fold(None::<i64>, |acc, w| {
            w.map(|w| Some(acc.map_or(w, |a| a.min(w))))
        });
        if let Some(Some(m)) = min {
            self.wm = Some(self.wm.map_or(m, |old| old.max(m)));
        }
    }

    /// Drains the first stages at `w` and emits into the sink.
    fn emit(&mut self, w: i64, having: bool, sink: &mut SinkModel) {
        for (p, part) in &mut self.parts {
            self.fin.merge(*p as i32, part.drain(w));
        }
        let shown =
            |e: &[Emitted]| Ok::<_, ()>(e.iter().map(|e| passes(having, &e.values)).collect());
        sink.take(self.fin.emit(w, shown).expect("emits"), w, having);
    }
}

/// Runs batches through two runtimes that share a sink, partition `p` starting on
/// runtime `p % 2`; before batch `b` of each `(b, p)` of `moves`, partition `p`
/// moves to the other runtime: released there (its first stage's snapshot, its
/// windows of the final stage, its watermark), adopted here, each stage restored
/// from a value. Keys must live on one partition each.
fn run_moving(
    spec: WindowSpec,
    lateness: i64,
    having: bool,
    delays: [i64; PARTITIONS],
    batches: &[Batch],
    moves: &[(usize, usize)],
) -> Outcome {
    let kinds: Arc<[AggKind]> = Arc::from(KINDS.to_vec());
    let mut rts: Vec<Runtime> = (0..2)
        .map(|_| Runtime {
            parts: BTreeMap::new(),
            part_wm: BTreeMap::new(),
            fin: FinalWindows::new(spec, kinds.clone(), lateness),
            wm: None,
        })
        .collect();
    let mut owner: Vec<usize> = (0..PARTITIONS).map(|p| p % 2).collect();
    for p in 0..PARTITIONS {
        let rt = &mut rts[owner[p]];
        rt.parts
            .insert(p, PartitionWindows::new(spec, kinds.clone(), lateness));
        rt.part_wm.insert(p, None);
    }
    let mut late = BTreeSet::new();
    let mut sink = SinkModel::default();
    for (b, (p, batch)) in batches.iter().enumerate() {
        for &(_, m) in moves.iter().filter(|(at, _)| *at == b) {
            let (from, to) = (owner[m], 1 - owner[m]);
            let stage = rts[from].parts.remove(&m).expect("owned").snapshot();
            let fin = rts[from]
                .fin
                .release(m as i32)
                .expect("keys live on one partition");
            let wm = rts[from].part_wm.remove(&m).expect("owned");
            rts[from].advance();
            let rt = &mut rts[to];
            rt.parts.insert(
                m,
                PartitionWindows::restore(spec, kinds.clone(), lateness, stage).expect("restores"),
            );
            rt.fin.adopt(fin).expect("adopts");
            rt.part_wm.insert(m, wm);
            rt.advance();
            owner[m] = to;
            for rt in &mut rts {
                if let Some(w) = rt.wm {
                    rt.emit(w, having, &mut sink);
                }
            }
        }
        let rt = &mut rts[owner[*p]];
        let keys: Vec<[u8; 1]> = batch.iter().map(|r| [r.0]).collect();
        let ts: Vec<i64> = batch.iter().map(|r| r.1).collect();
        let vals = Float64Array::from(batch.iter().map(|r| r.2).collect::<Vec<_>>());
        let args: Vec<Option<&Float64Array>> =
            KINDS.iter().map(|k| k.has_arg().then_some(&vals)).collect();
        let wm = rt.wm;
        let part = rt.parts.get_mut(p).expect("owned");
        for i in part.process(|i| &keys[i], &ts, &args, wm) {
            late.insert((b, i));
        }
        if let Some(m) = ts.iter().max() {
            let w = m - delays[*p];
            let pw = rt.part_wm.get_mut(p).expect("owned");
            *pw = Some(pw.map_or(w, |old| old.max(w)));
        }
        rt.advance();
        if let Some(w) = rt.wm {
            rt.emit(w, having, &mut sink);
        }
    }
    let end = i64::MAX / 4;
    for rt in &mut rts {
        rt.emit(end, having, &mut sink);
        assert_eq!(
            rt.fin.groups(),
            0,
            "everything is dropped after its lateness"
        );
    }
    Outcome {
        rows: sink.rows,
        late,
        log: sink.log,
    }
}

/// The expected answer, computed from the documented semantics alone (module docs of
/// `window` and `operator`), with none of the implementation's helpers:
/// - a partition's watermark is its largest event time minus its delay, the query's
///   the minimum over partitions, once every partition has delivered;
/// - a fixed window is `[s, s + size)` with `s` a multiple of the slide (the size for
///   tumbling windows), and holds every row with `s <= ts < s + size`;
/// - a row is late for a fixed window that ended `allowed_lateness` or more before
///   the query's watermark before the row's batch, and late (counted, not aggregated)
///   when it is late for every window holding it; a session row is late when its time
///   is more than `allowed_lateness` behind that watermark;
/// - per key, accepted rows less than `gap` apart form one session `[first, last + gap)`;
/// - a window's values are the aggregates over its accepted rows.
///
/// Returns the expected windows with, per window, the values of `first_value` and
/// `last_value` that tie on event time (any of them is right).
struct Model {
    rows: BTreeMap<Identity, Expected>,
    late: BTreeSet<(usize, usize)>,
}

/// Every window `[s, s + size)`, `s` a multiple of `slide`, that contains `t`.
fn windows_containing(t: i64, slide: i64, size: i64) -> Vec<(i64, i64)> {
    // The largest multiple of `slide` not after `t` (division truncates toward zero).
    let mut s = t / slide * slide;
    if s > t {
        s -= slide;
    }
    let mut out = Vec::new();
    while s + size > t {
        out.push((s, s + size));
        s -= slide;
    }
    out.reverse();
    out
}

fn model(spec: WindowSpec, lateness: i64, delays: [i64; PARTITIONS], batches: &[Batch]) -> Model {
    let mut part_max: [Option<i64>; PARTITIONS] = [None; PARTITIONS];
    let mut wm: Option<i64> = None;
    let mut late = BTreeSet::new();
    // Accepted rows per window (fixed) or per key (sessions): (time, value).
    let mut fixed: BTreeMap<Identity, (i64, Rows)> = BTreeMap::new();
    let mut by_key: BTreeMap<u8, Rows> = BTreeMap::new();
    for (b, (p, batch)) in batches.iter().enumerate() {
        for (i, &(k, t, v)) in batch.iter().enumerate() {
            match spec {
                WindowSpec::Session { .. } => {
                    if wm.is_some_and(|w| w - t > lateness) {
                        late.insert((b, i));
                    } else {
                        by_key.entry(k).or_default().push((t, v));
                    }
                }
                WindowSpec::Tumble { size } | WindowSpec::Hop { size, .. } => {
                    let slide = match spec {
                        WindowSpec::Hop { slide, .. } => slide,
                        _ => size,
                    };
                    let open: Vec<_> = windows_containing(t, slide, size)
                        .into_iter()
                        .filter(|&(_, e)| wm.is_none_or(|w| w - e < lateness))
                        .collect();
                    if open.is_empty() {
                        late.insert((b, i));
                    }
                    for (s, e) in open {
                        fixed
                            .entry((k, s))
                            .or_insert((e, Vec::new()))
                            .1
                            .push((t, v));
                    }
                }
            }
        }
        if let Some(m) = batch.iter().map(|r| r.1).max() {
            part_max[*p] = Some(part_max[*p].map_or(m, |o| o.max(m)));
        }
        if part_max.iter().all(Option::is_some) {
            let m = (0..PARTITIONS)
                .map(|p| part_max[p].unwrap() - delays[p])
                .min();
            wm = wm.max(m);
        }
    }
    if let WindowSpec::Session { gap } = spec {
        for (k, mut rows) in by_key {
            rows.sort_by_key(|r| r.0);
            let mut session: Rows = Vec::new();
            for r in rows {
                if let Some(prev) = session.last() {
                    if r.0 - prev.0 >= gap {
                        let start = session[0].0;
                        let end = prev.0 + gap;
                        fixed.insert((k, start), (end, std::mem::take(&mut session)));
                    }
                }
                session.push(r);
            }
            if let Some(last) = session.last() {
                fixed.insert((k, session[0].0), (last.0 + gap, session));
            }
        }
    }
    let rows = fixed
        .into_iter()
        .map(|(id, (end, rows))| {
            let (values, ties) = aggregates(&rows);
            (id, (end, values, ties))
        })
        .collect();
    Model { rows, late }
}

/// count(*), count, sum, min, max, avg, first_value, last_value over `rows`, and the
/// values tying for first and for last (NULLs are skipped by all but count(*)).
fn aggregates(rows: &[(i64, Option<f64>)]) -> (Vec<Option<f64>>, [Vec<f64>; 2]) {
    let valued: Vec<(i64, f64)> = rows.iter().filter_map(|r| r.1.map(|v| (r.0, v))).collect();
    let n = valued.len();
    let sum: f64 = valued.iter().map(|r| r.1).sum();
    let tied = |t: Option<i64>| -> Vec<f64> {
        valued
            .iter()
            .filter(|r| Some(r.0) == t)
            .map(|r| r.1)
            .collect()
    };
    let first = tied(valued.iter().map(|r| r.0).min());
    let last = tied(valued.iter().map(|r| r.0).max());
    let values = vec![
        Some(rows.len() as f64),
        Some(n as f64),
        (n > 0).then_some(sum),
        valued.iter().map(|r| r.1).reduce(f64::min),
        valued.iter().map(|r| r.1).reduce(f64::max),
        (n > 0).then(|| sum / n as f64),
        first.first().copied(),
        last.first().copied(),
    ];
    (values, [first, last])
}

fn close(x: Option<f64>, y: Option<f64>) -> bool {
    match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())),
        (None, None) => true,
        _ => false,
    }
}

/// Checks a run against the model, and a run restored from snapshots before batch
/// `cut` (modulo the batches, so any cut, the first and the end included) against the
/// uninterrupted run: the same rows and retractions in the same order, the same late
/// rows. What a sink holds at the end is exactly the model's windows that pass the
/// `HAVING` (when on): nothing stale is left, whatever late rows changed.
fn check(
    spec: WindowSpec,
    lateness: i64,
    having: bool,
    delays: [i64; PARTITIONS],
    batches: Vec<Batch>,
    cut: usize,
) {
    let got = run(spec, lateness, having, delays, &batches, None);
    let resumed = run(
        spec,
        lateness,
        having,
        delays,
        &batches,
        Some(cut % (batches.len() + 1)),
    );
    assert_eq!(
        resumed.log, got.log,
        "a restored run emits what an uninterrupted one does"
    );
    assert_eq!(resumed.late, got.late, "late rows after a restore");
    let want = model(spec, lateness, delays, &batches);
    assert_eq!(got.late, want.late, "late rows");
    assert_sink_holds(&want, &got, having);
}

/// What a sink holds at the end is exactly the model's windows that pass the `HAVING`
/// (when on): nothing stale is left, whatever late rows changed.
fn assert_sink_holds(want: &Model, got: &Outcome, having: bool) {
    for (id, (end, values, ties)) in &want.rows {
        if !passes(having, values) {
            assert!(
                !got.rows.contains_key(id),
                "{id:?} fails the HAVING, yet a sink holds {:?}",
                got.rows[id]
            );
            continue;
        }
        let Some((got_end, got_values)) = got.rows.get(id) else {
            panic!(
                "window {id:?} (end {end}) was never emitted; got {:?}",
                got.rows
            );
        };
        assert_eq!(got_end, end, "{id:?}: window end");
        // Every aggregate: the first six exactly (up to rounding); first_value and
        // last_value one of the values at the smallest / largest event time.
        for (j, (g, w)) in got_values.iter().zip(values).enumerate() {
            let ok = match KINDS[j] {
                AggKind::First | AggKind::Last => {
                    let tied = &ties[usize::from(KINDS[j] == AggKind::Last)];
                    match g {
                        Some(g) => tied.contains(g),
                        None => tied.is_empty(),
                    }
                }
                _ => close(*g, *w),
            };
            assert!(
                ok,
                "{id:?} {:?}: got {g:?}, want {w:?} (ties {ties:?})",
                KINDS[j]
            );
        }
    }
    for (id, (end, _)) in &got.rows {
        assert!(
            want.rows.contains_key(id),
            "window {id:?} (end {end}) should not exist (a replaced session's identity is retracted)"
        );
    }
}

/// Batches of the two partitions; partition 1's event times run `skew` ahead of
/// partition 0's, so the partitions' watermarks differ and the query's is the slower one.
fn batches() -> impl Strategy<Value = Vec<Batch>> {
    (
        proptest::collection::vec(
            (
                0..PARTITIONS,
                proptest::collection::vec(
                    (
                        0u8..4,
                        -300i64..2_000,
                        proptest::option::weighted(0.85, -100.0f64..100.0),
                    ),
                    0..16,
                ),
            ),
            1..16,
        ),
        -400i64..400,
    )
        .prop_map(|(batches, skew)| {
            batches
                .into_iter()
                .map(|(p, rows)| {
                    let shift = if p == 1 { skew } else { 0 };
                    (
                        p,
                        rows.into_iter()
                            .map(|(k, t, v)| (k, t + shift, v))
                            .collect(),
                    )
                })
                .collect()
        })
}

/// [`batches`] with each key on one partition (keys `p` and `p + 2` on partition `p`),
/// as when the stream's message key is a group key.
fn keyed_batches() -> impl Strategy<Value = Vec<Batch>> {
    batches().prop_map(|bs| {
        bs.into_iter()
            .map(|(p, rows)| {
                let rows = rows
                    .into_iter()
                    .map(|(k, t, v)| ((k % 2) * PARTITIONS as u8 + p as u8, t, v))
                    .collect();
                (p, rows)
            })
            .collect()
    })
}

fn delays() -> impl Strategy<Value = [i64; PARTITIONS]> {
    [0i64..300, 0i64..300]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tumbling_windows_match_the_model(b in batches(), size in 1i64..300, lateness in 0i64..400, having: bool, d in delays(), cut in 0usize..20) {
        check(WindowSpec::Tumble { size }, lateness, having, d, b, cut);
    }

    #[test]
    fn hopping_windows_match_the_model(b in batches(), slide in 1i64..100, extra in 0i64..300, lateness in 0i64..400, having: bool, d in delays(), cut in 0usize..20) {
        // Any size from the slide up, also sizes that are no multiple of it.
        check(WindowSpec::Hop { slide, size: slide + extra }, lateness, having, d, b, cut);
    }

    /// Partitions moving between two runtimes at random moments, with their share of
    /// the final stage: the shared sink ends holding exactly the model's windows, and
    /// every retraction deletes a row that is shown, whichever runtime showed it.
    /// Runtimes' watermarks differ, so a row can be late on one and not on the other;
    /// with a lateness longer than the input, no row is late anywhere and the model
    /// (one runtime) is the answer.
    #[test]
    fn partitions_moving_between_runtimes_leave_the_sink_exact(b in keyed_batches(), size in 1i64..300, hop: bool, having: bool, d in delays(), moves in proptest::collection::vec((0usize..16, 0..PARTITIONS), 0..6)) {
        let spec = if hop {
            WindowSpec::Hop { slide: size, size: size * 2 + 1 }
        } else {
            WindowSpec::Tumble { size }
        };
        let lateness = 1 << 40;
        let got = run_moving(spec, lateness, having, d, &b, &moves);
        let want = model(spec, lateness, d, &b);
        prop_assert!(got.late.is_empty() && want.late.is_empty());
        assert_sink_holds(&want, &got, having);
    }

    #[test]
    fn session_windows_match_the_model(b in batches(), gap in 1i64..200, lateness in 0i64..400, having: bool, d in delays(), cut in 0usize..20) {
        check(WindowSpec::Session { gap }, lateness, having, d, b, cut);
    }
}

#[test]
fn the_model_assigns_windows_as_documented() {
    assert_eq!(windows_containing(25, 10, 10), vec![(20, 30)]);
    assert_eq!(windows_containing(-1, 10, 10), vec![(-10, 0)]);
    assert_eq!(windows_containing(-10, 10, 10), vec![(-10, 0)]);
    assert_eq!(
        windows_containing(27, 5, 15),
        vec![(15, 30), (20, 35), (25, 40)]
    );
    assert_eq!(windows_containing(-3, 5, 7), vec![(-5, 2)]);
    assert_eq!(windows_containing(1, 5, 7), vec![(-5, 2), (0, 7)]);
}

#[test]
fn a_late_row_within_lateness_re_emits_its_window_complete() {
    let kinds: Arc<[AggKind]> = Arc::from(vec![AggKind::CountStar, AggKind::Sum]);
    let spec = WindowSpec::Tumble { size: 10 };
    let mut p = PartitionWindows::new(spec, kinds.clone(), 100);
    let mut f = FinalWindows::new(spec, kinds, 100);
    let v = Float64Array::from(vec![1.0, 2.0]);
    let args = [None, Some(&v)];
    p.process(|_| b"k", &[1, 2], &args, None);
    f.merge(0, p.drain(10));
    let all = |e: &[Emitted]| Ok::<_, ()>(vec![true; e.len()]);
    let (first, _) = f.emit(10, all).expect("emits");
    assert_eq!(first[0].values, vec![Some(2.0), Some(3.0)]);
    let late = Float64Array::from(vec![5.0]);
    assert!(p
        .process(|_| b"k", &[3], &[None, Some(&late)], Some(50))
        .is_empty());
    f.merge(0, p.drain(50));
    let (again, retracted) = f.emit(50, all).expect("emits");
    assert!(retracted.is_empty());
    assert_eq!(
        (again[0].start, again[0].values.clone()),
        (0, vec![Some(3.0), Some(8.0)])
    );
    assert_eq!(
        p.process(|_| b"k", &[4], &[None, Some(&late)], Some(111)),
        vec![0]
    );
    assert_eq!(p.late_rows(), 1);
}

#[test]
fn a_row_within_lateness_joins_the_emitted_session_it_touches() {
    // Gap 10, lateness 5: the session [100, 110) is emitted at watermark 110. At 112 a
    // row at 108 (within the lateness) extends it to [100, 118), which closes at 118,
    // after the lateness of the first emission ran out (at 115).
    let kinds: Arc<[AggKind]> = Arc::from(vec![AggKind::CountStar]);
    let spec = WindowSpec::Session { gap: 10 };
    let mut p = PartitionWindows::new(spec, kinds.clone(), 5);
    let mut f = FinalWindows::new(spec, kinds, 5);
    let mut step = |ts: &[i64], before: Option<i64>, after: i64| {
        assert!(p.process(|_| b"k", ts, &[None], before).is_empty());
        f.merge(0, p.drain(after));
        f.emit(after, |e| Ok::<_, ()>(vec![true; e.len()]))
            .expect("emits")
            .0
            .into_iter()
            .map(|e| (e.start, e.end, e.values))
            .collect::<Vec<_>>()
    };
    assert_eq!(step(&[100], None, 110), vec![(100, 110, vec![Some(1.0)])]);
    assert_eq!(step(&[108], Some(112), 112), vec![]);
    assert_eq!(step(&[], Some(112), 115), vec![]);
    assert_eq!(step(&[], Some(115), 118), vec![(100, 118, vec![Some(2.0)])]);
    assert_eq!(step(&[], Some(118), 123), vec![]);
    assert_eq!((p.open_groups(), f.groups()), (0, 0));
}

#[test]
fn a_window_that_stops_passing_having_is_retracted_and_one_that_never_passed_is_not() {
    // HAVING count(*) < 2 over tumbling windows of 10, lateness 100.
    let kinds: Arc<[AggKind]> = Arc::from(vec![AggKind::CountStar]);
    let spec = WindowSpec::Tumble { size: 10 };
    let mut p = PartitionWindows::new(spec, kinds.clone(), 100);
    let mut f = FinalWindows::new(spec, kinds, 100);
    let having = |e: &[Emitted]| Ok::<_, ()>(e.iter().map(|e| e.values[0] < Some(2.0)).collect());
    let mut step = |ts: &[i64], wm: i64| {
        p.process(|_| b"k", ts, &[None], Some(wm));
        f.merge(0, p.drain(wm));
        let (rows, retracted) = f.emit(wm, having).expect("emits");
        (
            rows.iter().map(|e| e.start).collect::<Vec<_>>(),
            retracted.iter().map(|r| r.start).collect::<Vec<_>>(),
        )
    };
    // [0, 10) with one row passes; [10, 20) with two does not.
    assert_eq!(step(&[1, 11, 12], 20), (vec![0, 10], vec![]));
    // A late row: [0, 10) now has two rows and is retracted; [10, 20) gets a third and
    // still fails, with nothing shown to retract.
    assert_eq!(step(&[2, 13], 30), (vec![0, 10], vec![0]));
    // Neither is shown now: another late row retracts nothing.
    assert_eq!(step(&[3], 40), (vec![0], vec![]));
}

#[test]
fn sessions_merged_by_a_late_row_retract_the_identity_that_went_away() {
    // Gap 10, lateness 50: sessions [100, 110) and [115, 125) are emitted; a row at
    // 108 (within the lateness) joins them into [100, 125), and the row of the
    // session that started at 115 is retracted.
    let kinds: Arc<[AggKind]> = Arc::from(vec![AggKind::CountStar]);
    let spec = WindowSpec::Session { gap: 10 };
    let mut p = PartitionWindows::new(spec, kinds.clone(), 50);
    let mut f = FinalWindows::new(spec, kinds, 50);
    let all = |e: &[Emitted]| Ok::<_, ()>(vec![true; e.len()]);
    p.process(|_| b"k", &[100, 115], &[None], None);
    f.merge(0, p.drain(130));
    let (rows, retracted) = f.emit(130, all).expect("emits");
    assert_eq!(
        rows.iter().map(|e| (e.start, e.end)).collect::<Vec<_>>(),
        vec![(100, 110), (115, 125)]
    );
    assert!(retracted.is_empty());
    p.process(|_| b"k", &[108], &[None], Some(130));
    f.merge(0, p.drain(130));
    let (rows, retracted) = f.emit(130, all).expect("emits");
    assert_eq!(
        rows.iter()
            .map(|e| (e.start, e.end, e.values.clone()))
            .collect::<Vec<_>>(),
        vec![(100, 125, vec![Some(3.0)])]
    );
    assert_eq!(
        retracted,
        vec![Retraction {
            key: Box::from(&b"k"[..]),
            start: 115
        }]
    );
}

#[test]
fn origins_join_to_one_partition_or_several() {
    use Origin::*;
    assert_eq!(None.join(One(3)), One(3));
    assert_eq!(One(3).join(None), One(3));
    assert_eq!(One(3).join(One(3)), One(3));
    assert_eq!(One(3).join(One(4)), Many);
    assert_eq!(Many.join(One(3)), Many);
    assert_eq!(None.join(None), None);
}

#[test]
fn a_window_fed_by_two_partitions_cannot_be_released_and_nothing_changes() {
    let kinds: Arc<[AggKind]> = Arc::from(vec![AggKind::CountStar]);
    let spec = WindowSpec::Tumble { size: 10 };
    let mut f = FinalWindows::new(spec, kinds.clone(), 100);
    for (partition, key) in [(0, b"a"), (1, b"a"), (1, b"b")] {
        let mut p = PartitionWindows::new(spec, kinds.clone(), 100);
        p.process(|_| key.as_slice(), &[5], &[None], None);
        f.merge(partition, p.drain(10));
    }
    let before = f.snapshot();
    let e = f.release(1).expect_err("key `a` spans partitions 0 and 1");
    assert!(e.contains("several partitions"), "{e}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn released_windows_are_adopted_with_what_they_showed() {
    let kinds: Arc<[AggKind]> = Arc::from(vec![AggKind::CountStar]);
    let spec = WindowSpec::Tumble { size: 10 };
    let mut a = FinalWindows::new(spec, kinds.clone(), 100);
    for (partition, key) in [(0, b"a"), (1, b"b")] {
        let mut p = PartitionWindows::new(spec, kinds.clone(), 100);
        p.process(|_| key.as_slice(), &[5, 6], &[None], None);
        a.merge(partition, p.drain(10));
    }
    let shown = |e: &[Emitted]| Ok::<_, ()>(vec![true; e.len()]);
    let (emitted, _) = a.emit(10, shown).expect("emits");
    assert_eq!(emitted.len(), 2);
    let moved = a.release(1).expect("one origin each");
    assert_eq!(a.groups(), 1, "partition 0's window stays");
    assert_eq!(moved.store.groups.len(), 1);
    assert_eq!(&*moved.store.groups[0].key, b"b");
    assert_eq!(moved.store.groups[0].shown, vec![0]);
    assert_eq!(moved.store.groups[0].origin, Origin::One(1));

    // A late row of `b` on the other runtime re-emits the window complete.
    let mut b = FinalWindows::new(spec, kinds.clone(), 100);
    b.adopt(moved).expect("adopts");
    let mut p = PartitionWindows::new(spec, kinds, 100);
    p.process(|_| b"b".as_slice(), &[7], &[None], Some(10));
    b.merge(1, p.drain(20));
    let (emitted, retracted) = b.emit(20, shown).expect("emits");
    assert!(retracted.is_empty());
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0].values, vec![Some(3.0)]);
    // Nothing of partition 1 is left where it was.
    assert!(a.release(1).expect("releases").store.groups.is_empty());
}
