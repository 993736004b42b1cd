//! From a parsed YAML document to a normalised [`Object`], collecting problems.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::Problem;
use super::model::*;
use super::raw;
use super::yaml::{self, Document, SpanMap};
use crate::resource::{Version, DEFAULT_NAMESPACE};
use crate::util::time::{duration_value_seconds, go_duration_seconds};

/// Context for reporting problems about one document.
pub(crate) struct DocCtx<'a> {
    pub(crate) file_index: usize,
    pub(crate) file: &'a str,
    pub(crate) origin: Origin,
    pub(crate) problems: &'a mut Vec<Problem>,
    pub(crate) what: String,
}

impl DocCtx<'_> {
    pub(crate) fn error(
        &mut self,
        pointer: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let pos = self.origin.pos_of(pointer);
        self.problems.push(Problem::error(
            self.file_index,
            self.file,
            pos,
            message,
            help,
        ));
    }

    pub(crate) fn warning(
        &mut self,
        pointer: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let pos = self.origin.pos_of(pointer);
        self.problems.push(Problem::warning(
            self.file_index,
            self.file,
            pos,
            message,
            help,
        ));
    }

    /// Deserialize the value at `pointer` into `T`, turning a serde error into a
    /// problem located at the failing field. Unknown fields are reported and
    /// dropped, and parsing continues, so that one typo does not hide the
    /// other problems of the object.
    pub(crate) fn typed<T: DeserializeOwned + Default>(
        &mut self,
        root: &Value,
        pointer: &str,
    ) -> Option<T> {
        let Some(v) = root.pointer(pointer) else {
            return Some(T::default());
        };
        if v.is_null() {
            return Some(T::default());
        }
        let mut v = prune(v.clone());
        for _ in 0..64 {
            let e = match serde_path_to_error::deserialize::<_, T>(v.clone()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let mut path = String::new();
            let mut unknown_parent = String::new();
            for seg in e.path().iter() {
                use serde_path_to_error::Segment;
                unknown_parent = path.clone();
                match seg {
                    Segment::Seq { index } => path.push_str(&format!("/{index}")),
                    Segment::Map { key } => {
                        path.push('/');
                        path.push_str(&yaml::escape_pointer(key));
                    }
                    Segment::Enum { variant } => {
                        path.push('/');
                        path.push_str(variant);
                    }
                    Segment::Unknown => {}
                }
            }
            let inner = e.into_inner().to_string();
            let Some(field) = unknown_field(&inner) else {
                let full = format!("{pointer}{path}");
                let help = if inner.contains("expected a string")
                    && !inner.contains("invalid type: string")
                {
                    "this field is a string: quote the value (YAML reads 1.31 or true as a number or a boolean)".to_string()
                } else {
                    "fix the value's type or format (see the Cluster API reference for this field)"
                        .to_string()
                };
                self.error(
                    &full,
                    format!(
                        "{}: invalid value at {}: {inner}",
                        self.what,
                        pointer_to_dotted(&full)
                    ),
                    help,
                );
                return None;
            };
            let expected = inner
                .split_once(", expected ")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default();
            let suggestion = suggest(&field, &expected);
            let rel = format!("{unknown_parent}/{}", yaml::escape_pointer(&field));
            let at = format!("{pointer}{rel}");
            let at = if self.origin.spans.contains_key(&at) {
                at
            } else {
                format!("{pointer}{path}")
            };
            let mut help = match suggestion {
                Some(s) => format!("did you mean `{s}`? "),
                None => String::new(),
            };
            if !expected.is_empty() {
                help.push_str(&format!("valid fields here: {expected}"));
            }
            self.error(
                &at,
                format!(
                    "{}: unknown field `{field}` in {}",
                    self.what,
                    pointer_to_dotted(&format!("{pointer}{unknown_parent}"))
                ),
                help,
            );
            // Drop the unknown field and keep checking the rest.
            let removed = match v.pointer_mut(&unknown_parent) {
                Some(Value::Object(m)) => m.remove(&field).is_some(),
                _ => false,
            };
            if !removed {
                return None;
            }
        }
        None
    }
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Closest valid field name by edit distance, for "did you mean".
fn suggest(field: &str, expected: &str) -> Option<String> {
    let candidates = expected
        .split(", ")
        .map(|c| {
            c.trim_matches(|ch| ch == '`' || ch == ' ')
                .trim_start_matches("one of `")
        })
        .map(|c| c.trim_matches('`'))
        .filter(|c| !c.is_empty());
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        let d = edit_distance(&field.to_lowercase(), &c.to_lowercase());
        if d <= 3.max(field.len() / 4) && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, c.to_string()));
        }
    }
    best.map(|(_, c)| c)
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `/spec/template/spec/files/0/path` → `spec.template.spec.files[0].path`.
pub(crate) fn pointer_to_dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
    }
    if out.is_empty() {
        "the object".into()
    } else {
        out
    }
}

