//! The API server endpoint, as CAPO makes it: with `apiServer.
//! managedLoadBalancer`, an Octavia load balancer on the cluster subnet
//! (then, one at a time, a TCP listener, a pool and a health monitor) with a
//! floating IP on its VIP; without one, a floating IP alone, which the first
//! control-plane machine takes (see [`super::machine`]). Pool members come
//! and go with the control-plane machines.

use serde_json::{json, Value};

use super::api::{Kind, Query};
use super::ops::{err, Cloud};
use super::{auth, cluster_slug, lineage_tag, ostr, sid, OpenStackProvider};
use crate::infra::openstack::ClusterPlan;
use crate::provider::{Observed, OpInput, ProviderError};
use crate::resource::{LoadBalancerSpec, ResourceKind};
use crate::state::Resource;

/// What making the endpoint works with.
struct Endpoint<'a> {
    cloud: Cloud,
    plan: ClusterPlan,
    lineage: &'a str,
    slug: String,
    port: u16,
}

impl Endpoint<'_> {
    /// The Octavia load balancer, found (this state's, by name and tag) or
    /// created, with its listener, pool and health monitor.
    async fn octavia(&self, subnet: &str, o: &mut Observed) -> Result<Value, ProviderError> {
        let cloud = &self.cloud;
        let api = cloud.api();
        let name = format!("k8s-clusterapi-cluster-{}-kubeapi", self.slug);
        let lb = match find_ours_lb(cloud, &name, self.lineage).await? {
            Some(lb) => lb,
            None => {
                let mut body = json!({"name": name, "description": format!("Created by capi for cluster {}", self.slug),
                                      "vip_subnet_id": subnet, "tags": [lineage_tag(self.lineage)]});
                if let Some(p) = &self.plan.lb_provider {
                    body["provider"] = json!(p);
                }
                cloud
                    .retry("creating the API server load balancer", || {
                        api.create(Kind::LoadBalancer, &body)
                    })
                    .await?
            }
        };
        let id = sid(&lb);
        let what = "creating the API server load balancer";
        let child_name = format!("{name}-{}", self.port);
        let mut lb = cloud.wait_lb(&id, what).await?;
        // Then, one at a time as CAPO does: listener, pool, monitor.
        let listener = match lb["listeners"].get(0).map(sid) {
            Some(l) => l,
            None => {
                let body =
                    json!({"loadbalancer_id": id, "protocol_port": self.port, "name": child_name});
                sid(&cloud
                    .lb_op(&id, what, || api.create_lb_child("listener", &body))
                    .await?)
            }
        };
        lb = cloud.wait_lb(&id, what).await?;
        let pool = match lb["pools"].get(0).map(sid) {
            Some(p) => p,
            None => {
                let body = json!({"listener_id": listener, "name": child_name});
                sid(&cloud
                    .lb_op(&id, what, || api.create_lb_child("pool", &body))
                    .await?)
            }
        };
        let hm = cloud
            .retry("reading the pool", || api.get_pool(&pool))
            .await?
            .and_then(|p| p["healthmonitor_id"].as_str().map(str::to_string));
        if hm.is_none() {
            let body = json!({"pool_id": pool, "name": child_name});
            cloud
                .lb_op(&id, what, || api.create_lb_child("healthmonitor", &body))
                .await?;
        }
        let lb = cloud.wait_lb(&id, what).await?;
        o.insert("loadbalancer_id".into(), json!(id));
        o.insert("pool_id".into(), json!(pool));
        o.insert("listener_id".into(), json!(listener));
        o.insert("vip_address".into(), lb["vip_address"].clone());
        Ok(lb)
    }

    /// The API server's floating IP on the external network, found (by its
    /// description, among this state's) or created, on the VIP port when
    /// there is a load balancer.
    async fn floating_ip(
        &self,
        ext: &str,
        vip_port: Option<&str>,
        o: &mut Observed,
    ) -> Result<Option<String>, ProviderError> {
        let cloud = &self.cloud;
        let description = format!("capi API server of {}", self.slug);
        let q = Query::tagged(&lineage_tag(self.lineage));
        let existing = cloud
            .list("listing floating IPs", Kind::FloatingIp, &q)
            .await?;
        let fip = match existing
            .into_iter()
            .find(|f| f["description"] == description.as_str())
        {
            Some(f) => f,
            None => {
                let mut body = json!({"floating_network_id": ext, "description": description});
                if let Some(a) = &self.plan.floating_ip_address {
                    body["floating_ip_address"] = json!(a);
                }
                if let Some(p) = vip_port {
                    body["port_id"] = json!(p);
                }
                let f = cloud
                    .retry("creating the API server floating IP", || {
                        cloud.api().create(Kind::FloatingIp, &body)
                    })
                    .await?;
                let mut tags = vec![lineage_tag(self.lineage)];
                tags.extend(self.plan.tags.iter().cloned());
                cloud
                    .tag("tagging the floating IP", Kind::FloatingIp, &sid(&f), &tags)
                    .await?;
                f
            }
        };
        o.insert("floating_ip_id".into(), json!(sid(&fip)));
        o.insert("floating_ip".into(), fip["floating_ip_address"].clone());
        Ok(fip["floating_ip_address"].as_str().map(str::to_string))
    }
}

