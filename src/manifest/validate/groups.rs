//! Rules for what owns machines: KubeadmControlPlane (referenced, replicas
//! odd with stacked etcd, maxSurge 0 or 1), MachineDeployment and MachineSet
//! (their Cluster, template and replicas; rollout fenceposts), standalone
//! Machines (their Cluster and template).

use super::super::limits::MAX_REPLICAS_PER_GROUP;
use super::super::model::*;
use super::kubeadm::check_kubeadm;
use super::refs::{
    check_family, check_template, Owners, INFRA_MACHINE_KINDS, INFRA_MACHINE_KINDS_STANDALONE,
};
use super::V;

pub(super) fn check_control_plane(
    v: &mut V<'_>,
    owners: &Owners,
    o: &Object,
    k: &KubeadmControlPlane,
) {
    if !owners.control_plane.contains_key(&o.key) {
        v.err(
            o,
            "",
            format!(
                "{} is not referenced by any Cluster's spec.controlPlaneRef",
                o.key
            ),
            "set a Cluster's spec.controlPlaneRef to it, or remove it".into(),
        );
    }
    v.check_version(o, &k.version, "/spec/version");
    let family = owners
        .control_plane
        .get(&o.key)
        .and_then(|c| owners.family_of(&c.namespace, &c.name));
    if let Some(r) = &k.infrastructure_ref {
        if v.check_ref(
            o,
            r,
            "spec.machineTemplate.spec.infrastructureRef",
            INFRA_MACHINE_KINDS,
        )
        .is_some()
        {
            check_family(v, o, r, family);
        }
    }
    check_control_plane_replicas(v, o, k);
    check_replicas_bound(v, o, k.replicas);
    if let Some(s) = k.max_surge {
        check_control_plane_surge(v, o, k, s);
    }
    check_kubeadm(v, o, &k.kubeadm_config_spec, "/spec/kubeadmConfigSpec");
}

/// At least one; odd when etcd is stacked (quorum).
fn check_control_plane_replicas(v: &mut V<'_>, o: &Object, k: &KubeadmControlPlane) {
    if k.replicas < 1 {
        v.err(
            o,
            "/spec/replicas",
            format!(
                "{}: replicas must be at least 1, found {}",
                o.key, k.replicas
            ),
            "set spec.replicas to 1, 3 or 5".into(),
        );
    }
    let external_etcd = k
        .kubeadm_config_spec
        .cluster_configuration
        .as_ref()
        .and_then(|c| c.etcd.as_ref())
        .is_some_and(|e| e.external.is_some());
    if k.replicas >= 1 && k.replicas % 2 == 0 && !external_etcd {
        v.err(
            o,
            "/spec/replicas",
            format!(
                "{}: replicas cannot be an even number ({}) when etcd is stacked",
                o.key, k.replicas
            ),
            format!(
                "use an odd number ({} or {}) so etcd keeps quorum, or configure external etcd",
                k.replicas - 1,
                k.replicas + 1
            ),
        );
    }
}

/// maxSurge is 0 (with at least 3 replicas) or 1.
fn check_control_plane_surge(v: &mut V<'_>, o: &Object, k: &KubeadmControlPlane, s: IntOrPercent) {
    let resolved = match s {
        IntOrPercent::Int(i) => Some(i),
        IntOrPercent::Percent(_) => None,
    };
    match resolved {
        Some(0) if k.replicas < 3 => v.err(
            o,
            surge_path(o),
            format!("{}: maxSurge 0 needs at least 3 replicas (found {})", o.key, k.replicas),
            "with fewer than 3 control-plane machines, use maxSurge 1 so a new machine joins before an old one leaves".into(),
        ),
        Some(0) | Some(1) => {}
        _ => v.err(
            o,
            surge_path(o),
            format!("{}: control-plane maxSurge must be 0 or 1, found {s}", o.key),
            "set rollout.strategy.rollingUpdate.maxSurge (rolloutStrategy in v1beta1) to 1 (default) or 0".into(),
        ),
    }
}

pub(super) fn check_deployment(v: &mut V<'_>, owners: &Owners, o: &Object, md: &MachineDeployment) {
    check_cluster_name(v, o, &md.cluster_name, &md.template.cluster_name);
    check_template(
        v,
        o,
        &md.template,
        "/spec/template/spec",
        owners.family_of(&o.key.namespace, &md.cluster_name),
        INFRA_MACHINE_KINDS,
    );
    check_replicas(v, o, md.replicas);
    if let Strategy::RollingUpdate {
        max_surge,
        max_unavailable,
    } = &md.strategy
    {
        let path = strategy_path(o);
        for (name, val) in [("maxSurge", max_surge), ("maxUnavailable", max_unavailable)] {
            let bad = match val {
                IntOrPercent::Int(i) => *i < 0 || *i > MAX_REPLICAS_PER_GROUP,
                IntOrPercent::Percent(p) => *p < 0 || *p > 100,
            };
            if bad {
                v.err(
                    o,
                    &format!("{path}/{name}"),
                    format!("{}: {name} {val} is out of range", o.key),
                    format!(
                        "{name} must be an integer from 0 to {MAX_REPLICAS_PER_GROUP} or a percentage between 0% and 100%"
                    ),
                );
            }
        }
        // Cluster API's webhook refuses integer 0/0 only; percentages that
        // resolve to 0/0 (`0%`, or `10%` of 3) fall back to maxUnavailable 1.
        if matches!(
            (max_surge, max_unavailable),
            (IntOrPercent::Int(0), IntOrPercent::Int(0))
        ) {
            v.err(
                o,
                &path,
                format!("{}: maxSurge and maxUnavailable cannot both be 0", o.key),
                "a rollout could never make progress; set maxSurge to 1 (the default) or maxUnavailable to 1".into(),
            );
        }
    }
}

