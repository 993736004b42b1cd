//! `capi apply`: plan, ask, execute; or `capi apply FILE`: execute exactly a
//! saved plan, refusing a stale one.

use std::path::{Path, PathBuf};

use crate::plan;

use super::super::args::TargetArgs;
use super::super::output::Printer;
use super::super::pipeline::{self, LockedState, Operation};
use super::super::settings::{ApplySettings, GlobalSettings, ManifestSettings, RunSettings};
use super::super::{CliError, ExitStatus};

pub(crate) async fn run(
    g: &GlobalSettings,
    ms: &ManifestSettings,
    run: &RunSettings,
    a: &ApplySettings,
    targets: &TargetArgs,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let m = pipeline::load_manifests(ms, p)?;
    let desired = pipeline::build_desired(&m, ms)?;
    let locked = LockedState::acquire_reading_ahead(g, run, "apply", &desired, Some(&m)).await?;
    let opts = super::plan::options(g, targets);
    let pl = pipeline::plan_changes(&desired, &locked, opts, run, Some(&m), p).await?;
    let op = Operation {
        name: "apply",
        question: "apply these changes",
        approved: false,
    };
    pipeline::show_and_execute(pl, locked, run, a, Some(&m), &op, p).await
}

/// `capi apply FILE`: apply exactly a saved plan, refusing a stale one.
pub(crate) async fn run_saved(
    g: &GlobalSettings,
    file: &Path,
    ms: &ManifestSettings,
    run: &RunSettings,
    a: &ApplySettings,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let bytes = std::fs::read(file).map_err(|e| {
        CliError::Usage(format!("cannot read the plan file {}: {e}", file.display()))
    })?;
    let pf = plan::file::decode(&bytes).map_err(|e| {
        CliError::Message(format!(
            "the plan file {} cannot be used: {e}",
            file.display()
        ))
    })?;
    // The manifests it was made from, read again with today's variables.
    let mut ms = ms.clone();
    let given: Vec<String> = ms.files.iter().map(|f| f.display().to_string()).collect();
    if !given.is_empty() && pf.manifest_files.is_empty() {
        return Err(CliError::Usage(format!(
            "the plan {} was made without manifests (`capi plan -destroy`); apply it without -f",
            file.display()
        )));
    }
    if !given.is_empty() && !same_files(&given, &pf.manifest_files) {
        return Err(CliError::Usage(format!(
            "the plan {} was made from {}; a saved plan is applied with the manifests it was made from: leave out -f (or pass the same files)",
            file.display(),
            pf.manifest_files.join(", ")
        )));
    }
    // Read under the names the plan was made with (its digest covers them).
    if ms.files.is_empty() && pf.manifest_files.iter().any(|f| f == "-") {
        return Err(CliError::Usage(
            "the plan was made from stdin: pass the same manifests again with -f -".into(),
        ));
    }
    ms.files = pf.manifest_files.iter().map(PathBuf::from).collect();
    // A destroy plan made without manifests is applied without any.
    let m = if ms.files.is_empty() {
        if pf.plan.operation != plan::Operation::Destroy {
            return Err(CliError::Message(format!(
                "the plan file {} names no manifests, and only a destroy plan is made without them",
                file.display()
            )));
        }
        None
    } else {
        Some(pipeline::load_manifests(&ms, p)?)
    };
    let locked = LockedState::acquire(g, run, "apply")?;
    plan::file::check_fresh(
        &pf,
        &locked.state.lineage,
        locked.state.serial,
        m.as_ref().map_or("", |m| m.source_digest.as_str()),
        &m.as_ref().map(|m| m.variables_digest()).unwrap_or_default(),
    )
    .map_err(|e| CliError::Message(e.to_string()))?;
    plan::check::check(&pf.plan, &locked.state)
        .map_err(|e| CliError::Message(format!("the saved plan is not consistent: {e}")))?;
    let pl = pf.plan;
    if pl.is_empty() {
        if p.json {
            // The stream every command writes: the version line first.
            pipeline::show_plan(p, &pl, "apply");
        } else {
            p.data("No changes. Your infrastructure matches the configuration.\n");
        }
        return Ok(ExitStatus::Success);
    }
    if !p.json {
        p.message(&format!(
            "Applying the saved plan {} ({} operations).",
            file.display(),
            pl.steps.len()
        ));
    }
    let op = Operation {
        name: "apply",
        question: "apply these changes",
        approved: true,
    };
    pipeline::approve_and_execute(pl, locked, run, a, m.as_ref(), &op, p).await
}

/// The same manifest files, however each was spelled (`c.yaml`, `./c.yaml`).
fn same_files(a: &[String], b: &[String]) -> bool {
    let canonical = |f: &String| {
        std::fs::canonicalize(f)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| f.clone())
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x == y || canonical(x) == canonical(y))
}
