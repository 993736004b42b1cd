//! The Cluster body: references, the cluster network with its defaults, the
//! control-plane endpoint; managed topologies (ClusterClass) are refused.

use serde_json::Value;

use super::super::model::{ApiGen, Body, Cluster, ClusterNetwork};
use super::super::raw;
use super::{check_ref_style, to_ref, DocCtx};

pub(super) fn parse_cluster(
    ctx: &mut DocCtx<'_>,
    api_gen: ApiGen,
    root: &Value,
    name: &str,
) -> Option<Body> {
    let spec: raw::ClusterSpec = ctx.typed(root, "/spec")?;
    if spec.topology.is_some() {
        ctx.error(
            "/spec/topology",
            format!("Cluster {name:?}: spec.topology (ClusterClass) is not supported yet"),
            "remove spec.topology and write the control plane, MachineDeployments and templates out explicitly",
        );
        return None;
    }
    check_ref_style(
        ctx,
        &spec.control_plane_ref,
        "/spec/controlPlaneRef",
        api_gen,
    );
    check_ref_style(
        ctx,
        &spec.infrastructure_ref,
        "/spec/infrastructureRef",
        api_gen,
    );
    let net = spec.cluster_network.unwrap_or_default();
    let port = net.api_server_port.unwrap_or(6443);
    if !(1..=65535).contains(&port) {
        ctx.error(
            "/spec/clusterNetwork/apiServerPort",
            format!("Cluster {name:?}: apiServerPort {port} is not a TCP port"),
            "use a port between 1 and 65535 (default 6443)",
        );
    }
    let services = net
        .services
        .map(|s| s.cidr_blocks)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec!["10.96.0.0/12".to_string()]);
    Some(Body::Cluster(Cluster {
        network: ClusterNetwork {
            api_server_port: port.clamp(1, 65535) as u16,
            services,
            pods: net.pods.map(|p| p.cidr_blocks).unwrap_or_default(),
            service_domain: net.service_domain.unwrap_or_else(|| "cluster.local".into()),
        },
        control_plane_endpoint: spec.control_plane_endpoint.filter(|e| !e.host.is_empty()),
        control_plane_ref: to_ref(spec.control_plane_ref, "/spec/controlPlaneRef"),
        infrastructure_ref: to_ref(spec.infrastructure_ref, "/spec/infrastructureRef"),
        paused: spec.paused.unwrap_or(false),
    }))
}
