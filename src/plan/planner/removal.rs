//! Removals: machines of groups that left the manifests and bootstrap data
//! whose machine is gone (a planned cluster's last step), and whole clusters
//! that left the manifests or are destroyed.

use std::collections::BTreeSet;

use crate::resource::{Address, Owner, OwnerKind, ResourceKind, Role};
use crate::state::Resource;

use super::super::{Action, Change, ReasonCode};
use super::cluster::ClusterPlanner;
use super::machines::delete_machine;
use super::report::{ClusterDisposition, RemovalReport};
use super::{Builder, ProtoStep};

impl ClusterPlanner<'_, '_> {
    pub(super) fn do_plan_removals(&mut self) -> RemovalReport {
        let mut report = RemovalReport::default();
        self.remove_orphan_machines(&mut report);
        self.remove_stray_bootstrap(&mut report);
        report
    }

    /// Machines (and their bootstrap data) of groups that are gone: workers
    /// first, then control-plane machines one at a time, newest first.
    fn remove_orphan_machines(&mut self, report: &mut RemovalReport) {
        let groups: BTreeSet<&Owner> = self.dc.groups.iter().map(|g| &g.owner).collect();
        let orphans: Vec<Resource> = self
            .b
            .state
            .cluster_resources(&self.key)
            .filter(|r| {
                r.attributes
                    .as_machine()
                    .is_some_and(|m| !groups.contains(&m.owner))
            })
            .cloned()
            .collect();
        self.warn_vanished_groups(&orphans);
        let mut cp_orphans: Vec<&Resource> = Vec::new();
        for r in &orphans {
            let m = r.attributes.as_machine().unwrap();
            if m.role == Role::ControlPlane {
                cp_orphans.push(r);
                continue;
            }
            let text = format!("{} is no longer in the manifests", m.owner);
            delete_machine(
                self.b,
                self.dc,
                r,
                ReasonCode::Removed,
                text,
                Some(&m.owner.to_string()),
                None,
                None,
            );
            report.machines.push(r.address.clone());
        }
        cp_orphans.sort_by_key(|r| std::cmp::Reverse(r.sequence));
        for r in cp_orphans {
            let m = r.attributes.as_machine().unwrap();
            let text = format!("{} is no longer in the manifests", m.owner);
            let id = delete_machine(
                self.b,
                self.dc,
                r,
                ReasonCode::Removed,
                text,
                Some(&m.owner.to_string()),
                None,
                Some((vec![], self.last_cp_step)),
            );
            if id.is_some() {
                self.last_cp_step = id;
            }
            report.machines.push(r.address.clone());
        }
    }

    /// A group that vanished from the manifests takes all its machines with
    /// it: a misspelt kind or a file left out of `-f` looks exactly like
    /// that, so the plan says it out loud, once per group.
    fn warn_vanished_groups(&mut self, orphans: &[Resource]) {
        let mut counts: std::collections::BTreeMap<&Owner, usize> = Default::default();
        for m in orphans.iter().filter_map(|r| r.attributes.as_machine()) {
            *counts.entry(&m.owner).or_default() += 1;
        }
        // Groups of the manifests that own no machine yet: one of the same
        // kind may be the vanished one under a new name.
        let owning: BTreeSet<&Owner> = self
            .b
            .state
            .cluster_resources(&self.key)
            .filter_map(|r| r.attributes.as_machine().map(|m| &m.owner))
            .collect();
        let new_groups: Vec<&Owner> = self
            .dc
            .groups
            .iter()
            .map(|g| &g.owner)
            .filter(|o| !owning.contains(o))
            .collect();
        let ns = &self.dc.id.namespace;
        let mut warnings = Vec::new();
        for (owner, n) in counts {
            let mut w = format!(
                "{} {ns}/{} is no longer in the manifests: its {n} machine{} will be destroyed",
                owner.kind,
                owner.name,
                if n == 1 { "" } else { "s" }
            );
            w.push_str(&rename_hint(&self.key, owner, &new_groups));
            warnings.push(w);
        }
        self.b.warnings.extend(warnings);
    }

    /// Bootstrap data whose machine is gone from state.
    fn remove_stray_bootstrap(&mut self, report: &mut RemovalReport) {
        let machine_names: BTreeSet<String> = self
            .b
            .state
            .cluster_resources(&self.key)
            .filter_map(|r| r.attributes.as_machine().map(|m| m.name.clone()))
            .collect();
        let stray: Vec<Resource> = self
            .b
            .state
            .cluster_resources(&self.key)
            .filter(|r| {
                r.attributes
                    .as_bootstrap()
                    .is_some_and(|bs| !machine_names.contains(&bs.machine))
            })
            .cloned()
            .collect();
        for r in stray {
            self.b.change(Change {
                address: r.address.clone(),
                kind: r.kind,
                provider: r.provider,
                action: Action::Delete,
                reason_code: ReasonCode::Removed,
                reason: "its machine no longer exists".into(),
                replacement: None,
                delete_first: false,
                before: Some(r.attributes.clone()),
                after: None,
                attributes: vec![],
                bootstrap_diff: None,
                part_of: None,
                group: None,
                wave: None,
            });
            self.b
                .step(ProtoStep::delete(r.address.clone(), r.provider));
            report.stray_bootstrap.push(r.address);
        }
    }
}

