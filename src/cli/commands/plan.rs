//! `capi plan`.

use crate::plan;
use crate::state::StateStore;

use super::super::args::{GlobalArgs, ManifestArgs, RunArgs, TargetArgs};
use super::super::output::Printer;
use super::super::{json, CliError};
use super::*;

pub(crate) fn target_options(opts: &mut crate::plan::PlanOptions, t: &TargetArgs) {
    opts.targets = t.targets.clone();
    opts.replace = t.replace.clone();
}

pub(crate) async fn run(
    g: &GlobalArgs,
    margs: &ManifestArgs,
    run: &RunArgs,
    targets: &TargetArgs,
    detailed: bool,
    out: Option<&std::path::Path>,
    p: &Printer,
) -> Result<u8, CliError> {
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
    if let Some(path) = out {
        let f = plan::file::PlanFile {
            format: plan::file::PLAN_FILE_FORMAT.into(),
            format_version: plan::PLAN_FORMAT_VERSION,
            capi_version: env!("CARGO_PKG_VERSION").into(),
            manifest_files: margs
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            manifest_digest: m.source_digest.clone(),
            variables_digest: m.variables_digest(),
            provider_override: margs.provider.map(|_| "sim".to_string()),
            plan: pl.clone(),
            checksum: None,
        };
        std::fs::write(path, plan::file::encode(&f)).map_err(|e| {
            CliError::Message(format!("cannot write the plan to {}: {e}", path.display()))
        })?;
        if !p.json {
            p.message(&format!(
                "Saved the plan to {}. To apply exactly this plan: capi apply {}",
                path.display(),
                path.display()
            ));
        }
    } else if !p.json && !pl.is_empty() {
        p.message("Note: this plan was not saved (-out FILE); `capi apply` plans again and may act differently if something changes in between.");
    }
    let code = if detailed && !pl.is_empty() { 2 } else { 0 };
    // The process ends right after this: freeing a 20,000-resource state,
    // graph and plan piece by piece would cost more than the planning itself.
    std::mem::forget((state, desired, pl, m));
    Ok(code)
}
