//! The internal model: every supported kind, in both API generations,
//! normalised to one shape with defaults filled in. Two manifests that mean the
//! same thing (a default written out or left implicit, a v1beta1 map or a
//! v1beta2 list of extra args) produce equal models, so they never diff.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::raw;
use super::yaml::{Pos, SpanMap};
use crate::resource::Version;

/// The kinds `capi` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Kind {
    Cluster,
    KubeadmControlPlane,
    MachineDeployment,
    MachineSet,
    Machine,
    KubeadmConfig,
    KubeadmConfigTemplate,
    DockerCluster,
    DockerMachineTemplate,
    DockerMachine,
    DevCluster,
    DevMachineTemplate,
    DevMachine,
    OpenStackCluster,
    OpenStackMachineTemplate,
    MachineHealthCheck,
    Secret,
    ConfigMap,
}

impl Kind {
    /// Every kind capi reads.
    pub(crate) const ALL: &'static [Kind] = &[
        Kind::Cluster,
        Kind::KubeadmControlPlane,
        Kind::MachineDeployment,
        Kind::MachineSet,
        Kind::Machine,
        Kind::KubeadmConfig,
        Kind::KubeadmConfigTemplate,
        Kind::DockerCluster,
        Kind::DockerMachineTemplate,
        Kind::DockerMachine,
        Kind::DevCluster,
        Kind::DevMachineTemplate,
        Kind::DevMachine,
        Kind::OpenStackCluster,
        Kind::OpenStackMachineTemplate,
        Kind::MachineHealthCheck,
        Kind::Secret,
        Kind::ConfigMap,
    ];

    pub(crate) fn parse(kind: &str) -> Option<Kind> {
        Some(match kind {
            "Cluster" => Kind::Cluster,
            "KubeadmControlPlane" => Kind::KubeadmControlPlane,
            "MachineDeployment" => Kind::MachineDeployment,
            "MachineSet" => Kind::MachineSet,
            "Machine" => Kind::Machine,
            "KubeadmConfig" => Kind::KubeadmConfig,
            "KubeadmConfigTemplate" => Kind::KubeadmConfigTemplate,
            "DockerCluster" => Kind::DockerCluster,
            "DockerMachineTemplate" => Kind::DockerMachineTemplate,
            "DockerMachine" => Kind::DockerMachine,
            "DevCluster" => Kind::DevCluster,
            "DevMachineTemplate" => Kind::DevMachineTemplate,
            "DevMachine" => Kind::DevMachine,
            "OpenStackCluster" => Kind::OpenStackCluster,
            "OpenStackMachineTemplate" => Kind::OpenStackMachineTemplate,
            "MachineHealthCheck" => Kind::MachineHealthCheck,
            "Secret" => Kind::Secret,
            "ConfigMap" => Kind::ConfigMap,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::KubeadmControlPlane => "KubeadmControlPlane",
            Kind::MachineDeployment => "MachineDeployment",
            Kind::MachineSet => "MachineSet",
            Kind::Machine => "Machine",
            Kind::KubeadmConfig => "KubeadmConfig",
            Kind::KubeadmConfigTemplate => "KubeadmConfigTemplate",
            Kind::DockerCluster => "DockerCluster",
            Kind::DockerMachineTemplate => "DockerMachineTemplate",
            Kind::DockerMachine => "DockerMachine",
            Kind::DevCluster => "DevCluster",
            Kind::DevMachineTemplate => "DevMachineTemplate",
            Kind::DevMachine => "DevMachine",
            Kind::OpenStackCluster => "OpenStackCluster",
            Kind::OpenStackMachineTemplate => "OpenStackMachineTemplate",
            Kind::MachineHealthCheck => "MachineHealthCheck",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// The API group a kind belongs to (`""` for the core group).
    pub(crate) fn group(self) -> &'static str {
        match self {
            Kind::Cluster
            | Kind::MachineDeployment
            | Kind::MachineSet
            | Kind::Machine
            | Kind::MachineHealthCheck => "cluster.x-k8s.io",
            Kind::KubeadmControlPlane => "controlplane.cluster.x-k8s.io",
            Kind::KubeadmConfig | Kind::KubeadmConfigTemplate => "bootstrap.cluster.x-k8s.io",
            Kind::DockerCluster
            | Kind::DockerMachineTemplate
            | Kind::DockerMachine
            | Kind::DevCluster
            | Kind::DevMachineTemplate
            | Kind::DevMachine
            | Kind::OpenStackCluster
            | Kind::OpenStackMachineTemplate => "infrastructure.cluster.x-k8s.io",
            Kind::Secret | Kind::ConfigMap => "",
        }
    }

    /// API versions served for this kind.
    pub(crate) fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::Secret | Kind::ConfigMap => &["v1"],
            _ => &["v1beta1", "v1beta2"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which API generation an object was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ApiGen {
    V1beta1,
    V1beta2,
    V1,
}

/// (kind, namespace, name): unique within a manifest set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct ObjectKey {
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace == DEFAULT_NAMESPACE {
            write!(f, "{} {:?}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

pub(crate) use crate::resource::DEFAULT_NAMESPACE;

/// A reference from one object to another, in the referrer's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectRef {
    pub(crate) kind: String,
    pub(crate) name: String,
    /// JSON pointer of the reference inside the referring object (for errors).
    #[serde(skip)]
    pub(crate) path: String,
}

/// Kubernetes' IntOrString as used by `maxSurge`, `maxUnavailable`, `maxUnhealthy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntOrPercent {
    Int(i64),
    Percent(i64),
}

impl IntOrPercent {
    /// Resolve against a total. Percentages round up or down as Kubernetes does.
    pub(crate) fn resolve(self, total: u32, round_up: bool) -> i64 {
        match self {
            IntOrPercent::Int(i) => i,
            IntOrPercent::Percent(p) => {
                let num = p * total as i64;
                if round_up {
                    (num + 99).div_euclid(100)
                } else {
                    num.div_euclid(100)
                }
            }
        }
    }
}

impl fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrPercent::Int(i) => write!(f, "{i}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for IntOrPercent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrPercent::Int(i) => s.serialize_i64(*i),
            IntOrPercent::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Number(n) => n
                .as_i64()
                .map(IntOrPercent::Int)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not an integer"))),
            Value::String(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    p.parse::<i64>().map(IntOrPercent::Percent).map_err(|_| {
                        serde::de::Error::custom(format!("{s:?} is not a percentage like \"25%\""))
                    })
                } else {
                    Err(serde::de::Error::custom(format!(
                        "{s:?} is neither an integer nor a percentage like \"25%\""
                    )))
                }
            }
            other => Err(serde::de::Error::custom(format!(
                "expected an integer or a percentage, found {other}"
            ))),
        }
    }
}

