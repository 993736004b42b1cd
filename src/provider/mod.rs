//! Everything that touches infrastructure, behind one trait ([`Provider`]):
//! create, update and delete a resource, read a state's resources back, and
//! find what carries a state's labels but is not in it. The apply executor
//! and [`refresh`] reach providers only through the trait.
//!
//! A provider is a folder (`sim/`, `docker/`, `openstack/`) with the same
//! rooms as the others, so that "where is the load balancer?" is answered
//! by a file name:
//! - `mod.rs`: what the provider maps capi's resources to (its header), its
//!   settings, `connect`, its test hooks, and the `Provider` impl as a thin
//!   dispatch by resource kind;
//! - `network.rs`, `loadbalancer.rs`, `machine.rs`: create, update and
//!   delete of each;
//! - `bootstrap.rs`: how bootstrap data reaches a machine (Docker: executed
//!   in the container as CAPD does, never twice; OpenStack: the server's
//!   `user_data`; simulator: recorded, not run) and bootstrap tokens;
//! - `refresh.rs`: reading back and comparing with the state, the lookups
//!   by labels or tags that find what the state does not know, and the
//!   lookup by id or name `capi import` makes ([`Provider::lookup`]);
//! - the low-level client: Docker's `engine.rs` (every `bollard` call),
//!   OpenStack's `api.rs` (the cloud operations as a trait), `sdk.rs` (that
//!   trait on the real services) and `ops.rs` (the retry policy and the
//!   composite operations), the simulator's `store.rs` (its JSON records).
//!
//! [`cloudinit`] is shared by the simulator and Docker: how CAPD interprets
//! cloud-config. [`refresh`] runs every provider's refresh in parallel and
//! turns the answers into observations and drift.
//!
//! A new provider needs more than its folder: a [`ProviderKind`] and an
//! infrastructure `Backend` (in `resource`), its manifest kinds (`manifest`),
//! their semantics (`infra`: what changes in place, validation) and their
//! mapping to resources (`desired`); its settings in [`ProviderSettings`],
//! resolved by the CLI's settings layer (`cli/settings.rs`) with its test
//! hooks and knobs in [`Overrides`]; and a line in [`registry`]. Provider
//! code reads no environment variable (the OpenStack SDK reads `OS_*` when
//! no Secret names the credentials: see `openstack/auth.rs`).

pub mod cloudinit;
pub mod docker;
pub(crate) mod openstack;
pub(crate) mod refresh;
pub mod sim;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::resource::{Address, ClusterId, Observation, ProviderKind, Spec};
use crate::state::Resource;

/// Labels every provider puts on what it creates, so that a resource created
/// just before a crash (before state recorded it) is found and adopted.
pub const LABEL_LINEAGE: &str = "capi.x-k8s.io/lineage";
pub const LABEL_ADDRESS: &str = "capi.x-k8s.io/address";
pub const LABEL_IDENTITY: &str = "capi.x-k8s.io/identity";

/// Secret strings that must never appear in messages. Shared: every
/// provider call of an apply takes a copy, which is a pointer, not the
/// keys' PEM lines again.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 6).collect();
        // Multi-line PEM blocks: also hide each line, as outputs may wrap.
        let mut extra = Vec::new();
        for s in &secrets {
            if s.contains('\n') {
                extra.extend(
                    s.lines()
                        .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
                        .map(str::to_string),
                );
            }
        }
        secrets.extend(extra);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor {
            secrets: Arc::new(secrets),
        }
    }

    /// Add more secret values.
    pub(crate) fn add(&mut self, values: impl IntoIterator<Item = String>) {
        let old = std::mem::take(&mut self.secrets);
        let old = Arc::try_unwrap(old).unwrap_or_else(|shared| (*shared).clone());
        *self = Redactor::new(old.into_iter().chain(values));
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in self.secrets.iter() {
            if t.contains(s.as_str()) {
                t = t.replace(s.as_str(), "(sensitive)");
            }
        }
        t
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The operation failed; nothing more to say than the message.
    #[error("{0}")]
    Failed(String),
    /// A bootstrap command failed on the machine.
    #[error("bootstrap failed: command {command:?} exited with {exit_code}{}", if output_tail.is_empty() { String::new() } else { format!("; output ends with:\n{output_tail}") })]
    Bootstrap {
        command: String,
        exit_code: i64,
        output_tail: String,
        /// Observed attributes of the machine that exists but failed.
        observed: Observed,
    },
    /// The provider cannot be reached at all (no engine, no credentials).
    #[error("{0}")]
    Unavailable(String),
    /// Something exists that carries another state's labels.
    #[error("{0}")]
    Conflict(String),
    /// Nothing has the id or name asked for (`capi import`).
    #[error("{0}")]
    NotFound(String),
}

