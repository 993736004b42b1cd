//! `capi upgrade --to vX.Y.Z [CLUSTER]` (without `--to`: the versions it
//! can move to, `upgrade_targets.rs`): a rolling Kubernetes upgrade of the
//! control plane, then the MachineDeployments, one minor version per step
//! (a target further ahead becomes a chain of steps, workers following each
//! step). Shows every step's waves, asks, runs them with the health gates,
//! and with `--write` puts the new versions into the manifest files.
//!
//! Without a KubeadmControlPlane (or with `--md` and a target the control
//! plane already runs or is past), only the MachineDeployments move, in one
//! step, within the version skew of the running control plane.

use std::collections::BTreeMap;

use crate::manifest::edit::{self, Selection};
use crate::manifest::{self, Body, Kind, Manifest};
use crate::plan::{self, render, simulate::simulate, Plan, PlanOptions};
use crate::resource::{ClusterId, OwnerKind, Version};
use crate::state::State;

use super::super::args::UpgradeArgs;
use super::super::cluster_name;
use super::super::json::{self, JsonEvent};
use super::super::output::Printer;
use super::super::pipeline::{self, LockedState, Operation};
use super::super::settings::{ApplySettings, GlobalSettings, ManifestSettings, RunSettings};
use super::super::{CliError, ExitStatus};

/// Whether the upgrade has anything left to do in the state: a machine it
/// rolls (the control plane's, the selected MachineDeployments') that does
/// not run `target`, or an operation a killed run left pending. An upgrade
/// killed after its control plane finished is resumed from here, not judged
/// done by the control plane's version alone.
fn unfinished(
    state: &State,
    key: &str,
    sel: &Selection<'_>,
    mds: &[String],
    target: &Version,
) -> bool {
    state.cluster_resources(key).any(|r| {
        let rolled = r.attributes.as_machine().is_some_and(|m| {
            let ours = match m.owner.kind {
                OwnerKind::KubeadmControlPlane => sel.control_plane,
                OwnerKind::MachineDeployment => mds.is_empty() || mds.contains(&m.owner.name),
                OwnerKind::MachineSet | OwnerKind::Machine => false,
            };
            ours && m.version != *target
        });
        rolled || r.status.is_pending()
    })
}

fn current_cp_version(state: &State, key: &str) -> Option<(Version, Version)> {
    let vs: Vec<Version> = state
        .cluster_resources(key)
        .filter_map(|r| r.attributes.as_machine())
        .filter(|m| m.role == crate::resource::Role::ControlPlane)
        .map(|m| m.version.clone())
        .collect();
    Some((vs.iter().min()?.clone(), vs.iter().max()?.clone()))
}

/// The cluster an upgrade rolls, and what of it.
pub(crate) struct Target<'m> {
    /// `name` or `namespace:name`, as in addresses.
    pub(crate) key: String,
    /// `None`: a cluster without a KubeadmControlPlane (workers only).
    pub(crate) kcp: Option<&'m manifest::Object>,
    sel: Selection<'m>,
}

/// The Cluster `--to` applies to (named, or the only one) and its
/// KubeadmControlPlane; `--md` names checked.
pub(crate) fn select<'m>(m: &'m Manifest, u: &'m UpgradeArgs) -> Result<Target<'m>, CliError> {
    let clusters: Vec<&manifest::Object> = m.of_kind(Kind::Cluster).collect();
    let keys: Vec<String> = clusters
        .iter()
        .map(|o| ClusterId::new(&o.key.namespace, &o.key.name).key())
        .collect();
    let cluster = match &u.cluster {
        Some(c) => {
            let id = ClusterId::from_key(&cluster_name::resolve(c, u.namespace.as_deref(), &keys)?);
            clusters
                .iter()
                .find(|o| o.key.name == id.name && o.key.namespace == id.namespace)
                .copied()
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "no Cluster {c:?} in the manifests; they have: {}",
                        keys.join(", ")
                    ))
                })?
        }
        None if clusters.len() == 1 => clusters[0],
        None => {
            return Err(CliError::Usage(format!(
                "the manifests have {} clusters; name the one to upgrade: {}",
                clusters.len(),
                keys.join(", ")
            )))
        }
    };
    let key = ClusterId::new(&cluster.key.namespace, &cluster.key.name).key();
    let Body::Cluster(c) = &cluster.body else {
        unreachable!("of_kind(Cluster) gives clusters")
    };
    let kcp = c
        .control_plane_ref
        .as_ref()
        .and_then(|r| m.resolve(cluster, r))
        .filter(|o| matches!(o.body, Body::KubeadmControlPlane(_)));
    let mds: Vec<String> = m
        .of_kind(Kind::MachineDeployment)
        .filter(|o| o.key.namespace == cluster.key.namespace && matches!(&o.body, Body::MachineDeployment(md) if md.cluster_name == cluster.key.name))
        .map(|o| o.key.name.clone())
        .collect();
    for name in &u.md {
        if !mds.contains(name) {
            return Err(CliError::Usage(format!(
                "--md {name}: no MachineDeployment {name:?} in cluster {key}; it has: {}",
                mds.join(", ")
            )));
        }
    }
    let sel = Selection {
        namespace: &cluster.key.namespace,
        cluster: &cluster.key.name,
        machine_deployments: if u.md.is_empty() { None } else { Some(&u.md) },
        control_plane: kcp.is_some(),
    };
    Ok(Target { key, kcp, sel })
}