/// Go's `omitempty`: remove nulls, empty strings, empty lists and empty maps, so
/// a field written empty and a field left out mean the same thing. User data
/// maps (labels, annotations, selectors) and `taints` (where an explicit empty
/// list means "no taints") are kept as written.
/// Keys whose empty object means "enabled, with defaults" (CAPO).
const PRESENCE_ONLY: &[&str] = &[
    "apiServerLoadBalancer",
    "managedSecurityGroups",
    "managedLoadBalancer",
];

pub(crate) fn prune(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let keep_as_is = matches!(
                    k.as_str(),
                    "labels" | "annotations" | "matchLabels" | "featureGates"
                );
                if k == "taints" {
                    if let Value::Array(items) = v {
                        out.insert(k, Value::Array(items.into_iter().map(prune).collect()));
                        continue;
                    }
                }
                let v = if keep_as_is { v } else { prune(v) };
                let empty = match &v {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    // CAPO's presence-only objects (`apiServerLoadBalancer: {}`
                    // enables the load balancer) keep their meaning when empty.
                    Value::Object(o) => {
                        o.is_empty() && !keep_as_is && !PRESENCE_ONLY.contains(&k.as_str())
                    }
                    _ => false,
                };
                if !empty {
                    out.insert(k, v);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(prune).collect()),
        other => other,
    }
}

/// Parse one YAML document into an object. Returns `None` (with problems or a
/// warning recorded) when the document is not a usable object.
/// What a document turned out to be.
pub(crate) enum Parsed {
    Object(Box<Object>),
    /// A known kind whose body has errors (already reported): other objects
    /// may still refer to it without a second, misleading error.
    Broken(ObjectKey),
    /// Ignored (warning) or not an object at all (error reported).
    Skip,
}

pub(crate) fn parse_document(
    file_index: usize,
    file: &str,
    doc: &Document,
    problems: &mut Vec<Problem>,
) -> Parsed {
    parse_document_inner(file_index, file, doc, problems)
}

