//! The simulator's machine records: one JSON-lines file per cluster,
//! `machines/<cluster>.jsonl`. Each line is a whole machine record or a
//! removal (`{"removed":"<name>"}`); the last line naming a machine wins.
//!
//! Why one file: a file per machine made ext4's inode allocation the
//! largest cost of a 1,000-machine apply, and a refresh opened and read one
//! file per machine. Now a write is one appended line (a single `write`, so
//! a killed process leaves at most an unterminated last line, which readers
//! skip and the next writer cuts off) and a refresh reads one file per
//! cluster.
//!
//! A [`MachineLog`] is the writer's view of one cluster's file: where each
//! machine's last line is, so a record is read back with one `pread`. It
//! checks once in each turn of the writers' lock (the first operation of
//! the turn) that the file is still the one it indexed (another provider
//! in the process, another process, or a hand edit may have changed it
//! between turns) and reads it again if not. When the command that wrote ends,
//! [`MachineLog::compact`] rewrites the file with one line per machine,
//! sorted by name, through a temporary file and a rename: deleting a
//! machine's line is how a user simulates losing it, editing its `status`
//! how to stop it.
//!
//! Records of the earlier layout, a file per machine under
//! `machines/<cluster>/`, are read too (a line in the log wins), and the
//! first write to the cluster moves them into its log.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::store::{create_private_dir, io_err, read_json, SimMachine};
use crate::provider::{ProviderError, LABEL_ADDRESS, LABEL_IDENTITY, LABEL_LINEAGE};
use crate::resource::{Role, Shared};

/// A line that removes a machine.
#[derive(Deserialize)]
struct Removed {
    removed: String,
}

/// What a machine line says: a record of type `T`, or a removal.
enum Line<T> {
    Put(T),
    Removed(String),
}

fn parse_line<T: DeserializeOwned>(bytes: &[u8]) -> Result<Line<T>, serde_json::Error> {
    if bytes.starts_with(b"{\"removed\"") {
        if let Ok(r) = serde_json::from_slice::<Removed>(bytes) {
            return Ok(Line::Removed(r.removed));
        }
    }
    match serde_json::from_slice::<T>(bytes) {
        Ok(m) => Ok(Line::Put(m)),
        // A hand-written removal with other spacing.
        Err(e) => serde_json::from_slice::<Removed>(bytes)
            .map(|r| Line::Removed(r.removed))
            .map_err(|_| e),
    }
}

/// The complete lines of a log (those ending in a newline), with their
/// offset and 1-based number; blank lines are skipped.
fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = (u64, usize, &[u8])> {
    let mut off = 0usize;
    let mut number = 0usize;
    std::iter::from_fn(move || loop {
        let rest = &bytes[off..];
        let end = rest.iter().position(|b| *b == b'\n')?;
        let at = off;
        off += end + 1;
        number += 1;
        let line = &rest[..end];
        if !line.iter().all(u8::is_ascii_whitespace) {
            return Some((at as u64, number, line));
        }
    })
}

/// Something read from a machine line that knows its machine's name.
pub(super) trait Named {
    fn name(&self) -> &str;
}

