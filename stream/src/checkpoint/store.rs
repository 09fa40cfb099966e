//! The checkpoint store: epochs on object storage (see the module above for the layout).
//!
//! Writes are whole objects: a local directory's `put` writes a temporary file and
//! renames it, an object store's `PUT` is atomic, so a manifest is either there whole
//! or not at all; its checksum catches the rest (a disk that lost a write).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::manifest::{Manifest, SourceOffset, StateFile, MANIFEST_VERSION};
use super::protocol::{gc_plan, next_epoch, recovery_order, GcPlan, Listing};
use crate::{Error, Result};

/// A restored epoch: its manifest and every state file's bytes, verified.
#[derive(Clone, Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub files: BTreeMap<String, Bytes>,
}

/// Checkpoint epochs under `root` of an object store.
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    keep: usize,
    corrupt_skipped: AtomicU64,
    /// The next epoch to write, once known (this store is the prefix's only writer, so
    /// only the first commit lists the store to learn it).
    next: Mutex<Option<u64>>,
}

/// `<epoch>` as the 20 digits used in paths (so names sort as numbers).
fn epoch_name(epoch: u64) -> String {
    format!("{epoch:020}")
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl CheckpointStore {
    /// Epochs under `root` of `store`, keeping the newest `keep` (at least 1) when
    /// collecting garbage.
    pub fn new(store: Arc<dyn ObjectStore>, root: Path, keep: usize) -> Self {
        CheckpointStore {
            store,
            root,
            keep: keep.max(1),
            corrupt_skipped: AtomicU64::new(0),
            next: Mutex::new(None),
        }
    }

    fn manifests_dir(&self) -> Path {
        self.root.clone().join("manifests")
    }

    fn manifest_path(&self, epoch: u64) -> Path {
        self.manifests_dir()
            .join(format!("{}.json", epoch_name(epoch)))
    }

    fn epochs_dir(&self) -> Path {
        self.root.clone().join("epochs")
    }

    fn epoch_dir(&self, epoch: u64) -> Path {
        self.epochs_dir().join(epoch_name(epoch))
    }

    /// The path of a state file of an epoch (`name` may hold `/`).
    fn file_path(&self, epoch: u64, name: &str) -> Path {
        name.split('/')
            .fold(self.epoch_dir(epoch), |p, part| p.join(part))
    }

    /// Epochs whose manifest or state files exist.
    pub async fn listing(&self) -> Result<Listing> {
        let mut l = Listing::default();
        let manifests: Vec<_> = self
            .store
            .list(Some(&self.manifests_dir()))
            .try_collect()
            .await?;
        for m in manifests {
            let name = m.location.filename().unwrap_or_default();
            match name.strip_suffix(".json").map(str::parse::<u64>) {
                Some(Ok(e)) => {
                    l.manifests.insert(e);
                }
                _ => tracing::warn!(object = %m.location, "not a checkpoint manifest; left alone"),
            }
        }
        let epochs = self
            .store
            .list_with_delimiter(Some(&self.epochs_dir()))
            .await?;
        for p in epochs.common_prefixes {
            if let Some(Ok(e)) = p.filename().map(str::parse::<u64>) {
                l.epochs.insert(e);
            }
        }
        Ok(l)
    }

    /// Writes the next epoch: its state files, then its manifest (which makes it
    /// visible). Returns the manifest.
    pub async fn commit(
        &self,
        node: &str,
        generation: u64,
        taken_ms: i64,
        mut sources: Vec<SourceOffset>,
        files: Vec<(String, Bytes)>,
    ) -> Result<Manifest> {
        let known = *self.next.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = match known {
            Some(e) => e,
            None => next_epoch(&self.listing().await?),
        };
        // Taken even if this commit fails half way: its files are never mixed with the
        // next epoch's.
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(epoch + 1);
        let mut entries = Vec::with_capacity(files.len());
        for (name, data) in files {
            if name.is_empty()
                || name
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
            {
                return Err(Error::Checkpoint(format!(
                    "state file name `{name}` must be non-empty path segments"
                )));
            }
            entries.push(StateFile::of(&name, &data));
            self.store
                .put(&self.file_path(epoch, &name), PutPayload::from(data))
                .await?;
        }
        sources.sort();
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            epoch,
            node: node.to_string(),
            generation,
            taken_ms,
            sources,
            files: entries,
        };
        self.store
            .put(
                &self.manifest_path(epoch),
                PutPayload::from(manifest.encode()),
            )
            .await?;
        Ok(manifest)
    }

    /// The newest epoch whose manifest and files verify, or `None` when there is no
    /// checkpoint. A corrupt or incomplete epoch is skipped (logged, counted in
    /// [`CheckpointStore::corrupt_epochs_skipped`]) for the one before it; a failure
    /// to reach the store is an error, not a reason to go back in time.
    pub async fn restore(&self) -> Result<Option<Restored>> {
        for epoch in recovery_order(&self.listing().await?) {
            match self.read_epoch(epoch).await? {
                Ok(r) => return Ok(Some(r)),
                Err(why) => {
                    self.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        epoch,
                        reason = %why,
                        "checkpoint epoch is damaged; trying the one before it"
                    );
                }
            }
        }
        Ok(None)
    }

    /// The manifests of the epochs here that have one and verify, newest first.
    /// (Their state files are checked when an epoch is read.)
    pub async fn manifests(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for epoch in recovery_order(&self.listing().await?) {
            let bytes = match self.store.get(&self.manifest_path(epoch)).await {
                Ok(g) => g.bytes().await?,
                // Removed by garbage collection since the listing.
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            match Manifest::decode(&bytes) {
                Ok(m) if m.epoch == epoch => out.push(m),
                Ok(_) | Err(_) => {
                    tracing::warn!(epoch, root = %self.root, "a damaged checkpoint manifest; passed over")
                }
            }
        }
        Ok(out)
    }

    /// Reads and verifies epoch `epoch`; an error says what is damaged or missing.
    pub async fn read(&self, epoch: u64) -> Result<Restored> {
        self.read_epoch(epoch).await?.map_err(|why| {
            crate::Error::Checkpoint(format!(
                "checkpoint epoch {epoch} under {}: {why}",
                self.root
            ))
        })
    }

    /// Reads and verifies one epoch: `Ok(Err(why))` when it is damaged.
    async fn read_epoch(&self, epoch: u64) -> Result<Result<Restored, String>> {
        let bytes = match self.store.get(&self.manifest_path(epoch)).await {
            Ok(g) => g.bytes().await?,
            Err(e) if not_found(&e) => return Ok(Err("its manifest is gone".into())),
            Err(e) => return Err(e.into()),
        };
        let manifest = match Manifest::decode(&bytes) {
            Ok(m) if m.epoch == epoch => m,
            Ok(m) => {
                return Ok(Err(format!(
                    "the manifest of epoch {epoch} says epoch {}",
                    m.epoch
                )))
            }
            Err(why) => return Ok(Err(why)),
        };
        let mut files = BTreeMap::new();
        for f in &manifest.files {
            let data = match self.store.get(&self.file_path(epoch, &f.name)).await {
                Ok(g) => g.bytes().await?,
                Err(e) if not_found(&e) => {
                    return Ok(Err(format!("state file `{}` is missing", f.name)))
                }
                Err(e) => return Err(e.into()),
            };
            if let Err(why) = f.verify(&data) {
                return Ok(Err(why));
            }
            files.insert(f.name.clone(), data);
        }
        Ok(Ok(Restored { manifest, files }))
    }

    /// Removes what the newest `keep` epochs do not need (see [`gc_plan`]).
    pub async fn gc(&self) -> Result<GcPlan> {
        let plan = gc_plan(&self.listing().await?, self.keep);
        for &e in &plan.manifests {
            self.delete(&self.manifest_path(e)).await?;
        }
        for &e in &plan.epochs {
            let objects: Vec<_> = self
                .store
                .list(Some(&self.epoch_dir(e)))
                .try_collect()
                .await?;
            for o in objects {
                self.delete(&o.location).await?;
            }
        }
        Ok(plan)
    }

    /// Deletes an object; one already gone is fine.
    async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Err(e) if !not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Damaged epochs skipped by [`CheckpointStore::restore`] so far.
    pub fn corrupt_epochs_skipped(&self) -> u64 {
        self.corrupt_skipped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use object_store::local::LocalFileSystem;
    use object_store::memory::InMemory;

    use super::*;

    fn offsets(next: i64) -> Vec<SourceOffset> {
        vec![
            SourceOffset {
                topic: "t".into(),
                partition: 1,
                next_offset: next + 1,
                generation: 0,
            },
            SourceOffset {
                topic: "t".into(),
                partition: 0,
                next_offset: next,
                generation: 0,
            },
        ]
    }

    fn files(tag: &str) -> Vec<(String, Bytes)> {
        vec![
            (
                "query=q/partition=0.arrow".into(),
                Bytes::from(format!("p0 {tag}")),
            ),
            (
                "query=q/final.arrow".into(),
                Bytes::from(format!("final {tag}")),
            ),
        ]
    }

    async fn commit(s: &CheckpointStore, n: i64) -> Manifest {
        s.commit("node-a", 1, n, offsets(n), files(&n.to_string()))
            .await
            .expect("commit")
    }

    fn local(dir: &std::path::Path, keep: usize) -> CheckpointStore {
        let fs = LocalFileSystem::new_with_prefix(dir).expect("local store");
        CheckpointStore::new(Arc::new(fs), Path::from("ckpt"), keep)
    }

    #[tokio::test]
    async fn the_newest_epoch_is_restored_with_its_files_and_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = local(dir.path(), 3);
        assert!(s.restore().await.expect("restore").is_none(), "nothing yet");
        assert_eq!(commit(&s, 100).await.epoch, 1);
        let m = commit(&s, 200).await;
        assert_eq!(m.epoch, 2);
        let r = s.restore().await.expect("restore").expect("an epoch");
        assert_eq!(r.manifest, m);
        assert_eq!(r.manifest.next_offset("t", 0), Some(200));
        assert_eq!(r.manifest.next_offset("t", 1), Some(201));
        assert_eq!(r.files["query=q/final.arrow"], Bytes::from("final 200"));
        assert_eq!(r.files.len(), 2);
        assert_eq!(s.corrupt_epochs_skipped(), 0);
    }

    #[tokio::test]
    async fn a_crash_before_the_manifest_leaves_the_previous_epoch_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = local(dir.path(), 3);
        commit(&s, 100).await;
        // Epoch 2's files are written, then the process dies before its manifest.
        let orphan = s.file_path(2, "query=q/final.arrow");
        s.store
            .put(&orphan, PutPayload::from_static(b"half"))
            .await
            .expect("put");
        // The restarted process opens the store afresh.
        let s = local(dir.path(), 3);
        let r = s.restore().await.expect("restore").expect("an epoch");
        assert_eq!(r.manifest.epoch, 1);
        assert_eq!(
            s.corrupt_epochs_skipped(),
            0,
            "an epoch without manifest is not damaged"
        );
        // The next epoch does not reuse 2, and once it is complete 2's files go.
        assert_eq!(commit(&s, 300).await.epoch, 3);
        let plan = s.gc().await.expect("gc");
        assert_eq!(plan.epochs, vec![2]);
        assert!(s.store.head(&orphan).await.is_err(), "orphan removed");
        assert_eq!(
            s.restore()
                .await
                .expect("restore")
                .expect("epoch")
                .manifest
                .epoch,
            3
        );
    }

    #[tokio::test]
    async fn a_damaged_epoch_is_detected_and_the_one_before_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = local(dir.path(), 5);
        commit(&s, 100).await;
        commit(&s, 200).await;
        commit(&s, 300).await;
        // Epoch 3: a state file cut short. Epoch 2: its manifest cut short.
        let f = s.file_path(3, "query=q/partition=0.arrow");
        s.store
            .put(&f, PutPayload::from_static(b"p0"))
            .await
            .expect("put");
        let m = s.manifest_path(2);
        let bytes = s
            .store
            .get(&m)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        s.store
            .put(&m, PutPayload::from(bytes.slice(..bytes.len() / 2)))
            .await
            .expect("put");
        let r = s.restore().await.expect("restore").expect("an epoch");
        assert_eq!(r.manifest.epoch, 1);
        assert_eq!(r.files["query=q/partition=0.arrow"], Bytes::from("p0 100"));
        assert_eq!(s.corrupt_epochs_skipped(), 2);
        // A missing file is damage too.
        s.store
            .delete(&s.file_path(1, "query=q/final.arrow"))
            .await
            .expect("delete");
        assert!(s.restore().await.expect("restore").is_none());
        assert_eq!(s.corrupt_epochs_skipped(), 5);
    }

    #[tokio::test]
    async fn gc_keeps_the_newest_epochs() {
        let s = CheckpointStore::new(Arc::new(InMemory::new()), Path::from("a/b"), 2);
        for n in 1..=4 {
            commit(&s, n * 100).await;
        }
        let plan = s.gc().await.expect("gc");
        assert_eq!(plan.manifests, vec![1, 2]);
        assert_eq!(plan.epochs, vec![1, 2]);
        let l = s.listing().await.expect("listing");
        assert_eq!(l.manifests, [3, 4].into());
        assert_eq!(l.epochs, [3, 4].into());
        assert_eq!(
            s.restore()
                .await
                .expect("restore")
                .expect("epoch")
                .manifest
                .epoch,
            4
        );
        let bad = s
            .commit("n", 1, 0, vec![], vec![("a/../b".into(), Bytes::new())])
            .await;
        assert!(bad.is_err());
    }
}
