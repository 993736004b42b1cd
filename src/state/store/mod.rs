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
//! end. The apply's writer creates the next journal as soon as a snapshot is
//! written ([`FileStore::open_journal`]), so the commit after it only
//! appends; a journal that holds only its header is removed when the apply
//! ends. Loading reads the snapshot and replays the journal's records newer
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
    #[error("state file {path} is corrupt: {reason}.\n  It was not modified. {advice}")]
    Corrupt {
        path: String,
        reason: String,
        /// What to do: where a good copy is, if there is one.
        advice: String,
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
    /// The journal open for appends (shared with the thread that syncs
    /// it), its size and its header's.
    journal: Option<Arc<File>>,
    journal_bytes: u64,
    header_bytes: u64,
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
            header_bytes: 0,
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

    /// Whether the open journal holds a record (not only its header).
    pub(crate) fn journal_has_records(&self) -> bool {
        self.journal_bytes > self.header_bytes
    }

    /// The open journal file, shared, to make it durable from another
    /// thread while appends go on (a pointer, not a second descriptor: one
    /// `dup` and one `close` less per commit).
    pub(crate) fn journal_handle(&self) -> Result<Arc<File>, StateError> {
        match &self.journal {
            Some(f) => Ok(f.clone()),
            None => Err(StateError::Write {
                path: self.journal_path().display().to_string(),
                source: std::io::Error::other("no journal is open"),
            }),
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
        self.open_journal_unguarded(lineage, base_serial)?;
        let line = journal_line(record);
        let f = self.journal.as_deref().expect("opened above");
        (&mut &*f).write_all(&line).map_err(err)?;
        self.journal_bytes += line.len() as u64;
        Ok(())
    }

    /// Create the journal that follows the snapshot last written by this
    /// store (serial `base_serial`), unless it is open already. The apply's
    /// writer calls this right after a snapshot, while the commit that
    /// follows is being made; otherwise the next append does.
    pub(crate) fn open_journal(
        &mut self,
        lineage: &str,
        base_serial: u64,
    ) -> Result<(), StateError> {
        self.check_guard()?;
        let opened = self.open_journal_unguarded(lineage, base_serial);
        self.explain_failure(opened)
    }

    fn open_journal_unguarded(
        &mut self,
        lineage: &str,
        base_serial: u64,
    ) -> Result<(), StateError> {
        if self.journal.is_some() {
            return Ok(());
        }
        let path = self.journal_path();
        let err = |e: std::io::Error| StateError::Write {
            path: path.display().to_string(),
            source: e,
        };
        // The snapshot before this removed any journal; whatever has the
        // name now was planted: replace it, never write through it.
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
        // The name is made durable now; the header becomes durable with the
        // first record (the syncer's fdatasync of this file covers both),
        // before that record is acknowledged. A crash before then leaves an
        // empty journal or one with a torn header line, which a load skips
        // as it skips any torn last line.
        sync_dir(&dir_of(&self.path));
        self.journal_bytes = header.len() as u64;
        self.header_bytes = header.len() as u64;
        self.journal = Some(Arc::new(f));
        Ok(())
    }

    /// The apply is over and nothing was appended since the last snapshot:
    /// remove the journal [`FileStore::open_journal`] created for it (a
    /// header alone; if a crash brings it back, a load finds nothing to
    /// replay and the next append replaces it).
    pub(crate) fn discard_empty_journal(&mut self) {
        if self.journal.is_some() && !self.journal_has_records() {
            self.journal = None;
            self.journal_bytes = 0;
            self.header_bytes = 0;
            let _ = fs::remove_file(self.journal_path());
        }
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
                advice: self.journal_advice(),
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
                advice: self.journal_advice(),
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
            advice: self.journal_advice(),
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
        let backup = self.backup_path().display().to_string();
        let own_copy =
            "restore it from a copy of your own (the output of `capi state pull`, version control)";
        let advice = match fs::read(self.backup_path()) {
            Ok(b) if decode(&b).is_ok() => format!(
                "The previous good state is in {backup} (it loads and its checksum is valid): inspect both, then copy the backup over the state if it is right"
            ),
            Ok(_) => format!("Its backup {backup} does not load either: {own_copy}"),
            Err(_) => format!(
                "There is no backup ({backup} is kept by the first write of a command that changes an existing state). If the file was edited by hand, undo the edit (the checksum covers all of it); otherwise {own_copy}"
            ),
        };
        StateError::Corrupt {
            path: self.path.display().to_string(),
            reason,
            advice,
        }
    }

    /// What to do about a damaged journal.
    fn journal_advice(&self) -> String {
        format!(
            "The state is the snapshot {} with the operations this journal recorded since: keep a copy of both before any repair. Moving the journal aside loses those operations: machines created since are then unrecorded (`capi import` adopts them), but certificate authorities and join tokens generated since cannot be recovered that way",
            self.path.display()
        )
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
        self.header_bytes = 0;
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
mod tests;
