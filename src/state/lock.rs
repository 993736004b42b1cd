//! The state lock: a kernel `flock` on `<state>.lock`, held for the whole
//! command, plus `<state>.lock.info` describing the holder. The kernel drops
//! the lock when the process dies, so a lock can never outlive its holder; the
//! info file of a dead holder is simply overwritten by the next one.
//!
//! The lock is the inode `<state>.lock` names when it is taken. A lock file
//! removed or replaced while held would let a second process lock a new inode
//! under the same name, so the holder checks that the name still leads to its
//! inode after taking the lock and before every state write
//! ([`StateLock::guard`]). The caller passes the resolved state path
//! (symlinks followed), so every name for a state shares one lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::files;
use super::store::WriteGuard;
use crate::util;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockInfo {
    #[serde(rename = "ID")]
    pub(crate) id: String,
    #[serde(rename = "Operation")]
    pub(crate) operation: String,
    #[serde(rename = "Who")]
    pub(crate) who: String,
    #[serde(rename = "Host")]
    pub(crate) host: String,
    #[serde(rename = "Pid")]
    pub(crate) pid: u32,
    #[serde(rename = "Version")]
    pub(crate) version: String,
    #[serde(rename = "Created")]
    pub(crate) created: String,
    #[serde(rename = "Path")]
    pub(crate) path: String,
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ID {}, operation {:?}, held by {} (pid {} on {}) since {}",
            self.id, self.operation, self.who, self.pid, self.host, self.created
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error("the state {path} is locked by another capi: {}.\n  Wait for it to finish, or retry with --lock-timeout 60s to wait", info.as_ref().map(|i| i.to_string()).unwrap_or_else(|| "holder unknown".into()))]
    Held {
        path: String,
        info: Option<LockInfo>,
    },
    #[error("timed out after {waited:?} waiting for the state lock on {path}, held by: {}", info.as_ref().map(|i| i.to_string()).unwrap_or_else(|| "unknown".into()))]
    Timeout {
        path: String,
        waited: Duration,
        info: Option<LockInfo>,
    },
    #[error("cannot lock the state at {path}: {reason}")]
    Backend { path: String, reason: String },
    #[error("refusing to unlock: the lock on {path} is held under a live etcd lease ({info}); it is released by itself when its holder stops renewing it (lease TTL {ttl}s)")]
    LeaseAlive {
        path: String,
        info: LockInfo,
        ttl: i64,
    },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no lock with ID {id:?} is recorded for {path}{}", current.as_ref().map(|i| format!(" (the recorded lock is {})", i.id)).unwrap_or_default())]
    WrongId {
        id: String,
        path: String,
        current: Option<LockInfo>,
    },
    #[error("refusing to unlock: the lock is held by a live process ({info}); stop it first (kernel locks are released when their process exits)")]
    HolderAlive { info: LockInfo },
}

/// The device and inode of an open file (they cannot change while it is
/// open).
fn identity(file: &File) -> std::io::Result<(u64, u64)> {
    file.metadata().map(|m| (m.dev(), m.ino()))
}

fn check_identity(lock_path: &Path, held: (u64, u64)) -> Result<(), String> {
    let names = fs::metadata(lock_path).is_ok_and(|m| (m.dev(), m.ino()) == held);
    if names {
        Ok(())
    } else {
        Err(format!(
            "the lock file {} was removed or replaced while this command held the lock, so another capi may be using the state now; nothing more is written. Check that no other capi runs, then run this command again",
            lock_path.display()
        ))
    }
}

#[derive(Debug)]
pub(crate) struct StateLock {
    file: File,
    lock_path: PathBuf,
    info_path: PathBuf,
    pub(crate) info: LockInfo,
}

pub(crate) fn lock_paths(state: &Path) -> (PathBuf, PathBuf) {
    let mut l = state.as_os_str().to_owned();
    l.push(".lock");
    let mut i = l.clone();
    i.push(".info");
    (PathBuf::from(l), PathBuf::from(i))
}

fn try_flock(f: &File) -> std::io::Result<bool> {
    try_flock_mode(f, libc::LOCK_EX)
}