/// What an operation needs besides the spec.
pub struct OpInput<'a> {
    pub(crate) address: &'a Address,
    pub(crate) cluster: &'a ClusterId,
    pub(crate) lineage: &'a str,
    pub(crate) spec: &'a Spec,
    /// The infrastructure this resource depends on (network, load balancer,
    /// machines), as recorded in state. Local dependencies (PKI, bootstrap
    /// data) and the token are not here: they arrive resolved, in
    /// `bootstrap` and `token`.
    pub(crate) deps: Vec<&'a Resource>,
    /// For machines: the cloud-config with every reference resolved.
    pub(crate) bootstrap: Option<&'a str>,
    /// For tokens: the token and its expiry (unix seconds).
    pub(crate) token: Option<(&'a str, i64)>,
    pub(crate) redactor: &'a Redactor,
}

impl OpInput<'_> {
    pub(crate) fn dep(&self, kind: crate::resource::ResourceKind) -> Option<&Resource> {
        self.deps.iter().copied().find(|r| r.kind == kind)
    }
}

/// The result of a create or update: what the provider reports.
pub(crate) use crate::resource::Observed;

/// One resource as refresh found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refreshed {
    pub(crate) address: Address,
    /// `None`: matches state.
    pub(crate) observation: Option<Observation>,
}

/// Something carrying this state's labels that state does not know.
#[derive(Debug, Clone, PartialEq)]
pub struct Unmanaged {
    pub(crate) address: Address,
    pub(crate) detail: String,
}

