//! Machine-level helpers the steps share: a machine's change, deleting a
//! machine with its bootstrap data, and the sentence explaining a delete.

use crate::desired::{DesiredCluster, MachineGroup};
use crate::resource::{Observation, ProviderKind, ResourceKind};
use crate::state::{Resource, Status};

use super::super::{Action, Change, ReasonCode};
use super::{Builder, ProtoStep};

pub(super) fn machine_change(
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
        delete_first: false,
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
pub(super) fn delete_machine(
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
            delete_first: false,
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

/// The sentence and final reason code for deleting `r`, which the rollout
/// scheduled for `code`.
pub(super) fn delete_reason(
    b: &Builder<'_>,
    g: &MachineGroup,
    r: &Resource,
    code: ReasonCode,
) -> (String, ReasonCode) {
    match code {
        ReasonCode::Failed if r.status == Status::Failed => (
            format!(
                "the machine failed ({}): machines are replaced, never repaired",
                failure(r)
            ),
            ReasonCode::Failed,
        ),
        ReasonCode::Failed => (
            format!(
                "the machine {}: it is replaced (Cluster API replaces, never repairs)",
                unhealthy_because(b, r)
            ),
            ReasonCode::Drifted,
        ),
        ReasonCode::Outdated if b.opts.replace.contains(&r.address) => (
            "replacement requested with --replace".into(),
            ReasonCode::Requested,
        ),
        ReasonCode::Outdated => (
            format!(
                "{}: machines are immutable",
                outdated_because(g, r, b.opts.now_unix)
            ),
            ReasonCode::Outdated,
        ),
        ReasonCode::ScaleDown => (
            format!(
                "{} scaled down to {} replica{}",
                g.owner,
                g.replicas,
                if g.replicas == 1 { "" } else { "s" }
            ),
            ReasonCode::ScaleDown,
        ),
        other => ("no longer wanted".into(), other),
    }
}

/// How a failed machine failed.
fn failure(r: &Resource) -> String {
    match &r.error {
        Some(e) => match (&e.command, e.exit_code) {
            (Some(_), Some(code)) => format!(
                "its bootstrap failed, exit code {code}; see `capi state show {}`",
                r.address
            ),
            _ => short(&e.message, 100),
        },
        None => "unknown error".into(),
    }
}

/// What refresh saw of an unhealthy machine.
fn unhealthy_because(b: &Builder<'_>, r: &Resource) -> String {
    match b.observation(&r.address) {
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
    }
}

/// What differs between an outdated machine and its group.
fn outdated_because(g: &MachineGroup, r: &Resource, now: i64) -> String {
    let m = r.attributes.as_machine().expect("machine");
    let mut why = Vec::new();
    let (mut infra_changed, mut bootstrap_changed) = (false, false);
    if m.version != g.version {
        why.push(format!("version {} → {}", m.version, g.version));
    }
    if m.infra != g.infra {
        infra_changed = true;
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
        bootstrap_changed = true;
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
    if let Some(t) = rollout_after_passed(g, r, now) {
        why.push(format!(
            "spec.rolloutAfter ({}) has passed since it was created",
            crate::util::time::format_rfc3339(t)
        ));
    }
    if why.is_empty() {
        bootstrap_changed = true;
        why.push(format!("{} content changed", g.bootstrap_template));
    }
    let mut reason = why.join(", ");
    // A topology's templates are the class's, patched: name the patches
    // (and variables) that set the template that changed.
    if let Some(note) = &g.topology {
        let text = note.explain(|kind| {
            let infra = kind == g.infra.kind;
            (infra && infra_changed) || (!infra && bootstrap_changed)
        });
        reason.push_str(&format!(" [{text}]"));
    }
    reason
}

/// When the machine was created (recorded by apply; 0 when unknown).
pub(super) fn created_unix(r: &Resource) -> i64 {
    r.observed
        .get("created_unix")
        .and_then(|v| v.as_i64())
        .unwrap_or(0)
}

/// The group's `spec.rolloutAfter`, when it has passed and the machine is
/// older: Cluster API's way to force a rollout.
pub(super) fn rollout_after_passed(g: &MachineGroup, r: &Resource, now: i64) -> Option<i64> {
    g.rollout_after.filter(|&t| now >= t && created_unix(r) < t)
}

/// Whether a machine of group `g` is up to date, as the planner judges it
/// (and `capi describe` shows it): made from the group's current version,
/// templates and an allowed failure domain (a KubeadmConfigTemplate edited
/// in place does not make it outdated, as upstream), and not due for a
/// `rolloutAfter` rollout. `--replace` aside, an outdated machine is one a
/// rollout replaces (an OnDelete group only when it is deleted).
pub(crate) fn machine_up_to_date(g: &MachineGroup, r: &Resource, now: i64) -> bool {
    let Some(m) = r.attributes.as_machine() else {
        return false;
    };
    let same = m.identity == g.machine_identity(&m.failure_domain)
        || only_bootstrap_template_content_differs(g, r);
    g.failure_domains.contains(&m.failure_domain)
        && same
        && rollout_after_passed(g, r, now).is_none()
}

/// Only the content of the group's KubeadmConfigTemplate differs from what
/// the machine was created from (same name, version, infrastructure and
/// failure domain). Upstream, such an edit affects only machines created
/// afterwards: the machine is kept.
pub(super) fn only_bootstrap_template_content_differs(g: &MachineGroup, r: &Resource) -> bool {
    let Some(m) = r.attributes.as_machine() else {
        return false;
    };
    g.bootstrap_template.starts_with("KubeadmConfigTemplate/")
        && m.identity != g.machine_identity(&m.failure_domain)
        && m.version == g.version
        && m.bootstrap_template == g.bootstrap_template
        && m.infra.kind == g.infra.kind
        && m.infra.name == g.infra.name
        && m.infra.spec == g.infra.spec
        && g.failure_domains.contains(&m.failure_domain)
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
