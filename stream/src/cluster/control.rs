//! The control-log state machine: membership, failures and partition ownership folded
//! from one log that every processor appends to and reads (see the [module
//! docs](super) for the protocol). Pure: [`ControlState::apply`] takes a record and its
//! offset and returns [`Event`]s; nothing here reads a clock or does I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::assignor::{self, Assignment, Load, Loads, Members, PartitionId, DEFAULT_CAPACITY};

fn default_dead_after() -> u32 {
    5
}

fn default_rebalance_every() -> u32 {
    10
}

fn default_tolerance() -> f64 {
    0.05
}

fn default_smoothing() -> f64 {
    0.3
}

fn default_capacity() -> f64 {
    DEFAULT_CAPACITY
}

fn default_min_load() -> f64 {
    1.0
}

/// The parameters of the fold. Every processor must use the same values (they are
/// part of the function that folds the log).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// A member is dead once one other live member has appended this many heartbeats
    /// since its last one (or its join). Detection takes about this many heartbeat
    /// intervals, whatever the number of members: the default 5 with a 100 ms interval
    /// is about half a second. Every member must heartbeat at the same interval; at
    /// least 2, so that one late heartbeat is not a death.
    #[serde(default = "default_dead_after")]
    pub dead_after_heartbeats: u32,
    /// The load is re-evaluated every this many heartbeats (at least 1).
    #[serde(default = "default_rebalance_every")]
    pub rebalance_every: u32,
    /// The assignment is recomputed when `Δ` exceeds this (0 to 1).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Weight of a new load sample in the moving average (above 0, at most 1).
    #[serde(default = "default_smoothing")]
    pub load_smoothing: f64,
    /// Loads below this (in the loads' unit, rows per second) are noise: for balance a
    /// partition's load counts as at least this, and while every partition is below it
    /// the cluster is idle and load drift moves nothing. Without it, when the input
    /// stops, the residual rates of the partitions (each falling to zero at its own
    /// moment) would look like an imbalance and move partitions for nothing.
    #[serde(default = "default_min_load")]
    pub min_load: f64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            dead_after_heartbeats: default_dead_after(),
            rebalance_every: default_rebalance_every(),
            tolerance: default_tolerance(),
            load_smoothing: default_smoothing(),
            min_load: default_min_load(),
        }
    }
}

impl ControlConfig {
    /// Reports every invalid value at once.
    pub fn validate(&self) -> crate::Result<()> {
        let mut problems = Vec::new();
        if self.dead_after_heartbeats < 2 {
            problems.push(format!(
                "dead_after_heartbeats = {} must be at least 2 (e.g. 5)",
                self.dead_after_heartbeats
            ));
        }
        if self.rebalance_every == 0 {
            problems.push("rebalance_every must be at least 1".to_string());
        }
        if !(0.0..=1.0).contains(&self.tolerance) {
            problems.push(format!(
                "tolerance = {} must be between 0 and 1 (e.g. 0.05)",
                self.tolerance
            ));
        }
        if !(self.load_smoothing > 0.0 && self.load_smoothing <= 1.0) {
            problems.push(format!(
                "load_smoothing = {} must be above 0 and at most 1 (e.g. 0.3)",
                self.load_smoothing
            ));
        }
        if !(self.min_load.is_finite() && self.min_load >= 0.0) {
            problems.push(format!(
                "min_load = {} must be a number of 0 or more (rows per second, e.g. 1.0)",
                self.min_load
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::Config(format!(
                "cluster: {}",
                problems.join("; ")
            )))
        }
    }
}

/// One partition's measured load in a heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub partition: PartitionId,
    pub load: f64,
    #[serde(default)]
    pub state_bytes: u64,
}

/// A record of the control log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A member starts, with an incarnation above every one it used before.
    Join {
        member: String,
        incarnation: u64,
        #[serde(default = "default_capacity")]
        capacity: f64,
    },
    /// A member is alive. `seq` grows with every heartbeat of an incarnation (from 1);
    /// `loads` are the partitions it owns; `checkpoint_epoch` its last complete one.
    Heartbeat {
        member: String,
        incarnation: u64,
        seq: u64,
        #[serde(default)]
        loads: Vec<LoadReport>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkpoint_epoch: Option<u64>,
    },
    /// A member stops; its partitions are free (their state is in its last checkpoint).
    Leave { member: String, incarnation: u64 },
    /// A member asked to release a partition wrote its checkpoint `checkpoint_epoch`
    /// and stopped processing it; `generation` is the one it owned it with.
    Released {
        member: String,
        incarnation: u64,
        partition: PartitionId,
        generation: u64,
        checkpoint_epoch: u64,
    },
}

impl Record {
    pub fn member(&self) -> &str {
        match self {
            Record::Join { member, .. }
            | Record::Heartbeat { member, .. }
            | Record::Leave { member, .. }
            | Record::Released { member, .. } => member,
        }
    }

    pub fn incarnation(&self) -> u64 {
        match self {
            Record::Join { incarnation, .. }
            | Record::Heartbeat { incarnation, .. }
            | Record::Leave { incarnation, .. }
            | Record::Released { incarnation, .. } => *incarnation,
        }
    }
}

/// What folding one record decided. A processor acts on the events that name it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Joined {
        member: String,
        incarnation: u64,
    },
    Left {
        member: String,
        incarnation: u64,
    },
    /// The incarnation was declared dead (or replaced by a newer one): it must stop
    /// at once and write nothing more.
    Fenced {
        member: String,
        incarnation: u64,
    },
    /// A new target assignment.
    Rebalanced {
        generation: u64,
        delta: f64,
        moves: usize,
    },
    /// The owner must checkpoint the partition, stop processing it and append
    /// [`Record::Released`] with this generation.
    Release {
        member: String,
        partition: PartitionId,
        generation: u64,
    },
    /// A release was accepted.
    Released {
        member: String,
        partition: PartitionId,
        checkpoint_epoch: u64,
    },
    /// The member owns the partition from now on, with this generation. It starts
    /// from the released checkpoint epoch, or (`None`) from the last complete one.
    Acquire {
        member: String,
        partition: PartitionId,
        generation: u64,
        from_release: Option<u64>,
    },
}

/// What a member must be doing for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Duty {
    /// Process it, writing with `generation`; start from the released checkpoint epoch,
    /// or (`None`) from the last complete checkpoint.
    Own {
        partition: PartitionId,
        generation: u64,
        from_release: Option<u64>,
    },
    /// Checkpoint it, stop processing it, append `Released` with `generation`.
    Release {
        partition: PartitionId,
        generation: u64,
    },
}

