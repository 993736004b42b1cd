//! `capi describe cluster NAME`: the cluster as a tree, like `clusterctl
//! describe cluster`: infrastructure, control plane, each MachineDeployment,
//! machines grouped, with READY and UP TO DATE counts and the reason when
//! not. UP TO DATE compares with the manifests (`-f`); without them it is
//! left blank. `-o json|yaml` and `--json` give the same rows for programs.
//! Reads the state without locking it, so it shows the progress
//! of a rollout while an apply runs.

use std::collections::BTreeMap;

use crate::desired::{Desired, DesiredCluster};
use crate::plan::{self, Action, PlanOptions};
use crate::resource::{ResourceKind, Role, Spec};
use crate::state::{Resource, State, Status};

use serde_json::json;

use super::super::args::OutputFormat;
use super::super::cluster_name;
use super::super::json::JsonEvent;
use super::super::output::Printer;
use super::super::pipeline;
use super::super::settings::{GlobalSettings, ManifestSettings};
use super::super::{CliError, ExitStatus};

struct Row {
    name: String,
    replicas: String,
    available: String,
    ready: String,
    up_to_date: String,
    status: String,
    reason: String,
    message: String,
}

fn machine_state(r: &Resource) -> (bool, &'static str, String) {
    match r.status {
        Status::Ready
            if r.observed
                .get("ready")
                .and_then(|v| v.as_bool())
                .unwrap_or(true) =>
        {
            (true, "Ready", String::new())
        }
        Status::Ready => (
            false,
            "NotReady",
            "the provider reports it not ready".into(),
        ),
        Status::Creating => (false, "Provisioning", "being created".into()),
        Status::Updating => (false, "Updating", "being updated".into()),
        Status::Deleting => (false, "Deleting", "being deleted".into()),
        Status::Failed => (
            false,
            "Failed",
            r.error
                .as_ref()
                .map(|e| e.message.lines().next().unwrap_or_default().to_string())
                .unwrap_or_default(),
        ),
    }
}

/// The planner's own rule (one source of truth with `capi plan`).
fn up_to_date(r: &Resource, desired: Option<&Judged<'_>>) -> Option<bool> {
    let m = r.attributes.as_machine()?;
    let d = desired?;
    let g = d.groups.iter().find(|g| g.owner == m.owner)?;
    Some(plan::machine_up_to_date(g, r, d.now))
}

fn group_rows(
    machines: &[&Resource],
    desired_replicas: Option<u32>,
    desired: Option<&Judged<'_>>,
    grouping: bool,
    prefix: &str,
    rows: &mut Vec<Row>,
) -> (usize, usize, Option<usize>) {
    let ready = machines.iter().filter(|r| machine_state(r).0).count();
    let utd: Option<usize> = if desired.is_some() {
        Some(
            machines
                .iter()
                .filter(|r| up_to_date(r, desired) == Some(true))
                .count(),
        )
    } else {
        None
    };
    // Machines that are ready and up to date collapse into one row.
    let (fine, other): (Vec<&&Resource>, Vec<&&Resource>) = machines.iter().partition(|r| {
        machine_state(r).0 && up_to_date(r, desired) != Some(false) && verdict(r, desired).is_none()
    });
    let mut entries: Vec<Row> = Vec::new();
    if grouping && fine.len() > 1 {
        let names: Vec<String> = fine
            .iter()
            .take(3)
            .map(|r| r.address.name().unwrap_or_default().to_string())
            .collect();
        entries.push(Row {
            name: format!("{} Machines...", fine.len()),
            replicas: String::new(),
            available: fine.len().to_string(),
            ready: fine.len().to_string(),
            up_to_date: if desired.is_some() {
                fine.len().to_string()
            } else {
                String::new()
            },
            status: "True".into(),
            reason: "Ready".into(),
            message: format!(
                "See {}{}",
                names.join(", "),
                if fine.len() > 3 { ", ..." } else { "" }
            ),
        });
    } else {
        for r in &fine {
            entries.push(machine_row(r, desired));
        }
    }
    for r in &other {
        entries.push(machine_row(r, desired));
    }
    let n = entries.len();
    for (i, mut e) in entries.into_iter().enumerate() {
        e.name = format!("{prefix}{}{}", if i + 1 == n { "└─" } else { "├─" }, e.name);
        rows.push(e);
    }
    let _ = desired_replicas;
    (machines.len(), ready, utd)
}

