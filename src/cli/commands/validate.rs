//! `capi validate`: read and check the manifests, report every problem.

use super::super::args::ManifestArgs;
use super::super::output::Printer;
use super::super::CliError;
use super::*;

pub(crate) fn run(margs: &ManifestArgs, p: &Printer) -> Result<u8, CliError> {
    let m = load_manifests(margs, p)?;
    let d = build_desired(&m, margs)?;
    let machines: u32 = d
        .clusters
        .iter()
        .flat_map(|c| c.groups.iter())
        .map(|g| g.replicas)
        .sum();
    if p.json {
        p.event(&serde_json::json!({"type": "valid", "objects": m.objects.len(), "clusters": d.clusters.len(), "machines": machines, "warnings": m.warnings.len()}));
    } else {
        p.data(&format!(
            "Success! {} object(s) in {} file(s) are valid: {} cluster(s), {} machine(s).\n",
            m.objects.len(),
            m.files.len(),
            d.clusters.len(),
            machines
        ));
    }
    Ok(0)
}
