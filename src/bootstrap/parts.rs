//! The parts of a machine's cloud-config, each from the (role-adjusted)
//! kubeadm config spec: certificate files (cluster PKI, external etcd), the
//! user's files, the kubeadm config with its command, the placeholder file,
//! NTP, users, disk setup and mounts. A part that needs a Secret the
//! manifests do not have fails with the field to fix.

use serde_json::Value;

use crate::manifest::raw::{self, KubeadmConfigSpec};
use crate::resource::{BootstrapRole, Version};

use super::cloudinit::{self, WriteFile};
use super::kubeadm::{self, ClusterValues, KubeadmApi};
use super::{err, goyaml, refs, BootstrapError, RenderInput, SUCCESS_SENTINEL};

/// The spec as this role renders it: a worker may not set
/// `joinConfiguration.controlPlane`; a KubeadmControlPlane keeps only the
/// init or the join configuration, and turns on the feature gates it
/// defaults.
pub(super) fn spec_for_role(input: &RenderInput<'_>) -> Result<KubeadmConfigSpec, BootstrapError> {
    let mut spec = input.spec.clone();
    if input.role == BootstrapRole::JoinWorker
        && spec
            .join_configuration
            .as_ref()
            .is_some_and(|j| j.control_plane.is_some())
    {
        return Err(err(
            "/joinConfiguration/controlPlane",
            "a worker's joinConfiguration sets controlPlane",
            "remove joinConfiguration.controlPlane from the worker's KubeadmConfigTemplate",
        ));
    }
    if input.from_kcp {
        match input.role {
            BootstrapRole::Init => spec.join_configuration = None,
            _ => {
                spec.init_configuration = None;
                let j = spec.join_configuration.get_or_insert_with(Default::default);
                j.control_plane.get_or_insert_with(Default::default);
            }
        }
        let v = input.version;
        if v.major == 1 && (31..36).contains(&v.minor) {
            let cc = spec
                .cluster_configuration
                .get_or_insert_with(Default::default);
            cc.feature_gates
                .entry("ControlPlaneKubeletLocalMode".into())
                .or_insert(true);
        }
    }
    Ok(spec)
}

/// Control-plane machines get the cluster's certificates (as references),
/// and the external etcd client material from the manifests' Secrets.
pub(super) fn certificate_files(
    input: &RenderInput<'_>,
    spec: &KubeadmConfigSpec,
) -> Result<Vec<WriteFile>, BootstrapError> {
    let mut files = Vec::new();
    if input.role == BootstrapRole::JoinWorker {
        return Ok(files);
    }
    let cc_default = raw::ClusterConfiguration::default();
    let cc = spec.cluster_configuration.as_ref().unwrap_or(&cc_default);
    let certs_dir = cc
        .certificates_dir
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/etc/kubernetes/pki".into());
    let external = cc.etcd.as_ref().and_then(|e| e.external.clone());
    for (name, rel, secret) in refs::PKI_FILES {
        if external.is_some() && rel.starts_with("etcd/") {
            continue;
        }
        files.push(WriteFile {
            path: format!("{certs_dir}/{rel}"),
            owner: "root:root".into(),
            permissions: if *secret { "0600" } else { "0640" }.into(),
            content: refs::inline(name),
            ..Default::default()
        });
    }
    let Some(x) = &external else {
        return Ok(files);
    };
    let etcd_secret = format!("{}-etcd", input.cluster_name);
    let client_secret = format!("{}-apiserver-etcd-client", input.cluster_name);
    for (secret, key, path, perm) in [
        (&etcd_secret, "tls.crt", &x.ca_file, "0640"),
        (&client_secret, "tls.crt", &x.cert_file, "0640"),
        (&client_secret, "tls.key", &x.key_file, "0600"),
    ] {
        if !(input.secret_exists)(secret, key) {
            return Err(err(
                "/clusterConfiguration/etcd/external",
                format!("external etcd needs the Secret {secret:?} with key {key:?}, which is not in the manifests"),
                format!("add a Secret named {secret:?} with data key {key:?} (the certificate material for external etcd)"),
            ));
        }
        files.push(WriteFile {
            path: path.clone(),
            owner: "root:root".into(),
            permissions: perm.into(),
            content: refs::inline(&refs::secret(secret, key)),
            ..Default::default()
        });
    }
    Ok(files)
}