/// Where the rollout starts: the lowest and highest control-plane versions
/// in the state (the manifest's version before the first apply).
fn running_versions(state: &State, t: &Target<'_>) -> Result<(Version, Version), CliError> {
    if let Some(v) = current_cp_version(state, &t.key) {
        return Ok(v);
    }
    let v = manifest_cp_version(t)
        .ok_or_else(|| CliError::Usage("the control plane has no valid version".into()))?;
    Ok((v.clone(), v))
}

fn manifest_cp_version(t: &Target<'_>) -> Option<Version> {
    match &t.kcp?.body {
        Body::KubeadmControlPlane(k) => k.version.clone().ok(),
        _ => None,
    }
}

/// A workers-only upgrade must keep them within the skew of the running
/// control plane (never newer, at most three minors older): checked here,
/// before anything is planned. Returns the workers' lowest running version.
fn workers_skew(
    state: &State,
    t: &Target<'_>,
    cp: Option<&(Version, Version)>,
    target: &Version,
) -> Result<Version, CliError> {
    if let Some((lowest, highest)) = cp {
        let newer = (target.major, target.minor) > (lowest.major, lowest.minor);
        let too_old = target.major != highest.major || target.minor + 3 < highest.minor;
        if newer || too_old {
            return Err(CliError::Usage(format!(
                "cluster {}: workers at {target} would be {} the control plane at {} (workers may be up to three minor versions older, never newer){}",
                t.key,
                if newer { "newer than" } else { "too far behind" },
                if newer { lowest } else { highest },
                if t.kcp.is_some() {
                    format!("; without --md, `capi upgrade --to {target}` upgrades the control plane first")
                } else {
                    String::new()
                }
            )));
        }
    }
    let mds = t.sel.machine_deployments;
    Ok(state
        .cluster_resources(&t.key)
        .filter_map(|r| r.attributes.as_machine())
        .filter(|m| m.owner.kind == OwnerKind::MachineDeployment)
        .filter(|m| mds.is_none_or(|l| l.contains(&m.owner.name)))
        .map(|m| m.version.clone())
        .min()
        .unwrap_or_else(|| target.clone()))
}

/// What every stage of an upgrade reads.
struct Ctx<'a> {
    g: &'a GlobalSettings,
    ms: &'a ManifestSettings,
    run: &'a RunSettings,
    m: &'a Manifest,
    t: &'a Target<'a>,
    p: &'a Printer,
}

/// The manifests with the selected versions set; a topology Cluster is
/// expanded again at the new `topology.version`.
fn versions(m: &Manifest, t: &Target<'_>, v: &Version) -> Result<Manifest, CliError> {
    match crate::topology::with_topology_version(m, t.sel.namespace, t.sel.cluster, v) {
        Some(r) => Ok(r?),
        None => Ok(edit::with_versions(m, &t.sel, v, v)),
    }
}

/// Plan every step of the chain, later steps against the state the earlier
/// ones leave (simulated), for review before anything runs.
async fn plan_chain(
    cx: &Ctx<'_>,
    state: &State,
    steps: &[Version],
) -> Result<Vec<(Version, Plan)>, CliError> {
    let Ctx {
        g,
        ms,
        run,
        m,
        t,
        p,
        ..
    } = *cx;
    let now = g.now();
    let mut plans: Vec<(Version, Plan)> = Vec::new();
    let mut st = state.clone();
    let mut opts = PlanOptions {
        now_unix: now,
        ..Default::default()
    };
    let drift =
        pipeline::refresh_into(&mut opts, state, &Default::default(), run, Some(m), p).await?;
    for (i, v) in steps.iter().enumerate() {
        let mi = versions(m, t, v)?;
        let desired = pipeline::build_desired(&mi, ms)?;
        let mut o = opts.clone();
        if i > 0 {
            o.observations.clear();
        }
        let mut pl = plan::plan(&desired, &st, &o)?;
        if i == 0 {
            pl.drift = drift.clone();
        }
        st = simulate(&st, &pl, now);
        plans.push((v.clone(), pl));
    }
    Ok(plans)
}

