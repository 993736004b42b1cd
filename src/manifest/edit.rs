//! Version changes for `capi upgrade`: in the in-memory model (to plan each
//! step) and as minimal text edits of the manifest files (`--write`), which
//! change the version values and nothing else.

use super::{Body, Manifest, Object};
use crate::resource::Version;

/// Which objects of a cluster an upgrade touches.
pub(crate) struct Selection<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) cluster: &'a str,
    /// `None`: every MachineDeployment of the cluster; `Some`: only these.
    pub(crate) machine_deployments: Option<&'a [String]>,
    /// The KubeadmControlPlane too (not when only workers are upgraded).
    pub(crate) control_plane: bool,
}

fn selected(sel: &Selection<'_>, m: &Manifest, o: &Object) -> Option<&'static str> {
    if o.key.namespace != sel.namespace {
        return None;
    }
    match &o.body {
        Body::KubeadmControlPlane(_) if sel.control_plane => {
            let cluster = m.get(super::Kind::Cluster, sel.namespace, sel.cluster)?;
            match &cluster.body {
                Body::Cluster(c)
                    if c.control_plane_ref
                        .as_ref()
                        .is_some_and(|r| r.name == o.key.name) =>
                {
                    Some("/spec/version")
                }
                _ => None,
            }
        }
        Body::MachineDeployment(md) if md.cluster_name == sel.cluster => {
            match sel.machine_deployments {
                Some(list) if !list.iter().any(|n| n == &o.key.name) => None,
                _ => Some("/spec/template/spec/version"),
            }
        }
        _ => None,
    }
}

/// A copy of the manifest with the selected versions set.
pub(crate) fn with_versions(
    m: &Manifest,
    sel: &Selection<'_>,
    control_plane: &Version,
    workers: &Version,
) -> Manifest {
    let mut out = m.clone();
    let picks: Vec<(usize, &'static str)> = m
        .objects
        .iter()
        .enumerate()
        .filter_map(|(i, o)| selected(sel, m, o).map(|p| (i, p)))
        .collect();
    for (i, _) in picks {
        match &mut out.objects[i].body {
            Body::KubeadmControlPlane(k) => k.version = Ok(control_plane.clone()),
            Body::MachineDeployment(md) => md.template.version = Some(Ok(workers.clone())),
            _ => {}
        }
    }
    out
}

/// One edit of a manifest file: replace the version value on `line`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VersionEdit {
    pub(crate) file: String,
    pub(crate) line: u32,
    pub(crate) object: String,
    pub(crate) new: String,
}

pub(crate) fn version_edits(
    m: &Manifest,
    sel: &Selection<'_>,
    control_plane: &Version,
    workers: &Version,
) -> Vec<VersionEdit> {
    let mut out = Vec::new();
    for o in &m.objects {
        let Some(pointer) = selected(sel, m, o) else {
            continue;
        };
        let new = if matches!(o.body, Body::KubeadmControlPlane(_)) {
            control_plane
        } else {
            workers
        };
        // Objects generated from a topology take their version from the
        // Cluster's `spec.topology.version`: that one line is edited.
        let (origin, pointer, object) = match topology_cluster(m, sel, o) {
            Some(c) => (&c.origin, "/spec/topology/version", c.key.to_string()),
            None => (&o.origin, pointer, o.key.to_string()),
        };
        let edit = VersionEdit {
            file: m.files[origin.file].name.clone(),
            line: origin.pos_of(pointer).line,
            object,
            new: new.to_string(),
        };
        if !out.contains(&edit) {
            out.push(edit);
        }
    }
    out
}

/// The topology Cluster `o` was generated from, if it was.
fn topology_cluster<'m>(m: &'m Manifest, sel: &Selection<'_>, o: &Object) -> Option<&'m Object> {
    if !o.labels.contains_key("topology.cluster.x-k8s.io/owned") {
        return None;
    }
    m.get(super::Kind::Cluster, sel.namespace, sel.cluster)
        .filter(|c| c.origin.spans.contains_key("/spec/topology/version"))
}

/// Replace the value of the `version:` key on a 1-based line, keeping its
/// quoting, trailing comment and everything else in the text.
pub(crate) fn apply_edit(text: &str, line: u32, new: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len() + 8);
    let mut found = false;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 != line as usize {
            out.push_str(l);
            continue;
        }
        let Some(k) = l.find("version:") else {
            return Err(format!("line {line} has no `version:` key"));
        };
        let (head, rest) = l.split_at(k + "version:".len());
        let ws = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        let value_and_tail = &rest[ws..];
        if value_and_tail.contains("${") {
            return Err(format!(
                "line {line} takes the version from a variable ({}); set that variable instead",
                value_and_tail.trim()
            ));
        }
        let (quote, body) = match value_and_tail.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &value_and_tail[1..]),
            _ => (None, value_and_tail),
        };
        let end = match quote {
            Some(q) => body
                .find(q)
                .ok_or_else(|| format!("line {line}: unterminated quote"))?,
            None => body
                .find([' ', '\t', '#', '\r', '\n'])
                .unwrap_or(body.len()),
        };
        let tail = &body[end + usize::from(quote.is_some())..];
        out.push_str(head);
        out.push_str(&rest[..ws]);
        if let Some(q) = quote {
            out.push(q);
        }
        out.push_str(new);
        if let Some(q) = quote {
            out.push(q);
        }
        out.push_str(tail);
        found = true;
    }
    if found {
        Ok(out)
    } else {
        Err(format!("the file has no line {line}"))
    }
}