fn parse_document_inner(
    file_index: usize,
    file: &str,
    doc: &Document,
    problems: &mut Vec<Problem>,
) -> Parsed {
    let mut spans = SpanMap::new();
    let root = yaml::to_json(&doc.root, &mut spans);
    let origin = Origin {
        file: file_index,
        pos: doc.pos,
        spans: Arc::new(spans),
    };

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

    let mut ctx = DocCtx {
        file_index,
        file,
        origin: origin.clone(),
        problems,
        what: "object".into(),
    };

    if !root.is_object() {
        ctx.error(
            "",
            "a manifest document must be a mapping with apiVersion, kind and metadata",
            "remove the stray document or fix its indentation",
        );
        return Parsed::Skip;
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
        return Parsed::Skip;
    }
    let name = root
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (group, version) = match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };

    if kind_str == "ClusterClass"
        || kind_str.ends_with("ClusterTemplate")
        || kind_str == "KubeadmControlPlaneTemplate"
    {
        ctx.error(
            "/kind",
            format!("{kind_str} {name:?}: ClusterClass and managed topologies are not supported yet"),
            "write the Cluster's objects out explicitly (Cluster, KubeadmControlPlane, MachineDeployment, templates) instead of using a ClusterClass",
        );
        return Parsed::Skip;
    }
    let Some(kind) = Kind::parse(kind_str) else {
        ctx.warning(
            "/kind",
            format!(
                "{kind_str} {name:?} ({api_version}) is not a kind capi manages; it is ignored"
            ),
            "remove it from the manifests passed to capi, or ignore this warning",
        );
        return Parsed::Skip;
    };
    ctx.what = format!("{kind} {name:?}");
    if group != kind.group() {
        ctx.error(
            "/apiVersion",
            format!("{kind} {name:?}: apiVersion {api_version:?} has the wrong group"),
            format!("{kind} belongs to the API group {:?}", kind.group()),
        );
        return Parsed::Skip;
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
        return Parsed::Skip;
    }
    let api_gen = match version {
        "v1beta1" => ApiGen::V1beta1,
        "v1beta2" => ApiGen::V1beta2,
        _ => ApiGen::V1,
    };
    if name.is_empty() {
        ctx.error(
            "/metadata",
            format!("{kind} has no metadata.name"),
            "give the object a name under metadata.name",
        );
        return Parsed::Skip;
    }
    if let Err(why) = check_dns_name(&name) {
        ctx.error("/metadata/name", format!("{kind} name {name:?} is invalid: {why}"), "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit (at most 253 characters)");
    }
    let namespace = root
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    let meta: raw::RawMeta = ctx.typed(&root, "/metadata").unwrap_or_default();

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

    let key = ObjectKey {
        kind,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let Some(body) = parse_body(&mut ctx, kind, api_gen, &root, &name, &meta) else {
        return Parsed::Broken(key);
    };
    Parsed::Object(Box::new(Object {
        key: ObjectKey {
            kind,
            namespace,
            name,
        },
        api_version: api_version.to_string(),
        api_gen,
        labels: meta.labels,
        annotations: meta.annotations,
        origin,
        body,
    }))
}

fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("it contains characters other than lower-case letters, digits, '-' and '.'");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
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

fn machine_template(
    ctx: &mut DocCtx<'_>,
    t: raw::MachineTemplateSpec,
    base: &str,
    api_gen: ApiGen,
) -> MachineTemplate {
    let spec = t.spec;
    check_ref_style(
        ctx,
        &spec.bootstrap.config_ref,
        &format!("{base}/spec/bootstrap/configRef"),
        api_gen,
    );
    check_ref_style(
        ctx,
        &spec.infrastructure_ref,
        &format!("{base}/spec/infrastructureRef"),
        api_gen,
    );
    let meta = t.metadata.unwrap_or_default();
    MachineTemplate {
        cluster_name: spec.cluster_name,
        version: spec.version.as_deref().map(parse_version),
        bootstrap_ref: to_ref(
            spec.bootstrap.config_ref,
            &format!("{base}/spec/bootstrap/configRef"),
        ),
        data_secret_name: spec.bootstrap.data_secret_name,
        infrastructure_ref: to_ref(
            spec.infrastructure_ref,
            &format!("{base}/spec/infrastructureRef"),
        ),
        failure_domain: spec.failure_domain,
        labels: meta.labels,
        annotations: meta.annotations,
    }
}

fn deletion_order(ctx: &mut DocCtx<'_>, s: Option<String>, path: &str) -> DeletionOrder {
    match s.as_deref() {
        None | Some("Random") => DeletionOrder::Random,
        Some("Newest") => DeletionOrder::Newest,
        Some("Oldest") => DeletionOrder::Oldest,
        Some(other) => {
            ctx.error(
                path,
                format!("{}: unknown deletion order {other:?}", ctx.what),
                "use one of Random, Newest, Oldest",
            );
            DeletionOrder::Random
        }
    }
}

