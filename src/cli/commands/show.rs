//! `capi show [CLUSTER]`: the state in text, `--json` or `-o json|yaml`,
//! secrets masked;
//! `capi show PLANFILE`: what a saved plan will do.

use std::path::Path;

use crate::plan;
use crate::state::{Resource, State};

use super::super::args::OutputFormat;
use super::super::cluster_name;
use super::super::json::JsonEvent;
use super::super::output::Printer;
use super::super::pipeline;
use super::super::settings::GlobalSettings;
use super::super::{CliError, ExitStatus};

/// A resource as shown to people and programs: sensitive values masked.
pub(crate) fn public_resource(r: &Resource) -> Resource {
    let mut masked = r.clone();
    for val in masked.sensitive.values_mut() {
        *val = "(sensitive)".into();
    }
    masked
}

fn summary_line(r: &Resource) -> String {
    let extra = match (r.observed.get("ip"), r.observed.get("endpoint")) {
        (_, Some(e)) => format!(" endpoint={}", e.as_str().unwrap_or_default()),
        (Some(ip), _) => format!(" ip={}", ip.as_str().unwrap_or_default()),
        _ => String::new(),
    };
    let version = r
        .attributes
        .as_machine()
        .map(|m| format!(" {}", m.version))
        .unwrap_or_default();
    format!(
        "{:<60} {:<9} {:<8}{version}{extra}",
        r.address.to_string(),
        r.provider.as_str(),
        r.status.as_str()
    )
}

pub(crate) fn select<'a>(state: &'a State, cluster: Option<&'a str>) -> Vec<&'a Resource> {
    state
        .resources
        .iter()
        .filter(|r| cluster.is_none_or(|c| r.address.cluster_key() == c))
        .map(|r| &**r)
        .collect()
}

/// `capi show PLANFILE`: what a saved plan will do, as `capi plan` showed
/// it (text or `--json` events).
fn saved_plan(path: &Path, p: &Printer) -> Result<ExitStatus, CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::Usage(format!("cannot read the plan file {}: {e}", path.display()))
    })?;
    let pf = plan::file::decode(&bytes).map_err(|e| {
        CliError::Usage(format!(
            "{} is neither a cluster in the state nor a plan file capi can read: {e}",
            path.display()
        ))
    })?;
    if !p.json {
        p.message(&format!(
            "Saved plan {} (capi {}, from {}); `capi apply {}` applies exactly this, if the state and manifests have not changed since.",
            path.display(),
            pf.capi_version,
            pf.manifest_files.join(", "),
            path.display()
        ));
    }
    pipeline::show_plan(p, &pf.plan, "apply");
    Ok(ExitStatus::Success)
}

pub(crate) fn run(
    g: &GlobalSettings,
    cluster: Option<&str>,
    namespace: Option<&str>,
    output: OutputFormat,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    if let Some(arg) = cluster {
        let path = Path::new(arg);
        if path.is_file() {
            return saved_plan(path, p);
        }
    }
    let Some(state) = g.store()?.load()? else {
        p.message(&format!(
            "No state at {}: nothing has been applied yet.",
            g.state_arg.display()
        ));
        return Ok(ExitStatus::Success);
    };
    let key = cluster
        .map(|c| cluster_name::resolve(c, namespace, &state.cluster_keys()))
        .transpose()?;
    let cluster = key.as_deref();
    let rs = select(&state, cluster);
    if let Some(c) = cluster {
        if rs.is_empty() {
            return Err(CliError::Usage(format!(
                "no cluster {c:?} in the state; clusters: {}",
                state.cluster_keys().join(", ")
            )));
        }
    }
    if output != OutputFormat::Text && !p.json {
        p.document(
            output,
            &serde_json::json!({
                "lineage": state.lineage,
                "serial": state.serial,
                "capi_version": state.capi_version,
                "resources": rs.iter().map(|r| public_resource(r)).collect::<Vec<_>>(),
            }),
        );
    } else if p.json {
        p.emit(&JsonEvent::State {
            lineage: &state.lineage,
            serial: state.serial,
            capi_version: &state.capi_version,
            resources: rs.iter().map(|r| public_resource(r)).collect(),
        });
    } else {
        let mut out = format!(
            "# state {} (lineage {}, serial {})\n",
            g.state_arg.display(),
            state.lineage,
            state.serial
        );
        for r in rs {
            out.push_str(&summary_line(r));
            out.push('\n');
        }
        p.data(&out);
    }
    Ok(ExitStatus::Success)
}
