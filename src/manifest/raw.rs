//! Serde shapes of the Cluster API kinds `capi` reads, as written in manifests.
//!
//! Each struct accepts the union of the `v1beta1` and `v1beta2` field names of
//! its kind (the two generations mostly rename or move fields), and rejects
//! unknown fields so that a typo is an error with a line number instead of a
//! silently ignored setting. Fields `capi` accepts but does not act on are typed
//! `Option<Value>`; `normalize.rs` turns these shapes into the internal model.

// These shapes mirror the upstream API: a field capi accepts but does not
// act on is still parsed (so that a typo beside it is an error), and is
// never read.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{Args, IntOrPercent};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_group: Option<String>,
    #[serde(default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) namespace: Option<String>,
    #[serde(default, skip_serializing)]
    pub(crate) uid: Option<Value>,
    #[serde(default, skip_serializing)]
    pub(crate) resource_version: Option<Value>,
    #[serde(default, skip_serializing)]
    pub(crate) field_path: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawMeta {
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Endpoint {
    #[serde(default)]
    pub(crate) host: String,
    #[serde(default)]
    pub(crate) port: i64,
}

// ---------------------------------------------------------------- Cluster

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClusterSpec {
    pub(crate) paused: Option<bool>,
    pub(crate) cluster_network: Option<ClusterNetwork>,
    pub(crate) control_plane_endpoint: Option<Endpoint>,
    pub(crate) control_plane_ref: Option<RawRef>,
    pub(crate) infrastructure_ref: Option<RawRef>,
    pub(crate) topology: Option<Value>,
    pub(crate) availability_gates: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClusterNetwork {
    pub(crate) api_server_port: Option<i64>,
    pub(crate) services: Option<CidrBlocks>,
    pub(crate) pods: Option<CidrBlocks>,
    pub(crate) service_domain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CidrBlocks {
    #[serde(default)]
    pub(crate) cidr_blocks: Vec<String>,
}

// ---------------------------------------------------- KubeadmControlPlane

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KcpSpec {
    pub(crate) replicas: Option<i64>,
    #[serde(default)]
    pub(crate) version: String,
    #[serde(default)]
    pub(crate) machine_template: KcpMachineTemplate,
    #[serde(default)]
    pub(crate) kubeadm_config_spec: KubeadmConfigSpec,
    // v1beta2
    pub(crate) rollout: Option<KcpRollout>,
    pub(crate) remediation: Option<Value>,
    pub(crate) machine_naming: Option<Value>,
    // v1beta1
    pub(crate) rollout_strategy: Option<RolloutStrategy>,
    pub(crate) rollout_after: Option<String>,
    pub(crate) rollout_before: Option<Value>,
    pub(crate) remediation_strategy: Option<Value>,
    pub(crate) machine_naming_strategy: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KcpMachineTemplate {
    pub(crate) metadata: Option<RawMeta>,
    // v1beta2
    pub(crate) spec: Option<KcpMachineTemplateSpec>,
    // v1beta1
    pub(crate) infrastructure_ref: Option<RawRef>,
    pub(crate) node_drain_timeout: Option<Value>,
    pub(crate) node_volume_detach_timeout: Option<Value>,
    pub(crate) node_deletion_timeout: Option<Value>,
    pub(crate) readiness_gates: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KcpMachineTemplateSpec {
    pub(crate) infrastructure_ref: Option<RawRef>,
    pub(crate) readiness_gates: Option<Value>,
    pub(crate) deletion: Option<Value>,
    pub(crate) taints: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KcpRollout {
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<String>,
    pub(crate) strategy: Option<RolloutStrategy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RolloutStrategy {
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) rolling_update: Option<RollingUpdate>,
    // v1beta1 MachineDeployment only
    pub(crate) remediation: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RollingUpdate {
    pub(crate) max_surge: Option<IntOrPercent>,
    pub(crate) max_unavailable: Option<IntOrPercent>,
    // v1beta1 MachineDeployment
    pub(crate) delete_policy: Option<String>,
}

// ----------------------------------------- MachineDeployment / MachineSet / Machine

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MachineDeploymentSpec {
    #[serde(default)]
    pub(crate) cluster_name: String,
    pub(crate) replicas: Option<i64>,
    pub(crate) selector: Option<Value>,
    #[serde(default)]
    pub(crate) template: MachineTemplateSpec,
    // v1beta2
    pub(crate) rollout: Option<MdRollout>,
    pub(crate) deletion: Option<Deletion>,
    pub(crate) remediation: Option<Value>,
    pub(crate) machine_naming: Option<Value>,
    // v1beta1
    pub(crate) strategy: Option<RolloutStrategy>,
    pub(crate) rollout_after: Option<String>,
    pub(crate) min_ready_seconds: Option<Value>,
    pub(crate) revision_history_limit: Option<Value>,
    pub(crate) progress_deadline_seconds: Option<Value>,
    pub(crate) machine_naming_strategy: Option<Value>,
    pub(crate) paused: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MdRollout {
    pub(crate) after: Option<String>,
    pub(crate) strategy: Option<RolloutStrategy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Deletion {
    pub(crate) order: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MachineSetSpec {
    #[serde(default)]
    pub(crate) cluster_name: String,
    pub(crate) replicas: Option<i64>,
    pub(crate) selector: Option<Value>,
    #[serde(default)]
    pub(crate) template: MachineTemplateSpec,
    pub(crate) deletion: Option<Deletion>,
    pub(crate) delete_policy: Option<String>,
    pub(crate) machine_naming: Option<Value>,
    pub(crate) machine_naming_strategy: Option<Value>,
    pub(crate) min_ready_seconds: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MachineTemplateSpec {
    pub(crate) metadata: Option<RawMeta>,
    #[serde(default)]
    pub(crate) spec: MachineSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MachineSpec {
    #[serde(default)]
    pub(crate) cluster_name: String,
    #[serde(default)]
    pub(crate) bootstrap: MachineBootstrap,
    pub(crate) infrastructure_ref: Option<RawRef>,
    pub(crate) version: Option<String>,
    #[serde(rename = "providerID")]
    pub(crate) provider_id: Option<String>,
    pub(crate) failure_domain: Option<String>,
    pub(crate) min_ready_seconds: Option<Value>,
    pub(crate) readiness_gates: Option<Value>,
    pub(crate) deletion: Option<Value>,
    pub(crate) taints: Option<Value>,
    // v1beta1
    pub(crate) node_drain_timeout: Option<Value>,
    pub(crate) node_volume_detach_timeout: Option<Value>,
    pub(crate) node_deletion_timeout: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MachineBootstrap {
    pub(crate) config_ref: Option<RawRef>,
    pub(crate) data_secret_name: Option<String>,
}

// ---------------------------------------------------------- KubeadmConfig

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KubeadmConfigTemplateSpec {
    #[serde(default)]
    pub(crate) template: KubeadmConfigTemplateResource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KubeadmConfigTemplateResource {
    pub(crate) metadata: Option<RawMeta>,
    #[serde(default)]
    pub(crate) spec: KubeadmConfigSpec,
}

/// `KubeadmConfigSpec` of both generations. After `normalize()`, the v1beta1
/// spellings are folded into the v1beta2 ones, so two specs that mean the same
/// serialise (and hash) the same.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct KubeadmConfigSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cluster_configuration: Option<ClusterConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) init_configuration: Option<InitConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) join_configuration: Option<JoinConfiguration>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) files: Vec<File>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) boot_commands: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) pre_kubeadm_commands: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) post_kubeadm_commands: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) users: Vec<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ntp: Option<Ntp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) verbosity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) use_experimental_retry_join: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ignition: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) disk_setup: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mounts: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClusterConfiguration {
    // v1beta1 carries the kubeadm type meta and fields CABPK fills in itself.
    #[serde(default, skip_serializing)]
    pub(crate) api_version: Option<String>,
    #[serde(default, skip_serializing)]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kubernetes_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) networking: Option<Networking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) etcd: Option<Etcd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) control_plane_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_server: Option<ApiServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) controller_manager: Option<ControlPlaneComponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) scheduler: Option<ControlPlaneComponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dns: Option<ImageMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) certificates_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_repository: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) feature_gates: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) certificate_validity_period_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_certificate_validity_period_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) encryption_algorithm: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Networking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) service_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pod_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dns_domain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Etcd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) local: Option<LocalEtcd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) external: Option<ExternalEtcd>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LocalEtcd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub(crate) extra_args: Args,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra_envs: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) server_cert_s_a_ns: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) peer_cert_s_a_ns: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExternalEtcd {
    #[serde(default)]
    pub(crate) endpoints: Vec<String>,
    #[serde(default)]
    pub(crate) ca_file: String,
    #[serde(default)]
    pub(crate) cert_file: String,
    #[serde(default)]
    pub(crate) key_file: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ApiServer {
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub(crate) extra_args: Args,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra_volumes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra_envs: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "certSANs",
        deserialize_with = "null_as_default"
    )]
    pub(crate) cert_sans: Vec<String>,
    /// v1beta1 only; v1beta2 moved it to `initConfiguration.timeouts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout_for_control_plane: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ControlPlaneComponent {
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub(crate) extra_args: Args,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra_volumes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extra_envs: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ImageMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_tag: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InitConfiguration {
    #[serde(default, skip_serializing)]
    pub(crate) api_version: Option<String>,
    #[serde(default, skip_serializing)]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bootstrap_tokens: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node_registration: Option<NodeRegistration>,
    #[serde(
        default,
        rename = "localAPIEndpoint",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) local_api_endpoint: Option<ApiEndpoint>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) skip_phases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) patches: Option<Patches>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeouts: Option<Timeouts>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JoinConfiguration {
    #[serde(default, skip_serializing)]
    pub(crate) api_version: Option<String>,
    #[serde(default, skip_serializing)]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node_registration: Option<NodeRegistration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_cert_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) discovery: Option<Discovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) control_plane: Option<JoinControlPlane>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) skip_phases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) patches: Option<Patches>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeouts: Option<Timeouts>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NodeRegistration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cri_socket: Option<String>,
    /// `None` means "not set" (CABPK then adds its defaults); `Some([])` means
    /// explicitly no taints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) taints: Option<Vec<Taint>>,
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub(crate) kubelet_extra_args: Args,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) ignore_preflight_errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_pull_serial: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Taint {
    #[serde(default)]
    pub(crate) key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<String>,
    #[serde(default)]
    pub(crate) effect: String,
    #[serde(default, skip_serializing)]
    pub(crate) time_added: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ApiEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) advertise_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bind_port: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Patches {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) directory: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) control_plane_component_health_check_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kubelet_health_check_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kube_api_server_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) etcd_api_call_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) discovery_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_bootstrap_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Discovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bootstrap_token: Option<BootstrapTokenDiscovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_bootstrap_token: Option<String>,
    /// v1beta1 only (a duration); v1beta2 uses `timeouts.discoverySeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BootstrapTokenDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_server_endpoint: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) ca_cert_hashes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) unsafe_skip_c_a_verification: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JoinControlPlane {
    #[serde(
        default,
        rename = "localAPIEndpoint",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) local_api_endpoint: Option<ApiEndpoint>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct File {
    #[serde(default)]
    pub(crate) path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) permissions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) append: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) content_from: Option<ContentFrom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) content_format: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ContentFrom {
    #[serde(default)]
    pub(crate) secret: SecretKeyRef,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SecretKeyRef {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) key: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct User {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gecos: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) groups: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) home_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inactive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) passwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) passwd_from: Option<ContentFrom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) primary_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lock_password: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sudo: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Ntp {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) enabled: Option<bool>,
}

