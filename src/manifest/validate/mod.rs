//! Cross-object validation. Every rule appends problems; none stops the
//! others. [`validate`] runs the passes in order: who owns which control
//! plane and infrastructure cluster (`refs.rs`), the rules of each object by
//! kind (machine groups in `groups.rs`, kubeadm configs in `kubeadm.rs`,
//! MachineHealthChecks in `health.rs`), then the infrastructure rules
//! (`infra.rs`).

mod groups;
mod health;
mod infra;
mod kubeadm;
mod refs;

use super::error::Problem;
use super::limits::{MAX_MACHINES_PER_STATE, MAX_REPLICAS_PER_GROUP};
use super::model::*;
use super::Manifest;
use crate::resource::Version;

/// The manifests being validated and where problems go.
struct V<'a> {
    m: &'a Manifest,
    out: &'a mut Vec<Problem>,
}

impl V<'_> {
    fn err(&mut self, o: &Object, pointer: &str, message: String, help: String) {
        self.out.push(Problem::error(
            o.origin.file,
            &self.m.files[o.origin.file].name,
            o.origin.pos_of(pointer),
            message,
            help,
        ));
    }

    fn names_of(&self, kind: Kind, ns: &str) -> String {
        // At most 10 names: a hint, not a listing (thousands of objects
        // would make every such message as long as the manifests).
        let mut all = self.m.of_kind(kind).filter(|o| o.key.namespace == ns);
        let names: Vec<String> = all
            .by_ref()
            .take(10)
            .map(|o| format!("{:?}", o.key.name))
            .collect();
        let more = all.count();
        if names.is_empty() {
            // Objects of the kind in another namespace: the likely mistake.
            let elsewhere: std::collections::BTreeSet<&str> = self
                .m
                .of_kind(kind)
                .map(|o| o.key.namespace.as_str())
                .filter(|n| *n != ns)
                .collect();
            if elsewhere.is_empty() {
                format!("there is no {kind} in the manifests")
            } else {
                let list: Vec<&str> = elsewhere.into_iter().take(3).collect();
                format!(
                    "there is no {kind} in namespace {ns:?}, where references resolve; the manifests have {kind}s in namespace {} (set the same metadata.namespace on the objects that refer to each other)",
                    list.join(", ")
                )
            }
        } else if more > 0 {
            format!(
                "{kind}s in the manifests: {} and {more} more",
                names.join(", ")
            )
        } else {
            format!("{kind}s in the manifests: {}", names.join(", "))
        }
    }

    /// Is there a Cluster `ns/name` (valid, or reported as invalid)?
    fn cluster_exists(&self, ns: &str, name: &str) -> bool {
        self.m.get(Kind::Cluster, ns, name).is_some() || self.m.is_broken(Kind::Cluster, ns, name)
    }

    /// Check that `r` (made by `from`) names an existing object of one of `kinds`.
    fn check_ref(
        &mut self,
        from: &Object,
        r: &ObjectRef,
        field: &str,
        kinds: &[Kind],
    ) -> Option<Kind> {
        let Some(kind) = Kind::parse(&r.kind) else {
            let expected: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            self.err(
                from,
                &r.path,
                format!(
                    "{} refers to kind {:?} in {field}, which capi does not support",
                    from.key, r.kind
                ),
                format!("use one of: {}", expected.join(", ")),
            );
            return None;
        };
        if !kinds.contains(&kind) {
            let expected: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            self.err(
                from,
                &format!("{}/kind", r.path),
                format!(
                    "{} refers to a {kind} in {field}, but only {} can be used there",
                    from.key,
                    expected.join(" or ")
                ),
                format!("point {field} at one of: {}", expected.join(", ")),
            );
            return None;
        }
        if self.m.resolve(from, r).is_none() {
            if self.m.is_broken(kind, &from.key.namespace, &r.name) {
                return None;
            }
            let names = self.names_of(kind, &from.key.namespace);
            self.err(
                from,
                &format!("{}/name", r.path),
                format!(
                    "{} refers to {kind} {:?} ({field}), which is not in the manifests",
                    from.key, r.name
                ),
                format!("add a {kind} named {:?} or fix the name; {names}", r.name),
            );
            return None;
        }
        Some(kind)
    }

    fn check_version(&mut self, o: &Object, v: &Result<Version, String>, pointer: &str) {
        if let Err(e) = v {
            self.err(
                o,
                pointer,
                format!("{}: malformed version: {e}", o.key),
                "write the Kubernetes version as vMAJOR.MINOR.PATCH, e.g. v1.31.2".into(),
            );
        }
    }
}

pub(crate) fn validate(m: &Manifest, out: &mut Vec<Problem>) {
    let mut v = V { m, out };
    let owners = refs::check_clusters(&mut v);
    for o in &m.objects {
        match &o.body {
            Body::KubeadmControlPlane(k) => groups::check_control_plane(&mut v, &owners, o, k),
            Body::MachineDeployment(md) => groups::check_deployment(&mut v, &owners, o, md),
            Body::MachineSet(ms) => groups::check_set(&mut v, &owners, o, ms),
            Body::Machine(mm) => groups::check_machine(&mut v, &owners, o, mm),
            Body::KubeadmConfig(spec) | Body::KubeadmConfigTemplate(spec) => {
                let base = if o.key.kind == Kind::KubeadmConfig {
                    "/spec"
                } else {
                    "/spec/template/spec"
                };
                kubeadm::check_kubeadm(&mut v, o, spec, base);
            }
            Body::MachineHealthCheck(mhc) => health::check_health_check(&mut v, o, mhc),
            _ => {}
        }
    }
    check_machines_per_state(&mut v);
    infra::check_provider_specs(&mut v);
    infra::check_unused_infrastructure(&mut v, &owners);
}

/// All the manifests together ask for at most [`MAX_MACHINES_PER_STATE`]
/// machines; the error points at the group that crosses the bound.
fn check_machines_per_state(v: &mut V<'_>) {
    let m = v.m;
    let mut total: i64 = 0;
    for o in &m.objects {
        let n = match &o.body {
            Body::KubeadmControlPlane(k) => k.replicas,
            Body::MachineDeployment(md) => md.replicas,
            Body::MachineSet(ms) => ms.replicas,
            Body::Machine(_) => 1,
            _ => continue,
        };
        let before = total;
        total = total.saturating_add(n.clamp(0, MAX_REPLICAS_PER_GROUP));
        if before <= MAX_MACHINES_PER_STATE && total > MAX_MACHINES_PER_STATE {
            v.err(
                o,
                "/spec/replicas",
                format!("{}: with it the manifests ask for more than {MAX_MACHINES_PER_STATE} machines, the most capi manages in one state", o.key),
                "lower the replicas, or manage the clusters with separate states (--state) (docs/reliability.md, \"Limits\")".into(),
            );
        }
    }
}
