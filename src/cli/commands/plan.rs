//! `capi plan`: what apply would do, optionally saved (`-out FILE`) for
//! `capi apply FILE` to run exactly.

use std::path::Path;

use crate::plan::{self, PlanOptions};

use super::super::args::TargetArgs;
use super::super::output::Printer;
use super::super::pipeline::{self, LockedState};
use super::super::settings::{GlobalSettings, ManifestSettings, RunSettings};
use super::super::{CliError, ExitStatus};

/// Plan options for `--target` and `--replace`.
pub(crate) fn options(g: &GlobalSettings, t: &TargetArgs) -> PlanOptions {
    PlanOptions {
        now_unix: g.now(),
        targets: t.targets.clone(),
        replace: t.replace.clone(),
        ..Default::default()
    }
}

/// What `capi plan` was asked beyond its manifests and targets.
pub(crate) struct PlanFlags<'a> {
    /// `-detailed-exitcode`: exit 2 when there are changes.
    pub(crate) detailed: bool,
    /// `-destroy`: plan what `capi destroy` would do.
    pub(crate) destroy: bool,
    /// `-out FILE`.
    pub(crate) out: Option<&'a Path>,
}

pub(crate) async fn run(
    g: &GlobalSettings,
    ms: &ManifestSettings,
    run: &RunSettings,
    targets: &TargetArgs,
    flags: &PlanFlags<'_>,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    let (detailed, out) = (flags.detailed, flags.out);
    // A destroy plan wants nothing of the manifests but their credentials,
    // so, as `capi destroy`, it needs none.
    let m = if flags.destroy && ms.files.is_empty() {
        None
    } else {
        Some(pipeline::load_manifests(ms, p)?)
    };
    let desired = match &m {
        Some(m) if !flags.destroy => pipeline::build_desired(m, ms)?,
        _ => Default::default(),
    };
    let locked = LockedState::acquire_reading_ahead(g, run, "plan", &desired, m.as_ref()).await?;
    let mut opts = options(g, targets);
    if flags.destroy {
        opts.operation = plan::Operation::Destroy;
    }
    let pl = pipeline::plan_changes(&desired, &locked, opts, run, m.as_ref(), p).await?;
    pipeline::show_plan(p, &pl, "plan");
    if let Some(path) = out {
        let f = plan::file::PlanFile {
            format: plan::file::PLAN_FILE_FORMAT.into(),
            format_version: plan::PLAN_FORMAT_VERSION,
            capi_version: env!("CARGO_PKG_VERSION").into(),
            manifest_files: ms.files.iter().map(|f| f.display().to_string()).collect(),
            // Empty without manifests (a destroy plan): applied without any.
            manifest_digest: m
                .as_ref()
                .map(|m| m.source_digest.clone())
                .unwrap_or_default(),
            variables_digest: m.as_ref().map(|m| m.variables_digest()).unwrap_or_default(),
            provider_override: ms.provider_override_name(),
            plan: pl.clone(),
            checksum: None,
        };
        // Mode 0600 like the state, and a rename: a symlink at the name is
        // replaced, never written through.
        crate::state::files::write_private_atomic(path, &plan::file::encode(&f)).map_err(|e| {
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
    let status = if detailed && !pl.is_empty() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    };
    // The process ends right after this: freeing a 20,000-resource state,
    // graph and plan piece by piece would cost more than the planning itself.
    // The lock is released properly (its files removed) first.
    std::mem::forget((locked.release(), desired, pl, m));
    Ok(status)
}
