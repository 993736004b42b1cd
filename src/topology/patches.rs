//! Inline patches of a ClusterClass, in order: `enabledIf` (a Go template
//! that must render `true` or `false`), then each definition's selector
//! (`apiVersion`, `kind`, `matchResources.controlPlane` — the control plane
//! and its machine template —, `infrastructureCluster`,
//! `machineDeploymentClass.names` with `*` globs) and its JSON patches,
//! whose value is `value`, `valueFrom.variable` (a dotted path into the
//! variables) or `valueFrom.template` (a Go template whose output is read as
//! YAML). `external` patches need a Runtime SDK extension: refused.

use serde_json::Value;

use super::{gotmpl, jsonpatch, Report};
use crate::manifest::limits::MAX_DEPTH;
use crate::manifest::{yaml, Origin};

/// What a template copy is in the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Role {
    InfrastructureCluster,
    ControlPlane,
    ControlPlaneMachine,
    /// A MachineDeployment's bootstrap or infrastructure template, with the
    /// MachineDeployment class.
    Worker(String),
}

/// A template copy the patches change.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) role: Role,
    /// The whole template object (`apiVersion`, `kind`, `spec.template`).
    pub(crate) doc: Value,
    /// The variables its patches see (`.name`, `.builtin...`).
    pub(crate) vars: Value,
}

/// A patch that changed something, for plans that explain the class.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Applied {
    pub(crate) patch: String,
    pub(crate) kind: String,
    pub(crate) path: String,
    /// The index of the template in the targets.
    pub(crate) target: usize,
    /// The variables its value came from (`valueFrom.variable`, or the
    /// top-level variables a `valueFrom.template` reads).
    pub(crate) variables: Vec<String>,
}

/// The variables an operation's value reads.
fn variables_of(op: &Value) -> Vec<String> {
    if let Some(v) = op.pointer("/valueFrom/variable").and_then(Value::as_str) {
        return vec![v.split(['.', '[']).next().unwrap_or(v).to_string()];
    }
    let Some(tpl) = op.pointer("/valueFrom/template").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    let bytes = tpl.as_bytes();
    for (i, _) in tpl.match_indices('.') {
        let prev = if i == 0 { b' ' } else { bytes[i - 1] };
        if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b')' || prev == b'.' {
            continue;
        }
        let name: String = tpl[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && name != "builtin" && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        _ if pattern == "*" => true,
        (Some(rest), _) if rest.ends_with('*') => name.contains(rest.trim_end_matches('*')),
        (Some(rest), _) => name.ends_with(rest),
        (_, Some(rest)) => name.starts_with(rest),
        _ => pattern == name,
    }
}

fn selected(sel: &Value, t: &Target) -> bool {
    let doc_api = t
        .doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let doc_kind = t.doc.get("kind").and_then(Value::as_str).unwrap_or("");
    if sel.get("apiVersion").and_then(Value::as_str) != Some(doc_api)
        || sel.get("kind").and_then(Value::as_str) != Some(doc_kind)
    {
        return false;
    }
    let Some(m) = sel.get("matchResources") else {
        return false;
    };
    let flag = |k: &str| m.get(k).and_then(Value::as_bool) == Some(true);
    match &t.role {
        Role::InfrastructureCluster => flag("infrastructureCluster"),
        Role::ControlPlane | Role::ControlPlaneMachine => flag("controlPlane"),
        Role::Worker(class) => m
            .pointer("/machineDeploymentClass/names")
            .and_then(Value::as_array)
            .is_some_and(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|p| glob(p, class))
            }),
    }
}

/// A variable by dotted path (`podSecurityStandard.enabled`,
/// `builtin.controlPlane.version`).
pub(crate) fn lookup(vars: &Value, path: &str) -> Option<Value> {
    let mut cur = vars;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur.clone())
}

