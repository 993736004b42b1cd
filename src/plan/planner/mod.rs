//! Desired clusters × state → plan. [`plan_with_report`] runs one
//! [`ClusterPlanner`](cluster::ClusterPlanner) per cluster in the state or the
//! manifests; its named steps (infrastructure, machine groups, the
//! control-plane gate, the bootstrap token, removals) append changes and
//! proto-steps to a shared [`Builder`] and each returns a report of what it
//! decided. The proto-steps are then ordered (`order.rs`) and the finished
//! plan is checked (`check.rs`).
//!
//! Before any cluster is planned, the options and an apply's inputs are
//! checked for what would cost machines: `--replace` and `--target`
//! addresses (the PKI or network under machines, a group several clusters
//! have), manifests that define no cluster while the state has some, a
//! cluster whose PKI is gone while its control plane ran, a cluster moving
//! to another provider.

mod cluster;
mod group;
mod infrastructure;
pub(crate) mod machines;
mod removal;
mod replacements;
pub(crate) mod report;
mod token;
mod waves;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::desired::Desired;
use crate::resource::*;
use crate::state::State;

use super::order::{self, ProtoStep};
use super::*;

use report::*;

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub operation: Operation,
    /// The current time (the planner reads no clock).
    pub now_unix: i64,
    /// Rotate the bootstrap token when it expires within this many seconds.
    pub token_margin_seconds: i64,
    /// Refresh results by address.
    pub observations: BTreeMap<Address, Observation>,
    /// `--replace ADDRESS`.
    pub replace: Vec<Address>,
    /// `--target`: only these resources, clusters or machine groups (and
    /// what they depend on).
    pub targets: Vec<Target>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            operation: Operation::Apply,
            now_unix: 0,
            token_margin_seconds: 3600,
            observations: BTreeMap::new(),
            replace: Vec::new(),
            targets: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("{address}: {field} cannot change after creation ({before} → {after}).\n  {help}\n  (declared in {file}:{line})")]
    Immutable {
        address: Address,
        field: String,
        before: String,
        after: String,
        help: String,
        file: String,
        line: u32,
    },
    #[error("{message}\n  {help}\n  (declared in {file}:{line})")]
    VersionSkew {
        message: String,
        help: String,
        file: String,
        line: u32,
    },
    #[error("--{flag} {address}: {message}")]
    BadAddress {
        flag: &'static str,
        address: String,
        message: String,
    },
    #[error("cluster {cluster} has its join token in the state but not its PKI (removed with `capi state rm`?): its control plane ran, so machines bootstrapped under its certificate authority exist, and a new PKI would be a new CA they do not trust (and that capi would adopt them under).\n  Put the PKI back: restore the state from its backup or an earlier `capi state pull` (`capi state push FILE --force`); or remove the whole cluster with `capi destroy {cluster}` first")]
    PkiLost { cluster: String },
    #[error("the manifests define no cluster, and the state holds {count} ({list}): planned from them, every one would be destroyed.\n  Pass the files that define the clusters (manifests rendered to nothing, or holding only Secrets, ConfigMaps or templates, define none); to remove the clusters, run `capi destroy`")]
    NoClusters { count: usize, list: String },
    #[error("cluster {cluster} is on {state} in the state, and this plan puts it on {desired}: a cluster cannot move between providers, and its new machines would be created on {desired} next to the others.\n  {help}\n  (declared in {file}:{line})")]
    ProviderChanged {
        cluster: String,
        state: String,
        desired: ProviderKind,
        help: String,
        file: String,
        line: u32,
    },
    #[error(
        "the plan failed its own consistency check: {0}. This is a bug in capi; please report it"
    )]
    Check(String),
    #[error("dependency cycle between {0}")]
    Cycle(String),
}

/// The plan under construction: what every cluster's steps append to.
struct Builder<'a> {
    state: &'a State,
    desired: &'a Desired,
    opts: &'a PlanOptions,
    seed: String,
    changes: Vec<Change>,
    steps: Vec<ProtoStep>,
    documents: BTreeMap<String, String>,
    warnings: Vec<String>,
    /// Names taken in this cluster (state + planned).
    taken: BTreeSet<String>,
    rollouts: Vec<Rollout>,
}

impl Builder<'_> {
    fn step(&mut self, s: ProtoStep) -> usize {
        self.steps.push(s);
        self.steps.len() - 1
    }

    fn observation(&self, a: &Address) -> Option<&Observation> {
        self.opts.observations.get(a)
    }

    fn change(&mut self, c: Change) {
        self.changes.push(c);
    }
}

