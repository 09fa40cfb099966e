//! Window aggregation in two stages. Pure: rows and watermarks in, window rows out.
//!
//! - [`PartitionWindows`] runs per assigned partition. It folds rows into the open
//!   windows of their (key, window) groups and, when the query's watermark passes a
//!   window's end (`end <= watermark`), hands the group's partial state over
//!   ([`Partial`]) and forgets it. The watermark is the query's (the minimum over its
//!   partitions), the same for every partition's first stage. A row whose windows all
//!   ended `allowed_lateness` or more before the watermark (`end + allowed_lateness
//!   <= watermark`) is *late*: it is not aggregated, and its index is returned
//!   (counted, and by config sent to a side output). A hopping row is aggregated into
//!   those of its windows that are not late. A row that is behind the watermark but
//!   within the lateness starts a fresh partial for its (already emitted) window,
//!   handed over at the next drain.
//! - [`FinalWindows`] runs once per query on a processor. It merges the partials of
//!   all partitions (a key may appear on several partitions, e.g. `GROUP BY site`),
//!   emits each window once the watermark passes its end, and keeps it for
//!   `allowed_lateness` more: a late partial merges in and the window is emitted
//!   again, complete, under the same identity (key, window start), which sinks
//!   upsert. After that the window is dropped.
//!
//! Session windows of one key can span partitions (`GROUP BY site` over sensors on
//! several partitions) and merge correctly only while they are open, so a query with
//! session windows runs one first stage for all its partitions. A session row is late
//! when its own time is more than `allowed_lateness` behind the watermark (`ts +
//! allowed_lateness < watermark`): an earlier row could belong to a session already
//! dropped. The first stage keeps a handed-over session's extent for its lateness, so
//! that a row within the lateness joins the session it touches (and through it, the
//! emitted session in the final stage) instead of starting one of its own. Such a row
//! can move a session's start earlier or join two emitted sessions into one; the
//! session is then emitted under its new identity (key, its start), and the rows
//! emitted before under the identities it replaced are **retracted**.
//!
//! ## Retractions
//!
//! The final stage remembers, per window, the identities (key, start) under which
//! its row is *shown*: emitted and let through by the query's `HAVING`. When it
//! emits a window again, the caller says which of the emitted rows are shown now
//! ([`FinalWindows::emit`]); every identity the window was shown under that it no
//! longer has (a session whose start moved, sessions merged into it) or that is not
//! shown any more (`HAVING` no longer true) is retracted ([`Retraction`]), for the
//! sinks to delete. A window that never passed `HAVING` is never retracted. Once a
//! window is dropped after its lateness, what it last showed stays.
//!
//! `first_value` / `last_value` are the values at the smallest / largest event time;
//! when several rows share that time, the result is one of their values (which one
//! depends on arrival and merge order).
//!
//! Keys are Arrow row-format bytes (one byte string per distinct tuple of key values).
//! Memory is bounded by the open windows: nothing outlives its window plus lateness.
//!
//! Both stages can be **snapshotted** into a value ([`PartitionState`],
//! [`FinalState`]) and **restored** from it, between batches: a restored stage goes
//! on exactly as the original would have, emitting the same rows in the same order
//! (group slots and their reuse order are part of the state, because emission order
//! and `first_value`/`last_value` ties follow them). Releasing a partition is taking
//! its snapshot and dropping it; another runtime restores it.
//!
//! ## Moving a partition
//!
//! The final stage remembers which partition each window's partials came from
//! ([`Origin`]). When every group key lives on one partition (the keys include the
//! stream's message key), each window has one origin, and a partition can move to
//! another runtime with its share of the final stage: [`FinalWindows::release`] takes
//! out the windows that came from it, [`FinalWindows::adopt`] puts them into the
//! other runtime's final stage, which goes on emitting them as this one would have.
//! A window fed by several partitions (keys that span partitions) cannot be split
//! that way; releasing then fails, naming the reason.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ahash::RandomState;
use datafusion::arrow::array::{Array, Float64Array};

use crate::accum::{Acc, AggKind};
use crate::window::{floor_to, WindowSpec};

/// Which input partitions a final-stage window's partials came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// None yet (a first-stage group).
    #[default]
    None,
    /// One partition.
    One(i32),
    /// Several partitions, or not known (state written before origins were kept).
    Many,
}

