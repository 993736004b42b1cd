//! Manifest → desired clusters: infrastructure, machine groups with their
//! identity hashes, and rendered bootstrap documents. Pure.
//!
//! [`build`] runs one [`ClusterBuilder`](cluster::ClusterBuilder) per
//! Cluster, whose named steps each return what they decided: the
//! infrastructure (`infrastructure.rs`), the control-plane group
//! (`control_plane.rs`), the worker groups and standalone machines
//! (`workers.rs`) and the health checks; then the cluster is assembled.
//! This file holds the types they produce. [`graph`] holds the resource
//! graph `capi graph` draws.

mod cluster;
mod control_plane;
pub(crate) mod graph;
mod infrastructure;
mod workers;

use std::collections::BTreeMap;

use crate::bootstrap::{self, BootstrapError, RenderInput};
use crate::manifest::{
    Body, DeletionOrder, IntOrPercent, Kind, Manifest, Object, Problem, TriggerIf,
};
use crate::resource::*;

/// Inputs that are not in the manifests.
#[derive(Debug, Clone)]
pub struct GraphOptions {
    /// `--provider sim`: run every cluster on the simulator.
    pub(crate) provider_override: Option<ProviderKind>,
    /// The Docker network for DockerClusters without their own
    /// (`DOCKER_NETWORK`, default `kind`).
    pub(crate) docker_network: String,
    pub(crate) token_ttl_seconds: u64,
    /// Options applied to infrastructure objects that do not set them (from
    /// the environment, e.g. `CAPI_DOCKER_PRIVILEGED=false` →
    /// `capi.x-k8s.io/docker-privileged: "false"`). Recorded in the plan.
    pub(crate) default_options: BTreeMap<String, String>,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            provider_override: None,
            default_options: BTreeMap::new(),
            docker_network: "kind".into(),
            token_ttl_seconds: bootstrap::DEFAULT_TOKEN_TTL_SECONDS,
        }
    }
}

/// Annotation on a DockerCluster/DevCluster naming its Docker network.
pub(crate) const DOCKER_NETWORK_ANNOTATION: &str = "capi.x-k8s.io/docker-network";

#[derive(Debug, Clone, PartialEq)]
pub enum Rollout {
    /// KubeadmControlPlane: one machine at a time; surge 0 or 1.
    ControlPlane { max_surge: u32 },
    RollingUpdate {
        max_surge: IntOrPercent,
        max_unavailable: IntOrPercent,
    },
    /// Old machines are replaced only when they are deleted.
    OnDelete,
}

/// Where an object was written, for messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Source {
    pub(crate) file: String,
    pub(crate) line: u32,
}

#[derive(Debug, Clone)]
pub struct MachineGroup {
    pub owner: Owner,
    pub role: Role,
    pub(crate) replicas: u32,
    pub(crate) version: Version,
    /// Hash of what the machines are created from, without the failure domain.
    pub identity: String,
    /// Machine names are `<prefix>-<index>` (or `fixed_name`).
    pub(crate) name_prefix: String,
    pub(crate) fixed_name: Option<String>,
    /// Failure domains to spread over (control plane), or the one of the
    /// template (`[None]` when there is none).
    pub(crate) failure_domains: Vec<Option<String>>,
    pub(crate) infra: InfraSpec,
    pub(crate) bootstrap_template: String,
    /// SHA-256 of the init rendering (first control-plane machine only).
    pub init_document: Option<(String, &'static str)>,
    /// SHA-256 and kubeadm API of the join rendering.
    pub join_document: (String, &'static str),
    pub rollout: Rollout,
    pub(crate) deletion_order: DeletionOrder,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) paused: bool,
    pub(crate) source: Source,
    /// Where the infrastructure machine template is written (its in-place
    /// edits are refused, as Cluster API's providers refuse them).
    pub(crate) infra_source: Source,
    /// `spec.rolloutAfter` (KubeadmControlPlane, MachineDeployment), unix
    /// seconds: once reached, machines created before it are rolled.
    pub(crate) rollout_after: Option<i64>,
}

impl MachineGroup {
    /// Identity of a machine of this group in a failure domain.
    pub(crate) fn machine_identity(&self, fd: &Option<String>) -> String {
        match fd {
            None => self.identity.clone(),
            Some(f) => hash_json(&serde_json::json!({"group": self.identity, "failureDomain": f})),
        }
    }

