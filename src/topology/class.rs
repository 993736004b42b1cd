//! Reading a ClusterClass in either spelling (v1beta2 `templateRef`,
//! `naming`, `healthCheck`; v1beta1 `ref`, `template.*.ref`,
//! `namingStrategy`, `machineHealthCheck`) into one shape, with the JSON
//! pointer of every part for errors. Patches and variables stay JSON: the
//! stages that use them read them.

use serde_json::Value;

use super::variables::VarDef;

/// A reference from the class to a template, with where it is written.
#[derive(Debug, Clone)]
pub(crate) struct TemplateRef {
    #[allow(dead_code)] // read for errors that quote the reference
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) name: String,
    /// JSON pointer of the reference in the ClusterClass.
    pub(crate) pointer: String,
}

/// One `workers.machineDeployments[]` class.
#[derive(Debug, Clone)]
pub(crate) struct MdClass {
    pub(crate) class: String,
    pub(crate) bootstrap: Option<TemplateRef>,
    pub(crate) infrastructure: Option<TemplateRef>,
    pub(crate) health: Option<Value>,
    pub(crate) naming: Option<String>,
    pub(crate) failure_domain: Option<String>,
    /// `rollout.strategy` (v1beta2) or `strategy` (v1beta1), as written.
    pub(crate) strategy: Option<Value>,
    pub(crate) metadata: Value,
}

#[derive(Debug, Clone)]
pub(crate) struct Class {
    pub(crate) infrastructure: Option<TemplateRef>,
    pub(crate) infrastructure_naming: Option<String>,
    pub(crate) control_plane: Option<TemplateRef>,
    pub(crate) control_plane_machine: Option<TemplateRef>,
    pub(crate) control_plane_health: Option<Value>,
    pub(crate) control_plane_naming: Option<String>,
    pub(crate) control_plane_metadata: Value,
    pub(crate) workers: Vec<MdClass>,
    /// Templates of machine pool classes: read, never expanded.
    pub(crate) pool_templates: Vec<TemplateRef>,
    pub(crate) variables: Vec<VarDef>,
}

fn str_at(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `templateRef` (v1beta2) or `ref` (v1beta1) under `base`.
fn template_ref(class: &Value, base: &str) -> Option<TemplateRef> {
    for key in ["templateRef", "ref"] {
        let pointer = format!("{base}/{key}");
        if let Some(r) = class.pointer(&pointer) {
            return Some(TemplateRef {
                api_version: r
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                kind: r
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: r
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                pointer,
            });
        }
    }
    None
}

fn naming(class: &Value, v2: &str, v1: &str) -> Option<String> {
    str_at(class, &format!("{v2}/template")).or_else(|| str_at(class, &format!("{v1}/template")))
}

fn health(class: &Value, base: &str) -> Option<Value> {
    ["healthCheck", "machineHealthCheck"]
        .iter()
        .find_map(|k| class.pointer(&format!("{base}/{k}")).cloned())
        .filter(|v| !v.is_null())
}

/// Read a ClusterClass document.
pub(crate) fn read(root: &Value) -> Class {
    let mut workers = Vec::new();
    let mds = root
        .pointer("/spec/workers/machineDeployments")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, md) in mds.iter().enumerate() {
        let base = format!("/spec/workers/machineDeployments/{i}");
        // v1beta1 nests the references under `template`.
        let tb = if md.get("template").is_some() {
            format!("{base}/template")
        } else {
            base.clone()
        };
        workers.push(MdClass {
            class: md
                .get("class")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            bootstrap: template_ref(root, &format!("{tb}/bootstrap")),
            infrastructure: template_ref(root, &format!("{tb}/infrastructure")),
            health: health(root, &base),
            naming: naming(
                root,
                &format!("{base}/naming"),
                &format!("{base}/namingStrategy"),
            ),
            failure_domain: str_at(root, &format!("{base}/failureDomain")),
            strategy: root
                .pointer(&format!("{base}/rollout/strategy"))
                .or_else(|| root.pointer(&format!("{base}/strategy")))
                .cloned(),
            metadata: root
                .pointer(&format!("{tb}/metadata"))
                .cloned()
                .unwrap_or(Value::Null),
        });
    }
    let mut pool_templates = Vec::new();
    let pools = root
        .pointer("/spec/workers/machinePools")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    for i in 0..pools {
        for part in ["bootstrap", "infrastructure"] {
            for tb in ["", "/template"] {
                let base = format!("/spec/workers/machinePools/{i}{tb}/{part}");
                pool_templates.extend(template_ref(root, &base));
            }
        }
    }
    Class {
        infrastructure: template_ref(root, "/spec/infrastructure"),
        infrastructure_naming: naming(
            root,
            "/spec/infrastructure/naming",
            "/spec/infrastructureNamingStrategy",
        ),
        control_plane: template_ref(root, "/spec/controlPlane"),
        control_plane_machine: template_ref(root, "/spec/controlPlane/machineInfrastructure"),
        control_plane_health: health(root, "/spec/controlPlane"),
        control_plane_naming: naming(
            root,
            "/spec/controlPlane/naming",
            "/spec/controlPlane/namingStrategy",
        ),
        control_plane_metadata: root
            .pointer("/spec/controlPlane/metadata")
            .cloned()
            .unwrap_or(Value::Null),
        workers,
        pool_templates,
        variables: super::variables::definitions(root),
    }
}

impl Class {
    /// Every template the class references (with machine pools').
    pub(crate) fn template_refs(&self) -> Vec<&TemplateRef> {
        let mut out: Vec<&TemplateRef> = Vec::new();
        out.extend(self.infrastructure.iter());
        out.extend(self.control_plane.iter());
        out.extend(self.control_plane_machine.iter());
        for w in &self.workers {
            out.extend(w.bootstrap.iter());
            out.extend(w.infrastructure.iter());
        }
        out.extend(self.pool_templates.iter());
        out
    }
}