/// Why `--replace` refuses a resource that every machine of its cluster
/// depends on while the cluster has machines: a new PKI is a new CA that
/// the running machines do not trust; a network cannot be removed under the
/// machines attached to it (OpenStack refuses, Docker keeps it). A load
/// balancer can be: it comes back at the same endpoint, as it does when
/// one deleted outside capi is created again.
fn not_replaceable(state: &State, a: &Address) -> Option<String> {
    // What a replacement would not change: said, not ignored.
    match a.kind() {
        ResourceKind::Token => {
            return Some("capi rotates the join token itself before it expires; it is not replaced on demand".into())
        }
        ResourceKind::Bootstrap => {
            return Some("bootstrap data is rendered for its machine and runs once: replace the machine (`--replace` of its address) to run it again".into())
        }
        _ => {}
    }
    let what = match a.kind() {
        ResourceKind::Pki => {
            "the cluster's certificate authorities, which every machine and kubeconfig trusts"
        }
        ResourceKind::Network => "the network every machine is attached to",
        _ => return None,
    };
    let machines = state
        .cluster_resources(a.cluster_key())
        .filter(|r| r.address.kind() == ResourceKind::Machine)
        .count();
    (machines > 0).then(|| {
        format!(
            "it is {what}; replacing it under the cluster's {machines} machine(s) would break them, and Cluster API has no such operation either. Replace machines instead, or remove the cluster with `capi destroy {}` and apply it again",
            a.cluster_key()
        )
    })
}

fn provider_of(kind: ResourceKind, cluster: ProviderKind) -> ProviderKind {
    if kind.is_local() {
        ProviderKind::Local
    } else {
        cluster
    }
}

pub fn plan(desired: &Desired, state: &State, opts: &PlanOptions) -> Result<Plan, PlanError> {
    plan_with_report(desired, state, opts).map(|(plan, _)| plan)
}

/// [`plan`], and what each planning step decided (before `--target` narrows
/// the plan down).
pub fn plan_with_report(
    desired: &Desired,
    state: &State,
    opts: &PlanOptions,
) -> Result<(Plan, PlanReport), PlanError> {
    check_addresses(desired, state, opts)?;
    if opts.operation == Operation::Apply {
        check_some_cluster(desired, state)?;
        check_pki_kept(desired, state)?;
        check_providers(desired, state, &opts.targets)?;
    }
    let mut b = Builder {
        state,
        desired,
        opts,
        seed: format!("{}:{}", state.lineage, state.serial),
        changes: Vec::new(),
        steps: Vec::new(),
        documents: BTreeMap::new(),
        warnings: Vec::new(),
        taken: BTreeSet::new(),
        rollouts: Vec::new(),
    };
    let mut keys: BTreeSet<String> = state.cluster_keys().into_iter().collect();
    if opts.operation == Operation::Apply {
        keys.extend(desired.clusters.iter().map(|c| c.id.key()));
    }
    let mut report = PlanReport::default();
    for key in keys {
        let disposition = plan_cluster_key(&mut b, &key)?;
        report.clusters.push(ClusterReport {
            cluster: key,
            disposition,
        });
    }
    Ok((finish(b)?, report))
}

/// Manifests that define no cluster (a template rendered to nothing, only
/// Secrets or templates) would plan the destruction of every cluster in the
/// state: refused, as empty manifests are. `capi destroy` does that.
fn check_some_cluster(desired: &Desired, state: &State) -> Result<(), PlanError> {
    if !desired.clusters.is_empty() {
        return Ok(());
    }
    let keys = state.cluster_keys();
    if keys.is_empty() {
        return Ok(());
    }
    Err(PlanError::NoClusters {
        count: keys.len(),
        list: keys.into_iter().collect::<Vec<_>>().join(", "),
    })
}

/// A cluster whose control plane ran (its join token is in the state) gets
/// no new PKI: the machines that exist, forgotten by the state or not,
/// trust the old certificate authority, and a create adopts a machine of
/// this state it finds at its address.
fn check_pki_kept(desired: &Desired, state: &State) -> Result<(), PlanError> {
    // One pass over the state (it may hold 100,000 machines).
    let (mut pki, mut token) = (BTreeSet::new(), BTreeSet::new());
    for r in state.resources.iter() {
        match r.address.kind() {
            ResourceKind::Pki => pki.insert(r.address.cluster_key()),
            ResourceKind::Token => token.insert(r.address.cluster_key()),
            _ => false,
        };
    }
    for dc in desired.clusters.iter().filter(|dc| !dc.paused) {
        let key = dc.id.key();
        if token.contains(key.as_str()) && !pki.contains(key.as_str()) {
            return Err(PlanError::PkiLost { cluster: key });
        }
    }
    Ok(())
}

