//! Atomic, checksummed state files.
//!
//! A write goes to an exclusively created temporary file with a random name
//! in the same directory (mode 0600, see [`super::files`]), is fsynced,
//! renamed over the state and the directory is fsynced: a crash at any point
//! leaves either the old or the new file, never a torn one, and nothing
//! planted beside the state receives its bytes. The first write of a run
//! hard-links the previous file to `<state>.backup`, so the backup is the
//! state as it was before this command changed anything. A writer holding the
//! lock passes a guard that is checked before every write: a lock that was
//! removed or replaced stops the writer before it commits anything more.
//!
//! The last field of the file is `"checksum": "sha256:<hex>"`, the SHA-256 of
//! the bytes before it (with the object closed). A file that does not parse,
//! lacks the checksum or does not match it is refused, and never overwritten.
//!
//! During apply, rewriting the whole file for every operation would make the
//! state write, not the infrastructure, the bottleneck. Apply therefore
//! appends each group of changes to `<state>.journal` (one checksummed line
//! per commit, fsynced before the operation continues) and rewrites the
//! snapshot when the journal has grown as large as the snapshot, and at the
//! end. Loading reads the snapshot and replays the journal's records newer
//! than it. Only an unterminated last line is a torn append (a crash in the
//! middle of it, never acknowledged) and is ignored; a complete line whose
//! checksum fails is corruption, wherever it is. Every snapshot write removes
//! the journal. A reader racing a compaction (old snapshot, new journal)
//! reads again instead of reporting corruption.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::codec::{decode, journal_line, journal_payload, JournalHeader, JournalRecord};
use super::files::{create_new_private, dir_of, preserve_copy, sync_dir, write_private_atomic};
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
    #[error("state file {path} could not be read consistently: {reason}.\n  Another capi ({holder}) is writing it right now; nothing is wrong with the files. Wait for it to finish and run this again; do not copy or edit the state files while it runs")]
    Busy {
        path: String,
        reason: String,
        holder: String,
    },
    #[error("stopped before writing the state {path}: {reason}")]
    LockLost { path: String, reason: String },
    #[error("state file {path} has format version {found}, but this capi ({ours}) reads version {expected}; use a newer capi")]
    FutureFormat {
        path: String,
        found: u32,
        expected: u32,
        ours: String,
    },
    #[error("the state at {location} cannot be used: {reason}")]
    Backend { location: String, reason: String },
    #[error("{location} holds data that is not a capi state ({reason}). Nothing was read or written; choose another prefix")]
    Foreign { location: String, reason: String },
    #[error("the state at {location} was migrated to {to}: use --state {to} (this copy is kept intact for reference and is no longer used)")]
    Migrated { location: String, to: String },
    #[error("{0}. Nothing was changed")]
    Secret(String),
    #[error("cannot write state {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Checked before every write: `Err` stops the writer (the lock it holds is
/// gone or belongs to someone else now).
#[derive(Clone)]
pub(crate) struct WriteGuard(Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl WriteGuard {
    pub(crate) fn new(check: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        WriteGuard(Arc::new(check))
    }
}

impl std::fmt::Debug for WriteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteGuard")
    }
}

/// Why a load attempt did not give a state.
enum LoadError {
    /// A reader saw a snapshot and a journal from two different moments (a
    /// writer compacted in between): read both again.
    Raced(String),
    Failed(StateError),
}

impl From<StateError> for LoadError {
    fn from(e: StateError) -> Self {
        LoadError::Failed(e)
    }
}

#[derive(Debug)]
pub(crate) struct FileStore {
    path: PathBuf,
    guard: Option<WriteGuard>,
    backup_done: bool,
    /// The journal open for appends, and its size.
    journal: Option<File>,
    journal_bytes: u64,
    snapshot_bytes: u64,
}