/// How deep `v` nests (a scalar 0, `{a: 1}` 1), counting up to `cap`.
fn depth(v: &Value, cap: usize) -> usize {
    if cap == 0 {
        return 0;
    }
    match v {
        Value::Array(a) => 1 + a.iter().map(|x| depth(x, cap - 1)).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(|x| depth(x, cap - 1)).max().unwrap_or(0),
        _ => 0,
    }
}

const FIX_TEMPLATE: &str = "fix the Go template (see text/template and sprig)";

/// Output quoted in an error, at most.
const QUOTED_OUTPUT: usize = 400;

/// Read a template's output as YAML, as upstream does.
fn yaml_value(text: &str) -> Result<Value, String> {
    let docs = yaml::parse_documents(text).map_err(|e| {
        let mut end = text.len().min(QUOTED_OUTPUT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let more = if end < text.len() {
            format!("\n(… {} more bytes)", text.len() - end)
        } else {
            String::new()
        };
        format!(
            "its output is not YAML (line {}: {}):\n{}{more}",
            e.pos.line,
            e.message,
            &text[..end]
        )
    })?;
    Ok(docs
        .first()
        .map(|d| yaml::to_json(&d.root, &mut Default::default()))
        .unwrap_or(Value::Null))
}

/// Run the class's patches over `targets`.
pub(crate) fn apply(
    rep: &mut Report<'_>,
    class: &Value,
    origin: &Origin,
    global: &Value,
    targets: &mut [Target],
) -> Vec<Applied> {
    let mut applied = Vec::new();
    let patches = class
        .pointer("/spec/patches")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, patch) in patches.iter().enumerate() {
        let at = format!("/spec/patches/{i}");
        let name = patch
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if patch.get("external").is_some_and(|e| !e.is_null()) {
            rep.error(
                origin,
                &format!("{at}/external"),
                format!("patch {name:?} is an external patch (Runtime SDK extension); capi cannot call extensions"),
                "write the patch as an inline patch (definitions with jsonPatches), or expand the topology with clusterctl and use the written-out objects",
            );
            continue;
        }
        if let Some(cond) = patch.get("enabledIf").and_then(Value::as_str) {
            match gotmpl::render(cond, global) {
                Ok(out) => match parse_bool(out.trim()) {
                    Some(true) => {}
                    Some(false) => continue,
                    None => {
                        rep.error(
                            origin,
                            &format!("{at}/enabledIf"),
                            format!(
                                "patch {name:?}: enabledIf rendered {:?}, not true or false",
                                out.trim()
                            ),
                            "make the template print true or false",
                        );
                        continue;
                    }
                },
                Err(e) => {
                    rep.error(
                        origin,
                        &format!("{at}/enabledIf"),
                        format!("patch {name:?}: enabledIf: {e}"),
                        e.help_or(FIX_TEMPLATE),
                    );
                    continue;
                }
            }
        }
        let defs = patch
            .get("definitions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (j, def) in defs.iter().enumerate() {
            let dat = format!("{at}/definitions/{j}");
            let sel = def.get("selector").cloned().unwrap_or(Value::Null);
            let matched: Vec<usize> = (0..targets.len())
                .filter(|&t| selected(&sel, &targets[t]))
                .collect();
            if matched.is_empty() {
                if !selects_pools(&sel) {
                    rep.warning(origin, &format!("{dat}/selector"), format!("patch {name:?}: the selector matches no template of this topology"), "check the selector's apiVersion, kind and matchResources against the class's templates");
                }
                continue;
            }
            let ops = def
                .get("jsonPatches")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for (k, op) in ops.iter().enumerate() {
                let pat = format!("{dat}/jsonPatches/{k}");
                for &t in &matched {
                    match one_op(op, &mut targets[t]) {
                        Ok(path) => applied.push(Applied {
                            target: t,
                            variables: variables_of(op),
                            patch: name.clone(),
                            kind: targets[t]
                                .doc
                                .get("kind")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string(),
                            path,
                        }),
                        Err((sub, msg, help)) => {
                            rep.error(
                                origin,
                                &format!("{pat}{sub}"),
                                format!("patch {name:?}: {msg}"),
                                help,
                            );
                        }
                    }
                }
            }
        }
    }
    applied
}

