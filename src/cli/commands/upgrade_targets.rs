//! `capi upgrade [CLUSTER]` without `--to`: the versions the cluster can
//! move to next, like `clusterctl upgrade plan` lists provider versions.
//! Cluster API moves the control plane one minor at a time (a further
//! target is a chain of steps, workers following each) and keeps workers
//! within the control plane's skew; capi has no release list, so the
//! patches it names are the versions the manifests and `--via` mention.
//! Nothing is planned, locked for long, or written.

use std::collections::BTreeMap;

use crate::manifest::{Body, Manifest};
use crate::resource::{OwnerKind, Role, Version};
use crate::state::State;

use super::super::args::UpgradeArgs;
use super::super::output::Printer;
use super::super::pipeline::LockedState;
use super::super::settings::{GlobalSettings, RunSettings};
use super::super::{CliError, ExitStatus};
use super::upgrade::{select, Target};

/// One line of the listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct Candidate {
    pub(crate) version: String,
    /// `workers` (catching up with the control plane), `patch`, `minor`
    /// or `chain` (two steps).
    pub(crate) kind: &'static str,
    pub(crate) note: String,
}

/// Every version the manifests name (control planes, machine templates of
/// any cluster) and `--via` adds, with where it was seen.
fn known_versions(m: &Manifest, via: &[Version]) -> BTreeMap<Version, String> {
    let mut out = BTreeMap::new();
    for o in &m.objects {
        let v = match &o.body {
            Body::KubeadmControlPlane(k) => k.version.as_ref().ok(),
            Body::MachineDeployment(md) => {
                md.template.version.as_ref().and_then(|v| v.as_ref().ok())
            }
            Body::MachineSet(ms) => ms.template.version.as_ref().and_then(|v| v.as_ref().ok()),
            Body::Machine(mc) => mc.template.version.as_ref().and_then(|v| v.as_ref().ok()),
            _ => None,
        };
        if let Some(v) = v {
            out.entry(v.clone())
                .or_insert_with(|| format!("{} {}", o.key.kind.as_str(), o.key.name));
        }
    }
    for v in via {
        out.entry(v.clone()).or_insert_with(|| "--via".to_string());
    }
    out
}

fn dot_zero(major: u32, minor: u32) -> Version {
    Version::new(major, minor, 0)
}

/// The next steps from a control plane at `cp` (lowest running) with
/// workers at `workers` (lowest running, if any), given the versions known.
pub(crate) fn candidates(
    cp: &Version,
    workers: Option<&Version>,
    known: &BTreeMap<Version, String>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(w) = workers.filter(|w| *w < cp) {
        out.push(Candidate {
            version: cp.to_string(),
            kind: "workers",
            note: format!(
                "the workers run {w}: bring them to the control plane's version (--md NAME for some only)"
            ),
        });
    }
    let patches: Vec<(&Version, &String)> = known
        .iter()
        .filter(|(v, _)| v.major == cp.major && v.minor == cp.minor && *v > cp)
        .collect();
    for (v, seen) in &patches {
        out.push(Candidate {
            version: v.to_string(),
            kind: "patch",
            note: format!("one step (named by {seen})"),
        });
    }
    if patches.is_empty() {
        out.push(Candidate {
            version: format!("v{}.{}.x", cp.major, cp.minor),
            kind: "patch",
            note: format!("any later v{}.{} patch, in one step", cp.major, cp.minor),
        });
    }
    let next: Vec<(&Version, &String)> = known
        .iter()
        .filter(|(v, _)| v.major == cp.major && v.minor == cp.minor + 1 && !v.is_prerelease())
        .collect();
    match next.last() {
        Some((v, seen)) => out.push(Candidate {
            version: v.to_string(),
            kind: "minor",
            note: format!("one step, the furthest one step goes (named by {seen})"),
        }),
        None => out.push(Candidate {
            version: dot_zero(cp.major, cp.minor + 1).to_string(),
            kind: "minor",
            note: "one step, the furthest one step goes (or any later patch of it)".into(),
        }),
    }
    let two = dot_zero(cp.major, cp.minor + 2);
    out.push(Candidate {
        version: two.to_string(),
        kind: "chain",
        note: format!(
            "two steps, v{}.{}.0 then {two}: control plane first each time, workers follow (--via to choose the middle one)",
            cp.major,
            cp.minor + 1
        ),
    });
    out
}

