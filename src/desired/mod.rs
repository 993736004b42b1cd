//! Manifest → desired clusters: infrastructure, machine groups with their
//! identity hashes, and rendered bootstrap documents. Pure.
//!
//! [`graph`] holds the resource graph `capi graph` draws.

pub(crate) mod graph;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::bootstrap::{self, RenderInput};
use crate::manifest::raw::KubeadmConfigSpec;
use crate::manifest::{
    Body, DeletionOrder, InfraCluster, InfraMachine, IntOrPercent, Kind, Manifest, Object, Problem,
    Strategy, TriggerIf,
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
}

/// Annotation prefix for capi's own settings on upstream kinds.
pub(crate) const OPTION_PREFIX: &str = "capi.x-k8s.io/";

fn infra_spec(o: &Object, backend: Backend, spec: Value) -> InfraSpec {
    InfraSpec {
        kind: o.key.kind.to_string(),
        name: o.key.name.clone(),
        backend,
        spec,
        options: o
            .annotations
            .iter()
            .filter(|(k, _)| k.starts_with(OPTION_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn machine_infra(o: &Object, defaults: &BTreeMap<String, String>) -> Option<InfraSpec> {
    let im = match &o.body {
        Body::InfraMachineTemplate(im) | Body::InfraMachine(im) => im,
        _ => return None,
    };
    let mut spec = match im {
        InfraMachine::Docker(d) => infra_spec(
            o,
            Backend::Docker,
            serde_json::to_value(d).unwrap_or(Value::Null),
        ),
        InfraMachine::InMemory(m) => infra_spec(
            o,
            Backend::InMemory,
            serde_json::to_value(m).unwrap_or(Value::Null),
        ),
        InfraMachine::OpenStack(v) => infra_spec(o, Backend::Openstack, v.clone()),
    };
    for (k, v) in defaults {
        spec.options.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Some(spec)
}

/// The parts of a KubeadmControlPlane spec that decide whether a machine is up
/// to date (CAPI ignores the endpoint, DNS, discovery and health-check timeouts).
fn kcp_identity_spec(spec: &KubeadmConfigSpec) -> KubeadmConfigSpec {
    let mut s = spec.clone();
    if let Some(cc) = &mut s.cluster_configuration {
        cc.control_plane_endpoint = None;
        cc.dns = None;
    }
    if let Some(j) = &mut s.join_configuration {
        j.discovery = None;
        if let Some(t) = &mut j.timeouts {
            t.control_plane_component_health_check_seconds = None;
        }
    }
    if let Some(i) = &mut s.init_configuration {
        if let Some(t) = &mut i.timeouts {
            t.control_plane_component_health_check_seconds = None;
        }
    }
    s
}

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
        if let Some(c) = build_cluster(&mut b, o) {
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

fn build_cluster(b: &mut Builder<'_>, o: &Object) -> Option<DesiredCluster> {
    let Body::Cluster(c) = &o.body else {
        return None;
    };
    let m = b.m;
    let id = ClusterId::new(&o.key.namespace, &o.key.name);
    let infra_obj = c
        .infrastructure_ref
        .as_ref()
        .and_then(|r| m.resolve(o, r))?;
    let Body::InfraCluster(ic) = &infra_obj.body else {
        return None;
    };
    let (native, backend, infra_value) = match ic {
        InfraCluster::Docker(d) => (
            ProviderKind::Docker,
            Backend::Docker,
            serde_json::to_value(d).unwrap_or(Value::Null),
        ),
        InfraCluster::InMemory => (
            ProviderKind::Sim,
            Backend::InMemory,
            Value::Object(Default::default()),
        ),
        InfraCluster::OpenStack(v) => (ProviderKind::Openstack, Backend::Openstack, v.clone()),
    };
    let provider = b.opts.provider_override.unwrap_or(native);
    let mut cluster_infra = infra_spec(infra_obj, backend, infra_value);
    for (k, v) in &b.opts.default_options {
        cluster_infra
            .options
            .entry(k.clone())
            .or_insert_with(|| v.clone());
    }
    let network_name = match ic {
        InfraCluster::Docker(_) => infra_obj
            .annotations
            .get(DOCKER_NETWORK_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| b.opts.docker_network.clone()),
        InfraCluster::OpenStack(_) => {
            format!("k8s-clusterapi-cluster-{}-{}", id.namespace, id.name)
        }
        InfraCluster::InMemory => id.name.clone(),
    };
    let fixed_endpoint = c.control_plane_endpoint.as_ref().map(|e| {
        format!(
            "{}:{}",
            e.host,
            if e.port == 0 {
                c.network.api_server_port as i64
            } else {
                e.port
            }
        )
    });

    // Control plane: a KubeadmControlPlane, or standalone control-plane Machines.
    let mut groups = Vec::new();
    let mut kcp_spec: Option<KubeadmConfigSpec> = None;
    let kcp = c.control_plane_ref.as_ref().and_then(|r| m.resolve(o, r));
    let cp_version = kcp.and_then(|k| match &k.body {
        Body::KubeadmControlPlane(kk) => kk.version.clone().ok(),
        _ => None,
    });
    let secret_exists = |ns: &str, name: &str, key: &str| -> bool {
        matches!(m.get(Kind::Secret, ns, name).map(|s| &s.body), Some(Body::Secret(d)) if d.contains_key(key))
    };
    let cluster_fds: Vec<String> = match ic {
        InfraCluster::Docker(d) => docker_failure_domains(d.failure_domains.as_ref()),
        InfraCluster::OpenStack(v) => v
            .get("controlPlaneAvailabilityZones")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        InfraCluster::InMemory => Vec::new(),
    };

    if let Some(k) = kcp {
        let Body::KubeadmControlPlane(kk) = &k.body else {
            return None;
        };
        let version = kk.version.clone().ok()?;
        let infra_tpl = kk
            .infrastructure_ref
            .as_ref()
            .and_then(|r| m.resolve(k, r))?;
        let infra = machine_infra(infra_tpl, &b.opts.default_options)?;
        kcp_spec = Some(kk.kubeadm_config_spec.clone());
        let identity = hash_json(&serde_json::json!({
            "version": version.to_string(),
            "infrastructure": {"kind": infra.kind, "name": infra.name, "spec": infra.spec},
            "bootstrap": {"kind": "KubeadmControlPlane", "name": k.key.name, "spec": kcp_identity_spec(&kk.kubeadm_config_spec)},
        }));
        let render = |b: &mut Builder<'_>, role: BootstrapRole| -> Option<(String, &'static str)> {
            let ns = k.key.namespace.clone();
            let r = bootstrap::render(&RenderInput {
                cluster_name: &id.name,
                network: &c.network,
                fixed_endpoint: fixed_endpoint.clone(),
                role,
                version: &version,
                spec: &kk.kubeadm_config_spec,
                from_kcp: true,
                secret_exists: &|n, key| secret_exists(&ns, n, key),
                control_plane_version: Some(&version),
            });
            match r {
                Ok(r) => {
                    b.documents.insert(r.sha256.clone(), r.content);
                    Some((r.sha256, r.kubeadm_api))
                }
                Err(e) => {
                    let pointer = if e.field.is_empty() {
                        "/spec/version".to_string()
                    } else {
                        format!("/spec/kubeadmConfigSpec{}", e.field)
                    };
                    b.problem(k, &pointer, format!("{}: {}", k.key, e.message), e.help);
                    None
                }
            }
        };
        let init = render(b, BootstrapRole::Init);
        let join = render(b, BootstrapRole::JoinControlPlane);
        let (init, join) = (init?, join?);
        let owner = Owner {
            kind: OwnerKind::KubeadmControlPlane,
            name: k.key.name.clone(),
        };
        let fds: Vec<Option<String>> = if cluster_fds.is_empty() {
            vec![None]
        } else {
            cluster_fds.iter().cloned().map(Some).collect()
        };
        groups.push(MachineGroup {
            labels: standard_labels(&id.name, &owner, Role::ControlPlane, &kk.machine_labels),
            annotations: kk.machine_annotations.clone(),
            owner,
            role: Role::ControlPlane,
            replicas: kk.replicas.max(0) as u32,
            version,
            name_prefix: format!("{}-{}", k.key.name, short_hash(&identity, 5)),
            identity,
            fixed_name: None,
            failure_domains: fds,
            infra,
            bootstrap_template: format!("KubeadmControlPlane/{}", k.key.name),
            init_document: Some(init),
            join_document: join,
            rollout: Rollout::ControlPlane {
                max_surge: match kk.max_surge {
                    Some(IntOrPercent::Int(0)) => 0,
                    _ => 1,
                },
            },
            deletion_order: DeletionOrder::Oldest,
            paused: false,
            source: b.source(k),
        });
    }

    // Workers (and standalone control-plane Machines), in manifest order.
    let mut standalone_cp: Vec<MachineGroup> = Vec::new();
    for w in &m.objects {
        let (template, replicas, rollout, order, owner_kind, paused, fixed, cp) = match &w.body {
            Body::MachineDeployment(md)
                if md.cluster_name == id.name && w.key.namespace == id.namespace =>
            {
                let rollout = match &md.strategy {
                    Strategy::RollingUpdate {
                        max_surge,
                        max_unavailable,
                    } => Rollout::RollingUpdate {
                        max_surge: *max_surge,
                        max_unavailable: *max_unavailable,
                    },
                    Strategy::OnDelete => Rollout::OnDelete,
                };
                (
                    &md.template,
                    md.replicas,
                    rollout,
                    md.deletion_order,
                    OwnerKind::MachineDeployment,
                    md.paused,
                    false,
                    false,
                )
            }
            Body::MachineSet(ms)
                if ms.cluster_name == id.name && w.key.namespace == id.namespace =>
            {
                (
                    &ms.template,
                    ms.replicas,
                    Rollout::OnDelete,
                    ms.deletion_order,
                    OwnerKind::MachineSet,
                    false,
                    false,
                    false,
                )
            }
            Body::Machine(mm)
                if mm.template.cluster_name == id.name && w.key.namespace == id.namespace =>
            {
                (
                    &mm.template,
                    1,
                    Rollout::OnDelete,
                    DeletionOrder::Oldest,
                    OwnerKind::Machine,
                    false,
                    true,
                    mm.control_plane,
                )
            }
            _ => continue,
        };
        let Some(Ok(version)) = template.version.clone() else {
            continue;
        };
        let Some(infra_obj) = template
            .infrastructure_ref
            .as_ref()
            .and_then(|r| m.resolve(w, r))
        else {
            continue;
        };
        let Some(infra) = machine_infra(infra_obj, &b.opts.default_options) else {
            continue;
        };
        let role = if cp { Role::ControlPlane } else { Role::Worker };
        let (bootstrap_kind, bootstrap_name, spec, spec_base): (
            String,
            String,
            Option<KubeadmConfigSpec>,
            String,
        ) = match (&template.bootstrap_ref, &template.data_secret_name) {
            (Some(r), _) => match m.resolve(w, r) {
                Some(bo) => match &bo.body {
                    Body::KubeadmConfigTemplate(s) => (
                        bo.key.kind.to_string(),
                        bo.key.name.clone(),
                        Some(s.clone()),
                        "/spec/template/spec".into(),
                    ),
                    Body::KubeadmConfig(s) => (
                        bo.key.kind.to_string(),
                        bo.key.name.clone(),
                        Some(s.clone()),
                        "/spec".into(),
                    ),
                    _ => continue,
                },
                None => continue,
            },
            (None, Some(secret)) => ("Secret".into(), secret.clone(), None, String::new()),
            (None, None) => continue,
        };
        let identity = hash_json(&serde_json::json!({
            "version": version.to_string(),
            "infrastructure": {"kind": infra.kind, "name": infra.name, "spec": infra.spec},
            "bootstrap": {"kind": bootstrap_kind, "name": bootstrap_name, "spec": spec},
            "failureDomain": template.failure_domain,
        }));
        let bo_obj = template
            .bootstrap_ref
            .as_ref()
            .and_then(|r| m.resolve(w, r));
        let ns = w.key.namespace.clone();
        let render = |b: &mut Builder<'_>, role: BootstrapRole| -> Option<(String, &'static str)> {
            match &spec {
                Some(s) => {
                    let r = bootstrap::render(&RenderInput {
                        cluster_name: &id.name,
                        network: &c.network,
                        fixed_endpoint: fixed_endpoint.clone(),
                        role,
                        version: &version,
                        spec: s,
                        from_kcp: false,
                        secret_exists: &|n, key| secret_exists(&ns, n, key),
                        control_plane_version: cp_version.as_ref(),
                    });
                    match r {
                        Ok(r) => {
                            b.documents.insert(r.sha256.clone(), r.content);
                            Some((r.sha256, r.kubeadm_api))
                        }
                        Err(e) => {
                            let target = bo_obj.unwrap_or(w);
                            let pointer = if e.field.is_empty() {
                                if std::ptr::eq(target, w) {
                                    "/spec/template/spec/version".to_string()
                                } else {
                                    spec_base.clone()
                                }
                            } else {
                                format!("{spec_base}{}", e.field)
                            };
                            let msg = format!("{} (used by {}): {}", target.key, w.key, e.message);
                            b.problem(target, &pointer, msg, e.help);
                            None
                        }
                    }
                }
                None => {
                    // User-provided bootstrap data: the Secret's `value`.
                    let secret = &bootstrap_name;
                    if !secret_exists(&ns, secret, "value") {
                        b.problem(w, "/spec", format!("{}: bootstrap.dataSecretName {secret:?} is not a Secret with a `value` key in the manifests", w.key), "add the Secret, or use bootstrap.configRef with a KubeadmConfigTemplate".into());
                        return None;
                    }
                    let content = format!("<capi:{}>\n", bootstrap::refs::secret(secret, "value"));
                    let sha =
                        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(content.as_bytes()));
                    b.documents.insert(sha.clone(), content);
                    Some((sha, "user-provided"))
                }
            }
        };
        let (init, join) = if cp {
            let i = render(b, BootstrapRole::Init);
            let j = render(b, BootstrapRole::JoinControlPlane);
            (Some(i), j)
        } else {
            (None, render(b, BootstrapRole::JoinWorker))
        };
        let Some(join) = join else { continue };
        let init = match init {
            Some(Some(i)) => Some(i),
            Some(None) => continue,
            None => None,
        };
        let owner = Owner {
            kind: owner_kind,
            name: w.key.name.clone(),
        };
        let group = MachineGroup {
            labels: standard_labels(&id.name, &owner, role, &template.labels),
            annotations: template.annotations.clone(),
            owner,
            role,
            replicas: replicas.max(0) as u32,
            version,
            name_prefix: format!("{}-{}", w.key.name, short_hash(&identity, 5)),
            identity,
            fixed_name: fixed.then(|| w.key.name.clone()),
            failure_domains: vec![template.failure_domain.clone()],
            infra,
            bootstrap_template: format!("{bootstrap_kind}/{bootstrap_name}"),
            init_document: init,
            join_document: join,
            rollout,
            deletion_order: order,
            paused,
            source: b.source(w),
        };
        if cp {
            standalone_cp.push(group);
        } else {
            groups.push(group);
        }
    }
    standalone_cp.sort_by(|a, b| a.owner.name.cmp(&b.owner.name));
    let workers: Vec<MachineGroup> = groups.drain(usize::from(kcp.is_some())..).collect();
    groups.extend(standalone_cp);
    groups.extend(workers);

    let kspec = kcp_spec.unwrap_or_default();
    let cc = kspec.cluster_configuration.clone().unwrap_or_default();
    let health_checks = m
        .of_kind(Kind::MachineHealthCheck)
        .filter_map(|h| match &h.body {
            Body::MachineHealthCheck(mhc)
                if mhc.cluster_name == id.name && h.key.namespace == id.namespace =>
            {
                Some(HealthCheck {
                    name: h.key.name.clone(),
                    selector: mhc.selector.clone(),
                    trigger_if: mhc.trigger_if.clone(),
                })
            }
            _ => None,
        })
        .collect();

    Some(DesiredCluster {
        provider,
        paused: c.paused,
        source: b.source(o),
        pki: PkiSpec {
            encryption_algorithm: cc
                .encryption_algorithm
                .clone()
                .unwrap_or_else(|| "RSA-2048".into()),
            ca_validity_days: cc
                .ca_certificate_validity_period_days
                .unwrap_or(3650)
                .clamp(1, 36500) as u32,
            external_etcd: cc.etcd.as_ref().is_some_and(|e| e.external.is_some()),
        },
        network: NetworkSpec {
            name: network_name,
            infra: cluster_infra.clone(),
        },
        loadbalancer: LoadBalancerSpec {
            port: c.network.api_server_port,
            fixed_endpoint,
            infra: cluster_infra,
        },
        token: TokenSpec {
            ttl_seconds: b.opts.token_ttl_seconds,
        },
        groups,
        health_checks,
        id,
    })
}

/// DockerCluster failure domains usable by the control plane (v1beta2 list or
/// v1beta1 map), sorted by name.
fn docker_failure_domains(v: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Some(Value::Array(items)) => {
            for i in items {
                let cp = i
                    .get("controlPlane")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if let (true, Some(n)) = (cp, i.get("name").and_then(Value::as_str)) {
                    out.push(n.to_string());
                }
            }
        }
        Some(Value::Object(m)) => {
            for (n, fd) in m {
                if fd
                    .get("controlPlane")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                {
                    out.push(n.clone());
                }
            }
        }
        _ => {}
    }
    out.sort();
    out
}
