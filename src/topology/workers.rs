//! The parts of a topology expansion that read the Cluster's topology: its
//! variables (defaulted and validated against the class's schemas), its
//! MachineDeployment entries with their per-entry overrides, and the
//! MachineDeployments and MachineHealthChecks generated from them.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::expand::{is_v1beta1, reference, remap, ClusterCx, MdTopology};
use super::patches::Target;
use super::variables::{apply_defaults, validate, VarDef};
use super::{Report, LABEL_DEPLOYMENT_NAME, LABEL_OWNED};
use crate::manifest::RawDocument;

/// Values written in a `variables` list (`[{name, value}]`), with pointers.
fn written(list: Option<&Value>, at: &str) -> Vec<(String, Value, String)> {
    list.and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        v.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        v.get("value").cloned().unwrap_or(Value::Null),
                        format!("{at}/{i}"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl ClusterCx<'_> {
    fn def(&self, name: &str) -> Option<&VarDef> {
        self.class.variables.iter().find(|d| d.name == name)
    }

    /// Check written values against the class; defaults fill the rest when
    /// `create` (the Cluster's own list), not for overrides.
    fn resolve(
        &self,
        rep: &mut Report<'_>,
        given: Vec<(String, Value, String)>,
        create: bool,
        out: &mut Map<String, Value>,
    ) {
        let mut seen = BTreeSet::new();
        for (name, mut value, at) in given {
            let Some(def) = self.def(&name) else {
                let known: Vec<&str> = self
                    .class
                    .variables
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect();
                rep.error(
                    &self.d.origin,
                    &format!("{at}/name"),
                    format!(
                        "Cluster {:?}: variable {name:?} is not defined by ClusterClass {:?}",
                        self.name, self.class_name
                    ),
                    format!("variables the class defines: {}", known.join(", ")),
                );
                continue;
            };
            if !seen.insert(name.clone()) {
                rep.error(
                    &self.d.origin,
                    &format!("{at}/name"),
                    format!("Cluster {:?}: variable {name:?} is set twice", self.name),
                    "keep one entry per variable",
                );
                continue;
            }
            apply_defaults(&def.schema, &mut value);
            let mut broken = Vec::new();
            validate(&def.schema, &value, "", &mut broken);
            for v in broken {
                rep.error(
                    &self.d.origin,
                    &format!("{at}/value{}", v.at),
                    format!(
                        "Cluster {:?}: variable {name:?}{}: value breaks the schema rule {}",
                        self.name,
                        if v.at.is_empty() {
                            String::new()
                        } else {
                            format!(" at {}", v.at)
                        },
                        v.rule
                    ),
                    format!(
                        "see ClusterClass {:?}, variable {name:?}, schema.openAPIV3Schema",
                        self.class_name
                    ),
                );
            }
            out.insert(name, value);
        }
        if !create {
            return;
        }
        for def in &self.class.variables {
            if out.contains_key(&def.name) {
                continue;
            }
            if let Some(d) = def.schema.get("default") {
                let mut v = d.clone();
                apply_defaults(&def.schema, &mut v);
                out.insert(def.name.clone(), v);
            } else if def.required {
                rep.error(
                    &self.d.origin,
                    "/spec/topology",
                    format!(
                        "Cluster {:?}: required variable {:?} of ClusterClass {:?} is not set",
                        self.name, def.name, self.class_name
                    ),
                    format!(
                        "add `- name: {}` with a value under spec.topology.variables",
                        def.name
                    ),
                );
            }
        }
    }

    pub(super) fn cluster_variables(&self, rep: &mut Report<'_>) -> Value {
        let mut out = Map::new();
        let given = written(self.topo.get("variables"), "/spec/topology/variables");
        self.resolve(rep, given, true, &mut out);
        Value::Object(out)
    }

    pub(super) fn machine_deployments(
        &self,
        rep: &mut Report<'_>,
        values: &Value,
    ) -> Vec<MdTopology<'_>> {
        let mut out = Vec::new();
        let entries = self
            .topo
            .pointer("/workers/machineDeployments")
            .and_then(Value::as_array);
        let mut seen = BTreeSet::new();
        for (i, entry) in entries.into_iter().flatten().enumerate() {
            let at = format!("/spec/topology/workers/machineDeployments/{i}");
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let class_name = entry.get("class").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() || !seen.insert(name.clone()) {
                rep.error(
                    &self.d.origin,
                    &format!("{at}/name"),
                    format!(
                        "Cluster {:?}: machineDeployment entry {i} has {} name",
                        self.name,
                        if name.is_empty() { "no" } else { "a duplicate" }
                    ),
                    "give every machineDeployments entry a unique name",
                );
                continue;
            }
            let Some(class) = self.class.workers.iter().find(|w| w.class == class_name) else {
                let known: Vec<&str> = self
                    .class
                    .workers
                    .iter()
                    .map(|w| w.class.as_str())
                    .collect();
                rep.error(&self.d.origin, &format!("{at}/class"), format!("Cluster {:?}: machineDeployment class {class_name:?} is not defined by ClusterClass {:?}", self.name, self.class_name), format!("classes: {}", known.join(", ")));
                continue;
            };
            let mut vars = values.as_object().cloned().unwrap_or_default();
            let overrides = written(
                entry.pointer("/variables/overrides"),
                &format!("{at}/variables/overrides"),
            );
            self.resolve(rep, overrides, false, &mut vars);
            out.push(MdTopology {
                at,
                name,
                entry,
                class,
                vars: Value::Object(vars),
            });
        }
        out
    }

    fn md_labels(&self, md: &MdTopology<'_>) -> Map<String, Value> {
        let mut l = self.owned_labels(&[
            &md.class
                .metadata
                .get("labels")
                .cloned()
                .unwrap_or(Value::Null),
            &md.entry
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(Value::Null),
        ]);
        l.insert(LABEL_DEPLOYMENT_NAME.into(), json!(md.name));
        l
    }

    pub(super) fn machine_deployment(
        &self,
        md: &MdTopology<'_>,
        name: &str,
        boot: (&Target, &str),
        infra: (&Target, &str),
    ) -> RawDocument {
        let api = self.api_version();
        let v1 = is_v1beta1(&api);
        let tref = |t: &Target, n: &str| {
            let a = t
                .doc
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let k = t.doc.get("kind").and_then(Value::as_str).unwrap_or("");
            reference(v1, a, k, n)
        };
        let labels = self.md_labels(md);
        let mut tspec = json!({
            "clusterName": self.name,
            "version": self.version,
            "bootstrap": {"configRef": tref(boot.0, boot.1)},
            "infrastructureRef": tref(infra.0, infra.1),
        });
        if let Some(fd) = md
            .entry
            .get("failureDomain")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(md.class.failure_domain.clone())
        {
            tspec["failureDomain"] = json!(fd);
        }
        let mut spec = json!({
            "clusterName": self.name,
            "selector": {"matchLabels": {
                "cluster.x-k8s.io/cluster-name": self.name, LABEL_OWNED: "", LABEL_DEPLOYMENT_NAME: md.name,
            }},
            "template": {"metadata": {"labels": labels.clone()}, "spec": tspec},
        });
        if let Some(r) = md.entry.get("replicas") {
            spec["replicas"] = r.clone();
        }
        let strategy = md
            .entry
            .pointer("/rollout/strategy")
            .or(md.entry.get("strategy"))
            .cloned()
            .or(md.class.strategy.clone());
        if let Some(s) = strategy {
            if v1 {
                spec["strategy"] = s;
            } else {
                spec["rollout"] = json!({"strategy": s});
            }
        }
        let root = json!({
            "apiVersion": api, "kind": "MachineDeployment",
            "metadata": self.meta(name, labels, Map::new()),
            "spec": spec,
        });
        let o = &self.d.origin;
        let entry_origin = remap(
            o,
            &md.at,
            "",
            &[
                ("/spec/replicas", o, &format!("{}/replicas", md.at)),
                ("/spec/template/spec/version", o, "/spec/topology/version"),
                (
                    "/spec/template/spec/failureDomain",
                    o,
                    &format!("{}/failureDomain", md.at),
                ),
                ("/metadata/name", o, &format!("{}/name", md.at)),
            ],
        );
        let mut origin = entry_origin;
        origin.pos = o.pos_of(&md.at);
        RawDocument { root, origin }
    }

    /// A MachineHealthCheck from the class's health check, merged with the
    /// topology's (`enabled`/`enable: false` turns it off).
    fn health_doc(
        &self,
        class_health: Option<&Value>,
        topo_health: Option<&Value>,
        name: &str,
        selector: Value,
        at: &str,
    ) -> Option<RawDocument> {
        let mut merged = Map::new();
        for h in [class_health, topo_health].into_iter().flatten() {
            if let Some(m) = h.as_object() {
                merged.extend(m.clone());
            }
        }
        let enabled = merged.remove("enabled").or(merged.remove("enable"));
        if enabled == Some(Value::Bool(false)) || merged.is_empty() {
            return None;
        }
        let mut spec = json!({"clusterName": self.name, "selector": {"matchLabels": selector}});
        for (k, v) in merged {
            spec[k] = v;
        }
        let root = json!({
            "apiVersion": self.api_version(), "kind": "MachineHealthCheck",
            "metadata": self.meta(name, self.owned_labels(&[]), Map::new()),
            "spec": spec,
        });
        let mut origin = remap(&self.class_doc.origin, at, "/spec", &[]);
        origin.pos = self.class_doc.origin.pos_of(at);
        Some(RawDocument { root, origin })
    }

    pub(super) fn control_plane_health(&self, cp_name: &str) -> Option<RawDocument> {
        let topo = self
            .topo
            .pointer("/controlPlane/healthCheck")
            .or(self.topo.pointer("/controlPlane/machineHealthCheck"));
        let selector = json!({"cluster.x-k8s.io/control-plane": "", LABEL_OWNED: "", "cluster.x-k8s.io/cluster-name": self.name});
        self.health_doc(
            self.class.control_plane_health.as_ref(),
            topo,
            cp_name,
            selector,
            "/spec/controlPlane",
        )
    }

    pub(super) fn md_health(&self, md: &MdTopology<'_>, md_name: &str) -> Option<RawDocument> {
        let topo = md
            .entry
            .get("healthCheck")
            .or(md.entry.get("machineHealthCheck"));
        let selector = json!({"cluster.x-k8s.io/cluster-name": self.name, LABEL_OWNED: "", LABEL_DEPLOYMENT_NAME: md.name});
        let idx = self
            .class
            .workers
            .iter()
            .position(|w| std::ptr::eq(w, md.class))
            .unwrap_or(0);
        self.health_doc(
            md.class.health.as_ref(),
            topo,
            md_name,
            selector,
            &format!("/spec/workers/machineDeployments/{idx}"),
        )
    }
}
