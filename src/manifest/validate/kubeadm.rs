//! Rules for kubeadm config specs (KubeadmControlPlane, KubeadmConfig,
//! KubeadmConfigTemplate): files (path, one content source, a Secret that
//! exists with the key, encoding, permissions), the format, and users.

use std::collections::BTreeSet;

use super::super::model::*;
use super::super::raw::{self, KubeadmConfigSpec};
use super::V;

pub(super) fn check_kubeadm(v: &mut V<'_>, o: &Object, spec: &KubeadmConfigSpec, base: &str) {
    for (i, f) in spec.files.iter().enumerate() {
        check_file(v, o, i, f, &format!("{base}/files/{i}"));
    }
    check_format(v, o, spec, base);
    check_users(v, o, spec, base);
    check_validity(v, o, spec, base);
}

/// Certificate lifetimes within CABPK's bounds (exact, never clamped).
fn check_validity(v: &mut V<'_>, o: &Object, spec: &KubeadmConfigSpec, base: &str) {
    let Some(cc) = &spec.cluster_configuration else {
        return;
    };
    for (field, value, max) in [
        (
            "certificateValidityPeriodDays",
            cc.certificate_validity_period_days,
            1095,
        ),
        (
            "caCertificateValidityPeriodDays",
            cc.ca_certificate_validity_period_days,
            36500,
        ),
    ] {
        match value {
            Some(d) if !(1..=max).contains(&d) => v.err(
                o,
                &format!("{base}/clusterConfiguration/{field}"),
                format!("{}: {field} {d} is out of range", o.key),
                format!("set it to a number of days from 1 to {max}"),
            ),
            _ => {}
        }
    }
}

/// A file has a path, one content source (a Secret in the manifests with the
/// key), a known encoding and octal permissions.
fn check_file(v: &mut V<'_>, o: &Object, i: usize, f: &raw::File, p: &str) {
    if f.path.is_empty() {
        v.err(
            o,
            p,
            format!("{}: files[{i}] has no path", o.key),
            "every file needs a `path`".into(),
        );
    }
    match (&f.content, &f.content_from) {
        (Some(_), Some(_)) => v.err(
            o,
            p,
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
        let ok = (3..=4).contains(&perm.len()) && perm.bytes().all(|b| (b'0'..=b'7').contains(&b));
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

/// capi renders cloud-config only.
fn check_format(v: &mut V<'_>, o: &Object, spec: &KubeadmConfigSpec, base: &str) {
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
}

/// Users have names, each listed once.
fn check_users(v: &mut V<'_>, o: &Object, spec: &KubeadmConfigSpec, base: &str) {
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
