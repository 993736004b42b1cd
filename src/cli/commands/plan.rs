//! `capi plan`.

use crate::plan;
use crate::resource::Address;
use crate::state::StateStore;

use super::super::args::{GlobalArgs, ManifestArgs, RunArgs, TargetArgs};
use super::super::output::Printer;
use super::super::{json, CliError};
use super::*;

pub fn target_options(opts: &mut crate::plan::PlanOptions, t: &TargetArgs) {
    opts.targets = t.targets.iter().map(|s| Address(s.clone())).collect();
    opts.replace = t.replace.iter().map(|s| Address(s.clone())).collect();
}

pub async fn run(g: &GlobalArgs, margs: &ManifestArgs, run: &RunArgs, targets: &TargetArgs, detailed: bool, p: &Printer) -> Result<u8, CliError> {
    let m = load_manifests(margs, p)?;
    let desired = build_desired(&m, margs)?;
    let _lock = lock(g, "plan", run)?;
    let store = StateStore::new(&g.state);
    let state = load_state(&store)?;
    let mut opts = plan_options(now());
    target_options(&mut opts, targets);
    let drift = refresh_into(&mut opts, &state, g, run, Some(&m), p).await?;
    let mut pl = plan::plan(&desired, &state, &opts)?;
    pl.drift = drift;
    if p.json {
        json::emit_plan(p, &pl, "plan");
    } else {
        p.data(&plan::render::render_plan(&pl, p.style()));
    }
    Ok(if detailed && !pl.is_empty() { 2 } else { 0 })
}