/// Show the chain and every step's plan.
fn show_chain(
    p: &Printer,
    t: &Target<'_>,
    u: &UpgradeArgs,
    current: &Version,
    target: &Version,
    plans: &[(Version, Plan)],
) {
    let names = if u.md.is_empty() {
        "all MachineDeployments".to_string()
    } else {
        u.md.join(", ")
    };
    let key = &t.key;
    let chain: Vec<String> = plans.iter().map(|(v, _)| v.to_string()).collect();
    let rolls = if t.sel.control_plane {
        format!("each step rolls the control plane, then {names}")
    } else {
        format!("it rolls {names} only (the control plane keeps its version)")
    };
    if p.json {
        p.emit(&JsonEvent::version());
    } else {
        p.data(&format!(
            "Upgrade of cluster {key} from {current} to {target}: {} step{} ({}); {rolls}.\n\n",
            plans.len(),
            if plans.len() == 1 { "" } else { "s" },
            chain.join(" → ")
        ));
    }
    for (i, (v, pl)) in plans.iter().enumerate() {
        if p.json {
            p.emit(&JsonEvent::UpgradeStep {
                cluster: key,
                step: i + 1,
                of: plans.len(),
                from: Some(if i == 0 {
                    current.to_string()
                } else {
                    plans[i - 1].0.to_string()
                }),
                to: v.to_string(),
            });
            json::emit_plan_body(p, pl, "upgrade");
        } else {
            p.data(&format!("=== Step {}/{}: {v} ===\n\n", i + 1, plans.len()));
            p.data(&render::render_plan(pl, p.style()));
            p.data("\n");
        }
    }
}

/// Run each step against the real state, each under its own lock: re-plan,
/// execute, stop at the first failure (the next `capi upgrade` resumes).
async fn run_chain(
    cx: &Ctx<'_>,
    a: &ApplySettings,
    steps: &[Version],
) -> Result<ExitStatus, CliError> {
    let Ctx {
        g,
        ms,
        run,
        m,
        t,
        p,
        ..
    } = *cx;
    let key = &t.key;
    for (i, v) in steps.iter().enumerate() {
        let locked = LockedState::acquire(g, run, "upgrade")?;
        let mi = versions(m, t, v)?;
        let desired = pipeline::build_desired(&mi, ms)?;
        let mut o = PlanOptions {
            now_unix: g.now(),
            ..Default::default()
        };
        if i > 0 {
            pipeline::refresh_into(&mut o, &locked.state, &locked.opened, run, Some(m), p).await?;
        }
        let pl = plan::plan(&desired, &locked.state, &o)?;
        if !p.json {
            p.message(&format!(
                "\n=== Upgrading {key}: step {}/{} ({v}), {} operation(s) ===",
                i + 1,
                steps.len(),
                pl.steps.len()
            ));
        } else {
            p.emit(&JsonEvent::UpgradeStep {
                cluster: key,
                step: i + 1,
                of: steps.len(),
                from: None,
                to: v.to_string(),
            });
        }
        if pl.is_empty() {
            continue;
        }
        let op = Operation {
            name: "upgrade",
            question: "",
            approved: true,
        };
        let status = pipeline::approve_and_execute(pl, locked, run, a, Some(m), &op, p).await?;
        if status != ExitStatus::Success {
            p.error(&format!("The upgrade stopped during step {}/{} ({v}); the state is saved. Run the same `capi upgrade` again to resume.", i + 1, steps.len()));
            return Ok(ExitStatus::Failure);
        }
    }
    Ok(ExitStatus::Success)
}

