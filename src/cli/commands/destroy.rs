//! `capi destroy`: everything in the state, in reverse dependency order.

use std::collections::BTreeSet;

use crate::plan::{self, Operation};
use crate::state::StateStore;

use super::super::args::{ApplyArgs, GlobalArgs, ManifestArgs, RunArgs};
use super::super::output::Printer;
use super::super::{json, CliError};
use super::*;

pub(crate) async fn run(
    g: &GlobalArgs,
    margs: &ManifestArgs,
    run: &RunArgs,
    a: &ApplyArgs,
    p: &Printer,
) -> Result<u8, CliError> {
    // Manifests are optional: they only provide credentials (Secrets).
    let m = if margs.files.is_empty() {
        None
    } else {
        Some(load_manifests(margs, p)?)
    };
    let _lock = lock(g, "destroy", run)?;
    let store = StateStore::new(&g.state);
    let state = load_state(&store)?;
    let mut opts = plan_options(now());
    opts.operation = Operation::Destroy;
    let pl = plan::plan(&Default::default(), &state, &opts)?;
    if p.json {
        json::emit_plan(p, &pl, "destroy");
    } else {
        p.data(&plan::render::render_plan(&pl, p.style()));
    }
    if pl.is_empty() {
        return Ok(0);
    }
    if !a.auto_approve && !confirm(p, "destroy all the resources")? {
        p.error("Destroy cancelled: only 'yes' is accepted.");
        return Ok(1);
    }
    let kinds: BTreeSet<_> = pl.steps.iter().map(|s| s.provider).collect();
    let providers = providers_for(&kinds, &provider_settings(g, Some(run), m.as_ref())).await?;
    let report = execute(
        &pl,
        state,
        store,
        providers,
        Default::default(),
        a.parallelism,
        None,
        p,
    )
    .await;
    Ok(report_outcome(&report, &pl, "destroy", p))
}
