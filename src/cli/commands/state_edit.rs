//! State surgery: `capi state rm`, `capi state mv`, `capi state pull`,
//! `capi state push`.
//! Each that writes takes the lock at once (refused while an apply runs),
//! keeps the previous file as `<state>.backup`, and replaces the state
//! atomically; the serial moves forward so saved plans made before it go
//! stale.

use std::path::Path;

use crate::resource::{Address, OwnerKind, Spec, Target};
use crate::state::codec::{decode, encode};
use crate::state::{files, HeldLock, Location, State, StateStore};

use super::super::output::Printer;
use super::super::settings::GlobalSettings;
use super::super::{CliError, ExitStatus};

/// The lock and the loaded state, for one edit.
/// With a key given, plaintext sensitive values are sealed for the write.
fn locked(
    g: &GlobalSettings,
    op: &str,
    p: &Printer,
) -> Result<(Box<dyn HeldLock>, StateStore, State), CliError> {
    let mut store = g.store()?;
    let lock = store.lock(op, g.lock_timeout)?;
    let mut state = store.load()?.ok_or_else(|| {
        CliError::Usage(format!("there is no state at {}", g.state_arg.display()))
    })?;
    super::rekey::seal_for_write(&store, &mut state, p);
    Ok((lock, store, state))
}

