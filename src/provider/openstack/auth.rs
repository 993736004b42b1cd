//! Credentials, as CAPO and every OpenStack tool take them, and which of
//! them an operation uses.
//!
//! 1. The Secret named by the OpenStackCluster's (or machine template's)
//!    `identityRef`, from the manifests: its `clouds.yaml` and optional
//!    `cacert`; the cloud is `identityRef.cloudName`.
//! 2. Otherwise the user's environment, read by the OpenStack SDK itself
//!    (the one environment read below the settings layer, listed in
//!    docs/architecture.md): `OS_CLOUD` with `clouds.yaml` (the
//!    usual search path and `OS_CLIENT_CONFIG_FILE`), or the `OS_*`
//!    variables (`OS_AUTH_URL`, `OS_USERNAME`, ..., or
//!    `OS_AUTH_TYPE=v3applicationcredential` with
//!    `OS_APPLICATION_CREDENTIAL_ID`/`_SECRET`).
//!
//! The identity of an operation is its spec's identityRef, else the one of
//! the resources it depends on (the cluster's); a resource being deleted or
//! refreshed uses the identity it recorded (`observed.identity`, the Secret's
//! name and cloud, never its content).
//!
//! Nothing read here is written to state, plans or output: the clouds.yaml
//! from a Secret goes to a private temporary directory for the SDK to read
//! and is removed when the provider ends.

use std::io::Write;

use openstack_sdk::config::{CloudConfig, ConfigFile};
use serde_json::{json, Value};

use super::OpenStackSettings;
use crate::infra::openstack::identity_ref;
use crate::provider::{Observed, OpInput};
use crate::resource::Spec;
use crate::state::Resource;

/// An identityRef: `(namespace, secret, cloud)`.
pub(crate) type Identity = (String, String, String);

/// The identityRef of a network, load balancer or machine spec: `(secret,
/// cloud)`.
fn of_spec(s: &Spec) -> Option<(String, String)> {
    match s {
        Spec::Network(n) => identity_ref(&n.infra.spec),
        Spec::Loadbalancer(l) => identity_ref(&l.infra.spec),
        Spec::Machine(m) => identity_ref(&m.infra.spec),
        _ => None,
    }
}

/// The identity a resource recorded when it was created: `(secret, cloud)`.
fn of_observed(o: &Observed) -> Option<(String, String)> {
    let i = o.get("identity")?;
    Some((
        i.get("secret")?.as_str()?.to_string(),
        i.get("cloud")?.as_str()?.to_string(),
    ))
}

/// The identity of a create or update: the spec's identityRef, else the
/// cluster's (from a dependency's spec, else from what it recorded).
pub(crate) fn of_operation(input: &OpInput<'_>) -> Option<Identity> {
    of_spec(input.spec)
        .or_else(|| input.deps.iter().find_map(|d| of_spec(&d.attributes)))
        .or_else(|| input.deps.iter().find_map(|d| of_observed(&d.observed)))
        .map(|(n, c)| (input.cluster.namespace.clone(), n, c))
}

/// The identity of a recorded resource: the one it recorded, else its
/// spec's identityRef.
pub(crate) fn of_resource(r: &Resource) -> Option<Identity> {
    let ns = r.address.cluster().namespace;
    of_observed(&r.observed)
        .or_else(|| of_spec(&r.attributes))
        .map(|(n, c)| (ns, n, c))
}

/// What a resource records about its identity: the Secret's name and
/// cloud, or that the environment's credentials were used.
pub(crate) fn to_observed(id: &Option<Identity>) -> Value {
    match id {
        Some((_, s, c)) => json!({"secret": s, "cloud": c}),
        None => json!({"environment": true}),
    }
}

/// The SDK configuration for an identity (`(namespace, secret, cloud)`), or
/// for the environment when there is none or its Secret is not in the
/// manifests (e.g. `capi destroy` without `-f`).
pub(crate) fn cloud_config(
    settings: &OpenStackSettings,
    identity: Option<&Identity>,
) -> Result<(CloudConfig, Option<tempfile::TempDir>), String> {
    if let Some((ns, name, cloud)) = identity {
        if let Some(data) = settings.secrets.get(&(ns.clone(), name.clone())) {
            return from_secret(data, name, cloud);
        }
    }
    from_environment(settings, identity)
}

fn private_file(
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> Result<std::path::PathBuf, String> {
    let path = dir.join(name);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn from_secret(
    data: &std::collections::BTreeMap<String, Vec<u8>>,
    secret: &str,
    cloud: &str,
) -> Result<(CloudConfig, Option<tempfile::TempDir>), String> {
    let yaml = data
        .get("clouds.yaml")
        .ok_or_else(|| format!("Secret {secret:?} (identityRef) has no clouds.yaml key"))?;
    let dir = tempfile::Builder::new()
        .prefix("capi-openstack-")
        .tempdir()
        .map_err(|e| format!("cannot create a private directory for the credentials: {e}"))?;
    let path = private_file(dir.path(), "clouds.yaml", yaml)?;
    let file = ConfigFile::builder()
        .add_source(&path)
        .map_err(|e| format!("Secret {secret:?}: clouds.yaml is not valid: {e}"))?
        .build()
        .map_err(|e| format!("Secret {secret:?}: clouds.yaml is not valid: {e}"))?;
    let mut cfg = file
        .get_cloud_config(cloud)
        .map_err(|e| format!("Secret {secret:?}: {e}"))?
        .ok_or_else(|| format!("Secret {secret:?}: clouds.yaml has no cloud named {cloud:?} (identityRef.cloudName)"))?;
    if let Some(ca) = data
        .get("cacert")
        .filter(|c| String::from_utf8_lossy(c).contains("BEGIN CERTIFICATE"))
    {
        let p = private_file(dir.path(), "cacert.pem", ca)?;
        cfg.cacert = Some(p.display().to_string());
    }
    cfg.auth_cache = Some(false);
    Ok((cfg, Some(dir)))
}

fn from_environment(
    settings: &OpenStackSettings,
    identity: Option<&Identity>,
) -> Result<(CloudConfig, Option<tempfile::TempDir>), String> {
    let note = match identity {
        Some((ns, name, _)) => format!(
            " (Secret {ns}/{name} named by identityRef is not in the manifests; pass them with -f)"
        ),
        None => String::new(),
    };
    let cloud = settings.cloud.clone().or_else(|| {
        identity
            .map(|i| i.2.clone())
            .filter(|_| !settings.auth_url_set)
    });
    if let Some(cloud) = cloud {
        let file = ConfigFile::new().map_err(|e| format!("cannot read clouds.yaml: {e}{note}"))?;
        if let Some(mut cfg) = file
            .get_cloud_config(&cloud)
            .map_err(|e| format!("clouds.yaml: {e}"))?
        {
            cfg.auth_cache = Some(false);
            return Ok((cfg, None));
        }
        if !settings.auth_url_set {
            return Err(format!(
                "no cloud named {cloud:?} in clouds.yaml (OS_CLOUD / identityRef.cloudName){note}"
            ));
        }
    }
    if settings.auth_url_set {
        let mut cfg =
            CloudConfig::from_env().map_err(|e| format!("cannot read the OS_* variables: {e}"))?;
        cfg.auth_cache = Some(false);
        return Ok((cfg, None));
    }
    Err(format!(
        "no OpenStack credentials: set OS_CLOUD (with a clouds.yaml) or the OS_* variables, or give the cluster an identityRef Secret in the manifests{note}"
    ))
}
