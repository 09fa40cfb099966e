//! Window aggregation in two stages. Pure: rows and watermarks in, window rows out.
//!
//! - [`PartitionWindows`] runs per assigned partition. It folds rows into the open
//!   windows of their (key, window) groups and, when the query's watermark passes a
//!   window's end, hands the group's partial state over ([`Partial`]) and forgets it.
//!   A row whose window ended more than `allowed_lateness` before the watermark is
//!   *late*: it is not aggregated, and its index is returned (counted, and by config
//!   sent to a side output). A row that is behind the watermark but within the
//!   lateness starts a fresh partial for its (already emitted) window, handed over at
//!   the next drain.
//! - [`FinalWindows`] runs once per query on a processor. It merges the partials of
//!   all partitions (a key may appear on several partitions, e.g. `GROUP BY site`),
//!   emits each window once the watermark passes its end, and keeps it for
//!   `allowed_lateness` more: a late partial merges in and the window is emitted
//!   again, complete, under the same identity (key, window start), which sinks
//!   upsert. After that the window is dropped.
//!
//! Session windows of one key can span partitions (`GROUP BY site` over sensors on
//! several partitions) and merge correctly only while they are open, so a query with
//! session windows runs one first stage for all its partitions.
//!
//! Keys are Arrow row-format bytes (one byte string per distinct tuple of key values).
//! Memory is bounded by the open windows: nothing outlives its window plus lateness.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ahash::RandomState;
use datafusion::arrow::array::{Array, Float64Array};

use crate::accum::{Acc, AggKind};
use crate::window::WindowSpec;

/// One group's partial state handed from a partition to the query.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub key: Box<[u8]>,
    pub start: i64,
    pub end: i64,
    pub accs: Vec<Acc>,
}

struct Group {
    key: u32,
    start: i64,
    end: i64,
    accs: Vec<Acc>,
    /// Changed since last emitted (final stage).
    dirty: bool,
}

/// Groups indexed by (key, window), with their windows ordered by end.
struct GroupStore {
    kinds: Arc<[AggKind]>,
    session: bool,
    keys: HashMap<Box<[u8]>, u32, RandomState>,
    key_bytes: Vec<Box<[u8]>>,
    key_refs: Vec<u32>,
    free_keys: Vec<u32>,
    fixed: HashMap<(u32, i64), usize, RandomState>,
    sessions: HashMap<u32, Vec<usize>, RandomState>,
    groups: Vec<Option<Group>>,
    free: Vec<usize>,
    by_end: BTreeSet<(i64, usize)>,
}

impl GroupStore {
    fn new(kinds: Arc<[AggKind]>, session: bool) -> Self {
        Self {
            kinds,
            session,
            keys: HashMap::default(),
            key_bytes: Vec::new(),
            key_refs: Vec::new(),
            free_keys: Vec::new(),
            fixed: HashMap::default(),
            sessions: HashMap::default(),
            groups: Vec::new(),
            free: Vec::new(),
            by_end: BTreeSet::new(),
        }
    }

    fn len(&self) -> usize {
        self.by_end.len()
    }

    #[inline]
    fn key_id(&mut self, bytes: &[u8]) -> u32 {
        if let Some(&id) = self.keys.get(bytes) {
            return id;
        }
        let id = match self.free_keys.pop() {
            Some(id) => {
                self.key_bytes[id as usize] = Box::from(bytes);
                self.key_refs[id as usize] = 0;
                id
            }
            None => {
                self.key_bytes.push(Box::from(bytes));
                self.key_refs.push(0);
                (self.key_bytes.len() - 1) as u32
            }
        };
        self.keys.insert(Box::from(bytes), id);
        id
    }

    fn new_group(&mut self, key: u32, start: i64, end: i64, accs: Option<Vec<Acc>>) -> usize {
        let accs = accs.unwrap_or_else(|| self.kinds.iter().map(|k| Acc::new(*k)).collect());
        let g = Group {
            key,
            start,
            end,
            accs,
            dirty: true,
        };
        self.key_refs[key as usize] += 1;
        let idx = match self.free.pop() {
            Some(i) => {
                self.groups[i] = Some(g);
                i
            }
            None => {
                self.groups.push(Some(g));
                self.groups.len() - 1
            }
        };
        self.by_end.insert((end, idx));
        idx
    }