/// An object `capi import` found by its id or name, with capi's labels
/// (Docker labels, OpenStack server metadata, the simulator's record labels)
/// as the object carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The object, for messages: `container demo-md-0-a9ed1-0 (3f2a9c1b7e4d)`.
    pub(crate) description: String,
    /// Its id at the provider.
    pub(crate) id: String,
    /// The state lineage its labels name, if any.
    pub(crate) lineage: Option<String>,
    /// The resource address its labels name, if any.
    pub(crate) address: Option<String>,
    /// Machines: the identity label (what the machine was created from).
    pub(crate) identity: Option<String>,
    /// Why the create path would not adopt it even with the right labels
    /// (it is not where create looks: another name, another cluster; its
    /// bootstrap was interrupted), in a sentence that says how to fix it.
    pub(crate) not_adoptable: Option<String>,
    /// What the state records of it until apply adopts it (its id).
    pub(crate) observed: Observed,
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// Create the resource, or adopt it when it already exists with this
    /// state's lineage and this address (a crash between create and state
    /// write). Machine creates return once the machine is bootstrapped.
    async fn create(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError>;

    /// Update mutable attributes in place.
    async fn update(
        &self,
        input: &OpInput<'_>,
        current: &Resource,
    ) -> Result<Observed, ProviderError>;

    /// Delete; deleting what is already gone succeeds.
    async fn delete(
        &self,
        resource: &Resource,
        lineage: &str,
        redactor: &Redactor,
    ) -> Result<(), ProviderError>;

    /// Read ahead, on a thread of its own, what the next refresh will read,
    /// while the caller loads the state (only after the state's lock is
    /// held, so nothing this state manages changes meanwhile). Only the
    /// simulator has something to gain (its machine logs, parsed): see
    /// [`ProviderKind::reads_ahead`].
    fn read_ahead(&self) {}

    /// Read back resources and compare with state.
    async fn refresh(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError>;

    /// Resources labelled with this lineage that state does not know.
    async fn unmanaged(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError>;

    /// `capi import`: the object `id` (an id or a name) of the kind of
    /// resource `input` describes (its address, spec and dependencies say
    /// where and with which credentials to look), with its labels. Reads
    /// only. Nothing of that kind with that id or name:
    /// [`ProviderError::NotFound`], naming what was looked for.
    async fn lookup(&self, input: &OpInput<'_>, id: &str) -> Result<Found, ProviderError>;
}

/// Resource kinds providers read back on refresh (the others are local or
/// cannot drift).
pub(crate) fn refreshable(kind: crate::resource::ResourceKind) -> bool {
    use crate::resource::ResourceKind;
    matches!(
        kind,
        ResourceKind::Network | ResourceKind::Loadbalancer | ResourceKind::Machine
    )
}

/// Settings for building providers (from the CLI).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProviderSettings {
    /// The simulator's directory.
    pub(crate) sim_dir: std::path::PathBuf,
    /// `--sim-latency`: overrides the manifests' startup durations.
    pub(crate) sim_latency: Option<Duration>,
    pub(crate) docker: docker::DockerSettings,
    pub(crate) openstack: openstack::OpenStackSettings,
    /// Secrets from the manifests by (namespace, name): credentials such as
    /// an OpenStackCluster's `identityRef`. Never written to state.
    pub(crate) secrets: BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>,
    pub(crate) overrides: Overrides,
}

/// Test hooks and tuning knobs of the providers, resolved once by the CLI's
/// settings layer (from `CAPI_*` variables) and passed down explicitly;
/// provider code reads no environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Overrides {
    /// Simulator: fail the n-th operation at a point (`bootstrap:5`).
    pub sim_failures: Vec<(String, u64)>,
    /// Simulator: fail this fraction of machine creates...
    pub sim_fail_rate: f64,
    /// ...chosen by this seed.
    pub sim_seed: u64,
    /// Docker: SIGKILL the process after the n-th event at a point
    /// (`create:2`), to test crash recovery against a real engine.
    pub docker_crash: Option<(String, u64)>,
    /// OpenStack: exit as if killed right after the n-th server create was
    /// accepted, before the state records it.
    pub openstack_crash_after_server_create: Option<u64>,
    /// OpenStack: attempts for a transient API error.
    pub openstack_retries: u32,
    /// OpenStack: how long a server may take to become ACTIVE.
    pub openstack_server_timeout: Duration,
}

impl Default for Overrides {
    fn default() -> Self {
        Overrides {
            sim_failures: Vec::new(),
            sim_fail_rate: 0.0,
            sim_seed: 0,
            docker_crash: None,
            openstack_crash_after_server_create: None,
            openstack_retries: 6,
            openstack_server_timeout: Duration::from_secs(600),
        }
    }
}

/// The provider registry: one line per provider.
pub(crate) async fn registry(
    kind: ProviderKind,
    settings: &ProviderSettings,
) -> Result<Arc<dyn Provider>, ProviderError> {
    match kind {
        ProviderKind::Sim => Ok(Arc::new(sim::SimProvider::open_with(
            &settings.sim_dir,
            settings.sim_latency,
            &settings.overrides,
        )?)),
        ProviderKind::Docker => docker::connect(&settings.docker, &settings.overrides).await,
        ProviderKind::Openstack => openstack::connect(settings).await,
        ProviderKind::Local => Err(ProviderError::Failed(
            "local resources have no provider".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        let r = Redactor::new(["abcdef.0123456789abcdef".to_string()]);
        let mut r = r;
        assert_eq!(
            r.redact("token abcdef.0123456789abcdef used"),
            "token (sensitive) used"
        );
        r.add(["second-secret".to_string()]);
        assert_eq!(
            r.redact("abcdef.0123456789abcdef second-secret"),
            "(sensitive) (sensitive)"
        );
    }
}