impl Origin {
    /// The origin of a window that took partials from both.
    pub fn join(self, other: Origin) -> Origin {
        match (self, other) {
            (Origin::None, o) | (o, Origin::None) => o,
            (Origin::One(a), Origin::One(b)) if a == b => Origin::One(a),
            _ => Origin::Many,
        }
    }
}

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
    /// Final stage: changed since last emitted. First stage (sessions): holds rows not
    /// yet handed over.
    dirty: bool,
    /// First stage (sessions): handed over before, and kept for its lateness.
    handed: bool,
    /// Final stage: the window starts under which this window's rows are shown at the
    /// sinks (emitted and passing `HAVING`); several after sessions merged.
    shown: Vec<i64>,
    /// Final stage: the partitions its partials came from.
    origin: Origin,
}

/// No recent group for a key.
const NO_GROUP: (i64, u32) = (i64::MIN, u32::MAX);

/// One (key, window) group in a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupState {
    /// The group's slot: emission order among windows ending together follows it.
    pub slot: u32,
    /// The key in Arrow's row format (the query's row converter turns it into columns
    /// for storage).
    pub key: Box<[u8]>,
    pub start: i64,
    pub end: i64,
    /// Final stage: changed since last emitted. First stage (sessions): holds rows not
    /// yet handed over.
    pub dirty: bool,
    /// First stage (sessions): handed over before, kept for its lateness.
    pub handed: bool,
    /// Final stage: window starts under which the window's rows are shown.
    pub shown: Vec<i64>,
    /// Final stage: the partitions its partials came from.
    pub origin: Origin,
    /// One accumulator per aggregate of the query.
    pub accs: Vec<Acc>,
}

/// The groups of a stage, as a value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreState {
    /// Live groups, by slot.
    pub groups: Vec<GroupState>,
    /// Slots in use or free: `groups` and `free` together cover `0..slots`.
    pub slots: u32,
    /// Free slots, in the order they are reused (last first).
    pub free: Vec<u32>,
    /// Sessions: each key's sessions (slots) in the order they are searched.
    pub sessions: Vec<Vec<u32>>,
}

/// A first stage's state (one partition, or all partitions for session windows).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionState {
    pub store: StoreState,
    pub late_rows: u64,
    /// Sessions handed over before that took rows since (slots).
    pub pending: Vec<u32>,
}

/// The final stage's state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinalState {
    pub store: StoreState,
}

