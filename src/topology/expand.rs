//! Expanding topology Clusters. ClusterClasses and the templates they
//! reference are taken out of the document stream; each Cluster with
//! `spec.topology` is replaced by itself without the topology (and with
//! `controlPlaneRef`/`infrastructureRef` to its generated objects) followed
//! by the generated objects, whose positions point at the template or the
//! topology entry they come from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::class::{self, Class, MdClass, TemplateRef};
use super::patches::{self, Applied, Role, Target};
use super::{names, Report, EXPLAIN, LABEL_DEPLOYMENT_NAME, LABEL_OWNED};
use crate::manifest::{yaml::SpanMap, Origin, RawDocument, DEFAULT_NAMESPACE};
use crate::resource::{TopologyNote, Version};

const UPGRADE_CONCURRENCY: &str = "topology.cluster.x-k8s.io/upgrade-concurrency";

/// (kind, namespace, name) of a document.
type Key = (String, String, String);

fn key_of(d: &RawDocument) -> Option<Key> {
    let kind = d.root.get("kind")?.as_str()?.to_string();
    let name = d.root.pointer("/metadata/name")?.as_str()?.to_string();
    Some((kind, namespace_of(&d.root), name))
}

fn namespace_of(v: &Value) -> String {
    v.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string()
}

/// Kinds that only make sense inside a ClusterClass.
fn class_only_kind(kind: &str) -> bool {
    kind == "ClusterClass"
        || kind.ends_with("ClusterTemplate")
        || kind == "KubeadmControlPlaneTemplate"
        || kind.ends_with("MachinePoolTemplate")
}

fn is_topology_cluster(d: &RawDocument) -> bool {
    d.root.get("kind").and_then(Value::as_str) == Some("Cluster")
        && d.root
            .pointer("/spec/topology")
            .is_some_and(|t| !t.is_null())
}

pub(super) fn expand_all(rep: &mut Report<'_>, docs: Vec<RawDocument>) -> Vec<RawDocument> {
    if !docs
        .iter()
        .any(|d| is_topology_cluster(d) || key_of(d).is_some_and(|k| class_only_kind(&k.0)))
    {
        return docs;
    }
    let mut index: BTreeMap<Key, usize> = BTreeMap::new();
    for (i, d) in docs.iter().enumerate() {
        if let Some(k) = key_of(d) {
            index.entry(k).or_insert(i);
        }
    }
    // Everything the classes reference is consumed by the expansion.
    let mut consumed: BTreeSet<usize> = BTreeSet::new();
    for (k, &i) in &index {
        if k.0 == "ClusterClass" {
            consumed.insert(i);
            let c = class::read(&docs[i].root);
            for r in c.template_refs() {
                if let Some(&t) = index.get(&(r.kind.clone(), k.1.clone(), r.name.clone())) {
                    consumed.insert(t);
                }
            }
        } else if class_only_kind(&k.0) {
            consumed.insert(i);
        }
    }
    let ctx = Docs {
        docs: &docs,
        index: &index,
    };
    let mut out = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        if consumed.contains(&i) {
            continue;
        }
        if is_topology_cluster(d) {
            if let Some(generated) = ctx.expand_cluster(rep, d) {
                out.extend(generated);
            }
            continue;
        }
        out.push(d.clone());
    }
    out
}

struct Docs<'a> {
    docs: &'a [RawDocument],
    index: &'a BTreeMap<Key, usize>,
}

/// One MachineDeployment topology entry.
pub(super) struct MdTopology<'a> {
    /// JSON pointer of the entry in the Cluster.
    pub(super) at: String,
    pub(super) name: String,
    pub(super) entry: &'a Value,
    pub(super) class: &'a MdClass,
    /// The class's variables with this entry's overrides.
    pub(super) vars: Value,
}

