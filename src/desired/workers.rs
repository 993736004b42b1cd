//! The worker-group step: every MachineDeployment, MachineSet and standalone
//! Machine of the cluster, in manifest order, becomes a machine group with
//! its identity, its rollout and its rendered bootstrap documents.
//! Standalone Machines labelled as control plane are kept apart (they come
//! right after the KubeadmControlPlane). An object that does not resolve is
//! skipped (validation reported it); one that fails to render is reported.

use crate::bootstrap::{self, BootstrapError, RenderInput};
use crate::manifest::raw::KubeadmConfigSpec;
use crate::manifest::{Body, DeletionOrder, Kind, MachineTemplate, Object, Strategy};
use crate::resource::{
    hash_json, short_hash, BootstrapRole, InfraSpec, Owner, OwnerKind, Role, Version,
};

use super::cluster::ClusterBuilder;
use super::control_plane::ControlPlane;
use super::infrastructure::{machine_infra, ClusterInfra};
use super::{secret_exists, standard_labels, MachineGroup, Rollout};

/// What the worker-group step decided, each in manifest order.
pub(super) struct WorkerGroups {
    /// Standalone Machines labelled `cluster.x-k8s.io/control-plane`.
    pub(super) control_plane_machines: Vec<MachineGroup>,
    pub(super) workers: Vec<MachineGroup>,
}

/// A MachineDeployment, MachineSet or Machine of the cluster, read the same
/// way.
struct GroupSource<'a> {
    object: &'a Object,
    template: &'a MachineTemplate,
    replicas: i64,
    rollout: Rollout,
    deletion_order: DeletionOrder,
    owner_kind: OwnerKind,
    paused: bool,
    /// A standalone Machine: one machine, named like the object.
    fixed_name: bool,
    control_plane: bool,
    rollout_after: Option<String>,
}

/// Where a group's bootstrap data comes from.
struct BootstrapSource<'a> {
    kind: String,
    name: String,
    /// The kubeadm spec; `None` for user-provided data (`dataSecretName`).
    spec: Option<KubeadmConfigSpec>,
    /// Where the spec sits in its object, for problems.
    spec_base: String,
    /// The KubeadmConfig(Template), when there is one.
    object: Option<&'a Object>,
}

/// What a group's machines are created from.
struct Ingredients<'a> {
    version: Version,
    infra: InfraSpec,
    infra_object: &'a Object,
    bootstrap: BootstrapSource<'a>,
}

