//! The simulator's records: one JSON file per network, load balancer,
//! token list and machine under the simulator's directory, and the writes
//! that keep each file valid JSON whatever kills the process. Other
//! processes (`capi drift` beside an apply, tests) read them too.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::provider::ProviderError;
use crate::resource::Role;

/// What the simulated bootstrap did on a machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SimBootstrap {
    pub started: bool,
    pub succeeded: bool,
    pub files: Vec<String>,
    pub commands: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_modules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_command: Option<String>,
}

/// A simulated machine (`machines/<cluster>/<name>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimMachine {
    pub name: String,
    pub cluster: String,
    pub role: Role,
    pub group: String,
    pub version: String,
    pub ip: String,
    pub provider_id: String,
    /// `provisioning`, `running` or `stopped`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub bootstrap: SimBootstrap,
}

/// A simulated network (`networks/<cluster>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SimNetwork {
    pub(crate) cluster: String,
    pub(crate) name: String,
    pub(crate) cidr: String,
    pub(crate) labels: BTreeMap<String, String>,
}

/// A load balancer member: a control-plane machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SimMember {
    pub(crate) name: String,
    pub(crate) ip: String,
    pub(crate) weight: u32,
}

/// A simulated load balancer (`loadbalancers/<cluster>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SimLoadBalancer {
    pub(crate) cluster: String,
    pub(crate) ip: String,
    pub(crate) port: u16,
    pub(crate) members: Vec<SimMember>,
    /// Incremented at every reconfiguration (like CAPD's SIGHUP).
    pub(crate) reloads: u64,
    pub(crate) labels: BTreeMap<String, String>,
}

/// A cluster's registered bootstrap tokens (`tokens/<cluster>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub(crate) struct SimTokens {
    /// Token ids with their expiry (the secret half is never stored here).
    pub(crate) tokens: Vec<(String, i64)>,
}

pub(super) fn io_err(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Failed(format!("simulator: {what}: {e}"))
}

/// The simulator's directories are private (0700) whatever the umask: like
/// the state beside them, they describe a user's infrastructure.
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Open a record or log file for writing, created 0600 whatever the umask,
/// never through a symlink (a link planted at the name is an error).
pub(super) fn open_private(path: &Path, append: bool) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .append(append)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Records up to this size are rewritten in place; larger ones through a
/// temporary file and a rename.
const IN_PLACE_MAX: usize = 4096;

/// Write a simulator record. Small records (every machine) are rewritten in
/// place: creating and renaming a temporary file per write made ext4's inode
/// allocation and directory locks the largest cost of a 1,000-machine apply.
/// The record stays valid JSON whatever kills the process: the new text goes
/// to offset 0 in one write within one page, padded with spaces (JSON allows
/// trailing whitespace) to cover all of the old text; a file killed between
/// its creation and its first write is empty and counts as absent.
pub(super) fn write_json(path: &Path, v: &impl Serialize) -> Result<(), ProviderError> {
    use std::os::unix::fs::FileExt;
    let mut bytes = serde_json::to_vec_pretty(v).expect("serialisable");
    bytes.push(b'\n');
    let open = || open_private(path, false);
    let f = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(p) = path.parent() {
                create_private_dir(p).map_err(|e| io_err(&p.display().to_string(), e))?;
            }
            open()
        }
        r => r,
    }
    .map_err(|e| io_err(&path.display().to_string(), e))?;
    let old = f
        .metadata()
        .map_err(|e| io_err(&path.display().to_string(), e))?
        .len() as usize;
    if bytes.len().max(old) > IN_PLACE_MAX {
        drop(f);
        let dir = path.parent().unwrap_or(Path::new("."));
        let err = |e: std::io::Error| io_err(&path.display().to_string(), e);
        let mut tmp = tempfile::Builder::new()
            .prefix(".sim.tmp.")
            .tempfile_in(dir)
            .map_err(err)?;
        std::io::Write::write_all(&mut tmp, &bytes).map_err(err)?;
        return tmp.persist(path).map(|_| ()).map_err(|e| err(e.error));
    }
    if bytes.len() < old {
        bytes.resize(old, b' ');
    }
    f.write_all_at(&bytes, 0)
        .map_err(|e| io_err(&path.display().to_string(), e))
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, ProviderError> {
    // Another process (`capi drift` beside an apply) can catch a record in
    // the middle of its in-place rewrite; a second look sees it whole.
    let mut attempt = 0;
    loop {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path.display().to_string(), e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => return Ok(Some(v)),
            Err(_) if attempt < 3 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(io_err(
                    &format!("{} is not a valid simulator file", path.display()),
                    e,
                ))
            }
        }
    }
}

/// Remove a record; `true` when there was one.
pub(super) fn remove_record(path: &Path) -> Result<bool, ProviderError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(&path.display().to_string(), e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_are_never_written_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("record.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(super::open_private(&link, false).is_err());
        assert!(super::open_private(&link, true).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
