//! The OpenStack provider: clusters on an OpenStack cloud, with Cluster API
//! OpenStack provider (CAPO) semantics. See docs/providers/openstack.md.
//!
//! capi resource → cloud objects:
//! * `network`: network, subnet(s), router with external gateway and
//!   interface, control-plane and worker security groups with their rules
//!   (or the existing network/subnets/router the manifests name);
//! * `loadbalancer`: the API server endpoint: an Octavia load balancer
//!   (listener, pool, health monitor) with a floating IP on its VIP, or a
//!   floating IP alone that follows the first control-plane machine;
//! * `machine`: a port on the cluster network, a server booted from it with
//!   the bootstrap cloud-config as `user_data`, pool member or floating-IP
//!   association for control-plane machines;
//! * `token`: nothing in the cloud (the token travels in the cloud-config).
//!
//! Everything created carries the state's lineage as a tag (servers also as
//! metadata, with the resource address), so an object created just before a
//! crash is found and adopted instead of duplicated.

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod sdk;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Value};

use self::api::{ApiError, Kind, OpenStackApi, Query};
use super::*;
use crate::infra::openstack::{self as capo, ClusterPlan, MachinePlan, Ref};
use crate::resource::Role;
use crate::resource::{AttributeChange, Observation};

/// Settings from the environment (`OS_CLOUD`, `OS_*`) and the manifests.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenStackSettings {
    /// Secrets from the manifests by (namespace, name): identityRef.
    pub(crate) secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    /// `OS_CLOUD`: the clouds.yaml entry to use.
    pub(crate) cloud: Option<String>,
    /// Whether `OS_AUTH_URL` is set (credentials from the `OS_*` variables,
    /// which openstack_sdk reads itself).
    pub(crate) auth_url_set: bool,
}

pub(crate) async fn connect(
    settings: &ProviderSettings,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let mut s = settings.openstack.clone();
    if s.secrets.is_empty() {
        s.secrets = settings.secrets.clone();
    }
    Ok(Arc::new(OpenStackProvider::new(Clients::Connect(s))))
}

/// Where clients come from.
pub(crate) enum Clients {
    /// Credentials from identityRef Secrets or the environment.
    Connect(OpenStackSettings),
    /// One fixed client (unit tests with [`api::MemoryApi`]).
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "unit tests run the provider against this in-memory cloud"
        )
    )]
    Fixed(Arc<dyn OpenStackApi>),
}

pub(crate) struct OpenStackProvider {
    clients: Clients,
    cache: tokio::sync::Mutex<BTreeMap<String, Arc<dyn OpenStackApi>>>,
    /// Serialises pool-member changes per load balancer (Octavia refuses
    /// concurrent updates with 409 while PENDING_UPDATE).
    lb_locks: tokio::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    server_creates: std::sync::atomic::AtomicU64,
    /// The servers the last refresh listed (lineage, servers): `unmanaged`
    /// right after a refresh reuses them instead of listing again.
    last_servers: std::sync::Mutex<Option<(String, Vec<Value>)>>,
    /// Identities seen per cluster key: for resources that recorded none
    /// (a machine whose creation failed).
    identities: std::sync::Mutex<BTreeMap<String, (String, String, String)>>,
    poll: Duration,
    server_timeout: Duration,
}

/// The tag every object of a state carries.
pub(crate) fn lineage_tag(lineage: &str) -> String {
    format!("capi-lineage:{lineage}")
}

const META_LINEAGE: &str = "capi-lineage";
const META_ADDRESS: &str = "capi-address";
const META_IDENTITY: &str = "capi-identity";

fn err(msg: impl Into<String>) -> ProviderError {
    ProviderError::Failed(msg.into())
}

fn sid(v: &Value) -> String {
    v.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn ostr<'a>(o: &'a Observed, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

/// The cluster part of an address in CAPO's names: `<ns>-<name>`.
fn cluster_slug(c: &ClusterId) -> String {
    format!("{}-{}", c.namespace, c.name)
}

impl OpenStackProvider {
    pub(crate) fn new(clients: Clients) -> OpenStackProvider {
        let secs = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs_f64)
                .unwrap_or(Duration::from_secs(d))
        };
        let fixed = matches!(clients, Clients::Fixed(_));
        OpenStackProvider {
            clients,
            cache: Default::default(),
            lb_locks: Default::default(),
            server_creates: Default::default(),
            last_servers: Default::default(),
            identities: Default::default(),
            poll: if fixed {
                Duration::from_millis(1)
            } else {
                Duration::from_secs(1)
            },
            server_timeout: secs("CAPI_OPENSTACK_SERVER_TIMEOUT", 600),
        }
    }

    /// The client for an identity: `Some((namespace, secret, cloud))` from an
    /// identityRef, `None` for the environment.
    async fn client(
        &self,
        identity: Option<(String, String, String)>,
    ) -> Result<Arc<dyn OpenStackApi>, ProviderError> {
        let settings = match &self.clients {
            Clients::Fixed(a) => return Ok(a.clone()),
            Clients::Connect(s) => s,
        };
        let key = match &identity {
            Some((ns, name, cloud))
                if settings.secrets.contains_key(&(ns.clone(), name.clone())) =>
            {
                format!("secret:{ns}/{name}/{cloud}")
            }
            _ => "env".to_string(),
        };
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let (profile, files) =
            auth::cloud_config(settings, identity.as_ref()).map_err(ProviderError::Unavailable)?;
        let api = sdk::SdkApi::connect(&profile, files)
            .await
            .map_err(ProviderError::Unavailable)?;
        let api: Arc<dyn OpenStackApi> = Arc::new(api);
        cache.insert(key, api.clone());
        Ok(api)
    }

    /// The identity of an operation: the spec's identityRef, else the
    /// cluster's (from the network dependency).
    fn identity_of(input: &OpInput<'_>) -> Option<(String, String, String)> {
        let ns = input.cluster.namespace.clone();
        let from_spec = |s: &Spec| match s {
            Spec::Network(n) => capo::identity_ref(&n.infra.spec),
            Spec::Loadbalancer(l) => capo::identity_ref(&l.infra.spec),
            Spec::Machine(m) => capo::identity_ref(&m.infra.spec),
            _ => None,
        };
        from_spec(input.spec)
            .or_else(|| input.deps.iter().find_map(|d| from_spec(&d.attributes)))
            .or_else(|| {
                input.deps.iter().find_map(|d| {
                    let i = d.observed.get("identity")?;
                    Some((
                        i.get("secret")?.as_str()?.to_string(),
                        i.get("cloud")?.as_str()?.to_string(),
                    ))
                })
            })
            .map(|(n, c)| (ns, n, c))
    }

    /// A resource's identity: recorded, else the spec's identityRef, else
    /// the one seen for its cluster.
    fn identity_of_resource(&self, r: &Resource) -> Option<(String, String, String)> {
        let key = r.address.cluster_key().to_string();
        let found = Self::recorded_identity(r).or_else(|| {
            let ns = Self::namespace_of(r);
            let spec = match &r.attributes {
                Spec::Network(n) => &n.infra.spec,
                Spec::Loadbalancer(l) => &l.infra.spec,
                Spec::Machine(m) => &m.infra.spec,
                _ => return None,
            };
            capo::identity_ref(spec).map(|(n, c)| (ns, n, c))
        });
        let mut known = self.identities.lock().unwrap();
        match found {
            Some(i) => {
                known.entry(key).or_insert_with(|| i.clone());
                Some(i)
            }
            None => known.get(&key).cloned(),
        }
    }

    fn remember(&self, cluster_key: &str, identity: &Option<(String, String, String)>) {
        if let Some(i) = identity {
            self.identities
                .lock()
                .unwrap()
                .entry(cluster_key.to_string())
                .or_insert_with(|| i.clone());
        }
    }

    fn namespace_of(r: &Resource) -> String {
        r.address.cluster().namespace
    }

    fn recorded_identity(r: &Resource) -> Option<(String, String, String)> {
        let ns = Self::namespace_of(r);
        let i = r.observed.get("identity")?;
        Some((
            ns,
            i.get("secret")?.as_str()?.to_string(),
            i.get("cloud")?.as_str()?.to_string(),
        ))
    }

    fn identity_json(id: &Option<(String, String, String)>) -> Value {
        match id {
            Some((_, s, c)) => json!({"secret": s, "cloud": c}),
            None => json!({"environment": true}),
        }
    }

    async fn lb_lock(&self, lb: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lb_locks
            .lock()
            .await
            .entry(lb.to_string())
            .or_default()
            .clone()
    }
}