fn normalize_kubeadm(mut s: raw::KubeadmConfigSpec) -> raw::KubeadmConfigSpec {
    if s.format.as_deref() == Some("cloud-config") {
        s.format = None;
    }
    for f in &mut s.files {
        if f.permissions.as_deref() == Some("0644") {
            f.permissions = None;
        }
        if f.owner.as_deref() == Some("root:root") {
            f.owner = None;
        }
        if f.append == Some(false) {
            f.append = None;
        }
        if f.content_format.as_deref() == Some("Raw") {
            f.content_format = None;
        }
    }
    if let Some(cc) = &mut s.cluster_configuration {
        // v1beta1 → v1beta2: the control-plane health-check timeout moved.
        if let Some(t) = cc
            .api_server
            .as_mut()
            .and_then(|a| a.timeout_for_control_plane.take())
        {
            if let Some(secs) = go_duration_seconds(&t) {
                let init = s.init_configuration.get_or_insert_with(Default::default);
                let timeouts = init.timeouts.get_or_insert_with(Default::default);
                timeouts
                    .control_plane_component_health_check_seconds
                    .get_or_insert(secs as i64);
            }
        }
        if cc
            .api_server
            .as_ref()
            .is_some_and(|a| *a == raw::ApiServer::default())
        {
            cc.api_server = None;
        }
        if *cc == raw::ClusterConfiguration::default() {
            s.cluster_configuration = None;
        }
    }
    if let Some(j) = &mut s.join_configuration {
        if let Some(t) = j.discovery.as_mut().and_then(|d| d.timeout.take()) {
            if let Some(secs) = go_duration_seconds(&t) {
                j.timeouts
                    .get_or_insert_with(Default::default)
                    .discovery_seconds
                    .get_or_insert(secs as i64);
            }
        }
        if j.discovery
            .as_ref()
            .is_some_and(|d| *d == raw::Discovery::default())
        {
            j.discovery = None;
        }
    }
    if s.init_configuration
        .as_ref()
        .is_some_and(|i| *i == raw::InitConfiguration::default())
    {
        s.init_configuration = None;
    }
    if s.join_configuration
        .as_ref()
        .is_some_and(|j| *j == raw::JoinConfiguration::default())
    {
        s.join_configuration = None;
    }
    s
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

fn parse_body(
    ctx: &mut DocCtx<'_>,
    kind: Kind,
    api_gen: ApiGen,
    root: &Value,
    name: &str,
    _meta: &raw::RawMeta,
) -> Option<Body> {
    Some(match kind {
        Kind::Cluster => {
            let spec: raw::ClusterSpec = ctx.typed(root, "/spec")?;
            if spec.topology.is_some() {
                ctx.error(
                    "/spec/topology",
                    format!("Cluster {name:?}: spec.topology (ClusterClass) is not supported yet"),
                    "remove spec.topology and write the control plane, MachineDeployments and templates out explicitly",
                );
                return None;
            }
            check_ref_style(
                ctx,
                &spec.control_plane_ref,
                "/spec/controlPlaneRef",
                api_gen,
            );
            check_ref_style(
                ctx,
                &spec.infrastructure_ref,
                "/spec/infrastructureRef",
                api_gen,
            );
            let net = spec.cluster_network.unwrap_or_default();
            let port = net.api_server_port.unwrap_or(6443);
            if !(1..=65535).contains(&port) {
                ctx.error(
                    "/spec/clusterNetwork/apiServerPort",
                    format!("Cluster {name:?}: apiServerPort {port} is not a TCP port"),
                    "use a port between 1 and 65535 (default 6443)",
                );
            }
            let services = net
                .services
                .map(|s| s.cidr_blocks)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| vec!["10.96.0.0/12".to_string()]);
            Body::Cluster(Cluster {
                network: ClusterNetwork {
                    api_server_port: port.clamp(1, 65535) as u16,
                    services,
                    pods: net.pods.map(|p| p.cidr_blocks).unwrap_or_default(),
                    service_domain: net.service_domain.unwrap_or_else(|| "cluster.local".into()),
                },
                control_plane_endpoint: spec.control_plane_endpoint.filter(|e| !e.host.is_empty()),
                control_plane_ref: to_ref(spec.control_plane_ref, "/spec/controlPlaneRef"),
                infrastructure_ref: to_ref(spec.infrastructure_ref, "/spec/infrastructureRef"),
                paused: spec.paused.unwrap_or(false),
            })
        }
        Kind::KubeadmControlPlane => {
            let spec: raw::KcpSpec = ctx.typed(root, "/spec")?;
            let (infra, infra_path) = match (
                spec.machine_template
                    .spec
                    .as_ref()
                    .and_then(|s| s.infrastructure_ref.clone()),
                spec.machine_template.infrastructure_ref.clone(),
            ) {
                (Some(r), _) => (Some(r), "/spec/machineTemplate/spec/infrastructureRef"),
                (None, Some(r)) => (Some(r), "/spec/machineTemplate/infrastructureRef"),
                (None, None) => (None, "/spec/machineTemplate"),
            };
            check_ref_style(ctx, &infra, infra_path, api_gen);
            if infra.is_none() {
                ctx.error(infra_path, format!("KubeadmControlPlane {name:?} has no machine template infrastructureRef"), "set spec.machineTemplate.spec.infrastructureRef (v1beta2) or spec.machineTemplate.infrastructureRef (v1beta1) to the machine template of the control plane");
            }
            let strategy = spec
                .rollout
                .as_ref()
                .and_then(|r| r.strategy.clone())
                .or(spec.rollout_strategy.clone());
            if let Some(t) = strategy.as_ref().and_then(|s| s.kind.as_deref()) {
                if t != "RollingUpdate" {
                    ctx.error(
                        "/spec",
                        format!(
                            "KubeadmControlPlane {name:?}: rollout strategy {t:?} is not supported"
                        ),
                        "KubeadmControlPlane only supports RollingUpdate",
                    );
                }
            }
            if spec.version.is_empty() {
                ctx.error(
                    "/spec",
                    format!("KubeadmControlPlane {name:?} has no spec.version"),
                    "set spec.version to the Kubernetes version, e.g. v1.31.2",
                );
            }
            let meta = spec.machine_template.metadata.clone().unwrap_or_default();
            Body::KubeadmControlPlane(KubeadmControlPlane {
                replicas: spec.replicas.unwrap_or(1),
                version: parse_version(&spec.version),
                infrastructure_ref: to_ref(infra, infra_path),
                kubeadm_config_spec: normalize_kubeadm(spec.kubeadm_config_spec),
                max_surge: Some(
                    strategy
                        .and_then(|s| s.rolling_update)
                        .and_then(|r| r.max_surge)
                        .unwrap_or(IntOrPercent::Int(1)),
                ),
                rollout_after: spec.rollout.and_then(|r| r.after).or(spec.rollout_after),
                machine_labels: meta.labels,
                machine_annotations: meta.annotations,
            })
        }
        Kind::MachineDeployment => {
            let spec: raw::MachineDeploymentSpec = ctx.typed(root, "/spec")?;
            let strategy = spec
                .rollout
                .as_ref()
                .and_then(|r| r.strategy.clone())
                .or(spec.strategy.clone())
                .unwrap_or_default();
            let ru = strategy.rolling_update.clone().unwrap_or_default();
            let strategy_kind = match strategy.kind.as_deref() {
                None | Some("RollingUpdate") => Strategy::RollingUpdate {
                    max_surge: ru.max_surge.unwrap_or(IntOrPercent::Int(1)),
                    max_unavailable: ru.max_unavailable.unwrap_or(IntOrPercent::Int(0)),
                },
                Some("OnDelete") => Strategy::OnDelete,
                Some(other) => {
                    ctx.error(
                        "/spec",
                        format!("MachineDeployment {name:?}: unknown rollout strategy {other:?}"),
                        "use RollingUpdate or OnDelete",
                    );
                    Strategy::OnDelete
                }
            };
            let order_path = if spec.deletion.is_some() {
                "/spec/deletion/order"
            } else {
                "/spec/strategy/rollingUpdate/deletePolicy"
            };
            let order = deletion_order(
                ctx,
                spec.deletion.and_then(|d| d.order).or(ru.delete_policy),
                order_path,
            );
            Body::MachineDeployment(MachineDeployment {
                cluster_name: spec.cluster_name,
                replicas: spec.replicas.unwrap_or(1),
                template: machine_template(ctx, spec.template, "/spec/template", api_gen),
                strategy: strategy_kind,
                deletion_order: order,
                rollout_after: spec.rollout.and_then(|r| r.after).or(spec.rollout_after),
                paused: spec.paused.unwrap_or(false),
            })
        }
        Kind::MachineSet => {
            let spec: raw::MachineSetSpec = ctx.typed(root, "/spec")?;
            let order = deletion_order(
                ctx,
                spec.deletion.and_then(|d| d.order).or(spec.delete_policy),
                "/spec",
            );
            Body::MachineSet(MachineSet {
                cluster_name: spec.cluster_name,
                replicas: spec.replicas.unwrap_or(1),
                template: machine_template(ctx, spec.template, "/spec/template", api_gen),
                deletion_order: order,
            })
        }
        Kind::Machine => {
            let spec: raw::MachineSpec = ctx.typed(root, "/spec")?;
            let meta: raw::RawMeta = ctx.typed(root, "/metadata").unwrap_or_default();
            let control_plane = meta.labels.contains_key("cluster.x-k8s.io/control-plane");
            let t = raw::MachineTemplateSpec {
                metadata: Some(meta),
                spec,
            };
            let mut template = machine_template(ctx, t, "", api_gen);
            // A Machine's own paths are under /spec, not /spec/template/spec.
            if let Some(r) = &mut template.bootstrap_ref {
                r.path = "/spec/bootstrap/configRef".into();
            }
            if let Some(r) = &mut template.infrastructure_ref {
                r.path = "/spec/infrastructureRef".into();
            }
            Body::Machine(Machine {
                template,
                control_plane,
            })
        }
        Kind::KubeadmConfig => {
            let spec: raw::KubeadmConfigSpec = ctx.typed(root, "/spec")?;
            Body::KubeadmConfig(normalize_kubeadm(spec))
        }
        Kind::KubeadmConfigTemplate => {
            let spec: raw::KubeadmConfigTemplateSpec = ctx.typed(root, "/spec")?;
            Body::KubeadmConfigTemplate(normalize_kubeadm(spec.template.spec))
        }
        Kind::DockerCluster => {
            let spec: raw::DockerClusterSpec = ctx.typed(root, "/spec")?;
            Body::InfraCluster(InfraCluster::Docker(spec))
        }
        Kind::DevCluster => {
            let spec: raw::DevClusterSpec = ctx.typed(root, "/spec")?;
            match (spec.backend.docker, spec.backend.in_memory) {
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
            }
        }
        Kind::DockerMachineTemplate => {
            let spec: raw::DockerMachineTemplateSpec = ctx.typed(root, "/spec")?;
            Body::InfraMachineTemplate(InfraMachine::Docker(normalize_docker_machine(
                spec.template.spec,
            )))
        }
        Kind::DockerMachine => {
            let spec: raw::DockerMachineSpec = ctx.typed(root, "/spec")?;
            Body::InfraMachine(InfraMachine::Docker(normalize_docker_machine(spec)))
        }
        Kind::DevMachineTemplate | Kind::DevMachine => {
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
                (None, None) if backend_present("inMemory") => {
                    InfraMachine::InMemory(Default::default())
                }
                (None, None) if backend_present("docker") => {
                    InfraMachine::Docker(Default::default())
                }
                _ => {
                    ctx.error(
                        base,
                        format!("{kind} {name:?} must set exactly one backend"),
                        "set backend.docker or backend.inMemory",
                    );
                    return None;
                }
            };
            if kind == Kind::DevMachineTemplate {
                Body::InfraMachineTemplate(infra)
            } else {
                Body::InfraMachine(infra)
            }
        }
        Kind::OpenStackCluster => {
            let spec = root
                .get("spec")
                .cloned()
                .map(prune)
                .unwrap_or(Value::Object(Default::default()));
            Body::InfraCluster(InfraCluster::OpenStack(spec))
        }
        Kind::OpenStackMachineTemplate => {
            let spec = root
                .pointer("/spec/template/spec")
                .cloned()
                .map(prune)
                .unwrap_or(Value::Object(Default::default()));
            Body::InfraMachineTemplate(InfraMachine::OpenStack(spec))
        }
        Kind::MachineHealthCheck => {
            let spec: raw::MachineHealthCheckSpec = ctx.typed(root, "/spec")?;
            parse_mhc(ctx, spec, name)?
        }
        Kind::Secret => {
            let mut data = BTreeMap::new();
            if let Some(Value::Object(m)) = root.get("data") {
                for (k, v) in m {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    let cleaned: String = s.split_whitespace().collect();
                    match base64::engine::general_purpose::STANDARD.decode(cleaned.as_bytes()) {
                        Ok(bytes) => {
                            data.insert(k.clone(), bytes);
                        }
                        Err(e) => ctx.error(
                            &format!("/data/{}", yaml::escape_pointer(k)),
                            format!("Secret {name:?}: data key {k:?} is not valid base64 ({e})"),
                            "Secret `data` values must be base64; put plain text under `stringData` instead",
                        ),
                    }
                }
            }
            if let Some(Value::Object(m)) = root.get("stringData") {
                for (k, v) in m {
                    let s = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    data.insert(k.clone(), s.into_bytes());
                }
            }
            Body::Secret(data)
        }
        Kind::ConfigMap => {
            let mut data = BTreeMap::new();
            if let Some(Value::Object(m)) = root.get("data") {
                for (k, v) in m {
                    data.insert(
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    );
                }
            }
            Body::ConfigMap(data)
        }
    })
}

