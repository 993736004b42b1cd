//! The control-plane step: the Cluster's KubeadmControlPlane becomes the
//! first machine group, with its identity, its `kubeadm init` and
//! control-plane join renderings, its failure domains and its one-at-a-time
//! rollout. Without one, control-plane Machines are built with the workers.

use crate::bootstrap::RenderInput;
use crate::manifest::raw::KubeadmConfigSpec;
use crate::manifest::{Body, DeletionOrder, IntOrPercent, KubeadmControlPlane, Object};
use crate::resource::{hash_json, short_hash, BootstrapRole, Owner, OwnerKind, Role, Version};

use super::cluster::ClusterBuilder;
use super::infrastructure::{machine_infra, ClusterInfra};
use super::{secret_exists, standard_labels, MachineGroup, Rollout};

/// What the control-plane step decided.
pub(super) enum ControlPlane {
    /// A KubeadmControlPlane: its machine group and its kubeadm spec (the
    /// cluster's certificate settings come from it).
    Kcp {
        group: Box<MachineGroup>,
        spec: Box<KubeadmConfigSpec>,
    },
    /// No KubeadmControlPlane: standalone control-plane Machines, if any.
    Machines,
}

impl ClusterBuilder<'_, '_> {
    /// `None` when the KubeadmControlPlane cannot be built (the cluster is
    /// left out; rendering problems are reported).
    pub(super) fn do_build_control_plane(&mut self, infra: &ClusterInfra) -> Option<ControlPlane> {
        let m = self.b.m;
        let Some(k) = self
            .c
            .control_plane_ref
            .as_ref()
            .and_then(|r| m.resolve(self.o, r))
        else {
            return Some(ControlPlane::Machines);
        };
        let Body::KubeadmControlPlane(kk) = &k.body else {
            return None;
        };
        let version = kk.version.clone().ok()?;
        let infra_tpl = kk
            .infrastructure_ref
            .as_ref()
            .and_then(|r| m.resolve(k, r))?;
        let machine = machine_infra(infra_tpl, &self.b.opts.default_options)?;
        let identity = hash_json(&serde_json::json!({
            "version": version.to_string(),
            "infrastructure": {"kind": machine.kind, "name": machine.name, "spec": machine.spec},
            "bootstrap": {"kind": "KubeadmControlPlane", "name": k.key.name, "spec": kcp_identity_spec(&kk.kubeadm_config_spec)},
        }));
        let init = self.render_kcp(k, kk, &version, infra, BootstrapRole::Init);
        let join = self.render_kcp(k, kk, &version, infra, BootstrapRole::JoinControlPlane);
        let (init, join) = (init?, join?);
        let owner = Owner {
            kind: OwnerKind::KubeadmControlPlane,
            name: k.key.name.as_str().into(),
        };
        let fds: Vec<Option<String>> = if infra.control_plane_failure_domains.is_empty() {
            vec![None]
        } else {
            infra
                .control_plane_failure_domains
                .iter()
                .cloned()
                .map(Some)
                .collect()
        };
        let group = MachineGroup {
            labels: standard_labels(
                &self.id.name,
                &owner,
                Role::ControlPlane,
                &kk.machine_labels,
            )
            .into(),
            annotations: kk.machine_annotations.clone().into(),
            owner,
            role: Role::ControlPlane,
            replicas: u32::try_from(kk.replicas.max(0)).unwrap_or(u32::MAX),
            version,
            name_prefix: format!("{}-{}", k.key.name, short_hash(&identity, 5)),
            identity: identity.into(),
            fixed_name: None,
            failure_domains: fds,
            infra: machine.into(),
            bootstrap_template: format!("KubeadmControlPlane/{}", k.key.name).into(),
            init_document: Some(init),
            join_document: join,
            rollout: Rollout::ControlPlane {
                max_surge: match kk.max_surge {
                    Some(IntOrPercent::Int(0)) => 0,
                    _ => 1,
                },
            },
            deletion_order: DeletionOrder::Oldest,
            topology: k
                .annotations
                .get(crate::topology::EXPLAIN)
                .and_then(|t| serde_json::from_str(t).ok()),
            paused: false,
            // Messages about the control plane are about its version: a
            // topology's is the Cluster's topology.version.
            source: self.version_source(k, "/spec/version"),
            infra_source: self.b.source(infra_tpl),
            rollout_after: kk
                .rollout_after
                .as_deref()
                .and_then(crate::util::time::parse_rfc3339),
        };
        Some(ControlPlane::Kcp {
            group: Box::new(group),
            spec: Box::new(kk.kubeadm_config_spec.clone()),
        })
    }

    /// Render one of the KubeadmControlPlane's bootstrap documents; a
    /// problem is reported on the KubeadmControlPlane.
    fn render_kcp(
        &mut self,
        k: &Object,
        kk: &KubeadmControlPlane,
        version: &Version,
        infra: &ClusterInfra,
        role: BootstrapRole,
    ) -> Option<(String, &'static str)> {
        let m = self.b.m;
        let ns = k.key.namespace.clone();
        let r = self.b.render(&RenderInput {
            cluster_name: &self.id.name,
            network: &self.c.network,
            fixed_endpoint: infra.fixed_endpoint.clone(),
            role,
            version,
            spec: &kk.kubeadm_config_spec,
            from_kcp: true,
            secret_exists: &|n, key| secret_exists(m, &ns, n, key),
            control_plane_version: Some(version),
        });
        match r {
            Ok(r) => Some(r),
            Err(e) => {
                let pointer = if e.field.is_empty() {
                    "/spec/version".to_string()
                } else {
                    format!("/spec/kubeadmConfigSpec{}", e.field)
                };
                self.b
                    .problem(k, &pointer, format!("{}: {}", k.key, e.message), e.help);
                None
            }
        }
    }
}

/// The parts of a KubeadmControlPlane spec that decide whether a machine is up
/// to date (CAPI ignores the endpoint, DNS, discovery and health-check timeouts).
fn kcp_identity_spec(spec: &KubeadmConfigSpec) -> KubeadmConfigSpec {
    let mut s = spec.clone();
    if let Some(cc) = &mut s.cluster_configuration {
        cc.control_plane_endpoint = None;
        cc.dns = None;
    }
    if let Some(j) = &mut s.join_configuration {
        j.discovery = None;
        if let Some(t) = &mut j.timeouts {
            t.control_plane_component_health_check_seconds = None;
        }
    }
    if let Some(i) = &mut s.init_configuration {
        if let Some(t) = &mut i.timeouts {
            t.control_plane_component_health_check_seconds = None;
        }
    }
    s
}