impl<'a> Docs<'a> {
    fn get(&self, kind: &str, ns: &str, name: &str) -> Option<&'a RawDocument> {
        self.index
            .get(&(kind.to_string(), ns.to_string(), name.to_string()))
            .map(|&i| &self.docs[i])
    }

    fn expand_cluster(&self, rep: &mut Report<'_>, d: &RawDocument) -> Option<Vec<RawDocument>> {
        let root = &d.root;
        let name = root
            .pointer("/metadata/name")
            .and_then(Value::as_str)?
            .to_string();
        let ns = namespace_of(root);
        let topo = root.pointer("/spec/topology")?;
        let (class_name, class_ns, class_ptr) = class_ref(topo, &ns);
        let Some(class_doc) = self.get("ClusterClass", &class_ns, &class_name) else {
            let known: Vec<String> = self
                .index
                .keys()
                .filter(|k| k.0 == "ClusterClass")
                .map(|k| format!("{}/{}", k.1, k.2))
                .collect();
            rep.error(
                &d.origin,
                &class_ptr,
                format!("Cluster {name:?}: ClusterClass {class_ns}/{class_name} is not in the manifests"),
                if known.is_empty() {
                    "pass the ClusterClass and its templates with -f (clusterctl's ClusterClass flavors ship it in clusterclass-<name>.yaml)".to_string()
                } else {
                    format!("known ClusterClasses: {}", known.join(", "))
                },
            );
            return None;
        };
        let class = class::read(&class_doc.root);
        let version = topo
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Err(e) = Version::parse(&version) {
            rep.error(&d.origin, "/spec/topology/version", format!("Cluster {name:?}: topology.version {version:?} is not a Kubernetes version: {e}"), "write a version like v1.31.2");
            return None;
        }
        let templates = self.templates(rep, &class, class_doc, &class_ns)?;
        let cx = ClusterCx {
            name: &name,
            ns: &ns,
            class_name: &class_name,
            class_ns: &class_ns,
            version: &version,
            d,
            topo,
            class: &class,
            class_doc,
        };
        cx.build(rep, templates)
    }

    /// The class's templates, each reported when missing.
    fn templates(
        &self,
        rep: &mut Report<'_>,
        class: &Class,
        class_doc: &RawDocument,
        ns: &str,
    ) -> Option<BTreeMap<String, &'a RawDocument>> {
        let mut out = BTreeMap::new();
        let mut ok = true;
        let mut want = |r: &Option<TemplateRef>, what: &str, required: bool| {
            let Some(r) = r else {
                if required {
                    rep.error(
                        &class_doc.origin,
                        "/spec",
                        format!("ClusterClass has no {what} template reference"),
                        format!("add {what}.templateRef (v1beta2) or {what}.ref (v1beta1)"),
                    );
                    ok = false;
                }
                return;
            };
            match self.get(&r.kind, ns, &r.name) {
                Some(t) => {
                    out.insert(r.pointer.clone(), t);
                }
                None => {
                    rep.error(
                        &class_doc.origin,
                        &format!("{}/name", r.pointer),
                        format!(
                            "{what} template {} {ns}/{} is not in the manifests",
                            r.kind, r.name
                        ),
                        "pass the template with -f, or fix the reference's kind and name",
                    );
                    ok = false;
                }
            }
        };
        want(&class.infrastructure, "infrastructure", true);
        want(&class.control_plane, "controlPlane", true);
        want(
            &class.control_plane_machine,
            "controlPlane.machineInfrastructure",
            false,
        );
        for w in &class.workers {
            want(&w.bootstrap, "machineDeployment bootstrap", true);
            want(&w.infrastructure, "machineDeployment infrastructure", true);
        }
        ok.then_some(out)
    }
}

/// `classRef{name, namespace}` (v1beta2) or `class`/`classNamespace` (v1beta1).
fn class_ref(topo: &Value, ns: &str) -> (String, String, String) {
    if let Some(r) = topo.get("classRef") {
        let name = r
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let cns = r
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(ns);
        return (name, cns.to_string(), "/spec/topology/classRef/name".into());
    }
    let name = topo
        .get("class")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let cns = topo
        .get("classNamespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(ns);
    (name, cns.to_string(), "/spec/topology/class".into())
}

/// One topology Cluster being expanded.
pub(super) struct ClusterCx<'a> {
    pub(super) name: &'a str,
    pub(super) ns: &'a str,
    pub(super) class_name: &'a str,
    pub(super) class_ns: &'a str,
    pub(super) version: &'a str,
    pub(super) d: &'a RawDocument,
    pub(super) topo: &'a Value,
    pub(super) class: &'a Class,
    pub(super) class_doc: &'a RawDocument,
}

/// `apiVersion` group and version of a template reference.
pub(super) fn is_v1beta1(api_version: &str) -> bool {
    api_version.ends_with("/v1beta1")
}