fn parse_mhc(ctx: &mut DocCtx<'_>, spec: raw::MachineHealthCheckSpec, name: &str) -> Option<Body> {
    let selector = spec
        .selector
        .as_ref()
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let conv = |c: &raw::UnhealthyCondition| HealthCondition {
        kind: c.kind.clone(),
        status: c.status.clone(),
        timeout_seconds: c
            .timeout_seconds
            .or_else(|| {
                c.timeout
                    .as_deref()
                    .and_then(go_duration_seconds)
                    .map(|s| s as i64)
            })
            .unwrap_or(0),
    };
    let checks = spec.checks.unwrap_or_default();
    let node_conditions = checks
        .unhealthy_node_conditions
        .or(spec.unhealthy_conditions)
        .unwrap_or_default();
    let machine_conditions = checks
        .unhealthy_machine_conditions
        .or(spec.unhealthy_machine_conditions)
        .unwrap_or_default();
    let startup = checks
        .node_startup_timeout_seconds
        .or_else(|| {
            spec.node_startup_timeout
                .as_deref()
                .and_then(go_duration_seconds)
                .map(|s| s as i64)
        })
        .unwrap_or(600);
    let trigger = spec
        .remediation
        .and_then(|r| r.trigger_if)
        .unwrap_or_default();
    let trigger_if = if let Some(v) = trigger
        .unhealthy_less_than_or_equal_to
        .or(spec.max_unhealthy)
    {
        TriggerIf::AtMost(v)
    } else if let Some(r) = trigger.unhealthy_in_range.or(spec.unhealthy_range) {
        match parse_range(&r) {
            Some((a, b)) => TriggerIf::InRange(a, b),
            None => {
                ctx.error(
                    "/spec",
                    format!("MachineHealthCheck {name:?}: unhealthy range {r:?} is malformed"),
                    "write the range as \"[min-max]\", e.g. \"[1-3]\"",
                );
                TriggerIf::Always
            }
        }
    } else {
        TriggerIf::Always
    };
    Some(Body::MachineHealthCheck(MachineHealthCheck {
        cluster_name: spec.cluster_name,
        selector,
        node_startup_timeout_seconds: startup,
        unhealthy_node_conditions: node_conditions.iter().map(conv).collect(),
        unhealthy_machine_conditions: machine_conditions.iter().map(conv).collect(),
        trigger_if,
    }))
}

fn parse_range(r: &str) -> Option<(u32, u32)> {
    let inner = r.trim().strip_prefix('[')?.strip_suffix(']')?;
    let (a, b) = inner.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {}

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
