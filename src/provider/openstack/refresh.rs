//! Reading a state's OpenStack resources back: per credential, one list
//! call per object type (only the types the resources need), filtered by the
//! state's lineage tag, whatever the number of resources; each resource is
//! then compared with what capi recorded. Servers carrying this state's tag
//! and an address the state does not know are reported as unmanaged (the
//! servers the last refresh listed are reused for that). `capi import`
//! finds a server by its id or name here.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::api::{Kind, Query};
use super::ops::{err, Cloud};
use super::{
    auth, lineage_tag, ostr, sid, OpenStackProvider, META_ADDRESS, META_IDENTITY, META_LINEAGE,
};
use crate::infra::openstack::{self as capo, ClusterPlan};
use crate::provider::{Found, Observed, OpInput, ProviderError, Refreshed, Unmanaged};
use crate::resource::{
    Address, AttributeChange, MachineSpec, NetworkSpec, Observation, ResourceKind, Spec,
};
use crate::state::Resource;

/// What one refresh listed, by object type.
struct Listed(BTreeMap<Kind, Vec<Value>>);

impl Listed {
    /// One list call per object type the resources need.
    async fn fetch(
        cloud: &Cloud,
        rs: &[&Resource],
        lineage: &str,
    ) -> Result<Listed, ProviderError> {
        let q = Query::tagged(&lineage_tag(lineage));
        let has = |k: ResourceKind| rs.iter().any(|r| r.attributes.kind() == k);
        let mut kinds = Vec::new();
        if has(ResourceKind::Network) {
            kinds.extend([
                Kind::Network,
                Kind::Subnet,
                Kind::Router,
                Kind::SecurityGroup,
            ]);
        }
        if has(ResourceKind::Loadbalancer) {
            kinds.push(Kind::LoadBalancer);
        }
        if has(ResourceKind::Loadbalancer) || has(ResourceKind::Machine) {
            kinds.push(Kind::FloatingIp);
        }
        if has(ResourceKind::Machine) {
            kinds.extend([Kind::Server, Kind::Port]);
        }
        let mut lists = BTreeMap::new();
        for k in kinds {
            let v = cloud
                .list(&format!("listing {}s", k.as_str()), k, &q)
                .await?;
            lists.insert(k, v);
        }
        Ok(Listed(lists))
    }

    fn find(&self, k: Kind, id: &str) -> Option<&Value> {
        self.0.get(&k).and_then(|l| l.iter().find(|o| sid(o) == id))
    }
}

/// What comparing one resource found.
#[derive(Default)]
struct Finding {
    missing: bool,
    stopped: Option<String>,
    diffs: Vec<AttributeChange>,
}

impl Finding {
    fn changed(&mut self, path: &str, before: Value, after: Option<Value>) {
        self.diffs.push(AttributeChange {
            path: path.into(),
            before: Some(before),
            after,
        })
    }

    fn observation(self) -> Option<Observation> {
        if self.missing {
            Some(Observation::Missing)
        } else if let Some(s) = self.stopped {
            Some(Observation::Stopped(s))
        } else if !self.diffs.is_empty() {
            Some(Observation::Changed(self.diffs))
        } else {
            None
        }
    }
}

/// The network: gone when capi manages it; lost subnets, router, security
/// groups or rules are changes.
fn network_finding(l: &Listed, o: &Observed, n: &NetworkSpec, f: &mut Finding) {
    if o.get("network_managed") == Some(&json!(true)) {
        let nid = ostr(o, "network_id").unwrap_or_default();
        if l.find(Kind::Network, nid).is_none() {
            f.missing = true;
        }
        for s in o
            .get("subnet_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if l.find(Kind::Subnet, s).is_none() {
                f.changed("subnet", json!(s), None);
            }
        }
    }
    if o.get("router_managed") == Some(&json!(true))
        && l.find(Kind::Router, ostr(o, "router_id").unwrap_or_default())
            .is_none()
    {
        f.changed("router", o["router_id"].clone(), None);
    }
    if let Some(Value::Object(g)) = o.get("security_groups") {
        let ids: BTreeMap<String, String> = g
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        security_group_finding(l, &ids, n, f);
    }
}

