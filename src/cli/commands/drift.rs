//! `capi drift`: compare real infrastructure with the state only. Read-only:
//! it never writes the state and takes no lock (state files are replaced
//! atomically, so a concurrent apply never shows it a torn file). Exit 0: no
//! drift; 2: drift; 1: error. Unapplied manifest changes are not drift.

use crate::resource::{DriftEntry, DriftKind};
use crate::state::State;

use super::super::json::{DiagnosticSeverity, JsonEvent};
use super::super::output::Printer;
use super::super::pipeline;
use super::super::settings::{GlobalSettings, ManifestSettings, RunSettings};
use super::super::{CliError, ExitStatus};

/// `--ignore ADDRESS` drops every finding for that resource;
/// `--ignore ADDRESS.ATTRIBUTE` drops only that attribute's change.
pub(crate) fn apply_ignores(drift: Vec<DriftEntry>, ignores: &[String]) -> Vec<DriftEntry> {
    drift
        .into_iter()
        .filter_map(|mut d| {
            if ignores.iter().any(|i| i == d.address.as_str()) {
                return None;
            }
            let prefix = format!("{}.", d.address);
            let ignored: Vec<&str> = ignores
                .iter()
                .filter_map(|i| i.strip_prefix(&prefix))
                .collect();
            if ignored.is_empty() {
                return Some(d);
            }
            if d.kind == DriftKind::Changed {
                d.attributes.retain(|a| !ignored.contains(&a.path.as_str()));
                return (!d.attributes.is_empty()).then_some(d);
            }
            // `.status` silences stopped machines.
            if d.kind == DriftKind::Stopped && ignored.contains(&"status") {
                return None;
            }
            Some(d)
        })
        .collect()
}

/// An `--ignore` that names no resource of the state and nothing found
/// now (a typo, another state's address) is said, not silently kept.
fn unmatched_ignores(state: &State, drift: &[DriftEntry], ignores: &[String], p: &Printer) {
    let names = |i: &str, a: &str| i == a || i.strip_prefix(a).is_some_and(|r| r.starts_with('.'));
    for i in ignores {
        let known = state.resources.iter().any(|r| names(i, r.address.as_str()))
            || drift.iter().any(|d| names(i, d.address.as_str()));
        if !known {
            let w = format!("--ignore {i}: no resource of the state has this address, and nothing found now does (see `capi state list`)");
            if p.json {
                p.emit(&JsonEvent::message(DiagnosticSeverity::Warning, w));
            } else {
                p.warning(&w);
            }
        }
    }
}

pub(crate) async fn run(
    g: &GlobalSettings,
    ms: &ManifestSettings,
    run: &RunSettings,
    ignores: &[String],
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let m = if ms.files.is_empty() {
        None
    } else {
        Some(pipeline::load_manifests(ms, p)?)
    };
    let store = g.store()?;
    let Some(state) = store.load()? else {
        return Err(CliError::Usage(format!(
            "no state at {}: nothing to compare",
            g.state_arg.display()
        )));
    };
    let kinds = crate::provider::refresh::providers_in(&state);
    let settings = pipeline::provider_settings(run, m.as_ref());
    let providers = pipeline::providers_for(&kinds, &settings).await?;
    let start = std::time::Instant::now();
    let r = crate::provider::refresh::refresh(&state, &providers).await?;
    let elapsed = start.elapsed();
    unmatched_ignores(&state, &r.drift, ignores, p);
    let drift = apply_ignores(r.drift, ignores);
    let checked: usize = r.stats.iter().map(|(_, n, _)| n).sum();
    if p.json {
        p.emit(&JsonEvent::version());
        for d in &drift {
            p.emit(&JsonEvent::drift(d));
        }
        p.emit(&JsonEvent::DriftSummary {
            checked,
            drifted: drift.len(),
            elapsed_seconds: elapsed.as_secs_f64(),
        });
    } else {
        let mut out = String::new();
        if drift.is_empty() {
            out.push_str(&format!(
                "No drift: {checked} resource(s) match the state.\n"
            ));
        } else {
            out.push_str(&format!(
                "{} resource(s) changed outside capi:\n\n",
                drift.len()
            ));
            for d in &drift {
                out.push_str(&format!("  {} {}: {}\n", d.kind, d.address, d.detail));
                for a in &d.attributes {
                    out.push_str(&format!(
                        "      {}: {} -> {}\n",
                        a.path,
                        a.before
                            .as_ref()
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "null".into()),
                        a.after
                            .as_ref()
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "null".into())
                    ));
                }
            }
            out.push_str("\n`capi apply` replaces missing, stopped and changed machines (Cluster API replaces, never repairs).\n");
        }
        p.data(&out);
    }
    Ok(if drift.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Drift
    })
}
