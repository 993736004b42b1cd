//! The infrastructure step: the Cluster's infrastructure object
//! (DockerCluster, DevCluster, OpenStackCluster) decides the provider, the
//! infrastructure spec shared by the network and the load balancer, the
//! network's name, the fixed control-plane endpoint and the failure domains
//! the control plane spreads over. Also the infrastructure spec of a machine
//! template.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::manifest::{Body, InfraCluster, InfraMachine, Object};
use crate::resource::{Backend, InfraSpec, ProviderKind};

use super::cluster::ClusterBuilder;
use super::{DOCKER_NETWORK_ANNOTATION, OPTION_PREFIX};

/// What the infrastructure step decided.
pub(super) struct ClusterInfra {
    pub(super) provider: ProviderKind,
    /// The spec the network and the load balancer are created from.
    pub(super) spec: InfraSpec,
    pub(super) network_name: String,
    /// `host:port` when `Cluster.spec.controlPlaneEndpoint` is set.
    pub(super) fixed_endpoint: Option<String>,
    /// Failure domains usable by the control plane, sorted by name.
    pub(super) control_plane_failure_domains: Vec<String>,
}

impl ClusterBuilder<'_, '_> {
    pub(super) fn do_build_infrastructure(&self) -> Option<ClusterInfra> {
        let (o, c, id) = (self.o, self.c, &self.id);
        let object = c
            .infrastructure_ref
            .as_ref()
            .and_then(|r| self.b.m.resolve(o, r))?;
        let Body::InfraCluster(ic) = &object.body else {
            return None;
        };
        let (native, backend, infra_value) = match ic {
            InfraCluster::Docker(d) => (
                ProviderKind::Docker,
                Backend::Docker,
                serde_json::to_value(d).unwrap_or(Value::Null),
            ),
            InfraCluster::InMemory => (
                ProviderKind::Sim,
                Backend::InMemory,
                Value::Object(Default::default()),
            ),
            InfraCluster::OpenStack(v) => (ProviderKind::Openstack, Backend::Openstack, v.clone()),
        };
        let mut spec = infra_spec(object, backend, infra_value);
        for (k, v) in &self.b.opts.default_options {
            spec.options.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let network_name = match ic {
            InfraCluster::Docker(_) => object
                .annotations
                .get(DOCKER_NETWORK_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| self.b.opts.docker_network.clone()),
            InfraCluster::OpenStack(_) => {
                format!("k8s-clusterapi-cluster-{}-{}", id.namespace, id.name)
            }
            InfraCluster::InMemory => id.name.clone(),
        };
        let fixed_endpoint = c.control_plane_endpoint.as_ref().map(|e| {
            format!(
                "{}:{}",
                e.host,
                if e.port == 0 {
                    c.network.api_server_port as i64
                } else {
                    e.port
                }
            )
        });
        let control_plane_failure_domains = match ic {
            InfraCluster::Docker(d) => docker_failure_domains(d.failure_domains.as_ref()),
            InfraCluster::OpenStack(v) => v
                .get("controlPlaneAvailabilityZones")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            InfraCluster::InMemory => Vec::new(),
        };
        Some(ClusterInfra {
            provider: self.b.opts.provider_override.unwrap_or(native),
            spec,
            network_name,
            fixed_endpoint,
            control_plane_failure_domains,
        })
    }
}

fn infra_spec(o: &Object, backend: Backend, spec: Value) -> InfraSpec {
    InfraSpec {
        kind: o.key.kind.to_string(),
        name: o.key.name.clone(),
        backend,
        spec,
        options: o
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with(OPTION_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The infrastructure spec of a machine template (or standalone machine),
/// with the default options it does not set itself.
pub(super) fn machine_infra(o: &Object, defaults: &BTreeMap<String, String>) -> Option<InfraSpec> {
    let im = match &o.body {
        Body::InfraMachineTemplate(im) | Body::InfraMachine(im) => im,
        _ => return None,
    };
    let mut spec = match im {
        InfraMachine::Docker(d) => infra_spec(
            o,
            Backend::Docker,
            serde_json::to_value(d).unwrap_or(Value::Null),
        ),
        InfraMachine::InMemory(m) => infra_spec(
            o,
            Backend::InMemory,
            serde_json::to_value(m).unwrap_or(Value::Null),
        ),
        InfraMachine::OpenStack(v) => infra_spec(o, Backend::Openstack, v.clone()),
    };
    for (k, v) in defaults {
        spec.options.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Some(spec)
}

/// DockerCluster failure domains usable by the control plane (v1beta2 list or
/// v1beta1 map), sorted by name.
fn docker_failure_domains(v: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Some(Value::Array(items)) => {
            for i in items {
                let cp = i
                    .get("controlPlane")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let (true, Some(n)) = (cp, i.get("name").and_then(Value::as_str)) {
                    out.push(n.to_string());
                }
            }
        }
        Some(Value::Object(m)) => {
            for (n, fd) in m {
                if fd
                    .get("controlPlane")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                {
                    out.push(n.clone());
                }
            }
        }
        _ => {}
    }
    out.sort();
    out
}
