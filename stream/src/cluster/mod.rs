//! The processor cluster's pure core: who is a member, who is dead, and which
//! processor owns which partition, decided without a leader.
//!
//! Every processor appends [`Record`]s to one single-partition control log and folds
//! the whole log, in order, with [`ControlState::apply`]. The fold depends on the
//! records, their order and the shared [`ControlConfig`] only (no clock, no local
//! state, no randomness, `BTreeMap` iteration everywhere), so every processor computes
//! the same membership, the same deaths and the same assignment. No I/O happens
//! here: a shell reads and appends the log and acts on the [`Event`]s and [`Duty`]s.
//!
//! # Records
//!
//! - `join {member, incarnation, capacity}`: a processor starts. The incarnation must
//!   be above every one this member id used before; the log's end offset when the
//!   process starts is a good choice. A join with a higher incarnation than a live one
//!   replaces it (the old incarnation is fenced). `capacity` weights its share (1.0 by
//!   default).
//! - `heartbeat {member, incarnation, seq, loads, checkpoint_epoch}`: it is alive.
//!   `seq` grows by one per heartbeat of an incarnation (from 1), so a heartbeat
//!   appended twice counts once. `loads` are the measured load and state size of the
//!   partitions it owns; reports for partitions it does not own are ignored.
//! - `leave {member, incarnation}`: it stops on purpose; its partitions are free.
//! - `released {member, incarnation, partition, generation, checkpoint_epoch}`: it was
//!   asked to release the partition, wrote checkpoint `checkpoint_epoch` and stopped
//!   processing the partition. `generation` is the one it owned the partition with.
//!
//! A record whose incarnation is not the member's live one (older, fenced, left, or
//! never joined) changes nothing. Offsets must grow; a record below
//! [`ControlState::next_offset`] is taken as already folded, so reading the same
//! offset twice is harmless. Duplicate records at new offsets are harmless too: a join
//! or heartbeat repeats an incarnation or `seq` already seen, a leave or release names
//! an incarnation or holding that no longer exists.
//!
//! # Liveness
//!
//! For each live member X, the fold counts, per other live member, the heartbeats that
//! member appended since X's last heartbeat (or X's join; a member that joined later
//! counts from its own join). Once one of these counts reaches
//! [`ControlConfig::dead_after_heartbeats`] (`k`), X is dead: [`Event::Fenced`], its
//! partitions are free, and records of that incarnation are ignored from then on. A
//! fenced processor must stop writing at once (sinks also reject writes of an older
//! generation) and join again with a new incarnation. A member that leaves or is fenced
//! no longer counts against the others, so a member alone is never declared dead.
//!
//! Detection takes about `k` heartbeat intervals of the fastest other member, whatever
//! the number of members: with a 100 ms interval the default `k = 5` takes about half a
//! second. Every member must heartbeat at the same interval.
//!
//! # Assignment and generations
//!
//! The target assignment comes from the [assignor](assignor::assign) over the live
//! members and the smoothed loads (an exponential moving average of the reported
//! samples; a partition never measured counts as the mean of the measured ones). It
//! is recomputed:
//! - on every membership change (join, leave, death): the generation always grows;
//! - every [`ControlConfig::rebalance_every`] heartbeats, if `Δ` of the current target
//!   exceeds [`ControlConfig::tolerance`]: the assignor then aims at half the tolerance
//!   (hysteresis, so noise causes no churn), and the new target is taken only if it
//!   lowers `Δ` by more than half the tolerance (where no assignment reaches the
//!   tolerance, noisy loads would otherwise make partitions bounce between members); the
//!   generation grows only if the target changed.
//!
//! The generation is a single counter that only grows. A partition acquired is held
//! with the generation current at that moment, so the successive owners of a partition
//! hold it with strictly growing generations.
//!
//! # Moving a partition
//!
//! The *holder* of a partition is the one member allowed to process it. When the
//! target names another member:
//! - the holder is live: it gets [`Event::Release`] / [`Duty::Release`], checkpoints the
//!   partition, stops processing it and appends `released`. Only when that record is
//!   folded does the partition go to its target owner ([`Event::Acquire`] with
//!   `from_release = Some(epoch)`: start from that checkpoint). A release once asked is
//!   completed even if the target changes back meanwhile (the partition then returns
//!   with a new generation), so a `released` already appended is never ambiguous;
//! - the holder died or left: the partition is free at once and goes to its target
//!   owner with `from_release = None` (restore the last complete checkpoint).
//!
//! So at any point a partition has at most one holder, and a new holder never appears
//! before the old one released or ended. [`ControlState::duties`] lists what a member
//! must be doing now; [`ControlState::snapshot`] and [`ControlState::restore`] let the
//! log before a snapshot be compacted away.

pub mod assignor;
pub mod control;

pub use assignor::{
    assign, delta, range, round_robin, Assignment, Load, Loads, Members, Move, Outcome, PartitionId,
};
pub use control::{
    ControlConfig, ControlState, Duty, Event, Holding, LoadReport, MemberState, Record,
};
