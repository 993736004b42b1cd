//! A document's envelope, checked before its body: YAML with positions to
//! JSON, duplicate keys, `apiVersion` and `kind` (known, supported, in the
//! right group), `metadata.name` (present, a DNS name), the namespace and
//! the top-level fields its kind allows.

use std::sync::Arc;

use serde_json::Value;

use super::super::error::Problem;
use super::super::model::{ApiGen, Kind, Origin};
use super::super::yaml::{self, Document, SpanMap};
use super::super::{names, raw};
use super::context::{edit_distance, pointer_to_dotted, DocCtx};
use crate::resource::DEFAULT_NAMESPACE;

/// A document as JSON, with the positions of its values.
pub(super) fn to_json(file_index: usize, doc: &Document) -> (Value, Origin) {
    let mut spans = SpanMap::new();
    let root = yaml::to_json(&doc.root, &mut spans);
    let origin = Origin {
        file: file_index,
        pos: doc.pos,
        spans: Arc::new(spans),
    };
    (root, origin)
}

/// YAML keys must be unique: the second would silently win.
pub(super) fn report_duplicate_keys(
    file_index: usize,
    file: &str,
    doc: &Document,
    problems: &mut Vec<Problem>,
) {
    let mut dups = Vec::new();
    yaml::duplicate_keys(&doc.root, &mut String::new(), &mut dups);
    for (path, pos) in dups {
        problems.push(Problem::error(
            file_index,
            file,
            pos,
            format!("duplicate key {}", pointer_to_dotted(&path)),
            "remove one of the two entries: YAML keys must be unique and the second would silently win",
        ));
    }
}

/// What the envelope says an object is.
pub(super) struct Envelope {
    pub(super) api_version: String,
    pub(super) kind: Kind,
    pub(super) api_gen: ApiGen,
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) meta: raw::RawMeta,
}

/// Check the envelope. `None` (with the problem or warning recorded) when the
/// document is not an object capi manages.
pub(super) fn envelope(ctx: &mut DocCtx<'_>, root: &Value) -> Option<Envelope> {
    let (api_version, kind, name) = identify(ctx, root)?;
    ctx.what = format!("{kind} {name:?}");
    let api_gen = check_api_version(ctx, kind, &name, &api_version)?;
    if name.is_empty() {
        ctx.error(
            "/metadata",
            format!("{kind} has no metadata.name"),
            "give the object a name under metadata.name",
        );
        return None;
    }
    if let Err(why) = names::dns1123_subdomain(&name) {
        ctx.error("/metadata/name", format!("{kind} name {} is invalid: {why}", shown(&name)), "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (at most 253 characters)");
    }
    // These names become label values (cluster.x-k8s.io/cluster-name,
    // deployment-name, set-name) on every machine.
    if matches!(
        kind,
        Kind::Cluster | Kind::MachineDeployment | Kind::MachineSet
    ) {
        if let Err(why) = names::label_value(&name) {
            ctx.error(
                "/metadata/name",
                format!("{kind} name {} is invalid: {why}", shown(&name)),
                format!(
                    "a {kind}'s name is also a label value on its machines: at most 63 characters"
                ),
            );
        }
    }
    let namespace = namespace(ctx, root);
    let meta: raw::RawMeta = ctx.typed(root, "/metadata").unwrap_or_default();
    check_labels(ctx, &meta, "/metadata");
    check_top_level_fields(ctx, root, kind, &name);
    Some(Envelope {
        api_version,
        kind,
        api_gen,
        name,
        namespace,
        meta,
    })
}

