//! `capi destroy [CLUSTER] [--target T]`: everything in the state (or one
//! cluster's resources, or what `--target` names), in reverse dependency
//! order.

use crate::plan::{self, Operation as PlanOperation, PlanOptions};
use crate::resource::Target;

use super::super::output::Printer;
use super::super::pipeline::{self, LockedState, Operation};
use super::super::settings::{ApplySettings, GlobalSettings, ManifestSettings, RunSettings};
use super::super::{CliError, ExitStatus};

pub(crate) async fn run(
    g: &GlobalSettings,
    // The CLUSTER argument and its `-n` namespace.
    cluster: (Option<&str>, Option<&str>),
    mut targets: Vec<Target>,
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
    let known = locked.state.cluster_keys();
    super::super::cluster_name::resolve_targets(&mut targets, &known)?;
    if let (Some(c), namespace) = cluster {
        let key = super::super::cluster_name::resolve(c, namespace, &known)?;
        if locked.state.cluster_resources(&key).next().is_none() {
            return Err(CliError::Usage(format!(
                "no cluster {c:?} in the state; clusters: {}",
                locked.state.cluster_keys().join(", ")
            )));
        }
        targets.push(Target::Cluster(key));
    }
    let opts = PlanOptions {
        operation: PlanOperation::Destroy,
        now_unix: g.now(),
        targets,
        ..Default::default()
    };
    let pl = plan::plan(&Default::default(), &locked.state, &opts)?;
    let op = Operation {
        name: "destroy",
        question: "destroy all the resources",
        approved: false,
    };
    pipeline::show_and_execute(pl, locked, run, a, m.as_ref(), &op, p).await
}