/// The managed security groups: each still there with every rule the spec
/// wants.
fn security_group_finding(
    l: &Listed,
    ids: &BTreeMap<String, String>,
    n: &NetworkSpec,
    f: &mut Finding,
) {
    let plan = ClusterPlan::parse(&n.infra.spec);
    let Some(sg) = &plan.security_groups else {
        return;
    };
    let lookup = |x: &str| ids.get(x).cloned();
    for (role, rules) in [("controlplane", &sg.control_plane), ("worker", &sg.worker)] {
        let gid = ids.get(role).cloned().unwrap_or_default();
        match l.find(Kind::SecurityGroup, &gid) {
            None => f.changed(&format!("security_groups.{role}"), json!(gid), None),
            Some(gv) => {
                let have: BTreeSet<String> = gv["security_group_rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(capo::neutron_sig)
                    .collect();
                let want: BTreeSet<String> = rules.iter().map(|r| r.signature(&lookup)).collect();
                let lost = want.difference(&have).count();
                if lost > 0 {
                    f.changed(
                        &format!("security_groups.{role}.rules"),
                        json!(want.len()),
                        Some(json!(format!("{lost} rule(s) missing"))),
                    );
                }
            }
        }
    }
}

/// The endpoint: the load balancer gone or in ERROR, the floating IP gone
/// or another address.
fn lb_finding(l: &Listed, o: &Observed, f: &mut Finding) {
    if let Some(id) = ostr(o, "loadbalancer_id") {
        match l.find(Kind::LoadBalancer, id) {
            None => f.missing = true,
            Some(lb) if lb["provisioning_status"] == "ERROR" => {
                f.stopped = Some("in ERROR (load balancer)".to_string())
            }
            Some(_) => {}
        }
    }
    if let Some(fip) = ostr(o, "floating_ip_id") {
        match l.find(Kind::FloatingIp, fip) {
            None => f.missing = true,
            Some(fv) if fv["floating_ip_address"] != o["floating_ip"] => f.changed(
                "floating_ip",
                o["floating_ip"].clone(),
                Some(fv["floating_ip_address"].clone()),
            ),
            Some(_) => {}
        }
    }
}

/// The machine: the server gone or not running, another identity, the port
/// gone or another address, the API floating IP moved.
fn machine_finding(l: &Listed, o: &Observed, m: &MachineSpec, f: &mut Finding) {
    let Some(s) = l.find(Kind::Server, ostr(o, "server_id").unwrap_or_default()) else {
        f.missing = true;
        return;
    };
    let status = s["status"].as_str().unwrap_or_default().to_string();
    if status != "ACTIVE" && status != "BUILD" {
        f.stopped = Some(status);
    }
    let ident = s
        .pointer(&format!("/metadata/{META_IDENTITY}"))
        .and_then(Value::as_str);
    if ident.is_some_and(|i| m.identity != i) {
        f.changed(
            &format!("metadata.{META_IDENTITY}"),
            json!(m.identity),
            ident.map(|i| json!(i)),
        );
    }
    if let Some(pid) = ostr(o, "port_id") {
        match l.find(Kind::Port, pid) {
            None => f.changed("port", json!(pid), None),
            Some(p) => {
                let ip = p
                    .pointer("/fixed_ips/0/ip_address")
                    .cloned()
                    .unwrap_or(Value::Null);
                if o.get("ip").is_some_and(|x| *x != ip) {
                    f.changed("ip", o["ip"].clone(), Some(ip));
                }
            }
        }
    }
    if let Some(fip) = ostr(o, "api_floating_ip_id") {
        let port = l
            .find(Kind::FloatingIp, fip)
            .map(|f| f["port_id"].clone())
            .unwrap_or(Value::Null);
        if port != o["port_id"] {
            f.changed("api_floating_ip.port", o["port_id"].clone(), Some(port));
        }
    }
}

/// Refresh resources of one cloud: one list per object type; also the
/// servers listed, when they were.
async fn refresh_group(
    cloud: &Cloud,
    rs: &[&Resource],
    lineage: &str,
) -> Result<(Vec<Refreshed>, Option<Vec<Value>>), ProviderError> {
    let listed = Listed::fetch(cloud, rs, lineage).await?;
    let out = rs
        .iter()
        .map(|r| {
            let mut f = Finding::default();
            match &r.attributes {
                Spec::Network(n) => network_finding(&listed, &r.observed, n, &mut f),
                Spec::Loadbalancer(_) => lb_finding(&listed, &r.observed, &mut f),
                Spec::Machine(m) => machine_finding(&listed, &r.observed, m, &mut f),
                _ => {}
            }
            Refreshed {
                address: r.address.clone(),
                observation: f.observation(),
            }
        })
        .collect();
    Ok((out, listed.0.get(&Kind::Server).cloned()))
}

impl OpenStackProvider {
    /// Refresh, grouped by credential: one list call per object type per
    /// credential, whatever the number of resources.
    pub(super) async fn read_back(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        let mut groups: BTreeMap<String, (Option<auth::Identity>, Vec<&Resource>)> =
            BTreeMap::new();
        // A first pass remembers every identity recorded for a cluster, so
        // that the resources that recorded none find it in the second.
        for r in resources {
            self.identity_of_resource(r);
        }
        for r in resources {
            let id = self.identity_of_resource(r);
            groups
                .entry(format!("{id:?}"))
                .or_insert((id, Vec::new()))
                .1
                .push(r);
        }
        let mut out = Vec::new();
        for (_, (identity, rs)) in groups {
            let cloud = self.client(identity).await?;
            let before = cloud.api().calls().values().sum::<u64>();
            let (refreshed, servers) = refresh_group(&cloud, &rs, lineage).await?;
            out.extend(refreshed);
            if let Some(servers) = servers {
                *self.last_servers.lock().unwrap() = Some((lineage.to_string(), servers));
            }
            let calls = cloud.api().calls().values().sum::<u64>() - before;
            tracing::debug!(
                "openstack: refreshed {} resources with {calls} API calls",
                rs.len()
            );
        }
        Ok(out)
    }

    /// Servers with this state's tag whose address the state does not know.
    pub(super) async fn unknown_servers(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError> {
        let known_set: BTreeSet<&str> = known.iter().map(|r| r.address.as_str()).collect();
        let identity = known.iter().find_map(|r| self.identity_of_resource(r));
        let cloud = self.client(identity).await?;
        let cached = self
            .last_servers
            .lock()
            .unwrap()
            .take()
            .filter(|(l, _)| l == lineage)
            .map(|(_, s)| s);
        let servers = match cached {
            Some(s) => s,
            None => {
                let q = Query::tagged(&lineage_tag(lineage));
                cloud.list("listing servers", Kind::Server, &q).await?
            }
        };
        Ok(servers
            .into_iter()
            .filter_map(|s| {
                let a = s
                    .pointer(&format!("/metadata/{META_ADDRESS}"))?
                    .as_str()?
                    .to_string();
                let address = Address::parse(&a).ok()?;
                (!known_set.contains(a.as_str())).then(|| Unmanaged {
                    address,
                    detail: format!(
                        "server {} ({}) carries this state's tags but is not in the state",
                        s["name"].as_str().unwrap_or("?"),
                        sid(&s)
                    ),
                })
            })
            .collect())
    }
}

/// Why the create path (which looks for a server of this state's tag, the
/// machine's name and the address in its metadata) would not adopt this
/// server whatever its metadata says.
fn server_not_adoptable(s: &Value, input: &OpInput<'_>, want: &str) -> Option<String> {
    let name = s["name"].as_str().unwrap_or_default();
    if name != want {
        return Some(format!(
            "it is named {name}, and the create of {} looks for a server named {want}",
            input.address
        ));
    }
    let tag = lineage_tag(input.lineage);
    // Tags come with Nova microversion 2.26 and later; without them, the
    // metadata is all there is to judge.
    let tags = s.get("tags").and_then(Value::as_array)?;
    (!tags.iter().any(|t| t == tag.as_str())).then(|| {
        format!(
            "it lacks the tag {tag} the create of {} looks for: add it (`openstack server tag add --tag {tag} {}`) and import it again",
            input.address,
            sid(s)
        )
    })
}

impl OpenStackProvider {
    /// `capi import`: a server by id, else by its exact name. Networks and
    /// load balancers carry the lineage tag but no address: capi apply
    /// finds and adopts them by name and tag, so they are not imported.
    pub(super) async fn find_server(
        &self,
        input: &OpInput<'_>,
        id: &str,
    ) -> Result<Found, ProviderError> {
        let Spec::Machine(m) = input.spec else {
            return Err(err(format!(
                "capi import takes OpenStack machines (servers) only: the network and the load balancer of {} carry this state's lineage tag but no address, and capi apply finds them by name and tag and adopts them without an import",
                input.address.cluster_key()
            )));
        };
        let cloud = self.client(auth::of_operation(input)).await?;
        let server = match cloud
            .get(&format!("reading server {id}"), Kind::Server, id)
            .await?
        {
            Some(s) => s,
            None => {
                let q = Query {
                    name: Some(id.to_string()),
                    ..Default::default()
                };
                // Nova's name filter is a regular expression: keep exact names.
                let mut named: Vec<Value> = cloud
                    .list(&format!("looking up servers named {id}"), Kind::Server, &q)
                    .await?
                    .into_iter()
                    .filter(|s| s["name"] == id)
                    .collect();
                match named.len() {
                    1 => named.remove(0),
                    0 => return Err(ProviderError::NotFound(format!(
                        "no OpenStack server has the id or name {id:?} (looked for the server of {}, which capi names {}; see `openstack server list`)",
                        input.address, m.name
                    ))),
                    n => return Err(err(format!(
                        "{n} servers are named {id:?} ({}): import one by its id",
                        named.iter().map(sid).collect::<Vec<_>>().join(", ")
                    ))),
                }
            }
        };
        let meta = |k: &str| {
            server
                .pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let server_id = sid(&server);
        Ok(Found {
            description: format!(
                "server {} ({server_id})",
                server["name"].as_str().unwrap_or("?")
            ),
            lineage: meta(META_LINEAGE),
            address: meta(META_ADDRESS),
            identity: meta(META_IDENTITY),
            not_adoptable: server_not_adoptable(&server, input, &m.name),
            observed: Observed::from([("server_id".into(), json!(server_id))]),
            id: server_id,
        })
    }
}
