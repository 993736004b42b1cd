//! `capi validate`: read and check the manifests, report every problem
//! (the version-skew rules the manifests alone can break included).

use super::super::output::Printer;
use super::super::pipeline;
use super::super::settings::ManifestSettings;
use super::super::{CliError, ExitStatus};

pub(crate) fn run(ms: &ManifestSettings, p: &Printer) -> Result<ExitStatus, CliError> {
    let m = pipeline::load_manifests(ms, p)?;
    let d = pipeline::build_desired(&m, ms)?;
    // The version rules the manifests alone can break (workers newer than
    // their control plane, or too far behind it), as a plan against an
    // empty state checks them.
    let empty = crate::state::State::empty();
    for dc in &d.clusters {
        crate::plan::skew::check(&empty, dc)?;
    }
    let machines: u32 = d
        .clusters
        .iter()
        .flat_map(|c| c.groups.iter())
        .map(|g| g.replicas)
        .sum();
    if p.json {
        p.emit(&super::super::json::JsonEvent::Valid {
            objects: m.object_count(),
            clusters: d.clusters.len(),
            machines,
            warnings: m.warnings.len(),
        });
    } else {
        p.data(&format!(
            "Success! {} object(s) in {} file(s) are valid: {} cluster(s), {} machine(s).\n",
            m.object_count(),
            m.files.len(),
            d.clusters.len(),
            machines
        ));
    }
    Ok(ExitStatus::Success)
}