/// Retry transient errors (5xx, 429, 409 that is not quota, connection
/// failures) with exponential backoff; permanent ones fail at once.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let attempts: u32 = std::env::var("CAPI_OPENSTACK_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut delay = Duration::from_millis(500);
    let mut last = None;
    for i in 0..attempts.max(1) {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && i + 1 < attempts => {
                tracing::debug!("{what}: transient error, retrying in {delay:?}: {e}");
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
            Err(e) => return Err(err(e.explain(what))),
        }
    }
    Err(err(last
        .map(|e| e.explain(what))
        .unwrap_or_else(|| what.to_string())))
}

/// Find one object by reference (id or filter), as CAPO does: exactly one.
async fn find_one(
    api: &dyn OpenStackApi,
    kind: Kind,
    r: &Ref,
    extra: Query,
) -> Result<Value, ProviderError> {
    let q = Query {
        id: r.id.clone(),
        name: r.name.clone(),
        tags: r.tags.clone(),
        ..extra
    };
    let found = retry(
        &format!("looking up {} {}", kind.as_str(), r.describe()),
        || api.list(kind, &q),
    )
    .await?;
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap()),
        0 => Err(err(format!(
            "no {} with {} exists in the project",
            kind.as_str(),
            r.describe()
        ))),
        n => Err(err(format!(
            "{n} {}s match {}; CAPO requires exactly one: use an id",
            kind.as_str(),
            r.describe()
        ))),
    }
}