/// `capi state rm ADDRESS...`: forget resources. The infrastructure stays;
/// capi no longer manages it (a later plan creates it again if the
/// manifests still describe it). A resource others depend on is refused
/// unless they are removed in the same command.
pub(crate) fn rm(
    g: &GlobalSettings,
    addresses: &[String],
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let wanted = addresses
        .iter()
        .map(|a| Address::parse(a).map_err(|e| CliError::Usage(format!("{a}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let (_lock, mut store, mut state) = locked(g, "state rm", p)?;
    for a in &wanted {
        if state.get(a).is_none() {
            return Err(CliError::Usage(format!(
                "{a} is not in the state (see `capi state list`); nothing was changed"
            )));
        }
        let dependents: Vec<&str> = state
            .resources
            .iter()
            .filter(|r| r.dependencies.contains(a) && !wanted.contains(&r.address))
            .map(|r| r.address.as_str())
            .collect();
        if !dependents.is_empty() {
            return Err(CliError::Usage(format!(
                "{a} cannot be removed alone: {} depend(s) on it. Remove them in the same command \
                 (`capi state rm {a} {}`); nothing was changed",
                dependents.join(", "),
                dependents.join(" ")
            )));
        }
    }
    for a in &wanted {
        state.remove(a);
    }
    state.serial += 1;
    store.save(&state)?;
    p.message(&format!(
        "Removed {} resource(s) from the state (serial {}); their infrastructure was not touched.{}",
        wanted.len(),
        state.serial,
        store.backup_note()
    ));
    Ok(ExitStatus::Success)
}

/// `capi state mv FROM TO`: a machine group renamed in the manifests keeps
/// its machines. Both name a group, `[CLUSTER/]KIND/NAME` (`md/old`,
/// `dev/MachineDeployment/old`); every machine the group owns in the state
/// is given the new owner, so the next plan matches them to the renamed
/// group instead of destroying them and creating new ones. Nothing else
/// moves: infrastructure keeps its names, and machine names keep the old
/// prefix.
pub(crate) fn mv(
    g: &GlobalSettings,
    from: &str,
    to: &str,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let (cluster, kind, old) = group_arg(from)?;
    let (to_cluster, to_kind, new) = group_arg(to)?;
    if to_kind != kind {
        return Err(CliError::Usage(format!(
            "{from} is a {kind} and {to} a {to_kind}: a group moves only to a new name of the same kind; nothing was changed"
        )));
    }
    if kind == OwnerKind::Machine {
        return Err(CliError::Usage(format!(
            "{from}: a standalone Machine's name is its machine's name (the container or server), so it cannot be renamed in the state; nothing was changed"
        )));
    }
    if old == new {
        return Err(CliError::Usage(format!(
            "{from} and {to} are the same group; nothing was changed"
        )));
    }
    let (_lock, mut store, mut state) = locked(g, "state mv", p)?;
    let cluster = one_cluster(&state, cluster.or(to_cluster), kind, &old, from)?;
    let owned_by = |r: &crate::state::Resource, name: &str| {
        r.address.cluster_key() == cluster
            && matches!(&r.attributes, Spec::Machine(m) if m.owner.kind == kind && m.owner.name == name)
    };
    if let Some(r) = state.resources.iter().find(|r| owned_by(r, &new)) {
        return Err(CliError::Usage(format!(
            "{kind}/{new} already owns machines in cluster {cluster} ({}): moving {kind}/{old} there would merge two groups; nothing was changed",
            r.address
        )));
    }
    let mut moved = 0;
    for r in state.resources.iter_mut().filter(|r| owned_by(r, &old)) {
        if let Spec::Machine(m) = &mut r.attributes {
            m.owner.name = new.as_str().into();
            moved += 1;
        }
    }
    state.serial += 1;
    store.save(&state)?;
    let rolls = if kind == OwnerKind::KubeadmControlPlane {
        " A KubeadmControlPlane's name is part of its machines' identity: the next plan replaces them one by one (a rolling replacement, not the loss of the control plane)."
    } else {
        ""
    };
    p.message(&format!(
        "Moved {moved} machine(s) of cluster {cluster} from {kind}/{old} to {kind}/{new} (serial {}); their infrastructure was not touched.{rolls}{}",
        state.serial,
        store.backup_note()
    ));
    Ok(ExitStatus::Success)
}

/// `[CLUSTER/]KIND/NAME` for `state mv`.
fn group_arg(s: &str) -> Result<(Option<String>, OwnerKind, String), CliError> {
    let usage = |why: String| {
        CliError::Usage(format!(
            "{why}; `capi state mv` moves a machine group: [CLUSTER/]KIND/NAME, e.g. `capi state mv md/md-0 md/workers` or `dev/MachineDeployment/md-0`"
        ))
    };
    let (cluster, rest) = match s.matches('/').count() {
        2 => s
            .split_once('/')
            .map(|(c, r)| (Some(c), r))
            .unwrap_or((None, s)),
        _ => (None, s),
    };
    let cluster = match cluster {
        None => None,
        Some(c) => match Target::parse(c) {
            Ok(Target::Cluster(key)) => Some(key),
            _ => return Err(usage(format!("{c:?} is not a cluster name"))),
        },
    };
    if let Some((kind, name)) = crate::resource::parse_group(rest) {
        return Ok((cluster, kind, name));
    }
    match Target::parse(rest) {
        Ok(Target::Group { kind, name }) => Ok((cluster, kind, name)),
        Ok(other) => Err(usage(format!("{s:?} names {other}, not a machine group"))),
        Err(e) => Err(usage(e)),
    }
}

/// The cluster whose group is moved: the one named, or the only one that
/// has the group.
fn one_cluster(
    state: &State,
    named: Option<String>,
    kind: OwnerKind,
    name: &str,
    arg: &str,
) -> Result<String, CliError> {
    let mut clusters: Vec<&str> = state
        .resources
        .iter()
        .filter(|r| matches!(&r.attributes, Spec::Machine(m) if m.owner.kind == kind && m.owner.name == name))
        .map(|r| r.address.cluster_key())
        .filter(|c| named.as_deref().is_none_or(|n| n == *c))
        .collect();
    clusters.dedup();
    match clusters.as_slice() {
        [] => Err(CliError::Usage(format!(
            "no machine in the state belongs to {kind}/{name}{} (see `capi state list`); nothing was changed",
            named.map(|c| format!(" in cluster {c}")).unwrap_or_default()
        ))),
        [one] => Ok(one.to_string()),
        many => Err(CliError::Usage(format!(
            "{kind}/{name} is in clusters {}: name one, e.g. `{}/{arg}`; nothing was changed",
            many.join(", "),
            many[0]
        ))),
    }
}

/// `capi state pull [-o FILE]`: the whole state as JSON, the journal
/// folded in, as stored: encrypted sensitive values stay encrypted. A
/// plaintext state holds the cluster's private keys, like `capi kubeconfig`:
/// a file is written 0600, never through a symlink.
pub(crate) fn pull(
    g: &GlobalSettings,
    output: Option<&Path>,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let state = g.store()?.load()?.ok_or_else(|| {
        CliError::Usage(format!("there is no state at {}", g.state_arg.display()))
    })?;
    let bytes = encode(&state);
    match output {
        None => p.data(&String::from_utf8_lossy(&bytes)),
        Some(path) => {
            if let Some(target) = files::symlink_target(path) {
                return Err(CliError::Usage(format!(
                    "{} is a symlink (to {}): refusing to write the state, which holds private keys, through it",
                    path.display(),
                    target.display()
                )));
            }
            files::write_private_atomic(path, &bytes)
                .map_err(|e| CliError::Message(format!("cannot write {}: {e}", path.display())))?;
            p.message(&format!(
                "Wrote the state (serial {}) to {} (mode 0600).",
                state.serial,
                path.display()
            ));
        }
    }
    Ok(ExitStatus::Success)
}

/// `capi state migrate --to URL`: copy the state to another backend under
/// both locks. The destination must be empty, or hold an older copy of the
/// same lineage (a migration back); the source stays as it is, marked as
/// migrated so that commands refuse it and name the new location.
pub(crate) fn migrate(g: &GlobalSettings, to: &str, p: &Printer) -> Result<ExitStatus, CliError> {
    let dest_loc = Location::parse(to).map_err(CliError::Usage)?;
    let (_src_lock, mut src, state) = locked(g, "state migrate", p)?;
    let mut dest = g.store_at(&dest_loc)?;
    let _dest_lock = dest.lock("state migrate", g.lock_timeout)?;
    if let Some(there) = dest.load_unchecked()? {
        if there.lineage != state.lineage {
            return Err(CliError::Usage(format!(
                "{to} already holds another state (lineage {}, this one is {}): refusing to replace it; nothing was changed",
                there.lineage, state.lineage
            )));
        }
        if there.serial > state.serial {
            return Err(CliError::Usage(format!(
                "{to} holds a newer copy of this state (serial {}, this one is {}): it was used after a migration; nothing was changed",
                there.serial, state.serial
            )));
        }
    }
    dest.save(&state)?;
    dest.set_migrated(&state, None)?;
    src.set_migrated(&state, Some(&dest_loc.to_string()))?;
    p.message(&format!(
        "Migrated the state (lineage {}, serial {}, {} resources) from {} to {dest_loc}. The source is kept intact and marked as migrated; use --state {dest_loc} from now on.",
        state.lineage,
        state.serial,
        state.resources.len(),
        g.state_arg.display()
    ));
    Ok(ExitStatus::Success)
}

/// `capi state push FILE [--force]`: replace the state with a file that
/// loads (checksum, format) and continues it: same lineage, newer serial.
pub(crate) fn push(
    g: &GlobalSettings,
    file: &Path,
    force: bool,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let bytes = std::fs::read(file)
        .map_err(|e| CliError::Message(format!("cannot read {}: {e}", file.display())))?;
    let mut incoming = decode(&bytes).map_err(|reason| {
        CliError::Usage(format!(
            "{} is not a capi state: {reason}. Nothing was changed",
            file.display()
        ))
    })?;
    let mut store = g.store()?;
    if let Some(key) = store.key() {
        incoming.check_key(Some(key)).map_err(|e| {
            CliError::Usage(format!("{}: {e}. Nothing was changed", file.display()))
        })?;
    }
    super::rekey::seal_for_write(&store, &mut incoming, p);
    let _lock = store.lock("state push", g.lock_timeout)?;
    let current = store.load()?;
    if let Some(cur) = &current {
        if !force && cur.lineage != incoming.lineage {
            return Err(CliError::Usage(format!(
                "{} belongs to another state (lineage {}, this one is {}): pushing it would replace \
                 every record of what this state created. Use --force if that is what you want; nothing was changed",
                file.display(),
                incoming.lineage,
                cur.lineage
            )));
        }
        if !force && incoming.serial <= cur.serial {
            return Err(CliError::Usage(format!(
                "{} is serial {}, the state is already at serial {}: it is older (or the same) and \
                 would undo what was applied since. Use --force to push it anyway; nothing was changed",
                file.display(),
                incoming.serial,
                cur.serial
            )));
        }
        // A forced push still moves forward, so saved plans go stale.
        incoming.serial = incoming.serial.max(cur.serial + 1);
    }
    store.save(&incoming)?;
    p.message(&format!(
        "Pushed {} to {} (serial {}).{}",
        file.display(),
        g.state_arg.display(),
        incoming.serial,
        if current.is_some() {
            store.backup_note()
        } else {
            String::new()
        }
    ));
    Ok(ExitStatus::Success)
}