/// A member as the log knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberState {
    pub incarnation: u64,
    pub capacity: f64,
    /// False once it left, died or was replaced by a newer incarnation.
    pub live: bool,
    /// For each other live member, its heartbeats since this member's last heartbeat
    /// (or join). Empty once not live.
    pub missed: BTreeMap<String, u32>,
    /// The `seq` of its last accepted heartbeat.
    pub last_seq: u64,
    /// The newest complete checkpoint epoch it reported.
    pub checkpoint_epoch: Option<u64>,
}

/// The current owner of a partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holding {
    pub member: String,
    /// The generation it acquired the partition with.
    pub generation: u64,
    /// Asked to release (the target names another member, or did when asked).
    pub releasing: bool,
    pub from_release: Option<u64>,
}

/// Maps with non-string keys are written as lists of pairs (JSON objects need string
/// keys).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S, K, V>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// The fold of the control log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    config: ControlConfig,
    partitions: BTreeSet<PartitionId>,
    /// Records at lower offsets are already folded.
    next_offset: u64,
    generation: u64,
    members: BTreeMap<String, MemberState>,
    #[serde(with = "pairs")]
    target: Assignment,
    #[serde(with = "pairs")]
    holdings: BTreeMap<PartitionId, Holding>,
    /// Smoothed measured loads.
    #[serde(with = "pairs")]
    loads: Loads,
    beats_since_eval: u32,
}

fn clean_load(l: f64) -> f64 {
    if l.is_finite() && l > 0.0 {
        l
    } else {
        0.0
    }
}

impl ControlState {
    /// An empty fold over `partitions` (the same set on every processor).
    pub fn new(
        config: ControlConfig,
        partitions: impl IntoIterator<Item = PartitionId>,
    ) -> crate::Result<Self> {
        config.validate()?;
        Ok(ControlState {
            config,
            partitions: partitions.into_iter().collect(),
            next_offset: 0,
            generation: 0,
            members: BTreeMap::new(),
            target: Assignment::new(),
            holdings: BTreeMap::new(),
            loads: Loads::new(),
            beats_since_eval: 0,
        })
    }

    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    pub fn partitions(&self) -> &BTreeSet<PartitionId> {
        &self.partitions
    }

    /// The offset of the next record to fold.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The generation of the current target (0 before the first join).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every member seen, live or not.
    pub fn members(&self) -> &BTreeMap<String, MemberState> {
        &self.members
    }

    /// Whether this incarnation of the member is live (may act).
    pub fn is_live(&self, member: &str, incarnation: u64) -> bool {
        self.members
            .get(member)
            .is_some_and(|m| m.live && m.incarnation == incarnation)
    }

    /// Where every partition should be.
    pub fn target(&self) -> &Assignment {
        &self.target
    }

    /// Who owns every partition now (a partition moving is owned by the old owner
    /// until its release is folded).
    pub fn holdings(&self) -> &BTreeMap<PartitionId, Holding> {
        &self.holdings
    }

    /// The loads the assignor uses: smoothed measurements, and for a partition never
    /// measured the mean of the measured ones.
    pub fn loads(&self) -> Loads {
        let measured: Vec<f64> = self
            .partitions
            .iter()
            .filter_map(|p| self.loads.get(p))
            .map(|l| l.load)
            .collect();
        let mean = if measured.is_empty() {
            0.0
        } else {
            measured.iter().sum::<f64>() / measured.len() as f64
        };
        self.partitions
            .iter()
            .map(|p| {
                let l = self.loads.get(p).copied().unwrap_or(Load {
                    load: mean,
                    state_bytes: 0,
                });
                (p.clone(), l)
            })
            .collect()
    }

    /// The loads balance is computed on: [`ControlState::loads`], each at least
    /// `min_load`.
    fn balance_loads(&self) -> Loads {
        let floor = self.config.min_load;
        let mut loads = self.loads();
        for l in loads.values_mut() {
            l.load = l.load.max(floor);
        }
        loads
    }

    /// Every partition's load is below `min_load`: nothing flows, nothing to balance.
    pub fn idle(&self) -> bool {
        self.loads().values().all(|l| l.load < self.config.min_load)
    }

    fn live_members(&self) -> Members {
        self.members
            .iter()
            .filter(|(_, m)| m.live)
            .map(|(id, m)| (id.clone(), m.capacity))
            .collect()
    }

    /// `Δ` of the target with the current loads (each at least `min_load`).
    pub fn delta(&self) -> f64 {
        assignor::delta(&self.target, &self.balance_loads(), &self.live_members())
    }

    /// What the member (its live incarnation) must be doing, in partition order.
    pub fn duties(&self, member: &str) -> Vec<Duty> {
        self.holdings
            .iter()
            .filter(|(_, h)| h.member == member)
            .map(|(p, h)| {
                if h.releasing {
                    Duty::Release {
                        partition: p.clone(),
                        generation: h.generation,
                    }
                } else {
                    Duty::Own {
                        partition: p.clone(),
                        generation: h.generation,
                        from_release: h.from_release,
                    }
                }
            })
            .collect()
    }

    /// The state as a value, to be stored with the offset it reached
    /// ([`Self::next_offset`]) so that the log before it can be compacted.
    pub fn snapshot(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }

    /// The state from [`Self::snapshot`]; folding on from it gives what folding the
    /// whole log gives.
    pub fn restore(value: serde_json::Value) -> serde_json::Result<Self> {
        serde_json::from_value(value)
    }

    /// Folds the record at `offset`. Offsets must grow; a record below
    /// [`Self::next_offset`] was already folded and changes nothing.
    pub fn apply(&mut self, offset: u64, record: &Record) -> Vec<Event> {
        let mut events = Vec::new();
        if offset < self.next_offset {
            return events;
        }
        self.next_offset = offset + 1;
        match record {
            Record::Join {
                member,
                incarnation,
                capacity,
            } => self.join(member, *incarnation, *capacity, &mut events),
            Record::Heartbeat {
                member,
                incarnation,
                seq,
                loads,
                checkpoint_epoch,
            } => {
                if self.is_live(member, *incarnation) {
                    self.heartbeat(member, *seq, loads, *checkpoint_epoch, &mut events);
                }
            }
            Record::Leave {
                member,
                incarnation,
            } => {
                if self.is_live(member, *incarnation) {
                    self.end(member, false, &mut events);
                    self.rebalance(true, &mut events);
                }
            }
            Record::Released {
                member,
                incarnation,
                partition,
                generation,
                checkpoint_epoch,
            } => {
                if self.is_live(member, *incarnation) {
                    self.released(
                        member,
                        partition,
                        *generation,
                        *checkpoint_epoch,
                        &mut events,
                    );
                }
            }
        }
        events
    }