/// Groups indexed by (key, window), with their windows ordered by end.
///
/// Accumulators live in one flat vector, `kinds.len()` per group slot (slot `g` owns
/// `accs[g * n .. (g + 1) * n]`), so a batch folds into them a column at a time.
/// `recent[key]` remembers the fixed window a key last touched: rows of one key
/// mostly share a window, and then need no second hash lookup.
struct GroupStore {
    kinds: Arc<[AggKind]>,
    session: bool,
    keys: HashMap<Box<[u8]>, u32, RandomState>,
    key_bytes: Vec<Box<[u8]>>,
    key_refs: Vec<u32>,
    free_keys: Vec<u32>,
    recent: Vec<(i64, u32)>,
    fixed: HashMap<(u32, i64), u32, RandomState>,
    sessions: HashMap<u32, Vec<u32>, RandomState>,
    groups: Vec<Option<Group>>,
    accs: Vec<Acc>,
    free: Vec<u32>,
    by_end: BTreeSet<(i64, u32)>,
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
            recent: Vec::new(),
            fixed: HashMap::default(),
            sessions: HashMap::default(),
            groups: Vec::new(),
            accs: Vec::new(),
            free: Vec::new(),
            by_end: BTreeSet::new(),
        }
    }

    fn len(&self) -> usize {
        self.by_end.len()
    }

    fn snapshot(&self) -> StoreState {
        let n = self.kinds.len();
        let groups = self
            .groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                let g = g.as_ref()?;
                Some(GroupState {
                    slot: i as u32,
                    key: self.key_bytes[g.key as usize].clone(),
                    start: g.start,
                    end: g.end,
                    dirty: g.dirty,
                    handed: g.handed,
                    shown: g.shown.clone(),
                    origin: g.origin,
                    accs: self.accs[i * n..(i + 1) * n].to_vec(),
                })
            })
            .collect();
        let mut sessions: Vec<Vec<u32>> = self.sessions.values().cloned().collect();
        // Keys' lists are independent; a fixed order keeps snapshots comparable.
        sessions.sort_unstable();
        StoreState {
            groups,
            slots: self.groups.len() as u32,
            free: self.free.clone(),
            sessions,
        }
    }

    fn restore(kinds: Arc<[AggKind]>, session: bool, st: StoreState) -> Result<Self, String> {
        let n = kinds.len();
        let mut s = Self::new(kinds, session);
        let slots = st.slots as usize;
        s.groups = (0..slots).map(|_| None).collect();
        s.accs = vec![Acc::Count(0); slots * n];
        for g in st.groups {
            let slot = g.slot as usize;
            if slot >= slots || s.groups[slot].is_some() {
                return Err(format!("group slot {slot} is out of range or taken twice"));
            }
            if g.accs.len() != n {
                return Err(format!(
                    "a group has {} accumulators, the query {n}",
                    g.accs.len()
                ));
            }
            let key = s.key_id(&g.key);
            s.key_refs[key as usize] += 1;
            s.groups[slot] = Some(Group {
                key,
                start: g.start,
                end: g.end,
                dirty: g.dirty,
                handed: g.handed,
                shown: g.shown,
                origin: g.origin,
            });
            for (to, a) in s.accs[slot * n..(slot + 1) * n].iter_mut().zip(g.accs) {
                *to = a;
            }
            s.by_end.insert((g.end, g.slot));
            if !session && s.fixed.insert((key, g.start), g.slot).is_some() {
                return Err(format!(
                    "two groups for one key and window start {}",
                    g.start
                ));
            }
        }
        let holes: BTreeSet<u32> = (0..st.slots)
            .filter(|&i| s.groups[i as usize].is_none())
            .collect();
        if holes != st.free.iter().copied().collect::<BTreeSet<u32>>()
            || holes.len() != st.free.len()
        {
            return Err("the free slots do not match the groups".into());
        }
        s.free = st.free;
        for list in st.sessions {
            let keys: BTreeSet<u32> = list
                .iter()
                .map(|&i| {
                    s.groups
                        .get(i as usize)
                        .and_then(Option::as_ref)
                        .map(|g| g.key)
                        .ok_or_else(|| format!("session slot {i} holds no group"))
                })
                .collect::<Result<_, _>>()?;
            let [key] = keys.into_iter().collect::<Vec<_>>()[..] else {
                return Err("a session list spans several keys, or none".into());
            };
            s.sessions.insert(key, list);
        }
        Ok(s)
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
                self.recent[id as usize] = NO_GROUP;
                id
            }
            None => {
                self.key_bytes.push(Box::from(bytes));
                self.key_refs.push(0);
                self.recent.push(NO_GROUP);
                (self.key_bytes.len() - 1) as u32
            }
        };
        self.keys.insert(Box::from(bytes), id);
        id
    }

    /// The accumulators of group slot `g`.
    fn accs_mut(&mut self, g: u32) -> &mut [Acc] {
        let n = self.kinds.len();
        &mut self.accs[g as usize * n..(g as usize + 1) * n]
    }

    fn group_mut(&mut self, g: u32) -> &mut Group {
        self.groups[g as usize].as_mut().expect("live group")
    }

    fn new_group(&mut self, key: u32, start: i64, end: i64, accs: Option<Vec<Acc>>) -> u32 {
        let accs = accs.unwrap_or_else(|| self.kinds.iter().map(|k| Acc::new(*k)).collect());
        let g = Group {
            key,
            start,
            end,
            dirty: true,
            handed: false,
            shown: Vec::new(),
            origin: Origin::None,
        };
        self.key_refs[key as usize] += 1;
        let idx = match self.free.pop() {
            Some(i) => {
                self.groups[i as usize] = Some(g);
                for (slot, a) in self.accs_mut(i).iter_mut().zip(accs) {
                    *slot = a;
                }
                i
            }
            None => {
                self.groups.push(Some(g));
                self.accs.extend(accs);
                u32::try_from(self.groups.len() - 1).expect("fewer than 2^32 open groups")
            }
        };
        self.by_end.insert((end, idx));
        idx
    }

    /// The group of a fixed window, created empty if absent.
    #[inline]
    fn fixed(&mut self, key: u32, start: i64, end: i64) -> u32 {
        let recent = &mut self.recent[key as usize];
        if recent.0 == start && recent.1 != u32::MAX {
            return recent.1;
        }
        let g = match self.fixed.get(&(key, start)) {
            Some(&g) => g,
            None => {
                let g = self.new_group(key, start, end, None);
                self.fixed.insert((key, start), g);
                g
            }
        };
        self.recent[key as usize] = (start, g);
        g
    }

    /// The session group covering `[start, end)` for `key`: overlapping sessions are
    /// merged into one, extended to cover the interval; `accs` (if any) merge in.
    fn session(&mut self, key: u32, start: i64, end: i64, accs: Option<&[Acc]>) -> u32 {
        let list = self.sessions.remove(&key).unwrap_or_default();
        let (overlap, mut rest): (Vec<u32>, Vec<u32>) = list.into_iter().partition(|&i| {
            let g = self.groups[i as usize]
                .as_ref()
                .expect("session index is live");
            g.start < end && start < g.end
        });
        let idx = match overlap.first() {
            None => self.new_group(key, start, end, None),
            Some(&first) => {
                for &other in &overlap[1..] {
                    // `first` still holds the key, so `take` cannot release it.
                    let (g, other_accs, _) = self.take(other);
                    for (a, b) in self.accs_mut(first).iter_mut().zip(&other_accs) {
                        a.merge(b);
                    }
                    let target = self.group_mut(first);
                    target.start = target.start.min(g.start);
                    target.handed |= g.handed;
                    target.shown.extend(g.shown);
                    target.origin = target.origin.join(g.origin);
                    let new_end = target.end.max(g.end);
                    self.set_end(first, new_end);
                }
                let g = self.group_mut(first);
                g.start = g.start.min(start);
                let new_end = g.end.max(end);
                self.set_end(first, new_end);
                first
            }
        };
        if let Some(accs) = accs {
            for (a, b) in self.accs_mut(idx).iter_mut().zip(accs) {
                a.merge(b);
            }
        }
        self.group_mut(idx).dirty = true;
        rest.push(idx);
        self.sessions.insert(key, rest);
        idx
    }

    fn set_end(&mut self, idx: u32, end: i64) {
        let g = self.group_mut(idx);
        if g.end != end {
            let old = std::mem::replace(&mut g.end, end);
            self.by_end.remove(&(old, idx));
            self.by_end.insert((end, idx));
        }
    }

    /// Removes a group, releasing its key when no group uses it any more. Returns
    /// the group, its accumulators and its key bytes.
    fn take(&mut self, idx: u32) -> (Group, Vec<Acc>, Box<[u8]>) {
        let g = self.groups[idx as usize].take().expect("live group");
        // The slot's accumulators are replaced when the slot is reused.
        let accs = self
            .accs_mut(idx)
            .iter_mut()
            .map(|a| std::mem::replace(a, Acc::Count(0)))
            .collect();
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
            if self.recent[g.key as usize] == (g.start, idx) {
                self.recent[g.key as usize] = NO_GROUP;
            }
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
        (g, accs, bytes)
    }

    /// Indexes of groups whose window ended at or before `watermark`.
    fn ended(&self, watermark: i64) -> Vec<u32> {
        self.by_end
            .range(..=(watermark, u32::MAX))
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
    /// (row, group) pairs of the batch being folded.
    targets: Vec<(u32, u32)>,
    /// Sessions handed over before that took rows since (handed over at the next
    /// drain).
    pending: Vec<u32>,
}

