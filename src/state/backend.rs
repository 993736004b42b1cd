//! The state store: one trait ([`StateBackend`]) with two implementations,
//! the local file ([`super::store::FileStore`], the default) and etcd
//! ([`super::etcd::EtcdStore`]), and the handle every command uses
//! ([`StateStore`]). Where the state lives is a [`Location`], parsed from
//! `--state`/`CAPI_STATE`: a path, or `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
//!
//! A backend loads and saves whole states, commits the apply's batches of
//! changes write-ahead (each durable before the caller goes on), and locks the
//! state for a command; the lock it hands back tells whether it was lost.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::cipher::StateKey;
use super::codec::{encode, JournalRecord};
use super::etcd::client::EtcdAccess;
use super::etcd::EtcdStore;
use super::lock::{LockError, LockInfo, StateLock};
use super::model::State;
use super::store::{FileStore, StateError};

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    File(PathBuf),
    Etcd {
        /// `http://HOST:PORT`, in the order given.
        endpoints: Vec<String>,
        /// Without slashes at either end.
        prefix: String,
    },
}

impl Location {
    /// `etcd://...` or a path.
    pub(crate) fn parse(s: &str) -> Result<Location, String> {
        let Some(rest) = s.strip_prefix("etcd://") else {
            return Ok(Location::File(PathBuf::from(s)));
        };
        let (hosts, prefix) = rest.split_once('/').ok_or_else(|| {
            format!("{s}: expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX (the prefix is missing)")
        })?;
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.is_empty() {
            return Err(format!(
                "{s}: the prefix is empty; give one (etcd://HOST:PORT/capi/prod) so capi's keys do not mix with others"
            ));
        }
        let mut endpoints = Vec::new();
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| format!("{s}: endpoint {h:?} has no port (HOST:PORT)"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{s}: endpoint {h:?} is not HOST:PORT"));
            }
            endpoints.push(format!("http://{h}"));
        }
        if endpoints.is_empty() {
            return Err(format!("{s}: no endpoints (etcd://HOST:PORT/PREFIX)"));
        }
        Ok(Location::Etcd { endpoints, prefix })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Etcd { endpoints, prefix } => {
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| {
                        e.trim_start_matches("http://")
                            .trim_start_matches("https://")
                    })
                    .collect();
                write!(f, "etcd://{}/{prefix}", hosts.join(","))
            }
        }
    }
}

/// A lock held on a state; released when dropped.
pub(crate) trait HeldLock: Send + Sync + std::fmt::Debug {
    fn info(&self) -> &LockInfo;
    /// Why the lock is no longer ours, once that is known (an etcd lease
    /// that could not be renewed). A file lock is never lost this way.
    fn lost(&self) -> Option<String>;
}

impl HeldLock for StateLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }
    fn lost(&self) -> Option<String> {
        None
    }
}

/// When a commit handed to [`StateBackend::append`] is durable.
pub(crate) enum Durability {
    /// Already.
    Now,
    /// Once this file is synced.
    Sync(Arc<File>),
    /// Once this wait returns `Ok` (a write in flight).
    Wait(Box<dyn FnOnce() -> Result<(), String> + Send>),
}