/// The spec's `files`: content inline, from a Secret (as a reference) or a
/// `contentFormat: Template`.
pub(super) fn user_files(
    input: &RenderInput<'_>,
    spec: &KubeadmConfigSpec,
) -> Result<Vec<WriteFile>, BootstrapError> {
    let mut files = Vec::with_capacity(spec.files.len());
    for (i, f) in spec.files.iter().enumerate() {
        let content = match (&f.content, &f.content_from) {
            (Some(c), _) => c.clone(),
            (None, Some(cf)) => {
                if !(input.secret_exists)(&cf.secret.name, &cf.secret.key) {
                    return Err(err(
                        format!("/files/{i}/contentFrom/secret"),
                        format!(
                            "file {} takes its content from Secret {:?} key {:?}, which is not in the manifests",
                            f.path, cf.secret.name, cf.secret.key
                        ),
                        "add the Secret (with that data key) to the manifests: capi has no cluster to read it from",
                    ));
                }
                refs::inline(&refs::secret(&cf.secret.name, &cf.secret.key))
            }
            (None, None) => String::new(),
        };
        let content = if f.content_format.as_deref() == Some("Template") {
            render_file_template(&content, input.control_plane_version).map_err(|m| {
                err(
                    format!("/files/{i}/content"),
                    format!("file {}: {m}", f.path),
                    "only {{ .controlPlane.version }} can be used in contentFormat: Template files",
                )
            })?
        } else {
            content
        };
        files.push(WriteFile {
            path: f.path.clone(),
            encoding: f.encoding.clone().unwrap_or_default(),
            owner: f.owner.clone().unwrap_or_default(),
            permissions: f.permissions.clone().unwrap_or_default(),
            append: f.append.map(|b| b.to_string()).unwrap_or_default(),
            content,
            inline: String::new(),
        });
    }
    Ok(files)
}

/// The kubeadm config file and the command that runs kubeadm with it
/// (`init`, or `join` for control-plane machines and workers).
pub(super) fn kubeadm_config(
    input: &RenderInput<'_>,
    spec: &KubeadmConfigSpec,
    api: KubeadmApi,
    endpoint: &str,
) -> (WriteFile, String) {
    let control_plane = input.role != BootstrapRole::JoinWorker;
    let cv = ClusterValues {
        cluster_name: input.cluster_name,
        network: input.network,
        endpoint: endpoint.to_string(),
        version: input.version,
    };
    let verbosity = spec
        .verbosity
        .map(|v| format!("--v {v}"))
        .unwrap_or_default();
    let (kubeadm_file, kubeadm_content, command) = match input.role {
        BootstrapRole::Init => {
            let c = goyaml::to_string(&kubeadm::cluster_configuration(spec, &cv, api));
            let i = goyaml::to_string(&kubeadm::init_configuration(spec, api));
            (
                "/run/kubeadm/kubeadm.yaml",
                format!("---\n{c}\n---\n{i}"),
                format!("'kubeadm init --config /run/kubeadm/kubeadm.yaml {verbosity} && echo success > {SUCCESS_SENTINEL}'"),
            )
        }
        BootstrapRole::JoinControlPlane | BootstrapRole::JoinWorker => {
            let j = goyaml::to_string(&kubeadm::join_configuration(
                spec,
                endpoint,
                api,
                control_plane,
            ));
            let content = if control_plane {
                j
            } else {
                format!("---\n{j}")
            };
            (
                "/run/kubeadm/kubeadm-join-config.yaml",
                content,
                format!("kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml {verbosity} && echo success > {SUCCESS_SENTINEL}"),
            )
        }
    };
    let file = WriteFile {
        path: kubeadm_file.into(),
        owner: "root:root".into(),
        permissions: "0640".into(),
        content: kubeadm_content,
        ..Default::default()
    };
    (file, command)
}

/// A file under /run/cluster-api, so the directory exists on every platform.
pub(super) fn placeholder_file() -> WriteFile {
    WriteFile {
        path: "/run/cluster-api/placeholder".into(),
        owner: "root:root".into(),
        permissions: "0640".into(),
        inline: "written by capi so that the /run/cluster-api directory exists on every platform"
            .into(),
        ..Default::default()
    }
}

/// NTP, when the spec enables it or names servers.
pub(super) fn ntp(spec: &KubeadmConfigSpec) -> Option<cloudinit::NtpEntry> {
    let n = spec.ntp.as_ref()?;
    if n.enabled.is_none() && n.servers.is_empty() {
        return None;
    }
    Some(cloudinit::NtpEntry {
        enabled: n.enabled.map(|b| b.to_string()).unwrap_or_default(),
        servers: n.servers.clone(),
    })
}