/// The versions a multi-minor upgrade steps through: one per minor, using a
/// `via` version for a minor when given, else `vMAJOR.MINOR.0`; the last step
/// is the target itself.
pub(crate) fn chain(
    current: &Version,
    target: &Version,
    via: &[Version],
) -> Result<Vec<Version>, String> {
    if target.major != current.major {
        return Err(format!(
            "cannot upgrade across major versions ({current} → {target})"
        ));
    }
    if target < current {
        return Err(format!("{target} is older than the running control plane ({current}); capi upgrade does not downgrade"));
    }
    let mut steps = Vec::new();
    for minor in (current.minor + 1)..target.minor {
        let v = via
            .iter()
            .find(|v| v.major == target.major && v.minor == minor)
            .cloned()
            .unwrap_or(Version::new(target.major, minor, 0));
        steps.push(v);
    }
    if target != current {
        steps.push(target.clone());
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn chains() {
        assert_eq!(
            chain(&v("v1.29.4"), &v("v1.31.2"), &[]).unwrap(),
            vec![v("v1.30.0"), v("v1.31.2")]
        );
        assert_eq!(
            chain(&v("v1.29.4"), &v("v1.31.2"), &[v("v1.30.7")]).unwrap(),
            vec![v("v1.30.7"), v("v1.31.2")]
        );
        assert_eq!(
            chain(&v("v1.31.2"), &v("v1.31.3"), &[]).unwrap(),
            vec![v("v1.31.3")]
        );
        assert!(chain(&v("v1.31.2"), &v("v1.31.2"), &[]).unwrap().is_empty());
        assert!(chain(&v("v1.31.2"), &v("v1.30.0"), &[]).is_err());
    }

    #[test]
    fn edits_keep_everything_else() {
        let t = "a: 1\n  version: v1.29.4 # pinned\n  version: \"v1.29.4\"\nb: 2\n";
        let e = apply_edit(t, 2, "v1.30.0").unwrap();
        assert_eq!(
            e,
            "a: 1\n  version: v1.30.0 # pinned\n  version: \"v1.29.4\"\nb: 2\n"
        );
        let e = apply_edit(&e, 3, "v1.30.0").unwrap();
        assert_eq!(
            e,
            "a: 1\n  version: v1.30.0 # pinned\n  version: \"v1.30.0\"\nb: 2\n"
        );
        assert!(apply_edit("version: ${K8S}\n", 1, "v1")
            .unwrap_err()
            .contains("variable"));
        assert!(apply_edit("x: 1\n", 1, "v1").is_err());
    }
}
