//! Resource addresses and cluster identities, parsed once where they enter
//! (a flag, the state file, a manifest) and typed from then on.
//!
//! An address is `<cluster>/<type>[/<name>]`, where `<cluster>` is the
//! Cluster's name, prefixed with `<namespace>:` outside the default
//! namespace: `dev/network`, `team:x/machine/x-md-0-7k2x9-0`. The parsed
//! [`Address`] keeps that text (it is what the state file, plans and users
//! see, and what orders resources) plus the offsets of its parts, so reading
//! a part never re-splits the string.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::ResourceKind;

/// The namespace a manifest object without `metadata.namespace` lives in.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// A Cluster's identity: namespace and name.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub(crate) struct ClusterId {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl ClusterId {
    pub(crate) fn new(namespace: &str, name: &str) -> Self {
        ClusterId {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Parse the `<cluster>` part of an address: `name` or `namespace:name`.
    pub(crate) fn from_key(key: &str) -> ClusterId {
        match key.split_once(':') {
            Some((ns, name)) => ClusterId::new(ns, name),
            None => ClusterId::new(DEFAULT_NAMESPACE, key),
        }
    }

    /// The form used in addresses.
    pub(crate) fn key(&self) -> String {
        if self.namespace == DEFAULT_NAMESPACE {
            self.name.clone()
        } else {
            format!("{}:{}", self.namespace, self.name)
        }
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace == DEFAULT_NAMESPACE {
            f.write_str(&self.name)
        } else {
            write!(f, "{}:{}", self.namespace, self.name)
        }
    }
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not an address; addresses look like <cluster>/<type>[/<name>], e.g. dev/machine/dev-md-0-7k2x9-0")]
    Shape(String),
    #[error("{given:?}: unknown resource type {kind:?}; types are {known}")]
    UnknownKind {
        given: String,
        kind: String,
        known: String,
    },
    #[error("{given:?}: a {kind} address needs a name: <cluster>/{kind}/<name>")]
    MissingName { given: String, kind: &'static str },
    #[error("{given:?}: a {kind} address has no name part: <cluster>/{kind}")]
    UnexpectedName { given: String, kind: &'static str },
}

/// A resource address (see the module header).
// The text is shared: clones copy a pointer, and the addresses a state
// names on every machine (its cluster's network, load balancer, token) are
// stored once per read (`shared_text`).
#[derive(Clone)]
pub struct Address {
    text: Arc<str>,
    kind: ResourceKind,
    /// Byte offset of the first `/` (the end of the cluster part).
    cluster_end: u32,
}

impl Address {
    pub(crate) fn new(cluster: &ClusterId, kind: ResourceKind, name: Option<&str>) -> Address {
        let mut text = cluster.to_string();
        let cluster_end = text.len() as u32;
        text.push('/');
        text.push_str(kind.as_str());
        if let Some(n) = name {
            text.push('/');
            text.push_str(n);
        }
        Address {
            text: text.into(),
            kind,
            cluster_end,
        }
    }

    /// Another resource of the same cluster.
    pub(crate) fn sibling(&self, kind: ResourceKind, name: Option<&str>) -> Address {
        let mut text = String::with_capacity(self.text.len() + 16);
        text.push_str(self.cluster_key());
        text.push('/');
        text.push_str(kind.as_str());
        if let Some(n) = name {
            text.push('/');
            text.push_str(n);
        }
        Address {
            text: text.into(),
            kind,
            cluster_end: self.cluster_end,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The `<cluster>` part, as it appears in the address.
    pub(crate) fn cluster_key(&self) -> &str {
        &self.text[..self.cluster_end as usize]
    }

    /// The cluster, parsed.
    pub(crate) fn cluster(&self) -> ClusterId {
        ClusterId::from_key(self.cluster_key())
    }

    /// The Cluster's name (without its namespace).
    pub(crate) fn cluster_name(&self) -> &str {
        let key = self.cluster_key();
        key.split_once(':').map_or(key, |(_, n)| n)
    }

    pub(crate) fn kind(&self) -> ResourceKind {
        self.kind
    }

    /// The `<name>` part, for machines and bootstrap data.
    pub(crate) fn name(&self) -> Option<&str> {
        let start = self.cluster_end as usize + 1 + self.kind.as_str().len();
        self.text.get(start + 1..)
    }

    /// Parse and check the shape of an address.
    pub(crate) fn parse(s: &str) -> Result<Address, AddressError> {
        let (kind, cluster_end) = Self::check(s)?;
        let text = if kind.is_named() {
            Arc::from(s)
        } else {
            shared_text(s)
        };
        Ok(Address {
            text,
            kind,
            cluster_end,
        })
    }

    /// The kind and the end of the cluster part of a valid address text.
    fn check(s: &str) -> Result<(ResourceKind, u32), AddressError> {
        let mut parts = s.splitn(3, '/');
        let cluster = parts.next().unwrap_or("");
        let Some(kind_text) = parts.next() else {
            return Err(AddressError::Shape(s.to_string()));
        };
        let name = parts.next();
        let cluster_ok = !cluster.is_empty()
            && match cluster.split_once(':') {
                Some((ns, n)) => !ns.is_empty() && !n.is_empty() && !n.contains(':'),
                None => true,
            };
        if !cluster_ok {
            return Err(AddressError::Shape(s.to_string()));
        }
        let Some(kind) = ResourceKind::parse(kind_text) else {
            return Err(AddressError::UnknownKind {
                given: s.to_string(),
                kind: kind_text.to_string(),
                known: ResourceKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        match (kind.is_named(), name) {
            (true, None) | (true, Some("")) => Err(AddressError::MissingName {
                given: s.to_string(),
                kind: kind.as_str(),
            }),
            (false, Some(_)) => Err(AddressError::UnexpectedName {
                given: s.to_string(),
                kind: kind.as_str(),
            }),
            _ => Ok((kind, cluster.len() as u32)),
        }
    }
}

impl JsonSchema for Address {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Address".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "A resource address: `<cluster>/<type>[/<name>]`, where `<cluster>` is the\nCluster's name, prefixed with `<namespace>:` outside the default namespace.\nExamples: `dev/network`, `dev/machine/dev-md-0-7k2x9-0`.",
            "type": "string"
        })
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({:?})", self.text)
    }
}

// Identity, order and hash are the text's: the parts are derived from it.
impl PartialEq for Address {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Address {}

impl PartialOrd for Address {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Address {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl std::hash::Hash for Address {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

impl std::borrow::Borrow<str> for Address {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor, so that the text is read in place, copied once into
        // the shared text (state files hold four addresses per resource).
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Address;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a resource address (cluster/kind[/name])")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Address, E> {
                Address::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Unnamed addresses (a cluster's network, load balancer, token, PKI) read
/// recently on this thread: every machine of a state depends on three.
const RECENT: usize = 8;

thread_local! {
    static RECENT_UNNAMED: std::cell::RefCell<Vec<Arc<str>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `text`, shared with an equal unnamed address read recently.
fn shared_text(text: &str) -> Arc<str> {
    RECENT_UNNAMED.with(|cell| {
        let mut recent = cell.borrow_mut();
        if let Some(hit) = recent.iter().find(|r| &***r == text) {
            return Arc::clone(hit);
        }
        let new: Arc<str> = Arc::from(text);
        if recent.len() == RECENT {
            recent.remove(0);
        }
        recent.push(Arc::clone(&new));
        new
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_read_without_resplitting() {
        let c = ClusterId::new("default", "dev");
        let a = Address::new(&c, ResourceKind::Machine, Some("dev-md-0-abc12-0"));
        assert_eq!(a.as_str(), "dev/machine/dev-md-0-abc12-0");
        assert_eq!(a.cluster_key(), "dev");
        assert_eq!(a.kind(), ResourceKind::Machine);
        assert_eq!(a.name(), Some("dev-md-0-abc12-0"));
        assert_eq!(a, Address::parse(a.as_str()).unwrap());
        let n = Address::new(&ClusterId::new("team", "x"), ResourceKind::Network, None);
        assert_eq!(n.as_str(), "team:x/network");
        assert_eq!(n.name(), None);
        assert_eq!(n.cluster(), ClusterId::new("team", "x"));
        assert_eq!(n.cluster_name(), "x");
        let s = n.sibling(ResourceKind::Bootstrap, Some("m-0"));
        assert_eq!(s.as_str(), "team:x/bootstrap/m-0");
        assert_eq!(s.name(), Some("m-0"));
        // Unnamed addresses read one after another share their text.
        let read = |t: &str| serde_json::from_value::<Address>(serde_json::json!(t)).unwrap();
        let (a, b) = (read("team:x/network"), read("team:x/network"));
        assert!(Arc::ptr_eq(&a.text, &b.text));
        assert_eq!(a, n);
        let (m, m2) = (read("x/machine/m-0"), read("x/machine/m-0"));
        assert_eq!(m, m2);
        assert_eq!(s, "team:x/bootstrap/m-0".parse().unwrap());
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "dev/machine",
            "dev/network/x",
            "dev/bogus",
            "dev",
            "/network",
            ":x/network",
            "ns:/network",
            "a:b:c/network",
            "",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(Address::parse("dev/machine/a").is_ok());
    }

    #[test]
    fn serialises_as_its_text_and_orders_like_it() {
        let a: Address = "team:x/network".parse().unwrap();
        let b: Address = "zeta/network".parse().unwrap();
        assert!(a < b);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"team:x/network\"");
        let back: Address = serde_json::from_str("\"team:x/network\"").unwrap();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<Address>("\"nope\"").is_err());
    }
}
