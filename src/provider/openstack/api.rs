//! The cloud operations the provider needs, behind one small trait
//! ([`OpenStackApi`]), so that the provider's logic runs the same against the
//! real services ([`super::sdk::SdkApi`], built on `openstack_sdk`) and
//! against an in-memory cloud in unit tests (`memory.rs`). The retry policy
//! is not here: [`super::ops::Cloud`] wraps a client with it.
//!
//! Objects travel as JSON shaped like the OpenStack APIs' own resources
//! (`id`, `name`, `tags`, `status`, `fixed_ips`, ...): that is what the
//! services return, and it keeps the trait small (one `create`, `list`,
//! `get`, `delete` for every kind).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;

/// The kinds of cloud objects the provider manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Network,
    Subnet,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Port,
    FloatingIp,
    Server,
    LoadBalancer,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Subnet => "subnet",
            Kind::Router => "router",
            Kind::SecurityGroup => "security group",
            Kind::SecurityGroupRule => "security group rule",
            Kind::Port => "port",
            Kind::FloatingIp => "floating IP",
            Kind::Server => "server",
            Kind::LoadBalancer => "load balancer",
        }
    }
}

/// A list filter. Every field set must match; `tags` must all be present.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Query {
    pub(crate) tags: Vec<String>,
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) network_id: Option<String>,
    pub(crate) device_id: Option<String>,
    /// Networks: `router:external`.
    pub(crate) external: Option<bool>,
}

impl Query {
    pub(crate) fn tagged(tag: &str) -> Query {
        Query {
            tags: vec![tag.to_string()],
            ..Default::default()
        }
    }
}

/// An error from the cloud, with the HTTP status when there was one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    pub(crate) status: Option<u16>,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: Option<u16>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn is_quota(&self) -> bool {
        let m = self.message.to_ascii_lowercase();
        self.status == Some(413)
            || ((self.status == Some(409) || self.status == Some(403)) && m.contains("quota"))
    }

    /// Worth retrying: server errors, rate limiting, a connection that
    /// failed, and conflicts that are not quota (Octavia answers 409 while a
    /// load balancer is PENDING_UPDATE; Neutron while a port is still bound).
    pub(crate) fn is_transient(&self) -> bool {
        match self.status {
            None => true,
            Some(409) => !self.is_quota(),
            Some(429) | Some(500..=599) => true,
            _ => false,
        }
    }

    /// A clear, one-line explanation for the user.
    pub(crate) fn explain(&self, what: &str) -> String {
        let first = self.message.lines().next().unwrap_or_default().trim();
        let detail = short_detail(&self.message);
        match self.status {
            _ if self.is_quota() => format!("{what}: the project's quota is exhausted ({detail}); free resources or raise the quota"),
            Some(401) => format!("{what}: the cloud refused the credentials (401); check identityRef's clouds.yaml or OS_* variables"),
            Some(403) => format!("{what}: not allowed (403): {detail}"),
            Some(404) => format!("{what}: not found (404): {detail}"),
            Some(409) => format!("{what}: conflict (409): {detail}"),
            Some(400) => format!("{what}: rejected by the cloud (400): {detail}"),
            Some(s) if s >= 500 => format!("{what}: the cloud failed ({s}): {detail}"),
            Some(s) => format!("{what}: HTTP {s}: {detail}"),
            None => format!("{what}: {first}"),
        }
    }
}

/// The useful part of an OpenStack error body (`message`/`faultstring`/
/// `NeutronError.message`), or the text itself.
fn short_detail(text: &str) -> String {
    // A JSON error body anywhere in the text: its message.
    if let (Some(i), Some(j)) = (text.find('{'), text.rfind('}')) {
        if let Ok(v) = serde_json::from_str::<Value>(&text[i..=j]) {
            if let Some(m) = find_message(&v) {
                return m.trim().to_string();
            }
        }
    }
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("message:") {
            return rest.trim().trim_matches('`').to_string();
        }
        if let Some(rest) = l.strip_prefix("data:") {
            let raw = rest.trim().trim_matches('`');
            if let Ok(v) = serde_json::from_str::<Value>(raw) {
                if let Some(m) = find_message(&v) {
                    return m;
                }
            }
            return raw.to_string();
        }
    }
    text.trim().to_string()
}

fn find_message(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => {
            for k in ["message", "faultstring", "description"] {
                if let Some(s) = m.get(k).and_then(Value::as_str) {
                    return Some(s.to_string());
                }
            }
            m.values().find_map(find_message)
        }
        _ => None,
    }
}

/// The operations the provider needs. Implementations count their calls.
#[async_trait]
pub(crate) trait OpenStackApi: Send + Sync {
    /// One list call for a kind, filtered.
    async fn list(&self, kind: Kind, q: &Query) -> Result<Vec<Value>, ApiError>;
    /// `None` when it does not exist.
    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Value>, ApiError>;
    /// Create from an API-shaped body; returns the created object.
    async fn create(&self, kind: Kind, body: &Value) -> Result<Value, ApiError>;
    /// Delete; `Ok(false)` when it was already gone.
    async fn delete(&self, kind: Kind, id: &str) -> Result<bool, ApiError>;
    /// Replace the tags of a Neutron object.
    async fn set_tags(&self, kind: Kind, id: &str, tags: &[String]) -> Result<(), ApiError>;
    /// Change a subnet's DNS servers (the one subnet field CAPO lets change).
    async fn set_subnet_dns(&self, id: &str, dns: &[String]) -> Result<(), ApiError>;
    /// Add or remove a router interface on a subnet.
    async fn router_interface(&self, router: &str, subnet: &str, add: bool)
        -> Result<(), ApiError>;
    /// Associate a floating IP with a port, or dissociate it (`None`).
    async fn associate_floating_ip(&self, fip: &str, port: Option<&str>)
        -> Result<Value, ApiError>;
    /// Octavia children of a load balancer, created one at a time as CAPO
    /// does: `listener` (`loadbalancer_id`, `protocol_port`), `pool`
    /// (`listener_id`), `healthmonitor` (`pool_id`). TCP throughout.
    async fn create_lb_child(&self, what: &str, body: &Value) -> Result<Value, ApiError>;
    async fn get_pool(&self, id: &str) -> Result<Option<Value>, ApiError>;
    /// Octavia pool members.
    async fn add_member(&self, pool: &str, body: &Value) -> Result<Value, ApiError>;
    async fn remove_member(&self, pool: &str, member: &str) -> Result<bool, ApiError>;
    async fn list_members(&self, pool: &str) -> Result<Vec<Value>, ApiError>;
    /// Flavors by id or name (exact).
    async fn find_flavor(
        &self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Value>, ApiError>;
    /// Images by id, or by name and tags.
    async fn find_image(
        &self,
        id: Option<&str>,
        name: Option<&str>,
        tags: &[String],
    ) -> Result<Vec<Value>, ApiError>;
    async fn get_keypair(&self, name: &str) -> Result<Option<Value>, ApiError>;
    /// Calls made so far, by `<operation> <kind>`.
    fn calls(&self) -> BTreeMap<String, u64>;
}

/// Counts calls (shared by the implementations).
#[derive(Debug, Default)]
pub(crate) struct CallCounter(Mutex<BTreeMap<String, u64>>);

impl CallCounter {
    pub(crate) fn count(&self, op: &str, kind: &str) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(format!("{op} {kind}"))
            .or_insert(0) += 1;
    }
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}