pub(crate) async fn run(
    g: &GlobalSettings,
    ms: &ManifestSettings,
    run: &RunSettings,
    a: &ApplySettings,
    u: &UpgradeArgs,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let Some(to) = &u.to else {
        let m = pipeline::load_manifests(ms, p)?;
        return super::upgrade_targets::run(g, run, &m, u, p);
    };
    let target = Version::parse(to).map_err(|e| CliError::Usage(format!("--to: {e}")))?;
    let via: Vec<Version> = u
        .via
        .iter()
        .map(|v| Version::parse(v).map_err(|e| CliError::Usage(format!("--via: {e}"))))
        .collect::<Result<_, _>>()?;
    let m = pipeline::load_manifests(ms, p)?;
    let mut t = select(&m, u)?;
    let key = t.key.clone();
    let locked = LockedState::acquire(g, run, "upgrade")?;
    let cp_running = current_cp_version(&locked.state, &key);
    // Workers only: no KubeadmControlPlane, or --md to a version the control
    // plane already runs (or is past).
    let workers_only = t.kcp.is_none()
        || (!u.md.is_empty() && cp_running.as_ref().is_some_and(|(_, max)| target <= *max));
    t.sel.control_plane = !workers_only;
    // The edits --write will make, checked now that the selection is final.
    if u.write {
        versioned_files(&m, &t.sel, &target)?;
    }
    let (current, running_max, mut steps) = if workers_only {
        let current = workers_skew(&locked.state, &t, cp_running.as_ref(), &target)?;
        (current.clone(), current, vec![target.clone()])
    } else {
        let (current, running_max) = running_versions(&locked.state, &t)?;
        let steps = edit::chain(&current, &target, &via).map_err(CliError::Usage)?;
        (current, running_max, steps)
    };
    let unfinished = unfinished(&locked.state, &key, &t.sel, &u.md, &target);
    if !unfinished && (steps.is_empty() || (running_max == target && current == target)) {
        p.data(&format!(
            "Cluster {key} already runs {target}: nothing to upgrade.\n"
        ));
        // The machines run it but the manifests may not say so (an earlier
        // upgrade without --write): write it now, rolling nothing.
        if u.write && !u.dry_run {
            write_versions(&m, &t.sel, &target, p)?;
        }
        return Ok(ExitStatus::Success);
    }
    if steps.is_empty() {
        // The control plane is there; machines behind it (or operations a
        // killed run left pending) are finished by one step to the target.
        steps.push(target.clone());
        if !p.json {
            p.message(&format!(
                "The control plane of {key} already runs {target}; resuming the rollout of the machines that do not."
            ));
        }
    }
    let cx = Ctx {
        g,
        ms,
        run,
        m: &m,
        t: &t,
        p,
    };
    let plans = plan_chain(&cx, &locked.state, &steps).await?;
    show_chain(p, &t, u, &current, &target, &plans);
    if u.dry_run {
        if u.write {
            write_versions(&m, &t.sel, &target, p)?;
        }
        return Ok(ExitStatus::Success);
    }
    if !a.auto_approve {
        let question = format!("upgrade cluster {key} to {target}");
        if let Some(status) = pipeline::confirm(p, &question).await?.refused("upgrade", p) {
            return Ok(status);
        }
    }
    drop(locked);
    if run_chain(&cx, a, &steps).await? != ExitStatus::Success {
        return Ok(ExitStatus::Failure);
    }
    if u.write {
        write_versions(&m, &t.sel, &target, p)?;
    } else if !p.json {
        p.warning(&match manifest_cp_version(&t).filter(|_| t.sel.control_plane) {
            Some(v) => format!("the manifests still say {v}: update their versions (or re-run with --write), or a later `capi apply` will refuse to move the control plane back"),
            None => "the manifests still have the old MachineDeployment versions: update them (or re-run with --write), or a later `capi apply` will roll the machines back".to_string(),
        });
    }
    Ok(ExitStatus::Success)
}

/// The manifest files with the new versions in, without writing them: an
/// error if any edit cannot be made (stdin, a file that cannot be read or
/// written, a line that moved). Checked before an upgrade starts, so
/// `--write` never fails after the machines were rolled.
fn versioned_files(
    m: &Manifest,
    sel: &Selection<'_>,
    target: &Version,
) -> Result<(Vec<edit::VersionEdit>, BTreeMap<String, String>), CliError> {
    let edits = edit::version_edits(m, sel, target, target);
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for e in &edits {
        if e.file == "<stdin>" {
            return Err(CliError::Usage(
                "--write cannot update manifests read from stdin: pass the manifest files with -f, or leave out --write and update the versions yourself".into(),
            ));
        }
        let text = match files.get(&e.file) {
            Some(t) => t.clone(),
            None => {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&e.file)
                    .map_err(|err| {
                        CliError::Message(format!("--write: cannot write {}: {err}", e.file))
                    })?;
                std::fs::read_to_string(&e.file)
                    .map_err(|err| CliError::Message(format!("cannot read {}: {err}", e.file)))?
            }
        };
        let new = edit::apply_edit(&text, e.line, &e.new).map_err(|err| {
            CliError::Message(format!("{}:{}: {} ({})", e.file, e.line, err, e.object))
        })?;
        files.insert(e.file.clone(), new);
    }
    Ok((edits, files))
}

fn write_versions(
    m: &Manifest,
    sel: &Selection<'_>,
    target: &Version,
    p: &Printer,
) -> Result<(), CliError> {
    // Every edit is checked first; files are written only when all apply.
    let (edits, files) = versioned_files(m, sel, target)?;
    for (f, text) in &files {
        std::fs::write(f, text)
            .map_err(|err| CliError::Message(format!("cannot write {f}: {err}")))?;
    }
    for e in &edits {
        p.message(&format!(
            "{}:{}: {} version set to {}",
            e.file, e.line, e.object, e.new
        ));
    }
    Ok(())
}
