//! The checkpoint protocol's decisions, from a listing of the store: which epoch
//! number comes next, in which order epochs are tried on restore, what garbage
//! collection removes. No I/O: the store lists, these decide, the store acts.

use std::collections::BTreeSet;

use super::manifest::Manifest;

/// What a listing of the checkpoint store found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Epochs with a manifest (visible, if they verify).
    pub manifests: BTreeSet<u64>,
    /// Epochs with state files (complete or not).
    pub epochs: BTreeSet<u64>,
}

/// The number of the epoch to write next: above every epoch that has a manifest or
/// files, so that the files of an epoch that crashed before its manifest are never
/// mixed with a new epoch's. Epochs start at 1.
pub fn next_epoch(l: &Listing) -> u64 {
    let last = l
        .manifests
        .iter()
        .chain(&l.epochs)
        .max()
        .copied()
        .unwrap_or(0);
    last + 1
}

/// The epochs to try on restore, newest first: each one with a manifest. The first
/// that verifies (manifest and every file) is used.
pub fn recovery_order(l: &Listing) -> Vec<u64> {
    l.manifests.iter().rev().copied().collect()
}

/// What garbage collection removes, in this order: manifests first (so no manifest
/// ever names removed files), then epochs' files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPlan {
    pub manifests: Vec<u64>,
    pub epochs: Vec<u64>,
}

/// Keeps the newest `keep` epochs that have a manifest (at least one) and removes the
/// older ones, and the files of epochs without a manifest that are older than the
/// newest manifest (left by a crash before their manifest was written). Files of
/// epochs newer than the newest manifest are left alone: an epoch may be being written.
pub fn gc_plan(l: &Listing, keep: usize) -> GcPlan {
    let keep = keep.max(1);
    let Some(&newest) = l.manifests.iter().next_back() else {
        return GcPlan::default();
    };
    let kept: BTreeSet<u64> = l.manifests.iter().rev().take(keep).copied().collect();
    let oldest_kept = kept.iter().next().copied().unwrap_or(newest);
    let manifests = l
        .manifests
        .iter()
        .copied()
        .filter(|e| *e < oldest_kept)
        .collect();
    let epochs = l
        .epochs
        .iter()
        .copied()
        .filter(|e| *e < oldest_kept || (*e < newest && !l.manifests.contains(e)))
        .collect();
    GcPlan { manifests, epochs }
}

