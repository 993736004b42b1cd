//! Kubeadm bootstrap data, as Cluster API's kubeadm bootstrap provider (CABPK)
//! makes it: cloud-config for `kubeadm init`, control-plane join and worker
//! join; cluster certificates; bootstrap tokens; the admin kubeconfig.
//!
//! Rendering is pure: values that are secret or known only after apply are
//! written as references (see [`refs`]), which [`refs::resolve`] substitutes
//! when a machine is created. [`render`] assembles a machine's cloud-config
//! from named parts (`parts.rs`): the role-adjusted spec, certificate files,
//! the user's files, the kubeadm config and command, NTP, users, disks.

pub(crate) mod cloudinit;
pub(crate) mod goyaml;
pub(crate) mod kubeadm;
mod parts;
pub mod pki;
pub mod refs;
pub mod token;

use sha2::{Digest, Sha256};

use crate::manifest::raw::KubeadmConfigSpec;
use crate::manifest::ClusterNetwork;
use crate::resource::BootstrapRole;
use crate::resource::Version;

use cloudinit::CloudConfig;
use kubeadm::KubeadmApi;

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

/// Render one machine's bootstrap data: the role-adjusted spec, then the
/// cloud-config's parts in CABPK's order.
pub(crate) fn render(input: &RenderInput<'_>) -> Result<Rendered, BootstrapError> {
    let api = KubeadmApi::for_version(input.version).map_err(|m| {
        err(
            "",
            m,
            "use Kubernetes v1.22 or newer (kubeadm API v1beta3 for 1.22–1.30, v1beta4 from 1.31)",
        )
    })?;
    let spec = parts::spec_for_role(input)?;
    let endpoint = input
        .fixed_endpoint
        .clone()
        .unwrap_or_else(|| refs::inline(refs::ENDPOINT));
    let mut files = parts::certificate_files(input, &spec)?;
    files.extend(parts::user_files(input, &spec)?);
    let (kubeadm_file, command) = parts::kubeadm_config(input, &spec, api, &endpoint);
    files.push(kubeadm_file);
    files.push(parts::placeholder_file());
    let doc = CloudConfig {
        files,
        boot_commands: spec.boot_commands.clone(),
        pre_commands: spec.pre_kubeadm_commands.clone(),
        kubeadm_command: command,
        post_commands: spec.post_kubeadm_commands.clone(),
        ntp: parts::ntp(&spec),
        users: parts::users(input, &spec)?,
        disk_setup: spec.disk_setup.as_ref().map(parts::disk_setup),
        mounts: parts::mounts(&spec).unwrap_or_default(),
    };
    let content = cloudinit::render(&doc);
    let sha256 = hex::encode(Sha256::digest(content.as_bytes()));
    Ok(Rendered {
        content,
        sha256,
        kubeadm_api: api.group_version(),
    })
}

#[cfg(test)]
mod tests {
    use super::parts::render_file_template;
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

    fn input<'a>(
        spec: &'a KubeadmConfigSpec,
        role: BootstrapRole,
        version: &'a Version,
        network: &'a ClusterNetwork,
        secret_exists: &'a dyn Fn(&str, &str) -> bool,
    ) -> RenderInput<'a> {
        RenderInput {
            cluster_name: "c1",
            network,
            fixed_endpoint: None,
            role,
            version,
            spec,
            from_kcp: role != BootstrapRole::JoinWorker,
            secret_exists,
            control_plane_version: Some(version),
        }
    }

    #[test]
    fn a_worker_join_may_not_set_control_plane() {
        let spec: KubeadmConfigSpec = serde_json::from_value(serde_json::json!({
            "joinConfiguration": {"controlPlane": {}}
        }))
        .unwrap();
        let (v, n) = (Version::parse("v1.31.2").unwrap(), net());
        let e = render(&input(&spec, BootstrapRole::JoinWorker, &v, &n, &|_, _| {
            true
        }))
        .unwrap_err();
        assert_eq!(e.field, "/joinConfiguration/controlPlane");
        // The same spec joins a control plane.
        assert!(render(&input(
            &spec,
            BootstrapRole::JoinControlPlane,
            &v,
            &n,
            &|_, _| true
        ))
        .is_ok());
    }

    #[test]
    fn external_etcd_material_comes_from_the_manifests_secrets() {
        let spec: KubeadmConfigSpec = serde_json::from_value(serde_json::json!({
            "clusterConfiguration": {"etcd": {"external": {
                "endpoints": ["https://etcd:2379"],
                "caFile": "/etc/etcd/ca.crt",
                "certFile": "/etc/etcd/client.crt",
                "keyFile": "/etc/etcd/client.key"
            }}}
        }))
        .unwrap();
        let (v, n) = (Version::parse("v1.31.2").unwrap(), net());
        let r = render(&input(&spec, BootstrapRole::Init, &v, &n, &|_, _| true)).unwrap();
        assert!(r.content.contains("path: /etc/etcd/client.key"));
        assert!(r.content.contains(&refs::inline(&refs::secret(
            "c1-apiserver-etcd-client",
            "tls.key"
        ))));
        // Local etcd certificates are not written.
        assert!(!r.content.contains("/etc/kubernetes/pki/etcd/"));
        // A worker gets no certificates at all.
        let w = render(&input(&spec, BootstrapRole::JoinWorker, &v, &n, &|_, _| {
            true
        }))
        .unwrap();
        assert!(!w.content.contains("/etc/etcd/"));

        let missing = |name: &str, _: &str| name != "c1-etcd";
        let e = render(&input(&spec, BootstrapRole::Init, &v, &n, &missing)).unwrap_err();
        assert_eq!(e.field, "/clusterConfiguration/etcd/external");
        assert!(e.message.contains("\"c1-etcd\""), "{e:?}");
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
