//! The OpenStack provider: clusters on an OpenStack cloud, with Cluster API
//! OpenStack provider (CAPO) semantics. See docs/providers/openstack.md.
//!
//! capi resource → cloud objects, one room each:
//! * `network` ([`network`]): network, subnet(s), router with external
//!   gateway and interface, control-plane and worker security groups with
//!   their rules (or the existing network/subnets/router the manifests name);
//! * `loadbalancer` ([`loadbalancer`]): the API server endpoint: an Octavia
//!   load balancer (listener, pool, health monitor) with a floating IP on its
//!   VIP, or a floating IP alone that follows the first control-plane machine;
//! * `machine` ([`machine`]): a port on the cluster network, a server booted
//!   from it, pool member or floating-IP association for control-plane
//!   machines; the bootstrap cloud-config reaches it as `user_data`
//!   ([`bootstrap`]);
//! * `token`: nothing in the cloud (the token travels in the cloud-config).
//!
//! Reading back and finding unmanaged servers: [`refresh`]. Credentials and
//! which identity an operation uses: [`auth`]. The cloud itself: the
//! [`api::OpenStackApi`] trait, implemented on the real services by
//! [`sdk::SdkApi`] and wrapped with the retry policy by [`ops::Cloud`].
//!
//! Everything created carries the state's lineage as a tag (servers also as
//! metadata, with the resource address), so an object created just before a
//! crash is found and adopted instead of duplicated.
//!
//! Test hook ([`Overrides::openstack_crash_after_server_create`], from
//! `CAPI_OPENSTACK_CRASH_AFTER_SERVER_CREATE=<n>`): the process exits as if
//! killed right after the n-th server create was accepted, before the state
//! records it.

pub(crate) mod api;
pub(crate) mod auth;
mod bootstrap;
mod loadbalancer;
mod machine;
#[cfg(test)]
mod memory;
mod network;
pub(crate) mod ops;
mod refresh;
pub(crate) mod sdk;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use self::api::OpenStackApi;
use self::auth::Identity;
use self::ops::{err, Cloud, Policy};
use super::{
    Found, Observed, OpInput, Overrides, Provider, ProviderError, ProviderSettings, Redactor,
    Refreshed, Unmanaged,
};
use crate::resource::{ClusterId, ProviderKind, Spec};
use crate::state::Resource;

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
    Ok(Arc::new(OpenStackProvider::new(
        Clients::Connect(s),
        &settings.overrides,
    )))
}

/// Where clients come from.
pub(crate) enum Clients {
    /// Credentials from identityRef Secrets or the environment.
    Connect(OpenStackSettings),
    /// One fixed client (unit tests with the in-memory cloud).
    #[cfg(test)]
    Fixed(Arc<dyn OpenStackApi>),
}

pub(crate) struct OpenStackProvider {
    clients: Clients,
    cache: tokio::sync::Mutex<BTreeMap<String, Arc<dyn OpenStackApi>>>,
    policy: Policy,
    /// Serialises pool-member changes per load balancer (Octavia refuses
    /// concurrent updates with 409 while PENDING_UPDATE).
    lb_locks: tokio::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The crash test hook: exit after this server create of the process.
    crash_after_server_create: Option<u64>,
    server_creates: AtomicU64,
    /// The servers the last refresh listed (lineage, servers): `unmanaged`
    /// right after a refresh reuses them instead of listing again.
    last_servers: std::sync::Mutex<Option<(String, Vec<Value>)>>,
    /// Identities seen per cluster key: for resources that recorded none
    /// (a machine whose creation failed).
    identities: std::sync::Mutex<BTreeMap<String, Identity>>,
}

/// The tag every object of a state carries.
pub(crate) fn lineage_tag(lineage: &str) -> String {
    format!("capi-lineage:{lineage}")
}

/// Server metadata: the state, the resource address and the machine
/// identity (servers are found and adopted by these).
const META_LINEAGE: &str = "capi-lineage";
const META_ADDRESS: &str = "capi-address";
const META_IDENTITY: &str = "capi-identity";

