//! Desired clusters × state → plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::desired::{Desired, DesiredCluster, MachineGroup};
use crate::manifest::{IntOrPercent, TriggerIf};
use crate::resource::*;
use crate::state::{Resource, State, Status};

use super::order::{self, ProtoStep};
use super::rollout::{self, Existing, GroupOp};
use super::*;

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
    /// `--target ADDRESS`: only these (and what they depend on).
    pub targets: Vec<Address>,
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
    #[error(
        "the plan failed its own consistency check: {0}. This is a bug in capi; please report it"
    )]
    Check(String),
    #[error("dependency cycle between {0}")]
    Cycle(String),
}

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

fn provider_of(kind: ResourceKind, cluster: ProviderKind) -> ProviderKind {
    if kind.is_local() {
        ProviderKind::Local
    } else {
        cluster
    }
}

pub fn plan(desired: &Desired, state: &State, opts: &PlanOptions) -> Result<Plan, PlanError> {
    for (flag, list) in [("replace", &opts.replace), ("target", &opts.targets)] {
        for a in list {
            let known = state.get(a).is_some()
                || desired.cluster(a.cluster_key()).is_some() && !a.kind().is_named();
            if flag == "replace" && state.get(a).is_none() {
                return Err(PlanError::BadAddress {
                    flag,
                    address: a.to_string(),
                    message: "no such resource in the state (see `capi state list`)".into(),
                });
            }
            if flag == "target" && !known && desired.cluster(a.cluster_key()).is_none() {
                return Err(PlanError::BadAddress {
                    flag,
                    address: a.to_string(),
                    message: "no such resource in the state or the manifests".into(),
                });
            }
        }
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
    for key in keys {
        b.taken = state
            .cluster_resources(&key)
            .filter_map(|r| r.attributes.as_machine().map(|m| m.name.clone()))
            .collect();
        match (opts.operation, desired.cluster(&key)) {
            (Operation::Apply, Some(dc)) if dc.paused => {
                b.warnings.push(format!(
                    "Cluster {} is paused (spec.paused): capi leaves it untouched",
                    dc.id
                ));
            }
            (Operation::Apply, Some(dc)) => plan_cluster(&mut b, dc)?,
            (Operation::Apply, None) => remove_cluster(&mut b, &key, ReasonCode::Removed),
            (Operation::Destroy, _) => remove_cluster(&mut b, &key, ReasonCode::Destroy),
        }
    }
    let Builder {
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
            if let Some(d) = documents.get(&bs.sha256) {
                plan.documents.insert(bs.sha256.clone(), d.clone());
            }
        }
    }
    check::check(&plan, state).map_err(PlanError::Check)?;
    Ok(plan)
}

/// Plan a change of a singleton resource (pki, network, load balancer).
fn singleton(
    b: &mut Builder<'_>,
    dc: &DesiredCluster,
    kind: ResourceKind,
    spec: Spec,
    deps: Vec<Address>,
) -> Result<(), PlanError> {
    let addr = dc.address(kind, None);
    let provider = provider_of(kind, dc.provider);
    let existing = b.state.get(&addr);
    let mk = |action, code, reason: String, before: Option<Spec>| Change {
        address: addr.clone(),
        kind,
        provider,
        action,
        reason_code: code,
        reason,
        replacement: None,
        attributes: attribute_diff(before.as_ref(), Some(&spec)),
        before,
        after: Some(spec.clone()),
        bootstrap_diff: None,
        part_of: None,
        group: None,
        wave: None,
    };
    let create = |b: &mut Builder<'_>| {
        b.step(ProtoStep::create(
            addr.clone(),
            provider,
            spec.clone(),
            deps.clone(),
        ));
    };
    match existing {
        None => {
            b.change(mk(
                Action::Create,
                ReasonCode::New,
                format!("{} does not exist yet", kind.as_str()),
                None,
            ));
            create(b);
        }
        Some(r) => match r.status {
            Status::Creating => {
                b.change(mk(Action::Create, ReasonCode::Interrupted, "a previous apply was interrupted while creating it: capi will adopt it if it exists, or create it".into(), None));
                create(b);
            }
            Status::Deleting | Status::Failed => {
                let why = if r.status == Status::Failed {
                    format!(
                        "it failed: {}",
                        r.error
                            .as_ref()
                            .map(|e| e.message.as_str())
                            .unwrap_or("unknown error")
                    )
                } else {
                    "a previous apply was interrupted while deleting it".to_string()
                };
                let mut c = mk(
                    Action::Replace,
                    if r.status == Status::Failed {
                        ReasonCode::Failed
                    } else {
                        ReasonCode::Interrupted
                    },
                    format!("{why}: it is deleted and created again"),
                    Some(r.attributes.clone()),
                );
                c.replacement = Some(addr.clone());
                b.change(c);
                let d = b.step(ProtoStep::delete(addr.clone(), provider));
                let mut s = ProtoStep::create(addr.clone(), provider, spec.clone(), deps.clone());
                s.after.push(d);
                b.step(s);
            }
            Status::Ready | Status::Updating => {
                if b.opts.replace.contains(&addr) {
                    let mut c = mk(
                        Action::Replace,
                        ReasonCode::Requested,
                        "replacement requested with --replace".into(),
                        Some(r.attributes.clone()),
                    );
                    c.replacement = Some(addr.clone());
                    b.change(c);
                    let d = b.step(ProtoStep::delete(addr.clone(), provider));
                    let mut s =
                        ProtoStep::create(addr.clone(), provider, spec.clone(), deps.clone());
                    s.after.push(d);
                    b.step(s);
                } else if r.attributes != spec && in_place_infra(&r.attributes, &spec) {
                    b.change(mk(
                        Action::Update,
                        ReasonCode::InPlace,
                        "mutable infrastructure settings changed: updated in place".into(),
                        Some(r.attributes.clone()),
                    ));
                    b.step(ProtoStep::update(
                        addr.clone(),
                        provider,
                        spec.clone(),
                        deps.clone(),
                    ));
                } else if r.attributes != spec {
                    let diff = attribute_diff(Some(&r.attributes), Some(&spec));
                    let first = diff.first().cloned().unwrap_or(AttributeChange {
                        path: "spec".into(),
                        before: None,
                        after: None,
                    });
                    let help = match kind {
                        ResourceKind::Pki => "the cluster's certificate authorities cannot be regenerated in place; restore the previous value, or destroy and recreate the cluster".to_string(),
                        // The provider's reason (e.g. CAPO's webhook rules), when it gives one.
                        _ => match infra_immutable_reason(&r.attributes, &spec) {
                            Some(why) => format!("{why}; restore the previous value, or destroy and recreate the cluster"),
                            None => "the cluster's infrastructure is immutable (the control-plane endpoint would move); restore the previous value, or destroy and recreate the cluster".to_string(),
                        },
                    };
                    return Err(PlanError::Immutable {
                        address: addr.clone(),
                        field: first.path,
                        before: first
                            .before
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "unset".into()),
                        after: first
                            .after
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "unset".into()),
                        help,
                        file: dc.source.file.clone(),
                        line: dc.source.line,
                    });
                } else if matches!(b.observation(&addr), Some(Observation::Missing)) {
                    b.change(mk(
                        Action::Create,
                        ReasonCode::Drifted,
                        format!("the {} was deleted outside capi", kind.as_str()),
                        None,
                    ));
                    create(b);
                } else if r.status == Status::Updating {
                    b.change(mk(
                        Action::Update,
                        ReasonCode::Interrupted,
                        "a previous apply was interrupted while updating it".into(),
                        Some(r.attributes.clone()),
                    ));
                    b.step(ProtoStep::update(
                        addr.clone(),
                        provider,
                        spec.clone(),
                        deps.clone(),
                    ));
                }
            }
        },
    }
    Ok(())
}