/// Extra arguments: a `map[string]string` in v1beta1, `[{name, value}]` in
/// v1beta2. Normalised to a list; a map is sorted by key (as Go marshals it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Args(pub(crate) Vec<(String, String)>);

impl Args {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Args {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (n, v) in &self.0 {
            let mut m = BTreeMap::new();
            m.insert("name", n.as_str());
            m.insert("value", v.as_str());
            seq.serialize_element(&m)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let scalar = |v: &Value| -> Result<String, D::Error> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Null => Ok(String::new()),
                other => Err(serde::de::Error::custom(format!(
                    "argument value must be a string, found {other}"
                ))),
            }
        };
        match v {
            Value::Null => Ok(Args::default()),
            Value::Object(m) => {
                let mut out = Vec::new();
                for (k, val) in m {
                    out.push((k, scalar(&val)?));
                }
                out.sort();
                Ok(Args(out))
            }
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    let Value::Object(m) = item else {
                        return Err(serde::de::Error::custom(
                            "each argument must be {name: ..., value: ...}",
                        ));
                    };
                    for k in m.keys() {
                        if k != "name" && k != "value" {
                            return Err(serde::de::Error::custom(format!(
                                "unknown field `{k}` in an argument, expected `name` or `value`"
                            )));
                        }
                    }
                    let name = match m.get("name") {
                        Some(Value::String(s)) if !s.is_empty() => s.clone(),
                        _ => {
                            return Err(serde::de::Error::custom(
                                "an argument is missing its `name`",
                            ))
                        }
                    };
                    let value = scalar(m.get("value").unwrap_or(&Value::Null))?;
                    out.push((name, value));
                }
                Ok(Args(out))
            }
            other => Err(serde::de::Error::custom(format!(
                "expected a map (v1beta1) or a list of {{name, value}} (v1beta2), found {other}"
            ))),
        }
    }
}

// ------------------------------------------------------------- objects

/// One manifest file after variable substitution.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// As the user named it (`examples/sim/cluster.yaml`, `<stdin>`).
    pub(crate) name: String,
    /// The text that was parsed (after substitution): line numbers refer to it.
    pub(crate) text: Arc<str>,
    /// The file as written, when substitution changed it without adding
    /// lines (no value held a newline): error snippets quote this, line for
    /// line, and name the substituted value in their label.
    pub(crate) original: Option<Arc<str>>,
}

/// Where an object came from.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub(crate) file: usize,
    pub(crate) pos: Pos,
    pub(crate) spans: Arc<SpanMap>,
}