impl PartitionWindows {
    /// `kinds`: the query's aggregates, in order.
    pub fn new(spec: WindowSpec, kinds: Arc<[AggKind]>, allowed_lateness_ms: i64) -> Self {
        Self {
            spec,
            lateness: allowed_lateness_ms.max(0),
            store: GroupStore::new(kinds, matches!(spec, WindowSpec::Session { .. })),
            late_rows: 0,
            targets: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Folds rows in. `key(i)` is row i's key bytes, `ts[i]` its event time,
    /// `args[j]` the argument column of aggregate j (`None` for `count(*)`).
    /// `watermark` is the query's watermark before these rows. Returns the indexes of
    /// late rows (not aggregated).
    ///
    /// Fixed windows fold in two passes: rows are placed in their groups first, then
    /// each aggregate folds its whole column. Sessions fold row by row, because a
    /// row can merge the sessions that earlier rows of the batch went to.
    pub fn process<'k>(
        &mut self,
        key: impl Fn(usize) -> &'k [u8],
        ts: &[i64],
        args: &[Option<&Float64Array>],
        watermark: Option<i64>,
    ) -> Vec<usize> {
        let cutoff = watermark.map(|w| w.saturating_sub(self.lateness));
        let late = match self.spec {
            WindowSpec::Session { .. } => self.process_sessions(key, ts, args, cutoff),
            WindowSpec::Tumble { size } => {
                let mut late = Vec::new();
                let mut targets = std::mem::take(&mut self.targets);
                targets.clear();
                for (i, &t) in ts.iter().enumerate() {
                    let start = floor_to(t, size);
                    let end = start.saturating_add(size);
                    if cutoff.is_some_and(|c| end <= c) {
                        late.push(i);
                        continue;
                    }
                    let k = self.store.key_id(key(i));
                    targets.push((i as u32, self.store.fixed(k, start, end)));
                }
                self.fold_columns(&targets, ts, args);
                self.targets = targets;
                late
            }
            WindowSpec::Hop { .. } => {
                let mut late = Vec::new();
                let mut targets = std::mem::take(&mut self.targets);
                targets.clear();
                let mut windows: Vec<(i64, i64)> = Vec::with_capacity(4);
                for (i, &t) in ts.iter().enumerate() {
                    windows.clear();
                    self.spec.windows_of(t, |s, e| {
                        if cutoff.is_none_or(|c| e > c) {
                            windows.push((s, e));
                        }
                    });
                    if windows.is_empty() {
                        late.push(i);
                        continue;
                    }
                    let k = self.store.key_id(key(i));
                    for &(s, e) in &windows {
                        targets.push((i as u32, self.store.fixed(k, s, e)));
                    }
                }
                self.fold_columns(&targets, ts, args);
                self.targets = targets;
                late
            }
        };
        self.late_rows += late.len() as u64;
        late
    }

    fn fold_columns(&mut self, targets: &[(u32, u32)], ts: &[i64], args: &[Option<&Float64Array>]) {
        let n = self.store.kinds.len();
        for (j, kind) in self.store.kinds.iter().enumerate() {
            Acc::update_column(*kind, &mut self.store.accs, n, j, targets, args[j], ts);
        }
    }

    fn process_sessions<'k>(
        &mut self,
        key: impl Fn(usize) -> &'k [u8],
        ts: &[i64],
        args: &[Option<&Float64Array>],
        cutoff: Option<i64>,
    ) -> Vec<usize> {
        let kinds = self.store.kinds.clone();
        let mut late = Vec::new();
        for (i, &t) in ts.iter().enumerate() {
            // A row behind the cutoff could belong to a session already emitted and
            // dropped: late.
            if cutoff.is_some_and(|c| t < c) {
                late.push(i);
                continue;
            }
            let k = self.store.key_id(key(i));
            let (s, e) = (t, t.saturating_add(self.spec.max_len()));
            let g = self.store.session(k, s, e, None);
            for (j, acc) in self.store.accs_mut(g).iter_mut().enumerate() {
                let v = args[j].and_then(|a| a.is_valid(i).then(|| a.value(i)));
                acc.update(kinds[j], v, t);
            }
            if self.store.group_mut(g).handed {
                self.pending.push(g);
            }
        }
        late
    }