fn machine_row(r: &Resource, desired: Option<&Judged<'_>>) -> Row {
    let (ok, reason, mut message) = machine_state(r);
    let utd = up_to_date(r, desired);
    let m = r.attributes.as_machine();
    let version = m.map(|m| m.version.to_string()).unwrap_or_default();
    // What happens to it is the planner's word, as `capi plan` shows it.
    match verdict(r, desired) {
        Some(v) if utd == Some(false) => message = format!("outdated ({version}): {v}"),
        Some(v) => message = v.to_string(),
        None if utd == Some(false) && ok => {
            message = match desired.and_then(|j| j.plan_error.as_deref()) {
                Some(e) => format!("outdated ({version}); `capi plan` fails: {e}"),
                None => format!("outdated ({version}): kept, `capi plan` does not replace it"),
            }
        }
        None => {}
    }
    Row {
        name: format!("Machine/{}", r.address.name().unwrap_or_default()),
        replicas: String::new(),
        available: String::new(),
        ready: String::from(if ok { "1" } else { "0" }),
        up_to_date: utd
            .map(|u| if u { "1" } else { "0" }.to_string())
            .unwrap_or_default(),
        status: if ok { "True" } else { "False" }.into(),
        reason: if utd == Some(false) && ok {
            "Outdated".into()
        } else {
            reason.into()
        },
        message,
    }
}

/// A cluster of the manifests with the planner's verdict on each machine
/// that a plan would change (address → what happens to it).
struct Judged<'d> {
    dc: &'d DesiredCluster,
    verdicts: BTreeMap<String, String>,
    /// Why planning failed (then there are no verdicts).
    plan_error: Option<String>,
    /// The clock the verdicts were made with (for `rolloutAfter`).
    now: i64,
}

impl std::ops::Deref for Judged<'_> {
    type Target = DesiredCluster;

    fn deref(&self) -> &DesiredCluster {
        self.dc
    }
}

fn verdict<'j>(r: &Resource, desired: Option<&'j Judged<'_>>) -> Option<&'j str> {
    desired?
        .verdicts
        .get(r.address.as_str())
        .map(String::as_str)
}

/// Plan the manifests against the state (no refresh, as `plan
/// --refresh=false`): describe shows what `capi plan` would do, from the
/// same planner. A plan that fails leaves no verdicts, only its error.
fn verdicts(
    d: &Desired,
    state: &State,
    g: &GlobalSettings,
) -> Result<BTreeMap<String, String>, String> {
    let opts = PlanOptions {
        now_unix: g.now(),
        ..Default::default()
    };
    match plan::plan(d, state, &opts) {
        Ok(pl) => Ok(pl
            .changes
            .iter()
            .filter(|c| c.kind == ResourceKind::Machine)
            .filter_map(|c| {
                let what = match c.action {
                    Action::Replace => "will be replaced",
                    Action::Delete => "will be destroyed",
                    Action::Update => "will be updated in place",
                    Action::Create => return None,
                };
                Some((c.address.to_string(), format!("{what} ({})", c.reason)))
            })
            .collect()),
        Err(e) => Err(e.to_string()),
    }
}

/// The cluster `describe` was asked about, as given.
pub(crate) struct Target<'a> {
    pub(crate) cluster: &'a str,
    pub(crate) namespace: Option<&'a str>,
    /// Collapse identical ready machines into one row.
    pub(crate) grouping: bool,
}

pub(crate) fn run(
    g: &GlobalSettings,
    target: Target<'_>,
    ms: &ManifestSettings,
    output: OutputFormat,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let state = g.store()?.load()?.unwrap_or_else(State::empty);
    let desired = if ms.files.is_empty() {
        None
    } else {
        Some(pipeline::build_desired(
            &pipeline::load_manifests(ms, p)?,
            ms,
        )?)
    };
    let mut known = state.cluster_keys();
    if let Some(d) = &desired {
        known.extend(d.clusters.iter().map(|c| c.id.key()));
        known.sort();
        known.dedup();
    }
    let key = cluster_name::resolve(target.cluster, target.namespace, &known)?;
    let cluster = key.as_str();
    let judged = desired.as_ref().and_then(|d| {
        let (verdicts, plan_error) = match verdicts(d, &state, g) {
            Ok(v) => (v, None),
            Err(e) => (BTreeMap::new(), Some(e)),
        };
        Some(Judged {
            dc: d.cluster(cluster)?,
            verdicts,
            plan_error,
            now: g.now(),
        })
    });
    let dc = judged.as_ref();
    let resources: Vec<&Resource> = state.cluster_resources(cluster).collect();
    if resources.is_empty() && dc.is_none() {
        return Err(CliError::Usage(format!(
            "no cluster {cluster:?} in the state; clusters: {}",
            state.cluster_keys().join(", ")
        )));
    }
    let machines: Vec<&Resource> = resources
        .iter()
        .copied()
        .filter(|r| r.attributes.as_machine().is_some())
        .collect();
    let lb_ok = resources
        .iter()
        .any(|r| matches!(r.attributes, Spec::Loadbalancer(_)) && r.status == Status::Ready);
    let mut rows = vec![cluster_row(cluster, &machines, dc, lb_ok)];
    rows.extend(infrastructure_row(&resources, lb_ok));
    rows.extend(group_tree(&machines, dc, target.grouping));
    if p.json {
        p.emit(&JsonEvent::Describe {
            cluster,
            rows: rows.iter().map(Row::public).collect(),
        });
    } else if output == OutputFormat::Text {
        p.data(&table(&rows));
    } else {
        let rows: Vec<DescribeRow> = rows.iter().map(Row::public).collect();
        p.document(output, &json!({ "cluster": cluster, "rows": rows }));
    }
    Ok(ExitStatus::Success)
}