fn try_flock_mode(f: &File, mode: libc::c_int) -> std::io::Result<bool> {
    let rc = unsafe { libc::flock(f.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

pub(crate) fn read_info(info_path: &Path) -> Option<LockInfo> {
    serde_json::from_slice(&fs::read(info_path).ok()?).ok()
}

/// Does `path` still name the inode `file` is open on?
fn names_inode(path: &Path, file: &File) -> bool {
    match (fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether another process holds `state`'s lock right now (and who, when
/// recorded). `None` when it is free or held by this process.
pub(crate) fn held_by_another(state: &Path) -> Option<Option<LockInfo>> {
    let (lock_path, info_path) = lock_paths(state);
    let file = OpenOptions::new().read(true).open(&lock_path).ok()?;
    if try_flock_mode(&file, libc::LOCK_SH).ok()? {
        return None;
    }
    let info = read_info(&info_path);
    if info.as_ref().is_some_and(|i| i.pid == std::process::id()) {
        return None;
    }
    Some(info)
}

/// The holder identity recorded for a new lock on `path`.
pub(crate) fn new_info(path: &str, operation: &str) -> LockInfo {
    LockInfo {
        id: uuid::Uuid::new_v4().to_string(),
        operation: operation.to_string(),
        who: format!("{}@{}", util::current_user(), util::hostname()),
        host: util::hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        created: util::time::format_rfc3339(util::time::now_unix()),
        path: path.to_string(),
    }
}

impl StateLock {
    /// Take the lock, waiting up to `timeout` (zero: fail at once).
    pub(crate) fn acquire(
        state: &Path,
        operation: &str,
        timeout: Duration,
    ) -> Result<StateLock, LockError> {
        let (lock_path, info_path) = lock_paths(state);
        let io = |e| LockError::Io {
            path: lock_path.display().to_string(),
            source: e,
        };
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&lock_path)
        };
        let mut file = open().map_err(io)?;
        let start = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            if try_flock(&file).map_err(io)? {
                if names_inode(&lock_path, &file) {
                    break;
                }
                // Removed or replaced between our open and our lock: the
                // lock that counts is on whatever the name leads to now.
                file = open().map_err(io)?;
                continue;
            }
            let info = read_info(&info_path);
            if start.elapsed() >= timeout {
                return Err(if timeout.is_zero() {
                    LockError::Held {
                        path: state.display().to_string(),
                        info,
                    }
                } else {
                    LockError::Timeout {
                        path: state.display().to_string(),
                        waited: start.elapsed(),
                        info,
                    }
                });
            }
            std::thread::sleep(
                backoff
                    .min(timeout.saturating_sub(start.elapsed()))
                    .max(Duration::from_millis(10)),
            );
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        let info = new_info(&state.display().to_string(), operation);
        // Whatever a killed writer left behind can go now: it was written
        // under this lock, by a process that no longer holds it.
        files::remove_stale_temporaries(state);
        files::remove_stale_temporaries(&info_path);
        files::write_private_atomic(
            &info_path,
            &serde_json::to_vec_pretty(&info).expect("serialises"),
        )
        .map_err(io)?;
        Ok(StateLock {
            file,
            lock_path,
            info_path,
            info,
        })
    }

    /// A guard for the state store, checking [`StateLock::check`] before
    /// every write.
    pub(crate) fn guard(&self) -> Result<WriteGuard, LockError> {
        // Kept open (its inode cannot be reused while the guard lives) and
        // read once: only the path's side is checked before each write.
        let io = |e| LockError::Io {
            path: self.lock_path.display().to_string(),
            source: e,
        };
        let file = self.file.try_clone().map_err(io)?;
        let held = identity(&file).map_err(io)?;
        let path = self.lock_path.clone();
        Ok(WriteGuard::new(move || {
            let _pinned = &file;
            check_identity(&path, held)
        }))
    }

    /// Remove a stale lock-info file recorded under `id`. Refuses while the
    /// kernel lock is held by a live process.
    pub(crate) fn force_unlock(state: &Path, id: &str) -> Result<LockInfo, LockError> {
        let (lock_path, info_path) = lock_paths(state);
        let current = read_info(&info_path);
        match &current {
            Some(info) if info.id == id => {}
            _ => {
                return Err(LockError::WrongId {
                    id: id.to_string(),
                    path: state.display().to_string(),
                    current,
                })
            }
        }
        let info = current.expect("checked");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| LockError::Io {
                path: lock_path.display().to_string(),
                source: e,
            })?;
        let got = try_flock(&file).map_err(|e| LockError::Io {
            path: lock_path.display().to_string(),
            source: e,
        })?;
        if !got {
            return Err(LockError::HolderAlive { info });
        }
        let _ = fs::remove_file(&info_path);
        Ok(info)
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Remove the info only if it is still ours, then release the lock.
        if read_info(&self.info_path).is_some_and(|i| i.id == self.info.id) {
            let _ = fs::remove_file(&self.info_path);
        }
        // Nothing is left behind in the working tree either. Safe while
        // others wait: a waiter that opened this inode finds after locking
        // that the name no longer leads to it and opens the name again
        // (see `acquire`); nothing is written after this point.
        if names_inode(&self.lock_path, &self.file) {
            let _ = fs::remove_file(&self.lock_path);
        }
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releasing_leaves_no_lock_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.json");
        let l1 = StateLock::acquire(&state, "plan", Duration::ZERO).unwrap();
        assert!(dir.path().join("s.json.lock").exists());
        drop(l1);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
        // And the next holder takes it as usual.
        let l2 = StateLock::acquire(&state, "apply", Duration::ZERO).unwrap();
        assert!(StateLock::acquire(&state, "plan", Duration::ZERO).is_err());
        drop(l2);
    }

    #[test]
    fn second_lock_in_same_process_is_refused_then_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.json");
        let l1 = StateLock::acquire(&state, "apply", Duration::ZERO).unwrap();
        let err = StateLock::acquire(&state, "plan", Duration::ZERO).unwrap_err();
        match &err {
            LockError::Held { info: Some(i), .. } => assert_eq!(i.id, l1.info.id),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("apply"));
        let id = l1.info.id.clone();
        assert!(matches!(
            StateLock::force_unlock(&state, &id),
            Err(LockError::HolderAlive { .. })
        ));
        drop(l1);
        assert!(!lock_paths(&state).1.exists());
        let _l2 = StateLock::acquire(&state, "plan", Duration::ZERO).unwrap();
    }
}