impl Named for SimMachine {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The part of a machine record a refresh compares: the bootstrap's files
/// and commands are skipped while parsing, never kept (they are most of a
/// record's size).
/// Values every machine of a cluster or group repeats (version, status,
/// lineage, identity) are stored once (see [`Shared`]): a 100,000-machine
/// refresh held ~100 MB of views before.
#[derive(Debug, Deserialize)]
pub(super) struct MachineView {
    pub(super) name: String,
    pub(super) version: Shared<String>,
    pub(super) ip: String,
    pub(super) status: Shared<String>,
    pub(super) labels: ViewLabels,
    pub(super) bootstrap: BootstrapView,
}

/// The labels a refresh reads; the others are skipped while parsing.
#[derive(Debug, Deserialize)]
pub(super) struct ViewLabels {
    #[serde(rename = "capi.x-k8s.io/lineage")]
    lineage: Option<Shared<String>>,
    #[serde(rename = "capi.x-k8s.io/address")]
    address: Option<String>,
    #[serde(rename = "capi.x-k8s.io/identity")]
    identity: Option<Shared<String>>,
}

impl ViewLabels {
    /// The value of one of the three labels it keeps.
    pub(super) fn get(&self, key: &str) -> Option<&String> {
        match key {
            LABEL_LINEAGE => self.lineage.as_deref(),
            LABEL_ADDRESS => self.address.as_ref(),
            LABEL_IDENTITY => self.identity.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct BootstrapView {
    pub(super) started: bool,
    pub(super) succeeded: bool,
}

impl Named for MachineView {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The lines of one log, in order, parsed as `T`. A complete line that
/// does not parse is an error naming the file and line, after a short
/// second look (another process may be appending to it). No file, no lines.
fn log_lines<T: DeserializeOwned>(path: &Path) -> Result<Vec<Line<T>>, ProviderError> {
    let mut attempt = 0;
    loop {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path.display().to_string(), e)),
        };
        let parsed: Result<Vec<Line<T>>, (usize, serde_json::Error)> = complete_lines(&bytes)
            .map(|(_, number, line)| parse_line::<T>(line).map_err(|e| (number, e)))
            .collect();
        match parsed {
            Ok(lines) => return Ok(lines),
            Err(_) if attempt < 3 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((number, e)) => return Err(bad_line(path, number, &e)),
        }
    }
}

fn bad_line(path: &Path, number: usize, e: &serde_json::Error) -> ProviderError {
    ProviderError::Failed(format!(
        "simulator: {}:{number}: not a machine record ({e}); each line holds one machine as JSON, or {{\"removed\":\"<name>\"}}: fix the line or delete it",
        path.display()
    ))
}

/// The records of the earlier layout: `<dir>/<name>.json`.
fn legacy_records<T: DeserializeOwned + Named>(
    dir: &Path,
) -> Result<BTreeMap<String, (PathBuf, T)>, ProviderError> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            if let Some(m) = read_json::<T>(&p)? {
                out.insert(m.name().to_string(), (p, m));
            }
        }
    }
    Ok(out)
}

/// Every machine of one cluster, by name: the log over the earlier layout.
pub(super) fn read_cluster<T: DeserializeOwned + Named>(
    log: &Path,
    legacy_dir: &Path,
) -> Result<BTreeMap<String, T>, ProviderError> {
    let mut out: BTreeMap<String, T> = legacy_records(legacy_dir)?
        .into_iter()
        .map(|(n, (_, m))| (n, m))
        .collect();
    // The log wins, removals included.
    for l in log_lines::<T>(log)? {
        match l {
            Line::Put(m) => {
                out.insert(m.name().to_string(), m);
            }
            Line::Removed(name) => {
                out.remove(&name);
            }
        }
    }
    Ok(out)
}

/// An exclusive `flock`, released when dropped.
pub(super) struct DirLock<'a>(&'a fs::File);

