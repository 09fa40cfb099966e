//! Quarantine for log records that cannot be decoded.
//!
//! Records in the input journal and the forward log are checksummed by the disk log, so
//! one that does not decode is a bug (or a file written by an incompatible version), not
//! disk damage. It is never dropped silently: it is copied here, counted in
//! `edgeflow_edge_quarantined_records_total` and logged, and the pipeline goes on.
//!
//! Layout, under `<data_dir>/quarantine/`:
//!
//! ```text
//! <log>-<seq>.bin      the record's bytes, exactly as read from the log
//! <log>-<seq>.reason   one line of text: why it could not be decoded
//! ```
//!
//! `<log>` is `journal` or `forward`; `<seq>` is the record's sequence number in that log
//! (20 digits). Both files are fsynced before the record leaves its log.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Where quarantined records of one agent go.
#[derive(Clone, Debug)]
pub struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    /// Quarantine under `data_dir/quarantine` (created on first use).
    pub fn new(data_dir: &Path) -> Self {
        Quarantine {
            dir: data_dir.join("quarantine"),
        }
    }

    /// Keeps `bytes` (record `seq` of `log`) with `reason`; returns the data file's path.
    pub fn keep(&self, log: &str, seq: u64, bytes: &[u8], reason: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io("creating the quarantine directory", &self.dir, e))?;
        let stem = format!("{log}-{seq:020}");
        let data = self.dir.join(format!("{stem}.bin"));
        write_synced(&data, bytes)?;
        write_synced(
            &self.dir.join(format!("{stem}.reason")),
            format!("{reason}\n").as_bytes(),
        )?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("syncing the quarantine directory", &self.dir, e))?;
        Ok(data)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path)
        .map_err(|e| Error::io("writing a quarantined record", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("writing a quarantined record", path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_quarantined_record_keeps_its_bytes_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path());
        let path = q
            .keep("journal", 42, b"\x00\xffbad", "unknown tag 9")
            .unwrap();
        assert_eq!(
            path,
            dir.path()
                .join("quarantine/journal-00000000000000000042.bin")
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"\x00\xffbad");
        assert_eq!(
            std::fs::read_to_string(path.with_extension("reason")).unwrap(),
            "unknown tag 9\n"
        );
    }
}