/// Why the provider refuses an infrastructure change, when it says.
fn infra_immutable_reason(before: &Spec, after: &Spec) -> Option<String> {
    let (b, a) = match (before, after) {
        (Spec::Network(b), Spec::Network(a)) => (&b.infra, &a.infra),
        (Spec::Loadbalancer(b), Spec::Loadbalancer(a)) => (&b.infra, &a.infra),
        _ => return None,
    };
    match crate::infra::classify_infra_change(b, a) {
        crate::infra::InfraChange::Immutable(field, why) if !why.is_empty() => {
            Some(format!("{field}: {why}"))
        }
        _ => None,
    }
}

/// Network and load balancer changes the provider can apply in place.
fn in_place_infra(before: &Spec, after: &Spec) -> bool {
    let (b, a) = match (before, after) {
        (Spec::Network(b), Spec::Network(a)) if b.name == a.name => (&b.infra, &a.infra),
        (Spec::Loadbalancer(b), Spec::Loadbalancer(a))
            if b.port == a.port && b.fixed_endpoint == a.fixed_endpoint =>
        {
            (&b.infra, &a.infra)
        }
        _ => return false,
    };
    matches!(
        crate::infra::classify_infra_change(b, a),
        crate::infra::InfraChange::InPlace
    )
}

fn cluster_initialized(b: &Builder<'_>, dc: &DesiredCluster) -> bool {
    b.state.cluster_resources(&dc.id.key()).any(|r| {
        r.attributes
            .as_machine()
            .is_some_and(|m| m.role == Role::ControlPlane)
            && matches!(
                r.status,
                Status::Ready | Status::Updating | Status::Deleting
            )
            && !matches!(b.observation(&r.address), Some(Observation::Missing))
    })
}

/// Does a MachineHealthCheck allow remediating `unhealthy` of `total` machines?
fn remediation_allowed(
    b: &mut Builder<'_>,
    dc: &DesiredCluster,
    g: &MachineGroup,
    unhealthy: usize,
    total: usize,
) -> bool {
    if unhealthy == 0 {
        return true;
    }
    for hc in &dc.health_checks {
        let selects = hc.selector.iter().all(|(k, v)| g.labels.get(k) == Some(v));
        if !selects {
            continue;
        }
        let ok = match hc.trigger_if {
            TriggerIf::Always => true,
            TriggerIf::AtMost(limit) => {
                let max = match limit {
                    IntOrPercent::Int(i) => i,
                    IntOrPercent::Percent(_) => limit.resolve(total as u32, false),
                };
                unhealthy as i64 <= max
            }
            TriggerIf::InRange(lo, hi) => (lo as usize..=hi as usize).contains(&unhealthy),
        };
        if !ok {
            b.warnings.push(format!(
                "{}: {unhealthy} of {total} machines are unhealthy, more than MachineHealthCheck {:?} allows ({}); remediation is stopped until fewer are unhealthy or the check is changed",
                g.owner,
                hc.name,
                match hc.trigger_if {
                    TriggerIf::AtMost(l) => format!("unhealthyLessThanOrEqualTo {l}"),
                    TriggerIf::InRange(lo, hi) => format!("unhealthyInRange [{lo}-{hi}]"),
                    TriggerIf::Always => "always".into(),
                }
            ));
            return false;
        }
    }
    true
}