impl<'a> DirLock<'a> {
    pub(super) fn exclusive(f: &'a fs::File) -> std::io::Result<DirLock<'a>> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: a valid open descriptor, borrowed for the call.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(DirLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Where a machine's last line is, and whether it is a running,
/// bootstrapped control-plane machine (a bootstrap token needs one).
#[derive(Debug, Clone, Copy)]
struct Slot {
    off: u64,
    len: u32,
    /// The line's number, for errors.
    number: u32,
    ready_control_plane: bool,
}

fn ready_control_plane(m: &SimMachine) -> bool {
    m.role == Role::ControlPlane && m.bootstrap.succeeded && m.status == "running"
}

/// The writer's view of one cluster's log (see the module header).
pub(super) struct MachineLog {
    path: PathBuf,
    legacy_dir: PathBuf,
    /// The file, while it exists: it is created by the first append and
    /// never by looking at it, so a log removed when its last machine went
    /// (a destroy) is not brought back empty by a later check.
    file: Option<fs::File>,
    /// The inode and length of the file as last indexed.
    ino: u64,
    end: u64,
    index: HashMap<String, Slot>,
    /// Lines in the file: more than `index.len()` means some are superseded.
    lines: usize,
    /// The writers' lock is held ([`MachineLog::begin_turn`]): nothing but
    /// this log changes the file until [`MachineLog::end_turn`].
    in_turn: bool,
    /// The file was checked in this turn: later operations of the turn
    /// skip the check (a machine's lookup and first record, one turn, made
    /// two `stat` calls).
    checked: bool,
}

fn open_log(path: &Path, create: bool) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The whole file from its start (appends ignore the offset this moves).
fn read_whole(mut file: &fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

impl MachineLog {
    /// Open the log of the cluster (it need not exist yet), index it, and
    /// move the earlier layout's records of the cluster into it.
    pub(super) fn open(path: &Path, legacy_dir: &Path) -> Result<MachineLog, ProviderError> {
        let mut log = MachineLog {
            path: path.to_path_buf(),
            legacy_dir: legacy_dir.to_path_buf(),
            file: None,
            ino: 0,
            end: 0,
            index: HashMap::new(),
            lines: 0,
            in_turn: false,
            checked: false,
        };
        log.reopen(false)?;
        log.migrate()?;
        Ok(log)
    }

    fn err(&self, e: impl std::fmt::Display) -> ProviderError {
        io_err(&self.path.display().to_string(), e)
    }

    /// Open the file as it is now (creating it when `create`) and index it;
    /// no file is an empty log.
    fn reopen(&mut self, create: bool) -> Result<(), ProviderError> {
        if create {
            if let Some(dir) = self.path.parent() {
                create_private_dir(dir).map_err(|e| io_err(&dir.display().to_string(), e))?;
            }
        }
        self.file = match open_log(&self.path, create) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.err(e)),
        };
        self.ino = match &self.file {
            Some(f) => f.metadata().map_err(|e| self.err(e))?.ino(),
            None => 0,
        };
        self.load()
    }

    /// Index the whole file; an unterminated last line (a write cut short)
    /// is cut off.
    fn load(&mut self) -> Result<(), ProviderError> {
        self.index.clear();
        self.lines = 0;
        self.end = 0;
        let Some(file) = &self.file else {
            return Ok(());
        };
        let bytes = read_whole(file).map_err(|e| self.err(e))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            file.set_len(complete as u64).map_err(|e| self.err(e))?;
        }
        for (off, number, line) in complete_lines(&bytes[..complete]) {
            self.lines += 1;
            match parse_line::<SimMachine>(line).map_err(|e| bad_line(&self.path, number, &e))? {
                Line::Put(m) => {
                    let slot = Slot {
                        off,
                        len: line.len() as u32,
                        number: number as u32,
                        ready_control_plane: ready_control_plane(&m),
                    };
                    self.index.insert(m.name, slot);
                }
                Line::Removed(name) => {
                    self.index.remove(&name);
                }
            }
        }
        self.end = complete as u64;
        Ok(())
    }

    /// Move the earlier layout's records into the log (those it does not
    /// already hold), then remove their files.
    fn migrate(&mut self) -> Result<(), ProviderError> {
        let legacy = legacy_records::<SimMachine>(&self.legacy_dir)?;
        if legacy.is_empty() {
            return Ok(());
        }
        for (name, (_, m)) in &legacy {
            if !self.index.contains_key(name) {
                self.put(m)?;
            }
        }
        for (path, _) in legacy.values() {
            super::store::remove_record(path)?;
        }
        let _ = fs::remove_dir(&self.legacy_dir);
        Ok(())
    }

    /// The caller took the writers' lock (the `flock` on the `machines`
    /// directory that every writer of the file holds).
    pub(super) fn begin_turn(&mut self) {
        self.in_turn = true;
        self.checked = false;
    }

    /// The caller is about to release the writers' lock: another process
    /// may change the file before the next turn.
    pub(super) fn end_turn(&mut self) {
        self.in_turn = false;
        self.checked = false;
    }

    /// Read the file again if it is no longer the one indexed; once a turn.
    fn sync(&mut self) -> Result<(), ProviderError> {
        if self.in_turn && self.checked {
            return Ok(());
        }
        self.check()?;
        self.checked = self.in_turn;
        Ok(())
    }

    fn check(&mut self) -> Result<(), ProviderError> {
        match fs::symlink_metadata(&self.path) {
            Ok(md) if self.file.is_some() && md.ino() == self.ino => {
                if md.len() == self.end {
                    Ok(())
                } else {
                    self.load()
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.file.is_none() => Ok(()),
            // Created, replaced or removed behind this log's back.
            _ => self.reopen(false),
        }
    }

    /// The machine's record, if it has one.
    pub(super) fn get(&mut self, name: &str) -> Result<Option<SimMachine>, ProviderError> {
        self.sync()?;
        match self.read_slot(name)? {
            Some(m) if m.name == name => Ok(Some(m)),
            None => Ok(None),
            // Edited in place to the same length: index the file again.
            Some(_) => {
                self.load()?;
                Ok(self.read_slot(name)?.filter(|m| m.name == name))
            }
        }
    }

    /// The record at the machine's indexed line (a removal reads as none).
    fn read_slot(&self, name: &str) -> Result<Option<SimMachine>, ProviderError> {
        let Some(slot) = self.index.get(name).copied() else {
            return Ok(None);
        };
        let mut buf = vec![0; slot.len as usize];
        let file = self.file.as_ref().expect("an indexed record has a file");
        file.read_exact_at(&mut buf, slot.off)
            .map_err(|e| self.err(e))?;
        match parse_line::<SimMachine>(&buf) {
            Ok(Line::Put(m)) => Ok(Some(m)),
            Ok(Line::Removed(_)) => Ok(None),
            Err(e) => Err(bad_line(&self.path, slot.number as usize, &e)),
        }
    }

    /// Append a record: one line, one `write`.
    pub(super) fn put(&mut self, m: &SimMachine) -> Result<(), ProviderError> {
        let mut line = serde_json::to_vec(m).expect("serialisable");
        line.push(b'\n');
        self.sync()?;
        self.append(&line)?;
        let slot = Slot {
            off: self.end - line.len() as u64,
            len: (line.len() - 1) as u32,
            number: self.lines as u32,
            ready_control_plane: ready_control_plane(m),
        };
        self.index.insert(m.name.clone(), slot);
        Ok(())
    }

    /// Append a removal; `true` when the machine had a record.
    pub(super) fn remove(&mut self, name: &str) -> Result<bool, ProviderError> {
        self.sync()?;
        if !self.index.contains_key(name) {
            return Ok(false);
        }
        let mut line =
            serde_json::to_vec(&serde_json::json!({ "removed": name })).expect("serialisable");
        line.push(b'\n');
        self.append(&line)?;
        self.index.remove(name);
        Ok(true)
    }

    fn append(&mut self, line: &[u8]) -> Result<(), ProviderError> {
        if self.file.is_none() {
            self.reopen(true)?;
        }
        let file = self.file.as_ref().expect("just created");
        if let Err(e) = (&*file).write_all(line) {
            // Part of the line may be there: the next operation, even in
            // this turn, indexes the file again.
            self.checked = false;
            self.ino = 0;
            return Err(self.err(e));
        }
        self.end += line.len() as u64;
        self.lines += 1;
        Ok(())
    }

    /// Is there a running, bootstrapped control-plane machine?
    pub(super) fn has_ready_control_plane(&mut self) -> Result<bool, ProviderError> {
        self.sync()?;
        Ok(self.index.values().any(|s| s.ready_control_plane))
    }

    /// The compaction's temporary file: one name per log, so one left by
    /// a kill is overwritten by the next compaction or removed with the log.
    fn compact_path(&self) -> PathBuf {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        self.path.with_file_name(format!(".{name}.compact"))
    }

    /// Rewrite the file with one line per machine, sorted by name (through
    /// a temporary file and a rename); remove it when no machine is left.
    /// The log indexes the new file when it is next used.
    pub(super) fn compact(&mut self) -> Result<(), ProviderError> {
        self.sync()?;
        let tmp_path = self.compact_path();
        let remove = |p: &Path| match fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(&p.display().to_string(), e))
            }
            _ => Ok(()),
        };
        if self.index.is_empty() {
            remove(&self.path)?;
            remove(&tmp_path)?;
            self.file = None;
            return self.load();
        }
        if self.lines == self.index.len() {
            return Ok(());
        }
        let mut live: Vec<(&String, Slot)> = self.index.iter().map(|(n, s)| (n, *s)).collect();
        live.sort_by(|a, b| a.0.cmp(b.0));
        let file = self.file.as_ref().expect("an indexed record has a file");
        let tmp = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp_path)
            .map_err(|e| io_err(&tmp_path.display().to_string(), e))?;
        // Line by line (the file can hold three lines per machine: reading
        // it whole would add its size to the end of a large apply).
        let mut out = std::io::BufWriter::new(tmp);
        let mut line = Vec::new();
        for (_, s) in &live {
            line.resize(s.len as usize, 0);
            file.read_exact_at(&mut line, s.off)
                .map_err(|e| self.err(e))?;
            out.write_all(&line).map_err(|e| self.err(e))?;
            out.write_all(b"\n").map_err(|e| self.err(e))?;
        }
        out.flush().map_err(|e| self.err(e))?;
        drop(out);
        fs::rename(&tmp_path, &self.path).map_err(|e| self.err(e))?;
        // Indexed again by the next use, if there is one: at the end of a
        // command (the usual caller) reading the new file back would only
        // add its parse to the command's time.
        self.forget();
        Ok(())
    }

    /// Drop the index and the open file: the next operation's
    /// [`MachineLog::sync`] opens and indexes the file as it is then.
    fn forget(&mut self) {
        self.checked = false;
        self.file = None;
        self.ino = 0;
        self.end = 0;
        self.lines = 0;
        self.index.clear();
    }
}

#[cfg(test)]
mod tests;
