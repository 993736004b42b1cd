//! Credentials, as CAPO and every OpenStack tool take them.
//!
//! 1. The Secret named by the OpenStackCluster's (or machine template's)
//!    `identityRef`, from the manifests: its `clouds.yaml` and optional
//!    `cacert`; the cloud is `identityRef.cloudName`.
//! 2. Otherwise the user's environment: `OS_CLOUD` with `clouds.yaml` (the
//!    usual search path and `OS_CLIENT_CONFIG_FILE`), or the `OS_*`
//!    variables (`OS_AUTH_URL`, `OS_USERNAME`, ..., or
//!    `OS_AUTH_TYPE=v3applicationcredential` with
//!    `OS_APPLICATION_CREDENTIAL_ID`/`_SECRET`).
//!
//! Nothing read here is written to state, plans or output: the clouds.yaml
//! from a Secret goes to a private temporary directory for the SDK to read
//! and is removed when the provider ends.

use std::io::Write;

use openstack_sdk::config::{CloudConfig, ConfigFile};

use super::OpenStackSettings;

/// The SDK configuration for an identity (`(namespace, secret, cloud)`), or
/// for the environment when there is none or its Secret is not in the
/// manifests (e.g. `capi destroy` without `-f`).
pub(crate) fn cloud_config(
    settings: &OpenStackSettings,
    identity: Option<&(String, String, String)>,
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
    identity: Option<&(String, String, String)>,
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