impl Origin {
    /// Position of the field at `pointer`, or of its nearest recorded ancestor.
    pub(crate) fn pos_of(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.spans.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.pos,
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Object {
    pub(crate) key: ObjectKey,
    #[allow(dead_code)] // kept for error messages that quote the written apiVersion
    pub(crate) api_version: String,
    pub(crate) api_gen: ApiGen,
    #[allow(dead_code)] // labels of the object itself; machines get their template's
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) origin: Origin,
    pub(crate) body: Body,
}

// Objects are built once per manifest document and kept whole; boxing the
// large kinds would add an allocation per object and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Cluster(Cluster),
    KubeadmControlPlane(KubeadmControlPlane),
    MachineDeployment(MachineDeployment),
    MachineSet(MachineSet),
    Machine(Machine),
    KubeadmConfig(raw::KubeadmConfigSpec),
    KubeadmConfigTemplate(raw::KubeadmConfigSpec),
    InfraCluster(InfraCluster),
    InfraMachineTemplate(InfraMachine),
    InfraMachine(InfraMachine),
    MachineHealthCheck(MachineHealthCheck),
    Secret(BTreeMap<String, Vec<u8>>),
    ConfigMap(#[allow(dead_code)] BTreeMap<String, String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ClusterNetwork {
    pub(crate) api_server_port: u16,
    pub(crate) services: Vec<String>,
    pub(crate) pods: Vec<String>,
    pub(crate) service_domain: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub(crate) network: ClusterNetwork,
    pub(crate) control_plane_endpoint: Option<raw::Endpoint>,
    pub(crate) control_plane_ref: Option<ObjectRef>,
    pub(crate) infrastructure_ref: Option<ObjectRef>,
    pub(crate) paused: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct KubeadmControlPlane {
    pub(crate) replicas: i64,
    pub(crate) version: Result<Version, String>,
    pub(crate) infrastructure_ref: Option<ObjectRef>,
    pub(crate) kubeadm_config_spec: raw::KubeadmConfigSpec,
    pub(crate) max_surge: Option<IntOrPercent>,
    pub(crate) rollout_after: Option<String>,
    pub(crate) machine_labels: BTreeMap<String, String>,
    pub(crate) machine_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum DeletionOrder {
    Random,
    Newest,
    Oldest,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Strategy {
    RollingUpdate {
        max_surge: IntOrPercent,
        max_unavailable: IntOrPercent,
    },
    OnDelete,
}

/// The machine template shared by MachineDeployment, MachineSet and Machine.
#[derive(Debug, Clone)]
pub(crate) struct MachineTemplate {
    pub(crate) cluster_name: String,
    pub(crate) version: Option<Result<Version, String>>,
    pub(crate) bootstrap_ref: Option<ObjectRef>,
    pub(crate) data_secret_name: Option<String>,
    pub(crate) infrastructure_ref: Option<ObjectRef>,
    pub(crate) failure_domain: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub(crate) struct MachineDeployment {
    pub(crate) cluster_name: String,
    pub(crate) replicas: i64,
    pub(crate) template: MachineTemplate,
    pub(crate) strategy: Strategy,
    pub(crate) deletion_order: DeletionOrder,
    pub(crate) rollout_after: Option<String>,
    pub(crate) paused: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct MachineSet {
    pub(crate) cluster_name: String,
    pub(crate) replicas: i64,
    pub(crate) template: MachineTemplate,
    pub(crate) deletion_order: DeletionOrder,
}

#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) template: MachineTemplate,
    pub(crate) control_plane: bool,
}

/// Infrastructure cluster kinds, normalised.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "backend", rename_all = "camelCase")]
pub(crate) enum InfraCluster {
    /// DockerCluster, or DevCluster with the `docker` backend.
    Docker(raw::DockerClusterSpec),
    /// DevCluster with the `inMemory` backend.
    InMemory,
    /// OpenStackCluster (spec kept as written; the provider interprets it).
    OpenStack(Value),
}

/// Infrastructure machine (template) specs, normalised.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "backend", rename_all = "camelCase")]
pub(crate) enum InfraMachine {
    Docker(raw::DockerMachineSpec),
    InMemory(raw::InMemoryMachineSpec),
    OpenStack(Value),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct HealthCondition {
    pub(crate) kind: String,
    pub(crate) status: String,
    pub(crate) timeout_seconds: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) enum TriggerIf {
    /// Remediate only while unhealthy machines ≤ this (int or percent of targets).
    AtMost(IntOrPercent),
    /// Remediate only while the unhealthy count is within `[min-max]`.
    InRange(u32, u32),
    Always,
}

#[derive(Debug, Clone)]
pub(crate) struct MachineHealthCheck {
    pub(crate) cluster_name: String,
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) node_startup_timeout_seconds: i64,
    // capi has no nodes to watch: a machine is unhealthy when refresh finds
    // it failed, missing or stopped. The conditions are parsed and kept.
    #[allow(dead_code)]
    pub(crate) unhealthy_node_conditions: Vec<HealthCondition>,
    #[allow(dead_code)]
    pub(crate) unhealthy_machine_conditions: Vec<HealthCondition>,
    pub(crate) trigger_if: TriggerIf,
}