/// The lowest version the workers run (state first, manifests before the
/// first apply).
fn lowest_workers(state: &State, key: &str) -> Option<Version> {
    state
        .cluster_resources(key)
        .filter_map(|r| r.attributes.as_machine())
        .filter(|m| m.role != Role::ControlPlane && m.owner.kind != OwnerKind::Machine)
        .map(|m| m.version.clone())
        .min()
}

fn lowest_cp(state: &State, t: &Target<'_>) -> Option<Version> {
    let running = state
        .cluster_resources(&t.key)
        .filter_map(|r| r.attributes.as_machine())
        .filter(|m| m.role == Role::ControlPlane)
        .map(|m| m.version.clone())
        .min();
    running.or_else(|| match &t.kcp?.body {
        Body::KubeadmControlPlane(k) => k.version.clone().ok(),
        _ => None,
    })
}

pub(crate) fn run(
    g: &GlobalSettings,
    run: &RunSettings,
    m: &Manifest,
    u: &UpgradeArgs,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let via: Vec<Version> = u
        .via
        .iter()
        .map(|v| Version::parse(v).map_err(|e| CliError::Usage(format!("--via: {e}"))))
        .collect::<Result<_, _>>()?;
    let t = select(m, u)?;
    let state = LockedState::acquire(g, run, "upgrade")?.release();
    let Some(cp) = lowest_cp(&state, &t) else {
        return Err(CliError::Usage(format!(
            "cluster {} has no KubeadmControlPlane with a valid version: name the workers' target with --to",
            t.key
        )));
    };
    let workers = lowest_workers(&state, &t.key);
    let list = candidates(&cp, workers.as_ref(), &known_versions(m, &via));
    if p.json {
        p.emit(&super::super::json::JsonEvent::UpgradeTargets {
            cluster: &t.key,
            control_plane: cp.to_string(),
            workers: workers.as_ref().map(Version::to_string),
            targets: list.clone(),
        });
        return Ok(ExitStatus::Success);
    }
    let mut s = format!(
        "Cluster {}: the control plane runs {cp}{}.\n\nIt can move to:\n",
        t.key,
        workers
            .as_ref()
            .map(|w| format!(", the workers {w}"))
            .unwrap_or_default()
    );
    let width = list.iter().map(|c| c.version.len()).max().unwrap_or(0);
    for c in &list {
        s.push_str(&format!(
            "  {:width$}  {:7}  {}\n",
            c.version, c.kind, c.note
        ));
    }
    s.push_str("\ncapi knows no release list: it names the versions your manifests and --via mention.\nRun `capi upgrade --to VERSION --dry-run` to see the rollout.\n");
    p.data(&s);
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn one_minor_at_a_time_and_known_patches_first() {
        let known: BTreeMap<Version, String> = [
            (v("v1.31.2"), "KubeadmControlPlane cp".to_string()),
            (v("v1.31.5"), "MachineDeployment md-1".to_string()),
            (v("v1.32.3"), "--via".to_string()),
            (v("v1.32.1"), "--via".to_string()),
            (v("v1.33.0-rc.1"), "--via".to_string()),
        ]
        .into();
        let c = candidates(&v("v1.31.2"), Some(&v("v1.30.4")), &known);
        let got: Vec<(&str, &str)> = c.iter().map(|c| (c.version.as_str(), c.kind)).collect();
        assert_eq!(
            got,
            [
                ("v1.31.2", "workers"),
                ("v1.31.5", "patch"),
                ("v1.32.3", "minor"),
                ("v1.33.0", "chain"),
            ]
        );
        assert!(c[1].note.contains("MachineDeployment md-1"));
    }

    #[test]
    fn without_known_versions_the_next_minor_is_its_dot_zero() {
        let c = candidates(&v("v1.31.2"), Some(&v("v1.31.2")), &BTreeMap::new());
        let got: Vec<&str> = c.iter().map(|c| c.version.as_str()).collect();
        assert_eq!(got, ["v1.31.x", "v1.32.0", "v1.33.0"]);
    }
}