// ------------------------------------------------------- Docker / Dev kinds

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DockerClusterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) control_plane_endpoint: Option<Endpoint>,
    /// v1beta2: a list of `{name, controlPlane, attributes}`; v1beta1: a map
    /// from name to `{controlPlane, attributes}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) failure_domains: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) load_balancer: Option<DockerLoadBalancer>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DockerLoadBalancer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image_tag: Option<String>,
    #[serde(
        default,
        rename = "customHAProxyConfigTemplateRef",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) custom_haproxy_config_template_ref: Option<NameRef>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NameRef {
    #[serde(default)]
    pub(crate) name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DockerMachineTemplateSpec {
    #[serde(default)]
    pub(crate) template: DockerMachineTemplateResource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DockerMachineTemplateResource {
    pub(crate) metadata: Option<RawMeta>,
    #[serde(default)]
    pub(crate) spec: DockerMachineSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DockerMachineSpec {
    #[serde(default, rename = "providerID", skip_serializing)]
    pub(crate) provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) custom_image: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) pre_load_images: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub(crate) extra_mounts: Vec<Mount>,
    #[serde(default, skip_serializing)]
    pub(crate) bootstrapped: Option<bool>,
    /// v1beta1 Duration string (`5m`); default 3 minutes in CAPD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bootstrap_timeout: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bootstrap_timeout_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Mount {
    #[serde(default)]
    pub(crate) container_path: String,
    #[serde(default)]
    pub(crate) host_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) read_only: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DevClusterSpec {
    pub(crate) control_plane_endpoint: Option<Endpoint>,
    #[serde(default)]
    pub(crate) backend: DevClusterBackend,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DevClusterBackend {
    pub(crate) docker: Option<DockerClusterSpec>,
    pub(crate) in_memory: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DevMachineTemplateSpec {
    #[serde(default)]
    pub(crate) template: DevMachineTemplateResource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DevMachineTemplateResource {
    pub(crate) metadata: Option<RawMeta>,
    #[serde(default)]
    pub(crate) spec: DevMachineSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DevMachineSpec {
    #[serde(rename = "providerID")]
    pub(crate) provider_id: Option<String>,
    #[serde(default)]
    pub(crate) backend: DevMachineBackend,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DevMachineBackend {
    pub(crate) docker: Option<DockerMachineSpec>,
    pub(crate) in_memory: Option<InMemoryMachineSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InMemoryMachineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) vm: Option<InMemoryPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<InMemoryPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_server: Option<InMemoryPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) etcd: Option<InMemoryPhase>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InMemoryPhase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provisioning: Option<InMemoryProvisioning>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InMemoryProvisioning {
    /// A duration: `10s` (v1beta1 Duration) or seconds as a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) startup_duration: Option<Value>,
    /// A fraction (`"0.2"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) startup_jitter: Option<Value>,
}

// ------------------------------------------------------ MachineHealthCheck

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MachineHealthCheckSpec {
    #[serde(default)]
    pub(crate) cluster_name: String,
    pub(crate) selector: Option<Value>,
    // v1beta2
    pub(crate) checks: Option<MhcChecks>,
    pub(crate) remediation: Option<MhcRemediation>,
    // v1beta1
    pub(crate) unhealthy_conditions: Option<Vec<UnhealthyCondition>>,
    pub(crate) unhealthy_machine_conditions: Option<Vec<UnhealthyCondition>>,
    pub(crate) max_unhealthy: Option<IntOrPercent>,
    pub(crate) unhealthy_range: Option<String>,
    pub(crate) node_startup_timeout: Option<String>,
    pub(crate) remediation_template: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MhcChecks {
    pub(crate) node_startup_timeout_seconds: Option<i64>,
    pub(crate) unhealthy_node_conditions: Option<Vec<UnhealthyCondition>>,
    pub(crate) unhealthy_machine_conditions: Option<Vec<UnhealthyCondition>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MhcRemediation {
    pub(crate) trigger_if: Option<MhcTriggerIf>,
    pub(crate) template_ref: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MhcTriggerIf {
    pub(crate) unhealthy_less_than_or_equal_to: Option<IntOrPercent>,
    pub(crate) unhealthy_in_range: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UnhealthyCondition {
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) status: String,
    pub(crate) timeout: Option<String>,
    pub(crate) timeout_seconds: Option<i64>,
}

/// Treat an explicit YAML `null` like an absent field (`files: null`).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
