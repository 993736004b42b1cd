//! Private files: how `capi` writes anything that may hold a secret (the
//! state, its journal, backups, lock records, saved plans, kubeconfigs).
//!
//! - New files are created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`) with
//!   mode 0600 from the start, under a random name in the destination's
//!   directory, so nothing planted at a predictable name receives the bytes.
//! - Replacing a file is write-to-temporary, fsync, rename, directory fsync:
//!   a rename replaces a symlink at the destination instead of writing
//!   through it, and a crash leaves the old or the new file, never a torn one.
//! - A state path is resolved to the real file before anything else, so two
//!   names for one state (a symlink and its target) share one lock and one
//!   set of side files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The directory a file lives in (`.` for a bare name).
pub(crate) fn dir_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capi".into())
}

/// The prefix of every temporary file written for `path`:
/// `.<name>.tmp.` in the same directory.
fn temp_prefix(path: &Path) -> String {
    format!(".{}.tmp.", file_name(path))
}

/// Make a directory's entries durable (after a create, rename or remove).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Create a new file exclusively: fails if anything (a file, a symlink)
/// already has that name. Mode 0600.
pub(crate) fn create_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// A new, empty, exclusively created 0600 temporary file beside `path`.
pub(crate) fn temp_beside(path: &Path) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir_of(path))
}

/// Replace `path` with `bytes` atomically, mode 0600, never through a symlink.
pub(crate) fn write_private_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = temp_beside(path)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&dir_of(path));
    Ok(())
}

/// Keep a copy of `path` as `dest` (atomically; a hard link when possible).
pub(crate) fn preserve_copy(path: &Path, dest: &Path) -> io::Result<()> {
    let tmp_name = dir_of(dest).join(format!(
        "{}{}.{}",
        temp_prefix(dest),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    // A hard link never follows a link at its destination and fails if the
    // name exists.
    if fs::hard_link(path, &tmp_name).is_ok() {
        return fs::rename(&tmp_name, dest);
    }
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut tmp = temp_beside(dest)?;
    io::copy(&mut src, tmp.as_file_mut())?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

/// Remove temporaries a killed writer of `path` left behind (they may hold
/// secrets). Only call this while holding `path`'s lock: every temporary of
/// a locked file then belongs to a process that is gone.
pub(crate) fn remove_stale_temporaries(path: &Path) -> Vec<PathBuf> {
    let dir = dir_of(path);
    let name = file_name(path);
    let ours = |n: &str| {
        n.starts_with(&temp_prefix(path))
            || n.starts_with(&format!(".{name}.backup.tmp."))
            || n.starts_with(&format!(".{name}.lock.info.tmp."))
            // Names earlier versions used.
            || n.starts_with(&format!("{name}.tmp."))
            || n.starts_with(&format!("{name}.backup.tmp."))
            || n == format!("{name}.lock.info.tmp")
    };
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return removed;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if ours(&n) && fs::remove_file(e.path()).is_ok() {
            removed.push(e.path());
        }
    }
    if !removed.is_empty() {
        sync_dir(&dir);
    }
    removed
}

/// The real file a state path names: symlinks resolved, so that every name
/// for one state locks the same file and keeps its side files beside it. A
/// state that does not exist yet resolves through its directory.
pub(crate) fn resolve_state_path(path: &Path) -> io::Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink names a state that does not exist yet.
            if let Ok(target) = fs::read_link(path) {
                let target = if target.is_absolute() {
                    target
                } else {
                    dir_of(path).join(target)
                };
                return resolve_state_path(&target);
            }
            let dir = fs::canonicalize(dir_of(path))?;
            Ok(dir.join(file_name(path)))
        }
        Err(e) => Err(e),
    }
}

/// Refuse to write a secret through a symlink: returns the link's target.
pub(crate) fn symlink_target(path: &Path) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(path).ok()?;
    meta.file_type()
        .is_symlink()
        .then(|| fs::read_link(path).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn atomic_writes_replace_a_planted_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().join("out.json");
        symlink(&victim, &path).unwrap();
        write_private_atomic(&path, b"secret").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&path).unwrap(), "secret");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn exclusive_creation_refuses_what_is_planted() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        let path = dir.path().join("journal");
        symlink(&victim, &path).unwrap();
        assert!(create_new_private(&path).is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    }

    #[test]
    fn stale_temporaries_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("capi.state.json");
        for n in [
            ".capi.state.json.tmp.abc",
            "capi.state.json.tmp.123",
            ".capi.state.json.lock.info.tmp.x",
            "capi.state.json.backup",
            "other.json.tmp.1",
        ] {
            fs::write(dir.path().join(n), "x").unwrap();
        }
        let mut removed: Vec<String> = remove_stale_temporaries(&state)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                ".capi.state.json.lock.info.tmp.x",
                ".capi.state.json.tmp.abc",
                "capi.state.json.tmp.123"
            ]
        );
        assert!(dir.path().join("capi.state.json.backup").exists());
        assert!(dir.path().join("other.json.tmp.1").exists());
    }

    #[test]
    fn state_paths_resolve_to_the_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        fs::write(&real, "{}").unwrap();
        let alias = dir.path().join("alias.json");
        symlink(&real, &alias).unwrap();
        let canon = fs::canonicalize(&real).unwrap();
        assert_eq!(resolve_state_path(&alias).unwrap(), canon);
        assert_eq!(resolve_state_path(&real).unwrap(), canon);
        // Not created yet, through a dangling link and directly.
        let future = dir.path().join("future.json");
        let link = dir.path().join("link.json");
        symlink("future.json", &link).unwrap();
        let expect = fs::canonicalize(dir.path()).unwrap().join("future.json");
        assert_eq!(resolve_state_path(&link).unwrap(), expect);
        assert_eq!(resolve_state_path(&future).unwrap(), expect);
    }
}