    /// Hands over every group whose window ended at or before `watermark`.
    ///
    /// A fixed window is forgotten then. A session is kept, without its rows, for
    /// `allowed_lateness` more, so that a row within the lateness joins the session it
    /// touches rather than starting one of its own; what a kept session gathers is
    /// handed over at the next drain, under the session's whole extent, whatever its
    /// end (the final stage still holds the session it merges into).
    pub fn drain(&mut self, watermark: i64) -> Vec<Partial> {
        let mut ended = self.store.ended(watermark);
        if !self.store.session {
            let mut out = Vec::with_capacity(ended.len());
            for i in ended {
                let (g, accs, key) = self.store.take(i);
                out.push(Partial {
                    key,
                    start: g.start,
                    end: g.end,
                    accs,
                });
            }
            return out;
        }
        ended.append(&mut self.pending);
        let kinds = self.store.kinds.clone();
        let mut out = Vec::new();
        for i in ended {
            let Some(g) = self.store.groups[i as usize].as_mut() else {
                continue;
            };
            let ready = if g.handed {
                g.dirty
            } else {
                g.end <= watermark
            };
            if !ready {
                continue;
            }
            g.handed = true;
            g.dirty = false;
            let (key, start, end) = (g.key, g.start, g.end);
            let accs = self
                .store
                .accs_mut(i)
                .iter_mut()
                .zip(kinds.iter())
                .map(|(a, k)| std::mem::replace(a, Acc::new(*k)))
                .collect();
            out.push(Partial {
                key: self.store.key_bytes[key as usize].clone(),
                start,
                end,
                accs,
            });
        }
        for i in self.store.ended(watermark.saturating_sub(self.lateness)) {
            if self.store.groups[i as usize]
                .as_ref()
                .is_some_and(|g| g.handed && !g.dirty)
            {
                self.store.take(i);
            }
        }
        out
    }