/// `apiVersion`, kind and name of a mapping with a kind capi manages.
fn identify(ctx: &mut DocCtx<'_>, root: &Value) -> Option<(String, Kind, String)> {
    if !root.is_object() {
        ctx.error(
            "",
            "a manifest document must be a mapping with apiVersion, kind and metadata",
            "remove the stray document or fix its indentation",
        );
        return None;
    }
    let api_version = root.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind_str = root.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind_str.is_empty() || api_version.is_empty() {
        ctx.error(
            if kind_str.is_empty() {
                "/kind"
            } else {
                "/apiVersion"
            },
            format!(
                "document has no {}",
                if kind_str.is_empty() {
                    "`kind`"
                } else {
                    "`apiVersion`"
                }
            ),
            "every object needs `apiVersion`, `kind` and `metadata.name`",
        );
        return None;
    }
    let name = root
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind_str == "ClusterClass"
        || kind_str.ends_with("ClusterTemplate")
        || kind_str == "KubeadmControlPlaneTemplate"
    {
        ctx.error(
            "/kind",
            format!("{kind_str} {name:?}: ClusterClass and managed topologies are not supported yet"),
            "write the Cluster's objects out explicitly (Cluster, KubeadmControlPlane, MachineDeployment, templates) instead of using a ClusterClass",
        );
        return None;
    }
    let Some(kind) = Kind::parse(kind_str) else {
        if let Some((message, help)) = unknown_cluster_api_kind(kind_str, &name, api_version) {
            ctx.error("/kind", message, help);
            return None;
        }
        ctx.warning(
            "/kind",
            format!(
                "{kind_str} {name:?} ({api_version}) is not a kind capi manages; it is ignored"
            ),
            "remove it from the manifests passed to capi, or ignore this warning",
        );
        return None;
    };
    Some((api_version.to_string(), kind, name))
}

