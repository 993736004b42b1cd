//! References (`<capi:NAME>`) stand in the rendered bootstrap data for values
//! that are secret (CA keys, the join token, Secret contents) or known only
//! after apply (certificates, the control-plane endpoint). The document with
//! references is what plans show, what state keeps and what is hashed, so
//! rotating a secret or learning the endpoint never changes a machine's
//! identity. `resolve` substitutes the real values just before a machine is
//! created.

/// Inline references (single-line values).
pub const TOKEN: &str = "token";
pub const CA_CERT_HASH: &str = "ca-cert-hash";
pub const ENDPOINT: &str = "endpoint";

/// Block references: PEM material written as whole files.
pub(crate) const PKI_FILES: &[(&str, &str, bool)] = &[
    // (reference, file under certificatesDir, is secret)
    ("ca.crt", "ca.crt", false),
    ("ca.key", "ca.key", true),
    ("etcd/ca.crt", "etcd/ca.crt", false),
    ("etcd/ca.key", "etcd/ca.key", true),
    ("front-proxy-ca.crt", "front-proxy-ca.crt", false),
    ("front-proxy-ca.key", "front-proxy-ca.key", true),
    ("sa.pub", "sa.pub", false),
    ("sa.key", "sa.key", true),
];

/// `<capi:NAME>`.
pub(crate) fn inline(name: &str) -> String {
    format!("<capi:{name}>")
}

/// A reference to a key of a Secret in the manifests.
pub(crate) fn secret(name: &str, key: &str) -> String {
    format!("secret:{name}:{key}")
}

/// CABPK's `Indent`: split on `\n`, prefix every piece (the last one too) with
/// `n` spaces, join with `\n`.
pub(crate) fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Substitute every reference. A line holding only a reference (after
/// indentation) receives a block value, indented like the reference; other
/// references must have single-line values. Fails with the first missing name.
pub fn resolve(doc: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(doc.len() + 8192);
    for (i, line) in doc.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let trimmed = line.trim_start();
        let indent_len = line.len() - trimmed.len();
        if trimmed.starts_with("<capi:")
            && trimmed.ends_with('>')
            && trimmed[6..trimmed.len() - 1].find(['<', '>']).is_none()
        {
            let name = &trimmed[6..trimmed.len() - 1];
            let value = lookup(name).ok_or_else(|| name.to_string())?;
            if value.contains('\n') {
                out.push_str(&indent(&value, indent_len));
                continue;
            }
        }
        let mut rest = line;
        while let Some(p) = rest.find("<capi:") {
            let after = &rest[p + 6..];
            let Some(end) = after.find('>') else { break };
            let name = &after[..end];
            let value = lookup(name).ok_or_else(|| name.to_string())?;
            out.push_str(&rest[..p]);
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reference name in a document, in order of first appearance.
    fn names(doc: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut rest = doc;
        while let Some(i) = rest.find("<capi:") {
            let after = &rest[i + 6..];
            match after.find('>') {
                Some(j) if !after[..j].contains('\n') => {
                    let name = after[..j].to_string();
                    if !out.contains(&name) {
                        out.push(name);
                    }
                    rest = &after[j + 1..];
                }
                _ => break,
            }
        }
        out
    }

    #[test]
    fn block_and_inline() {
        let doc = "a:\n    content: |\n      <capi:ca.crt>\n-   next\n  token: <capi:token> x\n";
        let r = resolve(doc, &|n| match n {
            "ca.crt" => Some("-----BEGIN-----\nAAA\n-----END-----\n".into()),
            "token" => Some("abcdef.0123456789abcdef".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            r,
            "a:\n    content: |\n      -----BEGIN-----\n      AAA\n      -----END-----\n      \n-   next\n  token: abcdef.0123456789abcdef x\n"
        );
        assert_eq!(names(doc), vec!["ca.crt", "token"]);
        assert_eq!(resolve("<capi:nope>", &|_| None).unwrap_err(), "nope");
    }

    #[test]
    fn indent_matches_cabpk() {
        assert_eq!(
            indent("  some extra:\n    indenting\n", 4),
            "      some extra:\n        indenting\n    "
        );
    }
}
