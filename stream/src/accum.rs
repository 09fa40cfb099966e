//! Aggregate functions as mergeable accumulators. Pure.
//!
//! Every accumulator can absorb a row ([`Acc::update`]) and another accumulator of the
//! same kind ([`Acc::merge`]), and merging is exact (up to floating-point rounding):
//! a partition's partial state merges into the query's, and an edge window's partial
//! aggregate merges into a longer window. Variance uses Welford's update and Chan's
//! merge; approximate percentiles use a log-bucket sketch with 1% relative accuracy.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, Float64Array};

/// The aggregate functions a continuous query can compute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AggKind {
    /// `count(*)`
    CountStar,
    /// `count(x)`: non-null values.
    Count,
    Sum,
    Min,
    Max,
    Avg,
    /// `stddev`, `stddev_samp`
    StddevSamp,
    StddevPop,
    /// `var`, `var_samp`, `variance`
    VarSamp,
    VarPop,
    /// `first_value(x)`: the value with the smallest event time.
    First,
    /// `last_value(x)`: the value with the largest event time.
    Last,
    /// `approx_percentile_cont(x, p)`, `approx_median(x)` (p = 0.5).
    Percentile(f64),
}

impl AggKind {
    /// Whether the aggregate reads an argument column.
    pub fn has_arg(self) -> bool {
        !matches!(self, Self::CountStar)
    }

    /// Whether the result is a count (Int64) rather than a Float64.
    pub fn is_count(self) -> bool {
        matches!(self, Self::CountStar | Self::Count)
    }
}

/// Relative accuracy of the percentile sketch.
const SKETCH_ALPHA: f64 = 0.01;

/// A mergeable quantile sketch: values bucketed by `ceil(log_gamma |x|)`, so every
/// quantile is within `SKETCH_ALPHA` of a true value of the data (relative error).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sketch {
    pos: BTreeMap<i32, u64>,
    neg: BTreeMap<i32, u64>,
    zero: u64,
    n: u64,
}

fn gamma() -> f64 {
    (1.0 + SKETCH_ALPHA) / (1.0 - SKETCH_ALPHA)
}

/// Values smaller than this in magnitude count as zero.
const SKETCH_MIN: f64 = 1e-9;

impl Sketch {
    fn index(x: f64) -> i32 {
        (x.ln() / gamma().ln()).ceil() as i32
    }

    fn value(i: i32) -> f64 {
        let g = gamma();
        2.0 * g.powi(i) / (g + 1.0)
    }

    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        if x.abs() < SKETCH_MIN {
            self.zero += 1;
        } else if x > 0.0 {
            *self.pos.entry(Self::index(x)).or_default() += 1;
        } else {
            *self.neg.entry(Self::index(-x)).or_default() += 1;
        }
    }

    pub fn merge(&mut self, o: &Sketch) {
        for (k, v) in &o.pos {
            *self.pos.entry(*k).or_default() += v;
        }
        for (k, v) in &o.neg {
            *self.neg.entry(*k).or_default() += v;
        }
        self.zero += o.zero;
        self.n += o.n;
    }

    /// The sketch as bytes (little-endian): zero count, total count, then the
    /// positive and the negative buckets, each as a count of entries and
    /// (index `i32`, count `u64`) pairs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + 12 * (self.pos.len() + self.neg.len()));
        b.extend_from_slice(&self.zero.to_le_bytes());
        b.extend_from_slice(&self.n.to_le_bytes());
        for side in [&self.pos, &self.neg] {
            b.extend_from_slice(&(side.len() as u32).to_le_bytes());
            for (k, c) in side {
                b.extend_from_slice(&k.to_le_bytes());
                b.extend_from_slice(&c.to_le_bytes());
            }
        }
        b
    }

    /// Reads [`Sketch::to_bytes`]; `None` for bytes it did not write.
    pub fn from_bytes(mut b: &[u8]) -> Option<Self> {
        fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
            let (head, rest) = b.split_first_chunk::<N>()?;
            *b = rest;
            Some(*head)
        }
        let zero = u64::from_le_bytes(take(&mut b)?);
        let n = u64::from_le_bytes(take(&mut b)?);
        let mut sides = [BTreeMap::new(), BTreeMap::new()];
        for side in &mut sides {
            let len = u32::from_le_bytes(take(&mut b)?);
            for _ in 0..len {
                let k = i32::from_le_bytes(take(&mut b)?);
                let c = u64::from_le_bytes(take(&mut b)?);
                side.insert(k, c);
            }
        }
        let [pos, neg] = sides;
        let counted = zero + pos.values().sum::<u64>() + neg.values().sum::<u64>();
        (b.is_empty() && counted == n).then_some(Sketch { pos, neg, zero, n })
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.n - 1) as f64).round() as u64;
        let mut seen = 0u64;
        for (k, c) in self.neg.iter().rev() {
            seen += c;
            if seen > rank {
                return Some(-Self::value(*k));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0);
        }
        for (k, c) in &self.pos {
            seen += c;
            if seen > rank {
                return Some(Self::value(*k));
            }
        }
        self.pos.keys().next_back().map(|k| Self::value(*k))
    }
}

