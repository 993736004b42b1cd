//! Kubeadm bootstrap data, as Cluster API's kubeadm bootstrap provider (CABPK)
//! makes it: cloud-config for `kubeadm init`, control-plane join and worker
//! join; cluster certificates; bootstrap tokens; the admin kubeconfig.
//!
//! Rendering is pure: values that are secret or known only after apply are
//! written as references (see [`refs`]), which [`refs::resolve`] substitutes
//! when a machine is created.

pub(crate) mod cloudinit;
pub(crate) mod goyaml;
pub(crate) mod kubeadm;
pub mod pki;
pub mod refs;
pub mod token;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::manifest::raw::{self, KubeadmConfigSpec};
use crate::manifest::ClusterNetwork;
use crate::resource::BootstrapRole;
use crate::resource::Version;

use cloudinit::{CloudConfig, WriteFile};
use kubeadm::{ClusterValues, KubeadmApi};

/// The sentinel every CABPK kubeadm command ends with.
pub(crate) const SUCCESS_SENTINEL: &str = "/run/cluster-api/bootstrap-success.complete";

/// Default TTL of the bootstrap token. CABPK uses 15 minutes and refreshes it
/// from its controller while machines join; `capi` has no controller running
/// between invocations, so it uses kubeadm's own default of 24 hours and
/// rotates an expired token at plan time.
pub(crate) const DEFAULT_TOKEN_TTL_SECONDS: u64 = 24 * 3600;

pub(crate) struct RenderInput<'a> {
    pub(crate) cluster_name: &'a str,
    pub(crate) network: &'a ClusterNetwork,
    /// `host:port` when `Cluster.spec.controlPlaneEndpoint` is set.
    pub(crate) fixed_endpoint: Option<String>,
    pub(crate) role: BootstrapRole,
    pub(crate) version: &'a Version,
    pub(crate) spec: &'a KubeadmConfigSpec,
    /// The spec is a KubeadmControlPlane's `kubeadmConfigSpec` (KCP adjusts it
    /// per machine: init vs join, default feature gates).
    pub(crate) from_kcp: bool,
    /// Does the manifests' Secret `name` have key `key`?
    pub(crate) secret_exists: &'a dyn Fn(&str, &str) -> bool,
    /// For `contentFormat: Template` files.
    pub(crate) control_plane_version: Option<&'a Version>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rendered {
    /// The cloud-config with `<capi:...>` references.
    pub(crate) content: String,
    pub(crate) sha256: String,
    pub(crate) kubeadm_api: &'static str,
}

/// A rendering problem, located by a JSON pointer inside the KubeadmConfigSpec.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct BootstrapError {
    pub(crate) field: String,
    pub(crate) message: String,
    pub(crate) help: String,
}

fn err(
    field: impl Into<String>,
    message: impl Into<String>,
    help: impl Into<String>,
) -> BootstrapError {
    BootstrapError {
        field: field.into(),
        message: message.into(),
        help: help.into(),
    }
}