    /// The group of a fixed window, created empty if absent.
    #[inline]
    fn fixed(&mut self, key: u32, start: i64, end: i64) -> usize {
        if let Some(&i) = self.fixed.get(&(key, start)) {
            return i;
        }
        let i = self.new_group(key, start, end, None);
        self.fixed.insert((key, start), i);
        i
    }

    /// The session group covering `[start, end)` for `key`: overlapping sessions are
    /// merged into one, extended to cover the interval; `accs` (if any) merge in.
    fn session(&mut self, key: u32, start: i64, end: i64, accs: Option<&[Acc]>) -> usize {
        let list = self.sessions.remove(&key).unwrap_or_default();
        let (overlap, mut rest): (Vec<usize>, Vec<usize>) = list.into_iter().partition(|&i| {
            let g = self.groups[i].as_ref().expect("session index is live");
            g.start < end && start < g.end
        });
        let idx = match overlap.first() {
            None => {
                let fresh = self.kinds.iter().map(|k| Acc::new(*k)).collect();
                self.new_group(key, start, end, Some(fresh))
            }
            Some(&first) => {
                for &other in &overlap[1..] {
                    // `first` still holds the key, so `take` cannot release it.
                    let (g, _) = self.take(other);
                    let target = self.groups[first].as_mut().expect("live");
                    for (a, b) in target.accs.iter_mut().zip(&g.accs) {
                        a.merge(b);
                    }
                    target.start = target.start.min(g.start);
                    let new_end = target.end.max(g.end);
                    self.set_end(first, new_end);
                }
                let g = self.groups[first].as_mut().expect("live");
                g.start = g.start.min(start);
                let new_end = g.end.max(end);
                self.set_end(first, new_end);
                first
            }
        };
        if let Some(accs) = accs {
            let g = self.groups[idx].as_mut().expect("live");
            for (a, b) in g.accs.iter_mut().zip(accs) {
                a.merge(b);
            }
        }
        if let Some(g) = self.groups[idx].as_mut() {
            g.dirty = true;
        }
        rest.push(idx);
        self.sessions.insert(key, rest);
        idx
    }

    fn set_end(&mut self, idx: usize, end: i64) {
        let g = self.groups[idx].as_mut().expect("live");
        if g.end != end {
            self.by_end.remove(&(g.end, idx));
            g.end = end;
            self.by_end.insert((end, idx));
        }
    }

    /// Removes a group, releasing its key when no group uses it any more. Returns
    /// the group and its key bytes.
    fn take(&mut self, idx: usize) -> (Group, Box<[u8]>) {
        let g = self.groups[idx].take().expect("live group");
        self.free.push(idx);
        self.by_end.remove(&(g.end, idx));
        if self.session {
            if let Some(list) = self.sessions.get_mut(&g.key) {
                list.retain(|&i| i != idx);
                if list.is_empty() {
                    self.sessions.remove(&g.key);
                }
            }
        } else {
            self.fixed.remove(&(g.key, g.start));
        }
        let refs = &mut self.key_refs[g.key as usize];
        *refs -= 1;
        let bytes = if *refs == 0 {
            let bytes = std::mem::take(&mut self.key_bytes[g.key as usize]);
            self.keys.remove(&bytes);
            self.free_keys.push(g.key);
            bytes
        } else {
            self.key_bytes[g.key as usize].clone()
        };
        (g, bytes)
    }

    /// Indexes of groups whose window ended at or before `watermark`.
    fn ended(&self, watermark: i64) -> Vec<usize> {
        self.by_end
            .range(..=(watermark, usize::MAX))
            .map(|&(_, i)| i)
            .collect()
    }
}

/// Per-partition window state (the first stage).
pub struct PartitionWindows {
    spec: WindowSpec,
    lateness: i64,
    store: GroupStore,
    late_rows: u64,
}

impl PartitionWindows {
    /// `kinds`: the query's aggregates, in order.
    pub fn new(spec: WindowSpec, kinds: Arc<[AggKind]>, allowed_lateness_ms: i64) -> Self {
        Self {
            spec,
            lateness: allowed_lateness_ms.max(0),
            store: GroupStore::new(kinds, matches!(spec, WindowSpec::Session { .. })),
            late_rows: 0,
        }
    }

