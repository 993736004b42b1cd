//! The vocabulary shared by every floor (manifests, desired state, planner,
//! state, providers, CLI): resource addresses, kinds, the desired
//! specification of each kind, and what refresh observes. Everything here is
//! plain data: serialisable, comparable, no I/O, and it imports nothing else
//! of the crate.

mod address;
mod observation;
mod observed;
mod shared;
mod spec_de;
mod target;
mod topology_note;
mod version;

pub(crate) use address::{Address, ClusterId, DEFAULT_NAMESPACE};
pub(crate) use observation::{AttributeChange, DriftEntry, DriftKind, Observation};
pub use observed::Observed;
pub use shared::Shared;
pub(crate) use target::parse_group;
pub use target::Target;
pub(crate) use topology_note::TopologyNote;
pub(crate) use version::Version;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds of resources `capi` manages.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// The cluster's certificate authorities and service-account key (local).
    Pki,
    /// The infrastructure network.
    Network,
    /// The control-plane endpoint.
    Loadbalancer,
    /// The kubeadm bootstrap token used by joining machines.
    Token,
    /// One machine's rendered bootstrap data (local).
    Bootstrap,
    /// One machine.
    Machine,
}

impl ResourceKind {
    pub(crate) const ALL: [ResourceKind; 6] = [
        ResourceKind::Pki,
        ResourceKind::Network,
        ResourceKind::Loadbalancer,
        ResourceKind::Token,
        ResourceKind::Bootstrap,
        ResourceKind::Machine,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Pki => "pki",
            ResourceKind::Network => "network",
            ResourceKind::Loadbalancer => "loadbalancer",
            ResourceKind::Token => "token",
            ResourceKind::Bootstrap => "bootstrap",
            ResourceKind::Machine => "machine",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<ResourceKind> {
        ResourceKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub(crate) fn is_named(self) -> bool {
        matches!(self, ResourceKind::Bootstrap | ResourceKind::Machine)
    }

    /// Resources `capi` computes itself, without a provider call.
    pub(crate) fn is_local(self) -> bool {
        matches!(self, ResourceKind::Pki | ResourceKind::Bootstrap)
    }
}

/// Which provider executes a resource's operations.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Computed by `capi` itself (certificates, bootstrap data).
    Local,
    /// The embedded simulated infrastructure.
    Sim,
    Docker,
    Openstack,
}

impl ProviderKind {
    /// Whether its provider reads ahead for a refresh
    /// (`Provider::read_ahead`): the simulator, whose refresh parses a file
    /// per cluster. The real providers ask their APIs when refreshing.
    pub(crate) fn reads_ahead(self) -> bool {
        self == ProviderKind::Sim
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Sim => "sim",
            ProviderKind::Docker => "docker",
            ProviderKind::Openstack => "openstack",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

/// What a machine belongs to.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Owner {
    pub kind: OwnerKind,
    // Shared: every machine of a group names it.
    #[schemars(with = "String")]
    pub(crate) name: Shared<String>,
}

/// The Cluster API kinds that own machines. Declared in the order of their
/// names, so owners sort as their text does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum OwnerKind {
    KubeadmControlPlane,
    Machine,
    MachineDeployment,
    MachineSet,
}

impl OwnerKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OwnerKind::KubeadmControlPlane => "KubeadmControlPlane",
            OwnerKind::Machine => "Machine",
            OwnerKind::MachineDeployment => "MachineDeployment",
            OwnerKind::MachineSet => "MachineSet",
        }
    }
}

impl fmt::Display for OwnerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Which of CABPK's three renderings a bootstrap document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum BootstrapRole {
    /// The first control-plane machine: `kubeadm init`.
    Init,
    /// Further control-plane machines: `kubeadm join --control-plane`.
    JoinControlPlane,
    /// Workers: `kubeadm join`.
    JoinWorker,
}

impl BootstrapRole {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BootstrapRole::Init => "init",
            BootstrapRole::JoinControlPlane => "join-control-plane",
            BootstrapRole::JoinWorker => "join-worker",
        }
    }
}

/// Provider-specific infrastructure settings, as normalised from the manifest's
/// infrastructure objects. The `--provider sim` override keeps them (so a plan
/// rehearsed on the simulator shows the same settings) but runs them on the
/// simulator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InfraSpec {
    /// `DockerCluster`, `DevCluster`, `OpenStackCluster`, `DockerMachineTemplate`, ...
    pub(crate) kind: String,
    /// The object's name.
    pub(crate) name: String,
    pub(crate) backend: Backend,
    /// The normalised spec.
    #[schemars(with = "Value")]
    pub(crate) spec: Value,
    /// `capi.x-k8s.io/*` annotations of the infrastructure object: settings
    /// capi adds to the upstream kinds (e.g. `capi.x-k8s.io/docker-privileged`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) options: BTreeMap<String, String>,
}

/// Which infrastructure an [`InfraSpec`] describes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Backend {
    /// Containers on a Docker Engine (`DockerCluster`, `DevCluster` with `backend.docker`).
    Docker,
    /// Cluster API's in-memory backend (`DevCluster` with `backend.inMemory`): the simulator.
    InMemory,
    /// OpenStack (`OpenStackCluster`).
    Openstack,
}

