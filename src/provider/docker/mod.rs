//! The Docker provider: clusters as containers on a Docker Engine, with
//! Cluster API Docker provider (CAPD) semantics, through `bollard`.
//!
//! What it makes (see docs/providers/docker.md):
//! - the cluster network (`kind` by default, shared by clusters; created with
//!   labels when missing, removed only when capi created it and nothing is
//!   attached to it any more): [`network`];
//! - the `<cluster>-lb` container (haproxy), reconfigured and sent SIGHUP
//!   whenever the set of control-plane machines changes: [`loadbalancer`],
//!   with its configuration rendered by [`haproxy`];
//! - one container per machine ([`machine`], image from [`image`]),
//!   bootstrapped by executing its cloud-config as CAPD does (`write_files`
//!   and `runcmd` only, never twice on one machine): [`bootstrap`], which
//!   also registers bootstrap tokens;
//! - reading all of it back, and finding what this state's labels mark but
//!   the state does not know: [`refresh`].
//!
//! Every `bollard` call is in [`engine`]. Every container and volume carries
//! capi's labels (lineage, address, identity), so refresh reads everything
//! back with one list call per type, and a container created just before a
//! crash is adopted, not duplicated.
//!
//! Test hook ([`Overrides::docker_crash`], from `CAPI_DOCKER_CRASH=create:N`
//! or `ready:N`): the process kills itself with SIGKILL right after the Nth
//! machine container of this process is created (or bootstrapped), before
//! the state records it.

mod bootstrap;
mod engine;
pub mod haproxy;
pub(crate) mod image;
mod loadbalancer;
mod machine;
mod network;
mod refresh;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use self::engine::Engine;
use super::{
    Found, Observed, OpInput, Overrides, Provider, ProviderError, Redactor, Refreshed, Unmanaged,
    LABEL_ADDRESS, LABEL_LINEAGE,
};
use crate::resource::{ProviderKind, ResourceKind, Spec};
use crate::state::Resource;

/// CAPD's (kind's) labels.
pub(crate) const LABEL_KIND_CLUSTER: &str = "io.x-k8s.kind.cluster";
pub(crate) const LABEL_KIND_ROLE: &str = "io.x-k8s.kind.role";
pub(crate) const LABEL_FAILURE_DOMAIN: &str = "io.x-k8s.cluster.failureDomain";
/// capi's own: the cluster key (namespace-qualified) and what the object is.
pub(crate) const LABEL_CLUSTER: &str = "capi.x-k8s.io/cluster";
pub(crate) const LABEL_TYPE: &str = "capi.x-k8s.io/type";

/// Option annotations (on DockerCluster / DockerMachineTemplate); the
/// settings layer also sets `OPT_PRIVILEGED` from `CAPI_DOCKER_PRIVILEGED`
/// (through `GraphOptions::default_options`).
pub(crate) const OPT_PRIVILEGED: &str = "capi.x-k8s.io/docker-privileged";
pub(crate) const OPT_SECURITY_OPT: &str = "capi.x-k8s.io/docker-security-opt";
pub(crate) const OPT_TMPFS: &str = "capi.x-k8s.io/docker-tmpfs";
pub(crate) const OPT_VAR_VOLUME: &str = "capi.x-k8s.io/docker-var-volume";
pub(crate) const OPT_PUBLISH: &str = "capi.x-k8s.io/docker-publish-api-server";
pub(crate) const OPT_NODE_READY_TIMEOUT: &str = "capi.x-k8s.io/docker-node-ready-timeout";

/// Settings from the environment and command line.
#[derive(Debug, Clone, Default)]
pub(crate) struct DockerSettings {
    /// `DOCKER_HOST`; `None` means the default socket.
    pub(crate) host: Option<String>,
}

pub(crate) struct DockerProvider {
    engine: Engine,
    /// Serialises load-balancer reconfigurations within this process.
    lb_lock: tokio::sync::Mutex<()>,
    /// Serialises network creates and removals within this process.
    network_lock: tokio::sync::Mutex<()>,
    /// Control-plane containers found without `kubectl`: a machine's Node
    /// status is not asked through them again in this process (an exec per
    /// machine saved; an image does not gain a binary while capi runs).
    no_kubectl: std::sync::Mutex<std::collections::HashSet<String>>,
    crash: CrashHook,
}

/// Connect to the engine named by `DOCKER_HOST` (or the default socket) and
/// negotiate the API version.
pub(crate) async fn connect(
    settings: &DockerSettings,
    overrides: &Overrides,
) -> Result<Arc<dyn Provider>, ProviderError> {
    Ok(Arc::new(DockerProvider {
        engine: Engine::connect(settings).await?,
        lb_lock: tokio::sync::Mutex::new(()),
        network_lock: tokio::sync::Mutex::new(()),
        no_kubectl: Default::default(),
        crash: CrashHook {
            at: overrides.docker_crash.clone(),
            creates: AtomicU64::new(0),
            readies: AtomicU64::new(0),
        },
    }))
}

/// Where the crash test hook fires: after the machine container is created,
/// or after it is bootstrapped.
#[derive(Clone, Copy)]
enum CrashPoint {
    Create,
    Ready,
}

