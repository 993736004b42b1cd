//! Machines: one container per machine, made as CAPD makes them
//! (privileged, `/var` on a volume, `/tmp` and `/run` on tmpfs, the API
//! server port published on control-plane machines), then bootstrapped
//! ([`super::bootstrap`]) and, for control-plane machines, put behind the
//! load balancer. Deleting a control-plane machine drains it from the load
//! balancer first.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use serde_json::{json, Value};

use super::engine::{container_ip, host_port, labels_of, summary_name, summary_state};
use super::{
    base_labels, check_owner, container_name, image, network_of, CrashPoint, DockerProvider,
    LABEL_FAILURE_DOMAIN, LABEL_KIND_CLUSTER, LABEL_KIND_ROLE, OPT_NODE_READY_TIMEOUT,
    OPT_PRIVILEGED, OPT_PUBLISH, OPT_SECURITY_OPT, OPT_TMPFS, OPT_VAR_VOLUME,
};
use crate::provider::{Observed, OpInput, ProviderError, LABEL_IDENTITY};
use crate::resource::{MachineSpec, Role};
use crate::state::Resource;

/// The API server port inside a control-plane container.
const API_PORT: &str = "6443/tcp";

/// The volume holding a machine's `/var`.
fn var_volume(container: &str) -> String {
    format!("{container}-var")
}

/// What a machine's container looks like before bootstrap.
fn machine_observed(
    c: &ContainerInspectResponse,
    name: &str,
    network: &str,
    image: &str,
) -> Observed {
    let mut o = Observed::from([
        ("container".into(), json!(name)),
        ("id".into(), json!(c.id.clone().unwrap_or_default())),
        ("image".into(), json!(image)),
        ("ip".into(), json!(container_ip(c, network))),
        ("network".into(), json!(network)),
        ("provider_id".into(), json!(format!("docker:////{name}"))),
        ("status".into(), json!("running")),
        ("ready".into(), json!(false)),
        ("bootstrap".into(), json!("pending")),
    ]);
    if let Some(p) = host_port(c, API_PORT) {
        o.insert("api_server_host_port".into(), json!(p));
    }
    o
}

/// A comma-separated option, or the default when it is not set.
fn list_option(opts: &BTreeMap<String, String>, key: &str) -> Option<Vec<String>> {
    opts.get(key).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// The template's `extraMounts` as bind mounts.
fn extra_mounts(spec: &Value) -> Vec<Mount> {
    let field = |m: &Value, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    spec.get("extraMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|em| Mount {
            typ: Some(MountType::BIND),
            source: field(em, "hostPath"),
            target: field(em, "containerPath"),
            read_only: em.get("readOnly").and_then(Value::as_bool),
            ..Default::default()
        })
        .collect()
}