impl Backend {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Backend::Docker => "docker",
            Backend::InMemory => "inMemory",
            Backend::Openstack => "openstack",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Certificate authorities and service-account key of a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PkiSpec {
    /// `RSA-2048` (default), `RSA-3072`, `RSA-4096`, `ECDSA-P256`, `ECDSA-P384`.
    pub(crate) encryption_algorithm: String,
    pub(crate) ca_validity_days: u32,
    /// With external etcd, no etcd CA is generated.
    pub(crate) external_etcd: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// The network's name at the provider (`kind` for Docker).
    pub(crate) name: String,
    pub(crate) infra: InfraSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    /// The API server port behind the endpoint.
    pub(crate) port: u16,
    /// An endpoint the manifests fix in advance (`Cluster.spec.controlPlaneEndpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fixed_endpoint: Option<String>,
    pub(crate) infra: InfraSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSpec {
    pub(crate) ttl_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    pub(crate) machine: String,
    pub(crate) role: BootstrapRole,
    /// `kubeadm.k8s.io/v1beta3` or `v1beta4`.
    #[schemars(with = "String")]
    pub(crate) kubeadm_api: Shared<String>,
    /// SHA-256 of the rendered document, with secrets and values known only
    /// after apply replaced by stable references (`<capi:...>`).
    // Shared: a group's machines get the same document.
    #[schemars(with = "String")]
    pub sha256: Shared<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    pub name: String,
    pub role: Role,
    pub owner: Owner,
    #[schemars(with = "String")]
    pub version: Version,
    /// What the machine was created from, hashed (version, infrastructure
    /// template and content, bootstrap template and content, failure domain).
    #[schemars(with = "String")]
    pub identity: Shared<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failure_domain: Option<String>,
    // Shared: the machines of a group hold the same settings and labels.
    #[schemars(with = "InfraSpec")]
    pub(crate) infra: Shared<InfraSpec>,
    /// `KubeadmConfigTemplate/<name>` or `KubeadmControlPlane/<name>`.
    #[schemars(with = "String")]
    pub(crate) bootstrap_template: Shared<String>,
    /// Machine labels and annotations: updated in place, never a replacement.
    #[serde(default, skip_serializing_if = "no_entries")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(crate) labels: Shared<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "no_entries")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub(crate) annotations: Shared<BTreeMap<String, String>>,
}

fn no_entries(map: &Shared<BTreeMap<String, String>>) -> bool {
    map.is_empty()
}

/// The desired specification of a resource (its "attributes" in state).
// Nearly every resource is a machine, so boxing the largest variant would
// add an allocation per resource and save no memory.
#[allow(clippy::large_enum_variant)]
// Deserialize: spec_de.rs (the same format, read without buffering).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Spec {
    Pki(PkiSpec),
    Network(NetworkSpec),
    Loadbalancer(LoadBalancerSpec),
    Token(TokenSpec),
    Bootstrap(BootstrapSpec),
    Machine(MachineSpec),
}

impl Spec {
    pub(crate) fn kind(&self) -> ResourceKind {
        match self {
            Spec::Pki(_) => ResourceKind::Pki,
            Spec::Network(_) => ResourceKind::Network,
            Spec::Loadbalancer(_) => ResourceKind::Loadbalancer,
            Spec::Token(_) => ResourceKind::Token,
            Spec::Bootstrap(_) => ResourceKind::Bootstrap,
            Spec::Machine(_) => ResourceKind::Machine,
        }
    }

    pub fn as_machine(&self) -> Option<&MachineSpec> {
        match self {
            Spec::Machine(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_bootstrap(&self) -> Option<&BootstrapSpec> {
        match self {
            Spec::Bootstrap(b) => Some(b),
            _ => None,
        }
    }

    /// Flatten to `path = value` pairs for attribute-level diffs.
    pub(crate) fn flatten(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        flatten_into("", &v, &mut out);
        out.remove("kind");
        out
    }
}

pub(crate) fn flatten_into(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_into(&p, val, out);
            }
        }
        Value::Array(items)
            if !items.is_empty() && items.iter().any(|i| i.is_object() || i.is_array()) =>
        {
            for (i, val) in items.iter().enumerate() {
                flatten_into(&format!("{prefix}[{i}]"), val, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// SHA-256 of a value's canonical JSON (object keys sorted), hex encoded.
pub(crate) fn hash_json(v: &impl Serialize) -> String {
    use sha2::{Digest, Sha256};
    let value = serde_json::to_value(v).expect("serialisable");
    let bytes = serde_json::to_vec(&value).expect("serialisable");
    hex::encode(Sha256::digest(&bytes))
}

/// A short, readable, lower-case base-36 rendering of a hex hash (for names).
pub(crate) fn short_hash(hex_hash: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = u64::from_str_radix(&hex_hash[..15.min(hex_hash.len())], 16).unwrap_or(0);
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hashes_are_stable() {
        let h = hash_json(&serde_json::json!({"a": 1}));
        assert_eq!(short_hash(&h, 5), short_hash(&h, 5));
        assert_eq!(short_hash(&h, 5).len(), 5);
    }
}
