//! The OpenStack provider: clusters on an OpenStack cloud, with Cluster API
//! OpenStack provider (CAPO) semantics.

use super::ProviderError;

/// Settings from the environment (`OS_CLOUD`, `OS_*`).
#[derive(Debug, Clone, Default)]
pub struct OpenStackSettings {}

pub async fn connect(
    _settings: &OpenStackSettings,
) -> Result<std::sync::Arc<dyn super::Provider>, ProviderError> {
    Err(ProviderError::Unavailable(
        "the OpenStack provider is not available in this build yet; rehearse with --provider sim"
            .into(),
    ))
}

/// Which OpenStackCluster changes can be applied in place (CAPO's webhook
/// allows a few: security-group rules, DNS servers...). Until the provider
/// implements it, every change is immutable.
pub fn classify_infra_change(
    _before: &crate::resource::InfraSpec,
    _after: &crate::resource::InfraSpec,
) -> super::InfraChange {
    super::InfraChange::Immutable(String::new(), String::new())
}

/// Problems in an OpenStackCluster spec (JSON pointer relative to `spec`,
/// message, help), checked when manifests are read.
pub fn validate_cluster_spec(_spec: &serde_json::Value) -> Vec<(String, String, String)> {
    Vec::new()
}

/// Problems in an OpenStackMachineTemplate's `spec.template.spec`.
pub fn validate_machine_spec(_spec: &serde_json::Value) -> Vec<(String, String, String)> {
    Vec::new()
}
