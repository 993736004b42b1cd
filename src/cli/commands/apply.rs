//! `capi apply`.

use std::collections::BTreeSet;

use crate::plan;
use crate::state::StateStore;

use super::super::args::{ApplyArgs, GlobalArgs, HealthArgs, ManifestArgs, RunArgs, TargetArgs};
use super::super::output::Printer;
use super::super::{json, CliError};
use super::*;

pub(crate) async fn run(
    g: &GlobalArgs,
    margs: &ManifestArgs,
    run: &RunArgs,
    a: &ApplyArgs,
    targets: &TargetArgs,
    health: &HealthArgs,
    p: &Printer,
) -> Result<u8, CliError> {
    let m = load_manifests(margs, p)?;
    let desired = build_desired(&m, margs)?;
    let _lock = lock(g, "apply", run)?;
    let store = StateStore::new(&g.state);
    let state = load_state(&store)?;
    let mut opts = plan_options(now());
    super::plan::target_options(&mut opts, targets);
    let drift = refresh_into(&mut opts, &state, g, run, Some(&m), p).await?;
    let mut pl = plan::plan(&desired, &state, &opts)?;
    pl.drift = drift;
    if p.json {
        json::emit_plan(p, &pl, "apply");
    } else {
        p.data(&plan::render::render_plan(&pl, p.style()));
    }
    if pl.is_empty() {
        return Ok(0);
    }
    if !a.auto_approve && !confirm(p, "apply these changes")? {
        p.error("Apply cancelled: only 'yes' is accepted.");
        return Ok(1);
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
    Ok(report_outcome(&report, &pl, "apply", p))
}

/// `capi apply FILE`: apply exactly a saved plan, refusing a stale one.
pub(crate) async fn run_saved(
    g: &GlobalArgs,
    file: &std::path::Path,
    margs: &ManifestArgs,
    run: &RunArgs,
    a: &ApplyArgs,
    health: &HealthArgs,
    p: &Printer,
) -> Result<u8, CliError> {
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
    let mut margs = margs.clone();
    if margs.files.is_empty() {
        if pf.manifest_files.iter().any(|f| f == "-") {
            return Err(CliError::Usage(
                "the plan was made from stdin: pass the same manifests again with -f -".into(),
            ));
        }
        margs.files = pf
            .manifest_files
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
    }
    let m = load_manifests(&margs, p)?;
    let _lock = lock(g, "apply", run)?;
    let store = StateStore::new(&g.state);
    let state = load_state(&store)?;
    plan::file::check_fresh(
        &pf,
        &state.lineage,
        state.serial,
        &m.source_digest,
        &m.variables_digest(),
    )
    .map_err(|e| CliError::Message(e.to_string()))?;
    plan::check::check(&pf.plan, &state)
        .map_err(|e| CliError::Message(format!("the saved plan is not consistent: {e}")))?;
    let pl = pf.plan;
    if pl.is_empty() {
        p.data("No changes. Your infrastructure matches the configuration.\n");
        return Ok(0);
    }
    if !p.json {
        p.message(&format!(
            "Applying the saved plan {} ({} operations).",
            file.display(),
            pl.steps.len()
        ));
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
    Ok(report_outcome(&report, &pl, "apply", p))
}