/// The spec's users, passwords from Secrets as references.
pub(super) fn users(
    input: &RenderInput<'_>,
    spec: &KubeadmConfigSpec,
) -> Result<Vec<cloudinit::UserEntry>, BootstrapError> {
    let mut out = Vec::with_capacity(spec.users.len());
    for (i, u) in spec.users.iter().enumerate() {
        let passwd = match (&u.passwd, &u.passwd_from) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(pf)) => {
                if !(input.secret_exists)(&pf.secret.name, &pf.secret.key) {
                    return Err(err(
                        format!("/users/{i}/passwdFrom/secret"),
                        format!("user {} takes its password from Secret {:?} key {:?}, which is not in the manifests", u.name, pf.secret.name, pf.secret.key),
                        "add the Secret to the manifests",
                    ));
                }
                Some(refs::inline(&refs::secret(&pf.secret.name, &pf.secret.key)))
            }
            (None, None) => None,
        };
        let mut fields = Vec::new();
        let mut push = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                fields.push((k.to_string(), v));
            }
        };
        push("passwd", passwd);
        push("gecos", u.gecos.clone());
        push("groups", u.groups.clone());
        push("homedir", u.home_dir.clone());
        push("inactive", u.inactive.map(|b| b.to_string()));
        push("lock_passwd", u.lock_password.map(|b| b.to_string()));
        push("shell", u.shell.clone());
        push("primary_group", u.primary_group.clone());
        push("sudo", u.sudo.clone());
        out.push(cloudinit::UserEntry {
            name: u.name.clone(),
            fields,
            ssh_authorized_keys: u.ssh_authorized_keys.clone(),
        });
    }
    Ok(out)
}

/// The spec's mounts: each a list of fields (or one value).
pub(super) fn mounts(spec: &KubeadmConfigSpec) -> Option<Vec<Vec<String>>> {
    let Some(Value::Array(ms)) = &spec.mounts else {
        return None;
    };
    Some(
        ms.iter()
            .map(|m| match m {
                Value::Array(items) => items.iter().map(value_text).collect(),
                other => vec![value_text(other)],
            })
            .collect(),
    )
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn partition_code(t: &str) -> String {
    match t {
        "Linux" => "83",
        "LinuxSwap" => "82",
        "LinuxRAID" => "fd",
        "LVM" => "8e",
        "Fat32" => "0c",
        "NTFS" => "07",
        "LinuxExtended" => "85",
        other => other,
    }
    .to_string()
}

pub(super) fn disk_setup(ds: &Value) -> cloudinit::DiskSetup {
    let mut out = cloudinit::DiskSetup::default();
    let field = |m: &Value, k: &str| m.get(k).map(value_text).unwrap_or_default();
    if let Some(Value::Array(ps)) = ds.get("partitions") {
        for p in ps {
            let mut part = cloudinit::Partition {
                device: field(p, "device"),
                table_type: field(p, "tableType"),
                layout: field(p, "layout"),
                overwrite: field(p, "overwrite"),
                ..Default::default()
            };
            if let Some(Value::Array(items)) = p.get("diskLayout") {
                part.layout_items = items
                    .iter()
                    .map(|i| {
                        let pct = field(i, "percentage");
                        match i.get("partitionType").map(value_text) {
                            Some(t) if !t.is_empty() => format!("[{pct}, {}]", partition_code(&t)),
                            _ => pct,
                        }
                    })
                    .collect();
            }
            out.partitions.push(part);
        }
    }
    if let Some(Value::Array(fs)) = ds.get("filesystems") {
        for f in fs {
            out.filesystems.push(cloudinit::Filesystem {
                label: field(f, "label"),
                filesystem: field(f, "filesystem"),
                device: field(f, "device"),
                partition: field(f, "partition"),
                overwrite: field(f, "overwrite"),
                replace_fs: field(f, "replaceFS"),
                extra_opts: f
                    .get("extraOpts")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(value_text).collect())
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// `contentFormat: Template` supports the one value CABPK provides.
pub(super) fn render_file_template(
    content: &str,
    cp_version: Option<&Version>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = content;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find("}}").ok_or("unclosed {{ in template")?;
        let action = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        if action == ".controlPlane.version" {
            let v = cp_version.ok_or("the cluster has no control-plane version to substitute")?;
            out.push_str(&v.to_string());
        } else {
            return Err(format!("unsupported template action {{{{ {action} }}}}"));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
