//! `capi apply`.

use std::collections::BTreeSet;

use crate::plan;
use crate::state::StateStore;

use super::super::args::{ApplyArgs, GlobalArgs, ManifestArgs, RunArgs, TargetArgs};
use super::super::output::Printer;
use super::super::{json, CliError};
use super::*;

pub async fn run(g: &GlobalArgs, margs: &ManifestArgs, run: &RunArgs, a: &ApplyArgs, targets: &TargetArgs, p: &Printer) -> Result<u8, CliError> {
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
    let report = execute(&pl, state, store, providers, manifest_secrets(&m), a.parallelism, p).await;
    Ok(report_outcome(&report, &pl, "apply", p))
}
