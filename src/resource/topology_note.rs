//! Where a generated machine group came from: the ClusterClass, the
//! topology entry, and the patches that set fields of its templates (with
//! the variables their values came from). The ClusterClass expansion writes
//! it; plans quote the part behind a replacement (the patches on the
//! template that changed).

use serde::{Deserialize, Serialize};

/// One patch's effect on one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PatchNote {
    pub(crate) patch: String,
    /// The variables its values came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) variables: Vec<String>,
    /// The template kind (`KubeadmControlPlaneTemplate`, ...).
    pub(crate) kind: String,
    pub(crate) paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct TopologyNote {
    pub(crate) class: String,
    /// `controlPlane` or `machineDeployment NAME`.
    pub(crate) entry: String,
    #[serde(default)]
    pub(crate) patches: Vec<PatchNote>,
}

impl TopologyNote {
    /// Add a patch's path, merged with the same patch on the same template.
    pub(crate) fn add(&mut self, patch: &str, variables: &[String], kind: &str, path: &str) {
        match self
            .patches
            .iter_mut()
            .find(|p| p.patch == patch && p.kind == kind)
        {
            Some(p) => {
                if !p.paths.iter().any(|x| x == path) {
                    p.paths.push(path.to_string());
                }
                for v in variables {
                    if !p.variables.contains(v) {
                        p.variables.push(v.clone());
                    }
                }
            }
            None => self.patches.push(PatchNote {
                patch: patch.to_string(),
                variables: variables.to_vec(),
                kind: kind.to_string(),
                paths: vec![path.to_string()],
            }),
        }
    }

    /// `ClusterClass C, topology E: patch P (variable V) sets KIND PATH, ...`
    /// with only the patches on templates `which` accepts.
    pub(crate) fn explain(&self, which: impl Fn(&str) -> bool) -> String {
        let mut s = format!("ClusterClass {}, topology {}", self.class, self.entry);
        let parts: Vec<String> = self
            .patches
            .iter()
            .filter(|p| which(&p.kind))
            .map(|p| {
                let from = match p.variables.as_slice() {
                    [] => String::new(),
                    [v] => format!(" (variable {v})"),
                    vs => format!(" (variables {})", vs.join(", ")),
                };
                format!(
                    "patch {}{from} sets {} {}",
                    p.patch,
                    p.kind,
                    p.paths.join(", ")
                )
            })
            .collect();
        if !parts.is_empty() {
            s.push_str(": ");
            s.push_str(&parts.join("; "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_paths_and_filters_by_template() {
        let mut n = TopologyNote {
            class: "quick-start".into(),
            entry: "controlPlane".into(),
            patches: vec![],
        };
        let v = vec!["imageRepository".to_string()];
        n.add("imageRepository", &v, "KubeadmControlPlaneTemplate", "/a");
        n.add("pss", &[], "KubeadmControlPlaneTemplate", "/b");
        n.add("pss", &[], "KubeadmControlPlaneTemplate", "/c");
        n.add("customImage", &[], "DevMachineTemplate", "/d");
        assert_eq!(
            n.explain(|k| k != "DevMachineTemplate"),
            "ClusterClass quick-start, topology controlPlane: patch imageRepository (variable imageRepository) sets KubeadmControlPlaneTemplate /a; patch pss sets KubeadmControlPlaneTemplate /b, /c"
        );
        assert_eq!(
            n.explain(|_| false),
            "ClusterClass quick-start, topology controlPlane"
        );
        let text = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<TopologyNote>(&text).unwrap(), n);
    }
}
