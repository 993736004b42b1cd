//! Infrastructure semantics, without I/O: what each infrastructure kind's
//! spec means, which changes of it a provider can apply in place, and the
//! provider-specific validation that runs when manifests are read. The
//! planner and the validator ask here; providers implement what it decides.
//!
//! * [`openstack`]: CAPO's API interpreted (defaults, security-group rules,
//!   webhook immutability, validation).

pub(crate) mod openstack;

use serde_json::Value;

use crate::resource::{Backend, InfraSpec};

/// How a change of a cluster's infrastructure spec (network, load balancer)
/// is applied: in place, or refused because the field is immutable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InfraChange {
    InPlace,
    /// (field path, why); both empty when the backend gives no reason.
    Immutable(String, String),
}

/// Classify a change of a network/load balancer spec. Backends whose
/// infrastructure has mutable fields answer for themselves; for the others
/// the infrastructure is immutable.
pub(crate) fn classify_infra_change(before: &InfraSpec, after: &InfraSpec) -> InfraChange {
    match after.backend {
        Backend::Openstack => {
            if before.kind != after.kind {
                return InfraChange::Immutable(
                    "kind".into(),
                    "the infrastructure kind cannot change".into(),
                );
            }
            match openstack::immutable_change(&before.spec, &after.spec) {
                None => InfraChange::InPlace,
                Some((field, why)) => InfraChange::Immutable(field, why),
            }
        }
        Backend::Docker | Backend::InMemory => InfraChange::Immutable(String::new(), String::new()),
    }
}

/// One problem in an infrastructure object's spec: JSON pointer relative to
/// the spec checked, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecProblem {
    pub(crate) pointer: String,
    pub(crate) message: String,
    pub(crate) help: String,
}

/// Problems in an infrastructure cluster's `spec` (checked when manifests are read).
pub(crate) fn validate_cluster_spec(backend: Backend, spec: &Value) -> Vec<SpecProblem> {
    match backend {
        Backend::Openstack => openstack::validate_cluster(spec),
        Backend::Docker | Backend::InMemory => Vec::new(),
    }
}

/// Problems in an infrastructure machine template's `spec.template.spec`.
pub(crate) fn validate_machine_spec(backend: Backend, spec: &Value) -> Vec<SpecProblem> {
    match backend {
        Backend::Openstack => openstack::validate_machine(spec),
        Backend::Docker | Backend::InMemory => Vec::new(),
    }
}