/// The API group must be the kind's and the version one capi reads.
fn check_api_version(
    ctx: &mut DocCtx<'_>,
    kind: Kind,
    name: &str,
    api_version: &str,
) -> Option<ApiGen> {
    let (group, version) = match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    if group != kind.group() {
        ctx.error(
            "/apiVersion",
            format!("{kind} {name:?}: apiVersion {api_version:?} has the wrong group"),
            format!("{kind} belongs to the API group {:?}", kind.group()),
        );
        return None;
    }
    if !kind.versions().contains(&version) {
        ctx.error(
            "/apiVersion",
            format!("{kind} {name:?}: API version {version:?} is not supported"),
            format!(
                "use one of: {}",
                kind.versions()
                    .iter()
                    .map(|v| format!("{}/{}", kind.group(), v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .replace("\"/", "\""),
        );
        return None;
    }
    Some(match version {
        "v1beta1" => ApiGen::V1beta1,
        "v1beta2" => ApiGen::V1beta2,
        _ => ApiGen::V1,
    })
}

/// Fields a kind allows at the top level.
fn check_top_level_fields(ctx: &mut DocCtx<'_>, root: &Value, kind: Kind, name: &str) {
    for key in root
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let allowed: &[&str] = match kind {
            Kind::Secret => &[
                "apiVersion",
                "kind",
                "metadata",
                "data",
                "stringData",
                "type",
                "immutable",
            ],
            Kind::ConfigMap => &[
                "apiVersion",
                "kind",
                "metadata",
                "data",
                "binaryData",
                "immutable",
            ],
            _ => &["apiVersion", "kind", "metadata", "spec", "status"],
        };
        if !allowed.contains(&key.as_str()) {
            ctx.error(
                &format!("/{}", yaml::escape_pointer(&key)),
                format!("{kind} {name:?}: unknown top-level field `{key}`"),
                format!("valid top-level fields: {}", allowed.join(", ")),
            );
        }
    }
}

/// `metadata.namespace`: absent means `default`; otherwise a DNS-1123 label,
/// since it becomes part of every address (and of file and label names).
fn namespace(ctx: &mut DocCtx<'_>, root: &Value) -> String {
    let ns = match root.pointer("/metadata/namespace") {
        None | Some(Value::Null) => return DEFAULT_NAMESPACE.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            ctx.error(
                "/metadata/namespace",
                format!("{}: metadata.namespace is not a string ({other})", ctx.what),
                "write the namespace as a name, e.g. `namespace: default`",
            );
            return DEFAULT_NAMESPACE.to_string();
        }
    };
    if let Err(why) = names::dns1123_label(&ns) {
        ctx.error(
            "/metadata/namespace",
            format!("{}: namespace {} is invalid: {why}", ctx.what, shown(&ns)),
            "a namespace is a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit (remove the field for `default`)",
        );
        // The object is still checked (so that its other problems are
        // found), under a name safe to print in those messages.
        return ns.escape_debug().to_string();
    }
    ns
}

/// Label keys and values, and annotation keys, as Kubernetes checks them:
/// they are copied onto machines (container labels, server metadata).
pub(super) fn check_labels(ctx: &mut DocCtx<'_>, meta: &raw::RawMeta, base: &str) {
    for (k, v) in &meta.labels {
        let at = format!("{base}/labels/{}", yaml::escape_pointer(k));
        let why = names::label_key(k)
            .map_err(|e| format!("label key {} is invalid: {e}", shown(k)))
            .and_then(|()| {
                names::label_value(v)
                    .map_err(|e| format!("the value of label {} is invalid: {e}", shown(k)))
            });
        if let Err(why) = why {
            ctx.error(&at, format!("{}: {why}", ctx.what), "label keys are [prefix/]name and values at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit");
        }
    }
    for k in meta.annotations.keys() {
        if let Err(e) = names::label_key(k) {
            let at = format!("{base}/annotations/{}", yaml::escape_pointer(k));
            ctx.error(
                &at,
                format!("{}: annotation key {} is invalid: {e}", ctx.what, shown(k)),
                "annotation keys are [prefix/]name like label keys",
            );
        }
    }
}

/// A user-supplied name in a message: escaped (no control or
/// direction-changing characters reach the terminal) and at most 80
/// characters.
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

/// Kinds of Cluster API's own groups (and of the providers capi knows) that
/// capi reads past: a manifest may carry them, capi leaves them alone.
const KNOWN_UNMANAGED: &[&str] = &[
    "ClusterResourceSet",
    "ClusterResourceSetBinding",
    "MachinePool",
    "MachineDrainRule",
    "ExtensionConfig",
    "IPAddress",
    "IPAddressClaim",
    "InClusterIPPool",
    "GlobalInClusterIPPool",
    "DockerMachinePool",
    "DockerMachinePoolTemplate",
    "DockerClusterTemplate",
    "DevClusterTemplate",
    "OpenStackMachine",
    "OpenStackServer",
    "OpenStackFloatingIPPool",
];

/// Is `api_version` in a Cluster API group (`cluster.x-k8s.io` or
/// `*.cluster.x-k8s.io`: core, bootstrap, control plane, infrastructure,
/// addons...)?
pub(crate) fn cluster_api_group(api_version: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    group == "cluster.x-k8s.io" || group.ends_with(".cluster.x-k8s.io")
}

/// An unknown kind in a Cluster API group (`*.cluster.x-k8s.io`) is a
/// mistake, not something to skip: skipping a misspelt MachineDeployment
/// makes the next plan destroy its machines. `(message, help)` for those;
/// `None` for other groups and known kinds capi does not manage.
fn unknown_cluster_api_kind(kind: &str, name: &str, api_version: &str) -> Option<(String, String)> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if !cluster_api_group(api_version) || KNOWN_UNMANAGED.contains(&kind) {
        return None;
    }
    // Suggestions come from the kinds of the same group (all of them when
    // capi manages none there).
    let same_group = Kind::ALL.iter().any(|k| k.group() == group);
    let closest = Kind::ALL
        .iter()
        .filter(|k| !same_group || k.group() == group)
        .map(|k| {
            (
                edit_distance(&kind.to_lowercase(), &k.as_str().to_lowercase()),
                k.as_str(),
            )
        })
        .min()
        .filter(|(d, _)| *d <= 2.max(kind.len() / 4));
    let message =
        format!("{kind} {name:?} ({api_version}): {kind:?} is not a Cluster API kind capi knows");
    let help = match closest {
        Some((_, k)) => format!(
            "did you mean {k}? An object capi cannot read would be left out of the plan (and the machines it owns destroyed)"
        ),
        None => {
            let in_group: Vec<&str> = Kind::ALL
                .iter()
                .filter(|k| k.group() == group)
                .map(|k| k.as_str())
                .collect();
            let known = if in_group.is_empty() {
                format!("capi manages no kind of the group {group}")
            } else {
                format!("capi manages {} in {group}", in_group.join(", "))
            };
            format!("{known}; fix the kind, or remove the object from the manifests passed to capi")
        }
    };
    Some((message, help))
}
