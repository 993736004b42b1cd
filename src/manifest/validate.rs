//! Cross-object validation. Every rule appends problems; none stops the others.

use std::collections::{BTreeMap, BTreeSet};

use super::error::Problem;
use super::model::*;
use super::Manifest;
use crate::resource::{Backend, Version};

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
        let names: Vec<String> = self
            .m
            .of_kind(kind)
            .filter(|o| o.key.namespace == ns)
            .map(|o| format!("{:?}", o.key.name))
            .collect();
        if names.is_empty() {
            format!("there is no {kind} in the manifests")
        } else {
            format!("{kind}s in the manifests: {}", names.join(", "))
        }
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

const INFRA_MACHINE_KINDS: &[Kind] = &[
    Kind::DockerMachineTemplate,
    Kind::DevMachineTemplate,
    Kind::OpenStackMachineTemplate,
];
const INFRA_MACHINE_KINDS_STANDALONE: &[Kind] = &[
    Kind::DockerMachine,
    Kind::DevMachine,
    Kind::DockerMachineTemplate,
    Kind::DevMachineTemplate,
    Kind::OpenStackMachineTemplate,
];
const INFRA_CLUSTER_KINDS: &[Kind] = &[
    Kind::DockerCluster,
    Kind::DevCluster,
    Kind::OpenStackCluster,
];

/// The infrastructure "family" of a cluster or machine spec, to catch a Docker
/// cluster pointing at an OpenStack machine template.
fn family_of_cluster(c: &InfraCluster) -> &'static str {
    match c {
        InfraCluster::Docker(_) => "docker",
        InfraCluster::InMemory => "inMemory",
        InfraCluster::OpenStack(_) => "openstack",
    }
}

fn family_of_machine(m: &InfraMachine) -> &'static str {
    match m {
        InfraMachine::Docker(_) => "docker",
        InfraMachine::InMemory(_) => "inMemory",
        InfraMachine::OpenStack(_) => "openstack",
    }
}

