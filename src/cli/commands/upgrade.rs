//! `capi upgrade --to vX.Y.Z [CLUSTER]`: a rolling Kubernetes upgrade of the
//! control plane, then the MachineDeployments, one minor version per step
//! (a target further ahead becomes a chain of steps, workers following each
//! step). Shows every step's waves, asks, runs them with the health gates,
//! and with `--write` puts the new versions into the manifest files.

use std::collections::BTreeSet;

use crate::manifest::edit::{self, Selection};
use crate::manifest::{Body, Kind};
use crate::resource::Version;
use crate::plan::{self, render, simulate::simulate, Plan};
use crate::state::{State, StateStore};

use super::super::args::{ApplyArgs, GlobalArgs, HealthArgs, ManifestArgs, RunArgs, UpgradeArgs};
use super::super::output::Printer;
use super::super::{json, CliError};
use super::*;

fn current_cp_version(state: &State, key: &str) -> Option<(Version, Version)> {
    let vs: Vec<Version> = state
        .cluster_resources(key)
        .filter_map(|r| r.attributes.as_machine())
        .filter(|m| m.role == crate::resource::Role::ControlPlane)
        .map(|m| m.version.clone())
        .collect();
    Some((vs.iter().min()?.clone(), vs.iter().max()?.clone()))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    g: &GlobalArgs,
    margs: &ManifestArgs,
    run: &RunArgs,
    a: &ApplyArgs,
    health: &HealthArgs,
    u: &UpgradeArgs,
    p: &Printer,
) -> Result<u8, CliError> {
    let target = Version::parse(&u.to).map_err(|e| CliError::Usage(format!("--to: {e}")))?;
    let via: Vec<Version> = u
        .via
        .iter()
        .map(|v| Version::parse(v).map_err(|e| CliError::Usage(format!("--via: {e}"))))
        .collect::<Result<_, _>>()?;
    let m = load_manifests(margs, p)?;
    let clusters: Vec<&crate::manifest::Object> = m.of_kind(Kind::Cluster).collect();
    let cluster = match &u.cluster {
        Some(c) => {
            let id = crate::resource::ClusterId::from_key(c);
            clusters
                .iter()
                .find(|o| o.key.name == id.name && o.key.namespace == id.namespace)
                .copied()
                .ok_or_else(|| CliError::Usage(format!("no Cluster {c:?} in the manifests")))?
        }
        None if clusters.len() == 1 => clusters[0],
        None => {
            return Err(CliError::Usage(format!(
                "the manifests have {} clusters; name the one to upgrade: {}",
                clusters.len(),
                clusters
                    .iter()
                    .map(|c| c.key.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let key = crate::resource::ClusterId::new(&cluster.key.namespace, &cluster.key.name).key();
    let Body::Cluster(c) = &cluster.body else {
        unreachable!()
    };
    let kcp = c
        .control_plane_ref
        .as_ref()
        .and_then(|r| m.resolve(cluster, r))
        .ok_or_else(|| CliError::Usage(format!("cluster {key} has no KubeadmControlPlane: capi upgrade rolls a KubeadmControlPlane and its MachineDeployments")))?;
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
    };

    let _lock = lock(g, "upgrade", run)?;
    let store = StateStore::new(&g.state);
    let state = load_state(&store)?;
    let manifest_cp = match &kcp.body {
        Body::KubeadmControlPlane(k) => k.version.clone().ok(),
        _ => None,
    };
    let (current, running_max) = match current_cp_version(&state, &key) {
        Some(v) => v,
        None => {
            let v = manifest_cp
                .clone()
                .ok_or_else(|| CliError::Usage("the control plane has no valid version".into()))?;
            (v.clone(), v)
        }
    };
    let steps = edit::chain(&current, &target, &via).map_err(CliError::Usage)?;
    if steps.is_empty() || (running_max == target && current == target) {
        p.data(&format!(
            "Cluster {key} already runs {target}: nothing to upgrade.\n"
        ));
        return Ok(0);
    }

    // Plan every step; later steps against the state the earlier ones leave.
    let now = now();
    let mut plans: Vec<(Version, Plan)> = Vec::new();
    let mut st = state.clone();
    let mut opts = plan_options(now);
    let drift = refresh_into(&mut opts, &state, g, run, Some(&m), p).await?;
    for (i, v) in steps.iter().enumerate() {
        let mi = edit::with_versions(&m, &sel, v, v);
        let desired = build_desired(&mi, margs)?;
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
    let names = if u.md.is_empty() {
        "all MachineDeployments".to_string()
    } else {
        u.md.join(", ")
    };
    let chain: Vec<String> = steps.iter().map(|v| v.to_string()).collect();
    if p.json {
        p.event(&json::version());
    } else {
        p.data(&format!(
            "Upgrade of cluster {key} from {current} to {target}: {} step{} ({}); each step rolls the control plane, then {names}.\n\n",
            steps.len(),
            if steps.len() == 1 { "" } else { "s" },
            chain.join(" → ")
        ));
    }
    for (i, (v, pl)) in plans.iter().enumerate() {
        if p.json {
            p.event(&serde_json::json!({"type": "upgrade_step", "cluster": key, "step": i + 1, "of": plans.len(), "from": if i == 0 { current.to_string() } else { steps[i - 1].to_string() }, "to": v.to_string()}));
            json::emit_plan_body(p, pl, "upgrade");
        } else {
            p.data(&format!("=== Step {}/{}: {v} ===\n\n", i + 1, plans.len()));
            p.data(&render::render_plan(pl, p.style()));
            p.data("\n");
        }
    }
    if u.dry_run {
        if u.write {
            write_versions(&m, &sel, &target, p)?;
        }
        return Ok(0);
    }
    if !a.auto_approve && !confirm(p, &format!("upgrade cluster {key} to {target}"))? {
        p.error("Upgrade cancelled: only 'yes' is accepted.");
        return Ok(1);
    }
    drop(_lock);

    // Run each step against the real state.
    for (i, v) in steps.iter().enumerate() {
        let _lock = lock(g, "upgrade", run)?;
        let store = StateStore::new(&g.state);
        let state = load_state(&store)?;
        let mi = edit::with_versions(&m, &sel, v, v);
        let desired = build_desired(&mi, margs)?;
        let mut o = plan_options(super::now());
        if i > 0 {
            refresh_into(&mut o, &state, g, run, Some(&m), p).await?;
        }
        let pl = plan::plan(&desired, &state, &o)?;
        if !p.json {
            p.message(&format!(
                "\n=== Upgrading {key}: step {}/{} ({v}), {} operation(s) ===",
                i + 1,
                steps.len(),
                pl.steps.len()
            ));
        } else {
            p.event(&serde_json::json!({"type": "upgrade_step", "cluster": key, "step": i + 1, "of": steps.len(), "to": v.to_string()}));
        }
        if pl.is_empty() {
            continue;
        }
        let kinds: BTreeSet<_> = pl.steps.iter().map(|s| s.provider).collect();
        let providers = providers_for(&kinds, &provider_settings(g, Some(run), Some(&m))).await?;
        let report = execute(
            &pl,
            state,
            store,
            providers,
            manifest_secrets(&m),
            a.parallelism,
            health.check(),
            p,
        )
        .await;
        if report_outcome(&report, &pl, "upgrade", p) != 0 {
            p.error(&format!("The upgrade stopped during step {}/{} ({v}); the state is saved. Run the same `capi upgrade` again to resume.", i + 1, steps.len()));
            return Ok(1);
        }
    }
    if u.write {
        write_versions(&m, &sel, &target, p)?;
    } else if !p.json {
        p.warning(&format!(
            "the manifests still say {}: update their versions (or re-run with --write), or a later `capi apply` will refuse to move the control plane back",
            manifest_cp.map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    Ok(0)
}

fn write_versions(
    m: &crate::manifest::Manifest,
    sel: &Selection<'_>,
    target: &Version,
    p: &Printer,
) -> Result<(), CliError> {
    let edits = edit::version_edits(m, sel, target, target);
    // Check every edit first; write only when all apply.
    let mut files: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for e in &edits {
        if e.file == "<stdin>" {
            return Err(CliError::Usage(
                "--write cannot update manifests read from stdin".into(),
            ));
        }
        let text = match files.get(&e.file) {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(&e.file)
                .map_err(|err| CliError::Message(format!("cannot read {}: {err}", e.file)))?,
        };
        let new = edit::apply_edit(&text, e.line, &e.new).map_err(|err| {
            CliError::Message(format!("{}:{}: {} ({})", e.file, e.line, err, e.object))
        })?;
        files.insert(e.file.clone(), new);
    }
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
