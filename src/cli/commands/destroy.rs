//! `capi destroy`: everything in the state, in reverse dependency order.

use crate::plan::{self, Operation as PlanOperation, PlanOptions};

use super::super::output::Printer;
use super::super::pipeline::{self, LockedState, Operation};
use super::super::settings::{ApplySettings, GlobalSettings, ManifestSettings, RunSettings};
use super::super::{CliError, ExitStatus};

pub(crate) async fn run(
    g: &GlobalSettings,
    ms: &ManifestSettings,
    run: &RunSettings,
    a: &ApplySettings,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    // Manifests are optional: they only provide credentials (Secrets).
    let m = if ms.files.is_empty() {
        None
    } else {
        Some(pipeline::load_manifests(ms, p)?)
    };
    let locked = LockedState::acquire(g, run, "destroy")?;
    let opts = PlanOptions {
        operation: PlanOperation::Destroy,
        now_unix: g.now(),
        ..Default::default()
    };
    let pl = plan::plan(&Default::default(), &locked.state, &opts)?;
    pipeline::show_plan(p, &pl, "destroy");
    let op = Operation {
        name: "destroy",
        question: "destroy all the resources",
        approved: false,
    };
    pipeline::approve_and_execute(&pl, locked, run, a, m.as_ref(), &op, p).await
}