    pub(crate) fn machine_name(&self, index: u32) -> String {
        match &self.fixed_name {
            Some(n) => n.clone(),
            None => format!("{}-{index}", self.name_prefix),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HealthCheck {
    pub(crate) name: String,
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) trigger_if: TriggerIf,
}

#[derive(Debug, Clone)]
pub struct DesiredCluster {
    pub(crate) id: ClusterId,
    pub(crate) provider: ProviderKind,
    pub(crate) paused: bool,
    /// Topology Clusters: at most this many MachineDeployments roll out at
    /// a time (`topology.cluster.x-k8s.io/upgrade-concurrency`).
    pub(crate) upgrade_concurrency: Option<usize>,
    pub(crate) source: Source,
    pub(crate) pki: PkiSpec,
    pub(crate) network: NetworkSpec,
    pub(crate) loadbalancer: LoadBalancerSpec,
    pub(crate) token: TokenSpec,
    /// Control-plane groups first (in init order), then workers in manifest order.
    pub groups: Vec<MachineGroup>,
    pub(crate) health_checks: Vec<HealthCheck>,
}

impl DesiredCluster {
    pub(crate) fn address(&self, kind: ResourceKind, name: Option<&str>) -> Address {
        Address::new(&self.id, kind, name)
    }

    pub(crate) fn control_plane_groups(&self) -> impl Iterator<Item = &MachineGroup> {
        self.groups.iter().filter(|g| g.role == Role::ControlPlane)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub clusters: Vec<DesiredCluster>,
    /// Rendered bootstrap documents by SHA-256 (with references, no secrets).
    pub documents: BTreeMap<String, String>,
}

impl Desired {
    pub(crate) fn cluster(&self, key: &str) -> Option<&DesiredCluster> {
        self.clusters.iter().find(|c| c.id.key() == key)
    }
}

struct Builder<'a> {
    m: &'a Manifest,
    opts: &'a GraphOptions,
    problems: Vec<Problem>,
    documents: BTreeMap<String, String>,
}

impl Builder<'_> {
    fn problem(&mut self, o: &Object, pointer: &str, message: String, help: String) {
        self.problems.push(Problem::error(
            o.origin.file,
            &self.m.files[o.origin.file].name,
            o.origin.pos_of(pointer),
            message,
            help,
        ));
    }

    fn source(&self, o: &Object) -> Source {
        Source {
            file: self.m.files[o.origin.file].name.clone(),
            line: o.origin.pos.line,
        }
    }

    /// Where a field of `o` is written (its closest written parent when it
    /// is left to its default), for messages about that field.
    fn source_at(&self, o: &Object, pointer: &str) -> Source {
        Source {
            file: self.m.files[o.origin.file].name.clone(),
            line: o.origin.pos_of(pointer).line,
        }
    }

    /// Render bootstrap data and keep its document. Returns the document's
    /// SHA-256 and kubeadm API.
    fn render(
        &mut self,
        input: &RenderInput<'_>,
    ) -> Result<(String, &'static str), BootstrapError> {
        let r = bootstrap::render(input)?;
        self.documents.insert(r.sha256.clone(), r.content);
        Ok((r.sha256, r.kubeadm_api))
    }
}

/// Does the manifests' Secret `namespace/name` have `key`?
fn secret_exists(m: &Manifest, namespace: &str, name: &str, key: &str) -> bool {
    matches!(m.get(Kind::Secret, namespace, name).map(|s| &s.body), Some(Body::Secret(d)) if d.contains_key(key))
}

/// How many MachineDeployments of a topology Cluster roll out at a time.
pub(crate) const UPGRADE_CONCURRENCY_ANNOTATION: &str =
    "topology.cluster.x-k8s.io/upgrade-concurrency";

/// Annotation prefix for capi's own settings on upstream kinds.
pub(crate) const OPTION_PREFIX: &str = "capi.x-k8s.io/";

/// The labels Cluster API puts on a group's machines, over the template's own.
fn standard_labels(
    cluster: &str,
    owner: &Owner,
    role: Role,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut l = extra.clone();
    l.insert("cluster.x-k8s.io/cluster-name".into(), cluster.into());
    match owner.kind {
        OwnerKind::KubeadmControlPlane => {
            l.insert("cluster.x-k8s.io/control-plane".into(), String::new());
            l.insert(
                "cluster.x-k8s.io/control-plane-name".into(),
                owner.name.clone(),
            );
        }
        OwnerKind::MachineDeployment => {
            l.insert(
                "cluster.x-k8s.io/deployment-name".into(),
                owner.name.clone(),
            );
        }
        OwnerKind::MachineSet => {
            l.insert("cluster.x-k8s.io/set-name".into(), owner.name.clone());
        }
        OwnerKind::Machine => {
            if role == Role::ControlPlane {
                l.insert("cluster.x-k8s.io/control-plane".into(), String::new());
            }
        }
    }
    l
}

/// Build the desired clusters. Problems (rendering errors, unsupported
/// versions) are returned together, each with its file and line.
pub fn build(m: &Manifest, opts: &GraphOptions) -> Result<Desired, Vec<Problem>> {
    let mut b = Builder {
        m,
        opts,
        problems: Vec::new(),
        documents: BTreeMap::new(),
    };
    let mut clusters = Vec::new();
    for o in m.of_kind(Kind::Cluster) {
        if let Some(c) = cluster::ClusterBuilder::new(&mut b, o).and_then(|c| c.do_build()) {
            clusters.push(c);
        }
    }
    clusters.sort_by_key(|a| a.id.key());
    if b.problems.is_empty() {
        Ok(Desired {
            clusters,
            documents: b.documents,
        })
    } else {
        Err(b.problems)
    }
}

#[cfg(test)]
mod tests;