    /// Folds rows in. `key(i)` is row i's key bytes, `ts[i]` its event time,
    /// `args[j]` the argument column of aggregate j (`None` for `count(*)`).
    /// `watermark` is the query's watermark before these rows. Returns the indexes of
    /// late rows (not aggregated).
    pub fn process<'k>(
        &mut self,
        key: impl Fn(usize) -> &'k [u8],
        ts: &[i64],
        args: &[Option<&Float64Array>],
        watermark: Option<i64>,
    ) -> Vec<usize> {
        let kinds = self.store.kinds.clone();
        let mut late = Vec::new();
        let mut windows: Vec<(i64, i64)> = Vec::with_capacity(4);
        for (i, &t) in ts.iter().enumerate() {
            windows.clear();
            self.spec.windows_of(t, |s, e| windows.push((s, e)));
            if let Some(c) = watermark.map(|w| w.saturating_sub(self.lateness)) {
                if self.store.session {
                    // A row behind the cutoff could belong to a session already
                    // emitted and dropped: late.
                    windows.retain(|&(s, _)| s >= c);
                } else {
                    windows.retain(|&(_, e)| e > c);
                }
            }
            if windows.is_empty() {
                late.push(i);
                continue;
            }
            let k = self.store.key_id(key(i));
            for &(s, e) in &windows {
                let g = if self.store.session {
                    self.store.session(k, s, e, None)
                } else {
                    self.store.fixed(k, s, e)
                };
                let accs = &mut self.store.groups[g].as_mut().expect("live group").accs;
                for (j, acc) in accs.iter_mut().enumerate() {
                    let v = args[j].and_then(|a| a.is_valid(i).then(|| a.value(i)));
                    acc.update(kinds[j], v, t);
                }
            }
        }
        self.late_rows += late.len() as u64;
        late
    }

    /// Hands over (and forgets) every group whose window ended at or before
    /// `watermark`.
    pub fn drain(&mut self, watermark: i64) -> Vec<Partial> {
        let ended = self.store.ended(watermark);
        let mut out = Vec::with_capacity(ended.len());
        for i in ended {
            let (g, key) = self.store.take(i);
            out.push(Partial {
                key,
                start: g.start,
                end: g.end,
                accs: g.accs,
            });
        }
        out
    }

    /// Open (key, window) groups.
    pub fn open_groups(&self) -> usize {
        self.store.len()
    }

    /// Rows found late so far.
    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }
}

/// A window row ready to leave the query.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    pub key: Box<[u8]>,
    pub start: i64,
    pub end: i64,
    /// One value per aggregate (counts as f64; `None` is SQL NULL).
    pub values: Vec<Option<f64>>,
}

/// The query's window state on a processor (the second stage).
pub struct FinalWindows {
    lateness: i64,
    store: GroupStore,
}

impl FinalWindows {
    pub fn new(spec: WindowSpec, kinds: Arc<[AggKind]>, allowed_lateness_ms: i64) -> Self {
        Self {
            lateness: allowed_lateness_ms.max(0),
            store: GroupStore::new(kinds, matches!(spec, WindowSpec::Session { .. })),
        }
    }

    /// Merges partitions' partial states in.
    pub fn merge(&mut self, partials: Vec<Partial>) {
        for p in partials {
            let k = self.store.key_id(&p.key);
            if self.store.session {
                self.store.session(k, p.start, p.end, Some(&p.accs));
            } else {
                let i = self.store.fixed(k, p.start, p.end);
                let g = self.store.groups[i].as_mut().expect("live group");
                for (a, b) in g.accs.iter_mut().zip(&p.accs) {
                    a.merge(b);
                }
                g.dirty = true;
            }
        }
    }

    /// Emits every window that ended at or before `watermark` and changed since it
    /// was last emitted, then drops windows past their allowed lateness.
    pub fn emit(&mut self, watermark: i64) -> Vec<Emitted> {
        let kinds = self.store.kinds.clone();
        let mut out = Vec::new();
        for i in self.store.ended(watermark) {
            let g = self.store.groups[i].as_mut().expect("live group");
            if g.dirty {
                g.dirty = false;
                let values = g
                    .accs
                    .iter()
                    .zip(kinds.iter())
                    .map(|(a, k)| a.finish(*k))
                    .collect();
                out.push(Emitted {
                    key: self.store.key_bytes[g.key as usize].clone(),
                    start: g.start,
                    end: g.end,
                    values,
                });
            }
        }
        for i in self.store.ended(watermark.saturating_sub(self.lateness)) {
            if self.store.groups[i].as_ref().is_some_and(|g| !g.dirty) {
                self.store.take(i);
            }
        }
        out
    }

    /// Windows held (open or within lateness).
    pub fn groups(&self) -> usize {
        self.store.len()
    }
}

#[cfg(test)]
mod tests;