/// The `CAPI_DOCKER_CRASH` test hook: a point and a count, and how many
/// times each point was passed in this process.
struct CrashHook {
    at: Option<(String, u64)>,
    creates: AtomicU64,
    readies: AtomicU64,
}

impl CrashHook {
    /// Count a pass through `point`; kill the process when it is the one.
    fn passed(&self, point: CrashPoint) {
        let (name, counter) = match point {
            CrashPoint::Create => ("create", &self.creates),
            CrashPoint::Ready => ("ready", &self.readies),
        };
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let Some((p, at)) = &self.at else { return };
        if p == name && *at == n {
            #[allow(
                clippy::print_stderr,
                reason = "a test hook announces itself before the kill"
            )]
            {
                eprintln!("CAPI_DOCKER_CRASH: killing the process after {name} #{n}");
            }
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }
}

// ------------------------------------------------------------ names and labels

/// CAPD's container name: `<cluster>-<machine>`, or the machine name when it
/// already starts with the cluster name.
pub(crate) fn container_name(cluster: &str, machine: &str) -> String {
    if machine.starts_with(cluster) {
        machine.to_string()
    } else {
        format!("{cluster}-{machine}")
    }
}

pub(crate) fn lb_name(cluster: &str) -> String {
    format!("{cluster}-lb")
}

/// The network an operation's containers join: the cluster network's name,
/// from the state; `kind` without one.
fn network_of(input: &OpInput<'_>) -> String {
    match input.dep(ResourceKind::Network).map(|r| &r.attributes) {
        Some(Spec::Network(n)) => n.name.clone(),
        _ => "kind".into(),
    }
}

/// The labels everything capi creates carries.
fn base_labels(input: &OpInput<'_>, kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_LINEAGE.to_string(), input.lineage.to_string()),
        (LABEL_ADDRESS.to_string(), input.address.to_string()),
        (
            LABEL_CLUSTER.to_string(),
            input.address.cluster_key().to_string(),
        ),
        (LABEL_TYPE.to_string(), kind.to_string()),
    ])
}

/// A container that exists already may be adopted only when it is this
/// resource of this state.
fn check_owner(
    labels: Option<&HashMap<String, String>>,
    input: &OpInput<'_>,
    name: &str,
) -> Result<(), ProviderError> {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    match (get(LABEL_LINEAGE), get(LABEL_ADDRESS)) {
        (Some(l), Some(a)) if l == input.lineage && a == input.address.as_str() => Ok(()),
        (l, a) => Err(ProviderError::Conflict(format!(
            "container {name} already exists and is not {} of this state (lineage {}, address {}); remove it (docker rm -f {name}) or use another cluster name",
            input.address,
            l.unwrap_or("none"),
            a.unwrap_or("none")
        ))),
    }
}

impl DockerProvider {
    /// Whether the container `name` may be removed for `r`: it is gone
    /// (removing it is a no-op), or it carries this state's lineage and
    /// `r`'s address. Another state's container (a create of `r` refused
    /// because of it, now deleted to be replaced) is left alone: a delete
    /// never removes what this state did not create.
    async fn removable(
        &self,
        name: &str,
        r: &Resource,
        lineage: &str,
    ) -> Result<bool, ProviderError> {
        let Some(c) = self.engine.inspect(name).await? else {
            return Ok(true);
        };
        let labels = engine::labels_of(&c);
        let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        Ok(get(LABEL_LINEAGE) == Some(lineage) && get(LABEL_ADDRESS) == Some(r.address.as_str()))
    }
}

// ------------------------------------------------------------ dispatch

#[async_trait]
impl Provider for DockerProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Docker
    }

    async fn create(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        match input.spec {
            Spec::Network(n) => self.create_network(input, n).await,
            Spec::Loadbalancer(l) => self.create_lb(input, l).await,
            Spec::Machine(m) => self.create_machine(input, m).await,
            Spec::Token(_) => self.register_token(input).await,
            Spec::Pki(_) | Spec::Bootstrap(_) => Err(ProviderError::Failed(
                "local resource sent to the Docker provider".into(),
            )),
        }
    }

    async fn update(
        &self,
        input: &OpInput<'_>,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        match input.spec {
            Spec::Token(_) => self.register_token(input).await,
            Spec::Machine(m) => self.update_machine(input, m, current).await,
            _ => Ok(current.observed.clone()),
        }
    }

    async fn delete(
        &self,
        r: &Resource,
        lineage: &str,
        _redactor: &Redactor,
    ) -> Result<(), ProviderError> {
        let cluster = r.address.cluster_name();
        match &r.attributes {
            Spec::Network(n) => self.delete_network(&n.name).await,
            Spec::Loadbalancer(_) => self.delete_lb(r, cluster, lineage).await,
            Spec::Machine(m) => self.delete_machine(r, m, lineage).await,
            Spec::Token(_) | Spec::Pki(_) | Spec::Bootstrap(_) => Ok(()),
        }
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
        self.unknown_containers(known, lineage).await
    }

    async fn lookup(&self, input: &OpInput<'_>, id: &str) -> Result<Found, ProviderError> {
        self.find_object(input, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            container_name("dev", "dev-md-0-abcde-0"),
            "dev-md-0-abcde-0"
        );
        assert_eq!(container_name("dev", "worker-1"), "dev-worker-1");
        assert_eq!(lb_name("dev"), "dev-lb");
    }
}
