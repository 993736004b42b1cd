//! Names of generated objects. Upstream renders `naming.template` (default
//! `{{ .cluster.name }}-{{ .random }}`, `{{ .cluster.name }}-{{
//! .machineDeployment.topologyName }}-{{ .random }}` for MachineDeployments)
//! with five random characters; capi derives the five characters from a
//! SHA-256 of the Cluster's namespace and name, the class and the topology
//! entry, so the same manifests always give the same names. Template clones
//! are `<cluster>-<topology name>-<suffix>` (`<cluster>-<suffix>` for the
//! control plane's), as upstream. A name over 63 characters is cut to 58 and
//! given a suffix, as upstream.

use serde_json::json;

use super::gotmpl;

/// Labels Cluster API puts on generated objects.
pub(crate) const LABEL_OWNED: &str = "topology.cluster.x-k8s.io/owned";
pub(crate) const LABEL_DEPLOYMENT_NAME: &str = "topology.cluster.x-k8s.io/deployment-name";
/// capi's own annotation on a generated KubeadmControlPlane or
/// MachineDeployment: the class and topology entry it came from and the
/// patches (and variables) that set its templates, which plans quote when
/// its machines are replaced. Not Cluster API's; nothing else reads it.
pub(crate) const EXPLAIN: &str = "topology.capi.sh/explain";

/// Kubernetes' `utilrand` alphabet (no vowels, no confusable digits).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five deterministic characters for `parts`.
pub(crate) fn suffix(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn cap(name: String, seed: &[&str]) -> String {
    if name.len() > 63 {
        let mut cut = name[..58].to_string();
        cut.push_str(&suffix(seed));
        cut
    } else {
        name
    }
}

/// Render a naming template. `topology` is the MachineDeployment's topology
/// name (`None` for the control plane and the infrastructure cluster).
pub(crate) fn render(
    template: &str,
    cluster: &str,
    topology: Option<&str>,
    seed: &[&str],
) -> Result<String, gotmpl::TemplateError> {
    let mut data = json!({"cluster": {"name": cluster}, "random": suffix(seed)});
    if let Some(t) = topology {
        data["machineDeployment"] = json!({"topologyName": t});
    }
    let name = gotmpl::render_strict(template, &data)?;
    Ok(cap(name, seed))
}

/// `<prefix><suffix>` for template clones.
pub(crate) fn simple(prefix: &str, seed: &[&str]) -> String {
    let base = if prefix.len() > 58 {
        &prefix[..58]
    } else {
        prefix
    };
    format!("{base}{}", suffix(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_template_driven() {
        let a = render("{{ .cluster.name }}-{{ .random }}", "c", None, &["x"]).unwrap();
        let b = render("{{ .cluster.name }}-{{ .random }}", "c", None, &["x"]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), "c-".len() + 5);
        assert_ne!(
            a,
            render("{{ .cluster.name }}-{{ .random }}", "c", None, &["y"]).unwrap()
        );
        assert_eq!(
            render(
                "{{ .cluster.name }}-{{ .machineDeployment.topologyName }}-fixed",
                "c",
                Some("md-0"),
                &["x"]
            )
            .unwrap(),
            "c-md-0-fixed"
        );
        let long = render(&"a".repeat(70), "c", None, &["x"]).unwrap();
        assert_eq!(long.len(), 63);
        assert!(render("{{ .cluster.nme }}", "c", None, &["x"]).is_err());
    }
}