pub(super) fn reference(v1beta1: bool, api_version: &str, kind: &str, name: &str) -> Value {
    if v1beta1 {
        json!({"apiVersion": api_version, "kind": kind, "name": name})
    } else {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        json!({"apiGroup": group, "kind": kind, "name": name})
    }
}

pub(super) fn labels_of(v: &Value, ptr: &str) -> Map<String, Value> {
    v.pointer(ptr)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Spans of `origin` under `from`, moved to `to`.
pub(super) fn remap(
    origin: &Origin,
    from: &str,
    to: &str,
    extra: &[(&str, &Origin, &str)],
) -> Origin {
    let mut spans = SpanMap::new();
    for (k, p) in origin.spans.iter() {
        if let Some(rest) = k.strip_prefix(from) {
            spans.insert(format!("{to}{rest}"), *p);
        }
    }
    spans.insert(String::new(), origin.pos);
    for (to, o, from) in extra {
        if o.file == origin.file {
            spans.insert((*to).to_string(), o.pos_of(from));
        }
    }
    Origin {
        file: origin.file,
        pos: origin.pos,
        spans: Arc::new(spans),
    }
}

impl ClusterCx<'_> {
    fn seed(&self, role: &str, entry: &str) -> [String; 5] {
        [
            self.ns.to_string(),
            self.name.to_string(),
            format!("{}/{}", self.class_ns, self.class_name),
            role.to_string(),
            entry.to_string(),
        ]
    }

    fn name_for(
        &self,
        rep: &mut Report<'_>,
        template: Option<&str>,
        default: &str,
        md: Option<&str>,
        role: &str,
    ) -> Option<String> {
        let seed = self.seed(role, md.unwrap_or(""));
        let seed: Vec<&str> = seed.iter().map(String::as_str).collect();
        match names::render(template.unwrap_or(default), self.name, md, &seed) {
            Ok(n) => Some(n),
            Err(e) => {
                rep.error(&self.class_doc.origin, "/spec", format!("ClusterClass {:?}: naming template {:?}: {e}", self.class_name, template.unwrap_or(default)), e.help_or("fix naming.template (available: .cluster.name, .random, .machineDeployment.topologyName)"));
                None
            }
        }
    }

    fn clone_name(&self, prefix: &str, role: &str, entry: &str) -> String {
        let seed = self.seed(role, entry);
        let seed: Vec<&str> = seed.iter().map(String::as_str).collect();
        names::simple(prefix, &seed)
    }

    /// The clone's name once its content is known (after patches): a
    /// different content is a different name, as upstream's topology
    /// controller rotates a template it must change (templates are
    /// immutable), so a machine's template is never edited in place.
    fn rotated_name(&self, prefix: &str, role: &str, entry: &str, patched: &Target) -> String {
        let content = serde_json::to_string(patched.doc.get("spec").unwrap_or(&Value::Null))
            .unwrap_or_default();
        let base = self.seed(role, entry);
        let mut seed: Vec<&str> = base.iter().map(String::as_str).collect();
        seed.push(&content);
        names::simple(prefix, &seed)
    }

    /// The control plane's machine template clone name, once patched.
    fn rotated_cp_machine(&self, patched: Option<&(Target, Origin)>, unpatched: String) -> String {
        match patched {
            Some((m, _)) => {
                self.rotated_name(&format!("{}-", self.name), "control-plane-machine", "", m)
            }
            None => unpatched,
        }
    }

    /// A MachineDeployment's bootstrap and infrastructure clone names, once
    /// patched.
    fn md_clone_names(&self, entry: &str, boot: &Target, infra: &Target) -> (String, String) {
        let prefix = format!("{}-{entry}-", self.name);
        (
            self.rotated_name(&prefix, "bootstrap", entry, boot),
            self.rotated_name(&prefix, "infrastructure", entry, infra),
        )
    }

    fn build(
        &self,
        rep: &mut Report<'_>,
        templates: BTreeMap<String, &RawDocument>,
    ) -> Option<Vec<RawDocument>> {
        let before = rep.problems.iter().filter(|p| p.is_error()).count();
        let values = self.cluster_variables(rep);
        let cp_name = self.name_for(
            rep,
            self.class.control_plane_naming.as_deref(),
            "{{ .cluster.name }}-{{ .random }}",
            None,
            "control-plane",
        )?;
        let infra_name = self.name_for(
            rep,
            self.class.infrastructure_naming.as_deref(),
            "{{ .cluster.name }}-{{ .random }}",
            None,
            "infrastructure",
        )?;
        let cp_machine_name =
            self.clone_name(&format!("{}-", self.name), "control-plane-machine", "");
        let mds = self.machine_deployments(rep, &values);
        if rep.problems.iter().filter(|p| p.is_error()).count() > before {
            return None;
        }
        let builtin_cluster = json!({
            "name": self.name, "namespace": self.ns,
            "topology": {"version": self.version, "class": self.class_name, "classNamespace": self.class_ns},
        });
        let replicas = self.topo.pointer("/controlPlane/replicas").cloned();
        let mut global = values.clone();
        global["builtin"] = json!({"cluster": builtin_cluster});
        let mut cp_vars = global.clone();
        cp_vars["builtin"]["controlPlane"] = json!({
            "version": self.version, "name": cp_name,
            "machineTemplate": {"infrastructureRef": {"name": cp_machine_name}},
        });
        if let Some(r) = &replicas {
            cp_vars["builtin"]["controlPlane"]["replicas"] = r.clone();
        }
        let mut targets = Vec::new();
        let mut push = |role: Role, r: &Option<TemplateRef>, vars: &Value| {
            if let Some(t) = r.as_ref().and_then(|r| templates.get(&r.pointer)) {
                targets.push((
                    Target {
                        role,
                        doc: t.root.clone(),
                        vars: vars.clone(),
                    },
                    t.origin.clone(),
                ));
            }
        };
        push(
            Role::InfrastructureCluster,
            &self.class.infrastructure,
            &global,
        );
        push(Role::ControlPlane, &self.class.control_plane, &cp_vars);
        push(
            Role::ControlPlaneMachine,
            &self.class.control_plane_machine,
            &cp_vars,
        );
        let mut md_names = Vec::new();
        for md in &mds {
            let md_name = self.name_for(
                rep,
                md.class.naming.as_deref(),
                "{{ .cluster.name }}-{{ .machineDeployment.topologyName }}-{{ .random }}",
                Some(&md.name),
                "machine-deployment",
            )?;
            let prefix = format!("{}-{}-", self.name, md.name);
            let boot = self.clone_name(&prefix, "bootstrap", &md.name);
            let infra = self.clone_name(&prefix, "infrastructure", &md.name);
            let mut vars = md.vars.clone();
            vars["builtin"] = global["builtin"].clone();
            vars["builtin"]["machineDeployment"] = json!({
                "version": self.version, "class": md.class.class, "name": md_name,
                "topologyName": md.name,
                "replicas": md.entry.get("replicas").cloned().unwrap_or(Value::Null),
                "bootstrap": {"configRef": {"name": boot}},
                "infrastructureRef": {"name": infra},
            });
            push(
                Role::Worker(md.class.class.clone()),
                &md.class.bootstrap,
                &vars,
            );
            push(
                Role::Worker(md.class.class.clone()),
                &md.class.infrastructure,
                &vars,
            );
            md_names.push((md_name, boot, infra));
        }
        let origins: Vec<Origin> = targets.iter().map(|t| t.1.clone()).collect();
        let mut ts: Vec<Target> = targets.into_iter().map(|t| t.0).collect();
        let applied = patches::apply(
            rep,
            &self.class_doc.root,
            &self.class_doc.origin,
            &global,
            &mut ts,
        );
        if rep.problems.iter().filter(|p| p.is_error()).count() > before {
            return None;
        }
        let mut out = Vec::new();
        let mut it = ts.into_iter().zip(origins);
        let (infra_t, infra_o) = it.next()?;
        let (cp_t, cp_o) = it.next()?;
        let cp_machine = if self.class.control_plane_machine.is_some() {
            it.next()
        } else {
            None
        };
        let cp_machine_name = self.rotated_cp_machine(cp_machine.as_ref(), cp_machine_name);
        out.push(self.cluster_doc(&cp_t, &cp_name, &infra_t, &infra_name));
        out.push(self.infra_cluster(&infra_t, &infra_o, &infra_name));
        let mut kcp = self.control_plane(
            &cp_t,
            &cp_o,
            &cp_name,
            cp_machine
                .as_ref()
                .map(|m| (&m.0, cp_machine_name.as_str())),
        );
        let cp_targets: &[usize] = if cp_machine.is_some() { &[1, 2] } else { &[1] };
        self.explain(&mut kcp, "controlPlane", &applied, cp_targets);
        out.push(kcp);
        if let Some((m, o)) = &cp_machine {
            out.push(self.template_clone(m, o, &cp_machine_name, None));
        }
        out.extend(self.control_plane_health(&cp_name));
        let first_md = if cp_machine.is_some() { 3 } else { 2 };
        let names: Vec<String> = md_names.into_iter().map(|n| n.0).collect();
        out.extend(self.worker_docs(&mds, &names, &mut it, &applied, first_md)?);
        Some(out)
    }

    /// Each MachineDeployment topology's template clones, MachineDeployment
    /// and health check; its templates are the next two patched targets
    /// (`first` is the index of the first one's).
    fn worker_docs(
        &self,
        mds: &[MdTopology<'_>],
        md_names: &[String],
        it: &mut impl Iterator<Item = (Target, Origin)>,
        applied: &[Applied],
        first: usize,
    ) -> Option<Vec<RawDocument>> {
        let mut out = Vec::new();
        for (i, (md, md_name)) in mds.iter().zip(md_names).enumerate() {
            let (bt, bo) = it.next()?;
            let (it_, io) = it.next()?;
            let (boot, infra) = self.md_clone_names(&md.name, &bt, &it_);
            out.push(self.template_clone(&bt, &bo, &boot, Some(&md.name)));
            out.push(self.template_clone(&it_, &io, &infra, Some(&md.name)));
            let mut doc = self.machine_deployment(md, md_name, (&bt, &boot), (&it_, &infra));
            let at = first + 2 * i;
            self.explain(
                &mut doc,
                &format!("machineDeployment {}", md.name),
                applied,
                &[at, at + 1],
            );
            out.push(doc);
            out.extend(self.md_health(md, md_name));
        }
        Some(out)
    }
}

impl ClusterCx<'_> {
    /// Record on a generated KubeadmControlPlane or MachineDeployment where
    /// it came from and which patches set its templates' fields (and from
    /// which variables), for plans that explain a change ([`EXPLAIN`]).
    fn explain(&self, doc: &mut RawDocument, entry: &str, applied: &[Applied], targets: &[usize]) {
        let mut note = TopologyNote {
            class: self.class_name.to_string(),
            entry: entry.to_string(),
            patches: Vec::new(),
        };
        for a in applied.iter().filter(|a| targets.contains(&a.target)) {
            note.add(&a.patch, &a.variables, &a.kind, &a.path);
        }
        let text = serde_json::to_string(&note).expect("notes serialise");
        if let Some(meta) = doc.root.get_mut("metadata").and_then(Value::as_object_mut) {
            let ann = meta.entry("annotations").or_insert(json!({}));
            if let Some(a) = ann.as_object_mut() {
                a.insert(EXPLAIN.into(), json!(text));
            }
        }
    }

    pub(super) fn api_version(&self) -> String {
        self.d
            .root
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("cluster.x-k8s.io/v1beta2")
            .to_string()
    }

    pub(super) fn meta(
        &self,
        name: &str,
        labels: Map<String, Value>,
        annotations: Map<String, Value>,
    ) -> Value {
        let mut m = json!({"name": name, "namespace": self.ns});
        if !labels.is_empty() {
            m["labels"] = Value::Object(labels);
        }
        if !annotations.is_empty() {
            m["annotations"] = Value::Object(annotations);
        }
        m
    }

    pub(super) fn owned_labels(&self, extra: &[&Value]) -> Map<String, Value> {
        let mut l = Map::new();
        for e in extra {
            if let Some(m) = e.as_object() {
                l.extend(m.clone());
            }
        }
        l.insert("cluster.x-k8s.io/cluster-name".into(), json!(self.name));
        l.insert(LABEL_OWNED.into(), json!(""));
        l
    }

    fn cluster_doc(
        &self,
        cp: &Target,
        cp_name: &str,
        infra: &Target,
        infra_name: &str,
    ) -> RawDocument {
        let mut root = self.d.root.clone();
        let v1 = is_v1beta1(&self.api_version());
        // MachineDeployments of a topology roll one at a time unless the
        // Cluster says otherwise (upstream's default).
        if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
            let ann = meta.entry("annotations").or_insert(json!({}));
            if let Some(a) = ann.as_object_mut() {
                a.entry(UPGRADE_CONCURRENCY).or_insert(json!("1"));
            }
        }
        if let Some(spec) = root.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("topology");
            let api = |t: &Target| {
                t.doc
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let kind = |t: &Target| {
                t.doc
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .trim_end_matches("Template")
                    .to_string()
            };
            spec.insert(
                "controlPlaneRef".into(),
                reference(v1, &api(cp), &kind(cp), cp_name),
            );
            spec.insert(
                "infrastructureRef".into(),
                reference(v1, &api(infra), &kind(infra), infra_name),
            );
        }
        RawDocument {
            root,
            origin: self.d.origin.clone(),
        }
    }

    fn infra_cluster(&self, t: &Target, o: &Origin, name: &str) -> RawDocument {
        let kind = t
            .doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim_end_matches("Template");
        let labels = self.owned_labels(&[&t
            .doc
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .unwrap_or(Value::Null)]);
        let root = json!({
            "apiVersion": t.doc.get("apiVersion").cloned().unwrap_or(Value::Null),
            "kind": kind,
            "metadata": self.meta(name, labels, labels_of(&t.doc, "/spec/template/metadata/annotations")),
            "spec": t.doc.pointer("/spec/template/spec").cloned().unwrap_or(json!({})),
        });
        RawDocument {
            root,
            origin: remap(o, "/spec/template/spec", "/spec", &[]),
        }
    }

    fn control_plane(
        &self,
        t: &Target,
        o: &Origin,
        name: &str,
        machine: Option<(&Target, &str)>,
    ) -> RawDocument {
        let api = t
            .doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let v1 = is_v1beta1(&api);
        let topo_meta = self
            .topo
            .pointer("/controlPlane/metadata")
            .cloned()
            .unwrap_or(Value::Null);
        let labels = self.owned_labels(&[
            &t.doc
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or(Value::Null),
            &self
                .class
                .control_plane_metadata
                .get("labels")
                .cloned()
                .unwrap_or(Value::Null),
            &topo_meta.get("labels").cloned().unwrap_or(Value::Null),
        ]);
        let mut spec = t
            .doc
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(json!({}));
        spec["version"] = json!(self.version);
        if let Some(r) = self.topo.pointer("/controlPlane/replicas") {
            spec["replicas"] = r.clone();
        }
        if let Some((m, mname)) = machine {
            let mapi = m
                .doc
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let mkind = m.doc.get("kind").and_then(Value::as_str).unwrap_or("");
            let r = reference(v1, mapi, mkind, mname);
            let mt = spec
                .as_object_mut()
                .map(|s| s.entry("machineTemplate").or_insert(json!({})));
            if let Some(mt) = mt {
                if v1 {
                    mt["infrastructureRef"] = r;
                } else {
                    if mt.get("spec").is_none() {
                        mt["spec"] = json!({});
                    }
                    mt["spec"]["infrastructureRef"] = r;
                }
                let mut ml = labels_of(mt, "/metadata/labels");
                ml.extend(labels.clone());
                mt["metadata"] = json!({"labels": ml});
            }
        }
        let root = json!({
            "apiVersion": api, "kind": "KubeadmControlPlane",
            "metadata": self.meta(name, labels, labels_of(&topo_meta, "/annotations")),
            "spec": spec,
        });
        RawDocument {
            root,
            origin: remap(o, "/spec/template/spec", "/spec", &[]),
        }
    }

    fn template_clone(&self, t: &Target, o: &Origin, name: &str, md: Option<&str>) -> RawDocument {
        let mut extra = Value::Null;
        if let Some(md) = md {
            extra = json!({LABEL_DEPLOYMENT_NAME: md});
        }
        let labels = self.owned_labels(&[
            &t.doc
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(Value::Null),
            &extra,
        ]);
        let root = json!({
            "apiVersion": t.doc.get("apiVersion").cloned().unwrap_or(Value::Null),
            "kind": t.doc.get("kind").cloned().unwrap_or(Value::Null),
            "metadata": self.meta(name, labels, Map::new()),
            "spec": t.doc.get("spec").cloned().unwrap_or(json!({})),
        });
        RawDocument {
            root,
            origin: remap(o, "/spec", "/spec", &[]),
        }
    }
}
