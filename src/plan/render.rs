//! Plan text in Terraform's conventions: `+` create, `~` update in place,
//! `+/-` replace, `-` destroy, attribute-level before/after, and the summary
//! `Plan: N to add, N to change, N to replace, N to destroy.`

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::resource::{ResourceKind, Spec};

use super::{Action, Change, Plan, Shown};

#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub(crate) color: bool,
    /// Every change in full (`--full`), however many a group has.
    pub(crate) full: bool,
}

/// A machine group with more changes than this is summarised (one example
/// in full, then counts), unless [`Style::full`].
pub(crate) const SUMMARY_THRESHOLD: usize = 20;

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn action(&self, a: Shown) -> String {
        let code = match a {
            Shown::Create => "32",
            Shown::Update => "33",
            Shown::Replace | Shown::ReplaceDeleteFirst => "35",
            Shown::Delete => "31",
        };
        self.paint(code, a.symbol())
    }
    pub(crate) fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// Machine attributes shown by default; the rest are counted as hidden.
const MACHINE_SHOWN: &[&str] = &[
    "version",
    "role",
    "owner.kind",
    "owner.name",
    "failure_domain",
    "infra.kind",
    "infra.name",
    "bootstrap_template",
];

fn attrs_of(spec: &Spec) -> BTreeMap<String, Value> {
    spec.flatten()
}

fn bootstrap_line(spec: &Spec) -> Option<String> {
    let b = spec.as_bootstrap()?;
    Some(format!(
        "{} ({}), sha256:{}",
        b.role.as_str(),
        b.kubeadm_api,
        &b.sha256[..12.min(b.sha256.len())]
    ))
}

pub fn render_plan(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    if !plan.drift.is_empty() {
        out.push_str(&style.bold("Note: Objects have changed outside capi"));
        out.push_str("\n\ncapi detected the following changes made outside capi since the last \"capi apply\":\n\n");
        for d in &plan.drift {
            let _ = writeln!(out, "  # {} {}: {}", d.address, d.kind, d.detail);
            for a in &d.attributes {
                let _ = writeln!(
                    out,
                    "      ~ {} = {} -> {}",
                    a.path,
                    a.before
                        .as_ref()
                        .map(value)
                        .unwrap_or_else(|| "null".into()),
                    a.after.as_ref().map(value).unwrap_or_else(|| "null".into())
                );
            }
        }
        out.push('\n');
    }
    if plan.is_empty() {
        out.push_str(&style.bold("No changes."));
        out.push_str(" Your infrastructure matches the configuration.\n");
        render_warnings(plan, &mut out, style);
        return out;
    }
    let used: Vec<Shown> = {
        let mut v: Vec<Shown> = plan.reviewed_changes().map(Change::shown).collect();
        v.sort();
        v.dedup();
        v
    };
    out.push_str("capi will perform the following actions. Resource actions are indicated with the following symbols:\n");
    for a in &used {
        let _ = writeln!(out, "  {} {}", style.action(*a), a.legend());
    }
    out.push('\n');
    let bootstrap_of: BTreeMap<String, &Change> = plan
        .changes
        .iter()
        .filter(|c| c.kind == ResourceKind::Bootstrap && c.part_of.is_some())
        .map(|c| (c.part_of.as_ref().unwrap().to_string(), c))
        .collect();
    render_changes(plan, &bootstrap_of, &mut out, style);
    render_rollout(plan, &mut out, style);
    let s = &plan.summary;
    let _ = writeln!(
        out,
        "{} {} to add, {} to change, {} to replace, {} to destroy.",
        style.bold("Plan:"),
        s.add,
        s.change,
        s.replace,
        s.destroy
    );
    render_warnings(plan, &mut out, style);
    out
}

/// Every reviewed change; a machine group with more than
/// [`SUMMARY_THRESHOLD`] changes shows its first one in full and then one
/// line of counts, at the place of its first change.
fn render_changes(
    plan: &Plan,
    bootstrap_of: &BTreeMap<String, &Change>,
    out: &mut String,
    style: Style,
) {
    let group_key = |c: &Change| {
        c.group
            .as_ref()
            .filter(|_| c.kind == ResourceKind::Machine)
            .map(|g| format!("{}/{g}", c.address.cluster_key()))
    };
    let mut per_group: BTreeMap<String, Vec<&Change>> = BTreeMap::new();
    for c in plan.reviewed_changes() {
        if let Some(k) = group_key(c) {
            per_group.entry(k).or_default().push(c);
        }
    }
    let mut summarised = std::collections::BTreeSet::new();
    for c in plan.reviewed_changes() {
        let big = group_key(c)
            .and_then(|k| per_group.get(&k).map(|v| (k, v)))
            .filter(|(_, v)| !style.full && v.len() > SUMMARY_THRESHOLD);
        match big {
            None => render_change(c, bootstrap_of.get(c.address.as_str()).copied(), out, style),
            Some((k, members)) => {
                if !summarised.insert(k.clone()) {
                    continue;
                }
                render_change(c, bootstrap_of.get(c.address.as_str()).copied(), out, style);
                let _ = writeln!(
                    out,
                    "  # ... and {} more machine change(s) in {k}: {} (shown in full with --full; --json always lists every one)\n",
                    members.len() - 1,
                    action_counts(&members[1..])
                );
            }
        }
    }
}