/// Render one machine's bootstrap data.
pub(crate) fn render(input: &RenderInput<'_>) -> Result<Rendered, BootstrapError> {
    let api = KubeadmApi::for_version(input.version).map_err(|m| {
        err(
            "",
            m,
            "use Kubernetes v1.22 or newer (kubeadm API v1beta3 for 1.22–1.30, v1beta4 from 1.31)",
        )
    })?;
    let mut spec = input.spec.clone();
    let control_plane = input.role != BootstrapRole::JoinWorker;

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

    let endpoint = input
        .fixed_endpoint
        .clone()
        .unwrap_or_else(|| refs::inline(refs::ENDPOINT));
    let cc_default = raw::ClusterConfiguration::default();
    let cc = spec.cluster_configuration.as_ref().unwrap_or(&cc_default);
    let certs_dir = cc
        .certificates_dir
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/etc/kubernetes/pki".into());
    let external = cc.etcd.as_ref().and_then(|e| e.external.clone());

    let mut files = Vec::new();
    if control_plane {
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
        if let Some(x) = &external {
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
        }
    }
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

    let cv = ClusterValues {
        cluster_name: input.cluster_name,
        network: input.network,
        endpoint: endpoint.clone(),
        version: input.version,
    };
    let verbosity = spec
        .verbosity
        .map(|v| format!("--v {v}"))
        .unwrap_or_default();
    let (kubeadm_file, kubeadm_content, command) = match input.role {
        BootstrapRole::Init => {
            let c = goyaml::to_string(&kubeadm::cluster_configuration(&spec, &cv, api));
            let i = goyaml::to_string(&kubeadm::init_configuration(&spec, api));
            (
                "/run/kubeadm/kubeadm.yaml",
                format!("---\n{c}\n---\n{i}"),
                format!("'kubeadm init --config /run/kubeadm/kubeadm.yaml {verbosity} && echo success > {SUCCESS_SENTINEL}'"),
            )
        }
        BootstrapRole::JoinControlPlane | BootstrapRole::JoinWorker => {
            let j = goyaml::to_string(&kubeadm::join_configuration(
                &spec,
                &endpoint,
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
    files.push(WriteFile {
        path: kubeadm_file.into(),
        owner: "root:root".into(),
        permissions: "0640".into(),
        content: kubeadm_content,
        ..Default::default()
    });
    files.push(WriteFile {
        path: "/run/cluster-api/placeholder".into(),
        owner: "root:root".into(),
        permissions: "0640".into(),
        inline: "written by capi so that the /run/cluster-api directory exists on every platform"
            .into(),
        ..Default::default()
    });

    let mut doc = CloudConfig {
        files,
        boot_commands: spec.boot_commands.clone(),
        pre_commands: spec.pre_kubeadm_commands.clone(),
        kubeadm_command: command,
        post_commands: spec.post_kubeadm_commands.clone(),
        ..Default::default()
    };
    if let Some(n) = &spec.ntp {
        if n.enabled.is_some() || !n.servers.is_empty() {
            doc.ntp = Some(cloudinit::NtpEntry {
                enabled: n.enabled.map(|b| b.to_string()).unwrap_or_default(),
                servers: n.servers.clone(),
            });
        }
    }
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
        doc.users.push(cloudinit::UserEntry {
            name: u.name.clone(),
            fields,
            ssh_authorized_keys: u.ssh_authorized_keys.clone(),
        });
    }
    if let Some(ds) = &spec.disk_setup {
        doc.disk_setup = Some(disk_setup(ds));
    }
    if let Some(Value::Array(ms)) = &spec.mounts {
        doc.mounts = ms
            .iter()
            .map(|m| match m {
                Value::Array(items) => items.iter().map(value_text).collect(),
                other => vec![value_text(other)],
            })
            .collect();
    }

    let content = cloudinit::render(&doc).map_err(|e| {
        err(
            "",
            format!("rendering the cloud-config failed: {e}"),
            "this is a bug in capi; please report it with the manifest",
        )
    })?;
    let sha256 = hex::encode(Sha256::digest(content.as_bytes()));
    Ok(Rendered {
        content,
        sha256,
        kubeadm_api: api.group_version(),
    })
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

fn disk_setup(ds: &Value) -> cloudinit::DiskSetup {
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
fn render_file_template(content: &str, cp_version: Option<&Version>) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> ClusterNetwork {
        ClusterNetwork {
            api_server_port: 6443,
            services: vec!["10.96.0.0/12".into()],
            pods: vec![],
            service_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn worker_join_matches_cabpk_layout() {
        let spec: KubeadmConfigSpec = serde_json::from_value(serde_json::json!({
            "joinConfiguration": {"nodeRegistration": {"kubeletExtraArgs": [{"name": "eviction-hard", "value": "nodefs.available<0%"}]}}
        }))
        .unwrap();
        let v = Version::parse("v1.33.1").unwrap();
        let n = net();
        let r = render(&RenderInput {
            cluster_name: "c1",
            network: &n,
            fixed_endpoint: Some("10.0.0.10:6443".into()),
            role: BootstrapRole::JoinWorker,
            version: &v,
            spec: &spec,
            from_kcp: false,
            secret_exists: &|_, _| false,
            control_plane_version: None,
        })
        .unwrap();
        let expected = "## template: jinja\n#cloud-config\n\nwrite_files:\n-   path: /run/kubeadm/kubeadm-join-config.yaml\n    owner: root:root\n    permissions: '0640'\n    content: |\n      ---\n      apiVersion: kubeadm.k8s.io/v1beta4\n      discovery:\n        bootstrapToken:\n          apiServerEndpoint: 10.0.0.10:6443\n          caCertHashes:\n          - <capi:ca-cert-hash>\n          token: <capi:token>\n      kind: JoinConfiguration\n      nodeRegistration:\n        kubeletExtraArgs:\n        - name: eviction-hard\n          value: nodefs.available<0%\n        taints:\n        - effect: NoSchedule\n          key: node.cluster.x-k8s.io/uninitialized\n      \n-   path: /run/cluster-api/placeholder\n    owner: root:root\n    permissions: '0640'\n    content: \"written by capi so that the /run/cluster-api directory exists on every platform\"\nruncmd:\n  - kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml  && echo success > /run/cluster-api/bootstrap-success.complete\n";
        assert_eq!(r.content, expected);
        assert_eq!(r.kubeadm_api, "kubeadm.k8s.io/v1beta4");
    }

    #[test]
    fn old_versions_refused() {
        let spec = KubeadmConfigSpec::default();
        let v = Version::parse("v1.21.0").unwrap();
        let n = net();
        let e = render(&RenderInput {
            cluster_name: "c1",
            network: &n,
            fixed_endpoint: None,
            role: BootstrapRole::Init,
            version: &v,
            spec: &spec,
            from_kcp: true,
            secret_exists: &|_, _| false,
            control_plane_version: None,
        })
        .unwrap_err();
        assert!(e.message.contains("v1.22"), "{e:?}");
    }

    #[test]
    fn file_template() {
        let v = Version::parse("v1.31.2").unwrap();
        assert_eq!(
            render_file_template("k={{ .controlPlane.version }}", Some(&v)).unwrap(),
            "k=v1.31.2"
        );
        assert!(render_file_template("{{ .other }}", Some(&v)).is_err());
    }
}
