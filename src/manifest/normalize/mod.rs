//! From a parsed YAML document to a normalised [`Object`], collecting
//! problems: the envelope first (`document.rs`), then the body by kind —
//! Cluster (`cluster.rs`), KubeadmControlPlane and kubeadm configs
//! (`kcp.rs`), machine groups (`machines.rs`), infrastructure kinds
//! (`infra.rs`), MachineHealthChecks (`health.rs`), Secrets and ConfigMaps
//! (`data.rs`). `context.rs` holds the per-document context and the JSON
//! helpers they share.

mod cluster;
mod context;
mod data;
mod document;
mod health;
mod infra;
mod kcp;
mod machines;

use serde_json::Value;

use super::error::Problem;
use super::model::*;
use super::raw;
use super::yaml::Document;
use super::RawDocument;
use crate::resource::Version;

pub(crate) use context::pointer_to_dotted;
use context::{prune, DocCtx};
pub(crate) use document::cluster_api_group;

/// What a document turned out to be.
pub(crate) enum Parsed {
    Object(Box<Object>),
    /// A known kind whose body has errors (already reported): other objects
    /// may still refer to it without a second, misleading error.
    Broken(ObjectKey),
    /// Ignored (warning) or not an object at all (error reported).
    Skip,
}

/// One YAML document as JSON with positions; duplicate keys are reported.
pub(crate) fn document_json(
    file_index: usize,
    file: &str,
    doc: &Document,
    problems: &mut Vec<Problem>,
) -> RawDocument {
    let (root, origin) = document::to_json(file_index, doc);
    document::report_duplicate_keys(file_index, file, doc, problems);
    RawDocument { root, origin }
}

/// Parse one document into an object, recording problems (and warnings)
/// as it goes.
pub(crate) fn parse_value(file: &str, doc: RawDocument, problems: &mut Vec<Problem>) -> Parsed {
    let RawDocument { root, origin } = doc;
    let mut ctx = DocCtx {
        file_index: origin.file,
        file,
        origin: origin.clone(),
        problems,
        what: "object".into(),
    };
    let Some(env) = document::envelope(&mut ctx, &root) else {
        return Parsed::Skip;
    };
    let key = ObjectKey {
        kind: env.kind,
        namespace: env.namespace,
        name: env.name,
    };
    let Some(body) = parse_body(&mut ctx, env.kind, env.api_gen, &root, &key.name) else {
        return Parsed::Broken(key);
    };
    Parsed::Object(Box::new(Object {
        key,
        api_version: env.api_version,
        api_gen: env.api_gen,
        labels: env.meta.labels,
        annotations: env.meta.annotations,
        origin,
        body,
    }))
}

/// The body of a `kind` object. `None` when it has errors (reported).
fn parse_body(
    ctx: &mut DocCtx<'_>,
    kind: Kind,
    api_gen: ApiGen,
    root: &Value,
    name: &str,
) -> Option<Body> {
    match kind {
        Kind::Cluster => cluster::parse_cluster(ctx, api_gen, root, name),
        Kind::KubeadmControlPlane => kcp::parse_control_plane(ctx, api_gen, root, name),
        Kind::KubeadmConfig => kcp::parse_config(ctx, root),
        Kind::KubeadmConfigTemplate => kcp::parse_config_template(ctx, root),
        Kind::MachineDeployment => machines::parse_deployment(ctx, api_gen, root, name),
        Kind::MachineSet => machines::parse_set(ctx, api_gen, root),
        Kind::Machine => machines::parse_machine(ctx, api_gen, root),
        Kind::DockerCluster => infra::parse_docker_cluster(ctx, root),
        Kind::DevCluster => infra::parse_dev_cluster(ctx, root, name),
        Kind::DockerMachineTemplate => infra::parse_docker_machine_template(ctx, root),
        Kind::DockerMachine => infra::parse_docker_machine(ctx, root),
        Kind::DevMachineTemplate | Kind::DevMachine => {
            infra::parse_dev_machine(ctx, kind, root, name)
        }
        Kind::OpenStackCluster => Some(infra::openstack_cluster(root)),
        Kind::OpenStackMachineTemplate => Some(infra::openstack_machine_template(root)),
        Kind::MachineHealthCheck => health::parse_health_check(ctx, root, name),
        Kind::Secret => Some(data::parse_secret(ctx, root, name)),
        Kind::ConfigMap => Some(data::parse_config_map(root)),
    }
}

fn to_ref(r: Option<raw::RawRef>, path: &str) -> Option<ObjectRef> {
    r.map(|r| ObjectRef {
        kind: r.kind,
        name: r.name,
        path: path.to_string(),
    })
}

/// v1beta2 references carry `apiGroup`, v1beta1 references `apiVersion`.
fn check_ref_style(ctx: &mut DocCtx<'_>, r: &Option<raw::RawRef>, path: &str, api_gen: ApiGen) {
    let Some(r) = r else { return };
    match api_gen {
        ApiGen::V1beta2 if r.api_version.is_some() => ctx.error(
            &format!("{path}/apiVersion"),
            format!("{}: v1beta2 references have no apiVersion", ctx.what),
            "replace `apiVersion: <group>/<version>` with `apiGroup: <group>` (v1beta2 looks the version up from the contract)",
        ),
        ApiGen::V1beta1 if r.api_group.is_some() => ctx.error(
            &format!("{path}/apiGroup"),
            format!("{}: v1beta1 references have no apiGroup", ctx.what),
            "replace `apiGroup: <group>` with `apiVersion: <group>/v1beta1`, or move the object to v1beta2",
        ),
        _ => {}
    }
    if r.kind.is_empty() || r.name.is_empty() {
        ctx.error(
            path,
            format!(
                "{}: reference without {}",
                ctx.what,
                if r.kind.is_empty() { "kind" } else { "name" }
            ),
            "a reference needs both `kind` and `name`",
        );
    }
}

fn parse_version(v: &str) -> Result<Version, String> {
    Version::parse(v)
}

#[cfg(test)]
mod tests {
    use super::health::parse_range;
    use super::*;

    #[test]
    fn prune_omitempty() {
        let v = serde_json::json!({"a": "", "b": [], "c": {"d": null}, "e": 0, "labels": {"x": ""}, "taints": []});
        assert_eq!(
            prune(v),
            serde_json::json!({"e": 0, "labels": {"x": ""}, "taints": []})
        );
    }

    #[test]
    fn dotted() {
        assert_eq!(
            pointer_to_dotted("/spec/files/0/path"),
            "spec.files[0].path"
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("[1-3]"), Some((1, 3)));
        assert_eq!(parse_range("[3-1]"), None);
    }
}