/// What a state backend does. Every command reads and writes the state
/// through one of these.
pub(crate) trait StateBackend: Send + std::fmt::Debug {
    /// The state; `None` when there is none yet.
    fn load(&self) -> Result<Option<State>, StateError>;
    /// Replace the whole state.
    fn save(&mut self, state: &State) -> Result<(), StateError> {
        self.write_bytes(&encode(state))
    }
    /// Replace the whole state with an encoded one (from [`encode`]).
    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), StateError>;
    /// Whether the apply's next batch should be written as a whole snapshot
    /// (`snapshotted`: one was written in this run) rather than a record.
    fn snapshot_due(&self, snapshotted: bool) -> bool;
    /// Commit one batch of changes; when it is durable.
    fn append(
        &mut self,
        lineage: &str,
        base_serial: u64,
        record: &JournalRecord,
    ) -> Result<Durability, StateError>;
    /// Whether the end of an apply must fold appended records into a snapshot.
    fn fold_due(&self) -> bool;
    /// A snapshot of serial `base_serial` was just written and the apply
    /// goes on: get ready for the next append now, while the commit that
    /// follows is being made (a file store creates its journal). An error is
    /// left for that append to meet and report.
    fn prepare_append(&mut self, _lineage: &str, _base_serial: u64) {}
    /// The apply is over and [`StateBackend::fold_due`] said no: remove
    /// what [`StateBackend::prepare_append`] made and nothing used.
    fn finish_unfolded(&mut self) {}
    /// How long the apply's writer waits after a first change for others
    /// to join its batch (a write that costs per request, not per byte).
    fn linger(&self) -> Duration {
        Duration::ZERO
    }
    /// The most changes (one resource each, with its documents) the apply's
    /// writer gathers into one batch: where a batch larger than one request
    /// costs a slower protocol, as on etcd, the rest waits for the next.
    fn max_batch(&self) -> usize {
        usize::MAX
    }
    /// Fold: `state` is the state after every record appended; `encode`
    /// gives what [`encode`] would (the apply's writer keeps most of it
    /// encoded already).
    fn fold(
        &mut self,
        state: &State,
        encode: &mut dyn FnMut(&State) -> Vec<u8>,
    ) -> Result<(), StateError> {
        self.write_bytes(&encode(state))
    }
    /// Lock the state for `operation`, waiting up to `timeout`; writes from
    /// this store are checked against the lock from then on.
    fn lock(&mut self, operation: &str, timeout: Duration) -> Result<Box<dyn HeldLock>, LockError>;
    /// Remove a lock a dead holder left (refused while its holder lives).
    fn force_unlock(&self, id: &str) -> Result<LockInfo, LockError>;
    /// Where the state as it was before this run's first write is kept.
    fn backup(&self) -> Option<String> {
        None
    }
    /// The state even if it was migrated away (`capi state migrate`).
    fn load_unchecked(&self) -> Result<Option<State>, StateError> {
        self.load()
    }
    /// Mark `state` as migrated to `to` (it is then refused by `load`), or
    /// clear that mark (`None`).
    fn set_migrated(&mut self, state: &State, to: Option<&str>) -> Result<(), StateError>;
}

impl StateBackend for FileStore {
    fn load(&self) -> Result<Option<State>, StateError> {
        FileStore::load(self)
    }
    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        FileStore::write_bytes(self, bytes)
    }
    fn snapshot_due(&self, snapshotted: bool) -> bool {
        let (journal, snapshot) = self.journal_len();
        !snapshotted || journal >= snapshot.max(256 * 1024)
    }
    fn append(
        &mut self,
        lineage: &str,
        base_serial: u64,
        record: &JournalRecord,
    ) -> Result<Durability, StateError> {
        FileStore::append(self, lineage, base_serial, record)?;
        self.journal_handle().map(Durability::Sync)
    }
    fn fold_due(&self) -> bool {
        self.journal_has_records()
    }
    fn prepare_append(&mut self, lineage: &str, base_serial: u64) {
        let _ = self.open_journal(lineage, base_serial);
    }
    fn finish_unfolded(&mut self) {
        self.discard_empty_journal();
    }
    fn lock(&mut self, operation: &str, timeout: Duration) -> Result<Box<dyn HeldLock>, LockError> {
        let lock = StateLock::acquire(self.path(), operation, timeout)?;
        self.set_guard(lock.guard()?);
        Ok(Box::new(lock))
    }
    fn force_unlock(&self, id: &str) -> Result<LockInfo, LockError> {
        StateLock::force_unlock(self.path(), id)
    }
    fn backup(&self) -> Option<String> {
        Some(self.backup_path().display().to_string())
    }
    fn load_unchecked(&self) -> Result<Option<State>, StateError> {
        self.load_ignoring_migration()
    }
    fn set_migrated(&mut self, _state: &State, to: Option<&str>) -> Result<(), StateError> {
        self.mark_migrated(to)
    }
}

/// The state store a command uses: a backend chosen by [`Location`].
#[derive(Debug)]
pub struct StateStore {
    backend: Box<dyn StateBackend>,
    /// The state key (`CAPI_STATE_KEY`, `--state-key-file`), if given.
    key: Option<Arc<StateKey>>,
}