/// Remove every resource of a cluster: workers, then control-plane machines
/// newest first, then the rest in reverse dependency order.
pub(super) fn remove_cluster(
    b: &mut Builder<'_>,
    key: &str,
    code: ReasonCode,
) -> ClusterDisposition {
    let reason = match code {
        ReasonCode::Destroy => "capi destroy".to_string(),
        _ => format!("Cluster {key} is no longer in the manifests"),
    };
    let resources: Vec<Resource> = b.state.cluster_resources(key).cloned().collect();
    let machines = resources
        .iter()
        .filter(|r| r.attributes.as_machine().is_some())
        .count();
    if code == ReasonCode::Removed && machines > 0 {
        b.warnings.push(format!(
            "Cluster {key} is no longer in the manifests: all its {machines} machine{} and its infrastructure will be destroyed",
            if machines == 1 { "" } else { "s" }
        ));
    }
    let mut cps: Vec<&Resource> = resources
        .iter()
        .filter(|r| {
            r.attributes
                .as_machine()
                .is_some_and(|m| m.role == Role::ControlPlane)
        })
        .collect();
    cps.sort_by_key(|r| std::cmp::Reverse(r.sequence));
    let mut worker_ids = Vec::new();
    let mut chain: Option<usize> = None;
    let mut deleted: Vec<Address> = Vec::with_capacity(resources.len());
    let mk = |r: &Resource, part_of: Option<Address>| Change {
        address: r.address.clone(),
        kind: r.kind,
        provider: r.provider,
        action: Action::Delete,
        reason_code: code,
        reason: if part_of.is_some() {
            "deleted with its machine".into()
        } else {
            reason.clone()
        },
        replacement: None,
        delete_first: false,
        before: Some(r.attributes.clone()),
        after: None,
        attributes: vec![],
        bootstrap_diff: None,
        part_of,
        group: r.attributes.as_machine().map(|m| m.owner.to_string()),
        wave: None,
    };
    for r in resources.iter().filter(|r| {
        r.attributes
            .as_machine()
            .is_some_and(|m| m.role == Role::Worker)
    }) {
        b.change(mk(r, None));
        worker_ids.push(b.step(ProtoStep::delete(r.address.clone(), r.provider)));
        deleted.push(r.address.clone());
    }
    for r in cps {
        b.change(mk(r, None));
        let mut s = ProtoStep::delete(r.address.clone(), r.provider);
        s.after.extend(worker_ids.iter().copied());
        s.after.extend(chain);
        chain = Some(b.step(s));
        deleted.push(r.address.clone());
    }
    for r in resources
        .iter()
        .filter(|r| r.attributes.as_machine().is_none())
    {
        let part_of = r
            .attributes
            .as_bootstrap()
            .map(|bs| r.address.sibling(ResourceKind::Machine, Some(&bs.machine)))
            .filter(|a| b.state.get(a).is_some());
        b.change(mk(r, part_of));
        b.step(ProtoStep::delete(r.address.clone(), r.provider));
        deleted.push(r.address.clone());
    }
    ClusterDisposition::Removed {
        reason: code,
        deleted,
    }
}

/// For a group that left the manifests while one new group of its kind
/// came in: how to keep its machines if that is a rename (`capi state mv`
/// gives them the new owner; otherwise the plan destroys them and creates
/// the new group's). Empty when no such group came in, or several did, or
/// the group is a standalone Machine (whose name cannot change).
fn rename_hint(cluster: &str, gone: &Owner, new_groups: &[&Owner]) -> String {
    if gone.kind == OwnerKind::Machine {
        return String::new();
    }
    let mut same_kind = new_groups.iter().filter(|o| o.kind == gone.kind);
    match (same_kind.next(), same_kind.next()) {
        (Some(new), None) => format!(
            "; if it was renamed to {}, `capi state mv {cluster}/{}/{} {cluster}/{}/{}` gives the new name these machines instead{}",
            new.name,
            gone.kind,
            gone.name,
            new.kind,
            new.name,
            if gone.kind == OwnerKind::KubeadmControlPlane {
                " (a KubeadmControlPlane's name is part of its machines' identity: they are then replaced one by one, not all destroyed)"
            } else {
                ""
            }
        ),
        _ => String::new(),
    }
}