/// A cluster stays on the provider it was created on: a plan whose
/// manifests (or `--provider sim`) put a cluster with infrastructure in the
/// state on another provider is refused, not planned as a mixed cluster (a
/// rehearsal on the simulator must never reach real infrastructure).
/// Paused clusters are left as they are, and with `--target` only the
/// clusters it names are planned.
fn check_providers(desired: &Desired, state: &State, targets: &[Target]) -> Result<(), PlanError> {
    let planned = |key: &str| {
        targets.is_empty()
            || targets.iter().any(|t| match t {
                Target::Resource(a) => a.cluster_key() == key,
                Target::Cluster(k) => k == key,
                // A group may be in any cluster.
                Target::Group { .. } => true,
            })
    };
    let checked: Vec<&crate::desired::DesiredCluster> = desired
        .clusters
        .iter()
        .filter(|dc| !dc.paused && planned(&dc.id.key()))
        .collect();
    // The providers each of them has in the state, in one pass over it (it
    // may hold 100,000 machines).
    let mut on: BTreeMap<String, BTreeSet<ProviderKind>> = checked
        .iter()
        .map(|dc| (dc.id.key(), BTreeSet::new()))
        .collect();
    for r in state
        .resources
        .iter()
        .filter(|r| r.provider != ProviderKind::Local)
    {
        if let Some(set) = on.get_mut(r.address.cluster_key()) {
            set.insert(r.provider);
        }
    }
    for dc in checked {
        let set = &on[&dc.id.key()];
        if set.is_empty() || (set.len() == 1 && set.contains(&dc.provider)) {
            continue;
        }
        let names: Vec<&str> = set.iter().map(|p| p.as_str()).collect();
        let key = dc.id.key();
        let help = if set.len() > 1 {
            format!("An earlier capi planned it onto two providers: `capi state list` shows its resources; remove those on the wrong one with `capi state rm` (and what they left behind, by hand), or remove the cluster with `capi destroy {key}`.")
        } else if names[0] == "sim" {
            format!("It was applied with --provider sim (a rehearsal): pass --provider sim again to go on with it there, or remove it with `capi destroy {key}` before applying it for real.")
        } else if dc.provider == ProviderKind::Sim {
            format!("It runs on {}: plan it without --provider sim (a rehearsal is for clusters not applied yet, or applied with it).", names[0])
        } else {
            format!("Its infrastructure kinds changed: restore those it was created with, or remove it with `capi destroy {key}` and apply it again.")
        };
        return Err(PlanError::ProviderChanged {
            cluster: key,
            state: format!(
                "the {} provider{}",
                names.join(" and "),
                if names.len() > 1 { "s" } else { "" }
            ),
            desired: dc.provider,
            help,
            file: dc.source.file.clone(),
            line: dc.source.line,
        });
    }
    Ok(())
}

