//! References between objects: which Cluster owns which control plane and
//! infrastructure cluster (each may have only one), references that must
//! resolve to a supported kind, the machine template of a group, and the
//! infrastructure "family" a cluster and its machine templates must share.

use std::collections::BTreeMap;

use super::super::model::*;
use super::V;

pub(super) const INFRA_MACHINE_KINDS: &[Kind] = &[
    Kind::DockerMachineTemplate,
    Kind::DevMachineTemplate,
    Kind::OpenStackMachineTemplate,
];
pub(super) const INFRA_MACHINE_KINDS_STANDALONE: &[Kind] = &[
    Kind::DockerMachine,
    Kind::DevMachine,
    Kind::DockerMachineTemplate,
    Kind::DevMachineTemplate,
    Kind::OpenStackMachineTemplate,
];
pub(super) const INFRA_CLUSTER_KINDS: &[Kind] = &[
    Kind::DockerCluster,
    Kind::DevCluster,
    Kind::OpenStackCluster,
];

/// Who owns what, from the Clusters' references.
pub(super) struct Owners {
    /// Control plane → the Cluster using it.
    pub(super) control_plane: BTreeMap<ObjectKey, ObjectKey>,
    /// Infrastructure cluster → the Cluster using it.
    pub(super) infrastructure: BTreeMap<ObjectKey, ObjectKey>,
    /// (namespace, Cluster name) → its infrastructure family.
    families: BTreeMap<(String, String), &'static str>,
}

impl Owners {
    /// The infrastructure family of Cluster `ns/name`, when known.
    pub(super) fn family_of(&self, ns: &str, name: &str) -> Option<&'static str> {
        self.families
            .get(&(ns.to_string(), name.to_string()))
            .copied()
    }
}

/// Each Cluster's control plane and infrastructure references: they resolve,
/// and no two Clusters share one.
pub(super) fn check_clusters(v: &mut V<'_>) -> Owners {
    let m = v.m;
    let mut owners = Owners {
        control_plane: BTreeMap::new(),
        infrastructure: BTreeMap::new(),
        families: BTreeMap::new(),
    };
    for o in &m.objects {
        let Body::Cluster(c) = &o.body else { continue };
        match &c.control_plane_ref {
            Some(r) => {
                if v.check_ref(o, r, "spec.controlPlaneRef", &[Kind::KubeadmControlPlane])
                    .is_some()
                {
                    let key = m.resolve(o, r).unwrap().key.clone();
                    if let Some(prev) = owners.control_plane.insert(key.clone(), o.key.clone()) {
                        v.err(
                            o,
                            &r.path,
                            format!(
                                "{} and {} both use {key} as their control plane",
                                prev, o.key
                            ),
                            "give each Cluster its own KubeadmControlPlane".into(),
                        );
                    }
                }
            }
            None => {
                let has_cp_machine = m.of_kind(Kind::Machine).any(|mo| matches!(&mo.body, Body::Machine(mm) if mm.control_plane && mm.template.cluster_name == o.key.name));
                if !has_cp_machine {
                    v.err(o, "/spec", format!("{} has no control plane", o.key), "set spec.controlPlaneRef to a KubeadmControlPlane, or add Machines labelled cluster.x-k8s.io/control-plane".into());
                }
            }
        }
        match &c.infrastructure_ref {
            Some(r) => {
                if v.check_ref(o, r, "spec.infrastructureRef", INFRA_CLUSTER_KINDS)
                    .is_some()
                {
                    let infra = m.resolve(o, r).unwrap();
                    if let Some(prev) = owners
                        .infrastructure
                        .insert(infra.key.clone(), o.key.clone())
                    {
                        v.err(
                            o,
                            &r.path,
                            format!("{} and {} both use {}", prev, o.key, infra.key),
                            "give each Cluster its own infrastructure cluster object".into(),
                        );
                    }
                    if let Body::InfraCluster(ic) = &infra.body {
                        owners.families.insert(
                            (o.key.namespace.clone(), o.key.name.clone()),
                            family_of_cluster(ic),
                        );
                    }
                }
            }
            None => v.err(
                o,
                "/spec",
                format!("{} has no spec.infrastructureRef", o.key),
                "set spec.infrastructureRef to a DockerCluster, DevCluster or OpenStackCluster"
                    .into(),
            ),
        }
    }
    owners
}

/// The infrastructure "family" of a cluster or machine spec, to catch a Docker
/// cluster pointing at an OpenStack machine template.
fn family_of_cluster(c: &InfraCluster) -> &'static str {
    match c {
        InfraCluster::Docker(_) => "docker",
        InfraCluster::InMemory => "inMemory",
        InfraCluster::OpenStack(_) => "openstack",
    }
}

fn family_of_machine(m: &InfraMachine) -> &'static str {
    match m {
        InfraMachine::Docker(_) => "docker",
        InfraMachine::InMemory(_) => "inMemory",
        InfraMachine::OpenStack(_) => "openstack",
    }
}

pub(super) fn check_template(
    v: &mut V<'_>,
    o: &Object,
    t: &MachineTemplate,
    base: &str,
    family: Option<&'static str>,
    infra_kinds: &[Kind],
) {
    match &t.version {
        Some(ver) => v.check_version(o, ver, &format!("{base}/version")),
        None => v.err(
            o,
            base,
            format!(
                "{} has no {}.version",
                o.key,
                super::super::normalize::pointer_to_dotted(base)
            ),
            "set the Kubernetes version of its machines, e.g. version: v1.31.2".into(),
        ),
    }
    match (&t.bootstrap_ref, &t.data_secret_name) {
        (Some(r), _) => {
            v.check_ref(
                o,
                r,
                "bootstrap.configRef",
                &[Kind::KubeadmConfigTemplate, Kind::KubeadmConfig],
            );
        }
        (None, Some(_)) => {}
        (None, None) => v.err(
            o,
            base,
            format!(
                "{} has neither bootstrap.configRef nor bootstrap.dataSecretName",
                o.key
            ),
            "set bootstrap.configRef to a KubeadmConfigTemplate".into(),
        ),
    }
    match &t.infrastructure_ref {
        Some(r) => {
            if v.check_ref(o, r, "infrastructureRef", infra_kinds).is_some() {
                check_family(v, o, r, family);
            }
        }
        None => v.err(o, base, format!("{} has no infrastructureRef", o.key), "set infrastructureRef to the machine template (DockerMachineTemplate, DevMachineTemplate or OpenStackMachineTemplate)".into()),
    }
}

pub(super) fn check_family(
    v: &mut V<'_>,
    o: &Object,
    r: &ObjectRef,
    cluster_family: Option<&'static str>,
) {
    let Some(cf) = cluster_family else { return };
    let Some(target) = v.m.resolve(o, r) else {
        return;
    };
    let mf = match &target.body {
        Body::InfraMachineTemplate(im) | Body::InfraMachine(im) => family_of_machine(im),
        _ => return,
    };
    if mf != cf {
        v.err(
            o,
            &r.path,
            format!(
                "{} uses {} ({mf} infrastructure) but its Cluster's infrastructure is {cf}",
                o.key, target.key
            ),
            format!("use a machine template of the cluster's infrastructure ({cf})"),
        );
    }
}
