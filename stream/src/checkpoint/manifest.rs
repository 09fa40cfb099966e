//! The manifest of one checkpoint epoch, and its encoding.
//!
//! Encoded as one line of JSON followed by a line `crc32=<8 hex digits>` over the JSON
//! bytes, so that a manifest cut short or changed on disk is detected rather than
//! read as a smaller checkpoint.

use serde::{Deserialize, Serialize};

/// The manifest format this version writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// Where a partition resumes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceOffset {
    pub topic: String,
    pub partition: i32,
    /// The offset of the first record the checkpointed state does not reflect.
    pub next_offset: i64,
    /// The generation the node held the partition with (cluster mode; 0 alone).
    #[serde(default)]
    pub generation: u64,
}

/// One state file of an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// The file's name within its epoch (also says whose state it is, e.g.
    /// `query=temp_1m/partition=3.arrow`).
    pub name: String,
    pub bytes: u64,
    pub crc32: u32,
}

impl StateFile {
    /// The entry for `data` stored under `name`.
    pub fn of(name: &str, data: &[u8]) -> Self {
        StateFile {
            name: name.to_string(),
            bytes: data.len() as u64,
            crc32: crc32fast::hash(data),
        }
    }

    /// Whether `data` is this file, whole and unchanged.
    pub fn verify(&self, data: &[u8]) -> Result<(), String> {
        if data.len() as u64 != self.bytes {
            return Err(format!(
                "state file `{}` has {} bytes, the manifest says {}",
                self.name,
                data.len(),
                self.bytes
            ));
        }
        let crc = crc32fast::hash(data);
        if crc != self.crc32 {
            return Err(format!(
                "state file `{}` has CRC-32 {crc:08x}, the manifest says {:08x}",
                self.name, self.crc32
            ));
        }
        Ok(())
    }
}

/// What makes an epoch visible: its files and the offsets they reflect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub epoch: u64,
    /// The node that wrote it.
    pub node: String,
    /// The partition assignment's generation the state was taken under.
    pub generation: u64,
    /// Wall-clock time of the cut (ms).
    pub taken_ms: i64,
    pub sources: Vec<SourceOffset>,
    pub files: Vec<StateFile>,
}

impl Manifest {
    /// The manifest's bytes: the JSON line, then its checksum line.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(format!("\ncrc32={crc:08x}\n").as_bytes());
        out
    }

    /// Reads a manifest written by [`Manifest::encode`]; says what is wrong otherwise.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "the manifest is not UTF-8")?;
        let body_and_sum = text
            .strip_suffix('\n')
            .ok_or("the manifest is cut short (no final newline)")?;
        let (body, sum) = body_and_sum
            .rsplit_once('\n')
            .ok_or("the manifest is cut short (no checksum line)")?;
        // Exactly as written (8 lower-case digits), so that no other spelling passes.
        let want = sum
            .strip_prefix("crc32=")
            .filter(|h| h.len() == 8 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("the manifest's checksum line `{sum}` is not crc32=<hex>"))?;
        let got = crc32fast::hash(body.as_bytes());
        if got != want {
            return Err(format!(
                "the manifest's CRC-32 is {got:08x}, its checksum line says {want:08x}"
            ));
        }
        let m: Manifest =
            serde_json::from_str(body).map_err(|e| format!("the manifest does not parse: {e}"))?;
        if m.version != MANIFEST_VERSION {
            return Err(format!(
                "manifest version {} (this version reads {MANIFEST_VERSION})",
                m.version
            ));
        }
        Ok(m)
    }

    /// The entry of the file named `name`.
    pub fn file(&self, name: &str) -> Option<&StateFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The next offset recorded for a partition.
    pub fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.sources
            .iter()
            .find(|s| s.topic == topic && s.partition == partition)
            .map(|s| s.next_offset)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            epoch: 7,
            node: "processor-1".into(),
            generation: 3,
            taken_ms: 1_764_000_000_000,
            sources: vec![SourceOffset {
                topic: "edgeflow.aggregates".into(),
                partition: 2,
                next_offset: 1234,
                generation: 0,
            }],
            files: vec![StateFile::of("query=q/partition=2.arrow", b"state")],
        }
    }

    #[test]
    fn a_manifest_reads_back_and_finds_its_entries() {
        let m = manifest();
        let back = Manifest::decode(&m.encode()).expect("decodes");
        assert_eq!(back, m);
        assert_eq!(back.next_offset("edgeflow.aggregates", 2), Some(1234));
        assert_eq!(back.next_offset("edgeflow.aggregates", 1), None);
        let f = back.file("query=q/partition=2.arrow").expect("listed");
        assert!(f.verify(b"state").is_ok());
        assert!(f.verify(b"stat").unwrap_err().contains("has 4 bytes"));
        assert!(f.verify(b"stale").unwrap_err().contains("CRC-32"));
    }

    proptest! {
        /// Any truncation or any single changed byte of a manifest is detected.
        #[test]
        fn a_damaged_manifest_is_refused(cut in 0usize..400, flip in 0usize..400, bit in 0u8..8) {
            let bytes = manifest().encode();
            let cut = cut % bytes.len();
            prop_assert!(Manifest::decode(&bytes[..cut]).is_err());
            let mut changed = bytes.clone();
            let i = flip % changed.len();
            changed[i] ^= 1 << bit;
            prop_assert!(Manifest::decode(&changed).is_err(), "byte {} bit {}", i, bit);
        }
    }
}