/// `--replace` must name a resource in the state that can be replaced on
/// its own, `--target` a resource in the state or the manifests, a cluster,
/// or a machine group one of them has.
fn check_addresses(desired: &Desired, state: &State, opts: &PlanOptions) -> Result<(), PlanError> {
    for a in &opts.replace {
        let message = if state.get(a).is_none() {
            Some("no such resource in the state (see `capi state list`)".to_string())
        } else {
            not_replaceable(state, a)
        };
        if let Some(message) = message {
            return Err(PlanError::BadAddress {
                flag: "replace",
                address: a.to_string(),
                message,
            });
        }
    }
    for t in &opts.targets {
        let message = match t {
            Target::Resource(a) => (state.get(a).is_none()
                && desired.cluster(a.cluster_key()).is_none())
            .then(|| "no such resource in the state or the manifests".to_string()),
            Target::Cluster(key) => (desired.cluster(key).is_none()
                && state.cluster_resources(key).next().is_none())
            .then(|| {
                let mut known: Vec<String> = desired.clusters.iter().map(|c| c.id.key()).collect();
                known.extend(state.cluster_keys());
                known.sort();
                known.dedup();
                format!(
                    "no such cluster in the manifests or the state; clusters: {}",
                    known.join(", ")
                )
            }),
            Target::Group { kind, name } => {
                let owners = known_owners(desired, state);
                let clusters = group_clusters(desired, state, opts.operation, *kind, name);
                if !owners.iter().any(|o| o.kind == *kind && o.name == *name) {
                    let list: Vec<String> = owners.iter().map(|o| o.to_string()).collect();
                    Some(format!(
                        "no such machine group in the manifests or the state; groups: {}",
                        list.join(", ")
                    ))
                } else if clusters.len() > 1 {
                    // Not every cluster's group of that name: one of them.
                    let list: Vec<&str> = clusters.iter().map(String::as_str).collect();
                    Some(format!(
                        "more than one cluster has a {} named {name:?} ({}): target the cluster instead (`--target CLUSTER`), or a machine of the group",
                        kind.as_str(),
                        list.join(", ")
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(message) = message {
            return Err(PlanError::BadAddress {
                flag: "target",
                address: t.to_string(),
                message,
            });
        }
    }
    Ok(())
}

/// The clusters (keys) that have a machine group of this kind and name,
/// in the state or, for an apply, in the manifests (paused ones left out:
/// they are not planned).
fn group_clusters(
    desired: &Desired,
    state: &State,
    operation: Operation,
    kind: OwnerKind,
    name: &str,
) -> BTreeSet<String> {
    let is = |o: &Owner| o.kind == kind && o.name == name;
    let mut out: BTreeSet<String> = desired
        .clusters
        .iter()
        .filter(|c| operation == Operation::Apply && !c.paused)
        .filter(|c| c.groups.iter().any(|g| is(&g.owner)))
        .map(|c| c.id.key())
        .collect();
    out.extend(
        state
            .resources
            .iter()
            .filter(|r| r.attributes.as_machine().is_some_and(|m| is(&m.owner)))
            .map(|r| r.address.cluster_key().to_string()),
    );
    out
}

/// Every group that owns machines, in the manifests or the state.
fn known_owners(desired: &Desired, state: &State) -> BTreeSet<Owner> {
    let mut out: BTreeSet<Owner> = desired
        .clusters
        .iter()
        .flat_map(|c| c.groups.iter().map(|g| g.owner.clone()))
        .collect();
    out.extend(
        state
            .resources
            .iter()
            .filter_map(|r| r.attributes.as_machine())
            .map(|m| m.owner.clone()),
    );
    out
}

/// One cluster: planned step by step, left alone (paused) or removed.
fn plan_cluster_key(b: &mut Builder<'_>, key: &str) -> Result<ClusterDisposition, PlanError> {
    b.taken = b
        .state
        .cluster_resources(key)
        .filter_map(|r| r.attributes.as_machine().map(|m| m.name.clone()))
        .collect();
    let desired = b.desired;
    Ok(match (b.opts.operation, desired.cluster(key)) {
        (Operation::Apply, Some(dc)) if dc.paused => {
            b.warnings.push(format!(
                "Cluster {} is paused (spec.paused): capi leaves it untouched",
                dc.id
            ));
            ClusterDisposition::Paused
        }
        (Operation::Apply, Some(dc)) => {
            let steps = cluster::ClusterPlanner::new(b, dc).do_plan()?;
            ClusterDisposition::Planned(Box::new(steps))
        }
        (Operation::Apply, None) => removal::remove_cluster(b, key, ReasonCode::Removed),
        (Operation::Destroy, _) => removal::remove_cluster(b, key, ReasonCode::Destroy),
    })
}

/// Order the proto-steps, keep the documents the steps create, and check the
/// result.
fn finish(b: Builder<'_>) -> Result<Plan, PlanError> {
    let Builder {
        state,
        opts,
        changes,
        steps,
        documents,
        warnings,
        rollouts,
        ..
    } = b;
    let (mut changes, steps) = order::finalize(changes, steps, state, &opts.targets)?;
    order::sort_changes(&mut changes, &steps);
    let mut plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        capi_version: env!("CARGO_PKG_VERSION").to_string(),
        operation: opts.operation,
        prior_lineage: state.lineage.clone(),
        prior_serial: state.serial,
        summary: Plan::compute_summary(&changes),
        changes,
        rollouts: if opts.targets.is_empty() {
            rollouts
        } else {
            Vec::new()
        },
        documents: BTreeMap::new(),
        drift: Vec::new(),
        warnings,
        steps,
    };
    for s in &plan.steps {
        if let Some(Spec::Bootstrap(bs)) = &s.spec {
            if let Some(d) = documents.get(bs.sha256.as_str()) {
                plan.documents.insert(bs.sha256.to_string(), d.clone());
            }
        }
    }
    check::check(&plan, state).map_err(PlanError::Check)?;
    Ok(plan)
}

/// Attribute-level differences (flattened paths).
fn attribute_diff(before: Option<&Spec>, after: Option<&Spec>) -> Vec<AttributeChange> {
    let b = before.map(Spec::flatten).unwrap_or_default();
    let a = after.map(Spec::flatten).unwrap_or_default();
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| AttributeChange {
            path: k.clone(),
            before: b.get(k).cloned(),
            after: a.get(k).cloned(),
        })
        .collect()
}