pub(super) fn check_set(v: &mut V<'_>, owners: &Owners, o: &Object, ms: &MachineSet) {
    check_cluster_name(v, o, &ms.cluster_name, &ms.template.cluster_name);
    check_template(
        v,
        o,
        &ms.template,
        "/spec/template/spec",
        owners.family_of(&o.key.namespace, &ms.cluster_name),
        INFRA_MACHINE_KINDS,
    );
    check_replicas(v, o, ms.replicas);
}

pub(super) fn check_machine(v: &mut V<'_>, owners: &Owners, o: &Object, mm: &Machine) {
    let name = mm.template.cluster_name.clone();
    if name.is_empty() {
        v.err(
            o,
            "/spec",
            format!("{} has no spec.clusterName", o.key),
            "set spec.clusterName to the Cluster this machine belongs to".into(),
        );
    } else if !v.cluster_exists(&o.key.namespace, &name) {
        let hint = v.names_of(Kind::Cluster, &o.key.namespace);
        v.err(
            o,
            "/spec/clusterName",
            format!(
                "{}: spec.clusterName {name:?} is not a Cluster in the manifests",
                o.key
            ),
            format!("fix the name; {hint}"),
        );
    }
    check_template(
        v,
        o,
        &mm.template,
        "/spec",
        owners.family_of(&o.key.namespace, &name),
        INFRA_MACHINE_KINDS_STANDALONE,
    );
}

fn check_replicas(v: &mut V<'_>, o: &Object, replicas: i64) {
    if replicas < 0 {
        v.err(
            o,
            "/spec/replicas",
            format!("{}: replicas cannot be negative", o.key),
            "set spec.replicas to 0 or more".into(),
        );
    }
    check_replicas_bound(v, o, replicas);
}

/// A group asks for at most [`MAX_REPLICAS_PER_GROUP`] machines.
pub(super) fn check_replicas_bound(v: &mut V<'_>, o: &Object, replicas: i64) {
    if replicas > MAX_REPLICAS_PER_GROUP {
        v.err(
            o,
            "/spec/replicas",
            format!(
                "{}: replicas {replicas} is more than capi manages in one group ({MAX_REPLICAS_PER_GROUP})",
                o.key
            ),
            format!("set spec.replicas to at most {MAX_REPLICAS_PER_GROUP}, or split the machines over several MachineDeployments (docs/reliability.md, \"Limits\")"),
        );
    }
}

/// `spec.clusterName` names a Cluster, and the template's (if set) agrees.
fn check_cluster_name(v: &mut V<'_>, o: &Object, name: &str, template_name: &str) {
    if name.is_empty() {
        v.err(
            o,
            "/spec",
            format!("{} has no spec.clusterName", o.key),
            "set spec.clusterName to the Cluster it belongs to".into(),
        );
        return;
    }
    if !v.cluster_exists(&o.key.namespace, name) {
        let h = v.names_of(Kind::Cluster, &o.key.namespace);
        v.err(
            o,
            "/spec/clusterName",
            format!(
                "{}: spec.clusterName {name:?} is not a Cluster in the manifests",
                o.key
            ),
            format!("fix the name; {h}"),
        );
    }
    if !template_name.is_empty() && template_name != name {
        v.err(
            o,
            "/spec/template/spec/clusterName",
            format!("{}: spec.template.spec.clusterName {template_name:?} does not match spec.clusterName {name:?}", o.key),
            format!("set both to the same Cluster name ({name:?})"),
        );
    }
}

fn surge_path(o: &Object) -> &'static str {
    if o.api_gen == ApiGen::V1beta1 {
        "/spec/rolloutStrategy/rollingUpdate/maxSurge"
    } else {
        "/spec/rollout/strategy/rollingUpdate/maxSurge"
    }
}

fn strategy_path(o: &Object) -> String {
    if o.api_gen == ApiGen::V1beta1 {
        "/spec/strategy/rollingUpdate".into()
    } else {
        "/spec/rollout/strategy/rollingUpdate".into()
    }
}