pub(crate) fn validate(m: &Manifest, out: &mut Vec<Problem>) {
    let mut v = V { m, out };

    // Which cluster owns each control plane / infra cluster.
    let mut cp_owner: BTreeMap<ObjectKey, ObjectKey> = BTreeMap::new();
    let mut infra_owner: BTreeMap<ObjectKey, ObjectKey> = BTreeMap::new();
    let mut cluster_family: BTreeMap<(String, String), &'static str> = BTreeMap::new();

    for o in &m.objects {
        let Body::Cluster(c) = &o.body else { continue };
        match &c.control_plane_ref {
            Some(r) => {
                if v.check_ref(o, r, "spec.controlPlaneRef", &[Kind::KubeadmControlPlane])
                    .is_some()
                {
                    let key = m.resolve(o, r).unwrap().key.clone();
                    if let Some(prev) = cp_owner.insert(key.clone(), o.key.clone()) {
                        v.err(
                            o,
                            &r.path,
                            format!(
                                "{} and {} both use {key} as their control plane",
                                prev, o.key
                            ),
                            "give each Cluster its own KubeadmControlPlane".into(),
                        );
                    }
                }
            }
            None => {
                let has_cp_machine = m.of_kind(Kind::Machine).any(|mo| matches!(&mo.body, Body::Machine(mm) if mm.control_plane && mm.template.cluster_name == o.key.name));
                if !has_cp_machine {
                    v.err(o, "/spec", format!("{} has no control plane", o.key), "set spec.controlPlaneRef to a KubeadmControlPlane, or add Machines labelled cluster.x-k8s.io/control-plane".into());
                }
            }
        }
        match &c.infrastructure_ref {
            Some(r) => {
                if v.check_ref(o, r, "spec.infrastructureRef", INFRA_CLUSTER_KINDS)
                    .is_some()
                {
                    let infra = m.resolve(o, r).unwrap();
                    if let Some(prev) = infra_owner.insert(infra.key.clone(), o.key.clone()) {
                        v.err(
                            o,
                            &r.path,
                            format!("{} and {} both use {}", prev, o.key, infra.key),
                            "give each Cluster its own infrastructure cluster object".into(),
                        );
                    }
                    if let Body::InfraCluster(ic) = &infra.body {
                        cluster_family.insert(
                            (o.key.namespace.clone(), o.key.name.clone()),
                            family_of_cluster(ic),
                        );
                    }
                }
            }
            None => v.err(
                o,
                "/spec",
                format!("{} has no spec.infrastructureRef", o.key),
                "set spec.infrastructureRef to a DockerCluster, DevCluster or OpenStackCluster"
                    .into(),
            ),
        }
    }

    let cluster_exists = |ns: &str, name: &str| {
        m.get(Kind::Cluster, ns, name).is_some() || m.is_broken(Kind::Cluster, ns, name)
    };
    let clusters_hint = |v: &V<'_>, ns: &str| v.names_of(Kind::Cluster, ns);

    for o in &m.objects {
        match &o.body {
            Body::KubeadmControlPlane(k) => {
                if !cp_owner.contains_key(&o.key) {
                    v.err(
                        o,
                        "",
                        format!(
                            "{} is not referenced by any Cluster's spec.controlPlaneRef",
                            o.key
                        ),
                        "set a Cluster's spec.controlPlaneRef to it, or remove it".into(),
                    );
                }
                v.check_version(o, &k.version, "/spec/version");
                let family = cp_owner
                    .get(&o.key)
                    .and_then(|c| cluster_family.get(&(c.namespace.clone(), c.name.clone())))
                    .copied();
                if let Some(r) = &k.infrastructure_ref {
                    if v.check_ref(
                        o,
                        r,
                        "spec.machineTemplate.spec.infrastructureRef",
                        INFRA_MACHINE_KINDS,
                    )
                    .is_some()
                    {
                        check_family(&mut v, o, r, family);
                    }
                }
                if k.replicas < 1 {
                    v.err(
                        o,
                        "/spec/replicas",
                        format!(
                            "{}: replicas must be at least 1, found {}",
                            o.key, k.replicas
                        ),
                        "set spec.replicas to 1, 3 or 5".into(),
                    );
                }
                let external_etcd = k
                    .kubeadm_config_spec
                    .cluster_configuration
                    .as_ref()
                    .and_then(|c| c.etcd.as_ref())
                    .is_some_and(|e| e.external.is_some());
                if k.replicas >= 1 && k.replicas % 2 == 0 && !external_etcd {
                    v.err(
                        o,
                        "/spec/replicas",
                        format!("{}: replicas cannot be an even number ({}) when etcd is stacked", o.key, k.replicas),
                        format!("use an odd number ({} or {}) so etcd keeps quorum, or configure external etcd", k.replicas - 1, k.replicas + 1),
                    );
                }
                if let Some(s) = k.max_surge {
                    let resolved = match s {
                        IntOrPercent::Int(i) => Some(i),
                        IntOrPercent::Percent(_) => None,
                    };
                    match resolved {
                        Some(0) if k.replicas < 3 => v.err(
                            o,
                            surge_path(o),
                            format!("{}: maxSurge 0 needs at least 3 replicas (found {})", o.key, k.replicas),
                            "with fewer than 3 control-plane machines, use maxSurge 1 so a new machine joins before an old one leaves".into(),
                        ),
                        Some(0) | Some(1) => {}
                        _ => v.err(
                            o,
                            surge_path(o),
                            format!("{}: control-plane maxSurge must be 0 or 1, found {s}", o.key),
                            "set rollout.strategy.rollingUpdate.maxSurge (rolloutStrategy in v1beta1) to 1 (default) or 0".into(),
                        ),
                    }
                }
                check_kubeadm(&mut v, o, &k.kubeadm_config_spec, "/spec/kubeadmConfigSpec");
            }
            Body::MachineDeployment(md) => {
                check_cluster_name(
                    &mut v,
                    o,
                    &md.cluster_name,
                    &md.template.cluster_name,
                    "/spec/clusterName",
                    "/spec/template/spec/clusterName",
                    &cluster_exists,
                    &clusters_hint,
                );
                check_template(
                    &mut v,
                    o,
                    &md.template,
                    "/spec/template/spec",
                    cluster_family
                        .get(&(o.key.namespace.clone(), md.cluster_name.clone()))
                        .copied(),
                    INFRA_MACHINE_KINDS,
                );
                if md.replicas < 0 {
                    v.err(
                        o,
                        "/spec/replicas",
                        format!("{}: replicas cannot be negative", o.key),
                        "set spec.replicas to 0 or more".into(),
                    );
                }
                if let Strategy::RollingUpdate {
                    max_surge,
                    max_unavailable,
                } = &md.strategy
                {
                    let path = strategy_path(o);
                    for (name, val) in
                        [("maxSurge", max_surge), ("maxUnavailable", max_unavailable)]
                    {
                        let bad = match val {
                            IntOrPercent::Int(i) => *i < 0,
                            IntOrPercent::Percent(p) => *p < 0 || *p > 100,
                        };
                        if bad {
                            v.err(o, &format!("{path}/{name}"), format!("{}: {name} {val} is out of range", o.key), format!("{name} must be a non-negative integer or a percentage between 0% and 100%"));
                        }
                    }
                    if max_surge.is_zero() && max_unavailable.is_zero() {
                        v.err(
                            o,
                            &path,
                            format!("{}: maxSurge and maxUnavailable cannot both be 0", o.key),
                            "a rollout could never make progress; set maxSurge to 1 (the default) or maxUnavailable to 1".into(),
                        );
                    }
                }
            }
            Body::MachineSet(ms) => {
                check_cluster_name(
                    &mut v,
                    o,
                    &ms.cluster_name,
                    &ms.template.cluster_name,
                    "/spec/clusterName",
                    "/spec/template/spec/clusterName",
                    &cluster_exists,
                    &clusters_hint,
                );
                check_template(
                    &mut v,
                    o,
                    &ms.template,
                    "/spec/template/spec",
                    cluster_family
                        .get(&(o.key.namespace.clone(), ms.cluster_name.clone()))
                        .copied(),
                    INFRA_MACHINE_KINDS,
                );
                if ms.replicas < 0 {
                    v.err(
                        o,
                        "/spec/replicas",
                        format!("{}: replicas cannot be negative", o.key),
                        "set spec.replicas to 0 or more".into(),
                    );
                }
            }
            Body::Machine(mm) => {
                let name = mm.template.cluster_name.clone();
                if name.is_empty() {
                    v.err(
                        o,
                        "/spec",
                        format!("{} has no spec.clusterName", o.key),
                        "set spec.clusterName to the Cluster this machine belongs to".into(),
                    );
                } else if !cluster_exists(&o.key.namespace, &name) {
                    let hint = clusters_hint(&v, &o.key.namespace);
                    v.err(
                        o,
                        "/spec/clusterName",
                        format!(
                            "{}: spec.clusterName {name:?} is not a Cluster in the manifests",
                            o.key
                        ),
                        format!("fix the name; {hint}"),
                    );
                }
                check_template(
                    &mut v,
                    o,
                    &mm.template,
                    "/spec",
                    cluster_family
                        .get(&(o.key.namespace.clone(), name))
                        .copied(),
                    INFRA_MACHINE_KINDS_STANDALONE,
                );
            }
            Body::KubeadmConfig(spec) | Body::KubeadmConfigTemplate(spec) => {
                let base = if o.key.kind == Kind::KubeadmConfig {
                    "/spec"
                } else {
                    "/spec/template/spec"
                };
                check_kubeadm(&mut v, o, spec, base);
            }
            Body::MachineHealthCheck(mhc) => {
                if mhc.cluster_name.is_empty() {
                    v.err(
                        o,
                        "/spec",
                        format!("{} has no spec.clusterName", o.key),
                        "set spec.clusterName".into(),
                    );
                } else if !cluster_exists(&o.key.namespace, &mhc.cluster_name) {
                    let hint = clusters_hint(&v, &o.key.namespace);
                    v.err(
                        o,
                        "/spec/clusterName",
                        format!(
                            "{}: spec.clusterName {:?} is not a Cluster in the manifests",
                            o.key, mhc.cluster_name
                        ),
                        format!("fix the name; {hint}"),
                    );
                }
                if mhc.selector.is_empty() {
                    v.err(o, "/spec/selector", format!("{}: the selector must not be empty", o.key), "set spec.selector.matchLabels to select the machines to check (e.g. cluster.x-k8s.io/deployment-name: <md>)".into());
                }
                if let TriggerIf::AtMost(IntOrPercent::Percent(p)) = mhc.trigger_if {
                    if !(0..=100).contains(&p) {
                        v.err(
                            o,
                            "/spec",
                            format!("{}: unhealthy threshold {p}% is out of range", o.key),
                            "use a percentage between 0% and 100%".into(),
                        );
                    }
                }
                if mhc.node_startup_timeout_seconds != 0 && mhc.node_startup_timeout_seconds < 30 {
                    v.err(o, "/spec", format!("{}: node startup timeout must be at least 30 seconds (or 0 to disable)", o.key), "raise the node startup timeout".into());
                }
            }
            _ => {}
        }
    }

    // Provider-specific checks of specs capi keeps as written.
    for o in &m.objects {
        let (problems, base) = match &o.body {
            Body::InfraCluster(InfraCluster::OpenStack(spec)) => (
                crate::infra::validate_cluster_spec(Backend::Openstack, spec),
                "/spec",
            ),
            Body::InfraMachineTemplate(InfraMachine::OpenStack(spec)) => (
                crate::infra::validate_machine_spec(Backend::Openstack, spec),
                "/spec/template/spec",
            ),
            _ => continue,
        };
        for problem in problems {
            v.err(
                o,
                &format!("{base}{}", problem.pointer),
                format!("{}: {}", o.key, problem.message),
                problem.help,
            );
        }
    }

    // Infrastructure clusters that no Cluster uses are almost always a mistake.
    for o in &m.objects {
        if matches!(o.body, Body::InfraCluster(_)) && !infra_owner.contains_key(&o.key) {
            v.err(
                o,
                "",
                format!(
                    "{} is not referenced by any Cluster's spec.infrastructureRef",
                    o.key
                ),
                "set a Cluster's spec.infrastructureRef to it, or remove it".into(),
            );
        }
    }
}