impl StateStore {
    /// The local file backend at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateStore {
            backend: Box::new(FileStore::new(path)),
            key: None,
        }
    }

    /// A store over any backend (tests of what drives one).
    #[cfg(test)]
    pub(crate) fn with_backend(backend: Box<dyn StateBackend>) -> Self {
        StateStore { backend, key: None }
    }

    /// The backend at `location` (`lock_ttl`: the etcd lease's time to
    /// live; `access`: etcd's user and password, TLS files).
    pub(crate) fn open(
        location: &Location,
        lock_ttl: Duration,
        access: EtcdAccess,
    ) -> Result<Self, StateError> {
        Ok(match location {
            Location::File(p) => StateStore::new(p),
            Location::Etcd { endpoints, prefix } => StateStore {
                backend: Box::new(EtcdStore::connect(
                    endpoints.clone(),
                    prefix,
                    &location.to_string(),
                    (lock_ttl, access),
                )?),
                key: None,
            },
        })
    }

    /// Sensitive values are read (and new ones sealed) with `key`.
    pub(crate) fn with_key(mut self, key: Option<Arc<StateKey>>) -> Self {
        self.key = key;
        self
    }

    /// The state key given, if any.
    pub(crate) fn key(&self) -> Option<&Arc<StateKey>> {
        self.key.as_ref()
    }

    /// The state. With a key given, every sealed value must open with it
    /// (a wrong key is refused here, before anything is changed).
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let state = self.backend.load()?;
        self.check_key(state.as_ref())?;
        Ok(state)
    }

    fn check_key(&self, state: Option<&State>) -> Result<(), StateError> {
        match (state, &self.key) {
            (Some(s), Some(k)) => s
                .check_key(Some(k))
                .map_err(|e| StateError::Secret(e.to_string())),
            _ => Ok(()),
        }
    }

    pub fn save(&mut self, state: &State) -> Result<(), StateError> {
        self.backend.save(state)
    }

    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.backend.write_bytes(bytes)
    }

    pub(crate) fn snapshot_due(&self, snapshotted: bool) -> bool {
        self.backend.snapshot_due(snapshotted)
    }

    pub(crate) fn append(
        &mut self,
        lineage: &str,
        base_serial: u64,
        record: &JournalRecord,
    ) -> Result<Durability, StateError> {
        self.backend.append(lineage, base_serial, record)
    }

    pub(crate) fn fold_due(&self) -> bool {
        self.backend.fold_due()
    }

    pub(crate) fn prepare_append(&mut self, lineage: &str, base_serial: u64) {
        self.backend.prepare_append(lineage, base_serial)
    }

    pub(crate) fn finish_unfolded(&mut self) {
        self.backend.finish_unfolded()
    }

    pub(crate) fn linger(&self) -> Duration {
        self.backend.linger()
    }

    pub(crate) fn max_batch(&self) -> usize {
        self.backend.max_batch()
    }

    pub(crate) fn fold(
        &mut self,
        state: &State,
        encode: &mut dyn FnMut(&State) -> Vec<u8>,
    ) -> Result<(), StateError> {
        self.backend.fold(state, encode)
    }

    pub(crate) fn lock(
        &mut self,
        operation: &str,
        timeout: Duration,
    ) -> Result<Box<dyn HeldLock>, LockError> {
        self.backend.lock(operation, timeout)
    }

    pub(crate) fn force_unlock(&self, id: &str) -> Result<LockInfo, LockError> {
        self.backend.force_unlock(id)
    }

    pub(crate) fn load_unchecked(&self) -> Result<Option<State>, StateError> {
        let state = self.backend.load_unchecked()?;
        self.check_key(state.as_ref())?;
        Ok(state)
    }

    pub(crate) fn set_migrated(
        &mut self,
        state: &State,
        to: Option<&str>,
    ) -> Result<(), StateError> {
        self.backend.set_migrated(state, to)
    }

    /// " Backup: PATH" when the backend keeps one, for messages.
    pub(crate) fn backup_note(&self) -> String {
        self.backend
            .backup()
            .map(|b| format!(" Backup: {b}"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            Location::parse("capi.state.json").unwrap(),
            Location::File("capi.state.json".into())
        );
        let l = Location::parse("etcd://127.0.0.1:23791,127.0.0.1:23792/capi/prod/").unwrap();
        assert_eq!(
            l,
            Location::Etcd {
                endpoints: vec![
                    "http://127.0.0.1:23791".into(),
                    "http://127.0.0.1:23792".into()
                ],
                prefix: "capi/prod".into()
            }
        );
        assert_eq!(
            l.to_string(),
            "etcd://127.0.0.1:23791,127.0.0.1:23792/capi/prod"
        );
        for bad in [
            "etcd://127.0.0.1:23791",
            "etcd://127.0.0.1:23791/",
            "etcd://127.0.0.1/x",
            "etcd:///x",
            "etcd://h:notaport/x",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
