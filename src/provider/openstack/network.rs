//! The cluster network, as CAPO reconciles an OpenStackCluster's network
//! part, in its order: the external network (named, or the only one), the
//! network and subnets (the ones the manifests name, or managed ones), a
//! router with the external gateway and an interface on each subnet, and
//! the managed control-plane and worker security groups with CAPO's rules.
//!
//! Updates change only what CAPO lets change in place: the security group
//! rules and the managed subnets' DNS servers. Deletion removes only what
//! capi created (`*_managed` in the recorded attributes).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::api::{Kind, Query};
use super::ops::{err, Cloud};
use super::{auth, cluster_slug, lineage_tag, ostr, sid, OpenStackProvider};
use crate::infra::openstack::{self as capo, ClusterPlan, Ref, Rule};
use crate::provider::{Observed, OpInput, ProviderError};
use crate::resource::{NetworkSpec, Spec};
use crate::state::Resource;

/// The two managed security groups, by role.
const ROLES: [&str; 2] = ["controlplane", "worker"];

/// CAPO's name of a managed security group.
fn security_group_name(slug: &str, role: &str) -> String {
    format!("k8s-cluster-{slug}-secgroup-{role}")
}

/// The managed groups' ids recorded in a network's attributes, by role.
fn recorded_groups(o: &Observed) -> BTreeMap<String, String> {
    o.get("security_groups")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// What creating a cluster network works with.
struct Build<'a> {
    cloud: Cloud,
    plan: ClusterPlan,
    name: &'a str,
    lineage: &'a str,
    slug: String,
}

impl Build<'_> {
    fn description(&self) -> String {
        format!("Created by capi for cluster {}", self.slug)
    }

    /// The external network: named, or the only one (CAPO's lookup).
    async fn external_network(&self) -> Result<Option<Value>, ProviderError> {
        let external = Query {
            external: Some(true),
            ..Default::default()
        };
        if self.plan.disable_external_network {
            return Ok(None);
        }
        if let Some(r) = &self.plan.external_network {
            return self
                .cloud
                .find_one(Kind::Network, r, external)
                .await
                .map(Some);
        }
        let all = self
            .cloud
            .list("listing external networks", Kind::Network, &external)
            .await?;
        match all.len() {
            0 => Ok(None),
            1 => Ok(all.into_iter().next()),
            n => Err(err(format!("{n} external networks exist; set spec.externalNetwork to choose one (or disableExternalNetwork: true)"))),
        }
    }

    /// The network the manifests name, with its subnets (the named ones, or
    /// all of them).
    async fn referenced_network(&self, r: &Ref) -> Result<(Value, Vec<Value>), ProviderError> {
        let net = self
            .cloud
            .find_one(Kind::Network, r, Query::default())
            .await?;
        let on_net = Query {
            network_id: Some(sid(&net)),
            ..Default::default()
        };
        let mut subnets = Vec::new();
        if self.plan.subnets.is_empty() {
            subnets = self
                .cloud
                .list("listing the network's subnets", Kind::Subnet, &on_net)
                .await?;
        } else {
            for s in &self.plan.subnets {
                subnets.push(self.cloud.find_one(Kind::Subnet, s, on_net.clone()).await?);
            }
        }
        if subnets.is_empty() {
            return Err(err(format!("network {} has no subnet", r.describe())));
        }
        Ok((net, subnets))
    }

    /// The managed network and its managed subnets.
    async fn managed_network(&self) -> Result<(Value, Vec<Value>), ProviderError> {
        let (plan, name, lineage) = (&self.plan, self.name, self.lineage);
        let mut body = json!({"name": name, "description": self.description()});
        if let Some(m) = plan.mtu {
            body["mtu"] = json!(m);
        }
        if plan.disable_port_security {
            body["port_security_enabled"] = json!(false);
        }
        let (net, _) = self
            .cloud
            .ensure(Kind::Network, name, lineage, &plan.tags, body)
            .await?;
        let mut subnets = Vec::new();
        for (i, ms) in plan.managed_subnets.iter().enumerate() {
            let sname = if i == 0 {
                name.to_string()
            } else {
                format!("{name}-{i}")
            };
            let mut body = json!({"name": sname, "network_id": sid(&net), "cidr": ms.cidr, "ip_version": 4,
                                  "description": self.description(),
                                  "dns_nameservers": ms.dns});
            if !ms.pools.is_empty() {
                body["allocation_pools"] = Value::Array(
                    ms.pools
                        .iter()
                        .map(|(s, e)| json!({"start": s, "end": e}))
                        .collect(),
                );
            }
            let (sub, _) = self
                .cloud
                .ensure(Kind::Subnet, &sname, lineage, &plan.tags, body)
                .await?;
            subnets.push(sub);
        }
        Ok((net, subnets))
    }

    /// The router (named, or managed when there is an external network) and
    /// its interface on each subnet.
    async fn router(
        &self,
        external: Option<&Value>,
        subnets: &[Value],
        o: &mut Observed,
    ) -> Result<(), ProviderError> {
        if let Some(r) = &self.plan.router {
            let router = self
                .cloud
                .find_one(Kind::Router, r, Query::default())
                .await?;
            o.insert("router_id".into(), json!(sid(&router)));
            o.insert("router_managed".into(), json!(false));
        } else if let Some(ext) = external {
            let body = json!({"name": self.name, "description": self.description(),
                              "external_gateway_info": {"network_id": sid(ext)}});
            let (router, _) = self
                .cloud
                .ensure(Kind::Router, self.name, self.lineage, &self.plan.tags, body)
                .await?;
            o.insert("router_id".into(), json!(sid(&router)));
            o.insert("router_managed".into(), json!(true));
        }
        let Some(rid) = ostr(o, "router_id").map(str::to_string) else {
            return Ok(());
        };
        let api = self.cloud.api();
        for s in subnets {
            let sub = sid(s);
            match api.router_interface(&rid, &sub, true).await {
                Ok(()) => {}
                // Already attached (a re-run after a crash).
                Err(e) if e.status == Some(400) && e.message.contains("already") => {}
                Err(e) if e.is_transient() => {
                    self.cloud
                        .retry("adding the router interface", || {
                            api.router_interface(&rid, &sub, true)
                        })
                        .await?
                }
                Err(e) => return Err(err(e.explain("adding the router interface"))),
            }
        }
        o.insert(
            "router_interfaces".into(),
            json!(subnets.iter().map(sid).collect::<Vec<_>>()),
        );
        Ok(())
    }

    /// The managed security groups, by role.
    async fn security_groups(&self) -> Result<BTreeMap<String, String>, ProviderError> {
        let mut ids = BTreeMap::new();
        for role in ROLES {
            let sg_name = security_group_name(&self.slug, role);
            let body = json!({"name": sg_name, "description": format!("Cluster API managed group for {} ({role})", self.slug)});
            let (g, _) = self
                .cloud
                .ensure(
                    Kind::SecurityGroup,
                    &sg_name,
                    self.lineage,
                    &self.plan.tags,
                    body,
                )
                .await?;
            ids.insert(role.to_string(), sid(&g));
        }
        Ok(ids)
    }
}

