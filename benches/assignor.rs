//! The partition assignor under skewed load, beside count-based assignment.
//!
//! Load: 64 partitions whose rates follow a Zipf law (the partition of rank r carries
//! 1/r^s of the load, s = 1.0 and 1.2; ranks shuffled over the partition numbers with a
//! fixed seed), state size proportional to the rate. For 3, 4 and 5 equal members it
//! prints Δ = max_i |α_i − 1/N| (α_i: member i's share of the load), beside its floor
//! (no assignment does better than the heaviest partition's share minus 1/N), of
//! - `assign` (load-aware, tolerance 0.02) from no previous assignment,
//! - round-robin and range over the same partitions (Kafka's count-based assignors),
//!
//! and, for a member joining a balanced cluster and one leaving it, the load `assign`
//! moved beside the least any assignment must move to reach the same Δ: for a join,
//! what brings the newcomer's share to 1/N − Δ; for a leave, the leaver's load.
//! These numbers are deterministic (no timing in them).
//!
//! Then criterion times `assign` from scratch for 64 and 1,024 partitions on 5 members.
//!
//! Run: `cargo bench --bench assignor`

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use edgeflow_stream::cluster::{
    assign, delta, range, round_robin, Assignment, Load, Loads, Members, PartitionId,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const TOLERANCE: f64 = 0.02;

/// `n` partitions with Zipf(`s`) loads, ranks shuffled with a fixed seed.
fn zipf(n: usize, s: f64) -> Loads {
    let mut ranks: Vec<usize> = (1..=n).collect();
    ranks.shuffle(&mut StdRng::seed_from_u64(7));
    ranks
        .into_iter()
        .enumerate()
        .map(|(p, rank)| {
            let load = 1_000.0 / (rank as f64).powf(s);
            (
                PartitionId::new("readings", p as i32),
                Load {
                    load,
                    state_bytes: (load * 1_000.0) as u64,
                },
            )
        })
        .collect()
}

fn members(n: usize) -> Members {
    (0..n).map(|i| (format!("node-{i}"), 1.0)).collect()
}

fn share_of(assignment: &Assignment, loads: &Loads, member: &str) -> f64 {
    let total: f64 = loads.values().map(|l| l.load).sum();
    let mine: f64 = assignment
        .iter()
        .filter(|(_, m)| m.as_str() == member)
        .map(|(p, _)| loads[p].load)
        .sum();
    mine / total
}

fn report() {
    println!(
        "assignor: 64 partitions, Zipf loads, tolerance {TOLERANCE}\n\
         {:>4} {:>3} | {:>7} {:>8} {:>11} {:>8} | {:>22} | {:>22}",
        "s",
        "N",
        "floor",
        "Δ assign",
        "Δ round-rb",
        "Δ range",
        "join: moved / least",
        "leave: moved / least"
    );
    for s in [1.0, 1.2] {
        let loads = zipf(64, s);
        let total: f64 = loads.values().map(|l| l.load).sum();
        let heaviest = loads.values().map(|l| l.load).fold(0.0, f64::max) / total;
        for n in [3, 4, 5] {
            // No assignment does better: the heaviest partition's owner holds at least it.
            let floor = (heaviest - 1.0 / n as f64).max(0.0);
            let m = members(n);
            let ours = assign(&m, &loads, &BTreeMap::new(), TOLERANCE);
            let rr = delta(&round_robin(&m, &loads), &loads, &m);
            let rg = delta(&range(&m, &loads), &loads, &m);

            // A member joins the balanced cluster of n.
            let mut joined = m.clone();
            let newcomer = format!("node-{n}");
            joined.insert(newcomer.clone(), 1.0);
            let after_join = assign(&joined, &loads, &ours.assignment, TOLERANCE);
            let least_join = (1.0 / (n + 1) as f64 - after_join.delta).max(0.0) * total;
            let got = share_of(&after_join.assignment, &loads, &newcomer);
            assert!(
                (got - 1.0 / (n + 1) as f64).abs() <= after_join.delta + 1e-12,
                "the newcomer's share is within the reported Δ"
            );

            // The last member leaves it.
            let mut left = m.clone();
            let leaver = format!("node-{}", n - 1);
            left.remove(&leaver);
            let after_leave = assign(&left, &loads, &ours.assignment, TOLERANCE);
            let least_leave = share_of(&ours.assignment, &loads, &leaver) * total;

            println!(
                "{s:>4} {n:>3} | {floor:>7.4} {:>8.4} {:>11.4} {:>8.4} | {:>8.0} / {:>6.0} = {:>4.2}x (Δ {:.4}) | {:>8.0} / {:>6.0} = {:>4.2}x (Δ {:.4})",
                ours.delta,
                rr,
                rg,
                after_join.moved_load(),
                least_join,
                after_join.moved_load() / least_join,
                after_join.delta,
                after_leave.moved_load(),
                least_leave,
                after_leave.moved_load() / least_leave,
                after_leave.delta,
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    report();
    let mut g = c.benchmark_group("assignor");
    for partitions in [64, 1_024] {
        let loads = zipf(partitions, 1.0);
        let m = members(5);
        g.bench_with_input(
            BenchmarkId::new("assign_from_scratch", partitions),
            &loads,
            |b, loads| b.iter(|| assign(&m, loads, &BTreeMap::new(), TOLERANCE)),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