/// One aggregate's running state for one group.
#[derive(Clone, Debug, PartialEq)]
pub enum Acc {
    Count(i64),
    Sum { sum: f64, n: u64 },
    Min(Option<f64>),
    Max(Option<f64>),
    Var { n: u64, mean: f64, m2: f64 },
    First(Option<(i64, f64)>),
    Last(Option<(i64, f64)>),
    Sketch(Box<Sketch>),
}

impl Acc {
    /// An empty accumulator for `kind`.
    pub fn new(kind: AggKind) -> Self {
        match kind {
            AggKind::CountStar | AggKind::Count => Self::Count(0),
            AggKind::Sum | AggKind::Avg => Self::Sum { sum: 0.0, n: 0 },
            AggKind::Min => Self::Min(None),
            AggKind::Max => Self::Max(None),
            AggKind::StddevSamp | AggKind::StddevPop | AggKind::VarSamp | AggKind::VarPop => {
                Self::Var {
                    n: 0,
                    mean: 0.0,
                    m2: 0.0,
                }
            }
            AggKind::First => Self::First(None),
            AggKind::Last => Self::Last(None),
            AggKind::Percentile(_) => Self::Sketch(Box::default()),
        }
    }

    /// Absorbs one row: `v` is the argument (`None` for SQL NULL; ignored by
    /// `count(*)`, which counts the row), `ts` the row's event time.
    #[inline]
    pub fn update(&mut self, kind: AggKind, v: Option<f64>, ts: i64) {
        if kind == AggKind::CountStar {
            if let Self::Count(n) = self {
                *n += 1;
            }
            return;
        }
        let Some(v) = v else { return };
        match self {
            Self::Count(n) => *n += 1,
            Self::Sum { sum, n } => {
                *sum += v;
                *n += 1;
            }
            Self::Min(m) => *m = Some(m.map_or(v, |m| m.min(v))),
            Self::Max(m) => *m = Some(m.map_or(v, |m| m.max(v))),
            Self::Var { n, mean, m2 } => {
                *n += 1;
                let d = v - *mean;
                *mean += d / *n as f64;
                *m2 += d * (v - *mean);
            }
            Self::First(f) => {
                if f.is_none_or(|(t, _)| ts < t) {
                    *f = Some((ts, v));
                }
            }
            Self::Last(l) => {
                if l.is_none_or(|(t, _)| ts >= t) {
                    *l = Some((ts, v));
                }
            }
            Self::Sketch(s) => s.add(v),
        }
    }

    /// Absorbs many rows into the accumulators of one aggregate, a column at a time:
    /// for each `(row, group)` of `targets`, in order, the same as
    /// `accs[group * stride + offset].update(kind, values[row], ts[row])`. `values` is
    /// the argument column (`None` for `count(*)`; for another kind it means no
    /// values, as a column of NULLs). The kind is matched once per call, not per row,
    /// and the common aggregates run as tight loops over the column.
    pub fn update_column(
        kind: AggKind,
        accs: &mut [Acc],
        stride: usize,
        offset: usize,
        targets: &[(u32, u32)],
        values: Option<&Float64Array>,
        ts: &[i64],
    ) {
        let slot = |g: u32| g as usize * stride + offset;
        if kind == AggKind::CountStar {
            for &(_, g) in targets {
                if let Self::Count(n) = &mut accs[slot(g)] {
                    *n += 1;
                }
            }
            return;
        }
        let Some(col) = values else { return };
        if col.null_count() > 0 {
            for &(r, g) in targets {
                let r = r as usize;
                let v = col.is_valid(r).then(|| col.value(r));
                accs[slot(g)].update(kind, v, ts[r]);
            }
            return;
        }
        let vals = col.values();
        match kind {
            AggKind::Count => {
                for &(_, g) in targets {
                    if let Self::Count(n) = &mut accs[slot(g)] {
                        *n += 1;
                    }
                }
            }
            AggKind::Sum | AggKind::Avg => {
                for &(r, g) in targets {
                    if let Self::Sum { sum, n } = &mut accs[slot(g)] {
                        *sum += vals[r as usize];
                        *n += 1;
                    }
                }
            }
            AggKind::Min => {
                for &(r, g) in targets {
                    if let Self::Min(m) = &mut accs[slot(g)] {
                        let v = vals[r as usize];
                        *m = Some(m.map_or(v, |m| m.min(v)));
                    }
                }
            }
            AggKind::Max => {
                for &(r, g) in targets {
                    if let Self::Max(m) = &mut accs[slot(g)] {
                        let v = vals[r as usize];
                        *m = Some(m.map_or(v, |m| m.max(v)));
                    }
                }
            }
            _ => {
                for &(r, g) in targets {
                    let r = r as usize;
                    accs[slot(g)].update(kind, Some(vals[r]), ts[r]);
                }
            }
        }
    }