/// A rule as Neutron takes it.
fn rule_body(r: &Rule, gid: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Value {
    let mut body = json!({"security_group_id": gid, "direction": r.direction, "ethertype": r.ether_type,
                          "description": r.description});
    if let Some(p) = &r.protocol {
        body["protocol"] = json!(p);
    }
    if let Some(p) = r.port_min {
        body["port_range_min"] = json!(p);
    }
    if let Some(p) = r.port_max {
        body["port_range_max"] = json!(p);
    }
    if let Some(p) = &r.remote_ip_prefix {
        body["remote_ip_prefix"] = json!(p);
    }
    if let Some(g) = &r.remote_group {
        body["remote_group_id"] = json!(g
            .strip_prefix("id:")
            .map(str::to_string)
            .or_else(|| lookup(g)));
    }
    body
}

/// Make the managed groups' rules what the spec says (add missing, remove
/// rules capi no longer wants; the default egress rules stay).
async fn reconcile_rules(
    cloud: &Cloud,
    plan: &ClusterPlan,
    ids: &BTreeMap<String, String>,
    lineage: &str,
) -> Result<(), ProviderError> {
    let Some(sg) = &plan.security_groups else {
        return Ok(());
    };
    let q = Query::tagged(&lineage_tag(lineage));
    let groups = cloud
        .list("listing security groups", Kind::SecurityGroup, &q)
        .await?;
    let lookup = |g: &str| ids.get(g).cloned();
    for (role, rules) in [("controlplane", &sg.control_plane), ("worker", &sg.worker)] {
        let gid = &ids[role];
        let existing: Vec<Value> = groups
            .iter()
            .find(|g| &sid(g) == gid)
            .and_then(|g| g["security_group_rules"].as_array().cloned())
            .unwrap_or_default();
        let have: BTreeSet<String> = existing.iter().map(capo::neutron_sig).collect();
        let mut want = BTreeSet::new();
        for r in rules.iter() {
            let sig = r.signature(&lookup);
            if !want.insert(sig.clone()) || have.contains(&sig) {
                continue;
            }
            let body = rule_body(r, gid, &lookup);
            match cloud.api().create(Kind::SecurityGroupRule, &body).await {
                Ok(_) => {}
                Err(e)
                    if e.status == Some(409)
                        && e.message.to_ascii_lowercase().contains("already exists") => {}
                Err(e) if e.is_transient() => {
                    cloud
                        .retry("creating a security group rule", || {
                            cloud.api().create(Kind::SecurityGroupRule, &body)
                        })
                        .await?;
                }
                Err(e) => {
                    return Err(err(e.explain(&format!(
                        "creating rule {:?} in the {role} security group",
                        r.description
                    ))))
                }
            }
        }
        for r in &existing {
            let sig = capo::neutron_sig(r);
            let default_egress = r["direction"] == "egress"
                && r["remote_ip_prefix"].is_null()
                && r["remote_group_id"].is_null()
                && r["protocol"].is_null();
            if !want.contains(&sig) && !default_egress {
                cloud
                    .delete_quietly(Kind::SecurityGroupRule, &sid(r))
                    .await?;
            }
        }
    }
    Ok(())
}

impl OpenStackProvider {
    /// Find or create everything the cluster network is made of.
    pub(super) async fn create_network(
        &self,
        input: &OpInput<'_>,
        n: &NetworkSpec,
    ) -> Result<Observed, ProviderError> {
        let identity = auth::of_operation(input);
        let b = Build {
            cloud: self.client(identity.clone()).await?,
            plan: ClusterPlan::parse(&n.infra.spec),
            name: &n.name,
            lineage: input.lineage,
            slug: cluster_slug(input.cluster),
        };
        let mut o = Observed::new();
        o.insert("identity".into(), auth::to_observed(&identity));
        let external = b.external_network().await?;
        if let Some(e) = &external {
            o.insert("external_network_id".into(), json!(sid(e)));
        }
        // Network and subnets: referenced, or managed.
        let (network, subnets, managed) = match &b.plan.network {
            Some(r) => {
                let (net, subnets) = b.referenced_network(r).await?;
                (net, subnets, false)
            }
            None => {
                let (net, subnets) = b.managed_network().await?;
                (net, subnets, true)
            }
        };
        o.insert("network_id".into(), json!(sid(&network)));
        o.insert("network_managed".into(), json!(managed));
        o.insert(
            "subnet_ids".into(),
            json!(subnets.iter().map(sid).collect::<Vec<_>>()),
        );
        o.insert("cidr".into(), json!(subnets[0]["cidr"]));
        o.insert("name".into(), json!(network["name"]));
        // Router: with a managed network and an external network.
        if managed {
            b.router(external.as_ref(), &subnets, &mut o).await?;
        }
        // Managed security groups with CAPO's rules.
        if b.plan.security_groups.is_some() {
            let ids = b.security_groups().await?;
            o.insert("security_groups".into(), json!(ids));
            reconcile_rules(&b.cloud, &b.plan, &ids, b.lineage).await?;
        }
        Ok(o)
    }

    /// In place: the managed security groups' rules, and the managed
    /// subnets' DNS servers.
    pub(super) async fn update_network(
        &self,
        input: &OpInput<'_>,
        n: &NetworkSpec,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        let cloud = self.client(auth::of_operation(input)).await?;
        let plan = ClusterPlan::parse(&n.infra.spec);
        let mut o = current.observed.clone();
        let mut ids = recorded_groups(&o);
        if plan.security_groups.is_some() && ids.len() < 2 {
            for role in ROLES {
                let name = security_group_name(&cluster_slug(input.cluster), role);
                let (g, _) = cloud
                    .ensure(
                        Kind::SecurityGroup,
                        &name,
                        input.lineage,
                        &plan.tags,
                        json!({"name": name}),
                    )
                    .await?;
                ids.insert(role.into(), sid(&g));
            }
            o.insert("security_groups".into(), json!(ids));
        }
        reconcile_rules(&cloud, &plan, &ids, input.lineage).await?;
        // And the managed subnets' DNS servers.
        if o.get("network_managed") == Some(&json!(true)) {
            let old = match &current.attributes {
                Spec::Network(c) => ClusterPlan::parse(&c.infra.spec).managed_subnets,
                _ => Vec::new(),
            };
            let ids: Vec<String> = capo::strings(o.get("subnet_ids"));
            for (i, ms) in plan.managed_subnets.iter().enumerate() {
                let (Some(id), Some(before)) = (ids.get(i), old.get(i)) else {
                    continue;
                };
                if before.dns != ms.dns {
                    cloud
                        .retry("updating the subnet's DNS servers", || {
                            cloud.api().set_subnet_dns(id, &ms.dns)
                        })
                        .await?;
                }
            }
        }
        Ok(o)
    }
}

/// Remove what capi created: router interfaces and the managed router, the
/// security groups, the managed subnets and network.
pub(super) async fn delete_network(cloud: &Cloud, r: &Resource) -> Result<(), ProviderError> {
    let o = &r.observed;
    let ids = |k: &str| -> Vec<String> { capo::strings(o.get(k)) };
    if let Some(rid) = ostr(o, "router_id") {
        for s in ids("router_interfaces") {
            match cloud.api().router_interface(rid, &s, false).await {
                Ok(()) => {}
                Err(e) if e.status == Some(404) => {}
                Err(e) => return Err(err(e.explain("removing the router interface"))),
            }
        }
        if o.get("router_managed") == Some(&json!(true)) {
            cloud.delete_quietly(Kind::Router, rid).await?;
        }
    }
    if let Some(Value::Object(g)) = o.get("security_groups") {
        for id in g.values().filter_map(Value::as_str) {
            // Rules referencing the other group go with their group.
            cloud.delete_quietly(Kind::SecurityGroup, id).await?;
        }
    }
    if o.get("network_managed") == Some(&json!(true)) {
        for s in ids("subnet_ids") {
            cloud.delete_quietly(Kind::Subnet, &s).await?;
        }
        if let Some(n) = ostr(o, "network_id") {
            cloud.delete_quietly(Kind::Network, n).await?;
        }
    }
    Ok(())
}
