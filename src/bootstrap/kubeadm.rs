//! KubeadmConfigSpec → the kubeadm API documents CABPK writes to
//! `/run/kubeadm/*.yaml`: `kubeadm.k8s.io/v1beta3` for Kubernetes 1.22–1.30,
//! `v1beta4` from 1.31 (extra arguments as maps vs `[{name, value}]`, timeouts,
//! validity periods).

use serde_json::{json, Map, Value};

use crate::manifest::raw::{self, KubeadmConfigSpec, NodeRegistration};
use crate::manifest::{Args, ClusterNetwork};
use crate::resource::Version;

use super::refs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KubeadmApi {
    V1beta3,
    V1beta4,
}

impl KubeadmApi {
    pub(crate) fn for_version(v: &Version) -> Result<KubeadmApi, String> {
        let (maj, min) = (v.major, v.minor);
        if maj != 1 || min < 22 {
            return Err(format!(
                "Kubernetes {v} is not supported: the kubeadm bootstrap needs Kubernetes v1.22 or newer"
            ));
        }
        Ok(if min <= 30 {
            KubeadmApi::V1beta3
        } else {
            KubeadmApi::V1beta4
        })
    }

    pub(crate) fn group_version(self) -> &'static str {
        match self {
            KubeadmApi::V1beta3 => "kubeadm.k8s.io/v1beta3",
            KubeadmApi::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

/// Cluster-level values CABPK fills in itself.
pub(crate) struct ClusterValues<'a> {
    pub(crate) cluster_name: &'a str,
    pub(crate) network: &'a ClusterNetwork,
    /// `host:port` when the manifests fix it, else the `<capi:endpoint>` reference.
    pub(crate) endpoint: String,
    pub(crate) version: &'a Version,
}

/// Go's `time.Duration.String()` for whole seconds: `30s`, `4m0s`, `1h0m0s`.
pub(crate) fn go_duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn args(a: &Args, api: KubeadmApi) -> Value {
    match api {
        KubeadmApi::V1beta3 => {
            // A map: a later duplicate wins; emitted sorted.
            let mut m = Map::new();
            for (k, v) in &a.0 {
                m.insert(k.clone(), Value::String(v.clone()));
            }
            Value::Object(m)
        }
        KubeadmApi::V1beta4 => Value::Array(
            a.0.iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect(),
        ),
    }
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.to_string(), v);
    }
}

fn s(v: &Option<String>) -> Option<Value> {
    v.as_ref()
        .filter(|x| !x.is_empty())
        .map(|x| Value::String(x.clone()))
}

fn list(v: &[String]) -> Option<Value> {
    (!v.is_empty()).then(|| Value::Array(v.iter().map(|x| Value::String(x.clone())).collect()))
}

fn extra_volumes(v: &Option<Value>) -> Option<Value> {
    let Value::Array(items) = v.as_ref()? else {
        return None;
    };
    Some(Value::Array(
        items
            .iter()
            .map(|i| {
                let mut m = i.as_object().cloned().unwrap_or_default();
                for k in ["name", "hostPath", "mountPath"] {
                    m.entry(k.to_string())
                        .or_insert(Value::String(String::new()));
                }
                if m.get("readOnly") == Some(&Value::Bool(false)) {
                    m.remove("readOnly");
                }
                Value::Object(m)
            })
            .collect(),
    ))
}

fn component(
    extra_args: &Args,
    volumes: &Option<Value>,
    envs: &Option<Value>,
    api: KubeadmApi,
) -> Map<String, Value> {
    let mut m = Map::new();
    if !extra_args.is_empty() {
        m.insert("extraArgs".into(), args(extra_args, api));
    }
    if api == KubeadmApi::V1beta4 {
        put(&mut m, "extraEnvs", envs.clone());
    }
    put(&mut m, "extraVolumes", extra_volumes(volumes));
    m
}