    /// Absorbs another accumulator of the same kind.
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a += b,
            (Self::Sum { sum, n }, Self::Sum { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Self::Min(a), Self::Min(Some(b))) => *a = Some(a.map_or(*b, |a| a.min(*b))),
            (Self::Max(a), Self::Max(Some(b))) => *a = Some(a.map_or(*b, |a| a.max(*b))),
            (
                Self::Var { n, mean, m2 },
                Self::Var {
                    n: nb,
                    mean: mb,
                    m2: m2b,
                },
            ) => {
                if *nb == 0 {
                    return;
                }
                if *n == 0 {
                    (*n, *mean, *m2) = (*nb, *mb, *m2b);
                    return;
                }
                let total = *n + nb;
                let d = mb - *mean;
                *mean += d * *nb as f64 / total as f64;
                *m2 += m2b + d * d * (*n as f64) * (*nb as f64) / total as f64;
                *n = total;
            }
            (Self::First(a), Self::First(Some((t, v)))) if a.is_none_or(|(ta, _)| *t < ta) => {
                *a = Some((*t, *v));
            }
            (Self::Last(a), Self::Last(Some((t, v)))) if a.is_none_or(|(ta, _)| *t >= ta) => {
                *a = Some((*t, *v));
            }
            (Self::Sketch(a), Self::Sketch(b)) => a.merge(b),
            _ => {}
        }
    }

    /// The aggregate's value (SQL semantics: NULL over no values, except counts).
    pub fn finish(&self, kind: AggKind) -> Option<f64> {
        match (self, kind) {
            (Self::Count(n), _) => Some(*n as f64),
            (Self::Sum { sum, n }, AggKind::Sum) => (*n > 0).then_some(*sum),
            (Self::Sum { sum, n }, _) => (*n > 0).then(|| sum / *n as f64),
            (Self::Min(m) | Self::Max(m), _) => *m,
            (Self::Var { n, m2, .. }, AggKind::StddevSamp) => {
                (*n > 1).then(|| (m2 / (*n - 1) as f64).sqrt())
            }
            (Self::Var { n, m2, .. }, AggKind::StddevPop) => {
                (*n > 0).then(|| (m2 / *n as f64).sqrt())
            }
            (Self::Var { n, m2, .. }, AggKind::VarSamp) => (*n > 1).then(|| m2 / (*n - 1) as f64),
            (Self::Var { n, m2, .. }, _) => (*n > 0).then(|| m2 / *n as f64),
            (Self::First(f) | Self::Last(f), _) => f.map(|(_, v)| v),
            (Self::Sketch(s), AggKind::Percentile(p)) => s.quantile(p),
            (Self::Sketch(s), _) => s.quantile(0.5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KINDS: [AggKind; 12] = [
        AggKind::CountStar,
        AggKind::Count,
        AggKind::Sum,
        AggKind::Min,
        AggKind::Max,
        AggKind::Avg,
        AggKind::StddevSamp,
        AggKind::StddevPop,
        AggKind::VarSamp,
        AggKind::VarPop,
        AggKind::First,
        AggKind::Last,
    ];

    /// A direct computation over all values, independent of the accumulators.
    fn model(kind: AggKind, rows: &[(i64, Option<f64>)]) -> Option<f64> {
        let vals: Vec<f64> = rows.iter().filter_map(|r| r.1).collect();
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let ss = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
        match kind {
            AggKind::CountStar => Some(rows.len() as f64),
            AggKind::Count => Some(n),
            _ if vals.is_empty() => None,
            AggKind::Sum => Some(vals.iter().sum()),
            AggKind::Min => vals.iter().copied().reduce(f64::min),
            AggKind::Max => vals.iter().copied().reduce(f64::max),
            AggKind::Avg => Some(mean),
            AggKind::StddevSamp => (n > 1.0).then(|| (ss / (n - 1.0)).sqrt()),
            AggKind::StddevPop => Some((ss / n).sqrt()),
            AggKind::VarSamp => (n > 1.0).then(|| ss / (n - 1.0)),
            AggKind::VarPop => Some(ss / n),
            AggKind::First => {
                let min_t = rows.iter().filter(|r| r.1.is_some()).map(|r| r.0).min()?;
                rows.iter()
                    .find(|r| r.0 == min_t && r.1.is_some())
                    .and_then(|r| r.1)
            }
            AggKind::Last => {
                let max_t = rows.iter().filter(|r| r.1.is_some()).map(|r| r.0).max()?;
                rows.iter()
                    .rev()
                    .find(|r| r.0 == max_t && r.1.is_some())
                    .and_then(|r| r.1)
            }
            AggKind::Percentile(_) => None,
        }
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs())),
            (None, None) => true,
            _ => false,
        }
    }

    proptest! {
        /// Updating row by row, or splitting the rows anywhere and merging the two
        /// partial states, both give the model's answer.
        #[test]
        fn update_and_split_merge_agree_with_the_model(
            rows in proptest::collection::vec((0i64..50, proptest::option::weighted(0.9, -1e3f64..1e3)), 0..80),
            cut in 0usize..80,
        ) {
            let cut = cut.min(rows.len());
            for kind in KINDS {
                let mut whole = Acc::new(kind);
                for (t, v) in &rows { whole.update(kind, *v, *t); }
                let (mut a, mut b) = (Acc::new(kind), Acc::new(kind));
                for (t, v) in &rows[..cut] { a.update(kind, *v, *t); }
                for (t, v) in &rows[cut..] { b.update(kind, *v, *t); }
                a.merge(&b);
                let want = model(kind, &rows);
                prop_assert!(close(whole.finish(kind), want), "{kind:?}: {:?} vs {want:?}", whole.finish(kind));
                prop_assert!(close(a.finish(kind), want), "{kind:?} merged: {:?} vs {want:?}", a.finish(kind));
            }
        }

        /// Folding a column at a time into interleaved groups gives exactly the
        /// accumulators of row-by-row updates, with and without NULLs.
        #[test]
        fn column_updates_equal_row_updates(
            rows in proptest::collection::vec((0i64..50, proptest::option::weighted(0.8, -1e3f64..1e3), 0u32..4), 0..80),
            nulls in any::<bool>(),
        ) {
            let kinds: Vec<AggKind> = KINDS.iter().copied().chain([AggKind::Percentile(0.9)]).collect();
            let stride = kinds.len();
            let col = Float64Array::from(
                rows.iter().map(|r| if nulls { r.1 } else { Some(r.1.unwrap_or(0.5)) }).collect::<Vec<_>>(),
            );
            let ts: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let targets: Vec<(u32, u32)> = rows.iter().enumerate().map(|(i, r)| (i as u32, r.2)).collect();
            let fresh = || (0..4).flat_map(|_| kinds.iter().map(|k| Acc::new(*k))).collect::<Vec<_>>();
            let (mut by_column, mut by_row) = (fresh(), fresh());
            for (j, kind) in kinds.iter().enumerate() {
                let arg = kind.has_arg().then_some(&col);
                Acc::update_column(*kind, &mut by_column, stride, j, &targets, arg, &ts);
                for &(r, g) in &targets {
                    let r = r as usize;
                    let v = arg.and_then(|c| c.is_valid(r).then(|| c.value(r)));
                    by_row[g as usize * stride + j].update(*kind, v, ts[r]);
                }
            }
            prop_assert_eq!(by_column, by_row);
        }

        /// The sketch's quantile is within 1% (relative) of a value whose exact rank
        /// is the requested one.
        #[test]
        fn sketch_quantiles_are_within_one_percent(
            mut vals in proptest::collection::vec(prop_oneof![-1e6f64..-1e-3, 1e-3f64..1e6], 1..300),
            q in 0.0f64..=1.0,
        ) {
            let mut s = Sketch::default();
            for v in &vals { s.add(*v); }
            vals.sort_by(f64::total_cmp);
            let rank = (q * (vals.len() - 1) as f64).round() as usize;
            let want = vals[rank];
            let got = s.quantile(q).unwrap();
            prop_assert!((got - want).abs() <= 0.0101 * want.abs(), "{got} vs {want}");
        }
    }
}