fn action_counts(changes: &[&Change]) -> String {
    let mut counts: BTreeMap<Action, usize> = BTreeMap::new();
    for c in changes {
        *counts.entry(c.action).or_default() += 1;
    }
    counts
        .iter()
        .map(|(a, n)| {
            let what = match a {
                Action::Create => "to create",
                Action::Update => "to update in place",
                Action::Replace => "to replace",
                Action::Delete => "to destroy",
            };
            format!("{n} {what}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_warnings(plan: &Plan, out: &mut String, style: Style) {
    for w in &plan.warnings {
        let _ = writeln!(out, "\n{} {w}", style.paint("33", "Warning:"));
    }
}

fn render_change(c: &Change, bootstrap: Option<&Change>, out: &mut String, style: Style) {
    let verb = match c.action {
        Action::Create => "will be created".to_string(),
        Action::Update => "will be updated in-place".to_string(),
        Action::Replace => match &c.replacement {
            Some(r) if *r != c.address => format!("will be replaced by {r}"),
            _ => "must be replaced".to_string(),
        },
        Action::Delete => "will be destroyed".to_string(),
    };
    let _ = writeln!(out, "  # {} {verb}", c.address);
    let mut note = c.reason.clone();
    if let Some(g) = &c.group {
        if let Some(w) = c.wave {
            note = format!("{note} [{g}, wave {w}]");
        }
    }
    let _ = writeln!(out, "  # ({note})");
    let kind = c.kind.as_str();
    let _ = writeln!(
        out,
        "{:>3} {kind} \"{}\" {{",
        style.action(c.shown()),
        c.address.name().unwrap_or(kind)
    );
    let is_machine = c.kind == ResourceKind::Machine;
    match c.action {
        Action::Create => {
            let attrs = c.after.as_ref().map(attrs_of).unwrap_or_default();
            let mut hidden = 0;
            for (k, v) in &attrs {
                if is_machine && !MACHINE_SHOWN.contains(&k.as_str()) {
                    hidden += 1;
                    continue;
                }
                let _ = writeln!(
                    out,
                    "      {} {k} = {}",
                    style.action(Shown::Create),
                    value(v)
                );
            }
            if c.kind == ResourceKind::Pki {
                let _ = writeln!(
                    out,
                    "      {} keys = (sensitive, generated during apply)",
                    style.action(Shown::Create)
                );
            }
            if c.kind == ResourceKind::Token {
                let _ = writeln!(
                    out,
                    "      {} token = (sensitive, generated during apply)",
                    style.action(Shown::Create)
                );
            }
            if let Some(b) = bootstrap
                .and_then(|b| b.after.as_ref())
                .and_then(bootstrap_line)
            {
                let _ = writeln!(
                    out,
                    "      {} bootstrap = \"{b}\"",
                    style.action(Shown::Create)
                );
            }
            if hidden > 0 {
                let _ = writeln!(
                    out,
                    "        # ({hidden} more attributes hidden; see --json)"
                );
            }
        }
        Action::Update | Action::Replace => {
            // The identity hash is derived; the reason says what changed.
            for a in c.attributes.iter().filter(|a| a.path != "identity") {
                let before = a
                    .before
                    .as_ref()
                    .map(value)
                    .unwrap_or_else(|| "null".into());
                let after = a.after.as_ref().map(value).unwrap_or_else(|| "null".into());
                let _ = writeln!(
                    out,
                    "      {} {} = {before} -> {after}",
                    style.action(Shown::Update),
                    a.path
                );
            }
            if c.action == Action::Replace {
                if let Some(b) = bootstrap
                    .and_then(|b| b.after.as_ref())
                    .and_then(bootstrap_line)
                {
                    let _ = writeln!(
                        out,
                        "      {} bootstrap = \"{b}\"",
                        style.action(Shown::Update)
                    );
                }
            }
            if let Some(d) = &c.bootstrap_diff {
                out.push_str("      # bootstrap cloud-config:\n");
                for line in d.lines() {
                    let painted = if line.starts_with('+') && !line.starts_with("+++") {
                        style.paint("32", line)
                    } else if line.starts_with('-') && !line.starts_with("---") {
                        style.paint("31", line)
                    } else {
                        line.to_string()
                    };
                    let _ = writeln!(out, "        {painted}");
                }
            }
        }
        Action::Delete => {
            if let Some(spec) = &c.before {
                let attrs = attrs_of(spec);
                for k in ["version", "owner.kind", "owner.name", "name"] {
                    if let Some(v) = attrs.get(k) {
                        let _ = writeln!(
                            out,
                            "      {} {k} = {}",
                            style.action(Shown::Delete),
                            value(v)
                        );
                    }
                }
            }
        }
    }
    out.push_str("    }\n\n");
}

/// Machine rollouts as ordered waves, per group (groups with one wave are
/// plain scale-ups and need no explanation).
fn render_rollout(plan: &Plan, out: &mut String, style: Style) {
    let interesting: Vec<_> = plan.rollouts.iter().filter(|r| r.waves.len() > 1).collect();
    if interesting.is_empty() {
        return;
    }
    out.push_str("Rollout order (each wave starts when the previous one is done and healthy):\n");
    for r in interesting {
        let _ = writeln!(out, "  {}/{}:", r.cluster, r.group);
        for (i, w) in r.waves.iter().enumerate() {
            let names = |v: &[String]| {
                if style.full || v.len() <= 4 {
                    v.join(", ")
                } else {
                    format!("{} machines ({} ... {})", v.len(), v[0], v[v.len() - 1])
                }
            };
            let mut parts = Vec::new();
            if !w.create.is_empty() {
                parts.push(format!("create {}", names(&w.create)));
            }
            if !w.delete.is_empty() {
                parts.push(format!("delete {}", names(&w.delete)));
            }
            let _ = writeln!(out, "    wave {}: {}", i + 1, parts.join("; "));
        }
    }
    out.push('\n');
}