/// An object's id (empty when it has none).
fn sid(v: &Value) -> String {
    v.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A recorded string attribute.
fn ostr<'a>(o: &'a Observed, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

/// The cluster part of an address in CAPO's names: `<ns>-<name>`.
fn cluster_slug(c: &ClusterId) -> String {
    format!("{}-{}", c.namespace, c.name)
}

impl OpenStackProvider {
    pub(crate) fn new(clients: Clients, overrides: &Overrides) -> OpenStackProvider {
        #[cfg(test)]
        let poll = match clients {
            Clients::Fixed(_) => Duration::from_millis(1),
            Clients::Connect(_) => Duration::from_secs(1),
        };
        #[cfg(not(test))]
        let poll = Duration::from_secs(1);
        OpenStackProvider {
            clients,
            cache: Default::default(),
            policy: Policy {
                attempts: overrides.openstack_retries,
                poll,
                server_timeout: overrides.openstack_server_timeout,
            },
            lb_locks: Default::default(),
            crash_after_server_create: overrides.openstack_crash_after_server_create,
            server_creates: Default::default(),
            last_servers: Default::default(),
            identities: Default::default(),
        }
    }

    /// The client for an identity (`None`: the environment's credentials).
    async fn client(&self, identity: Option<Identity>) -> Result<Cloud, ProviderError> {
        #[allow(
            clippy::infallible_destructuring_match,
            reason = "unit tests add a second variant"
        )]
        let settings = match &self.clients {
            #[cfg(test)]
            Clients::Fixed(a) => return Ok(Cloud::new(a.clone(), self.policy)),
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
            return Ok(Cloud::new(c.clone(), self.policy));
        }
        let (profile, files) =
            auth::cloud_config(settings, identity.as_ref()).map_err(ProviderError::Unavailable)?;
        let api = sdk::SdkApi::connect(&profile, files)
            .await
            .map_err(ProviderError::Unavailable)?;
        let api: Arc<dyn OpenStackApi> = Arc::new(api);
        cache.insert(key, api.clone());
        Ok(Cloud::new(api, self.policy))
    }

    /// A resource's identity: recorded, else the spec's identityRef, else
    /// the one seen for its cluster.
    fn identity_of_resource(&self, r: &Resource) -> Option<Identity> {
        let key = r.address.cluster_key().to_string();
        let mut known = self.identities.lock().unwrap();
        match auth::of_resource(r) {
            Some(i) => {
                known.entry(key).or_insert_with(|| i.clone());
                Some(i)
            }
            None => known.get(&key).cloned(),
        }
    }

    /// Remember the identity a cluster's operations use.
    fn remember(&self, cluster_key: &str, identity: &Option<Identity>) {
        if let Some(i) = identity {
            self.identities
                .lock()
                .unwrap()
                .entry(cluster_key.to_string())
                .or_insert_with(|| i.clone());
        }
    }

    /// The lock serialising member changes of one load balancer.
    async fn lb_lock(&self, lb: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lb_locks
            .lock()
            .await
            .entry(lb.to_string())
            .or_default()
            .clone()
    }

    /// Count an accepted server create; the crash test hook ends the
    /// process here when it is the one.
    fn server_created(&self) {
        let n = self.server_creates.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_after_server_create == Some(n) {
            #[allow(
                clippy::print_stderr,
                reason = "a test hook announces itself before the exit"
            )]
            {
                eprintln!("CAPI_OPENSTACK_CRASH_AFTER_SERVER_CREATE={n}: exiting as if killed");
            }
            std::process::exit(137);
        }
    }
}

/// Hide secrets in a failure's message.
fn redacted(e: ProviderError, redactor: &Redactor) -> ProviderError {
    match e {
        ProviderError::Failed(m) => ProviderError::Failed(redactor.redact(&m)),
        other => other,
    }
}

#[async_trait]
impl Provider for OpenStackProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openstack
    }

    async fn create(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        self.remember(input.address.cluster_key(), &auth::of_operation(input));
        let r = match input.spec {
            Spec::Network(n) => self.create_network(input, n).await,
            Spec::Loadbalancer(l) => self.create_lb(input, l).await,
            Spec::Machine(m) => self.create_machine(input, m).await,
            Spec::Token(_) => Ok(bootstrap::register_token()),
            Spec::Pki(_) | Spec::Bootstrap(_) => {
                Err(err("local resource sent to the OpenStack provider"))
            }
        };
        r.map_err(|e| redacted(e, input.redactor))
    }

    async fn update(
        &self,
        input: &OpInput<'_>,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        match input.spec {
            Spec::Network(n) => self.update_network(input, n, current).await,
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
        let cloud = match self.client(self.identity_of_resource(r)).await {
            Ok(c) => c,
            // A machine whose creation failed recorded nothing: a failed
            // create leaves nothing in the cloud (see machine.rs).
            Err(_)
                if r.attributes.as_machine().is_some() && !r.observed.contains_key("server_id") =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let res = match &r.attributes {
            Spec::Network(_) => network::delete_network(&cloud, r).await,
            Spec::Loadbalancer(_) => loadbalancer::delete_lb(&cloud, r).await,
            Spec::Machine(_) => self.delete_machine(&cloud, r, lineage).await,
            _ => Ok(()),
        };
        res.map_err(|e| redacted(e, redactor))
    }

    async fn refresh(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        self.read_back(resources, lineage).await
    }

    async fn unmanaged(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError> {
        self.unknown_servers(known, lineage).await
    }

    async fn lookup(&self, input: &OpInput<'_>, id: &str) -> Result<Found, ProviderError> {
        self.find_server(input, id)
            .await
            .map_err(|e| redacted(e, input.redactor))
    }
}

#[cfg(test)]
mod tests;
