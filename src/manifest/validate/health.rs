//! Rules for MachineHealthChecks: their Cluster, a non-empty selector, the
//! unhealthy threshold and the node startup timeout.

use super::super::model::*;
use super::V;

pub(super) fn check_health_check(v: &mut V<'_>, o: &Object, mhc: &MachineHealthCheck) {
    if mhc.cluster_name.is_empty() {
        v.err(
            o,
            "/spec",
            format!("{} has no spec.clusterName", o.key),
            "set spec.clusterName".into(),
        );
    } else if !v.cluster_exists(&o.key.namespace, &mhc.cluster_name) {
        let hint = v.names_of(Kind::Cluster, &o.key.namespace);
        v.err(
            o,
            "/spec/clusterName",
            format!(
                "{}: spec.clusterName {:?} is not a Cluster in the manifests",
                o.key, mhc.cluster_name
            ),
            format!("fix the name; {hint}"),
        );
    }
    if mhc.selector.is_empty() {
        v.err(o, "/spec/selector", format!("{}: the selector must not be empty", o.key), "set spec.selector.matchLabels to select the machines to check (e.g. cluster.x-k8s.io/deployment-name: <md>)".into());
    }
    if let TriggerIf::AtMost(IntOrPercent::Percent(p)) = mhc.trigger_if {
        if !(0..=100).contains(&p) {
            // v1beta2's field, else v1beta1's.
            let field = [
                "/spec/remediation/triggerIf/unhealthyLessThanOrEqualTo",
                "/spec/maxUnhealthy",
            ]
            .into_iter()
            .find(|f| o.origin.spans.contains_key(*f))
            .unwrap_or("/spec");
            v.err(
                o,
                field,
                format!("{}: unhealthy threshold {p}% is out of range", o.key),
                "use a percentage between 0% and 100%".into(),
            );
        }
    }
    if mhc.node_startup_timeout_seconds != 0 && mhc.node_startup_timeout_seconds < 30 {
        v.err(
            o,
            "/spec",
            format!(
                "{}: node startup timeout must be at least 30 seconds (or 0 to disable)",
                o.key
            ),
            "raise the node startup timeout".into(),
        );
    }
}
