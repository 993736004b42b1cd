//! Machines, as CAPO makes an OpenStackMachine: the flavor, image and key
//! pair resolved before anything is created, a port on the cluster network
//! with the role's managed security group (and the template's), a server
//! booted from it with the bootstrap data ([`super::bootstrap`]), then, for
//! control-plane machines, a pool member on the API server load balancer or
//! the API floating IP.
//!
//! A server of this state at this address (created just before a crash) is
//! adopted; a server create is never retried blindly, and a server that
//! goes to ERROR or never becomes ACTIVE is deleted with its port, so a
//! failed machine leaves nothing behind.

use serde_json::{json, Value};

use super::api::{Kind, Query};
use super::ops::{err, Cloud};
use super::{
    auth, bootstrap, lineage_tag, ostr, sid, OpenStackProvider, META_ADDRESS, META_IDENTITY,
    META_LINEAGE,
};
use crate::infra::openstack::{ClusterPlan, MachinePlan};
use crate::provider::{Observed, OpInput, ProviderError};
use crate::resource::{Address, MachineSpec, ResourceKind, Role, Spec};
use crate::state::Resource;

/// The name of a machine's port.
fn port_name(machine: &str) -> String {
    format!("{machine}-0")
}

/// Servers of this state with this name and this address in their metadata.
async fn servers_at(
    cloud: &Cloud,
    name: &str,
    address: &Address,
    lineage: &str,
) -> Result<Vec<Value>, ProviderError> {
    let q = Query {
        tags: vec![lineage_tag(lineage)],
        name: Some(name.to_string()),
        ..Default::default()
    };
    Ok(cloud
        .list("looking up servers", Kind::Server, &q)
        .await?
        .into_iter()
        .filter(|s| {
            s.pointer(&format!("/metadata/{META_ADDRESS}"))
                .and_then(Value::as_str)
                == Some(address.as_str())
        })
        .collect())
}