impl<'a> ClusterBuilder<'_, 'a> {
    pub(super) fn do_build_worker_groups(
        &mut self,
        infra: &ClusterInfra,
        control_plane: &ControlPlane,
    ) -> WorkerGroups {
        let cp_version = match control_plane {
            ControlPlane::Kcp { group, .. } => Some(&group.version),
            ControlPlane::Machines => None,
        };
        let mut out = WorkerGroups {
            control_plane_machines: Vec::new(),
            workers: Vec::new(),
        };
        let m = self.b.m;
        for w in &m.objects {
            let Some(src) = self.group_source(w) else {
                continue;
            };
            let Some(group) = self.machine_group(&src, infra, cp_version) else {
                continue;
            };
            if src.control_plane {
                out.control_plane_machines.push(group);
            } else {
                out.workers.push(group);
            }
        }
        out
    }

    /// `w` read as a group source, when it is one of this cluster's.
    fn group_source(&self, w: &'a Object) -> Option<GroupSource<'a>> {
        let id = &self.id;
        let mine = |cluster_name: &str| cluster_name == id.name && w.key.namespace == id.namespace;
        Some(match &w.body {
            Body::MachineDeployment(md) if mine(&md.cluster_name) => GroupSource {
                object: w,
                template: &md.template,
                replicas: md.replicas,
                rollout: match &md.strategy {
                    Strategy::RollingUpdate {
                        max_surge,
                        max_unavailable,
                    } => Rollout::RollingUpdate {
                        max_surge: *max_surge,
                        max_unavailable: *max_unavailable,
                    },
                    Strategy::OnDelete => Rollout::OnDelete,
                },
                deletion_order: md.deletion_order,
                owner_kind: OwnerKind::MachineDeployment,
                paused: md.paused,
                fixed_name: false,
                control_plane: false,
                rollout_after: md.rollout_after.clone(),
            },
            Body::MachineSet(ms) if mine(&ms.cluster_name) => GroupSource {
                object: w,
                template: &ms.template,
                replicas: ms.replicas,
                rollout: Rollout::OnDelete,
                deletion_order: ms.deletion_order,
                owner_kind: OwnerKind::MachineSet,
                paused: false,
                fixed_name: false,
                control_plane: false,
                rollout_after: None,
            },
            Body::Machine(mm) if mine(&mm.template.cluster_name) => GroupSource {
                object: w,
                template: &mm.template,
                replicas: 1,
                rollout: Rollout::OnDelete,
                deletion_order: DeletionOrder::Oldest,
                owner_kind: OwnerKind::Machine,
                paused: false,
                fixed_name: true,
                control_plane: mm.control_plane,
                rollout_after: None,
            },
            _ => return None,
        })
    }

    /// The version, infrastructure and bootstrap source of a group, when
    /// they all resolve.
    fn ingredients(&self, src: &GroupSource<'a>) -> Option<Ingredients<'a>> {
        let m = self.b.m;
        let (w, template) = (src.object, src.template);
        let Some(Ok(version)) = template.version.clone() else {
            return None;
        };
        let infra_obj = template
            .infrastructure_ref
            .as_ref()
            .and_then(|r| m.resolve(w, r))?;
        let infra = machine_infra(infra_obj, &self.b.opts.default_options)?;
        let bootstrap = match (&template.bootstrap_ref, &template.data_secret_name) {
            (Some(r), _) => {
                let bo = m.resolve(w, r)?;
                let (spec, spec_base) = match &bo.body {
                    Body::KubeadmConfigTemplate(s) => (s, "/spec/template/spec"),
                    Body::KubeadmConfig(s) => (s, "/spec"),
                    _ => return None,
                };
                BootstrapSource {
                    kind: bo.key.kind.to_string(),
                    name: bo.key.name.clone(),
                    spec: Some(spec.clone()),
                    spec_base: spec_base.into(),
                    object: Some(bo),
                }
            }
            (None, Some(secret)) => BootstrapSource {
                kind: "Secret".into(),
                name: secret.clone(),
                spec: None,
                spec_base: String::new(),
                object: None,
            },
            (None, None) => return None,
        };
        Some(Ingredients {
            version,
            infra,
            infra_object: infra_obj,
            bootstrap,
        })
    }

    /// One group: identity, renderings (init and join for control-plane
    /// Machines, worker join otherwise) and rollout.
    fn machine_group(
        &mut self,
        src: &GroupSource<'a>,
        infra: &ClusterInfra,
        cp_version: Option<&Version>,
    ) -> Option<MachineGroup> {
        let Ingredients {
            version,
            infra: machine,
            infra_object,
            bootstrap,
        } = self.ingredients(src)?;
        let (w, template) = (src.object, src.template);
        let role = if src.control_plane {
            Role::ControlPlane
        } else {
            Role::Worker
        };
        let identity = hash_json(&serde_json::json!({
            "version": version.to_string(),
            "infrastructure": {"kind": machine.kind, "name": machine.name, "spec": machine.spec},
            "bootstrap": {"kind": bootstrap.kind, "name": bootstrap.name, "spec": bootstrap.spec},
            "failureDomain": template.failure_domain,
        }));
        let rendering = Rendering {
            src,
            bootstrap: &bootstrap,
            version: &version,
            cp_version,
            fixed_endpoint: infra.fixed_endpoint.clone(),
        };
        let (init, join) = if src.control_plane {
            let i = self.render_group(&rendering, BootstrapRole::Init);
            let j = self.render_group(&rendering, BootstrapRole::JoinControlPlane);
            (Some(i), j)
        } else {
            (
                None,
                self.render_group(&rendering, BootstrapRole::JoinWorker),
            )
        };
        let join = join?;
        let init = match init {
            Some(Some(i)) => Some(i),
            Some(None) => return None,
            None => None,
        };
        let owner = Owner {
            kind: src.owner_kind,
            name: w.key.name.as_str().into(),
        };
        Some(MachineGroup {
            labels: standard_labels(&self.id.name, &owner, role, &template.labels).into(),
            annotations: template.annotations.clone().into(),
            owner,
            role,
            replicas: u32::try_from(src.replicas.max(0)).unwrap_or(u32::MAX),
            version,
            name_prefix: format!("{}-{}", w.key.name, short_hash(&identity, 5)),
            identity: identity.into(),
            fixed_name: src.fixed_name.then(|| w.key.name.clone()),
            failure_domains: vec![template.failure_domain.clone()],
            infra: machine.into(),
            bootstrap_template: format!("{}/{}", bootstrap.kind, bootstrap.name).into(),
            init_document: init,
            join_document: join,
            rollout: src.rollout.clone(),
            deletion_order: src.deletion_order,
            topology: w
                .annotations
                .get(crate::topology::EXPLAIN)
                .and_then(|t| serde_json::from_str(t).ok()),
            paused: src.paused,
            // Messages about a group are about its version.
            source: self.version_source(
                w,
                if src.fixed_name {
                    "/spec/version"
                } else {
                    "/spec/template/spec/version"
                },
            ),
            infra_source: self.b.source(infra_object),
            rollout_after: src
                .rollout_after
                .as_deref()
                .and_then(crate::util::time::parse_rfc3339),
        })
    }

    /// Render one of a group's bootstrap documents (or take the user's
    /// data); a problem is reported on the bootstrap object, or the group.
    fn render_group(
        &mut self,
        r: &Rendering<'_, 'a>,
        role: BootstrapRole,
    ) -> Option<(String, &'static str)> {
        let m = self.b.m;
        let w = r.src.object;
        let ns = w.key.namespace.clone();
        let Some(spec) = &r.bootstrap.spec else {
            return self.user_data(w, &r.bootstrap.name);
        };
        let rendered = self.b.render(&RenderInput {
            cluster_name: &self.id.name,
            network: &self.c.network,
            fixed_endpoint: r.fixed_endpoint.clone(),
            role,
            version: r.version,
            spec,
            from_kcp: false,
            secret_exists: &|n, key| secret_exists(m, &ns, n, key),
            control_plane_version: r.cp_version,
        });
        match rendered {
            Ok(done) => Some(done),
            Err(e) => {
                self.render_problem(r, e);
                None
            }
        }
    }

    /// A problem with no field of the bootstrap spec (the Kubernetes
    /// version) is reported where the group's version is written; one with a
    /// field, in the bootstrap template that has it.
    fn render_problem(&mut self, r: &Rendering<'_, 'a>, e: BootstrapError) {
        let w = r.src.object;
        if e.field.is_empty() {
            let version = if w.key.kind == Kind::Machine {
                "/spec/version"
            } else {
                "/spec/template/spec/version"
            };
            let msg = format!("{}: {}", w.key, e.message);
            self.b.problem(w, version, msg, e.help);
            return;
        }
        let target = r.bootstrap.object.unwrap_or(w);
        let pointer = format!("{}{}", r.bootstrap.spec_base, e.field);
        let msg = format!("{} (used by {}): {}", target.key, w.key, e.message);
        self.b.problem(target, &pointer, msg, e.help);
    }

    /// User-provided bootstrap data: the Secret's `value`, as a reference.
    fn user_data(&mut self, w: &Object, secret: &str) -> Option<(String, &'static str)> {
        if !secret_exists(self.b.m, &w.key.namespace, secret, "value") {
            self.b.problem(w, "/spec", format!("{}: bootstrap.dataSecretName {secret:?} is not a Secret with a `value` key in the manifests", w.key), "add the Secret, or use bootstrap.configRef with a KubeadmConfigTemplate".into());
            return None;
        }
        let content = format!("<capi:{}>\n", bootstrap::refs::secret(secret, "value"));
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(content.as_bytes()));
        self.b.documents.insert(sha.clone(), content);
        Some((sha, "user-provided"))
    }
}

/// What a group's renderings share.
struct Rendering<'r, 'a> {
    src: &'r GroupSource<'a>,
    bootstrap: &'r BootstrapSource<'a>,
    version: &'r Version,
    cp_version: Option<&'r Version>,
    fixed_endpoint: Option<String>,
}