fn surge_path(o: &Object) -> &'static str {
    if o.api_gen == ApiGen::V1beta1 {
        "/spec/rolloutStrategy/rollingUpdate/maxSurge"
    } else {
        "/spec/rollout/strategy/rollingUpdate/maxSurge"
    }
}

fn strategy_path(o: &Object) -> String {
    if o.api_gen == ApiGen::V1beta1 {
        "/spec/strategy/rollingUpdate".into()
    } else {
        "/spec/rollout/strategy/rollingUpdate".into()
    }
}

#[allow(clippy::too_many_arguments)]
fn check_cluster_name(
    v: &mut V<'_>,
    o: &Object,
    name: &str,
    template_name: &str,
    path: &str,
    template_path: &str,
    exists: &dyn Fn(&str, &str) -> bool,
    hint: &dyn Fn(&V<'_>, &str) -> String,
) {
    if name.is_empty() {
        v.err(
            o,
            "/spec",
            format!("{} has no spec.clusterName", o.key),
            "set spec.clusterName to the Cluster it belongs to".into(),
        );
        return;
    }
    if !exists(&o.key.namespace, name) {
        let h = hint(v, &o.key.namespace);
        v.err(
            o,
            path,
            format!(
                "{}: spec.clusterName {name:?} is not a Cluster in the manifests",
                o.key
            ),
            format!("fix the name; {h}"),
        );
    }
    if !template_name.is_empty() && template_name != name {
        v.err(
            o,
            template_path,
            format!("{}: spec.template.spec.clusterName {template_name:?} does not match spec.clusterName {name:?}", o.key),
            format!("set both to the same Cluster name ({name:?})"),
        );
    }
}

fn check_template(
    v: &mut V<'_>,
    o: &Object,
    t: &MachineTemplate,
    base: &str,
    family: Option<&'static str>,
    infra_kinds: &[Kind],
) {
    match &t.version {
        Some(ver) => v.check_version(o, ver, &format!("{base}/version")),
        None => v.err(
            o,
            base,
            format!(
                "{} has no {}.version",
                o.key,
                super::normalize::pointer_to_dotted(base)
            ),
            "set the Kubernetes version of its machines, e.g. version: v1.31.2".into(),
        ),
    }
    match (&t.bootstrap_ref, &t.data_secret_name) {
        (Some(r), _) => {
            v.check_ref(
                o,
                r,
                "bootstrap.configRef",
                &[Kind::KubeadmConfigTemplate, Kind::KubeadmConfig],
            );
        }
        (None, Some(_)) => {}
        (None, None) => v.err(
            o,
            base,
            format!(
                "{} has neither bootstrap.configRef nor bootstrap.dataSecretName",
                o.key
            ),
            "set bootstrap.configRef to a KubeadmConfigTemplate".into(),
        ),
    }
    match &t.infrastructure_ref {
        Some(r) => {
            if v.check_ref(o, r, "infrastructureRef", infra_kinds).is_some() {
                check_family(v, o, r, family);
            }
        }
        None => v.err(o, base, format!("{} has no infrastructureRef", o.key), "set infrastructureRef to the machine template (DockerMachineTemplate, DevMachineTemplate or OpenStackMachineTemplate)".into()),
    }
}

fn check_family(v: &mut V<'_>, o: &Object, r: &ObjectRef, cluster_family: Option<&'static str>) {
    let Some(cf) = cluster_family else { return };
    let Some(target) = v.m.resolve(o, r) else {
        return;
    };
    let mf = match &target.body {
        Body::InfraMachineTemplate(im) | Body::InfraMachine(im) => family_of_machine(im),
        _ => return,
    };
    if mf != cf {
        v.err(
            o,
            &r.path,
            format!(
                "{} uses {} ({mf} infrastructure) but its Cluster's infrastructure is {cf}",
                o.key, target.key
            ),
            format!("use a machine template of the cluster's infrastructure ({cf})"),
        );
    }
}

fn check_kubeadm(v: &mut V<'_>, o: &Object, spec: &super::raw::KubeadmConfigSpec, base: &str) {
    for (i, f) in spec.files.iter().enumerate() {
        let p = format!("{base}/files/{i}");
        if f.path.is_empty() {
            v.err(
                o,
                &p,
                format!("{}: files[{i}] has no path", o.key),
                "every file needs a `path`".into(),
            );
        }
        match (&f.content, &f.content_from) {
            (Some(_), Some(_)) => v.err(
                o,
                &p,
                format!(
                    "{}: files[{i}] ({}) sets both content and contentFrom",
                    o.key, f.path
                ),
                "set exactly one of content and contentFrom".into(),
            ),
            (None, Some(cf)) => {
                let secret = v.m.get(Kind::Secret, &o.key.namespace, &cf.secret.name);
                match secret.map(|s| &s.body) {
                    None => {
                        let names = v.names_of(Kind::Secret, &o.key.namespace);
                        v.err(
                            o,
                            &format!("{p}/contentFrom/secret/name"),
                            format!("{}: files[{i}] ({}) takes its content from Secret {:?}, which is not in the manifests", o.key, f.path, cf.secret.name),
                            format!("add the Secret to the manifests (capi has no cluster to read it from); {names}"),
                        );
                    }
                    Some(Body::Secret(data)) if !data.contains_key(&cf.secret.key) => {
                        let keys: Vec<&String> = data.keys().collect();
                        v.err(
                            o,
                            &format!("{p}/contentFrom/secret/key"),
                            format!(
                                "{}: Secret {:?} has no key {:?} (files[{i}] {})",
                                o.key, cf.secret.name, cf.secret.key, f.path
                            ),
                            format!("use one of its keys: {keys:?}"),
                        );
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        if let Some(enc) = &f.encoding {
            if !matches!(enc.as_str(), "base64" | "gzip" | "gzip+base64") {
                v.err(
                    o,
                    &format!("{p}/encoding"),
                    format!("{}: files[{i}] has unknown encoding {enc:?}", o.key),
                    "use base64, gzip or gzip+base64 (or leave it out for plain text)".into(),
                );
            }
        }
        if let Some(perm) = &f.permissions {
            let ok =
                (3..=4).contains(&perm.len()) && perm.bytes().all(|b| (b'0'..=b'7').contains(&b));
            if !ok {
                v.err(
                    o,
                    &format!("{p}/permissions"),
                    format!(
                        "{}: files[{i}] permissions {perm:?} are not an octal mode",
                        o.key
                    ),
                    "write permissions as an octal string, e.g. '0600'".into(),
                );
            }
        }
    }
    if let Some(fmt) = &spec.format {
        if fmt != "cloud-config" {
            v.err(
                o,
                &format!("{base}/format"),
                format!("{}: bootstrap format {fmt:?} is not supported", o.key),
                "capi renders cloud-config only; remove `format: ignition`".into(),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, u) in spec.users.iter().enumerate() {
        if u.name.is_empty() {
            v.err(
                o,
                &format!("{base}/users/{i}"),
                format!("{}: users[{i}] has no name", o.key),
                "every user needs a `name`".into(),
            );
        } else if !seen.insert(u.name.clone()) {
            v.err(
                o,
                &format!("{base}/users/{i}/name"),
                format!("{}: user {:?} is listed twice", o.key, u.name),
                "remove the duplicate user".into(),
            );
        }
    }
}