/// The port capi created for a machine: by name and by the address in its
/// description (found even when a crash came before it was tagged).
async fn find_machine_port(
    cloud: &Cloud,
    name: &str,
    address: &Address,
) -> Result<Option<Value>, ProviderError> {
    let q = Query {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let want = format!("capi machine {address}");
    Ok(cloud
        .list(&format!("looking up port {name}"), Kind::Port, &q)
        .await?
        .into_iter()
        .find(|p| p["description"] == want.as_str()))
}

fn first_address(server: &Value) -> String {
    server["addresses"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|a| a.get(0))
        .and_then(|a| a["addr"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Exactly one match of a flavor or image lookup, or a clear error.
fn exactly_one(
    found: &[Value],
    none: String,
    many: impl Fn(usize) -> String,
) -> Result<String, ProviderError> {
    match found.len() {
        1 => Ok(sid(&found[0])),
        0 => Err(err(none)),
        n => Err(err(many(n))),
    }
}

/// The flavor and image ids of a machine template, and a check that its key
/// pair exists: all before anything is created.
async fn resolve_boot(
    cloud: &Cloud,
    plan: &MachinePlan,
) -> Result<(String, Option<String>), ProviderError> {
    let api = cloud.api();
    let fref = plan
        .flavor
        .clone()
        .ok_or_else(|| err("the machine template has no flavor"))?;
    let flavors = cloud
        .retry("looking up the flavor", || {
            api.find_flavor(fref.id.as_deref(), fref.name.as_deref())
        })
        .await?;
    let flavor = exactly_one(
        &flavors,
        format!(
            "flavor {} does not exist (see `openstack flavor list`)",
            fref.describe()
        ),
        |n| format!("{n} flavors match {}; use flavor.id", fref.describe()),
    )?;
    let image = match &plan.image {
        Some(iref) => {
            let images = cloud
                .retry("looking up the image", || {
                    api.find_image(iref.id.as_deref(), iref.name.as_deref(), &iref.tags)
                })
                .await?;
            Some(exactly_one(
                &images,
                format!(
                    "image {} does not exist (see `openstack image list`)",
                    iref.describe()
                ),
                |n| {
                    format!(
                        "{n} images match {}; CAPO requires exactly one: use image.id",
                        iref.describe()
                    )
                },
            )?)
        }
        None => None,
    };
    if let Some(k) = &plan.ssh_key {
        if cloud
            .retry("looking up the key pair", || api.get_keypair(k))
            .await?
            .is_none()
        {
            return Err(err(format!("key pair {k:?} (sshKeyName) does not exist; create it with `openstack keypair create`")));
        }
    }
    Ok((flavor, image))
}

/// What a new server is made from.
struct NewServer<'a> {
    input: &'a OpInput<'a>,
    m: &'a MachineSpec,
    plan: MachinePlan,
    /// The cluster network as the state records it.
    net: &'a Resource,
    cluster_plan: ClusterPlan,
}

impl NewServer<'_> {
    /// The role's managed security group and the template's.
    async fn security_groups(&self, cloud: &Cloud) -> Result<Vec<String>, ProviderError> {
        let mut sgs = Vec::new();
        let role = if self.m.role == Role::ControlPlane {
            "controlplane"
        } else {
            "worker"
        };
        if let Some(id) = self
            .net
            .observed
            .get("security_groups")
            .and_then(|g| g.get(role))
            .and_then(Value::as_str)
        {
            sgs.push(id.to_string());
        }
        for r in &self.plan.security_groups {
            sgs.push(sid(&cloud
                .find_one(Kind::SecurityGroup, r, Query::default())
                .await?));
        }
        Ok(sgs)
    }

    /// The machine's port: found (created before a crash) or created, with
    /// the security groups and the cluster subnet, then tagged.
    async fn port(
        &self,
        cloud: &Cloud,
        sgs: Vec<String>,
        tags: &[String],
    ) -> Result<Value, ProviderError> {
        let address = self.input.address;
        let network_id = ostr(&self.net.observed, "network_id")
            .ok_or_else(|| err("the cluster network has no id in the state"))?;
        let name = port_name(&self.m.name);
        if let Some(p) = find_machine_port(cloud, &name, address).await? {
            return Ok(p);
        }
        let mut body = json!({"name": name, "network_id": network_id, "tags": tags,
                              "description": format!("capi machine {address}")});
        if !sgs.is_empty() && !self.cluster_plan.disable_port_security {
            body["security_groups"] = json!(sgs);
        }
        if let Some(sub) = self
            .net
            .observed
            .get("subnet_ids")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
        {
            body["fixed_ips"] = json!([{"subnet_id": sub}]);
        }
        let p = cloud
            .retry(&format!("creating port {name}"), || {
                cloud.api().create(Kind::Port, &body)
            })
            .await?;
        // Neutron (Zed) ignores tags in a create: set them.
        cloud
            .tag(&format!("tagging port {name}"), Kind::Port, &sid(&p), tags)
            .await?;
        Ok(p)
    }

    /// The server as Nova takes it.
    fn body(&self, flavor: &str, image: Option<&str>, port: &Value, tags: &[String]) -> Value {
        let (m, plan) = (self.m, &self.plan);
        let mut metadata = serde_json::Map::new();
        for (k, v) in &plan.metadata {
            metadata.insert(k.clone(), json!(v));
        }
        metadata.insert(META_LINEAGE.into(), json!(self.input.lineage));
        metadata.insert(META_ADDRESS.into(), json!(self.input.address.as_str()));
        metadata.insert(META_IDENTITY.into(), json!(m.identity));
        let mut body = json!({"name": m.name, "flavorRef": flavor, "networks": [{"port": sid(port)}],
                              "user_data": bootstrap::user_data(self.input), "metadata": metadata, "tags": tags});
        if let Some(i) = image {
            body["imageRef"] = json!(i);
        }
        if let Some(k) = &plan.ssh_key {
            body["key_name"] = json!(k);
        }
        if let Some(cd) = plan.config_drive {
            body["config_drive"] = json!(cd);
        }
        let omit_az = m.role == Role::ControlPlane && self.cluster_plan.control_plane_omit_az;
        if let (Some(fd), false) = (&m.failure_domain, omit_az) {
            body["availability_zone"] = json!(fd);
        }
        if let Some((size, vtype)) = &plan.root_volume {
            if *size > 0 {
                body["block_device_mapping_v2"] =
                    json!([{"uuid": image, "volume_size": size, "volume_type": vtype}]);
                if let Some(o) = body.as_object_mut() {
                    o.remove("imageRef");
                }
            }
        }
        body
    }
}

/// Delete a server that will not become usable, and its port.
async fn discard_server(cloud: &Cloud, id: &str, name: &str) {
    let api = cloud.api();
    let _ = api.delete(Kind::Server, id).await;
    let _ = cloud.wait_gone(Kind::Server, id).await;
    let q = Query {
        name: Some(port_name(name)),
        ..Default::default()
    };
    if let Ok(ps) = api.list(Kind::Port, &q).await {
        for p in ps {
            let _ = api.delete(Kind::Port, &sid(&p)).await;
        }
    }
}

/// Wait until the server is ACTIVE; one in ERROR, or still building after
/// the server timeout, is deleted with its port.
async fn wait_active(cloud: &Cloud, id: &str, name: &str) -> Result<Value, ProviderError> {
    let timeout = cloud.policy().server_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s = cloud
            .get(&format!("reading server {name}"), Kind::Server, id)
            .await?;
        let Some(s) = s else {
            return Err(err(format!(
                "server {name} ({id}) disappeared while it was being built"
            )));
        };
        match s["status"].as_str().unwrap_or_default() {
            "ACTIVE" => return Ok(s),
            "ERROR" => {
                let fault = s
                    .pointer("/fault/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no fault message")
                    .trim()
                    .to_string();
                // Do not leave a broken server (nor its port) behind.
                discard_server(cloud, id, name).await;
                return Err(err(format!(
                    "server {name} went to ERROR: {fault} (the server and its port were deleted)"
                )));
            }
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            discard_server(cloud, id, name).await;
            return Err(err(format!(
                "server {name} ({id}) was still {} after {timeout:?} (CAPI_OPENSTACK_SERVER_TIMEOUT) and was deleted",
                s["status"].as_str().unwrap_or("?"),
            )));
        }
        tokio::time::sleep(cloud.policy().poll).await;
    }
}

impl OpenStackProvider {
    /// Adopt or create the machine's server, wait until it is ACTIVE, and
    /// put a control-plane machine behind the API server endpoint.
    pub(super) async fn create_machine(
        &self,
        input: &OpInput<'_>,
        m: &MachineSpec,
    ) -> Result<Observed, ProviderError> {
        let identity = auth::of_operation(input);
        let cloud = self.client(identity.clone()).await?;
        let plan = MachinePlan::parse(&m.infra.spec);
        let net = input
            .dep(ResourceKind::Network)
            .ok_or_else(|| err("the cluster network is not in the state"))?;
        let cluster_plan = match &net.attributes {
            Spec::Network(n) => ClusterPlan::parse(&n.infra.spec),
            _ => return Err(err("the network resource has no network spec")),
        };
        // Adoption: a server of this state at this address (a crash came
        // between its creation and the state write).
        let existing = servers_at(&cloud, &m.name, input.address, input.lineage)
            .await?
            .into_iter()
            .next();
        let server = match existing {
            Some(s) => {
                tracing::info!(
                    "{}: adopting server {} created before an interruption",
                    input.address,
                    sid(&s)
                );
                s
            }
            None => {
                let new = NewServer {
                    input,
                    m,
                    plan,
                    net,
                    cluster_plan,
                };
                self.new_server(&cloud, &new).await?
            }
        };
        let server_id = sid(&server);
        let server = wait_active(&cloud, &server_id, &m.name).await?;
        let pq = Query {
            device_id: Some(server_id.clone()),
            ..Default::default()
        };
        let ports = cloud
            .list("listing the server's ports", Kind::Port, &pq)
            .await?;
        let port = ports.into_iter().next().unwrap_or(Value::Null);
        let ip = port
            .pointer("/fixed_ips/0/ip_address")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| first_address(&server));
        let mut o = Observed::new();
        o.insert("identity".into(), auth::to_observed(&identity));
        o.insert("server_id".into(), json!(server_id));
        o.insert("port_id".into(), json!(sid(&port)));
        o.insert("ip".into(), json!(ip));
        o.insert(
            "provider_id".into(),
            json!(format!("openstack:///{server_id}")),
        );
        o.insert("status".into(), server["status"].clone());
        o.insert("ready".into(), json!(true));
        o.insert("bootstrap".into(), json!(bootstrap::DELIVERED));
        if let Some(az) = server.get("OS-EXT-AZ:availability_zone") {
            o.insert("availability_zone".into(), az.clone());
        }
        // Control plane: behind the API server endpoint.
        if m.role == Role::ControlPlane {
            if let Some(lbr) = input.dep(ResourceKind::Loadbalancer) {
                self.join_endpoint(&cloud, lbr, &m.name, &ip, &port, &mut o)
                    .await?;
            }
        }
        Ok(o)
    }

    /// Resolve what the server needs, make its port, create it (once: a lost
    /// answer may hide a created server, found by its tags on the next
    /// apply).
    async fn new_server(&self, cloud: &Cloud, new: &NewServer<'_>) -> Result<Value, ProviderError> {
        let (flavor, image) = resolve_boot(cloud, &new.plan).await?;
        let sgs = new.security_groups(cloud).await?;
        let mut tags = vec![lineage_tag(new.input.lineage)];
        tags.extend(new.cluster_plan.tags.iter().cloned());
        tags.extend(new.plan.tags.iter().cloned());
        let port = new.port(cloud, sgs, &tags).await?;
        let body = new.body(&flavor, image.as_deref(), &port, &tags);
        let s = match cloud.api().create(Kind::Server, &body).await {
            Ok(s) => s,
            Err(e) => {
                // Leave nothing behind (a failed machine records no ids).
                if e.status.is_some() {
                    let _ = cloud.api().delete(Kind::Port, &sid(&port)).await;
                }
                return Err(err(e.explain(&format!("creating server {}", new.m.name))));
            }
        };
        self.server_created();
        Ok(s)
    }

    /// A control-plane machine behind the endpoint: a pool member of the
    /// load balancer, or (floating-IP mode) the API floating IP when no
    /// machine holds it yet.
    async fn join_endpoint(
        &self,
        cloud: &Cloud,
        lbr: &Resource,
        name: &str,
        ip: &str,
        port: &Value,
        o: &mut Observed,
    ) -> Result<(), ProviderError> {
        let api = cloud.api();
        let port_no = match &lbr.attributes {
            Spec::Loadbalancer(l) => l.port,
            _ => 6443,
        };
        if let (Some(lb_id), Some(pool)) = (
            ostr(&lbr.observed, "loadbalancer_id"),
            ostr(&lbr.observed, "pool_id"),
        ) {
            let lock = self.lb_lock(lb_id).await;
            let _g = lock.lock().await;
            let members = cloud
                .retry("listing pool members", || api.list_members(pool))
                .await?;
            let member = match members.into_iter().find(|x| x["address"] == ip) {
                Some(mb) => mb,
                None => {
                    let body = json!({"name": name, "address": ip, "protocol_port": port_no,
                                      "subnet_id": port.pointer("/fixed_ips/0/subnet_id")});
                    let mb = cloud
                        .lb_op(lb_id, "adding the machine to the API server pool", || {
                            api.add_member(pool, &body)
                        })
                        .await?;
                    cloud.wait_lb(lb_id, "adding a pool member").await?;
                    mb
                }
            };
            o.insert("pool_id".into(), json!(pool));
            o.insert("loadbalancer_id".into(), json!(lb_id));
            o.insert("member_id".into(), json!(sid(&member)));
        } else if let Some(fip) = ostr(&lbr.observed, "floating_ip_id") {
            // Floating-IP mode: the API address follows a control-plane machine.
            let cur = cloud
                .get("reading the API floating IP", Kind::FloatingIp, fip)
                .await?;
            let free = cur.as_ref().is_some_and(|f| f["port_id"].is_null());
            if free {
                let pid = sid(port);
                cloud
                    .retry("associating the API floating IP", || {
                        api.associate_floating_ip(fip, Some(&pid))
                    })
                    .await?;
                o.insert("api_floating_ip_id".into(), json!(fip));
            }
        }
        Ok(())
    }

    /// Leave the endpoint, delete the server (by id, else by tags and
    /// address) and the port capi made for it.
    pub(super) async fn delete_machine(
        &self,
        cloud: &Cloud,
        r: &Resource,
        lineage: &str,
    ) -> Result<(), ProviderError> {
        let o = &r.observed;
        let m = r.attributes.as_machine();
        self.leave_endpoint(cloud, o).await?;
        // The server: by id, else (never recorded) by tags and address.
        let mut server_ids: Vec<String> = ostr(o, "server_id")
            .map(|s| vec![s.to_string()])
            .unwrap_or_default();
        if server_ids.is_empty() {
            if let Some(m) = m {
                for s in servers_at(cloud, &m.name, &r.address, lineage).await? {
                    server_ids.push(sid(&s));
                }
            }
        }
        for id in &server_ids {
            cloud.delete_quietly(Kind::Server, id).await?;
            cloud.wait_gone(Kind::Server, id).await?;
        }
        // Ports we created outlive their server.
        let mut port_ids: Vec<String> = ostr(o, "port_id")
            .filter(|p| !p.is_empty())
            .map(|s| vec![s.to_string()])
            .unwrap_or_default();
        if let Some(m) = m {
            if let Some(p) = find_machine_port(cloud, &port_name(&m.name), &r.address).await? {
                port_ids.push(sid(&p));
            }
        }
        port_ids.sort();
        port_ids.dedup();
        for p in port_ids {
            cloud.delete_quietly(Kind::Port, &p).await?;
        }
        Ok(())
    }

    /// Take a machine out of the pool (when the load balancer still exists)
    /// and release the API floating IP when it holds it.
    async fn leave_endpoint(&self, cloud: &Cloud, o: &Observed) -> Result<(), ProviderError> {
        let api = cloud.api();
        if let (Some(pool), Some(member)) = (ostr(o, "pool_id"), ostr(o, "member_id")) {
            let lb = ostr(o, "loadbalancer_id").unwrap_or_default().to_string();
            let lock = self.lb_lock(&lb).await;
            let _g = lock.lock().await;
            if cloud
                .get("reading the load balancer", Kind::LoadBalancer, &lb)
                .await?
                .is_some()
            {
                cloud
                    .lb_op(&lb, "removing the machine from the API server pool", || {
                        api.remove_member(pool, member)
                    })
                    .await?;
                cloud.wait_lb(&lb, "removing a pool member").await?;
            }
        }
        if let Some(fip) = ostr(o, "api_floating_ip_id") {
            if let Some(f) = cloud
                .get("reading the API floating IP", Kind::FloatingIp, fip)
                .await?
            {
                if f["port_id"].as_str() == ostr(o, "port_id") {
                    cloud
                        .retry("dissociating the API floating IP", || {
                            api.associate_floating_ip(fip, None)
                        })
                        .await?;
                }
            }
        }
        Ok(())
    }
}