/// Create a Neutron object unless this state already has it, then tag it.
/// The lineage is also in the description, so an object created just before
/// a crash (before its tags were set) is still recognised.
async fn ensure(
    api: &dyn OpenStackApi,
    kind: Kind,
    name: &str,
    lineage: &str,
    tags: &[String],
    mut body: Value,
) -> Result<(Value, bool), ProviderError> {
    let tag = lineage_tag(lineage);
    let q = Query {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let same = retry(&format!("looking up {} {name}", kind.as_str()), || {
        api.list(kind, &q)
    })
    .await?;
    let ours = |v: &Value| {
        v["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == tag.as_str()))
            || v["description"]
                .as_str()
                .is_some_and(|d| d.contains(lineage))
    };
    let mut all = vec![tag.clone()];
    all.extend(tags.iter().cloned());
    if let Some(v) = same.into_iter().find(|v| ours(v)) {
        if !v["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == tag.as_str()))
        {
            let id = sid(&v);
            retry(&format!("tagging {} {name}", kind.as_str()), || {
                api.set_tags(kind, &id, &all)
            })
            .await?;
        }
        return Ok((v, false));
    }
    let desc = body["description"]
        .as_str()
        .unwrap_or("Created by capi")
        .to_string();
    body["description"] = json!(format!("{desc} (capi lineage {lineage})"));
    let what = format!("creating {} {name}", kind.as_str());
    let v = retry(&what, || api.create(kind, &body)).await?;
    let id = sid(&v);
    retry(&format!("tagging {} {name}", kind.as_str()), || {
        api.set_tags(kind, &id, &all)
    })
    .await?;
    Ok((v, true))
}

async fn delete_quietly(api: &dyn OpenStackApi, kind: Kind, id: &str) -> Result<(), ProviderError> {
    if id.is_empty() {
        return Ok(());
    }
    retry(&format!("deleting {} {id}", kind.as_str()), || {
        api.delete(kind, id)
    })
    .await
    .map(|_| ())
}

impl OpenStackProvider {
    async fn wait_lb(
        &self,
        api: &dyn OpenStackApi,
        id: &str,
        what: &str,
    ) -> Result<Value, ProviderError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let lb = retry("reading the load balancer", || {
                api.get(Kind::LoadBalancer, id)
            })
            .await?;
            let Some(lb) = lb else {
                return Err(err(format!("{what}: load balancer {id} disappeared")));
            };
            match lb["provisioning_status"].as_str().unwrap_or_default() {
                "ACTIVE" => return Ok(lb),
                "ERROR" => return Err(err(format!("{what}: load balancer {id} went to ERROR"))),
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!(
                    "{what}: load balancer {id} not ACTIVE after 600s"
                )));
            }
            tokio::time::sleep(self.poll * 2).await;
        }
    }

    /// An Octavia change: wait for the load balancer to be ACTIVE, try, and
    /// on 409 (immutable while PENDING_*) wait and try again.
    async fn lb_op<T, F, Fut>(
        &self,
        api: &dyn OpenStackApi,
        lb: &str,
        what: &str,
        mut f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            self.wait_lb(api, lb, what).await?;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!("{what}: {e}; waiting for the load balancer");
                    tokio::time::sleep(self.poll * 2).await;
                }
                Err(e) => return Err(err(e.explain(what))),
            }
        }
    }

    async fn wait_gone(
        &self,
        api: &dyn OpenStackApi,
        kind: Kind,
        id: &str,
    ) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + self.server_timeout;
        loop {
            if retry("waiting for deletion", || api.get(kind, id))
                .await?
                .is_none()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!(
                    "{} {id} still exists after {:?}",
                    kind.as_str(),
                    self.server_timeout
                )));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    // ------------------------------------------------------------ network

    async fn create_network(
        &self,
        input: &OpInput<'_>,
        n: &crate::resource::NetworkSpec,
    ) -> Result<Observed, ProviderError> {
        let identity = Self::identity_of(input);
        let api = self.client(identity.clone()).await?;
        let api = api.as_ref();
        let plan = ClusterPlan::parse(&n.infra.spec);
        let lineage = input.lineage;
        let name = n.name.clone();
        let slug = cluster_slug(input.cluster);
        let mut o = Observed::new();
        o.insert("identity".into(), Self::identity_json(&identity));

        // External network: named, or the only one (CAPO's lookup).
        let external = if plan.disable_external_network {
            None
        } else if let Some(r) = &plan.external_network {
            Some(
                find_one(
                    api,
                    Kind::Network,
                    r,
                    Query {
                        external: Some(true),
                        ..Default::default()
                    },
                )
                .await?,
            )
        } else {
            let q = Query {
                external: Some(true),
                ..Default::default()
            };
            let all = retry("listing external networks", || api.list(Kind::Network, &q)).await?;
            match all.len() {
                0 => None,
                1 => all.into_iter().next(),
                n => return Err(err(format!("{n} external networks exist; set spec.externalNetwork to choose one (or disableExternalNetwork: true)"))),
            }
        };
        if let Some(e) = &external {
            o.insert("external_network_id".into(), json!(sid(e)));
        }

        // Network and subnets: referenced, or managed.
        let (network, subnets, managed) = if let Some(r) = &plan.network {
            let net = find_one(api, Kind::Network, r, Query::default()).await?;
            let mut subnets = Vec::new();
            if plan.subnets.is_empty() {
                let q = Query {
                    network_id: Some(sid(&net)),
                    ..Default::default()
                };
                subnets = retry("listing the network's subnets", || {
                    api.list(Kind::Subnet, &q)
                })
                .await?;
            } else {
                for s in &plan.subnets {
                    subnets.push(
                        find_one(
                            api,
                            Kind::Subnet,
                            s,
                            Query {
                                network_id: Some(sid(&net)),
                                ..Default::default()
                            },
                        )
                        .await?,
                    );
                }
            }
            if subnets.is_empty() {
                return Err(err(format!("network {} has no subnet", r.describe())));
            }
            (net, subnets, false)
        } else {
            let mut body =
                json!({"name": name, "description": format!("Created by capi for cluster {slug}")});
            if let Some(m) = plan.mtu {
                body["mtu"] = json!(m);
            }
            if plan.disable_port_security {
                body["port_security_enabled"] = json!(false);
            }
            let (net, _) = ensure(api, Kind::Network, &name, lineage, &plan.tags, body).await?;
            let mut subnets = Vec::new();
            for (i, ms) in plan.managed_subnets.iter().enumerate() {
                let sname = if i == 0 {
                    name.clone()
                } else {
                    format!("{name}-{i}")
                };
                let mut body = json!({"name": sname, "network_id": sid(&net), "cidr": ms.cidr, "ip_version": 4,
                                      "description": format!("Created by capi for cluster {slug}"),
                                      "dns_nameservers": ms.dns});
                if !ms.pools.is_empty() {
                    body["allocation_pools"] = Value::Array(
                        ms.pools
                            .iter()
                            .map(|(s, e)| json!({"start": s, "end": e}))
                            .collect(),
                    );
                }
                let (sub, _) = ensure(api, Kind::Subnet, &sname, lineage, &plan.tags, body).await?;
                subnets.push(sub);
            }
            (net, subnets, true)
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
            if let Some(r) = &plan.router {
                let router = find_one(api, Kind::Router, r, Query::default()).await?;
                o.insert("router_id".into(), json!(sid(&router)));
                o.insert("router_managed".into(), json!(false));
            } else if let Some(ext) = &external {
                let body = json!({"name": name, "description": format!("Created by capi for cluster {slug}"),
                                  "external_gateway_info": {"network_id": sid(ext)}});
                let (router, _) =
                    ensure(api, Kind::Router, &name, lineage, &plan.tags, body).await?;
                o.insert("router_id".into(), json!(sid(&router)));
                o.insert("router_managed".into(), json!(true));
            }
            if let Some(rid) = o
                .get("router_id")
                .and_then(Value::as_str)
                .map(str::to_string)
            {
                for s in &subnets {
                    let sub = sid(s);
                    match api.router_interface(&rid, &sub, true).await {
                        Ok(()) => {}
                        // Already attached (a re-run after a crash).
                        Err(e) if e.status == Some(400) && e.message.contains("already") => {}
                        Err(e) if e.is_transient() => {
                            retry("adding the router interface", || {
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
            }
        }

        // Managed security groups with CAPO's rules.
        if let Some(sg) = &plan.security_groups {
            let mut ids = BTreeMap::new();
            for (role, _) in [("controlplane", &sg.control_plane), ("worker", &sg.worker)] {
                let sg_name = format!("k8s-cluster-{slug}-secgroup-{role}");
                let body = json!({"name": sg_name, "description": format!("Cluster API managed group for {slug} ({role})")});
                let (g, _) = ensure(
                    api,
                    Kind::SecurityGroup,
                    &sg_name,
                    lineage,
                    &plan.tags,
                    body,
                )
                .await?;
                ids.insert(role.to_string(), sid(&g));
            }
            o.insert("security_groups".into(), json!(ids));
            self.reconcile_rules(api, &plan, &ids, lineage).await?;
        }
        Ok(o)
    }

    /// Make the managed groups' rules what the spec says (add missing,
    /// remove rules capi no longer wants; the default egress rules stay).
    async fn reconcile_rules(
        &self,
        api: &dyn OpenStackApi,
        plan: &ClusterPlan,
        ids: &BTreeMap<String, String>,
        lineage: &str,
    ) -> Result<(), ProviderError> {
        let Some(sg) = &plan.security_groups else {
            return Ok(());
        };
        let q = Query::tagged(&lineage_tag(lineage));
        let groups = retry("listing security groups", || {
            api.list(Kind::SecurityGroup, &q)
        })
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
                match api.create(Kind::SecurityGroupRule, &body).await {
                    Ok(_) => {}
                    Err(e)
                        if e.status == Some(409)
                            && e.message.to_ascii_lowercase().contains("already exists") => {}
                    Err(e) if e.is_transient() => {
                        retry("creating a security group rule", || {
                            api.create(Kind::SecurityGroupRule, &body)
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
                    delete_quietly(api, Kind::SecurityGroupRule, &sid(r)).await?;
                }
            }
        }
        Ok(())
    }

    async fn delete_network(
        &self,
        api: &dyn OpenStackApi,
        r: &Resource,
    ) -> Result<(), ProviderError> {
        let o = &r.observed;
        let ids = |k: &str| -> Vec<String> { capo::strings(o.get(k)) };
        if let Some(rid) = ostr(o, "router_id") {
            for s in ids("router_interfaces") {
                match api.router_interface(rid, &s, false).await {
                    Ok(()) => {}
                    Err(e) if e.status == Some(404) => {}
                    Err(e) => return Err(err(e.explain("removing the router interface"))),
                }
            }
            if o.get("router_managed") == Some(&json!(true)) {
                delete_quietly(api, Kind::Router, rid).await?;
            }
        }
        if let Some(Value::Object(g)) = o.get("security_groups") {
            for id in g.values().filter_map(Value::as_str) {
                // Rules referencing the other group go with their group.
                delete_quietly(api, Kind::SecurityGroup, id).await?;
            }
        }
        if o.get("network_managed") == Some(&json!(true)) {
            for s in ids("subnet_ids") {
                delete_quietly(api, Kind::Subnet, &s).await?;
            }
            if let Some(n) = ostr(o, "network_id") {
                delete_quietly(api, Kind::Network, n).await?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------- API endpoint

    async fn create_lb(
        &self,
        input: &OpInput<'_>,
        l: &crate::resource::LoadBalancerSpec,
    ) -> Result<Observed, ProviderError> {
        let identity = Self::identity_of(input);
        let api = self.client(identity.clone()).await?;
        let api = api.as_ref();
        let plan = ClusterPlan::parse(&l.infra.spec);
        let net = input
            .dep(crate::resource::ResourceKind::Network)
            .ok_or_else(|| err("the cluster network is not in the state"))?;
        let slug = cluster_slug(input.cluster);
        let lineage = input.lineage;
        let mut o = Observed::new();
        o.insert("identity".into(), Self::identity_json(&identity));
        let subnet = net
            .observed
            .get("subnet_ids")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ext = ostr(&net.observed, "external_network_id").map(str::to_string);
        let mut vip_port = None;
        let mut address = None;
        if plan.lb {
            let name = format!("k8s-clusterapi-cluster-{slug}-kubeapi");
            let lb = match find_ours_lb(api, &name, lineage).await? {
                Some(lb) => lb,
                None => {
                    let mut body = json!({"name": name, "description": format!("Created by capi for cluster {slug}"),
                                          "vip_subnet_id": subnet, "tags": [lineage_tag(lineage)]});
                    if let Some(p) = &plan.lb_provider {
                        body["provider"] = json!(p);
                    }
                    retry("creating the API server load balancer", || {
                        api.create(Kind::LoadBalancer, &body)
                    })
                    .await?
                }
            };
            let id = sid(&lb);
            let what = "creating the API server load balancer";
            let mut lb = self.wait_lb(api, &id, what).await?;
            // Then, one at a time as CAPO does: listener, pool, monitor.
            let listener = match lb["listeners"].get(0).map(sid) {
                Some(l) => l,
                None => {
                    let body = json!({"loadbalancer_id": id, "protocol_port": l.port, "name": format!("{name}-{}", l.port)});
                    sid(&self
                        .lb_op(api, &id, what, || api.create_lb_child("listener", &body))
                        .await?)
                }
            };
            lb = self.wait_lb(api, &id, what).await?;
            let pool = match lb["pools"].get(0).map(sid) {
                Some(p) => p,
                None => {
                    let body =
                        json!({"listener_id": listener, "name": format!("{name}-{}", l.port)});
                    sid(&self
                        .lb_op(api, &id, what, || api.create_lb_child("pool", &body))
                        .await?)
                }
            };
            let hm = retry("reading the pool", || api.get_pool(&pool))
                .await?
                .and_then(|p| p["healthmonitor_id"].as_str().map(str::to_string));
            if hm.is_none() {
                let body = json!({"pool_id": pool, "name": format!("{name}-{}", l.port)});
                self.lb_op(api, &id, what, || {
                    api.create_lb_child("healthmonitor", &body)
                })
                .await?;
            }
            let lb = self.wait_lb(api, &id, what).await?;
            o.insert("loadbalancer_id".into(), json!(id));
            o.insert("pool_id".into(), json!(pool));
            o.insert("listener_id".into(), json!(listener));
            o.insert("vip_address".into(), lb["vip_address"].clone());
            vip_port = lb["vip_port_id"].as_str().map(str::to_string);
            address = lb["vip_address"].as_str().map(str::to_string);
        }
        if plan.floating_ip {
            if let Some(ext) = &ext {
                let description = format!("capi API server of {slug}");
                let q = Query::tagged(&lineage_tag(lineage));
                let existing =
                    retry("listing floating IPs", || api.list(Kind::FloatingIp, &q)).await?;
                let fip = match existing
                    .into_iter()
                    .find(|f| f["description"] == description.as_str())
                {
                    Some(f) => f,
                    None => {
                        let mut body =
                            json!({"floating_network_id": ext, "description": description});
                        if let Some(a) = &plan.floating_ip_address {
                            body["floating_ip_address"] = json!(a);
                        }
                        if let Some(p) = &vip_port {
                            body["port_id"] = json!(p);
                        }
                        let f = retry("creating the API server floating IP", || {
                            api.create(Kind::FloatingIp, &body)
                        })
                        .await?;
                        let id = sid(&f);
                        let mut tags = vec![lineage_tag(lineage)];
                        tags.extend(plan.tags.iter().cloned());
                        retry("tagging the floating IP", || {
                            api.set_tags(Kind::FloatingIp, &id, &tags)
                        })
                        .await?;
                        f
                    }
                };
                o.insert("floating_ip_id".into(), json!(sid(&fip)));
                o.insert("floating_ip".into(), fip["floating_ip_address"].clone());
                address = fip["floating_ip_address"].as_str().map(str::to_string);
            }
        }
        o.insert(
            "mode".into(),
            json!(if plan.lb {
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

    async fn delete_lb(&self, api: &dyn OpenStackApi, r: &Resource) -> Result<(), ProviderError> {
        if let Some(f) = ostr(&r.observed, "floating_ip_id") {
            delete_quietly(api, Kind::FloatingIp, f).await?;
        }
        if let Some(id) = ostr(&r.observed, "loadbalancer_id") {
            if let Some(lb) = retry("reading the load balancer", || {
                api.get(Kind::LoadBalancer, id)
            })
            .await?
            {
                if lb["provisioning_status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("PENDING") && s != "PENDING_DELETE")
                {
                    self.wait_lb(api, id, "deleting the load balancer").await?;
                }
                delete_quietly(api, Kind::LoadBalancer, id).await?;
                self.wait_gone(api, Kind::LoadBalancer, id).await?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ machines

    async fn create_machine(
        &self,
        input: &OpInput<'_>,
        m: &crate::resource::MachineSpec,
    ) -> Result<Observed, ProviderError> {
        let identity = Self::identity_of(input);
        let api = self.client(identity.clone()).await?;
        let api = api.as_ref();
        let plan = MachinePlan::parse(&m.infra.spec);
        let net = input
            .dep(crate::resource::ResourceKind::Network)
            .ok_or_else(|| err("the cluster network is not in the state"))?;
        let lbr = input.dep(crate::resource::ResourceKind::Loadbalancer);
        let cluster_plan = match &net.attributes {
            Spec::Network(n) => ClusterPlan::parse(&n.infra.spec),
            _ => return Err(err("the network resource has no network spec")),
        };
        let lineage = input.lineage;
        let tag = lineage_tag(lineage);

        // Adoption: a server of this state at this address (a crash came
        // between its creation and the state write).
        let q = Query {
            tags: vec![tag.clone()],
            name: Some(m.name.clone()),
            ..Default::default()
        };
        let existing = retry("looking up servers", || api.list(Kind::Server, &q)).await?;
        let existing = existing.into_iter().find(|s| {
            s.pointer(&format!("/metadata/{META_ADDRESS}"))
                .and_then(Value::as_str)
                == Some(input.address.as_str())
        });

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
                // Flavor, image, key pair: resolved before anything is created.
                let fref = plan
                    .flavor
                    .clone()
                    .ok_or_else(|| err("the machine template has no flavor"))?;
                let flavors = retry("looking up the flavor", || {
                    api.find_flavor(fref.id.as_deref(), fref.name.as_deref())
                })
                .await?;
                let flavor = match flavors.len() {
                    1 => sid(&flavors[0]),
                    0 => {
                        return Err(err(format!(
                            "flavor {} does not exist (see `openstack flavor list`)",
                            fref.describe()
                        )))
                    }
                    n => {
                        return Err(err(format!(
                            "{n} flavors match {}; use flavor.id",
                            fref.describe()
                        )))
                    }
                };
                let image = match &plan.image {
                    Some(iref) => {
                        let images = retry("looking up the image", || {
                            api.find_image(iref.id.as_deref(), iref.name.as_deref(), &iref.tags)
                        })
                        .await?;
                        match images.len() {
                            1 => Some(sid(&images[0])),
                            0 => {
                                return Err(err(format!(
                                    "image {} does not exist (see `openstack image list`)",
                                    iref.describe()
                                )))
                            }
                            n => {
                                return Err(err(format!(
                                    "{n} images match {}; CAPO requires exactly one: use image.id",
                                    iref.describe()
                                )))
                            }
                        }
                    }
                    None => None,
                };
                if let Some(k) = &plan.ssh_key {
                    if retry("looking up the key pair", || api.get_keypair(k))
                        .await?
                        .is_none()
                    {
                        return Err(err(format!("key pair {k:?} (sshKeyName) does not exist; create it with `openstack keypair create`")));
                    }
                }
                // Security groups: the managed group of the role plus the template's.
                let mut sgs = Vec::new();
                let role = if m.role == Role::ControlPlane {
                    "controlplane"
                } else {
                    "worker"
                };
                if let Some(id) = net
                    .observed
                    .get("security_groups")
                    .and_then(|g| g.get(role))
                    .and_then(Value::as_str)
                {
                    sgs.push(id.to_string());
                }
                for r in &plan.security_groups {
                    sgs.push(sid(&find_one(
                        api,
                        Kind::SecurityGroup,
                        r,
                        Query::default(),
                    )
                    .await?));
                }
                let network_id = ostr(&net.observed, "network_id")
                    .ok_or_else(|| err("the cluster network has no id in the state"))?;
                let mut tags = vec![tag.clone()];
                tags.extend(cluster_plan.tags.iter().cloned());
                tags.extend(plan.tags.iter().cloned());
                let port_name = format!("{}-0", m.name);
                let port = match find_machine_port(api, &port_name, input.address).await? {
                    Some(p) => p,
                    None => {
                        let mut body = json!({"name": port_name, "network_id": network_id, "tags": tags,
                                              "description": format!("capi machine {}", input.address)});
                        if !sgs.is_empty() && !cluster_plan.disable_port_security {
                            body["security_groups"] = json!(sgs);
                        }
                        if let Some(sub) = net
                            .observed
                            .get("subnet_ids")
                            .and_then(|a| a.get(0))
                            .and_then(Value::as_str)
                        {
                            body["fixed_ips"] = json!([{"subnet_id": sub}]);
                        }
                        let p = retry(&format!("creating port {port_name}"), || {
                            api.create(Kind::Port, &body)
                        })
                        .await?;
                        // Neutron (Zed) ignores tags in a create: set them.
                        let pid = sid(&p);
                        retry(&format!("tagging port {port_name}"), || {
                            api.set_tags(Kind::Port, &pid, &tags)
                        })
                        .await?;
                        p
                    }
                };
                let user_data = base64::engine::general_purpose::STANDARD
                    .encode(input.bootstrap.unwrap_or_default());
                let mut metadata = serde_json::Map::new();
                for (k, v) in &plan.metadata {
                    metadata.insert(k.clone(), json!(v));
                }
                metadata.insert(META_LINEAGE.into(), json!(lineage));
                metadata.insert(META_ADDRESS.into(), json!(input.address.as_str()));
                metadata.insert(META_IDENTITY.into(), json!(m.identity));
                let mut body = json!({"name": m.name, "flavorRef": flavor, "networks": [{"port": sid(&port)}],
                                      "user_data": user_data, "metadata": metadata, "tags": tags});
                if let Some(i) = &image {
                    body["imageRef"] = json!(i);
                }
                if let Some(k) = &plan.ssh_key {
                    body["key_name"] = json!(k);
                }
                if let Some(cd) = plan.config_drive {
                    body["config_drive"] = json!(cd);
                }
                let omit_az = m.role == Role::ControlPlane && cluster_plan.control_plane_omit_az;
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
                // Never retried blindly: a lost answer may hide a created
                // server, found by its tags on the next apply.
                let s = match api.create(Kind::Server, &body).await {
                    Ok(s) => s,
                    Err(e) => {
                        // Leave nothing behind (a failed machine records no ids).
                        if e.status.is_some() {
                            let _ = api.delete(Kind::Port, &sid(&port)).await;
                        }
                        return Err(err(e.explain(&format!("creating server {}", m.name))));
                    }
                };
                let n = self
                    .server_creates
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    + 1;
                crash_point("CAPI_OPENSTACK_CRASH_AFTER_SERVER_CREATE", n);
                s
            }
        };
        let server_id = sid(&server);
        let server = self.wait_active(api, &server_id, &m.name).await?;
        let pq = Query {
            device_id: Some(server_id.clone()),
            ..Default::default()
        };
        let ports = retry("listing the server's ports", || api.list(Kind::Port, &pq)).await?;
        let port = ports.into_iter().next().unwrap_or(Value::Null);
        let ip = port
            .pointer("/fixed_ips/0/ip_address")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| first_address(&server));
        let mut o = Observed::new();
        o.insert("identity".into(), Self::identity_json(&identity));
        o.insert("server_id".into(), json!(server_id));
        o.insert("port_id".into(), json!(sid(&port)));
        o.insert("ip".into(), json!(ip));
        o.insert(
            "provider_id".into(),
            json!(format!("openstack:///{server_id}")),
        );
        o.insert("status".into(), server["status"].clone());
        o.insert("ready".into(), json!(true));
        o.insert("bootstrap".into(), json!("delivered"));
        if let Some(az) = server.get("OS-EXT-AZ:availability_zone") {
            o.insert("availability_zone".into(), az.clone());
        }

        // Control plane: behind the API server endpoint.
        if m.role == Role::ControlPlane {
            if let Some(lbr) = lbr {
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
                    let members = retry("listing pool members", || api.list_members(pool)).await?;
                    let member = match members.into_iter().find(|x| x["address"] == ip.as_str()) {
                        Some(mb) => mb,
                        None => {
                            let body = json!({"name": m.name, "address": ip, "protocol_port": port_no,
                                              "subnet_id": port.pointer("/fixed_ips/0/subnet_id")});
                            let mb = self
                                .lb_op(
                                    api,
                                    lb_id,
                                    "adding the machine to the API server pool",
                                    || api.add_member(pool, &body),
                                )
                                .await?;
                            self.wait_lb(api, lb_id, "adding a pool member").await?;
                            mb
                        }
                    };
                    o.insert("pool_id".into(), json!(pool));
                    o.insert("loadbalancer_id".into(), json!(lb_id));
                    o.insert("member_id".into(), json!(sid(&member)));
                } else if let Some(fip) = ostr(&lbr.observed, "floating_ip_id") {
                    // Floating-IP mode: the API address follows a control-plane machine.
                    let cur = retry("reading the API floating IP", || {
                        api.get(Kind::FloatingIp, fip)
                    })
                    .await?;
                    let free = cur.as_ref().is_some_and(|f| f["port_id"].is_null());
                    if free {
                        let pid = sid(&port);
                        retry("associating the API floating IP", || {
                            api.associate_floating_ip(fip, Some(&pid))
                        })
                        .await?;
                        o.insert("api_floating_ip_id".into(), json!(fip));
                    }
                }
            }
        }
        Ok(o)
    }

    async fn wait_active(
        &self,
        api: &dyn OpenStackApi,
        id: &str,
        name: &str,
    ) -> Result<Value, ProviderError> {
        let deadline = tokio::time::Instant::now() + self.server_timeout;
        loop {
            let s = retry(&format!("reading server {name}"), || {
                api.get(Kind::Server, id)
            })
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
                    let _ = api.delete(Kind::Server, id).await;
                    let _ = self.wait_gone(api, Kind::Server, id).await;
                    let port = format!("{name}-0");
                    let q = Query {
                        name: Some(port),
                        ..Default::default()
                    };
                    if let Ok(ps) = api.list(Kind::Port, &q).await {
                        for p in ps {
                            let _ = api.delete(Kind::Port, &sid(&p)).await;
                        }
                    }
                    return Err(err(format!("server {name} went to ERROR: {fault} (the server and its port were deleted)")));
                }
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                let _ = api.delete(Kind::Server, id).await;
                let _ = self.wait_gone(api, Kind::Server, id).await;
                let q = Query {
                    name: Some(format!("{name}-0")),
                    ..Default::default()
                };
                if let Ok(ps) = api.list(Kind::Port, &q).await {
                    for p in ps {
                        let _ = api.delete(Kind::Port, &sid(&p)).await;
                    }
                }
                return Err(err(format!(
                    "server {name} ({id}) was still {} after {:?} (CAPI_OPENSTACK_SERVER_TIMEOUT) and was deleted",
                    s["status"].as_str().unwrap_or("?"),
                    self.server_timeout
                )));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn delete_machine(
        &self,
        api: &dyn OpenStackApi,
        r: &Resource,
        lineage: &str,
    ) -> Result<(), ProviderError> {
        let o = &r.observed;
        let m = r.attributes.as_machine();
        if let (Some(pool), Some(member)) = (ostr(o, "pool_id"), ostr(o, "member_id")) {
            let lb = ostr(o, "loadbalancer_id").unwrap_or_default().to_string();
            let lock = self.lb_lock(&lb).await;
            let _g = lock.lock().await;
            if retry("reading the load balancer", || {
                api.get(Kind::LoadBalancer, &lb)
            })
            .await?
            .is_some()
            {
                self.lb_op(
                    api,
                    &lb,
                    "removing the machine from the API server pool",
                    || api.remove_member(pool, member),
                )
                .await?;
                self.wait_lb(api, &lb, "removing a pool member").await?;
            }
        }
        if let Some(fip) = ostr(o, "api_floating_ip_id") {
            if let Some(f) = retry("reading the API floating IP", || {
                api.get(Kind::FloatingIp, fip)
            })
            .await?
            {
                if f["port_id"].as_str() == ostr(o, "port_id") {
                    retry("dissociating the API floating IP", || {
                        api.associate_floating_ip(fip, None)
                    })
                    .await?;
                }
            }
        }
        // The server: by id, else (never recorded) by tags and address.
        let mut server_ids: Vec<String> = ostr(o, "server_id")
            .map(|s| vec![s.to_string()])
            .unwrap_or_default();
        if server_ids.is_empty() {
            if let Some(m) = m {
                let q = Query {
                    tags: vec![lineage_tag(lineage)],
                    name: Some(m.name.clone()),
                    ..Default::default()
                };
                for s in retry("looking up servers", || api.list(Kind::Server, &q)).await? {
                    if s.pointer(&format!("/metadata/{META_ADDRESS}"))
                        .and_then(Value::as_str)
                        == Some(r.address.as_str())
                    {
                        server_ids.push(sid(&s));
                    }
                }
            }
        }
        for id in &server_ids {
            delete_quietly(api, Kind::Server, id).await?;
            self.wait_gone(api, Kind::Server, id).await?;
        }
        // Ports we created outlive their server.
        let mut port_ids: Vec<String> = ostr(o, "port_id")
            .filter(|p| !p.is_empty())
            .map(|s| vec![s.to_string()])
            .unwrap_or_default();
        if let Some(m) = m {
            if let Some(p) = find_machine_port(api, &format!("{}-0", m.name), &r.address).await? {
                port_ids.push(sid(&p));
            }
        }
        port_ids.sort();
        port_ids.dedup();
        for p in port_ids {
            delete_quietly(api, Kind::Port, &p).await?;
        }
        Ok(())
    }
}

async fn find_ours_lb(
    api: &dyn OpenStackApi,
    name: &str,
    lineage: &str,
) -> Result<Option<Value>, ProviderError> {
    let q = Query {
        name: Some(name.to_string()),
        tags: vec![lineage_tag(lineage)],
        ..Default::default()
    };
    Ok(retry("looking up load balancers", || {
        api.list(Kind::LoadBalancer, &q)
    })
    .await?
    .into_iter()
    .find(|l| {
        l["provisioning_status"] != "DELETED" && l["provisioning_status"] != "PENDING_DELETE"
    }))
}

/// The port capi created for a machine: by name and by the address in its
/// description (found even when a crash came before it was tagged).
async fn find_machine_port(
    api: &dyn OpenStackApi,
    name: &str,
    address: &Address,
) -> Result<Option<Value>, ProviderError> {
    let q = Query {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let want = format!("capi machine {address}");
    Ok(retry(&format!("looking up port {name}"), || {
        api.list(Kind::Port, &q)
    })
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

/// Test hook: `CAPI_OPENSTACK_CRASH_AFTER_SERVER_CREATE=<n>` ends the
/// process right after the n-th server create was accepted, before the
/// state records it (like a SIGKILL at that point).
fn crash_point(var: &str, n: u64) {
    if std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) == Some(n) {
        #[allow(
            clippy::print_stderr,
            reason = "a test hook announces itself before the exit"
        )]
        {
            eprintln!("{var}={n}: exiting as if killed");
        }
        std::process::exit(137);
    }
}

#[async_trait]
impl Provider for OpenStackProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openstack
    }

    async fn create(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        self.remember(input.address.cluster_key(), &Self::identity_of(input));
        let r = match input.spec {
            Spec::Network(n) => self.create_network(input, n).await,
            Spec::Loadbalancer(l) => self.create_lb(input, l).await,
            Spec::Machine(m) => self.create_machine(input, m).await,
            Spec::Token(_) => Ok(Observed::new()),
            Spec::Pki(_) | Spec::Bootstrap(_) => {
                Err(err("local resource sent to the OpenStack provider"))
            }
        };
        r.map_err(|e| match e {
            ProviderError::Failed(m) => ProviderError::Failed(input.redactor.redact(&m)),
            other => other,
        })
    }

    async fn update(
        &self,
        input: &OpInput<'_>,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        match input.spec {
            Spec::Network(n) => {
                // In place: the managed security groups' rules.
                let api = self.client(Self::identity_of(input)).await?;
                let plan = ClusterPlan::parse(&n.infra.spec);
                let mut o = current.observed.clone();
                let mut ids: BTreeMap<String, String> = o
                    .get("security_groups")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                if plan.security_groups.is_some() && ids.len() < 2 {
                    for role in ["controlplane", "worker"] {
                        let name = format!(
                            "k8s-cluster-{}-secgroup-{role}",
                            cluster_slug(input.cluster)
                        );
                        let (g, _) = ensure(
                            api.as_ref(),
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
                self.reconcile_rules(api.as_ref(), &plan, &ids, input.lineage)
                    .await?;
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
                            retry("updating the subnet's DNS servers", || {
                                api.set_subnet_dns(id, &ms.dns)
                            })
                            .await?;
                        }
                    }
                }
                Ok(o)
            }
            _ => Ok(current.observed.clone()),
        }
    }

    async fn delete(
        &self,
        r: &Resource,
        lineage: &str,
        redactor: &Redactor,
    ) -> Result<(), ProviderError> {
        if matches!(
            r.attributes,
            Spec::Token(_) | Spec::Pki(_) | Spec::Bootstrap(_)
        ) {
            return Ok(());
        }
        let api = match self.client(self.identity_of_resource(r)).await {
            Ok(a) => a,
            // A machine whose creation failed recorded nothing: a failed
            // create leaves nothing in the cloud (see create_machine).
            Err(_)
                if r.attributes.as_machine().is_some() && !r.observed.contains_key("server_id") =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let res = match &r.attributes {
            Spec::Network(_) => self.delete_network(api.as_ref(), r).await,
            Spec::Loadbalancer(_) => self.delete_lb(api.as_ref(), r).await,
            Spec::Machine(_) => self.delete_machine(api.as_ref(), r, lineage).await,
            _ => Ok(()),
        };
        res.map_err(|e| match e {
            ProviderError::Failed(m) => ProviderError::Failed(redactor.redact(&m)),
            other => other,
        })
    }

    async fn refresh(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        // One list call per object type per credential, whatever the
        // number of resources.
        let mut groups: BTreeMap<String, (Option<(String, String, String)>, Vec<&Resource>)> =
            BTreeMap::new();
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
            let api = self.client(identity).await?;
            let before = api.calls().values().sum::<u64>();
            let (refreshed, servers) = refresh_group(api.as_ref(), &rs, lineage).await?;
            out.extend(refreshed);
            if let Some(servers) = servers {
                *self.last_servers.lock().unwrap() = Some((lineage.to_string(), servers));
            }
            let calls = api.calls().values().sum::<u64>() - before;
            tracing::debug!(
                "openstack: refreshed {} resources with {calls} API calls",
                rs.len()
            );
        }
        Ok(out)
    }

    async fn unmanaged(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError> {
        let known_set: BTreeSet<&str> = known.iter().map(|r| r.address.as_str()).collect();
        let identity = known.iter().find_map(|r| self.identity_of_resource(r));
        let api = self.client(identity).await?;
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
                retry("listing servers", || api.list(Kind::Server, &q)).await?
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

/// Refresh resources of one cloud: one list per object type.
async fn refresh_group(
    api: &dyn OpenStackApi,
    rs: &[&Resource],
    lineage: &str,
) -> Result<(Vec<Refreshed>, Option<Vec<Value>>), ProviderError> {
    let q = Query::tagged(&lineage_tag(lineage));
    let has = |k: crate::resource::ResourceKind| rs.iter().any(|r| r.attributes.kind() == k);
    use crate::resource::ResourceKind as RK;
    let mut lists: BTreeMap<Kind, Vec<Value>> = BTreeMap::new();
    let mut kinds = Vec::new();
    if has(RK::Network) {
        kinds.extend([
            Kind::Network,
            Kind::Subnet,
            Kind::Router,
            Kind::SecurityGroup,
        ]);
    }
    if has(RK::Loadbalancer) {
        kinds.push(Kind::LoadBalancer);
    }
    if has(RK::Loadbalancer) || has(RK::Machine) {
        kinds.push(Kind::FloatingIp);
    }
    if has(RK::Machine) {
        kinds.extend([Kind::Server, Kind::Port]);
    }
    for k in kinds {
        let v = retry(&format!("listing {}s", k.as_str()), || api.list(k, &q)).await?;
        lists.insert(k, v);
    }
    let find = |k: Kind, id: &str| {
        lists
            .get(&k)
            .and_then(|l| l.iter().find(|o| sid(o) == id))
            .cloned()
    };
    let mut out = Vec::new();
    for r in rs {
        let o = &r.observed;
        let mut diffs = Vec::new();
        let mut missing = false;
        let mut stopped = None;
        let mut changed = |path: &str, before: Value, after: Option<Value>| {
            diffs.push(AttributeChange {
                path: path.into(),
                before: Some(before),
                after,
            })
        };
        match &r.attributes {
            Spec::Network(n) => {
                if o.get("network_managed") == Some(&json!(true)) {
                    let nid = ostr(o, "network_id").unwrap_or_default();
                    if find(Kind::Network, nid).is_none() {
                        missing = true;
                    }
                    for s in o
                        .get("subnet_ids")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        if find(Kind::Subnet, s).is_none() {
                            changed("subnet", json!(s), None);
                        }
                    }
                }
                if o.get("router_managed") == Some(&json!(true))
                    && find(Kind::Router, ostr(o, "router_id").unwrap_or_default()).is_none()
                {
                    changed("router", o["router_id"].clone(), None);
                }
                if let Some(Value::Object(g)) = o.get("security_groups") {
                    let plan = ClusterPlan::parse(&n.infra.spec);
                    let ids: BTreeMap<String, String> = g
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect();
                    let lookup = |x: &str| ids.get(x).cloned();
                    if let Some(sg) = &plan.security_groups {
                        for (role, rules) in
                            [("controlplane", &sg.control_plane), ("worker", &sg.worker)]
                        {
                            let gid = ids.get(role).cloned().unwrap_or_default();
                            match find(Kind::SecurityGroup, &gid) {
                                None => {
                                    changed(&format!("security_groups.{role}"), json!(gid), None)
                                }
                                Some(gv) => {
                                    let have: BTreeSet<String> = gv["security_group_rules"]
                                        .as_array()
                                        .into_iter()
                                        .flatten()
                                        .map(capo::neutron_sig)
                                        .collect();
                                    let want: BTreeSet<String> =
                                        rules.iter().map(|r| r.signature(&lookup)).collect();
                                    let lost = want.difference(&have).count();
                                    if lost > 0 {
                                        changed(
                                            &format!("security_groups.{role}.rules"),
                                            json!(want.len()),
                                            Some(json!(format!("{lost} rule(s) missing"))),
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Spec::Loadbalancer(_) => {
                if let Some(id) = ostr(o, "loadbalancer_id") {
                    match find(Kind::LoadBalancer, id) {
                        None => missing = true,
                        Some(lb) if lb["provisioning_status"] == "ERROR" => {
                            stopped = Some("in ERROR (load balancer)".to_string())
                        }
                        Some(_) => {}
                    }
                }
                if let Some(f) = ostr(o, "floating_ip_id") {
                    match find(Kind::FloatingIp, f) {
                        None => missing = true,
                        Some(fv) if fv["floating_ip_address"] != o["floating_ip"] => changed(
                            "floating_ip",
                            o["floating_ip"].clone(),
                            Some(fv["floating_ip_address"].clone()),
                        ),
                        Some(_) => {}
                    }
                }
            }
            Spec::Machine(m) => {
                let sid_ = ostr(o, "server_id").unwrap_or_default();
                match find(Kind::Server, sid_) {
                    None => missing = true,
                    Some(s) => {
                        let status = s["status"].as_str().unwrap_or_default().to_string();
                        if status != "ACTIVE" && status != "BUILD" {
                            stopped = Some(status.clone());
                        }
                        let ident = s
                            .pointer(&format!("/metadata/{META_IDENTITY}"))
                            .and_then(Value::as_str);
                        if ident.is_some_and(|i| i != m.identity) {
                            changed(
                                &format!("metadata.{META_IDENTITY}"),
                                json!(m.identity),
                                ident.map(|i| json!(i)),
                            );
                        }
                        if let Some(pid) = ostr(o, "port_id") {
                            match find(Kind::Port, pid) {
                                None => changed("port", json!(pid), None),
                                Some(p) => {
                                    let ip = p
                                        .pointer("/fixed_ips/0/ip_address")
                                        .cloned()
                                        .unwrap_or(Value::Null);
                                    if o.get("ip").is_some_and(|x| *x != ip) {
                                        changed("ip", o["ip"].clone(), Some(ip));
                                    }
                                }
                            }
                        }
                        if let Some(fip) = ostr(o, "api_floating_ip_id") {
                            let port = find(Kind::FloatingIp, fip)
                                .map(|f| f["port_id"].clone())
                                .unwrap_or(Value::Null);
                            if port != o["port_id"] {
                                changed("api_floating_ip.port", o["port_id"].clone(), Some(port));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        let observation = if missing {
            Some(Observation::Missing)
        } else if let Some(s) = stopped {
            Some(Observation::Stopped(s))
        } else if !diffs.is_empty() {
            Some(Observation::Changed(diffs))
        } else {
            None
        };
        out.push(Refreshed {
            address: r.address.clone(),
            observation,
        });
    }
    Ok((out, lists.get(&Kind::Server).cloned()))
}

#[cfg(test)]
mod tests;
