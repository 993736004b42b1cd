//! `capi destroy [CLUSTER]`: everything in the state (or one cluster's
//! resources), in reverse dependency order.

use crate::plan::{self, Operation as PlanOperation, PlanOptions};

use super::super::output::Printer;
use super::super::pipeline::{self, LockedState, Operation};
use super::super::settings::{ApplySettings, GlobalSettings, ManifestSettings, RunSettings};
use super::super::{CliError, ExitStatus};

pub(crate) async fn run(
    g: &GlobalSettings,
    cluster: Option<&str>,
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
    // One cluster: every resource it has, as targets (nothing crosses
    // clusters, so the others stay as they are).
    let targets = match cluster {
        None => Vec::new(),
        Some(c) => {
            let key = c.strip_prefix("default:").unwrap_or(c);
            let targets: Vec<_> = locked
                .state
                .resources
                .iter()
                .filter(|r| r.address.cluster_key() == key)
                .map(|r| r.address.clone())
                .collect();
            if targets.is_empty() {
                return Err(CliError::Usage(format!(
                    "no cluster {c:?} in the state; clusters: {}",
                    locked.state.cluster_keys().join(", ")
                )));
            }
            targets
        }
    };
    let opts = PlanOptions {
        operation: PlanOperation::Destroy,
        now_unix: g.now(),
        targets,
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
