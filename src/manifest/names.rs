//! Kubernetes' rules for names that capi turns into addresses, file names
//! and labels: DNS-1123 labels (namespaces), DNS-1123 subdomains (object
//! names), label keys and label values. Each check says what is wrong.

/// A DNS-1123 label: at most 63 lower-case letters, digits and '-',
/// starting and ending with a letter or digit (namespaces).
pub(crate) fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 63 {
        return Err(format!(
            "it is {} characters long (at most 63)",
            s.chars().count()
        ));
    }
    label_chars(s, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
    })
}

/// A DNS-1123 subdomain: at most 253 characters, DNS-1123 labels joined
/// by '.' (object names).
pub(crate) fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > 253 {
        return Err(format!(
            "it is {} characters long (at most 253)",
            s.chars().count()
        ));
    }
    for part in s.split('.') {
        if part.is_empty() {
            return Err("it has an empty part between dots, or starts or ends with a dot".into());
        }
        label_chars(part, |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
        })?;
    }
    Ok(())
}

/// A label value: empty, or at most 63 letters, digits, '-', '_' and '.',
/// starting and ending with a letter or digit.
pub(crate) fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    if s.len() > 63 {
        return Err(format!(
            "it is {} characters long (at most 63)",
            s.chars().count()
        ));
    }
    label_chars(s, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
    })
}

/// A label (or annotation) key: an optional DNS subdomain prefix and '/',
/// then a name like a label value but not empty.
pub(crate) fn label_key(s: &str) -> Result<(), String> {
    let name = match s.rsplit_once('/') {
        Some((prefix, name)) => {
            dns1123_subdomain(prefix)
                .map_err(|e| format!("its prefix {prefix:?} is not a DNS subdomain: {e}"))?;
            name
        }
        None => s,
    };
    if name.is_empty() {
        return Err("its name part is empty".into());
    }
    label_value(name)
}

fn label_chars(s: &str, allowed: impl Fn(u8) -> bool) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| !c.is_ascii() || !allowed(*c as u8)) {
        return Err(format!("it contains the character '{}'", c.escape_debug()));
    }
    let (first, last) = (s.as_bytes()[0], s.as_bytes()[s.len() - 1]);
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        let long = "x".repeat(64);
        let longer = "x".repeat(254);
        assert!(dns1123_label("kube-system").is_ok());
        for bad in [
            "",
            "a/b",
            "../../../escaped",
            "A",
            "-a",
            "a.b",
            long.as_str(),
            "a\u{202e}b",
        ] {
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
        assert!(dns1123_subdomain("c1-md.example").is_ok());
        for bad in ["a..b", ".a", "a.", "a.-b", "a/b", longer.as_str()] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
        }
        assert!(label_key("cluster.x-k8s.io/control-plane").is_ok());
        assert!(label_key("Cni_Name").is_ok());
        for bad in ["", "a/", "Bad.Prefix/x", "x/y/z", "a b"] {
            assert!(label_key(bad).is_err(), "{bad:?}");
        }
        assert!(label_value("").is_ok());
        assert!(label_value("v1.31.2").is_ok());
        assert!(label_value(&long).is_err());
        let e = dns1123_label("a\u{202e}b").unwrap_err();
        assert!(
            !e.contains('\u{202e}'),
            "the message carries the character escaped: {e}"
        );
    }
}
