//! Infrastructure bodies: DockerCluster, DevCluster (one backend: docker or
//! inMemory), Docker and Dev machines and machine templates, and the
//! OpenStack kinds, whose specs are kept as written (pruned) for the
//! provider to interpret.

use serde_json::Value;

use super::super::model::{Body, InfraCluster, InfraMachine, Kind};
use super::super::raw;
use super::{prune, DocCtx};
use crate::util::time::duration_value_seconds;

pub(super) fn parse_docker_cluster(ctx: &mut DocCtx<'_>, root: &Value) -> Option<Body> {
    let spec: raw::DockerClusterSpec = ctx.typed(root, "/spec")?;
    Some(Body::InfraCluster(InfraCluster::Docker(spec)))
}

pub(super) fn parse_dev_cluster(ctx: &mut DocCtx<'_>, root: &Value, name: &str) -> Option<Body> {
    let spec: raw::DevClusterSpec = ctx.typed(root, "/spec")?;
    Some(match (spec.backend.docker, spec.backend.in_memory) {
        (Some(d), None) => Body::InfraCluster(InfraCluster::Docker(d)),
        (None, Some(_)) => Body::InfraCluster(InfraCluster::InMemory),
        (None, None) => {
            // An empty `docker: {}` is pruned; treat a backend key that
            // was present but empty as that backend.
            match root.pointer("/spec/backend") {
                Some(Value::Object(m)) if m.contains_key("inMemory") => {
                    Body::InfraCluster(InfraCluster::InMemory)
                }
                Some(Value::Object(m)) if m.contains_key("docker") => {
                    Body::InfraCluster(InfraCluster::Docker(Default::default()))
                }
                _ => {
                    ctx.error(
                        "/spec",
                        format!("DevCluster {name:?} has no backend"),
                        "set spec.backend.docker or spec.backend.inMemory",
                    );
                    return None;
                }
            }
        }
        (Some(_), Some(_)) => {
            ctx.error(
                "/spec/backend",
                format!("DevCluster {name:?} sets both backends"),
                "set exactly one of spec.backend.docker and spec.backend.inMemory",
            );
            return None;
        }
    })
}

pub(super) fn parse_docker_machine_template(ctx: &mut DocCtx<'_>, root: &Value) -> Option<Body> {
    let spec: raw::DockerMachineTemplateSpec = ctx.typed(root, "/spec")?;
    Some(Body::InfraMachineTemplate(InfraMachine::Docker(
        normalize_docker_machine(spec.template.spec),
    )))
}

pub(super) fn parse_docker_machine(ctx: &mut DocCtx<'_>, root: &Value) -> Option<Body> {
    let spec: raw::DockerMachineSpec = ctx.typed(root, "/spec")?;
    Some(Body::InfraMachine(InfraMachine::Docker(
        normalize_docker_machine(spec),
    )))
}

/// DevMachineTemplate or DevMachine: exactly one backend.
pub(super) fn parse_dev_machine(
    ctx: &mut DocCtx<'_>,
    kind: Kind,
    root: &Value,
    name: &str,
) -> Option<Body> {
    let (spec, base): (raw::DevMachineSpec, &str) = if kind == Kind::DevMachineTemplate {
        let t: raw::DevMachineTemplateSpec = ctx.typed(root, "/spec")?;
        (t.template.spec, "/spec/template/spec")
    } else {
        (ctx.typed(root, "/spec")?, "/spec")
    };
    let backend_present = |b: &str| {
        root.pointer(&format!("{base}/backend"))
            .and_then(Value::as_object)
            .is_some_and(|m| m.contains_key(b))
    };
    let infra = match (spec.backend.docker, spec.backend.in_memory) {
        (Some(d), None) => InfraMachine::Docker(normalize_docker_machine(d)),
        (None, Some(m)) => InfraMachine::InMemory(m),
        (None, None) if backend_present("inMemory") => InfraMachine::InMemory(Default::default()),
        (None, None) if backend_present("docker") => InfraMachine::Docker(Default::default()),
        _ => {
            ctx.error(
                base,
                format!("{kind} {name:?} must set exactly one backend"),
                "set backend.docker or backend.inMemory",
            );
            return None;
        }
    };
    Some(if kind == Kind::DevMachineTemplate {
        Body::InfraMachineTemplate(infra)
    } else {
        Body::InfraMachine(infra)
    })
}

pub(super) fn openstack_cluster(root: &Value) -> Body {
    let spec = root
        .get("spec")
        .cloned()
        .map(prune)
        .unwrap_or(Value::Object(Default::default()));
    Body::InfraCluster(InfraCluster::OpenStack(spec))
}

pub(super) fn openstack_machine_template(root: &Value) -> Body {
    let spec = root
        .pointer("/spec/template/spec")
        .cloned()
        .map(prune)
        .unwrap_or(Value::Object(Default::default()));
    Body::InfraMachineTemplate(InfraMachine::OpenStack(spec))
}

fn normalize_docker_machine(mut s: raw::DockerMachineSpec) -> raw::DockerMachineSpec {
    for m in &mut s.extra_mounts {
        if m.read_only == Some(false) {
            m.read_only = None;
        }
    }
    if let Some(v) = s.bootstrap_timeout.take() {
        if let Some(secs) = duration_value_seconds(&v) {
            s.bootstrap_timeout_seconds.get_or_insert(secs as i64);
        }
    }
    s
}