/// The ClusterConfiguration document (init only).
pub(crate) fn cluster_configuration(
    spec: &KubeadmConfigSpec,
    cv: &ClusterValues<'_>,
    api: KubeadmApi,
) -> Value {
    let default_cc = raw::ClusterConfiguration::default();
    let cc = spec.cluster_configuration.as_ref().unwrap_or(&default_cc);
    let mut m = Map::new();
    m.insert("apiVersion".into(), json!(api.group_version()));
    m.insert("kind".into(), json!("ClusterConfiguration"));

    let mut api_server = match &cc.api_server {
        Some(a) => {
            let mut c = component(&a.extra_args, &a.extra_volumes, &a.extra_envs, api);
            put(&mut c, "certSANs", list(&a.cert_sans));
            c
        }
        None => Map::new(),
    };
    if api == KubeadmApi::V1beta3 {
        let timeout = spec
            .init_configuration
            .as_ref()
            .and_then(|i| i.timeouts.as_ref())
            .and_then(|t| t.control_plane_component_health_check_seconds);
        if let Some(t) = timeout {
            api_server.insert("timeoutForControlPlane".into(), json!(go_duration(t)));
        }
    }
    m.insert("apiServer".into(), Value::Object(api_server));
    let cm = cc
        .controller_manager
        .as_ref()
        .map(|c| component(&c.extra_args, &c.extra_volumes, &c.extra_envs, api))
        .unwrap_or_default();
    m.insert("controllerManager".into(), Value::Object(cm));
    let sched = cc
        .scheduler
        .as_ref()
        .map(|c| component(&c.extra_args, &c.extra_volumes, &c.extra_envs, api))
        .unwrap_or_default();
    m.insert("scheduler".into(), Value::Object(sched));
    let mut dns = Map::new();
    if let Some(d) = &cc.dns {
        put(&mut dns, "imageRepository", s(&d.image_repository));
        put(&mut dns, "imageTag", s(&d.image_tag));
    }
    m.insert("dns".into(), Value::Object(dns));

    let mut etcd = Map::new();
    if let Some(e) = &cc.etcd {
        if let Some(l) = &e.local {
            let mut lm = Map::new();
            lm.insert(
                "dataDir".into(),
                json!(l.data_dir.clone().unwrap_or_default()),
            );
            if !l.extra_args.is_empty() {
                lm.insert("extraArgs".into(), args(&l.extra_args, api));
            }
            if api == KubeadmApi::V1beta4 {
                put(&mut lm, "extraEnvs", l.extra_envs.clone());
            }
            put(&mut lm, "imageRepository", s(&l.image_repository));
            put(&mut lm, "imageTag", s(&l.image_tag));
            put(&mut lm, "peerCertSANs", list(&l.peer_cert_s_a_ns));
            put(&mut lm, "serverCertSANs", list(&l.server_cert_s_a_ns));
            etcd.insert("local".into(), Value::Object(lm));
        }
        if let Some(x) = &e.external {
            etcd.insert(
                "external".into(),
                json!({"caFile": x.ca_file, "certFile": x.cert_file, "endpoints": x.endpoints, "keyFile": x.key_file}),
            );
        }
    }
    m.insert("etcd".into(), Value::Object(etcd));

    let mut net = Map::new();
    if !cv.network.service_domain.is_empty() {
        net.insert("dnsDomain".into(), json!(cv.network.service_domain));
    }
    if !cv.network.pods.is_empty() {
        net.insert("podSubnet".into(), json!(cv.network.pods.join(",")));
    }
    if !cv.network.services.is_empty() {
        net.insert("serviceSubnet".into(), json!(cv.network.services.join(",")));
    }
    m.insert("networking".into(), Value::Object(net));
    if api == KubeadmApi::V1beta4 {
        m.insert("proxy".into(), json!({}));
    }

    m.insert("clusterName".into(), json!(cv.cluster_name));
    let endpoint = cc
        .control_plane_endpoint
        .clone()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| cv.endpoint.clone());
    m.insert("controlPlaneEndpoint".into(), json!(endpoint));
    m.insert("kubernetesVersion".into(), json!(cv.version.to_string()));
    put(&mut m, "certificatesDir", s(&cc.certificates_dir));
    put(&mut m, "imageRepository", s(&cc.image_repository));
    if !cc.feature_gates.is_empty() {
        m.insert(
            "featureGates".into(),
            serde_json::to_value(&cc.feature_gates).unwrap(),
        );
    }
    if api == KubeadmApi::V1beta4 {
        if let Some(d) = cc.certificate_validity_period_days {
            m.insert(
                "certificateValidityPeriod".into(),
                json!(go_duration(d * 86_400)),
            );
        }
        if let Some(d) = cc.ca_certificate_validity_period_days {
            m.insert(
                "caCertificateValidityPeriod".into(),
                json!(go_duration(d * 86_400)),
            );
        }
        put(&mut m, "encryptionAlgorithm", s(&cc.encryption_algorithm));
    }
    Value::Object(m)
}

