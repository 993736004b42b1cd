//! State types. The JSON Schema in `state-schema/` is generated from these.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resource::{Address, Observed, ProviderKind, ResourceKind, Spec};

/// Bumped when the file format changes incompatibly.
pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format_version: u32,
    /// Incremented on every write that changes the content.
    pub serial: u64,
    /// Random id fixed when the state is created; a saved plan or backup from
    /// another lineage is a different state.
    pub lineage: String,
    /// Version of the `capi` that wrote the file.
    pub capi_version: String,
    /// Next creation sequence number (orders machines oldest → newest).
    pub next_sequence: u64,
    /// Sorted by address.
    // Boxed: a new resource is inserted in the middle (every bootstrap
    // record sorts before every machine), and moving pointers instead of
    // whole resources keeps a 100,000-machine apply out of `memmove`.
    pub resources: Vec<Box<Resource>>,
    /// Rendered bootstrap documents by SHA-256, with secrets as `<capi:...>`
    /// references (never secret material).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub documents: BTreeMap<String, String>,
    /// `sha256:<hex>` of the file's content before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created and (for machines) bootstrapped.
    Ready,
    /// Journalled before the provider was asked to create it: the operation may
    /// or may not have happened. The next plan resolves it (adopt or create).
    Creating,
    /// Journalled before an in-place update.
    Updating,
    /// Journalled before a delete.
    Deleting,
    /// The operation failed; see `error`. Failed machines are replaced.
    Failed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Creating => "creating",
            Status::Updating => "updating",
            Status::Deleting => "deleting",
            Status::Failed => "failed",
        }
    }

    pub fn is_pending(self) -> bool {
        matches!(self, Status::Creating | Status::Updating | Status::Deleting)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorRecord {
    pub(crate) message: String,
    /// For bootstrap failures: the command that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The end of the failing command's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub address: Address,
    #[serde(rename = "type")]
    pub kind: ResourceKind,
    pub provider: ProviderKind,
    pub status: Status,
    /// The desired specification it was created (or last updated) from.
    pub attributes: Spec,
    /// What the provider reported (ids, addresses, image, ...).
    #[serde(default, skip_serializing_if = "Observed::is_empty")]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub observed: Observed,
    /// Secret material (CA keys, token). Never printed; the state file is 0600.
    /// With a state key, each value is `capi-enc:v1:<key id>:<base64>`
    /// (AES-256-GCM; see docs/state-backends.md, "Encryption at rest").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sensitive: BTreeMap<String, String>,
    /// Direct dependencies (not transitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Address>,
    /// Creation order within this state (oldest = smallest).
    pub sequence: u64,
    // Boxed: few resources carry one, and inline it was a fifth of every
    // resource's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<ErrorRecord>>,
}

impl State {
    pub(crate) fn new(lineage: String) -> State {
        State {
            format_version: FORMAT_VERSION,
            serial: 0,
            lineage,
            capi_version: env!("CARGO_PKG_VERSION").to_string(),
            next_sequence: 1,
            resources: Vec::new(),
            documents: BTreeMap::new(),
            checksum: None,
        }
    }

    /// An empty state with no lineage yet (nothing has been written).
    pub fn empty() -> State {
        State::new(String::new())
    }

    /// By address (an [`Address`] or its text).
    pub fn get<Q>(&self, address: &Q) -> Option<&Resource>
    where
        Q: Ord + ?Sized,
        Address: std::borrow::Borrow<Q>,
    {
        use std::borrow::Borrow;
        self.resources
            .binary_search_by(|r| Borrow::<Q>::borrow(&r.address).cmp(address))
            .ok()
            .map(|i| &*self.resources[i])
    }

    pub(crate) fn get_mut(&mut self, address: &Address) -> Option<&mut Resource> {
        self.resources
            .binary_search_by(|r| r.address.cmp(address))
            .ok()
            .map(move |i| &mut *self.resources[i])
    }

    /// Insert or replace, keeping resources sorted by address.
    pub(crate) fn upsert(&mut self, r: Resource) {
        match self
            .resources
            .binary_search_by(|x| x.address.cmp(&r.address))
        {
            Ok(i) => *self.resources[i] = r,
            Err(i) => self.resources.insert(i, Box::new(r)),
        }
    }

    pub(crate) fn remove(&mut self, address: &Address) -> Option<Resource> {
        match self.resources.binary_search_by(|x| x.address.cmp(address)) {
            Ok(i) => Some(*self.resources.remove(i)),
            Err(_) => None,
        }
    }

    pub(crate) fn take_sequence(&mut self) -> u64 {
        let s = self.next_sequence;
        self.next_sequence += 1;
        s
    }

    /// Drop documents no bootstrap resource refers to.
    pub(crate) fn gc_documents(&mut self) {
        let used: std::collections::BTreeSet<&str> = self
            .resources
            .iter()
            .filter_map(|r| r.attributes.as_bootstrap().map(|b| b.sha256.as_str()))
            .collect();
        self.documents.retain(|k, _| used.contains(k.as_str()));
    }

    /// Resources of one cluster (by address prefix).
    pub(crate) fn cluster_resources<'a>(
        &'a self,
        cluster_key: &'a str,
    ) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources
            .iter()
            .map(|r| &**r)
            .filter(move |r| r.address.cluster_key() == cluster_key)
    }

    /// The distinct cluster keys in this state, sorted.
    pub(crate) fn cluster_keys(&self) -> Vec<String> {
        // Resources are sorted by address, so a cluster's are together:
        // compare with the last key kept before copying one.
        let mut keys: Vec<String> = Vec::new();
        for r in &self.resources {
            let key = r.address.cluster_key();
            if keys.last().map(String::as_str) != Some(key) {
                keys.push(key.to_string());
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}