fn plan_cluster(b: &mut Builder<'_>, dc: &DesiredCluster) -> Result<(), PlanError> {
    let key = dc.id.key();
    let a = |k: ResourceKind| dc.address(k, None);
    singleton(b, dc, ResourceKind::Pki, Spec::Pki(dc.pki.clone()), vec![])?;
    singleton(
        b,
        dc,
        ResourceKind::Network,
        Spec::Network(dc.network.clone()),
        vec![],
    )?;
    singleton(
        b,
        dc,
        ResourceKind::Loadbalancer,
        Spec::Loadbalancer(dc.loadbalancer.clone()),
        vec![a(ResourceKind::Network)],
    )?;
    skew::check(b.state, dc)?;

    let mut initialized = cluster_initialized(b, dc);
    let token_addr = a(ResourceKind::Token);
    let mut joins_planned = false;
    let mut init_step: Option<usize> = None;
    let mut last_cp_step: Option<usize> = None;
    let mut cp_rollout_end: Option<usize> = None;
    let mut worker_step_ids: Vec<usize> = Vec::new();

    // The cluster's machines in state by owner, in state order (one pass,
    // not one per group: a cluster may have hundreds of groups).
    let state = b.state;
    let mut by_owner: HashMap<&Owner, Vec<&Resource>> = HashMap::new();
    for r in state.cluster_resources(&key) {
        if let Some(m) = r.attributes.as_machine() {
            by_owner.entry(&m.owner).or_default().push(r);
        }
    }
    for g in &dc.groups {
        let group_label = g.owner.to_string();
        let in_state: Vec<&Resource> = by_owner.remove(&g.owner).unwrap_or_default();
        // Interrupted deletes are finished first: the machines still exist
        // until then, so the rollout's first wave waits for them.
        let mut interrupted: Vec<usize> = Vec::new();
        for r in in_state.iter().filter(|r| r.status == Status::Deleting) {
            let chain = if g.role == Role::ControlPlane {
                Some((vec![], last_cp_step))
            } else {
                None
            };
            let id = delete_machine(
                b,
                dc,
                r,
                ReasonCode::Interrupted,
                "a previous apply was interrupted while deleting it".into(),
                Some(&group_label),
                None,
                chain,
            );
            interrupted.extend(id);
            if g.role == Role::Worker {
                worker_step_ids.extend(id);
            } else if id.is_some() {
                // Finishing a control-plane delete is part of its rollout:
                // workers wait for it (ControlPlaneIsStable).
                last_cp_step = id;
                cp_rollout_end = id;
            }
        }
        let live: Vec<&Resource> = in_state
            .iter()
            .copied()
            .filter(|r| r.status != Status::Deleting)
            .collect();
        let existing: Vec<Existing> = live
            .iter()
            .map(|r| {
                let m = r.attributes.as_machine().expect("machine");
                let fd_ok = g.failure_domains.contains(&m.failure_domain);
                // A pending create that is missing was simply never made: it is
                // resumed, not replaced.
                let unhealthy = r.status == Status::Failed
                    || match b.observation(&r.address) {
                        Some(Observation::Missing) => r.status != Status::Creating,
                        Some(Observation::Stopped(_) | Observation::Changed(_)) => true,
                        None => false,
                    };
                Existing {
                    name: m.name.clone(),
                    sequence: r.sequence,
                    failure_domain: m.failure_domain.clone(),
                    up_to_date: fd_ok
                        && m.identity == g.machine_identity(&m.failure_domain)
                        && !b.opts.replace.contains(&r.address),
                    unhealthy,
                }
            })
            .collect();
        let unhealthy = existing.iter().filter(|e| e.unhealthy).count();
        let remediate = remediation_allowed(b, dc, g, unhealthy, existing.len());
        let sched = rollout::schedule(g, &existing, &b.seed, remediate);
        if sched
            .waves
            .iter()
            .flatten()
            .any(|o| matches!(o, GroupOp::Create { .. }))
        {
            skew::check_join(dc, g)?;
        }
        if g.paused {
            b.warnings.push(format!(
                "{} is paused: capi does not scale or roll it",
                g.owner
            ));
        }
        if g.role == Role::Worker && matches!(g.rollout, crate::desired::Rollout::OnDelete) {
            let outdated = existing
                .iter()
                .filter(|e| !e.up_to_date && !e.unhealthy)
                .count();
            if outdated > 0 && g.owner.kind == OwnerKind::MachineDeployment {
                b.warnings.push(format!("{}: {outdated} machine(s) are outdated; with the OnDelete strategy they are replaced only when you delete them", g.owner));
            }
        }

        // A rollout (machines replaced) gates each new machine on health.
        let rolling = sched.waves.iter().flatten().any(|o| {
            matches!(
                o,
                GroupOp::Delete {
                    reason: ReasonCode::Outdated
                        | ReasonCode::Failed
                        | ReasonCode::Drifted
                        | ReasonCode::Requested,
                    ..
                }
            )
        });
        // Interrupted creates of machines the rollout keeps are resumed
        // first: the rollout counts them as available, so its first wave
        // waits for them.
        let scheduled_deletes: BTreeSet<&str> = sched
            .waves
            .iter()
            .flatten()
            .filter_map(|o| match o {
                GroupOp::Delete { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let mut resumed: Vec<usize> = Vec::new();
        for r in live.iter().filter(|r| r.status == Status::Creating) {
            let m = r.attributes.as_machine().expect("machine");
            if scheduled_deletes.contains(m.name.as_str()) {
                continue;
            }
            let mut c = machine_change(r, Action::Create, ReasonCode::Interrupted, "a previous apply was interrupted while creating it: capi will adopt the machine if it exists, or create it".into(), Some(&group_label), None);
            c.before = None;
            c.after = Some(r.attributes.clone());
            b.change(c);
            let mut s = ProtoStep::create(
                r.address.clone(),
                r.provider,
                r.attributes.clone(),
                r.dependencies.clone(),
            );
            if g.role == Role::ControlPlane {
                s.after.extend(last_cp_step);
            }
            let id = b.step(s);
            if g.role == Role::Worker {
                worker_step_ids.push(id);
            } else {
                last_cp_step = Some(id);
            }
            resumed.push(id);
        }
        // Materialise waves into steps.
        let mut prev_wave: Vec<usize> = resumed.iter().chain(interrupted.iter()).copied().collect();
        let mut pending_replacements: Vec<(Address, ReasonCode)> = Vec::new();
        let mut created: Vec<(Address, ReasonCode, Option<u32>, Spec, String)> = Vec::new();
        let mut deleted_names: BTreeSet<String> = BTreeSet::new();
        let mut waves_record: Vec<Wave> = Vec::new();
        // Names are the smallest free index; `taken` only grows during a
        // plan, so every index below the last one handed out stays taken and
        // the search resumes there (it restarted at 0 for every machine:
        // quadratic, 5.9 s to plan 10,000 new machines).
        let mut next_index = 0u32;
        for (wi, wave) in sched.waves.iter().enumerate() {
            let wave_no = Some(wi as u32 + 1);
            let mut this_wave = Vec::new();
            let mut record = Wave::default();
            for op in wave {
                match op {
                    GroupOp::Create {
                        failure_domain,
                        reason,
                    } => {
                        let name = match &g.fixed_name {
                            Some(n) => n.clone(),
                            None => {
                                let mut i = next_index;
                                loop {
                                    let n = g.machine_name(i);
                                    i += 1;
                                    if !b.taken.contains(&n) {
                                        next_index = i;
                                        break n;
                                    }
                                }
                            }
                        };
                        b.taken.insert(name.clone());
                        let role = if g.role == Role::ControlPlane && !initialized {
                            initialized = true;
                            BootstrapRole::Init
                        } else if g.role == Role::ControlPlane {
                            BootstrapRole::JoinControlPlane
                        } else {
                            BootstrapRole::JoinWorker
                        };
                        let (sha, api) = match role {
                            BootstrapRole::Init => g
                                .init_document
                                .clone()
                                .unwrap_or_else(|| g.join_document.clone()),
                            _ => g.join_document.clone(),
                        };
                        if role != BootstrapRole::Init {
                            joins_planned = true;
                        }
                        if let Some(doc) = b.desired.documents.get(&sha) {
                            b.documents.insert(sha.clone(), doc.clone());
                        }
                        let m_addr = dc.address(ResourceKind::Machine, Some(&name));
                        let bs_addr = dc.address(ResourceKind::Bootstrap, Some(&name));
                        let bspec = Spec::Bootstrap(BootstrapSpec {
                            machine: name.clone(),
                            role,
                            kubeadm_api: api.to_string(),
                            sha256: sha.clone(),
                        });
                        let mut bdeps = vec![a(ResourceKind::Pki), a(ResourceKind::Loadbalancer)];
                        if role != BootstrapRole::Init {
                            bdeps.push(token_addr.clone());
                        }
                        let mut bs_step = ProtoStep::create(
                            bs_addr.clone(),
                            ProviderKind::Local,
                            bspec.clone(),
                            bdeps,
                        );
                        bs_step.after.extend(prev_wave.iter().copied());
                        let bs_id = b.step(bs_step);
                        let mut labels = g.labels.clone();
                        if let Some(fd) = failure_domain {
                            labels.insert("cluster.x-k8s.io/failure-domain".into(), fd.clone());
                        }
                        let mspec = Spec::Machine(MachineSpec {
                            name: name.clone(),
                            role: g.role,
                            owner: g.owner.clone(),
                            version: g.version.clone(),
                            identity: g.machine_identity(failure_domain),
                            failure_domain: failure_domain.clone(),
                            infra: g.infra.clone(),
                            bootstrap_template: g.bootstrap_template.clone(),
                            labels,
                            annotations: g.annotations.clone(),
                        });
                        let mut mdeps = vec![
                            bs_addr.clone(),
                            a(ResourceKind::Network),
                            a(ResourceKind::Loadbalancer),
                        ];
                        if role != BootstrapRole::Init {
                            mdeps.push(token_addr.clone());
                        }
                        let mut ms =
                            ProtoStep::create(m_addr.clone(), dc.provider, mspec.clone(), mdeps);
                        ms.after.push(bs_id);
                        ms.after.extend(prev_wave.iter().copied());
                        ms.health_gate = rolling;
                        if g.role == Role::ControlPlane {
                            if let Some(p) = last_cp_step {
                                ms.after.push(p);
                            }
                        }
                        let id = b.step(ms);
                        if g.role == Role::ControlPlane {
                            last_cp_step = Some(id);
                            if role == BootstrapRole::Init {
                                init_step = Some(id);
                            }
                        } else {
                            worker_step_ids.push(id);
                            worker_step_ids.push(bs_id);
                        }
                        this_wave.push(id);
                        record.create.push(name.clone());
                        created.push((m_addr, *reason, wave_no, mspec, sha));
                        let _ = bspec;
                    }
                    GroupOp::Delete { name, reason } => {
                        let Some(r) = live
                            .iter()
                            .find(|r| r.attributes.as_machine().is_some_and(|m| &m.name == name))
                        else {
                            continue;
                        };
                        deleted_names.insert(name.clone());
                        record.delete.push(name.clone());
                        let (text, code) = delete_reason(b, g, r, *reason);
                        let after: Vec<usize> = prev_wave.clone();
                        let cp_after = if g.role == Role::ControlPlane {
                            last_cp_step
                        } else {
                            None
                        };
                        let ids = delete_machine(
                            b,
                            dc,
                            r,
                            code,
                            text,
                            Some(&group_label),
                            wave_no,
                            Some((after, cp_after)),
                        );
                        if let Some(id) = ids {
                            if g.role == Role::ControlPlane {
                                last_cp_step = Some(id);
                            } else {
                                worker_step_ids.push(id);
                            }
                            this_wave.push(id);
                            if matches!(
                                code,
                                ReasonCode::Outdated
                                    | ReasonCode::Failed
                                    | ReasonCode::Drifted
                                    | ReasonCode::Requested
                            ) {
                                pending_replacements.push((r.address.clone(), code));
                            }
                        }
                    }
                }
            }
            prev_wave = this_wave;
            waves_record.push(record);
        }
        if !waves_record.is_empty() {
            b.rollouts.push(Rollout {
                cluster: key.clone(),
                group: group_label.clone(),
                waves: waves_record,
            });
        }
        if g.role == Role::ControlPlane
            && (cp_rollout_end.is_some()
                || sched.waves.iter().flatten().any(|o| {
                    matches!(
                        o,
                        GroupOp::Delete {
                            reason: ReasonCode::Outdated | ReasonCode::Failed,
                            ..
                        }
                    )
                }))
        {
            cp_rollout_end = last_cp_step;
        }

        // Pair replaced machines with their replacements for review.
        pair_replacements(b, &pending_replacements, &created, &group_label);

        // Machines kept: interrupted creates resume; labels update in place.
        for r in &live {
            let m = r.attributes.as_machine().expect("machine");
            if deleted_names.contains(&m.name) {
                continue;
            }
            if r.status == Status::Creating {
                continue;
            }
            let desired_labels = {
                let mut l = g.labels.clone();
                if let Some(fd) = &m.failure_domain {
                    l.insert("cluster.x-k8s.io/failure-domain".into(), fd.clone());
                }
                l
            };
            if m.identity == g.machine_identity(&m.failure_domain)
                && (m.labels != desired_labels || m.annotations != g.annotations)
                && r.status != Status::Failed
            {
                let mut new = m.clone();
                new.labels = desired_labels;
                new.annotations = g.annotations.clone();
                let spec = Spec::Machine(new);
                let mut c = machine_change(
                    r,
                    Action::Update,
                    ReasonCode::InPlace,
                    "machine labels or annotations changed: updated in place, the machine is kept"
                        .into(),
                    Some(&group_label),
                    None,
                );
                c.after = Some(spec.clone());
                c.attributes = attribute_diff(Some(&r.attributes), Some(&spec));
                b.change(c);
                b.step(ProtoStep::update(
                    r.address.clone(),
                    r.provider,
                    spec,
                    r.dependencies.clone(),
                ));
            } else if r.status == Status::Updating {
                let c = machine_change(
                    r,
                    Action::Update,
                    ReasonCode::Interrupted,
                    "a previous apply was interrupted while updating it".into(),
                    Some(&group_label),
                    None,
                );
                b.change(c);
                b.step(ProtoStep::update(
                    r.address.clone(),
                    r.provider,
                    r.attributes.clone(),
                    r.dependencies.clone(),
                ));
            }
        }
        for n in &sched.not_remediated {
            b.warnings.push(format!(
                "{}: machine {n} is unhealthy and is not replaced",
                g.owner
            ));
        }
    }

    // Workers wait for a control-plane rollout to finish (ControlPlaneIsStable).
    if let Some(end) = cp_rollout_end {
        for id in &worker_step_ids {
            if *id > end {
                b.steps[*id].after.push(end);
            }
        }
    }

    // The bootstrap token: created once the first control-plane machine is up
    // (it is registered through it), rotated when it expires.
    let token_spec = Spec::Token(dc.token.clone());
    match b.state.get(&token_addr) {
        None => {
            if joins_planned || init_step.is_some() {
                b.change(Change {
                    address: token_addr.clone(),
                    kind: ResourceKind::Token,
                    provider: dc.provider,
                    action: Action::Create,
                    reason_code: ReasonCode::New,
                    reason: "joining machines need a bootstrap token".into(),
                    replacement: None,
                    before: None,
                    after: Some(token_spec.clone()),
                    attributes: attribute_diff(None, Some(&token_spec)),
                    bootstrap_diff: None,
                    part_of: None,
                    group: None,
                    wave: None,
                });
                let mut s = ProtoStep::create(token_addr.clone(), dc.provider, token_spec, vec![]);
                s.after.extend(init_step);
                b.step(s);
            }
        }
        Some(r) => {
            let expires = r
                .observed
                .get("expires_unix")
                .and_then(|v| v.as_i64())
                .unwrap_or(0);
            let interrupted = r.status.is_pending() || r.status == Status::Failed;
            if joins_planned
                && (expires - b.opts.now_unix < b.opts.token_margin_seconds || interrupted)
            {
                let reason = if interrupted {
                    "a previous apply did not finish registering the token: a new one is made"
                        .to_string()
                } else if expires <= b.opts.now_unix {
                    format!(
                        "the bootstrap token expired at {}: a new one is made before machines join",
                        crate::util::time::format_rfc3339(expires)
                    )
                } else {
                    format!(
                        "the bootstrap token expires at {}: a new one is made before machines join",
                        crate::util::time::format_rfc3339(expires)
                    )
                };
                b.change(Change {
                    address: token_addr.clone(),
                    kind: ResourceKind::Token,
                    provider: dc.provider,
                    action: Action::Update,
                    reason_code: ReasonCode::TokenExpired,
                    reason,
                    replacement: None,
                    before: Some(r.attributes.clone()),
                    after: Some(token_spec.clone()),
                    attributes: vec![AttributeChange {
                        path: "token".into(),
                        before: Some(serde_json::json!("(sensitive)")),
                        after: Some(serde_json::json!("(sensitive, new)")),
                    }],
                    bootstrap_diff: None,
                    part_of: None,
                    group: None,
                    wave: None,
                });
                let mut s = ProtoStep::update(token_addr.clone(), dc.provider, token_spec, vec![]);
                s.after.extend(init_step);
                b.step(s);
            }
        }
    }

    // Machines and bootstrap data of groups that are gone.
    let groups: BTreeSet<&Owner> = dc.groups.iter().map(|g| &g.owner).collect();
    let orphans: Vec<Resource> = b
        .state
        .cluster_resources(&key)
        .filter(|r| {
            r.attributes
                .as_machine()
                .is_some_and(|m| !groups.contains(&m.owner))
        })
        .cloned()
        .collect();
    let mut cp_orphans: Vec<&Resource> = Vec::new();
    for r in &orphans {
        let m = r.attributes.as_machine().unwrap();
        if m.role == Role::ControlPlane {
            cp_orphans.push(r);
            continue;
        }
        let text = format!("{} is no longer in the manifests", m.owner);
        delete_machine(
            b,
            dc,
            r,
            ReasonCode::Removed,
            text,
            Some(&m.owner.to_string()),
            None,
            None,
        );
    }
    cp_orphans.sort_by_key(|r| std::cmp::Reverse(r.sequence));
    for r in cp_orphans {
        let m = r.attributes.as_machine().unwrap();
        let text = format!("{} is no longer in the manifests", m.owner);
        let id = delete_machine(
            b,
            dc,
            r,
            ReasonCode::Removed,
            text,
            Some(&m.owner.to_string()),
            None,
            Some((vec![], last_cp_step)),
        );
        if id.is_some() {
            last_cp_step = id;
        }
    }
    // Bootstrap data whose machine is gone from state.
    let machine_names: BTreeSet<String> = b
        .state
        .cluster_resources(&key)
        .filter_map(|r| r.attributes.as_machine().map(|m| m.name.clone()))
        .collect();
    let stray: Vec<Resource> = b
        .state
        .cluster_resources(&key)
        .filter(|r| {
            r.attributes
                .as_bootstrap()
                .is_some_and(|bs| !machine_names.contains(&bs.machine))
        })
        .cloned()
        .collect();
    for r in stray {
        b.change(Change {
            address: r.address.clone(),
            kind: r.kind,
            provider: r.provider,
            action: Action::Delete,
            reason_code: ReasonCode::Removed,
            reason: "its machine no longer exists".into(),
            replacement: None,
            before: Some(r.attributes.clone()),
            after: None,
            attributes: vec![],
            bootstrap_diff: None,
            part_of: None,
            group: None,
            wave: None,
        });
        b.step(ProtoStep::delete(r.address.clone(), r.provider));
    }
    Ok(())
}

fn delete_reason(
    b: &Builder<'_>,
    g: &MachineGroup,
    r: &Resource,
    code: ReasonCode,
) -> (String, ReasonCode) {
    let m = r.attributes.as_machine().expect("machine");
    match code {
        ReasonCode::Failed => {
            if r.status == Status::Failed {
                let why = match &r.error {
                    Some(e) => match (&e.command, e.exit_code) {
                        (Some(_), Some(code)) => format!(
                            "its bootstrap failed, exit code {code}; see `capi state show {}`",
                            r.address
                        ),
                        _ => short(&e.message, 100),
                    },
                    None => "unknown error".into(),
                };
                (
                    format!("the machine failed ({why}): machines are replaced, never repaired"),
                    ReasonCode::Failed,
                )
            } else {
                let what = match b.observation(&r.address) {
                    Some(Observation::Missing) => "was deleted outside capi".to_string(),
                    Some(Observation::Stopped(s)) => format!("is {s} (changed outside capi)"),
                    Some(Observation::Changed(a)) => format!(
                        "was changed outside capi ({})",
                        a.iter()
                            .map(|c| c.path.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    _ => "is unhealthy".to_string(),
                };
                (
                    format!(
                        "the machine {what}: it is replaced (Cluster API replaces, never repairs)"
                    ),
                    ReasonCode::Drifted,
                )
            }
        }
        ReasonCode::Outdated => {
            if b.opts.replace.contains(&r.address) {
                return (
                    "replacement requested with --replace".into(),
                    ReasonCode::Requested,
                );
            }
            let mut why = Vec::new();
            if m.version != g.version {
                why.push(format!("version {} → {}", m.version, g.version));
            }
            if m.infra.kind != g.infra.kind || m.infra.name != g.infra.name {
                why.push(format!(
                    "infrastructure template {}/{} → {}/{}",
                    m.infra.kind, m.infra.name, g.infra.kind, g.infra.name
                ));
            } else if m.infra.spec != g.infra.spec {
                why.push(format!(
                    "{} {:?} content changed",
                    g.infra.kind, g.infra.name
                ));
            }
            if m.bootstrap_template != g.bootstrap_template {
                why.push(format!(
                    "bootstrap template {} → {}",
                    m.bootstrap_template, g.bootstrap_template
                ));
            }
            if !g.failure_domains.contains(&m.failure_domain) {
                why.push(format!(
                    "failure domain {} is no longer used",
                    m.failure_domain.as_deref().unwrap_or("(none)")
                ));
            }
            if why.is_empty() {
                why.push(format!("{} content changed", g.bootstrap_template));
            }
            (
                format!("{}: machines are immutable", why.join(", ")),
                ReasonCode::Outdated,
            )
        }
        ReasonCode::ScaleDown => (
            format!("{} scaled down to {} replicas", g.owner, g.replicas),
            ReasonCode::ScaleDown,
        ),
        other => ("no longer wanted".into(), other),
    }
}

/// The first line of a message, at most `n` characters.
fn short(s: &str, n: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > n {
        format!("{}…", line.chars().take(n).collect::<String>())
    } else {
        line.to_string()
    }
}

fn machine_change(
    r: &Resource,
    action: Action,
    code: ReasonCode,
    reason: String,
    group: Option<&str>,
    wave: Option<u32>,
) -> Change {
    Change {
        address: r.address.clone(),
        kind: r.kind,
        provider: r.provider,
        action,
        reason_code: code,
        reason,
        replacement: None,
        before: Some(r.attributes.clone()),
        after: None,
        attributes: vec![],
        bootstrap_diff: None,
        part_of: None,
        group: group.map(str::to_string),
        wave,
    }
}

/// Delete a machine and then its bootstrap data. `after`: (wave deps, chain
/// dep). Returns the machine's delete step.
#[allow(clippy::too_many_arguments)]
fn delete_machine(
    b: &mut Builder<'_>,
    dc: &DesiredCluster,
    r: &Resource,
    code: ReasonCode,
    reason: String,
    group: Option<&str>,
    wave: Option<u32>,
    after: Option<(Vec<usize>, Option<usize>)>,
) -> Option<usize> {
    let m = r.attributes.as_machine()?;
    b.change(machine_change(r, Action::Delete, code, reason, group, wave));
    let mut s = ProtoStep::delete(r.address.clone(), r.provider);
    if let Some((deps, chain)) = after {
        s.after.extend(deps);
        s.after.extend(chain);
    }
    let id = b.step(s);
    let bs_addr = dc.address(ResourceKind::Bootstrap, Some(&m.name));
    if let Some(bs) = b.state.get(&bs_addr) {
        b.change(Change {
            address: bs_addr.clone(),
            kind: ResourceKind::Bootstrap,
            provider: ProviderKind::Local,
            action: Action::Delete,
            reason_code: code,
            reason: "deleted with its machine".into(),
            replacement: None,
            before: Some(bs.attributes.clone()),
            after: None,
            attributes: vec![],
            bootstrap_diff: None,
            part_of: Some(r.address.clone()),
            group: None,
            wave: None,
        });
        let mut s = ProtoStep::delete(bs_addr, ProviderKind::Local);
        s.after.push(id);
        b.step(s);
    }
    Some(id)
}

/// Turn (delete old, create new) pairs into replacements and record creates.
fn pair_replacements(
    b: &mut Builder<'_>,
    replaced: &[(Address, ReasonCode)],
    created: &[(Address, ReasonCode, Option<u32>, Spec, String)],
    group: &str,
) {
    let mut olds = replaced.iter();
    let mut shown: BTreeMap<(String, String), String> = BTreeMap::new();
    if created.is_empty() {
        return;
    }
    // Index the steps and delete changes this group produced (the tail of the lists).
    let step_index: BTreeMap<Address, usize> = b
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.address.clone(), i))
        .collect();
    let delete_change: BTreeMap<Address, usize> = b
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.action == Action::Delete)
        .map(|(i, c)| (c.address.clone(), i))
        .collect();
    for (addr, reason, wave, spec, sha) in created {
        let name = addr.name().unwrap_or_default().to_string();
        let bs_addr = addr.sibling(ResourceKind::Bootstrap, Some(&name));
        let bs_spec = step_index
            .get(&bs_addr)
            .and_then(|&i| b.steps[i].spec.clone());
        let paired = if matches!(
            reason,
            ReasonCode::Outdated | ReasonCode::Failed | ReasonCode::Drifted | ReasonCode::Requested
        ) {
            olds.next()
        } else {
            None
        };
        let mut bootstrap_diff = None;
        match paired {
            Some((old_addr, code)) => {
                // The delete change of the old machine becomes a replacement.
                let old_spec = b.state.get(old_addr).map(|r| r.attributes.clone());
                if let Some(c) = delete_change.get(old_addr).map(|&i| &mut b.changes[i]) {
                    c.action = Action::Replace;
                    c.reason_code = *code;
                    c.replacement = Some(addr.clone());
                    c.after = Some(spec.clone());
                    c.attributes = attribute_diff(old_spec.as_ref(), Some(spec));
                    c.wave = *wave;
                }
                let old_name = old_addr.name().unwrap_or_default();
                let old_bs = b
                    .state
                    .get(&old_addr.sibling(ResourceKind::Bootstrap, Some(old_name)));
                if let Some(ob) = old_bs.and_then(|r| r.attributes.as_bootstrap()) {
                    if ob.sha256 != *sha {
                        match shown.get(&(ob.sha256.clone(), sha.clone())) {
                            Some(first) => {
                                bootstrap_diff =
                                    Some(format!("(same bootstrap change as {first})\n"));
                            }
                            None => {
                                let before = b
                                    .state
                                    .documents
                                    .get(&ob.sha256)
                                    .cloned()
                                    .unwrap_or_default();
                                let after = b.documents.get(sha).cloned().unwrap_or_default();
                                bootstrap_diff =
                                    Some(unified_diff(&before, &after, old_name, &name));
                                shown
                                    .insert((ob.sha256.clone(), sha.clone()), old_addr.to_string());
                            }
                        }
                    }
                }
                if let Some(&i) = delete_change.get(old_addr) {
                    b.changes[i].bootstrap_diff = bootstrap_diff.clone();
                }
                b.changes.push(Change {
                    address: bs_addr.clone(),
                    kind: ResourceKind::Bootstrap,
                    provider: ProviderKind::Local,
                    action: Action::Create,
                    reason_code: *code,
                    reason: "bootstrap data of the replacement machine".into(),
                    replacement: None,
                    before: None,
                    after: bs_spec.clone(),
                    attributes: vec![],
                    bootstrap_diff: None,
                    part_of: Some(old_addr.clone()),
                    group: None,
                    wave: None,
                });
            }
            None => {
                let text = match reason {
                    ReasonCode::ScaleUp => format!("{group} needs more replicas"),
                    ReasonCode::Failed | ReasonCode::Drifted => {
                        "replaces an unhealthy machine".into()
                    }
                    ReasonCode::Outdated => "new machine of the rollout".into(),
                    _ => "new machine".into(),
                };
                let code = if *reason == ReasonCode::ScaleUp
                    && b.state
                        .cluster_resources(addr.cluster_key())
                        .next()
                        .is_none()
                {
                    ReasonCode::New
                } else {
                    *reason
                };
                b.changes.push(Change {
                    address: addr.clone(),
                    kind: ResourceKind::Machine,
                    provider: step_index
                        .get(addr)
                        .map(|&i| b.steps[i].provider)
                        .unwrap_or(ProviderKind::Sim),
                    action: Action::Create,
                    reason_code: code,
                    reason: text,
                    replacement: None,
                    before: None,
                    after: Some(spec.clone()),
                    attributes: attribute_diff(None, Some(spec)),
                    bootstrap_diff: None,
                    part_of: None,
                    group: Some(group.to_string()),
                    wave: *wave,
                });
                b.changes.push(Change {
                    address: bs_addr.clone(),
                    kind: ResourceKind::Bootstrap,
                    provider: ProviderKind::Local,
                    action: Action::Create,
                    reason_code: code,
                    reason: "bootstrap data of the new machine".into(),
                    replacement: None,
                    before: None,
                    after: bs_spec.clone(),
                    attributes: vec![],
                    bootstrap_diff: None,
                    part_of: Some(addr.clone()),
                    group: None,
                    wave: None,
                });
            }
        }
    }
}

pub(crate) fn unified_diff(before: &str, after: &str, from: &str, to: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("bootstrap/{from}"), &format!("bootstrap/{to}"))
        .to_string()
}

/// Attribute-level differences (flattened paths).
pub(crate) fn attribute_diff(before: Option<&Spec>, after: Option<&Spec>) -> Vec<AttributeChange> {
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

/// Remove every resource of a cluster: workers, then control-plane machines
/// newest first, then the rest in reverse dependency order.
fn remove_cluster(b: &mut Builder<'_>, key: &str, code: ReasonCode) {
    let reason = match code {
        ReasonCode::Destroy => "capi destroy".to_string(),
        _ => format!("Cluster {key} is no longer in the manifests"),
    };
    let resources: Vec<Resource> = b.state.cluster_resources(key).cloned().collect();
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
    }
    for r in cps {
        b.change(mk(r, None));
        let mut s = ProtoStep::delete(r.address.clone(), r.provider);
        s.after.extend(worker_ids.iter().copied());
        s.after.extend(chain);
        chain = Some(b.step(s));
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
    }
}

#[cfg(test)]
mod scratch {
    #[test]
    fn print_example_plan() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/sim/cluster.yaml"
        ))
        .unwrap();
        let m = crate::manifest::load_str("examples/sim/cluster.yaml", &text, &Default::default())
            .unwrap();
        let d = crate::desired::build(&m, &Default::default()).unwrap();
        let p = super::plan(&d, &crate::state::State::empty(), &Default::default()).unwrap();
        println!(
            "{}",
            super::super::render::render_plan(&p, Default::default())
        );
        for s in &p.steps {
            println!("{} {:?} {} after {:?}", s.id, s.op, s.address, s.after);
        }
    }
}