fn node_registration(nr: Option<&NodeRegistration>, api: KubeadmApi, extra_taint: bool) -> Value {
    let default_nr = NodeRegistration::default();
    let nr = nr.unwrap_or(&default_nr);
    let mut m = Map::new();
    put(&mut m, "name", s(&nr.name));
    put(&mut m, "criSocket", s(&nr.cri_socket));
    put(
        &mut m,
        "ignorePreflightErrors",
        list(&nr.ignore_preflight_errors),
    );
    put(&mut m, "imagePullPolicy", s(&nr.image_pull_policy));
    if api == KubeadmApi::V1beta4 {
        put(
            &mut m,
            "imagePullSerial",
            nr.image_pull_serial.map(Value::Bool),
        );
    }
    if !nr.kubelet_extra_args.is_empty() {
        m.insert("kubeletExtraArgs".into(), args(&nr.kubelet_extra_args, api));
    }
    let mut taints: Option<Vec<Value>> = nr.taints.as_ref().map(|ts| {
        ts.iter()
            .map(|t| {
                let mut tm = Map::new();
                tm.insert("effect".into(), json!(t.effect));
                tm.insert("key".into(), json!(t.key));
                put(&mut tm, "value", s(&t.value));
                Value::Object(tm)
            })
            .collect()
    });
    if extra_taint {
        let list = taints.get_or_insert_with(Vec::new);
        let present = list.iter().any(|t| {
            t["key"] == "node.cluster.x-k8s.io/uninitialized" && t["effect"] == "NoSchedule"
        });
        if !present {
            list.push(
                json!({"effect": "NoSchedule", "key": "node.cluster.x-k8s.io/uninitialized"}),
            );
        }
    }
    m.insert(
        "taints".into(),
        match taints {
            Some(t) => Value::Array(t),
            None => Value::Null,
        },
    );
    Value::Object(m)
}

fn timeouts(t: &Option<raw::Timeouts>) -> Option<Value> {
    let t = t.as_ref()?;
    let mut m = Map::new();
    let pairs = [
        (
            "controlPlaneComponentHealthCheck",
            t.control_plane_component_health_check_seconds,
        ),
        ("kubeletHealthCheck", t.kubelet_health_check_seconds),
        ("kubernetesAPICall", t.kube_api_server_seconds),
        ("etcdAPICall", t.etcd_api_call_seconds),
        ("tlsBootstrap", t.tls_bootstrap_seconds),
        ("discovery", t.discovery_seconds),
    ];
    for (k, v) in pairs {
        if let Some(v) = v {
            m.insert(k.into(), json!(go_duration(v)));
        }
    }
    (!m.is_empty()).then_some(Value::Object(m))
}

fn api_endpoint(e: &Option<raw::ApiEndpoint>) -> Value {
    let mut m = Map::new();
    if let Some(e) = e {
        put(&mut m, "advertiseAddress", s(&e.advertise_address));
        put(&mut m, "bindPort", e.bind_port.map(Value::from));
    }
    Value::Object(m)
}

/// The InitConfiguration document.
pub(crate) fn init_configuration(spec: &KubeadmConfigSpec, api: KubeadmApi) -> Value {
    let default_init = raw::InitConfiguration::default();
    let i = spec.init_configuration.as_ref().unwrap_or(&default_init);
    let mut m = Map::new();
    m.insert("apiVersion".into(), json!(api.group_version()));
    m.insert("kind".into(), json!("InitConfiguration"));
    put(&mut m, "bootstrapTokens", i.bootstrap_tokens.clone());
    m.insert(
        "localAPIEndpoint".into(),
        api_endpoint(&i.local_api_endpoint),
    );
    m.insert(
        "nodeRegistration".into(),
        node_registration(i.node_registration.as_ref(), api, false),
    );
    if let Some(p) = i.patches.as_ref().and_then(|p| p.directory.clone()) {
        m.insert("patches".into(), json!({"directory": p}));
    }
    put(&mut m, "skipPhases", list(&i.skip_phases));
    if api == KubeadmApi::V1beta4 {
        put(&mut m, "timeouts", timeouts(&i.timeouts));
    }
    Value::Object(m)
}

