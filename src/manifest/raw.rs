//! Serde shapes of the Cluster API kinds `capi` reads, as written in manifests.
//!
//! Each struct accepts the union of the `v1beta1` and `v1beta2` field names of
//! its kind (the two generations mostly rename or move fields), and rejects
//! unknown fields so that a typo is an error with a line number instead of a
//! silently ignored setting. Fields `capi` accepts but does not act on are typed
//! `Option<Value>`; `normalize.rs` turns these shapes into the internal model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{Args, IntOrPercent};

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing)]
    pub uid: Option<Value>,
    #[serde(default, skip_serializing)]
    pub resource_version: Option<Value>,
    #[serde(default, skip_serializing)]
    pub field_path: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RawMeta {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: i64,
}

// ---------------------------------------------------------------- Cluster

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSpec {
    pub paused: Option<bool>,
    pub cluster_network: Option<ClusterNetwork>,
    pub control_plane_endpoint: Option<Endpoint>,
    pub control_plane_ref: Option<RawRef>,
    pub infrastructure_ref: Option<RawRef>,
    pub topology: Option<Value>,
    pub availability_gates: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterNetwork {
    pub api_server_port: Option<i64>,
    pub services: Option<CidrBlocks>,
    pub pods: Option<CidrBlocks>,
    pub service_domain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrBlocks {
    #[serde(default)]
    pub cidr_blocks: Vec<String>,
}

// ---------------------------------------------------- KubeadmControlPlane

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KcpSpec {
    pub replicas: Option<i64>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub machine_template: KcpMachineTemplate,
    #[serde(default)]
    pub kubeadm_config_spec: KubeadmConfigSpec,
    // v1beta2
    pub rollout: Option<KcpRollout>,
    pub remediation: Option<Value>,
    pub machine_naming: Option<Value>,
    // v1beta1
    pub rollout_strategy: Option<RolloutStrategy>,
    pub rollout_after: Option<String>,
    pub rollout_before: Option<Value>,
    pub remediation_strategy: Option<Value>,
    pub machine_naming_strategy: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KcpMachineTemplate {
    pub metadata: Option<RawMeta>,
    // v1beta2
    pub spec: Option<KcpMachineTemplateSpec>,
    // v1beta1
    pub infrastructure_ref: Option<RawRef>,
    pub node_drain_timeout: Option<Value>,
    pub node_volume_detach_timeout: Option<Value>,
    pub node_deletion_timeout: Option<Value>,
    pub readiness_gates: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KcpMachineTemplateSpec {
    pub infrastructure_ref: Option<RawRef>,
    pub readiness_gates: Option<Value>,
    pub deletion: Option<Value>,
    pub taints: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KcpRollout {
    pub before: Option<Value>,
    pub after: Option<String>,
    pub strategy: Option<RolloutStrategy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStrategy {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub rolling_update: Option<RollingUpdate>,
    // v1beta1 MachineDeployment only
    pub remediation: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdate {
    pub max_surge: Option<IntOrPercent>,
    pub max_unavailable: Option<IntOrPercent>,
    // v1beta1 MachineDeployment
    pub delete_policy: Option<String>,
}

// ----------------------------------------- MachineDeployment / MachineSet / Machine

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineDeploymentSpec {
    #[serde(default)]
    pub cluster_name: String,
    pub replicas: Option<i64>,
    pub selector: Option<Value>,
    #[serde(default)]
    pub template: MachineTemplateSpec,
    // v1beta2
    pub rollout: Option<MdRollout>,
    pub deletion: Option<Deletion>,
    pub remediation: Option<Value>,
    pub machine_naming: Option<Value>,
    // v1beta1
    pub strategy: Option<RolloutStrategy>,
    pub rollout_after: Option<String>,
    pub min_ready_seconds: Option<Value>,
    pub revision_history_limit: Option<Value>,
    pub progress_deadline_seconds: Option<Value>,
    pub machine_naming_strategy: Option<Value>,
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MdRollout {
    pub after: Option<String>,
    pub strategy: Option<RolloutStrategy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deletion {
    pub order: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSetSpec {
    #[serde(default)]
    pub cluster_name: String,
    pub replicas: Option<i64>,
    pub selector: Option<Value>,
    #[serde(default)]
    pub template: MachineTemplateSpec,
    pub deletion: Option<Deletion>,
    pub delete_policy: Option<String>,
    pub machine_naming: Option<Value>,
    pub machine_naming_strategy: Option<Value>,
    pub min_ready_seconds: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineTemplateSpec {
    pub metadata: Option<RawMeta>,
    #[serde(default)]
    pub spec: MachineSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineSpec {
    #[serde(default)]
    pub cluster_name: String,
    #[serde(default)]
    pub bootstrap: MachineBootstrap,
    pub infrastructure_ref: Option<RawRef>,
    pub version: Option<String>,
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
    pub failure_domain: Option<String>,
    pub min_ready_seconds: Option<Value>,
    pub readiness_gates: Option<Value>,
    pub deletion: Option<Value>,
    pub taints: Option<Value>,
    // v1beta1
    pub node_drain_timeout: Option<Value>,
    pub node_volume_detach_timeout: Option<Value>,
    pub node_deletion_timeout: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineBootstrap {
    pub config_ref: Option<RawRef>,
    pub data_secret_name: Option<String>,
}

// ---------------------------------------------------------- KubeadmConfig

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeadmConfigTemplateSpec {
    #[serde(default)]
    pub template: KubeadmConfigTemplateResource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeadmConfigTemplateResource {
    pub metadata: Option<RawMeta>,
    #[serde(default)]
    pub spec: KubeadmConfigSpec,
}

/// `KubeadmConfigSpec` of both generations. After `normalize()`, the v1beta1
/// spellings are folded into the v1beta2 ones, so two specs that mean the same
/// serialise (and hash) the same.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeadmConfigSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_configuration: Option<ClusterConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_configuration: Option<InitConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_configuration: Option<JoinConfiguration>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub files: Vec<File>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub boot_commands: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub pre_kubeadm_commands: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub post_kubeadm_commands: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub users: Vec<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp: Option<Ntp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_experimental_retry_join: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignition: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_setup: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfiguration {
    // v1beta1 carries the kubeadm type meta and fields CABPK fills in itself.
    #[serde(default, skip_serializing)]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<ControlPlaneComponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ControlPlaneComponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<ImageMeta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub feature_gates: BTreeMap<String, bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_validity_period_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_validity_period_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Networking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Etcd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalEtcd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalEtcd>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalEtcd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub extra_args: Args,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_envs: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub server_cert_s_a_ns: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub peer_cert_s_a_ns: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalEtcd {
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub ca_file: String,
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServer {
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub extra_args: Args,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_volumes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_envs: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        rename = "certSANs",
        deserialize_with = "null_as_default"
    )]
    pub cert_sans: Vec<String>,
    /// v1beta1 only; v1beta2 moved it to `initConfiguration.timeouts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_for_control_plane: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneComponent {
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub extra_args: Args,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_volumes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_envs: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitConfiguration {
    #[serde(default, skip_serializing)]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_tokens: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_registration: Option<NodeRegistration>,
    #[serde(
        default,
        rename = "localAPIEndpoint",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_api_endpoint: Option<ApiEndpoint>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub skip_phases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Patches>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinConfiguration {
    #[serde(default, skip_serializing)]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_registration: Option<NodeRegistration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<JoinControlPlane>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub skip_phases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<Patches>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegistration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_socket: Option<String>,
    /// `None` means "not set" (CABPK then adds its defaults); `Some([])` means
    /// explicitly no taints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taints: Option<Vec<Taint>>,
    #[serde(default, skip_serializing_if = "Args::is_empty")]
    pub kubelet_extra_args: Args,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub ignore_preflight_errors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_serial: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default)]
    pub effect: String,
    #[serde(default, skip_serializing)]
    pub time_added: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_port: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patches {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_component_health_check_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_health_check_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_api_server_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_api_call_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_bootstrap_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<BootstrapTokenDiscovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_bootstrap_token: Option<String>,
    /// v1beta1 only (a duration); v1beta2 uses `timeouts.discoverySeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapTokenDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_endpoint: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub ca_cert_hashes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsafe_skip_c_a_verification: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinControlPlane {
    #[serde(
        default,
        rename = "localAPIEndpoint",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_api_endpoint: Option<ApiEndpoint>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_from: Option<ContentFrom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_format: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentFrom {
    #[serde(default)]
    pub secret: SecretKeyRef,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct User {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gecos: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passwd_from: Option<ContentFrom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_password: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ntp {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

// ------------------------------------------------------- Docker / Dev kinds

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerClusterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<Endpoint>,
    /// v1beta2: a list of `{name, controlPlane, attributes}`; v1beta1: a map
    /// from name to `{controlPlane, attributes}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domains: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<DockerLoadBalancer>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerLoadBalancer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    #[serde(
        default,
        rename = "customHAProxyConfigTemplateRef",
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_haproxy_config_template_ref: Option<NameRef>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameRef {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerMachineTemplateSpec {
    #[serde(default)]
    pub template: DockerMachineTemplateResource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerMachineTemplateResource {
    pub metadata: Option<RawMeta>,
    #[serde(default)]
    pub spec: DockerMachineSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerMachineSpec {
    #[serde(default, rename = "providerID", skip_serializing)]
    pub provider_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_image: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub pre_load_images: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub extra_mounts: Vec<Mount>,
    #[serde(default, skip_serializing)]
    pub bootstrapped: Option<bool>,
    /// v1beta1 Duration string (`5m`); default 3 minutes in CAPD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_timeout: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_timeout_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    #[serde(default)]
    pub container_path: String,
    #[serde(default)]
    pub host_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevClusterSpec {
    pub control_plane_endpoint: Option<Endpoint>,
    #[serde(default)]
    pub backend: DevClusterBackend,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevClusterBackend {
    pub docker: Option<DockerClusterSpec>,
    pub in_memory: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevMachineTemplateSpec {
    #[serde(default)]
    pub template: DevMachineTemplateResource,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevMachineTemplateResource {
    pub metadata: Option<RawMeta>,
    #[serde(default)]
    pub spec: DevMachineSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevMachineSpec {
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
    #[serde(default)]
    pub backend: DevMachineBackend,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevMachineBackend {
    pub docker: Option<DockerMachineSpec>,
    pub in_memory: Option<InMemoryMachineSpec>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InMemoryMachineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<InMemoryPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<InMemoryPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<InMemoryPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<InMemoryPhase>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InMemoryPhase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<InMemoryProvisioning>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InMemoryProvisioning {
    /// A duration: `10s` (v1beta1 Duration) or seconds as a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_duration: Option<Value>,
    /// A fraction (`"0.2"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_jitter: Option<Value>,
}

// ------------------------------------------------------ MachineHealthCheck

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineHealthCheckSpec {
    #[serde(default)]
    pub cluster_name: String,
    pub selector: Option<Value>,
    // v1beta2
    pub checks: Option<MhcChecks>,
    pub remediation: Option<MhcRemediation>,
    // v1beta1
    pub unhealthy_conditions: Option<Vec<UnhealthyCondition>>,
    pub unhealthy_machine_conditions: Option<Vec<UnhealthyCondition>>,
    pub max_unhealthy: Option<IntOrPercent>,
    pub unhealthy_range: Option<String>,
    pub node_startup_timeout: Option<String>,
    pub remediation_template: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MhcChecks {
    pub node_startup_timeout_seconds: Option<i64>,
    pub unhealthy_node_conditions: Option<Vec<UnhealthyCondition>>,
    pub unhealthy_machine_conditions: Option<Vec<UnhealthyCondition>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MhcRemediation {
    pub trigger_if: Option<MhcTriggerIf>,
    pub template_ref: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MhcTriggerIf {
    pub unhealthy_less_than_or_equal_to: Option<IntOrPercent>,
    pub unhealthy_in_range: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnhealthyCondition {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub status: String,
    pub timeout: Option<String>,
    pub timeout_seconds: Option<i64>,
}

/// Treat an explicit YAML `null` like an absent field (`files: null`).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
