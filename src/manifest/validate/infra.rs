//! Infrastructure rules: the provider's own checks of the specs capi keeps
//! as written (OpenStack), and infrastructure clusters no Cluster uses.

use super::super::model::*;
use super::refs::Owners;
use super::V;
use crate::resource::Backend;

/// Provider-specific checks of specs capi keeps as written.
pub(super) fn check_provider_specs(v: &mut V<'_>) {
    let m = v.m;
    for o in &m.objects {
        let (problems, base) = match &o.body {
            Body::InfraCluster(InfraCluster::OpenStack(spec)) => (
                crate::infra::validate_cluster_spec(Backend::Openstack, spec),
                "/spec",
            ),
            Body::InfraMachineTemplate(InfraMachine::OpenStack(spec)) => (
                crate::infra::validate_machine_spec(Backend::Openstack, spec),
                "/spec/template/spec",
            ),
            _ => continue,
        };
        for problem in problems {
            v.err(
                o,
                &format!("{base}{}", problem.pointer),
                format!("{}: {}", o.key, problem.message),
                problem.help,
            );
        }
    }
}

/// Infrastructure clusters that no Cluster uses are almost always a mistake.
pub(super) fn check_unused_infrastructure(v: &mut V<'_>, owners: &Owners) {
    let m = v.m;
    for o in &m.objects {
        if matches!(o.body, Body::InfraCluster(_)) && !owners.infrastructure.contains_key(&o.key) {
            v.err(
                o,
                "",
                format!(
                    "{} is not referenced by any Cluster's spec.infrastructureRef",
                    o.key
                ),
                "set a Cluster's spec.infrastructureRef to it, or remove it".into(),
            );
        }
    }
}