impl FileStore {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        FileStore {
            path: path.into(),
            guard: None,
            backup_done: false,
            journal: None,
            journal_bytes: 0,
            snapshot_bytes: 0,
        }
    }

    /// The state file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Check `guard` before every write from now on.
    pub(crate) fn set_guard(&mut self, guard: WriteGuard) {
        self.guard = Some(guard);
    }

    fn check_guard(&self) -> Result<(), StateError> {
        match &self.guard {
            Some(g) => (g.0)().map_err(|reason| StateError::LockLost {
                path: self.path.display().to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// `<state>.journal`: changes appended during apply since the last snapshot.
    pub(crate) fn journal_path(&self) -> PathBuf {
        with_suffix(&self.path, ".journal")
    }

    /// Bytes appended to the journal since the last snapshot, and the size of
    /// that snapshot: the journal writer compacts when the first reaches the second.
    pub(crate) fn journal_len(&self) -> (u64, u64) {
        (self.journal_bytes, self.snapshot_bytes)
    }

    /// A second handle on the open journal file, to make it durable from
    /// another thread while appends go on.
    pub(crate) fn journal_handle(&self) -> Result<File, StateError> {
        let err = |e: std::io::Error| StateError::Write {
            path: self.journal_path().display().to_string(),
            source: e,
        };
        match &self.journal {
            Some(f) => f.try_clone().map_err(err),
            None => Err(err(std::io::Error::other("no journal is open"))),
        }
    }

    /// Append one record after the snapshot last written by this store (in
    /// the file, not yet durable: fsync a [`FileStore::journal_handle`]). Only
    /// valid after a [`FileStore::write_bytes`] in this run.
    pub(crate) fn append(
        &mut self,
        lineage: &str,
        base_serial: u64,
        record: &JournalRecord,
    ) -> Result<(), StateError> {
        self.check_guard()?;
        let appended = self.append_unguarded(lineage, base_serial, record);
        self.explain_failure(appended)
    }

    fn append_unguarded(
        &mut self,
        lineage: &str,
        base_serial: u64,
        record: &JournalRecord,
    ) -> Result<(), StateError> {
        let path = self.journal_path();
        let err = |e: std::io::Error| StateError::Write {
            path: path.display().to_string(),
            source: e,
        };
        if self.journal.is_none() {
            // The snapshot before this append removed any journal; whatever
            // has the name now was planted: replace it, never write through it.
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
            let mut f = create_new_private(&path).map_err(err)?;
            let header = journal_line(&JournalHeader {
                lineage: lineage.to_string(),
                base_serial,
            });
            f.write_all(&header).map_err(err)?;
            f.sync_all().map_err(err)?;
            sync_dir(&dir_of(&self.path));
            self.journal_bytes = header.len() as u64;
            self.journal = Some(f);
        }
        let line = journal_line(record);
        let f = self.journal.as_mut().expect("opened above");
        f.write_all(&line).map_err(err)?;
        self.journal_bytes += line.len() as u64;
        Ok(())
    }

    /// Replay the journal (if any) onto the snapshot just loaded.
    fn replay(&self, state: Option<State>) -> Result<Option<State>, LoadError> {
        let path = self.journal_path();
        if let Some(target) = super::files::symlink_target(&path) {
            return Err(StateError::Corrupt {
                path: path.display().to_string(),
                reason: format!(
                    "it is a symlink (to {}), which capi never creates; remove it",
                    target.display()
                ),
                backup: self.path.display().to_string(),
                backup_note: " (the snapshot the journal follows)".into(),
            }
            .into());
        }
        let text = match fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(state),
            Err(e) => {
                return Err(StateError::Read {
                    path: path.display().to_string(),
                    source: e,
                }
                .into())
            }
        };
        let bad = |reason: String| {
            LoadError::Failed(StateError::Corrupt {
                path: path.display().to_string(),
                reason,
                backup: self.path.display().to_string(),
                backup_note: " (the snapshot the journal follows)".into(),
            })
        };
        let Some(mut state) = state else {
            return Err(bad(format!(
                "there is a journal but no state file {}; a journal alone is not a state",
                self.path.display()
            )));
        };
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let mut changed = false;
        for (i, raw) in lines.iter().enumerate() {
            let Some(json) = raw.strip_suffix('\n').and_then(journal_payload) else {
                if i + 1 == lines.len() && !raw.ends_with('\n') {
                    // A crash in the middle of an append: that commit was
                    // never acknowledged, so nothing depended on it.
                    break;
                }
                return Err(bad(format!(
                    "line {} is damaged (checksum mismatch){}",
                    i + 1,
                    if i + 1 == lines.len() {
                        "; it is complete, so it was acknowledged: this is not a torn write"
                    } else {
                        ""
                    }
                )));
            };
            if i == 0 {
                let h: JournalHeader = serde_json::from_str(json)
                    .map_err(|e| bad(format!("its header does not parse ({e})")))?;
                if h.lineage != state.lineage {
                    return Err(bad(format!(
                        "it follows state {} serial {}, but the state file is {} serial {}",
                        h.lineage, h.base_serial, state.lineage, state.serial
                    )));
                }
                if h.base_serial > state.serial {
                    // Written after a snapshot newer than the one just read.
                    return Err(LoadError::Raced(format!(
                        "the journal follows serial {}, the snapshot read is serial {}",
                        h.base_serial, state.serial
                    )));
                }
                continue;
            }
            let r: JournalRecord = serde_json::from_str(json)
                .map_err(|e| bad(format!("line {} does not parse ({e})", i + 1)))?;
            if r.serial <= state.serial {
                continue; // already in the snapshot (written after this record)
            }
            if r.serial != state.serial + 1 {
                return Err(bad(format!(
                    "line {} has serial {} after {}",
                    i + 1,
                    r.serial,
                    state.serial
                )));
            }
            r.apply_to(&mut state);
            changed = true;
        }
        if changed {
            state.gc_documents();
            state.checksum = None;
        }
        Ok(Some(state))
    }

    pub(crate) fn backup_path(&self) -> PathBuf {
        with_suffix(&self.path, ".backup")
    }

    /// `<state>.migrated`: names where `capi state migrate` moved the state.
    pub(crate) fn migrated_path(&self) -> PathBuf {
        with_suffix(&self.path, ".migrated")
    }

    /// Refuse a state migrated away (`<state>.migrated` exists), else load it.
    pub(crate) fn load(&self) -> Result<Option<State>, StateError> {
        if let Ok(to) = fs::read_to_string(self.migrated_path()) {
            return Err(StateError::Migrated {
                location: self.path.display().to_string(),
                to: to.trim().to_string(),
            });
        }
        self.load_ignoring_migration()
    }

    /// Write (`Some`) or remove (`None`) the migration mark.
    pub(crate) fn mark_migrated(&mut self, to: Option<&str>) -> Result<(), StateError> {
        let path = self.migrated_path();
        let done = match to {
            Some(to) => write_private_atomic(&path, format!("{to}\n").as_bytes()),
            None => match fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        };
        done.map_err(|e| StateError::Write {
            path: path.display().to_string(),
            source: e,
        })
    }

    /// Load the state; `None` when the file does not exist yet. A reader that
    /// races a writer's compaction reads again; only what stays inconsistent
    /// is reported, and never as corruption while a writer holds the lock.
    pub(crate) fn load_ignoring_migration(&self) -> Result<Option<State>, StateError> {
        const ATTEMPTS: u32 = 20;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            match self.load_once() {
                Ok(s) => return Ok(s),
                Err(LoadError::Failed(e)) => return Err(self.busy_or(e)),
                Err(LoadError::Raced(why)) => last = why,
            }
            std::thread::sleep(std::time::Duration::from_millis(5 << attempt.min(5)));
        }
        Err(self.busy_or(StateError::Corrupt {
            path: self.journal_path().display().to_string(),
            reason: last,
            backup: self.path.display().to_string(),
            backup_note: " (the snapshot the journal should follow)".into(),
        }))
    }

    fn load_once(&self) -> Result<Option<State>, LoadError> {
        // Read as it streams in; a file that is not intact and in the
        // layout capi writes is read whole below, for the verdict.
        match File::open(&self.path).and_then(super::stream::decode_streaming) {
            Ok(Some(state)) => return self.replay(Some(state)),
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.replay(None),
            Err(_) => {} // reported by the read below
        }
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.replay(None),
            Err(e) => {
                return Err(StateError::Read {
                    path: self.path.display().to_string(),
                    source: e,
                }
                .into())
            }
        };
        let state = decode(&bytes).map_err(|reason| self.corrupt(reason))?;
        self.replay(Some(state))
    }

    /// A corruption seen while another process holds the lock is most likely
    /// a write in progress: say so instead of advising repairs.
    fn busy_or(&self, e: StateError) -> StateError {
        let StateError::Corrupt { path, reason, .. } = &e else {
            return e;
        };
        match super::lock::held_by_another(&self.path) {
            Some(holder) => StateError::Busy {
                path: path.clone(),
                reason: reason.clone(),
                holder: holder
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "holder unknown".into()),
            },
            None => e,
        }
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
    #[cfg(test)]
    pub(crate) fn save(&mut self, state: &State) -> Result<(), StateError> {
        let bytes = super::codec::encode(state);
        self.write_bytes(&bytes)
    }

    /// Write pre-encoded bytes (from [`encode`]) atomically.
    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.check_guard()?;
        let written = self.write_bytes_unguarded(bytes);
        self.explain_failure(written)
    }

    /// A write that failed while the lock was being taken away (its file
    /// removed, a second capi clearing what it took for a dead writer's
    /// temporaries) is reported as the lost lock, which is the cause.
    fn explain_failure(&self, result: Result<(), StateError>) -> Result<(), StateError> {
        if let Err(StateError::Write { .. }) = &result {
            self.check_guard()?;
        }
        result
    }

    fn write_bytes_unguarded(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let err = |e: std::io::Error| StateError::Write {
            path: self.path.display().to_string(),
            source: e,
        };
        if !self.backup_done {
            if self.path.exists() {
                preserve_copy(&self.path, &self.backup_path()).map_err(err)?;
            }
            self.backup_done = true;
        }
        write_private_atomic(&self.path, bytes).map_err(err)?;
        // The snapshot holds everything the journal did.
        let ours = self.journal.is_some();
        self.journal = None;
        self.journal_bytes = 0;
        self.snapshot_bytes = bytes.len() as u64;
        // A journal this store appended to follows this lineage and the
        // snapshot holds it whole: harmless if a crash brings it back (its
        // every record is at or below the snapshot's serial, so a load
        // skips them; the next apply replaces the file before it appends),
        // so its removal is not synced. Another one (a crashed run's, under
        // a state pushed over it with another lineage) would make the state
        // unreadable: its removal is made durable.
        match fs::remove_file(self.journal_path()) {
            Ok(()) if !ours => sync_dir(&dir_of(&self.path)),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        Ok(())
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::*;
    use crate::state::codec::encode;
    use crate::state::model::*;

    fn sample() -> State {
        let mut s = State::new("lin".into());
        s.upsert(Resource {
            address: Address::parse("c/pki").unwrap(),
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
        let mut store = FileStore::new(&p);
        assert!(store.load().unwrap().is_none());
        let mut s = sample();
        store.save(&s).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        s.serial = 5;
        let mut store2 = FileStore::new(&p);
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
    fn journal_records_replay_onto_the_snapshot() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("capi.state.json");
        let mut store = FileStore::new(&p);
        let mut s = sample();
        s.serial = 1;
        store.save(&s).unwrap();
        // serial 2 upserts a copy under a new address, serial 3 removes the original
        let mut copy = s.resources[0].clone();
        copy.address = Address::parse("c/token").unwrap();
        let r2 = JournalRecord {
            serial: 2,
            next_sequence: 7,
            upsert: vec![(*copy).clone()],
            ..Default::default()
        };
        store.append("lin", 1, &r2).unwrap();
        let r3 = JournalRecord {
            serial: 3,
            next_sequence: 7,
            remove: vec![Address::parse("c/pki").unwrap()],
            ..Default::default()
        };
        store.append("lin", 1, &r3).unwrap();
        store.journal_handle().unwrap().sync_data().unwrap();
        let jp = store.journal_path();
        assert_eq!(
            fs::metadata(&jp).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = FileStore::new(&p).load().unwrap().unwrap();
        assert_eq!(loaded.serial, 3);
        assert_eq!(loaded.next_sequence, 7);
        assert_eq!(loaded.resources, vec![copy.clone()]);

        // A torn last line (a crash mid-append) is ignored.
        let whole = fs::read(&jp).unwrap();
        fs::write(&jp, &whole[..whole.len() - 5]).unwrap();
        let loaded = FileStore::new(&p).load().unwrap().unwrap();
        assert_eq!(loaded.serial, 2);
        assert_eq!(loaded.resources.len(), 2);

        // Damage before the last line is corruption, never silently skipped.
        let mut bad = whole.clone();
        let second_line = bad.iter().position(|&b| b == b'\n').unwrap() + 3;
        bad[second_line] ^= 1;
        fs::write(&jp, &bad).unwrap();
        let err = FileStore::new(&p).load().unwrap_err().to_string();
        assert!(err.contains("line 2 is damaged"), "{err}");

        // A snapshot written after the records makes them redundant: they
        // are skipped if the journal survived a crash before its removal.
        fs::write(&jp, &whole).unwrap();
        let mut later = loaded.clone();
        later.serial = 3;
        later.resources = vec![copy.clone()];
        fs::write(&p, encode(&later)).unwrap();
        let loaded = FileStore::new(&p).load().unwrap().unwrap();
        assert_eq!(loaded.serial, 3);
        assert_eq!(loaded.resources, vec![copy]);

        // Writing a snapshot removes the journal.
        let mut store = FileStore::new(&p);
        store.save(&loaded).unwrap();
        assert!(!jp.exists());
    }

    #[test]
    fn corrupt_is_refused_with_backup_hint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        fs::write(&p, b"{\"format_version\": 1, \"ser").unwrap();
        let err = FileStore::new(&p).load().unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
        assert!(err.contains("s.json.backup"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"{\"format_version\": 1, \"ser");
    }

    /// Two records after a snapshot of serial 1: serials 2 and 3.
    fn journalled(dir: &Path) -> (PathBuf, Vec<u8>) {
        let p = dir.join("capi.state.json");
        let mut store = FileStore::new(&p);
        let mut s = sample();
        s.serial = 1;
        store.save(&s).unwrap();
        for serial in [2, 3] {
            let mut r = s.resources[0].clone();
            r.sequence = serial;
            let rec = JournalRecord {
                serial,
                next_sequence: 9,
                upsert: vec![*r],
                ..Default::default()
            };
            store.append("lin", 1, &rec).unwrap();
        }
        store.journal_handle().unwrap().sync_data().unwrap();
        let jp = store.journal_path();
        (p, fs::read(jp).unwrap())
    }

    #[test]
    fn a_complete_last_line_with_a_bad_checksum_is_corruption_not_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let (p, whole) = journalled(dir.path());
        let jp = FileStore::new(&p).journal_path();
        // Flip a byte inside the last line, keeping its newline: that line
        // was complete, so it was acknowledged.
        let mut bad = whole.clone();
        let at = bad.len() - 10;
        bad[at] ^= 1;
        fs::write(&jp, &bad).unwrap();
        let err = FileStore::new(&p).load().unwrap_err().to_string();
        assert!(err.contains("line 3 is damaged"), "{err}");
        assert!(err.contains("not a torn write"), "{err}");
        // Without its newline, the same damage is a torn append: ignored.
        fs::write(&jp, &bad[..bad.len() - 1]).unwrap();
        let loaded = FileStore::new(&p).load().unwrap().unwrap();
        assert_eq!(loaded.serial, 2);
    }

    #[test]
    fn a_reader_racing_a_compaction_reads_again_instead_of_reporting_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = journalled(dir.path());
        // The writer compacted (snapshot serial 3) and started a new journal;
        // a reader that read the old snapshot (serial 1) now reads that journal.
        let store = FileStore::new(&p);
        let now = store.load().unwrap().unwrap();
        let old = fs::read(&p).unwrap();
        let mut compacted = now.clone();
        compacted.serial = 3;
        let mut w = FileStore::new(&p);
        w.save(&compacted).unwrap();
        let mut r = compacted.resources[0].clone();
        r.sequence = 4;
        w.append(
            "lin",
            3,
            &JournalRecord {
                serial: 4,
                next_sequence: 9,
                upsert: vec![*r],
                ..Default::default()
            },
        )
        .unwrap();
        w.journal_handle().unwrap().sync_data().unwrap();
        let new_snapshot = fs::read(&p).unwrap();
        fs::write(&p, &old).unwrap();
        // The new snapshot lands while the reader retries.
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            write_private_atomic(&p2, &new_snapshot).unwrap();
        });
        let loaded = FileStore::new(&p).load().unwrap().unwrap();
        t.join().unwrap();
        assert_eq!(loaded.serial, 4);
    }
}
