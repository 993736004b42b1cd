//! Atomic, checksummed state files.
//!
//! A write goes to a temporary file in the same directory (mode 0600), is
//! fsynced, renamed over the state and the directory is fsynced: a crash at any
//! point leaves either the old or the new file, never a torn one. The first
//! write of a run hard-links the previous file to `<state>.backup`, so the
//! backup is the state as it was before this command changed anything.
//!
//! The last field of the file is `"checksum": "sha256:<hex>"`, the SHA-256 of
//! the bytes before it (with the object closed). A file that does not parse,
//! lacks the checksum or does not match it is refused, and never overwritten.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::model::{State, FORMAT_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {reason}.\n  It was not modified. The previous good state is in {backup}{backup_note}; inspect both, then copy the backup over the state if it is right")]
    Corrupt {
        path: String,
        reason: String,
        backup: String,
        backup_note: String,
    },
    #[error("state file {path} has format version {found}, but this capi ({ours}) reads version {expected}; use a newer capi")]
    FutureFormat {
        path: String,
        found: u32,
        expected: u32,
        ours: String,
    },
    #[error("cannot write state {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    backup_done: bool,
}

const CHECKSUM_KEY: &str = ",\n  \"checksum\": \"";

impl StateStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateStore {
            path: path.into(),
            backup_done: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn backup_path(&self) -> PathBuf {
        with_suffix(&self.path, ".backup")
    }

    /// Load the state; `None` when the file does not exist yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StateError::Read {
                    path: self.path.display().to_string(),
                    source: e,
                })
            }
        };
        decode(&bytes)
            .map(Some)
            .map_err(|reason| self.corrupt(reason))
    }

    fn corrupt(&self, reason: String) -> StateError {
        if let Some(rest) = reason.strip_prefix("future:") {
            let found = rest.parse().unwrap_or(0);
            return StateError::FutureFormat {
                path: self.path.display().to_string(),
                found,
                expected: FORMAT_VERSION,
                ours: env!("CARGO_PKG_VERSION").into(),
            };
        }
        let backup = self.backup_path();
        let note = match fs::read(&backup) {
            Ok(b) if decode(&b).is_ok() => " (it loads and its checksum is valid)".to_string(),
            Ok(_) => " (but it does not load either)".to_string(),
            Err(_) => " (but there is no backup file)".to_string(),
        };
        StateError::Corrupt {
            path: self.path.display().to_string(),
            reason,
            backup: backup.display().to_string(),
            backup_note: note,
        }
    }

    /// Write atomically. The first call of a run preserves the previous file as
    /// `<state>.backup`.
    pub fn save(&mut self, state: &State) -> Result<(), StateError> {
        let bytes = encode(state);
        self.write_bytes(&bytes)
    }

    /// Write pre-encoded bytes (from [`encode`]) atomically.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let err = |e: std::io::Error| StateError::Write {
            path: self.path.display().to_string(),
            source: e,
        };
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !self.backup_done {
            if self.path.exists() {
                let tmp = with_suffix(&self.path, &format!(".backup.tmp.{}", std::process::id()));
                let _ = fs::remove_file(&tmp);
                if fs::hard_link(&self.path, &tmp).is_err() {
                    fs::copy(&self.path, &tmp).map_err(err)?;
                }
                fs::rename(&tmp, self.backup_path()).map_err(err)?;
            }
            self.backup_done = true;
        }
        let tmp = with_suffix(&self.path, &format!(".tmp.{}", std::process::id()));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        fs::rename(&tmp, &self.path).map_err(err)?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Serialise with the trailing checksum.
pub fn encode(state: &State) -> Vec<u8> {
    let mut st = state.clone();
    st.checksum = None;
    encode_checksummed(&st)
}

/// Pretty JSON of `value` (whose own `checksum` field must be unset) followed
/// by `"checksum": "sha256:<hex of everything before it>"` as the last field.
pub fn encode_checksummed(value: &impl serde::Serialize) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).expect("serialises");
    // body ends with "\n}"; its hash covers exactly these bytes.
    let sum = hex::encode(Sha256::digest(&body));
    body.truncate(body.len() - 2);
    body.extend_from_slice(CHECKSUM_KEY.as_bytes());
    body.extend_from_slice(b"sha256:");
    body.extend_from_slice(sum.as_bytes());
    body.extend_from_slice(b"\"\n}\n");
    body
}