/// Where the newest state of a partition is, among the complete epochs of every
/// node (`(node, manifest)` pairs): the epoch holding the partition with the highest
/// generation, and of those the newest epoch. A cluster's successive holders of a
/// partition hold it with growing generations, so that is the last holder's last
/// checkpoint of it (a holder that died before checkpointing the partition leaves the
/// one before). Returns the node, the epoch and the offset to resume from; `None` when
/// no epoch holds the partition.
pub fn latest_state_of<'a>(
    topic: &str,
    partition: i32,
    manifests: impl IntoIterator<Item = (&'a str, &'a Manifest)>,
) -> Option<(&'a str, u64, i64)> {
    manifests
        .into_iter()
        .filter_map(|(node, m)| {
            m.sources
                .iter()
                .find(|s| s.topic == topic && s.partition == partition)
                .map(|s| ((s.generation, m.epoch, node), s.next_offset))
        })
        // Ties (only a fenced node checkpointing on) go to the later epoch, then the
        // node id, so every node picks the same.
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|((_, epoch, node), offset)| (node, epoch, offset))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Write an epoch's files, then (if `commit`) its manifest; else crash before it.
        Epoch {
            commit: bool,
        },
        Gc {
            keep: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<bool>().prop_map(|commit| Op::Epoch { commit }),
            1 => (0usize..5).prop_map(|keep| Op::Gc { keep }),
        ]
    }

    proptest! {
        /// Against a model that remembers every epoch ever begun and committed: epoch
        /// numbers are never reused, restore tries the newest committed epoch first,
        /// and GC keeps exactly the newest `keep` committed epochs with their files.
        #[test]
        fn epochs_are_never_reused_and_gc_keeps_the_newest(ops in proptest::collection::vec(op(), 1..60)) {
            let mut l = Listing::default();
            let mut begun: Vec<u64> = Vec::new();
            let mut committed: Vec<u64> = Vec::new();
            let mut retained: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Epoch { commit } => {
                        let e = next_epoch(&l);
                        prop_assert!(begun.iter().all(|b| *b < e), "epoch {} reused", e);
                        begun.push(e);
                        l.epochs.insert(e);
                        if commit {
                            l.manifests.insert(e);
                            committed.push(e);
                            retained.push(e);
                        }
                    }
                    Op::Gc { keep } => {
                        let plan = gc_plan(&l, keep);
                        for m in &plan.manifests {
                            prop_assert!(l.manifests.remove(m));
                        }
                        for e in &plan.epochs {
                            prop_assert!(l.epochs.remove(e));
                        }
                        // The model: the newest `keep` of the committed epochs still kept.
                        retained = retained.iter().rev().take(keep.max(1)).rev().copied().collect();
                        let live: Vec<u64> = retained.iter().rev().copied().collect();
                        let after: Vec<u64> = recovery_order(&l);
                        prop_assert_eq!(&after, &live, "kept manifests");
                        for e in &live {
                            prop_assert!(l.epochs.contains(e), "files of kept epoch {} removed", e);
                        }
                        // No file without a manifest survives below the newest manifest.
                        if let Some(newest) = live.first() {
                            for e in &l.epochs {
                                prop_assert!(*e > *newest || l.manifests.contains(e), "orphan {} kept", e);
                            }
                        }
                    }
                }
                if let Some(last) = committed.last() {
                    let order = recovery_order(&l);
                    prop_assert_eq!(order.first(), Some(last));
                }
            }
        }
    }

    #[test]
    fn gc_leaves_an_epoch_being_written_alone() {
        let l = Listing {
            manifests: [1, 2, 4].into(),
            epochs: [1, 2, 3, 4, 5].into(),
        };
        let plan = gc_plan(&l, 2);
        assert_eq!(plan.manifests, vec![1]);
        assert_eq!(plan.epochs, vec![1, 3], "3 crashed; 5 may be in progress");
        assert_eq!(next_epoch(&l), 6);
        assert_eq!(gc_plan(&Listing::default(), 3), GcPlan::default());
        assert_eq!(next_epoch(&Listing::default()), 1);
    }

    fn manifest(epoch: u64, sources: &[(i32, i64, u64)]) -> Manifest {
        Manifest {
            version: super::super::manifest::MANIFEST_VERSION,
            epoch,
            node: String::new(),
            generation: 0,
            taken_ms: 0,
            sources: sources
                .iter()
                .map(
                    |&(partition, next_offset, generation)| super::super::manifest::SourceOffset {
                        topic: "t".into(),
                        partition,
                        next_offset,
                        generation,
                    },
                )
                .collect(),
            files: Vec::new(),
        }
    }

    #[test]
    fn a_partitions_state_is_with_its_last_holder() {
        // `a` held partition 0 with generation 3 (epochs 4, 5), released it at 5;
        // `b` took it with generation 7 and checkpointed it at epoch 2, not after.
        let a4 = manifest(4, &[(0, 100, 3), (1, 50, 3)]);
        let a5 = manifest(5, &[(0, 120, 3), (1, 60, 3)]);
        let a6 = manifest(6, &[(1, 70, 3)]);
        let b1 = manifest(1, &[]);
        let b2 = manifest(2, &[(0, 150, 7)]);
        let all = [("a", &a4), ("a", &a5), ("a", &a6), ("b", &b1), ("b", &b2)];
        assert_eq!(latest_state_of("t", 0, all), Some(("b", 2, 150)));
        // Before `b` checkpointed it: `a`'s last epoch holding it.
        let before = [("a", &a4), ("a", &a5), ("a", &a6), ("b", &b1)];
        assert_eq!(latest_state_of("t", 0, before), Some(("a", 5, 120)));
        assert_eq!(latest_state_of("t", 1, before), Some(("a", 6, 70)));
        assert_eq!(latest_state_of("t", 2, before), None);
        assert_eq!(latest_state_of("u", 0, before), None);
    }
}
