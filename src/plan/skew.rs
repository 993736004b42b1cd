//! Version skew rules, enforced at plan time (and by `capi validate`, with
//! no state: the rules the manifests alone can break):
//! - the control plane moves at most one minor version per step;
//! - workers are never newer than the control plane, nor more than three
//!   minors older;
//! - a joining worker must match the control plane's minor (kubeadm joins
//!   only at its own minor).

use crate::desired::{DesiredCluster, MachineGroup};
use crate::resource::Role;
use crate::resource::Version;
use crate::state::State;

use super::PlanError;

/// The lowest version among the cluster's control-plane machines in state.
pub(crate) fn current_control_plane_version(state: &State, dc: &DesiredCluster) -> Option<Version> {
    state
        .cluster_resources(&dc.id.key())
        .filter_map(|r| r.attributes.as_machine())
        .filter(|m| m.role == Role::ControlPlane)
        .map(|m| m.version.clone())
        .min()
}

/// The highest version among the cluster's control-plane machines in state.
pub(crate) fn newest_control_plane_version(state: &State, dc: &DesiredCluster) -> Option<Version> {
    state
        .cluster_resources(&dc.id.key())
        .filter_map(|r| r.attributes.as_machine())
        .filter(|m| m.role == Role::ControlPlane)
        .map(|m| m.version.clone())
        .max()
}

pub(crate) fn check(state: &State, dc: &DesiredCluster) -> Result<(), PlanError> {
    let Some(cp) = dc.control_plane_groups().next() else {
        return Ok(());
    };
    if let Some(newest) = newest_control_plane_version(state, dc) {
        if cp.version < newest
            && (cp.version.major, cp.version.minor) != (newest.major, newest.minor)
        {
            return Err(PlanError::VersionSkew {
                message: format!("{}: the manifests ask for {} but the control plane already runs {newest}; capi does not downgrade a control plane", cp.owner, cp.version),
                help: format!(
                    "the machines were upgraded to {newest} but the manifests still say {} (this is what `capi upgrade` without --write leaves behind): run `capi upgrade --to {newest} --write` with the same -f files to write {newest} into them (nothing is rolled again), or set `version: {newest}` at {}:{}",
                    cp.version, cp.source.file, cp.source.line
                ),
                file: cp.source.file.clone(),
                line: cp.source.line,
            });
        }
    }
    if let Some(cur) = current_control_plane_version(state, dc) {
        if cp.version.major != cur.major || cp.version.minor > cur.minor + 1 {
            let next = format!("v{}.{}", cur.major, cur.minor + 1);
            return Err(PlanError::VersionSkew {
                message: format!(
                    "{}: the control plane cannot move from {cur} to {} in one step (at most one minor version at a time)",
                    cp.owner, cp.version
                ),
                help: format!("upgrade to {next}.x first (`capi upgrade --to {next}.<patch>` chains the steps for you)"),
                file: cp.source.file.clone(),
                line: cp.source.line,
            });
        }
    }
    for g in dc.groups.iter().filter(|g| g.role == Role::Worker) {
        if g.version.major == cp.version.major && g.version.minor > cp.version.minor {
            return Err(PlanError::VersionSkew {
                message: format!(
                    "{}: workers at {} would be newer than the control plane at {}",
                    g.owner, g.version, cp.version
                ),
                help: format!(
                    "upgrade the control plane to v{}.{} first (`capi upgrade --to v{}.{}.<patch>` moves it one minor at a time), or keep the workers at {}",
                    g.version.major, g.version.minor, g.version.major, g.version.minor, cp.version
                ),
                file: g.source.file.clone(),
                line: g.source.line,
            });
        }
        if g.version.major == cp.version.major && g.version.minor + 3 < cp.version.minor {
            return Err(PlanError::VersionSkew {
                message: format!("{}: workers at {} are more than three minor versions older than the control plane at {}", g.owner, g.version, cp.version),
                help: "upgrade the workers one minor at a time alongside the control plane".into(),
                file: g.source.file.clone(),
                line: g.source.line,
            });
        }
    }
    Ok(())
}

/// New worker machines join with kubeadm, which requires the control plane's minor.
pub(crate) fn check_join(dc: &DesiredCluster, g: &MachineGroup) -> Result<(), PlanError> {
    let Some(cp) = dc.control_plane_groups().next() else {
        return Ok(());
    };
    if g.role == Role::Worker
        && (g.version.major, g.version.minor) != (cp.version.major, cp.version.minor)
    {
        return Err(PlanError::VersionSkew {
            message: format!(
                "{}: new machines at {} cannot join a control plane at {} (kubeadm joins only at the control plane's minor version)",
                g.owner, g.version, cp.version
            ),
            help: format!("set the {} version to v{}.{}.x", g.owner.kind, cp.version.major, cp.version.minor),
            file: g.source.file.clone(),
            line: g.source.line,
        });
    }
    Ok(())
}