/// A row for programs (`--json`, `-o json|yaml`): the name without its
/// tree drawing, its depth in the tree (the cluster is 0), and the
/// non-empty cells.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct DescribeRow {
    name: String,
    depth: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    replicas: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    available: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    ready: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    up_to_date: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
}

impl Row {
    fn public(&self) -> DescribeRow {
        let name = self.name.trim_start_matches([' ', '│', '├', '└', '─']);
        let depth = (self.name.chars().count() - name.chars().count()) / 2;
        DescribeRow {
            name: name.to_string(),
            depth,
            replicas: self.replicas.clone(),
            available: self.available.clone(),
            ready: self.ready.clone(),
            up_to_date: self.up_to_date.clone(),
            status: self.status.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
        }
    }
}

/// The top row: the cluster with its machine counts.
fn cluster_row(cluster: &str, machines: &[&Resource], dc: Option<&Judged<'_>>, lb_ok: bool) -> Row {
    let total_ready = machines.iter().filter(|r| machine_state(r).0).count();
    let total_utd = dc.map(|_| {
        machines
            .iter()
            .filter(|r| up_to_date(r, dc) == Some(true))
            .count()
    });
    let desired_total: Option<u32> = dc.map(|d| d.groups.iter().map(|g| g.replicas).sum());
    let available = total_ready == machines.len() && !machines.is_empty() && lb_ok;
    Row {
        name: format!(
            "Cluster/{cluster}{}",
            dc.and_then(|d| d.groups.iter().find_map(|g| g.topology.as_ref()))
                .map(|t| format!(" (ClusterClass {})", t.class))
                .unwrap_or_default()
        ),
        replicas: format!(
            "{}/{}",
            machines.len(),
            desired_total
                .map(|d| d.to_string())
                .unwrap_or_else(|| machines.len().to_string())
        ),
        available: total_ready.to_string(),
        ready: total_ready.to_string(),
        up_to_date: total_utd.map(|u| u.to_string()).unwrap_or_default(),
        status: if available { "True" } else { "False" }.into(),
        reason: if available {
            "Available".into()
        } else if machines.is_empty() {
            "NoMachines".into()
        } else {
            "NotAvailable".into()
        },
        message: if !available && !machines.is_empty() {
            format!("{} of {} machines ready", total_ready, machines.len())
        } else {
            String::new()
        },
    }
}

/// The infrastructure cluster (network and endpoint), when it exists.
fn infrastructure_row(resources: &[&Resource], lb_ok: bool) -> Option<Row> {
    let (kind, name, r) = resources.iter().find_map(|r| match &r.attributes {
        Spec::Network(n) => Some((n.infra.kind.clone(), n.infra.name.clone(), r)),
        _ => None,
    })?;
    let ready = r.status == Status::Ready && lb_ok;
    Some(Row {
        name: format!("├─ClusterInfrastructure - {kind}/{name}"),
        replicas: String::new(),
        available: String::new(),
        ready: String::new(),
        up_to_date: String::new(),
        status: if ready { "True" } else { "False" }.into(),
        reason: if ready { "Ready" } else { "Provisioning" }.into(),
        message: resources
            .iter()
            .find(|r| matches!(r.attributes, Spec::Loadbalancer(_)))
            .and_then(|lb| lb.observed.get("endpoint"))
            .and_then(|e| e.as_str())
            .map(|e| format!("endpoint {e}"))
            .unwrap_or_default(),
    })
}

/// Machine groups in display order (control plane first; manifest order
/// when known, then groups only the state knows), each with its replicas.
fn group_order(
    owners: &BTreeMap<String, Vec<&Resource>>,
    dc: Option<&Judged<'_>>,
) -> Vec<(String, Role, Option<u32>)> {
    let mut order: Vec<(String, Role, Option<u32>)> = Vec::new();
    if let Some(d) = dc {
        for g in &d.groups {
            order.push((g.owner.to_string(), g.role, Some(g.replicas)));
        }
    }
    for (o, ms) in owners {
        if !order.iter().any(|(x, _, _)| x == o) {
            order.push((o.clone(), ms[0].attributes.as_machine().unwrap().role, None));
        }
    }
    order
}

