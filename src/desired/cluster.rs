//! One Cluster object → one desired cluster, as named steps over a
//! [`ClusterBuilder`]: infrastructure, the control-plane group, the worker
//! groups (and standalone machines), the health checks; then the singleton
//! specs are assembled. A step that cannot finish (an object is missing or
//! fails to render, with its problem reported) leaves the cluster out.

use crate::manifest::raw::KubeadmConfigSpec;
use crate::manifest::{Body, Cluster, Kind, Object};
use crate::resource::{ClusterId, LoadBalancerSpec, NetworkSpec, PkiSpec, TokenSpec};

use super::control_plane::ControlPlane;
use super::workers::WorkerGroups;
use super::UPGRADE_CONCURRENCY_ANNOTATION;
use super::{Builder, DesiredCluster, HealthCheck, Source};

pub(super) struct ClusterBuilder<'b, 'a> {
    pub(super) b: &'b mut Builder<'a>,
    /// The Cluster object and its body.
    pub(super) o: &'a Object,
    pub(super) c: &'a Cluster,
    pub(super) id: ClusterId,
}

impl<'b, 'a> ClusterBuilder<'b, 'a> {
    /// Where a group's version is written: at `pointer` in `o`, or, for a
    /// group a ClusterClass generated, at the Cluster's `topology.version`.
    pub(super) fn version_source(&self, o: &Object, pointer: &str) -> Source {
        if o.annotations.contains_key(crate::topology::EXPLAIN) {
            self.b.source_at(self.o, "/spec/topology/version")
        } else {
            self.b.source_at(o, pointer)
        }
    }

    pub(super) fn new(b: &'b mut Builder<'a>, o: &'a Object) -> Option<Self> {
        let Body::Cluster(c) = &o.body else {
            return None;
        };
        Some(ClusterBuilder {
            b,
            o,
            c,
            id: ClusterId::new(&o.key.namespace, &o.key.name),
        })
    }

    pub(super) fn do_build(mut self) -> Option<DesiredCluster> {
        let infra = self.do_build_infrastructure()?;
        let control_plane = self.do_build_control_plane(&infra)?;
        let WorkerGroups {
            mut control_plane_machines,
            workers,
        } = self.do_build_worker_groups(&infra, &control_plane);
        let health_checks = self.do_build_health_checks();

        // Control-plane groups first (the KubeadmControlPlane, then
        // standalone control-plane Machines by name), then workers.
        control_plane_machines.sort_by(|a, b| a.owner.name.cmp(&b.owner.name));
        let (kcp_group, kcp_spec) = match control_plane {
            ControlPlane::Kcp { group, spec } => (Some(*group), *spec),
            ControlPlane::Machines => (None, KubeadmConfigSpec::default()),
        };
        let mut groups: Vec<_> = kcp_group.into_iter().collect();
        groups.extend(control_plane_machines);
        groups.extend(workers);

        let cc = kcp_spec.cluster_configuration.clone().unwrap_or_default();
        Some(DesiredCluster {
            provider: infra.provider,
            paused: self.c.paused,
            upgrade_concurrency: self
                .o
                .annotations
                .get(UPGRADE_CONCURRENCY_ANNOTATION)
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0),
            source: self.b.source(self.o),
            pki: PkiSpec {
                encryption_algorithm: cc
                    .encryption_algorithm
                    .clone()
                    .unwrap_or_else(|| "RSA-2048".into()),
                ca_validity_days: cc
                    .ca_certificate_validity_period_days
                    .unwrap_or(3650)
                    .clamp(1, 36500) as u32,
                external_etcd: cc.etcd.as_ref().is_some_and(|e| e.external.is_some()),
            },
            network: NetworkSpec {
                name: infra.network_name,
                infra: infra.spec.clone(),
            },
            loadbalancer: LoadBalancerSpec {
                port: self.c.network.api_server_port,
                fixed_endpoint: infra.fixed_endpoint,
                infra: infra.spec,
            },
            token: TokenSpec {
                ttl_seconds: self.b.opts.token_ttl_seconds,
            },
            groups,
            health_checks,
            id: self.id,
        })
    }

    /// The cluster's MachineHealthChecks, in manifest order.
    fn do_build_health_checks(&self) -> Vec<HealthCheck> {
        self.b
            .m
            .of_kind(Kind::MachineHealthCheck)
            .filter_map(|h| match &h.body {
                Body::MachineHealthCheck(mhc)
                    if mhc.cluster_name == self.id.name && h.key.namespace == self.id.namespace =>
                {
                    Some(HealthCheck {
                        name: h.key.name.clone(),
                        selector: mhc.selector.clone(),
                        trigger_if: mhc.trigger_if.clone(),
                    })
                }
                _ => None,
            })
            .collect()
    }
}