/// Selectors for machine pool classes, which capi reads but does not expand.
fn selects_pools(sel: &Value) -> bool {
    sel.pointer("/matchResources/machinePoolClass").is_some()
        && sel
            .pointer("/matchResources/machineDeploymentClass")
            .is_none()
        && sel.pointer("/matchResources/controlPlane").is_none()
        && sel
            .pointer("/matchResources/infrastructureCluster")
            .is_none()
}

type OpError = (&'static str, String, &'static str);

fn one_op(op: &Value, t: &mut Target) -> Result<String, OpError> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
    let path = op
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let value = if kind == "remove" {
        None
    } else if let Some(v) = op.get("value") {
        Some(v.clone())
    } else if let Some(var) = op.pointer("/valueFrom/variable").and_then(Value::as_str) {
        Some(lookup(&t.vars, var).ok_or((
            "/valueFrom/variable",
            format!("variable {var:?} is not set"),
            "set the variable in the Cluster's topology.variables, or give it a default in the class",
        ))?)
    } else if let Some(tpl) = op.pointer("/valueFrom/template").and_then(Value::as_str) {
        let out = gotmpl::render(tpl, &t.vars).map_err(|e| {
            (
                "/valueFrom/template",
                e.to_string(),
                e.help_or(FIX_TEMPLATE),
            )
        })?;
        Some(yaml_value(&out).map_err(|e| {
            (
                "/valueFrom/template",
                e,
                "make the template render valid YAML",
            )
        })?)
    } else {
        return Err((
            "",
            format!("{kind} {path:?} has no value, valueFrom.variable or valueFrom.template"),
            "give the operation a value",
        ));
    };
    if let Some(v) = &value {
        // The patched template nests no deeper than a manifest may, so that
        // patch after patch cannot build a value deep enough to overflow the
        // stack of what reads it next.
        let levels = path.matches('/').count() + depth(v, MAX_DEPTH + 1);
        if levels > MAX_DEPTH {
            return Err((
                "/path",
                format!("{kind} {path:?}: the template would nest {levels} levels deep, more than {MAX_DEPTH}"),
                "mappings and sequences nest at most 100 levels, patched templates included (docs/reliability.md, \"Limits\"): add a shallower value",
            ));
        }
    }
    jsonpatch::apply(&mut t.doc, kind, &path, value).map_err(|e| {
        let kind_name = t.doc.get("kind").and_then(Value::as_str).unwrap_or("template").to_string();
        ("/path", format!("{kind} on {kind_name}: {e}"), "the path must exist in the template (add needs its parent): fix the path or add the parent in the template")
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_and_lookup() {
        assert!(glob("*", "x"));
        assert!(glob("default-*", "default-worker"));
        assert!(glob("*-worker", "default-worker"));
        assert!(!glob("other", "default-worker"));
        let v = json!({"a": {"b": true}});
        assert_eq!(lookup(&v, "a.b"), Some(json!(true)));
        assert_eq!(lookup(&v, "a.c"), None);
        assert_eq!(
            yaml_value("local:\n  imageTag: 3.5\n").unwrap(),
            json!({"local": {"imageTag": 3.5}})
        );
        assert_eq!(
            yaml_value("kindest/node:v1.31.2\n").unwrap(),
            json!("kindest/node:v1.31.2")
        );
    }

    #[test]
    fn variables_behind_a_value() {
        assert_eq!(
            variables_of(&json!({"valueFrom": {"variable": "imageRepository"}})),
            ["imageRepository"]
        );
        assert_eq!(
            variables_of(&json!({"valueFrom": {"variable": "workerImage.repository"}})),
            ["workerImage"]
        );
        assert_eq!(
            variables_of(
                &json!({"valueFrom": {"template": "{{ .kindestImage }}:{{ .builtin.controlPlane.version | replace \"+\" \"_\" }}-{{ .kindestImage }}"}})
            ),
            ["kindestImage"]
        );
        assert!(variables_of(&json!({"value": 3})).is_empty());
    }
}
