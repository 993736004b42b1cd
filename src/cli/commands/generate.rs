//! `capi generate cluster NAME`: render a cluster template with clusterctl's
//! variable rules and names, ready for `capi plan -f -`. With `--json`: a
//! `generated` event listing the objects, with the manifest unless it holds
//! a Secret.

use crate::manifest::{vars, Kind, RawSource};

use super::super::args::GenerateArgs;
use super::super::json::JsonEvent;
use super::super::output::Printer;
use super::super::settings::{variables, Env};
use super::super::{CliError, ExitStatus};

/// The built-in flavors (also in examples/templates/).
pub(crate) const FLAVORS: &[(&str, &str)] = &[
    (
        "sim",
        include_str!("../../../examples/templates/cluster-template-sim.yaml"),
    ),
    (
        "docker",
        include_str!("../../../examples/templates/cluster-template-docker.yaml"),
    ),
    (
        "development",
        include_str!("../../../examples/templates/cluster-template-development.yaml"),
    ),
    (
        "sim-topology",
        include_str!("../../../examples/templates/cluster-template-sim-topology.yaml"),
    ),
    (
        "openstack",
        include_str!("../../../examples/templates/cluster-template-openstack.yaml"),
    ),
];

fn template(a: &GenerateArgs) -> Result<(String, String), CliError> {
    if let Some(from) = &a.from {
        if from.as_os_str() == "-" {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                .map_err(|e| CliError::Message(e.to_string()))?;
            return Ok(("<stdin>".into(), t));
        }
        let t = std::fs::read_to_string(from)
            .map_err(|e| CliError::Usage(format!("cannot read --from {}: {e}", from.display())))?;
        return Ok((from.display().to_string(), t));
    }
    let flavor = a.flavor.as_deref().unwrap_or("sim");
    FLAVORS
        .iter()
        .find(|(n, _)| *n == flavor)
        .map(|(n, t)| (format!("cluster-template-{n}.yaml"), t.to_string()))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "unknown flavor {flavor:?}; built-in flavors: {} (or --from FILE)",
                FLAVORS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

pub(crate) fn run(a: &GenerateArgs, env: &Env, p: &Printer) -> Result<ExitStatus, CliError> {
    let (name, text) = template(a)?;
    if a.list_variables {
        let mut out = String::from("Required variables:\n");
        let vs = vars::list_variables(&text);
        for v in vs.iter().filter(|v| !v.has_default) {
            out.push_str(&format!("  - {}\n", v.name));
        }
        out.push_str("\nOptional variables (with a default):\n");
        for v in vs.iter().filter(|v| v.has_default) {
            out.push_str(&format!("  - {}\n", v.name));
        }
        p.data(&out);
        return Ok(ExitStatus::Success);
    }
    let cluster = a
        .name
        .clone()
        .ok_or_else(|| CliError::Usage("capi generate cluster needs the cluster NAME".into()))?;
    if a.control_plane_machine_count == Some(0) {
        return Err(CliError::Usage(
            "--control-plane-machine-count must be at least 1".into(),
        ));
    }
    // clusterctl's rules: flags win; the environment (and --var) fill the rest.
    let mut v = variables(&a.vars, &a.var_files, env)?;
    v.set("CLUSTER_NAME", &cluster);
    v.set(
        "NAMESPACE",
        a.target_namespace
            .clone()
            .or_else(|| env.get("NAMESPACE").map(str::to_string))
            .unwrap_or_else(|| "default".into()),
    );
    if let Some(k) = &a.kubernetes_version {
        // Checked here, not in the built-in template it would be written into.
        crate::resource::Version::parse(k).map_err(|e| {
            CliError::Usage(format!(
                "--kubernetes-version {k}: {e}; give a full version, such as --kubernetes-version v1.31.2"
            ))
        })?;
        v.set("KUBERNETES_VERSION", k);
    }
    let cp = a
        .control_plane_machine_count
        .map(|n| n.to_string())
        .or_else(|| env.get("CONTROL_PLANE_MACHINE_COUNT").map(str::to_string))
        .unwrap_or_else(|| "1".into());
    let workers = a
        .worker_machine_count
        .map(|n| n.to_string())
        .or_else(|| env.get("WORKER_MACHINE_COUNT").map(str::to_string))
        .unwrap_or_else(|| "0".into());
    v.set("CONTROL_PLANE_MACHINE_COUNT", cp);
    v.set("WORKER_MACHINE_COUNT", workers);
    let sources = vec![RawSource {
        name: name.clone(),
        text: text.clone(),
    }];
    // Check that the result is a valid manifest before printing it.
    let m = crate::topology::load(sources, &v)?;
    let rendered = vars::substitute(&name, &text, &v).text;
    if p.json {
        // A Secret's data (OpenStack's clouds.yaml) never goes into JSON:
        // such a manifest is written without --json.
        let secret = m.objects.iter().any(|o| o.key.kind == Kind::Secret);
        p.emit(&JsonEvent::Generated {
            cluster: &cluster,
            template: &name,
            objects: m
                .objects
                .iter()
                .map(|o| format!("{}/{}/{}", o.key.kind.as_str(), o.key.namespace, o.key.name))
                .collect(),
            manifest: (!secret).then_some(rendered.as_str()),
        });
        return Ok(ExitStatus::Success);
    }
    p.data(&rendered);
    Ok(ExitStatus::Success)
}