    /// Open (key, window) groups, and sessions kept for their lateness.
    pub fn open_groups(&self) -> usize {
        self.store.len()
    }

    /// Rows found late so far.
    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }

    /// The stage's state as a value (between batches).
    pub fn snapshot(&self) -> PartitionState {
        PartitionState {
            store: self.store.snapshot(),
            late_rows: self.late_rows,
            pending: self.pending.clone(),
        }
    }

    /// A stage that goes on from `state` exactly as the one it was taken from;
    /// `spec`, `kinds` and the lateness are the query's. Fails when the state does not
    /// fit them (say, from a query that has other aggregates).
    pub fn restore(
        spec: WindowSpec,
        kinds: Arc<[AggKind]>,
        allowed_lateness_ms: i64,
        state: PartitionState,
    ) -> Result<Self, String> {
        let mut p = Self::new(spec, kinds.clone(), allowed_lateness_ms);
        p.store = GroupStore::restore(kinds, p.store.session, state.store)?;
        if let Some(bad) = state
            .pending
            .iter()
            .find(|&&i| p.store.groups.get(i as usize).is_none_or(Option::is_none))
        {
            return Err(format!("pending session slot {bad} holds no group"));
        }
        p.late_rows = state.late_rows;
        p.pending = state.pending;
        Ok(p)
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

/// An identity whose row is to be deleted at the sinks: the window's key and the start
/// it was shown under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retraction {
    pub key: Box<[u8]>,
    pub start: i64,
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

    /// Merges the partial states of partition `partition` in (for session windows,
    /// whose first stage serves every partition, the caller's slot 0).
    pub fn merge(&mut self, partition: i32, partials: Vec<Partial>) {
        for p in partials {
            let k = self.store.key_id(&p.key);
            let i = if self.store.session {
                self.store.session(k, p.start, p.end, Some(&p.accs))
            } else {
                let i = self.store.fixed(k, p.start, p.end);
                for (a, b) in self.store.accs_mut(i).iter_mut().zip(&p.accs) {
                    a.merge(b);
                }
                self.store.group_mut(i).dirty = true;
                i
            };
            let g = self.store.group_mut(i);
            g.origin = g.origin.join(Origin::One(partition));
        }
    }

    /// Takes out the windows whose partials came from `partition` alone, as a state
    /// [`FinalWindows::adopt`] puts into another runtime's final stage (slots
    /// renumbered from 0, in their order here). Fails, changing nothing, when a
    /// window took partials from several partitions (or its origin is not known), or
    /// for session windows, whose first stage serves every partition.
    pub fn release(&mut self, partition: i32) -> Result<FinalState, String> {
        self.check_release(partition)?;
        let slots: Vec<u32> = (0..self.store.groups.len() as u32)
            .filter(|&i| {
                self.store.groups[i as usize]
                    .as_ref()
                    .is_some_and(|g| g.origin == Origin::One(partition))
            })
            .collect();
        let groups = slots
            .into_iter()
            .enumerate()
            .map(|(n, i)| {
                let (g, accs, key) = self.store.take(i);
                GroupState {
                    slot: n as u32,
                    key,
                    start: g.start,
                    end: g.end,
                    dirty: g.dirty,
                    handed: g.handed,
                    shown: g.shown,
                    origin: g.origin,
                    accs,
                }
            })
            .collect::<Vec<_>>();
        Ok(FinalState {
            store: StoreState {
                slots: groups.len() as u32,
                groups,
                free: Vec::new(),
                sessions: Vec::new(),
            },
        })
    }

    /// Whether [`FinalWindows::release`] would succeed; the error says why not.
    pub fn check_release(&self, partition: i32) -> Result<(), String> {
        if self.store.session {
            return Err(format!(
                "session windows cannot move partition {partition} between processors: \
                 one first stage serves every partition"
            ));
        }
        if self
            .store
            .groups
            .iter()
            .flatten()
            .any(|g| g.origin == Origin::Many)
        {
            return Err(
                "a window holds partials of several partitions (its group keys \
                        span partitions)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Puts windows another runtime released ([`FinalWindows::release`]) into this
    /// final stage, in their slot order. A window this stage already holds for the
    /// same key and start takes the other's partials in.
    pub fn adopt(&mut self, state: FinalState) -> Result<(), String> {
        if self.store.session {
            return Err("session windows cannot move between processors".into());
        }
        let n = self.store.kinds.len();
        let mut groups = state.store.groups;
        groups.sort_by_key(|g| g.slot);
        for g in groups {
            if g.accs.len() != n {
                return Err(format!(
                    "a group has {} accumulators, the query {n}",
                    g.accs.len()
                ));
            }
            let k = self.store.key_id(&g.key);
            let held = self.store.fixed.contains_key(&(k, g.start));
            let i = self.store.fixed(k, g.start, g.end);
            for (a, b) in self.store.accs_mut(i).iter_mut().zip(&g.accs) {
                a.merge(b);
            }
            let to = self.store.group_mut(i);
            if held {
                to.dirty |= g.dirty;
                to.handed |= g.handed;
                to.shown.extend(g.shown);
                to.origin = to.origin.join(g.origin);
            } else {
                to.dirty = g.dirty;
                to.handed = g.handed;
                to.shown = g.shown;
                to.origin = g.origin;
            }
        }
        Ok(())
    }

    /// Emits every window that ended at or before `watermark` and changed since it
    /// was last emitted, then drops windows past their allowed lateness. `shown` is
    /// told the emitted rows and answers, for each, whether it is shown (passes the
    /// query's `HAVING`); identities that stop being shown come back as retractions
    /// (see the module docs). When `shown` fails, nothing changes: the same windows
    /// are emitted at the next call.
    pub fn emit<E>(
        &mut self,
        watermark: i64,
        shown: impl FnOnce(&[Emitted]) -> Result<Vec<bool>, E>,
    ) -> Result<(Vec<Emitted>, Vec<Retraction>), E> {
        let kinds = self.store.kinds.clone();
        let mut out = Vec::new();
        let mut slots = Vec::new();
        for i in self.store.ended(watermark) {
            let n = kinds.len();
            let g = self.store.groups[i as usize].as_mut().expect("live group");
            if g.dirty {
                g.dirty = false;
                let values = self.store.accs[i as usize * n..(i as usize + 1) * n]
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
                slots.push(i);
            }
        }
        let visible = if out.is_empty() {
            Vec::new()
        } else {
            match shown(&out) {
                Ok(v) => v,
                Err(e) => {
                    for &i in &slots {
                        self.store.group_mut(i).dirty = true;
                    }
                    return Err(e);
                }
            }
        };
        let mut retracted = Vec::new();
        // A missing answer counts as not shown.
        let visible = visible.into_iter().chain(std::iter::repeat(false));
        for ((e, &i), now) in out.iter().zip(&slots).zip(visible) {
            let g = self.store.group_mut(i);
            let mut before = std::mem::take(&mut g.shown);
            before.sort_unstable();
            before.dedup();
            for start in before {
                if start != e.start || !now {
                    retracted.push(Retraction {
                        key: e.key.clone(),
                        start,
                    });
                }
            }
            if now {
                g.shown.push(e.start);
            }
        }
        for i in self.store.ended(watermark.saturating_sub(self.lateness)) {
            if self.store.groups[i as usize]
                .as_ref()
                .is_some_and(|g| !g.dirty)
            {
                self.store.take(i);
            }
        }
        Ok((out, retracted))
    }

    /// Windows held (open or within lateness).
    pub fn groups(&self) -> usize {
        self.store.len()
    }

    /// The stage's state as a value (between batches).
    pub fn snapshot(&self) -> FinalState {
        FinalState {
            store: self.store.snapshot(),
        }
    }

    /// A stage that goes on from `state` exactly as the one it was taken from.
    pub fn restore(
        spec: WindowSpec,
        kinds: Arc<[AggKind]>,
        allowed_lateness_ms: i64,
        state: FinalState,
    ) -> Result<Self, String> {
        let mut f = Self::new(spec, kinds.clone(), allowed_lateness_ms);
        f.store = GroupStore::restore(kinds, f.store.session, state.store)?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests;