    fn join(&mut self, member: &str, incarnation: u64, capacity: f64, events: &mut Vec<Event>) {
        if let Some(m) = self.members.get(member) {
            if incarnation <= m.incarnation {
                return;
            }
            if m.live {
                self.end(member, true, events);
            }
        }
        let capacity = if capacity.is_finite() && capacity > 0.0 {
            capacity
        } else {
            DEFAULT_CAPACITY
        };
        self.members.insert(
            member.to_string(),
            MemberState {
                incarnation,
                capacity,
                live: true,
                missed: BTreeMap::new(),
                last_seq: 0,
                checkpoint_epoch: None,
            },
        );
        events.push(Event::Joined {
            member: member.to_string(),
            incarnation,
        });
        self.rebalance(true, events);
    }

    fn heartbeat(
        &mut self,
        member: &str,
        seq: u64,
        loads: &[LoadReport],
        checkpoint_epoch: Option<u64>,
        events: &mut Vec<Event>,
    ) {
        let Some(m) = self.members.get_mut(member) else {
            return;
        };
        if seq <= m.last_seq {
            // A duplicate (or reordered) heartbeat.
            return;
        }
        m.last_seq = seq;
        m.missed.clear();
        if let Some(e) = checkpoint_epoch {
            m.checkpoint_epoch = Some(m.checkpoint_epoch.map_or(e, |old| old.max(e)));
        }
        let a = self.config.load_smoothing;
        for r in loads {
            let owned = self
                .holdings
                .get(&r.partition)
                .is_some_and(|h| h.member == member);
            if !owned {
                continue;
            }
            let sample = clean_load(r.load);
            self.loads
                .entry(r.partition.clone())
                .and_modify(|l| {
                    l.load = a * sample + (1.0 - a) * l.load;
                    l.state_bytes = r.state_bytes;
                })
                .or_insert(Load {
                    load: sample,
                    state_bytes: r.state_bytes,
                });
        }
        let k = self.config.dead_after_heartbeats;
        let mut dead = Vec::new();
        for (id, m) in self.members.iter_mut() {
            if m.live && id != member {
                let n = m.missed.entry(member.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                if *n >= k {
                    dead.push(id.clone());
                }
            }
        }
        if !dead.is_empty() {
            for id in &dead {
                self.end(id, true, events);
            }
            self.rebalance(true, events);
            return;
        }
        self.beats_since_eval += 1;
        if self.beats_since_eval >= self.config.rebalance_every {
            self.beats_since_eval = 0;
            if !self.idle() && self.delta() > self.config.tolerance {
                self.rebalance(false, events);
            }
        }
    }

    fn released(
        &mut self,
        member: &str,
        partition: &PartitionId,
        generation: u64,
        checkpoint_epoch: u64,
        events: &mut Vec<Event>,
    ) {
        let asked = self
            .holdings
            .get(partition)
            .is_some_and(|h| h.member == member && h.generation == generation && h.releasing);
        if !asked {
            return;
        }
        self.holdings.remove(partition);
        events.push(Event::Released {
            member: member.to_string(),
            partition: partition.clone(),
            checkpoint_epoch,
        });
        self.grant(partition, Some(checkpoint_epoch), events);
    }

    /// Ends the member's live incarnation and frees its partitions. Its heartbeats no
    /// longer count against the others.
    fn end(&mut self, member: &str, fenced: bool, events: &mut Vec<Event>) {
        let Some(m) = self.members.get_mut(member) else {
            return;
        };
        if !m.live {
            return;
        }
        m.live = false;
        m.missed.clear();
        let incarnation = m.incarnation;
        for other in self.members.values_mut() {
            other.missed.remove(member);
        }
        let ev = if fenced {
            Event::Fenced {
                member: member.to_string(),
                incarnation,
            }
        } else {
            Event::Left {
                member: member.to_string(),
                incarnation,
            }
        };
        events.push(ev);
        self.holdings.retain(|_, h| h.member != member);
    }

    /// Computes a new target. After a membership change the generation always grows;
    /// after load drift only when the target changes and lowers `Δ` by more than half
    /// the tolerance, and the assignor aims at half the tolerance so that the next
    /// evaluation does not trigger again at once.
    fn rebalance(&mut self, membership: bool, events: &mut Vec<Event>) {
        let members = self.live_members();
        let loads = self.balance_loads();
        let tolerance = if membership {
            self.config.tolerance
        } else {
            self.config.tolerance / 2.0
        };
        let out = assignor::assign(&members, &loads, &self.target, tolerance);
        // After load drift, partitions move only for a clear gain: by more than half the
        // tolerance. Otherwise, where no assignment reaches the tolerance (a heavy
        // partition sets a floor), measurement noise would make one assignment and then
        // another look better, and partitions would bounce between members.
        if !membership
            && (out.assignment == self.target
                || out.delta > self.delta() - self.config.tolerance / 2.0)
        {
            return;
        }
        self.generation += 1;
        self.beats_since_eval = 0;
        self.target = out.assignment;
        events.push(Event::Rebalanced {
            generation: self.generation,
            delta: out.delta,
            moves: out.moves.len(),
        });
        let partitions: Vec<PartitionId> = self.partitions.iter().cloned().collect();
        for p in partitions {
            match self.holdings.get_mut(&p) {
                Some(h) => {
                    if !h.releasing && self.target.get(&p) != Some(&h.member) {
                        h.releasing = true;
                        events.push(Event::Release {
                            member: h.member.clone(),
                            partition: p.clone(),
                            generation: h.generation,
                        });
                    }
                }
                None => self.grant(&p, None, events),
            }
        }
    }

    /// Gives a free partition to its target owner with the current generation.
    fn grant(
        &mut self,
        partition: &PartitionId,
        from_release: Option<u64>,
        events: &mut Vec<Event>,
    ) {
        let Some(to) = self.target.get(partition) else {
            return;
        };
        self.holdings.insert(
            partition.clone(),
            Holding {
                member: to.clone(),
                generation: self.generation,
                releasing: false,
                from_release,
            },
        );
        events.push(Event::Acquire {
            member: to.clone(),
            partition: partition.clone(),
            generation: self.generation,
            from_release,
        });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MEMBERS: usize = 4;

    fn name(m: usize) -> String {
        format!("m{m}")
    }

    fn parts(n: usize) -> Vec<PartitionId> {
        (0..n)
            .map(|i| PartitionId::new(format!("t{}", i % 2), (i / 2) as i32))
            .collect()
    }

    #[derive(Clone, Debug)]
    enum Op {
        Join {
            m: usize,
            big: bool,
        },
        Beat {
            m: usize,
            seed: u8,
        },
        Leave {
            m: usize,
        },
        /// The member releases everything it is asked to release.
        Release {
            m: usize,
        },
        /// The record this many places from the end, appended again.
        Duplicate {
            back: usize,
        },
        /// A record of an earlier incarnation of the member.
        Stale {
            m: usize,
            kind: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let m = 0..MEMBERS;
        prop_oneof![
            2 => (m.clone(), any::<bool>()).prop_map(|(m, big)| Op::Join { m, big }),
            8 => (m.clone(), any::<u8>()).prop_map(|(m, seed)| Op::Beat { m, seed }),
            1 => m.clone().prop_map(|m| Op::Leave { m }),
            3 => m.clone().prop_map(|m| Op::Release { m }),
            1 => (0usize..20).prop_map(|back| Op::Duplicate { back }),
            1 => (m, 0u8..4).prop_map(|(m, kind)| Op::Stale { m, kind }),
        ]
    }

    fn config() -> impl Strategy<Value = ControlConfig> {
        (
            2u32..8,
            1u32..5,
            prop_oneof![Just(0.0), Just(0.05), Just(0.2)],
            prop_oneof![Just(0.0), Just(1.0), Just(50.0)],
        )
            .prop_map(|(k, every, tolerance, min_load)| ControlConfig {
                dead_after_heartbeats: k,
                rebalance_every: every,
                tolerance,
                load_smoothing: 0.5,
                min_load,
            })
    }

    /// Writes the log a set of well-behaved processors (and some misbehaving
    /// duplicates and stale ones) would write, each acting on its own fold.
    struct Driver {
        st: ControlState,
        log: Vec<Record>,
        /// Member → incarnations used, newest last.
        incs: BTreeMap<usize, Vec<u64>>,
        seqs: BTreeMap<(usize, u64), u64>,
    }

    impl Driver {
        fn new(cfg: ControlConfig, parts: &[PartitionId]) -> Self {
            Driver {
                st: ControlState::new(cfg, parts.iter().cloned()).expect("valid config"),
                log: Vec::new(),
                incs: BTreeMap::new(),
                seqs: BTreeMap::new(),
            }
        }

        fn push(&mut self, r: Record) {
            self.st.apply(self.log.len() as u64, &r);
            self.log.push(r);
        }

        fn current(&self, m: usize) -> Option<u64> {
            self.incs.get(&m).and_then(|v| v.last()).copied()
        }

        fn beat(&mut self, m: usize, inc: u64, seed: Option<u8>) {
            let seq = self.seqs.entry((m, inc)).or_insert(0);
            *seq += 1;
            let seq = *seq;
            let owned = match seed {
                Some(_) => self.st.duties(&name(m)),
                None => Vec::new(),
            };
            let seed = seed.unwrap_or(0);
            let loads = owned
                .into_iter()
                .map(|d| match d {
                    Duty::Own { partition, .. } | Duty::Release { partition, .. } => partition,
                })
                .map(|p| {
                    let load =
                        ((seed as u64 * 7919 + p.partition as u64 * 104_729 + p.topic.len() as u64)
                            % 100) as f64;
                    LoadReport {
                        partition: p,
                        load,
                        state_bytes: 100,
                    }
                })
                .collect();
            self.push(Record::Heartbeat {
                member: name(m),
                incarnation: inc,
                seq,
                loads,
                checkpoint_epoch: Some(self.log.len() as u64),
            });
        }

        fn release_all(&mut self, m: usize, inc: u64) {
            for d in self.st.duties(&name(m)) {
                if let Duty::Release {
                    partition,
                    generation,
                } = d
                {
                    let epoch = self.log.len() as u64;
                    self.push(Record::Released {
                        member: name(m),
                        incarnation: inc,
                        partition,
                        generation,
                        checkpoint_epoch: epoch,
                    });
                }
            }
        }

        fn run(&mut self, op: &Op) {
            match *op {
                Op::Join { m, big } => {
                    // The recommended incarnation: the log's end offset at start.
                    let inc = self.log.len() as u64 + 1;
                    self.incs.entry(m).or_default().push(inc);
                    self.push(Record::Join {
                        member: name(m),
                        incarnation: inc,
                        capacity: if big { 2.0 } else { 1.0 },
                    });
                }
                Op::Beat { m, seed } => {
                    if let Some(inc) = self.current(m) {
                        self.beat(m, inc, Some(seed));
                    }
                }
                Op::Leave { m } => {
                    if let Some(inc) = self.current(m) {
                        self.push(Record::Leave {
                            member: name(m),
                            incarnation: inc,
                        });
                    }
                }
                Op::Release { m } => {
                    if let Some(inc) = self.current(m) {
                        self.release_all(m, inc);
                    }
                }
                Op::Duplicate { back } => {
                    if !self.log.is_empty() {
                        let i = self.log.len() - 1 - back % self.log.len();
                        let r = self.log[i].clone();
                        self.push(r);
                    }
                }
                Op::Stale { m, kind } => {
                    let Some(incs) = self.incs.get(&m) else {
                        return;
                    };
                    let Some(&old) = incs.iter().rev().nth(1) else {
                        return;
                    };
                    let member = name(m);
                    let r = match kind {
                        0 => Record::Join {
                            member,
                            incarnation: old,
                            capacity: 1.0,
                        },
                        1 => Record::Heartbeat {
                            member,
                            incarnation: old,
                            seq: 1_000_000,
                            loads: Vec::new(),
                            checkpoint_epoch: None,
                        },
                        2 => Record::Leave {
                            member,
                            incarnation: old,
                        },
                        _ => {
                            // Tries to release something the new incarnation owns.
                            let Some((p, h)) =
                                self.st.holdings().iter().find(|(_, h)| h.member == member)
                            else {
                                return;
                            };
                            Record::Released {
                                member: member.clone(),
                                incarnation: old,
                                partition: p.clone(),
                                generation: h.generation,
                                checkpoint_epoch: 0,
                            }
                        }
                    };
                    self.push(r);
                }
            }
        }

        fn settled(&self) -> bool {
            let any_live = self.st.members().values().any(|m| m.live);
            !any_live
                || self.st.partitions().iter().all(|p| {
                    self.st
                        .holdings()
                        .get(p)
                        .is_some_and(|h| !h.releasing && self.st.target().get(p) == Some(&h.member))
                })
        }

        /// The log quiets down: every live member releases what it is asked to and
        /// heartbeats (with no new load), round after round.
        fn settle(&mut self) {
            for _ in 0..40 {
                if self.settled() {
                    return;
                }
                let live: Vec<(usize, u64)> = (0..MEMBERS)
                    .filter_map(|m| self.current(m).map(|i| (m, i)))
                    .filter(|(m, i)| self.st.is_live(&name(*m), *i))
                    .collect();
                for (m, inc) in live {
                    self.release_all(m, inc);
                    self.beat(m, inc, None);
                }
            }
        }
    }

    /// Liveness by rescanning the log: the live incarnation of each member, computed
    /// from the positions of accepted heartbeats rather than from counters. A member
    /// is dead once one other live incarnation has `k` accepted heartbeats after the
    /// member's last join or heartbeat.
    fn model_live(log: &[Record], k: u32) -> BTreeMap<String, u64> {
        let mut known: BTreeMap<String, u64> = BTreeMap::new();
        // Member → (incarnation, position of its last join or heartbeat, last seq).
        let mut live: BTreeMap<String, (u64, usize, u64)> = BTreeMap::new();
        // Accepted heartbeats: (position, member, incarnation).
        let mut beats: Vec<(usize, String, u64)> = Vec::new();
        for (i, r) in log.iter().enumerate() {
            let m = r.member().to_string();
            let inc = r.incarnation();
            let is_live = live.get(&m).is_some_and(|l| l.0 == inc);
            match r {
                Record::Join { .. } => {
                    if known.get(&m).is_none_or(|old| inc > *old) {
                        known.insert(m.clone(), inc);
                        live.insert(m, (inc, i, 0));
                    }
                }
                Record::Heartbeat { seq, .. } => {
                    if !is_live || live.get(&m).is_some_and(|l| *seq <= l.2) {
                        continue;
                    }
                    live.insert(m.clone(), (inc, i, *seq));
                    beats.push((i, m.clone(), inc));
                    let dead: Vec<String> = live
                        .iter()
                        .filter(|(x, (_, since, _))| {
                            live.iter().any(|(y, (y_inc, _, _))| {
                                let n = beats
                                    .iter()
                                    .filter(|(pos, by, by_inc)| {
                                        pos > since && by == y && by_inc == y_inc
                                    })
                                    .count();
                                y != *x && n >= k as usize
                            })
                        })
                        .map(|(x, _)| x.clone())
                        .collect();
                    for x in dead {
                        live.remove(&x);
                    }
                }
                Record::Leave { .. } => {
                    if is_live {
                        live.remove(&m);
                    }
                }
                Record::Released { .. } => {}
            }
        }
        live.into_iter().map(|(m, (inc, _, _))| (m, inc)).collect()
    }

    fn live_of(st: &ControlState) -> BTreeMap<String, u64> {
        st.members()
            .iter()
            .filter(|(_, m)| m.live)
            .map(|(id, m)| (id.clone(), m.incarnation))
            .collect()
    }

    /// Folds the log checking, after every record: liveness against the model;
    /// ownership changes only through a release or the end of the owner; generations
    /// grow per partition; stale and duplicate records change nothing.
    fn fold_checked(
        cfg: &ControlConfig,
        parts: &[PartitionId],
        log: &[Record],
    ) -> Result<(ControlState, Vec<Vec<Event>>), TestCaseError> {
        let mut st = ControlState::new(cfg.clone(), parts.iter().cloned()).expect("valid config");
        let mut all = Vec::new();
        // Partition → (owner, generation), from the events alone.
        let mut owner: BTreeMap<PartitionId, (String, u64)> = BTreeMap::new();
        let mut last_gen: BTreeMap<PartitionId, u64> = BTreeMap::new();
        for (i, r) in log.iter().enumerate() {
            let before = st.clone();
            let events = st.apply(i as u64, r);
            let inert = log[..i].contains(r)
                || (!matches!(r, Record::Join { .. })
                    && !before.is_live(r.member(), r.incarnation()))
                || before
                    .members()
                    .get(r.member())
                    .is_some_and(|m| r.incarnation() < m.incarnation);
            if inert {
                let mut same = before.clone();
                same.next_offset = st.next_offset;
                prop_assert_eq!(&same, &st, "record {} {:?} changed the state", i, r);
                prop_assert!(events.is_empty());
            }
            prop_assert_eq!(
                live_of(&st),
                model_live(&log[..=i], cfg.dead_after_heartbeats),
                "liveness after record {}",
                i
            );
            for e in &events {
                match e {
                    Event::Acquire {
                        member,
                        partition,
                        generation,
                        ..
                    } => {
                        prop_assert!(
                            !owner.contains_key(partition),
                            "{} acquired {} while {:?} still owns it",
                            member,
                            partition,
                            owner.get(partition)
                        );
                        if let Some(g) = last_gen.get(partition) {
                            prop_assert!(generation > g, "generation of {} went back", partition);
                        }
                        prop_assert!(live_of(&st).contains_key(member));
                        last_gen.insert(partition.clone(), *generation);
                        owner.insert(partition.clone(), (member.clone(), *generation));
                    }
                    Event::Released {
                        member, partition, ..
                    } => {
                        let Record::Released {
                            member: rm,
                            partition: rp,
                            ..
                        } = r
                        else {
                            return Err(TestCaseError::fail("a release without a record"));
                        };
                        prop_assert_eq!(rm, member);
                        prop_assert_eq!(rp, partition);
                        prop_assert_eq!(owner.remove(partition).map(|o| o.0), Some(member.clone()));
                    }
                    Event::Fenced { member, .. } | Event::Left { member, .. } => {
                        owner.retain(|_, (m, _)| m != member);
                    }
                    _ => {}
                }
            }
            let holders: BTreeMap<PartitionId, (String, u64)> = st
                .holdings()
                .iter()
                .map(|(p, h)| (p.clone(), (h.member.clone(), h.generation)))
                .collect();
            prop_assert_eq!(&holders, &owner, "holdings after record {}", i);
            for h in st.holdings().values() {
                prop_assert!(st.members().get(&h.member).is_some_and(|m| m.live));
            }
            all.push(events);
        }
        Ok((st, all))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn folds_agree_own_safely_and_settle(
            cfg in config(),
            n_parts in 1usize..10,
            ops in proptest::collection::vec(op(), 1..60),
            cut in any::<prop::sample::Index>(),
        ) {
            let parts = parts(n_parts);
            let mut d = Driver::new(cfg.clone(), &parts);
            for op in &ops {
                d.run(op);
            }
            d.settle();
            let log = d.log.clone();

            let (st, events) = fold_checked(&cfg, &parts, &log)?;
            prop_assert_eq!(&st, &d.st);

            // A second fold that receives every record twice agrees.
            let mut again = ControlState::new(cfg.clone(), parts.iter().cloned()).expect("valid config");
            for (i, r) in log.iter().enumerate() {
                prop_assert_eq!(&again.apply(i as u64, r), &events[i]);
                prop_assert!(again.apply(i as u64, r).is_empty());
            }
            prop_assert_eq!(&again, &st);

            // Snapshot at any cut, through JSON text, then fold on.
            let c = cut.index(log.len() + 1);
            let mut head = ControlState::new(cfg.clone(), parts.iter().cloned()).expect("valid config");
            for (i, r) in log[..c].iter().enumerate() {
                head.apply(i as u64, r);
            }
            let text = serde_json::to_string(&head.snapshot().expect("snapshot")).expect("json");
            let value: serde_json::Value = serde_json::from_str(&text).expect("parse");
            let mut tail = ControlState::restore(value).expect("restore");
            prop_assert_eq!(&tail, &head);
            for (i, r) in log.iter().enumerate().skip(c) {
                prop_assert_eq!(&tail.apply(i as u64, r), &events[i]);
            }
            prop_assert_eq!(&tail, &st);

            // Once quiet, every partition is owned by a live member, as targeted.
            if st.members().values().any(|m| m.live) {
                for p in &parts {
                    let h = st.holdings().get(p);
                    prop_assert!(h.is_some_and(|h| !h.releasing), "{} not settled: {:?}", p, h);
                    prop_assert_eq!(h.map(|h| &h.member), st.target().get(p));
                }
            }
        }

        /// Three members; the third stops heartbeating. It is fenced exactly at the
        /// k-th heartbeat of one of the others, in whatever order they come, not at
        /// the k-th of them in total.
        #[test]
        fn a_silent_member_is_dead_after_exactly_k_heartbeats_of_one_other(
            k in 3u32..10, order in proptest::collection::vec(any::<bool>(), 0..30),
        ) {
            let cfg = ControlConfig { dead_after_heartbeats: k, ..ControlConfig::default() };
            let mut st = ControlState::new(cfg, parts(4)).expect("valid config");
            let mut log = vec![
                join("a", 1),
                join("b", 1),
                join("c", 1),
                beat("c", 1, 1),
            ];
            let (mut sa, mut sb) = (0, 0);
            let mut expected = None;
            // a and b both beat in every pair, so neither misses more than 2 in a row.
            for a_first in &order {
                let (first, second) = if *a_first { ("a", "b") } else { ("b", "a") };
                for who in [first, second] {
                    let seq = if who == "a" { sa += 1; sa } else { sb += 1; sb };
                    if seq == u64::from(k) && expected.is_none() {
                        expected = Some(log.len());
                    }
                    log.push(beat(who, 1, seq));
                }
            }
            let mut fenced_at = None;
            for (i, r) in log.iter().enumerate() {
                for e in st.apply(i as u64, r) {
                    if let Event::Fenced { member, .. } = e {
                        prop_assert_eq!(member.as_str(), "c");
                        prop_assert!(fenced_at.is_none());
                        fenced_at = Some(i);
                    }
                }
            }
            prop_assert_eq!(fenced_at, expected);
            if let Some(at) = fenced_at {
                // Between k and 2k − 1 heartbeats of the others in total.
                prop_assert!(at >= 3 + k as usize && at <= 2 + 2 * k as usize);
                prop_assert!(st.holdings().values().all(|h| h.member != "c"));
                prop_assert!(st.target().values().all(|m| m != "c"));
            } else {
                prop_assert!(st.is_live("c", 1));
            }
            prop_assert!(st.is_live("a", 1) && st.is_live("b", 1));
        }
    }

    /// Guards the property test against passing vacuously: its logs do reach releases,
    /// deaths, leaves, restores, drift rebalances and ignored records.
    #[test]
    fn generated_logs_exercise_every_path() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;

        let mut runner = TestRunner::deterministic();
        let strategy = (config(), 1usize..10, proptest::collection::vec(op(), 1..60));
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let (cfg, n, ops) = strategy.new_tree(&mut runner).expect("a case").current();
            let mut d = Driver::new(cfg.clone(), &parts(n));
            for op in &ops {
                d.run(op);
            }
            d.settle();
            let mut st = ControlState::new(cfg, parts(n)).expect("valid config");
            for (i, r) in d.log.iter().enumerate() {
                let before = st.clone();
                let events = st.apply(i as u64, r);
                if events.is_empty() && before.members() == st.members() {
                    seen.insert("ignored or quiet record");
                }
                let membership = events.iter().any(|e| {
                    matches!(
                        e,
                        Event::Joined { .. } | Event::Left { .. } | Event::Fenced { .. }
                    )
                });
                for e in &events {
                    seen.insert(match e {
                        Event::Joined { .. } => "joined",
                        Event::Left { .. } => "left",
                        Event::Fenced { .. } => "fenced",
                        Event::Rebalanced { .. } if !membership => "drift rebalance",
                        Event::Rebalanced { .. } => "membership rebalance",
                        Event::Release { .. } => "release asked",
                        Event::Released { .. } => "released",
                        Event::Acquire {
                            from_release: Some(_),
                            ..
                        } => "acquire after release",
                        Event::Acquire { .. } => "acquire and restore",
                    });
                }
            }
        }
        for what in [
            "ignored or quiet record",
            "joined",
            "left",
            "fenced",
            "drift rebalance",
            "membership rebalance",
            "release asked",
            "released",
            "acquire after release",
            "acquire and restore",
        ] {
            assert!(seen.contains(what), "no generated log had: {what}");
        }
    }

    fn join(m: &str, inc: u64) -> Record {
        Record::Join {
            member: m.into(),
            incarnation: inc,
            capacity: 1.0,
        }
    }

    fn beat(m: &str, inc: u64, seq: u64) -> Record {
        Record::Heartbeat {
            member: m.into(),
            incarnation: inc,
            seq,
            loads: vec![],
            checkpoint_epoch: None,
        }
    }

    /// Folds the records after the state's offset; returns the members fenced.
    fn fold(st: &mut ControlState, records: &[Record]) -> Vec<String> {
        let mut fenced = Vec::new();
        for r in records {
            for e in st.apply(st.next_offset(), r) {
                if let Event::Fenced { member, .. } = e {
                    fenced.push(member);
                }
            }
        }
        fenced
    }

    #[test]
    fn two_observers_beating_alternately_fence_at_the_kth_beat_of_one() {
        let k = 5;
        let cfg = ControlConfig {
            dead_after_heartbeats: k,
            ..ControlConfig::default()
        };
        let mut st = ControlState::new(cfg, parts(4)).expect("valid config");
        fold(&mut st, &[join("a", 1), join("b", 1), join("c", 1)]);
        // a and b alternate; c is silent. The k-th in total is not enough.
        for seq in 1..u64::from(k) {
            assert!(fold(&mut st, &[beat("a", 1, seq), beat("b", 1, seq)]).is_empty());
        }
        assert_eq!(st.members()["c"].missed["a"], k - 1);
        assert_eq!(st.members()["c"].missed["b"], k - 1);
        assert_eq!(st.members()["a"].missed["b"], 1);
        assert_eq!(fold(&mut st, &[beat("a", 1, u64::from(k))]), vec!["c"]);
        assert!(st.members()["c"].missed.is_empty());
        assert!(st.members()["a"].missed.is_empty());
        assert!(!st.members()["b"].missed.contains_key("c"));
        assert!(st.is_live("a", 1) && st.is_live("b", 1));
    }

    #[test]
    fn the_time_to_detect_does_not_shrink_with_more_members() {
        let k = 3;
        let cfg = ControlConfig {
            dead_after_heartbeats: k,
            ..ControlConfig::default()
        };
        let mut st = ControlState::new(cfg, parts(4)).expect("valid config");
        let others = ["a", "b", "c", "d", "e", "f"];
        for m in others {
            fold(&mut st, &[join(m, 1)]);
        }
        fold(&mut st, &[join("x", 1)]);
        // Six observers beat in rounds: x dies in round k, not after k beats in total.
        for seq in 1..=u64::from(k) {
            for (i, m) in others.iter().enumerate() {
                let fenced = fold(&mut st, &[beat(m, 1, seq)]);
                if seq == u64::from(k) && i == 0 {
                    assert_eq!(fenced, vec!["x"]);
                } else {
                    assert!(fenced.is_empty(), "{m} {seq}: {fenced:?}");
                }
            }
        }
        assert!(others.iter().all(|m| st.is_live(m, 1)));
    }

    #[test]
    fn only_live_observers_count_and_only_since_they_joined() {
        let k = 3;
        let cfg = ControlConfig {
            dead_after_heartbeats: k,
            ..ControlConfig::default()
        };
        let mut st = ControlState::new(cfg, parts(4)).expect("valid config");
        // Alone, a is never declared dead, however long it is silent.
        fold(&mut st, &[join("a", 1)]);
        fold(
            &mut st,
            &[beat("a", 1, 1), beat("a", 1, 2), beat("a", 1, 3)],
        );
        assert!(st.members()["a"].missed.is_empty());
        // b joins after a's last heartbeat and beats k − 1 times, then leaves: its
        // beats no longer count, and a is alone again.
        fold(&mut st, &[join("b", 1), beat("b", 1, 1), beat("b", 1, 2)]);
        assert_eq!(st.members()["a"].missed["b"], k - 1);
        fold(
            &mut st,
            &[Record::Leave {
                member: "b".into(),
                incarnation: 1,
            }],
        );
        assert!(st.members()["a"].missed.is_empty());
        // c beats k − 1 times, duplicates count once; it is fenced by a new
        // incarnation of itself, which counts only its own heartbeats.
        fold(&mut st, &[join("c", 1), beat("c", 1, 1), beat("c", 1, 2)]);
        fold(
            &mut st,
            &[beat("c", 1, 2), beat("c", 1, 1), beat("c", 1, 2)],
        );
        assert_eq!(st.members()["a"].missed["c"], k - 1);
        assert_eq!(fold(&mut st, &[join("c", 2)]), vec!["c"]);
        assert!(st.members()["a"].missed.is_empty());
        fold(&mut st, &[beat("c", 1, 3), beat("c", 1, 4)]);
        assert!(st.members()["a"].missed.is_empty());
        for seq in 1..u64::from(k) {
            assert!(fold(&mut st, &[beat("c", 2, seq)]).is_empty());
        }
        // The counters survive a snapshot.
        let mut st = ControlState::restore(
            serde_json::from_str(
                &serde_json::to_string(&st.snapshot().expect("snapshot")).expect("json"),
            )
            .expect("parse"),
        )
        .expect("restore");
        assert_eq!(st.members()["a"].missed["c"], k - 1);
        assert_eq!(fold(&mut st, &[beat("c", 2, u64::from(k))]), vec!["a"]);
        // c is alone now: never dead.
        fold(&mut st, &[beat("c", 2, u64::from(k) + 1)]);
        assert!(st.is_live("c", 2));
        assert!(st.members()["c"].missed.is_empty());
    }

    /// Two members, three partitions of nearly equal load: no assignment comes within
    /// the tolerance (one member carries two thirds), and measurement noise makes
    /// another split look a little better at times. Nothing moves for that.
    /// Two members, three partitions; every round each member heartbeats the loads
    /// `load(round, partition index)` of what it owns and releases what it is asked to.
    /// Returns the generation after each round.
    fn run_loads(
        st: &mut ControlState,
        rounds: std::ops::Range<u64>,
        load: impl Fn(u64, u64) -> f64,
    ) -> Vec<u64> {
        let ids = parts(3);
        let mut generations = Vec::new();
        for round in rounds {
            for m in ["a", "b"] {
                let mut loads = Vec::new();
                let mut released = Vec::new();
                for d in st.duties(m) {
                    match d {
                        Duty::Own { partition, .. } => {
                            let i = ids.iter().position(|q| *q == partition).expect("known");
                            loads.push(LoadReport {
                                load: load(round, i as u64),
                                partition,
                                state_bytes: 0,
                            });
                        }
                        Duty::Release {
                            partition,
                            generation,
                        } => released.push(Record::Released {
                            member: m.into(),
                            incarnation: 1,
                            partition,
                            generation,
                            checkpoint_epoch: 1,
                        }),
                    }
                }
                let beat = Record::Heartbeat {
                    member: m.into(),
                    incarnation: 1,
                    seq: round + 1,
                    loads,
                    checkpoint_epoch: None,
                };
                for r in std::iter::once(beat).chain(released) {
                    st.apply(st.next_offset(), &r);
                }
            }
            generations.push(st.generation());
        }
        generations
    }

    #[test]
    fn when_the_input_stops_the_residual_rates_move_nothing() {
        let cfg = ControlConfig {
            rebalance_every: 1,
            ..ControlConfig::default()
        };
        let mut st = ControlState::new(cfg, parts(3)).expect("valid config");
        st.apply(0, &join("a", 1));
        st.apply(1, &join("b", 1));
        // Skewed load (rows/s): the assignor puts the heavy partition alone.
        let busy = [1_000.0, 450.0, 400.0];
        run_loads(&mut st, 0..100, |_, i| busy[i as usize]);
        assert!(st.delta() <= st.config().tolerance, "{}", st.delta());
        let settled = st.generation();
        // The input stops: each partition's rate falls to a residual below a row per
        // second, in proportions that change every round (the last rows leaving each
        // partition's rate window at their own moments).
        let residual = |round: u64, i: u64| ((round * 37 + i * 11) % 10) as f64 / 10.0;
        let generations = run_loads(&mut st, 100..400, |r, i| {
            if r < 110 {
                busy[i as usize] * (110 - r) as f64 / 10.0
            } else {
                residual(r, i)
            }
        });
        assert_eq!(
            generations.last(),
            Some(&settled),
            "partitions moved: {generations:?}"
        );
        assert!(st.idle());
        // The input comes back, the other way round: the balance follows it.
        run_loads(&mut st, 400..500, |_, i| busy[2 - i as usize]);
        assert!(!st.idle());
        assert!(st.delta() <= st.config().tolerance, "{}", st.delta());
        assert!(st.generation() > settled);
    }

    #[test]
    fn noisy_loads_where_the_tolerance_cannot_be_met_move_nothing() {
        let cfg = ControlConfig {
            rebalance_every: 1,
            ..ControlConfig::default()
        };
        let mut st = ControlState::new(cfg, parts(3)).expect("valid config");
        let mut offset = 0;
        let mut apply = |st: &mut ControlState, r: Record| {
            offset += 1;
            st.apply(offset, &r)
        };
        apply(&mut st, join("a", 1));
        apply(&mut st, join("b", 1));
        // `a` hands over what it is asked to.
        for d in st.duties("a") {
            if let Duty::Release {
                partition,
                generation,
            } = d
            {
                apply(
                    &mut st,
                    Record::Released {
                        member: "a".into(),
                        incarnation: 1,
                        partition,
                        generation,
                        checkpoint_epoch: 1,
                    },
                );
            }
        }
        let (target, generation) = (st.target().clone(), st.generation());
        assert!(st.holdings().values().all(|h| !h.releasing));
        let ids: Vec<PartitionId> = parts(3);
        for round in 0..300u64 {
            for m in ["a", "b"] {
                // ±3 % around 100 rows/s, differently for each partition and round.
                let loads = st
                    .duties(m)
                    .into_iter()
                    .filter_map(|d| match d {
                        Duty::Own { partition, .. } => Some(partition),
                        Duty::Release { .. } => None,
                    })
                    .map(|p| {
                        let i = ids.iter().position(|q| *q == p).expect("known") as u64;
                        LoadReport {
                            partition: p,
                            load: 97.0 + ((round * 7 + i * 5) % 7) as f64,
                            state_bytes: 0,
                        }
                    })
                    .collect();
                apply(
                    &mut st,
                    Record::Heartbeat {
                        member: m.into(),
                        incarnation: 1,
                        seq: round + 1,
                        loads,
                        checkpoint_epoch: None,
                    },
                );
            }
        }
        assert!(
            st.delta() > 0.1,
            "the tolerance cannot be met: {}",
            st.delta()
        );
        assert_eq!(st.target(), &target, "nothing moved");
        assert_eq!(st.generation(), generation);
    }

    #[test]
    fn a_planned_move_waits_for_the_release() {
        let cfg = ControlConfig {
            tolerance: 0.0,
            ..ControlConfig::default()
        };
        let mut st = ControlState::new(cfg, parts(4)).expect("valid config");
        st.apply(0, &join("a", 1));
        assert_eq!(st.duties("a").len(), 4);
        let events = st.apply(1, &join("b", 1));
        // Two partitions are to move to b: a is asked to release them, b gets nothing yet.
        let asked: Vec<(PartitionId, u64)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Release {
                    member,
                    partition,
                    generation,
                } if member == "a" => Some((partition.clone(), *generation)),
                _ => None,
            })
            .collect();
        assert_eq!(asked.len(), 2);
        assert!(st.duties("b").is_empty());
        assert!(!events.iter().any(|e| matches!(e, Event::Acquire { .. })));
        let (p, generation) = asked[0].clone();
        let events = st.apply(
            2,
            &Record::Released {
                member: "a".into(),
                incarnation: 1,
                partition: p.clone(),
                generation,
                checkpoint_epoch: 7,
            },
        );
        assert!(events.contains(&Event::Acquire {
            member: "b".into(),
            partition: p.clone(),
            generation: 2,
            from_release: Some(7),
        }));
        assert_eq!(
            st.duties("b"),
            vec![Duty::Own {
                partition: p,
                generation: 2,
                from_release: Some(7)
            }]
        );
    }

    #[test]
    fn a_dead_owners_partitions_move_at_once_and_it_is_fenced() {
        let cfg = ControlConfig {
            dead_after_heartbeats: 2,
            ..ControlConfig::default()
        };
        let mut st = ControlState::new(cfg, parts(4)).expect("valid config");
        st.apply(0, &join("a", 1));
        st.apply(1, &join("b", 1));
        // a hands two partitions over to b.
        let mut offset = 2;
        for d in st.duties("a") {
            if let Duty::Release {
                partition,
                generation,
            } = d
            {
                st.apply(
                    offset,
                    &Record::Released {
                        member: "a".into(),
                        incarnation: 1,
                        partition,
                        generation,
                        checkpoint_epoch: 1,
                    },
                );
                offset += 1;
            }
        }
        assert_eq!(st.duties("b").len(), 2);
        let beat = |seq| Record::Heartbeat {
            member: "a".into(),
            incarnation: 1,
            seq,
            loads: vec![],
            checkpoint_epoch: None,
        };
        assert!(st.apply(offset, &beat(1)).is_empty());
        // b misses its second heartbeat of a: dead, and its partitions move at once.
        let events = st.apply(offset + 1, &beat(2));
        assert!(events.contains(&Event::Fenced {
            member: "b".into(),
            incarnation: 1
        }));
        let acquired = events
            .iter()
            .filter(
                |e| matches!(e, Event::Acquire { member, from_release: None, .. } if member == "a"),
            )
            .count();
        assert_eq!(acquired, 2);
        assert!(st.duties("a").iter().all(|d| matches!(d, Duty::Own { .. })));
        assert_eq!(st.duties("a").len(), 4);
        // The fenced incarnation's records change nothing; a new one joins again.
        let before = st.clone();
        st.apply(
            offset + 2,
            &Record::Heartbeat {
                member: "b".into(),
                incarnation: 1,
                seq: 9,
                loads: vec![],
                checkpoint_epoch: None,
            },
        );
        assert_eq!(st.holdings(), before.holdings());
        assert!(!st.is_live("b", 1));
        st.apply(offset + 3, &join("b", offset + 3));
        assert!(st.is_live("b", offset + 3));
    }

    #[test]
    fn records_read_and_write_as_tagged_json() {
        let r = Record::Released {
            member: "a".into(),
            incarnation: 3,
            partition: PartitionId::new("readings", 2),
            generation: 5,
            checkpoint_epoch: 9,
        };
        let text = serde_json::to_string(&r).expect("json");
        assert!(text.contains(r#""type":"released""#), "{text}");
        assert_eq!(serde_json::from_str::<Record>(&text).expect("parse"), r);
        let j: Record =
            serde_json::from_str(r#"{"type":"join","member":"a","incarnation":1}"#).expect("parse");
        assert_eq!(j, join("a", 1));
    }

    #[test]
    fn invalid_config_reports_every_problem() {
        let cfg = ControlConfig {
            dead_after_heartbeats: 1,
            rebalance_every: 0,
            tolerance: 2.0,
            load_smoothing: 0.0,
            min_load: -1.0,
        };
        let msg = cfg.validate().expect_err("invalid").to_string();
        for key in [
            "dead_after_heartbeats",
            "rebalance_every",
            "tolerance",
            "load_smoothing",
            "min_load",
        ] {
            assert!(msg.contains(key), "{msg}");
        }
    }
}