/// Verify the checksum and parse.
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    let text = verify_checksummed(bytes)?;
    match serde_json::from_str::<State>(text) {
        Ok(s) if s.format_version <= FORMAT_VERSION => Ok(s),
        Ok(s) => Err(format!("future:{}", s.format_version)),
        Err(e) => {
            // A newer format may not parse: say so rather than "corrupt".
            #[derive(serde::Deserialize)]
            struct Version {
                format_version: u32,
            }
            match serde_json::from_str::<Version>(text) {
                Ok(v) if v.format_version > FORMAT_VERSION => {
                    Err(format!("future:{}", v.format_version))
                }
                _ => Err(format!("it does not match the state format ({e})")),
            }
        }
    }
}

/// Check the trailing checksum written by [`encode_checksummed`]; returns the text.
pub fn verify_checksummed(bytes: &[u8]) -> Result<&str, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())?;
    let Some(at) = text.rfind(CHECKSUM_KEY) else {
        return Err(match serde_json::from_str::<serde_json::Value>(text) {
            Err(e) => format!("it is not valid JSON ({e}); it may have been truncated"),
            Ok(_) => "it has no checksum field (was it edited by hand?)".to_string(),
        });
    };
    let tail = &text[at + CHECKSUM_KEY.len()..];
    let Some(end) = tail.find('"') else {
        return Err("the checksum field is truncated".into());
    };
    let stated = &tail[..end];
    if tail[end..].trim_end() != "\"\n}" {
        return Err(
            "unexpected content after the checksum; the file may be truncated or edited".into(),
        );
    }
    let mut body = Vec::with_capacity(at + 2);
    body.extend_from_slice(text[..at].as_bytes());
    body.extend_from_slice(b"\n}");
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    if actual != stated {
        return Err(format!("checksum mismatch (the file says {stated}, its content hashes to {actual}); it was modified or damaged"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::*;
    use crate::state::model::*;

    fn sample() -> State {
        let mut s = State::new("lin".into());
        s.upsert(Resource {
            address: Address("c/pki".into()),
            kind: ResourceKind::Pki,
            provider: ProviderKind::Local,
            status: Status::Ready,
            attributes: Spec::Pki(PkiSpec {
                encryption_algorithm: "RSA-2048".into(),
                ca_validity_days: 3650,
                external_etcd: false,
            }),
            observed: Default::default(),
            sensitive: [("ca.key".to_string(), "secret".to_string())].into(),
            dependencies: vec![],
            sequence: 1,
            error: None,
        });
        s
    }

    #[test]
    fn roundtrip_and_checksum() {
        let s = sample();
        let bytes = encode(&s);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.resources, s.resources);
        assert!(back.checksum.unwrap().starts_with("sha256:"));
        // Every truncation is refused.
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 3] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A flipped byte inside the body is refused.
        let mut bad = bytes.clone();
        let i = bad.iter().position(|&b| b == b'l').unwrap();
        bad[i] = b'L';
        assert!(decode(&bad).unwrap_err().contains("checksum mismatch"));
    }

    #[test]
    fn atomic_save_backup_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("capi.state.json");
        let mut store = StateStore::new(&p);
        assert!(store.load().unwrap().is_none());
        let mut s = sample();
        store.save(&s).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        s.serial = 5;
        let mut store2 = StateStore::new(&p);
        store2.save(&s).unwrap();
        s.serial = 6;
        store2.save(&s).unwrap();
        // backup = what was there before this run's first write
        let backup = decode(&fs::read(store2.backup_path()).unwrap()).unwrap();
        assert_eq!(backup.serial, 0);
        assert_eq!(store2.load().unwrap().unwrap().serial, 6);
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn corrupt_is_refused_with_backup_hint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        fs::write(&p, b"{\"format_version\": 1, \"ser").unwrap();
        let err = StateStore::new(&p).load().unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert!(err.contains("s.json.backup"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"{\"format_version\": 1, \"ser");
    }
}