/// The JoinConfiguration document (control-plane join or worker join).
pub(crate) fn join_configuration(
    spec: &KubeadmConfigSpec,
    endpoint: &str,
    api: KubeadmApi,
    control_plane: bool,
) -> Value {
    let default_join = raw::JoinConfiguration::default();
    let j = spec.join_configuration.as_ref().unwrap_or(&default_join);
    let mut m = Map::new();
    m.insert("apiVersion".into(), json!(api.group_version()));
    m.insert("kind".into(), json!("JoinConfiguration"));
    put(&mut m, "caCertPath", s(&j.ca_cert_path));
    if control_plane {
        let lae = j
            .control_plane
            .as_ref()
            .map(|c| api_endpoint(&c.local_api_endpoint))
            .unwrap_or_else(|| json!({}));
        m.insert("controlPlane".into(), json!({"localAPIEndpoint": lae}));
    }
    // Discovery: CABPK fills the token, the CA hash and the endpoint.
    let mut disc = Map::new();
    let d = j.discovery.clone().unwrap_or_default();
    if let Some(file) = &d.file {
        let path = file.get("kubeConfigPath").cloned().unwrap_or(json!(""));
        disc.insert("file".into(), json!({"kubeConfigPath": path}));
    } else {
        let bt = d.bootstrap_token.clone().unwrap_or_default();
        let mut b = Map::new();
        b.insert(
            "apiServerEndpoint".into(),
            json!(bt
                .api_server_endpoint
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| endpoint.to_string())),
        );
        let hashes = if bt.ca_cert_hashes.is_empty() {
            vec![refs::inline(refs::CA_CERT_HASH)]
        } else {
            bt.ca_cert_hashes.clone()
        };
        b.insert("caCertHashes".into(), json!(hashes));
        b.insert(
            "token".into(),
            json!(bt
                .token
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| refs::inline(refs::TOKEN))),
        );
        if bt.unsafe_skip_c_a_verification == Some(true) {
            b.insert("unsafeSkipCAVerification".into(), json!(true));
        }
        disc.insert("bootstrapToken".into(), Value::Object(b));
    }
    put(&mut disc, "tlsBootstrapToken", s(&d.tls_bootstrap_token));
    if api == KubeadmApi::V1beta3 {
        if let Some(t) = j.timeouts.as_ref().and_then(|t| t.tls_bootstrap_seconds) {
            disc.insert("timeout".into(), json!(go_duration(t)));
        }
    }
    m.insert("discovery".into(), Value::Object(disc));
    m.insert(
        "nodeRegistration".into(),
        node_registration(j.node_registration.as_ref(), api, !control_plane),
    );
    if let Some(p) = j.patches.as_ref().and_then(|p| p.directory.clone()) {
        m.insert("patches".into(), json!({"directory": p}));
    }
    put(&mut m, "skipPhases", list(&j.skip_phases));
    if api == KubeadmApi::V1beta4 {
        put(&mut m, "timeouts", timeouts(&j.timeouts));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(go_duration(30), "30s");
        assert_eq!(go_duration(240), "4m0s");
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(365 * 86_400), "8760h0m0s");
    }

    #[test]
    fn api_by_version() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert!(KubeadmApi::for_version(&v("v1.21.9")).is_err());
        assert_eq!(
            KubeadmApi::for_version(&v("v1.22.0")).unwrap(),
            KubeadmApi::V1beta3
        );
        assert_eq!(
            KubeadmApi::for_version(&v("v1.30.9")).unwrap(),
            KubeadmApi::V1beta3
        );
        assert_eq!(
            KubeadmApi::for_version(&v("v1.31.0-rc.1")).unwrap(),
            KubeadmApi::V1beta4
        );
    }
}