/// One group's row and its machines' rows.
struct GroupTree<'a> {
    owners: BTreeMap<String, Vec<&'a Resource>>,
    dc: Option<&'a Judged<'a>>,
    grouping: bool,
    rows: Vec<Row>,
}

impl GroupTree<'_> {
    fn push(&mut self, owner: &str, replicas: Option<u32>, name: String, indent: &str) {
        let ms = self.owners.get(owner).cloned().unwrap_or_default();
        let mut sub = Vec::new();
        let (n, ready, utd) = group_rows(&ms, replicas, self.dc, self.grouping, indent, &mut sub);
        // A group a ClusterClass generated: its class and topology entry.
        let origin = self
            .dc
            .and_then(|d| d.groups.iter().find(|g| g.owner.to_string() == owner))
            .and_then(|g| g.topology.as_ref())
            .map(|t| format!(" (ClusterClass {}, topology {})", t.class, t.entry))
            .unwrap_or_default();
        self.rows.push(group_row(
            &format!("{name}{origin}"),
            n,
            replicas,
            ready,
            utd,
        ));
        self.rows.extend(sub);
    }
}

/// The control-plane groups and the workers, as a tree.
fn group_tree(machines: &[&Resource], dc: Option<&Judged<'_>>, grouping: bool) -> Vec<Row> {
    let mut owners: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
    for r in machines {
        owners
            .entry(r.attributes.as_machine().unwrap().owner.to_string())
            .or_default()
            .push(r);
    }
    let order = group_order(&owners, dc);
    let (cps, workers): (Vec<_>, Vec<_>) = order
        .into_iter()
        .partition(|(_, r, _)| *r == Role::ControlPlane);
    let mut tree = GroupTree {
        owners,
        dc,
        grouping,
        rows: Vec::new(),
    };
    for (i, (owner, _, replicas)) in cps.iter().enumerate() {
        let last = workers.is_empty() && i + 1 == cps.len();
        tree.push(
            owner,
            *replicas,
            format!("{}ControlPlane - {owner}", if last { "└─" } else { "├─" }),
            if last { "  " } else { "│ " },
        );
    }
    if !workers.is_empty() {
        tree.rows.push(Row {
            name: "└─Workers".into(),
            replicas: String::new(),
            available: String::new(),
            ready: String::new(),
            up_to_date: String::new(),
            status: String::new(),
            reason: String::new(),
            message: String::new(),
        });
    }
    for (i, (owner, _, replicas)) in workers.iter().enumerate() {
        let last = i + 1 == workers.len();
        tree.push(
            owner,
            *replicas,
            format!("  {}{owner}", if last { "└─" } else { "├─" }),
            if last { "    " } else { "  │ " },
        );
    }
    tree.rows
}

fn group_row(name: &str, n: usize, replicas: Option<u32>, ready: usize, utd: Option<usize>) -> Row {
    let want = replicas.map(|r| r as usize).unwrap_or(n);
    let (status, reason, message) = if ready < n {
        (
            "False",
            "NotReady",
            format!("{} of {n} machines not ready", n - ready),
        )
    } else if utd.is_some_and(|u| u < n) {
        (
            "False",
            "RollingUpdate",
            format!("{} of {n} machines outdated", n - utd.unwrap()),
        )
    } else if n != want {
        (
            "False",
            if n < want { "ScalingUp" } else { "ScalingDown" },
            format!("{n} machines, {want} wanted"),
        )
    } else {
        ("True", "Available", String::new())
    };
    Row {
        name: name.to_string(),
        replicas: format!("{n}/{want}"),
        available: ready.to_string(),
        ready: ready.to_string(),
        up_to_date: utd.map(|u| u.to_string()).unwrap_or_default(),
        status: status.into(),
        reason: reason.into(),
        message,
    }
}

fn table(rows: &[Row]) -> String {
    let headers = [
        "NAME",
        "REPLICAS",
        "AVAILABLE",
        "READY",
        "UP TO DATE",
        "STATUS",
        "REASON",
        "MESSAGE",
    ];
    let cols = |r: &Row| -> [String; 8] {
        [
            r.name.clone(),
            r.replicas.clone(),
            r.available.clone(),
            r.ready.clone(),
            r.up_to_date.clone(),
            r.status.clone(),
            r.reason.clone(),
            r.message.clone(),
        ]
    };
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in cols(r).iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: [String; 8]| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 7 {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.map(String::from));
    for r in rows {
        out.push_str(&line(cols(r)));
    }
    out
}