impl OpenStackProvider {
    /// Make the API server endpoint; its address is recorded as `endpoint`
    /// (the fixed `controlPlaneEndpoint` when the manifests set one).
    pub(super) async fn create_lb(
        &self,
        input: &OpInput<'_>,
        l: &LoadBalancerSpec,
    ) -> Result<Observed, ProviderError> {
        let identity = auth::of_operation(input);
        let e = Endpoint {
            cloud: self.client(identity.clone()).await?,
            plan: ClusterPlan::parse(&l.infra.spec),
            lineage: input.lineage,
            slug: cluster_slug(input.cluster),
            port: l.port,
        };
        let net = input
            .dep(ResourceKind::Network)
            .ok_or_else(|| err("the cluster network is not in the state"))?;
        let mut o = Observed::new();
        o.insert("identity".into(), auth::to_observed(&identity));
        let subnet = net
            .observed
            .get("subnet_ids")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut vip_port = None;
        let mut address = None;
        if e.plan.lb {
            let lb = e.octavia(subnet, &mut o).await?;
            vip_port = lb["vip_port_id"].as_str().map(str::to_string);
            address = lb["vip_address"].as_str().map(str::to_string);
        }
        if let (true, Some(ext)) = (
            e.plan.floating_ip,
            ostr(&net.observed, "external_network_id"),
        ) {
            address = e.floating_ip(ext, vip_port.as_deref(), &mut o).await?;
        }
        o.insert(
            "mode".into(),
            json!(if e.plan.lb {
                "loadbalancer"
            } else {
                "floating-ip"
            }),
        );
        let endpoint = match (&l.fixed_endpoint, &address) {
            (Some(e), _) => e.clone(),
            (None, Some(a)) => format!("{a}:{}", l.port),
            (None, None) => {
                return Err(err(
                    "no API server endpoint: without a load balancer, a floating IP needs an external network; set Cluster.spec.controlPlaneEndpoint, enable apiServer.managedLoadBalancer, or name spec.externalNetwork",
                ))
            }
        };
        if let Some(a) = &address {
            o.insert("ip".into(), json!(a));
        }
        o.insert("endpoint".into(), json!(endpoint));
        Ok(o)
    }
}

/// Remove the floating IP and the load balancer (cascading to its
/// children), waiting until Octavia lets go of it.
pub(super) async fn delete_lb(cloud: &Cloud, r: &Resource) -> Result<(), ProviderError> {
    if let Some(f) = ostr(&r.observed, "floating_ip_id") {
        cloud.delete_quietly(Kind::FloatingIp, f).await?;
    }
    if let Some(id) = ostr(&r.observed, "loadbalancer_id") {
        if let Some(lb) = cloud
            .get("reading the load balancer", Kind::LoadBalancer, id)
            .await?
        {
            if lb["provisioning_status"]
                .as_str()
                .is_some_and(|s| s.starts_with("PENDING") && s != "PENDING_DELETE")
            {
                cloud.wait_lb(id, "deleting the load balancer").await?;
            }
            cloud.delete_quietly(Kind::LoadBalancer, id).await?;
            cloud.wait_gone(Kind::LoadBalancer, id).await?;
        }
    }
    Ok(())
}

/// This state's load balancer of that name, unless it is being deleted.
async fn find_ours_lb(
    cloud: &Cloud,
    name: &str,
    lineage: &str,
) -> Result<Option<Value>, ProviderError> {
    let q = Query {
        name: Some(name.to_string()),
        tags: vec![lineage_tag(lineage)],
        ..Default::default()
    };
    Ok(cloud
        .list("looking up load balancers", Kind::LoadBalancer, &q)
        .await?
        .into_iter()
        .find(|l| {
            l["provisioning_status"] != "DELETED" && l["provisioning_status"] != "PENDING_DELETE"
        }))
}