/// The machine container as CAPD creates it, with the option annotations
/// applied (privileged, security options, tmpfs, publishing the API port).
fn machine_container(
    m: &MachineSpec,
    name: &str,
    image: &str,
    network: &str,
    labels: BTreeMap<String, String>,
    mounts: Vec<Mount>,
) -> ContainerCreateBody {
    let opts = &m.infra.options;
    let privileged = opts
        .get(OPT_PRIVILEGED)
        .map(|v| v.trim() != "false")
        .unwrap_or(true);
    let security_opt = list_option(opts, OPT_SECURITY_OPT)
        .unwrap_or_else(|| vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]);
    let tmpfs: HashMap<String, String> = list_option(opts, OPT_TMPFS)
        .unwrap_or_else(|| vec!["/tmp".into(), "/run".into()])
        .into_iter()
        .map(|p| (p, String::new()))
        .collect();
    let mut env = Vec::new();
    let mut port_bindings = HashMap::new();
    let mut exposed = Vec::new();
    if m.role == Role::ControlPlane {
        env.push("KUBECONFIG=/etc/kubernetes/admin.conf".to_string());
        if opts.get(OPT_PUBLISH).map(String::as_str) != Some("false") {
            exposed.push(API_PORT.to_string());
            port_bindings.insert(
                API_PORT.to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            );
        }
    }
    ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(name.to_string()),
        labels: Some(labels.into_iter().collect()),
        tty: Some(true),
        env: Some(env),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            privileged: Some(privileged),
            security_opt: Some(security_opt),
            tmpfs: Some(tmpfs),
            mounts: Some(mounts),
            network_mode: Some(network.to_string()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            init: Some(false),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(1),
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_string(),
                EndpointSettings {
                    aliases: Some(vec![name.to_string()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

impl DockerProvider {
    /// Create (or adopt) the machine's container, start it, put it behind
    /// the load balancer when it is a control-plane machine, bootstrap it.
    /// Returns once the machine is bootstrapped.
    pub(super) async fn create_machine(
        &self,
        input: &OpInput<'_>,
        m: &MachineSpec,
    ) -> Result<Observed, ProviderError> {
        let cluster = &input.cluster.name;
        let name = container_name(cluster, &m.name);
        let network = network_of(input);
        let custom = m.infra.spec.get("customImage").and_then(Value::as_str);
        let image = image::node_image(&m.version, custom);
        match self.engine.inspect(&name).await? {
            Some(c) => check_owner(labels_of(&c), input, &name)?,
            None => {
                // By id: Docker refuses an ambiguous network name.
                let network_id = self.network_id(&network).await?;
                self.new_container(input, m, &name, &network_id, &image)
                    .await?;
                self.crash.passed(CrashPoint::Create);
            }
        }
        let c = self.start_machine(&name).await?;
        let mut observed = machine_observed(&c, &name, &network, &image);
        if m.role == Role::ControlPlane {
            self.reconfigure_lb(cluster, input.lineage, None, None)
                .await?;
        }
        self.bootstrap(input, m, &name, &mut observed).await?;
        observed.insert("ready".into(), json!(true));
        let wait = m
            .infra
            .options
            .get(OPT_NODE_READY_TIMEOUT)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        observed.insert(
            "node".into(),
            json!(self.node_status(cluster, input.lineage, &name, wait).await),
        );
        self.crash.passed(CrashPoint::Ready);
        Ok(observed)
    }

    /// Pull the image when missing, make the `/var` volume, create the
    /// container; a failed create leaves no volume behind.
    async fn new_container(
        &self,
        input: &OpInput<'_>,
        m: &MachineSpec,
        name: &str,
        network: &str,
        image: &str,
    ) -> Result<(), ProviderError> {
        let cluster = &input.cluster.name;
        self.engine.ensure_image(image).await?;
        let mut labels = base_labels(input, "machine");
        labels.insert(LABEL_IDENTITY.into(), m.identity.to_string());
        labels.insert(LABEL_KIND_CLUSTER.into(), cluster.clone());
        labels.insert(LABEL_KIND_ROLE.into(), m.role.as_str().into());
        if let Some(fd) = &m.failure_domain {
            labels.insert(LABEL_FAILURE_DOMAIN.into(), fd.clone());
        }
        let mut mounts = Vec::new();
        if m.infra.options.get(OPT_VAR_VOLUME).map(String::as_str) != Some("false") {
            let vol = var_volume(name);
            let mut vl = base_labels(input, "volume");
            vl.insert(LABEL_KIND_CLUSTER.into(), cluster.clone());
            self.engine
                .create_volume(VolumeCreateRequest {
                    name: Some(vol.clone()),
                    labels: Some(vl.into_iter().collect()),
                    ..Default::default()
                })
                .await?;
            mounts.push(Mount {
                typ: Some(MountType::VOLUME),
                source: Some(vol),
                target: Some("/var".into()),
                ..Default::default()
            });
        }
        mounts.extend(extra_mounts(&m.infra.spec));
        let body = machine_container(m, name, image, network, labels, mounts);
        if let Err(err) = self.engine.create_container(name, body, false).await {
            let _ = self.engine.remove_volume(&var_volume(name)).await;
            return Err(err);
        }
        Ok(())
    }

    /// Start the container (again) when it is not running; its state after.
    async fn start_machine(&self, name: &str) -> Result<ContainerInspectResponse, ProviderError> {
        let c = self.engine.inspect(name).await?.ok_or_else(|| {
            ProviderError::Failed(format!("container {name} vanished after create"))
        })?;
        if c.state.as_ref().and_then(|s| s.running) != Some(true) {
            let privileged = c.host_config.as_ref().and_then(|h| h.privileged) == Some(true);
            self.engine.start_container(name).await.map_err(|e| match e {
                ProviderError::Failed(m) if privileged => ProviderError::Failed(format!(
                    "{m} (the container is privileged, as CAPD makes it; if this engine refuses privileged containers, use an image that runs unprivileged and set CAPI_DOCKER_PRIVILEGED=false or the annotation {OPT_PRIVILEGED}: \"false\")"
                )),
                other => other,
            })?;
        }
        self.engine
            .inspect(name)
            .await?
            .ok_or_else(|| ProviderError::Failed(format!("container {name} vanished after start")))
    }

    /// Machine labels and annotations live in capi's state only (container
    /// labels are immutable): an update only checks the container is there.
    pub(super) async fn update_machine(
        &self,
        input: &OpInput<'_>,
        m: &MachineSpec,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        let name = container_name(&input.cluster.name, &m.name);
        match self.engine.inspect(&name).await? {
            Some(_) => Ok(current.observed.clone()),
            None => Err(ProviderError::Failed(format!(
                "container {name} no longer exists"
            ))),
        }
    }

    /// Remove the container and its `/var` volume; a control-plane machine
    /// is drained from the load balancer first and dropped from it after.
    pub(super) async fn delete_machine(
        &self,
        r: &Resource,
        m: &MachineSpec,
        lineage: &str,
    ) -> Result<(), ProviderError> {
        let cluster = r.address.cluster_name();
        let name = r
            .observed
            .get("container")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| container_name(cluster, &m.name));
        if !self.removable(&name, r, lineage).await? {
            return Ok(());
        }
        if m.role == Role::ControlPlane {
            // Drain first: weight 0 and a reload.
            self.reconfigure_lb(cluster, lineage, Some(&name), None)
                .await?;
        }
        self.engine.remove_container(&name).await?;
        self.engine.remove_volume(&var_volume(&name)).await?;
        if m.role == Role::ControlPlane {
            self.reconfigure_lb(cluster, lineage, None, Some(&name))
                .await?;
        }
        Ok(())
    }

    /// Best effort: the machine's Node as the API server sees it, asked
    /// through a control-plane container that has `kubectl` and an admin
    /// kubeconfig (real kindest/node images do). Waits up to `wait_secs`
    /// for `Ready`; never fails the machine.
    async fn node_status(
        &self,
        cluster: &str,
        lineage: &str,
        node: &str,
        wait_secs: u64,
    ) -> String {
        let Ok(list) = self.control_planes(cluster, lineage).await else {
            return "unknown".into();
        };
        let Some(cp) = list.iter().find(|c| summary_state(c) == "running") else {
            return "unknown (no running control-plane machine)".into();
        };
        let cp = summary_name(cp);
        const NO_KUBECTL: &str = "not checked (no kubectl in the control-plane container)";
        if self.no_kubectl.lock().unwrap().contains(&cp) {
            return NO_KUBECTL.into();
        }
        let script = "command -v kubectl >/dev/null 2>&1 || exit 43; [ -f /etc/kubernetes/admin.conf ] || exit 42; \
            kubectl --kubeconfig /etc/kubernetes/admin.conf get node \"$1\" -o 'jsonpath={.status.conditions[?(@.type==\"Ready\")].status}'";
        let cmd = super::engine::sh_args(script, [node.to_string()]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
        loop {
            let status = match self.engine.exec(&cp, &cmd).await {
                Ok((43, _)) => {
                    self.no_kubectl.lock().unwrap().insert(cp);
                    return NO_KUBECTL.into();
                }
                Ok((42, _)) => {
                    return "not checked (no admin.conf in the control-plane container)".into()
                }
                Ok((0, out)) if out.trim() == "True" => return "Ready".into(),
                Ok((0, out)) => format!("NotReady ({})", out.trim()),
                Ok((_, _)) => "not registered".to_string(),
                Err(_) => "unknown".to_string(),
            };
            if std::time::Instant::now() >= deadline {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }
}
