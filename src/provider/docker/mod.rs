//! The Docker provider: clusters as containers on a Docker Engine, with
//! Cluster API Docker provider (CAPD) semantics, through `bollard`.
//!
//! What it makes (see docs/providers/docker.md):
//! - the cluster network (`kind` by default, shared by clusters; created with
//!   labels when missing, removed only when capi created it and nothing is
//!   attached to it any more);
//! - the `<cluster>-lb` container (haproxy), reconfigured and sent SIGHUP
//!   whenever the set of control-plane machines changes;
//! - one container per machine, bootstrapped by executing its cloud-config
//!   as CAPD does (`write_files` and `runcmd` only).
//!
//! Every container and volume carries capi's labels (lineage, address,
//! identity), so refresh reads everything back with one list call per type,
//! and a container created just before a crash is adopted, not duplicated.
//!
//! Test hook: `CAPI_DOCKER_CRASH=create:N` (or `ready:N`) kills the process
//! with SIGKILL right after the Nth machine container of this process is
//! created (or bootstrapped), before the state records it.

pub mod haproxy;
pub(crate) mod image;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, EndpointSettings, ExecConfig, HostConfig, Mount,
    MountType, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    InspectNetworkOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptions, RemoveContainerOptionsBuilder, RemoveVolumeOptions, StartContainerOptions,
    UploadToContainerOptionsBuilder,
};
use bollard::{body_full, Docker};
use futures::StreamExt;
use serde_json::{json, Value};

use super::cloudinit::{self, Action};
use super::*;
use crate::resource::AttributeChange;
use crate::resource::{LoadBalancerSpec, MachineSpec, NetworkSpec, Role};

/// CAPD's (kind's) labels.
pub(crate) const LABEL_KIND_CLUSTER: &str = "io.x-k8s.kind.cluster";
pub(crate) const LABEL_KIND_ROLE: &str = "io.x-k8s.kind.role";
pub(crate) const LABEL_FAILURE_DOMAIN: &str = "io.x-k8s.cluster.failureDomain";
/// capi's own: the cluster key (namespace-qualified) and what the object is.
pub(crate) const LABEL_CLUSTER: &str = "capi.x-k8s.io/cluster";
pub(crate) const LABEL_TYPE: &str = "capi.x-k8s.io/type";

/// Option annotations (on DockerCluster / DockerMachineTemplate), also set
/// from the environment through `GraphOptions::default_options`.
pub(crate) const OPT_PRIVILEGED: &str = "capi.x-k8s.io/docker-privileged";
pub(crate) const OPT_SECURITY_OPT: &str = "capi.x-k8s.io/docker-security-opt";
pub(crate) const OPT_TMPFS: &str = "capi.x-k8s.io/docker-tmpfs";
pub(crate) const OPT_VAR_VOLUME: &str = "capi.x-k8s.io/docker-var-volume";
pub(crate) const OPT_PUBLISH: &str = "capi.x-k8s.io/docker-publish-api-server";
pub(crate) const OPT_NODE_READY_TIMEOUT: &str = "capi.x-k8s.io/docker-node-ready-timeout";

/// CABPK's success sentinel.
pub(crate) const SUCCESS_SENTINEL: &str = "/run/cluster-api/bootstrap-success.complete";
/// Where files are staged (in the container's writable layer) before they
/// are moved into place; tmpfs mounts cannot receive archive uploads.
const STAGING: &str = "/.capi-staging";
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// capi's copies of the bootstrap markers, on `/var` (a volume): `/run` is a
/// tmpfs, emptied when a container restarts, and bootstrap must still never
/// run twice on it.
pub(crate) const PERSISTENT_MARKERS: &str = "/var/lib/capi";

/// Settings from the environment and command line.
#[derive(Debug, Clone, Default)]
pub(crate) struct DockerSettings {
    /// `DOCKER_HOST`; `None` means the default socket.
    pub(crate) host: Option<String>,
}

pub(crate) struct DockerProvider {
    docker: Docker,
    /// Serialises load-balancer reconfigurations within this process.
    lb_lock: tokio::sync::Mutex<()>,
    crash: Option<(String, u64)>,
    creates: AtomicU64,
    readies: AtomicU64,
    staged: AtomicU64,
}

fn describe_host(settings: &DockerSettings) -> String {
    settings
        .host
        .clone()
        .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"))
}

/// Connect to the engine named by `DOCKER_HOST` (or the default socket) and
/// negotiate the API version.
pub(crate) async fn connect(
    settings: &DockerSettings,
    overrides: &Overrides,
) -> Result<std::sync::Arc<dyn Provider>, ProviderError> {
    Ok(Arc::new(
        DockerProvider::connect(settings, overrides).await?,
    ))
}

fn unavailable(host: &str, why: &str) -> ProviderError {
    ProviderError::Unavailable(format!(
        "no Docker Engine answers at {host}: {why} (start dockerd, or point DOCKER_HOST at a running engine)"
    ))
}

/// The innermost message of an error (bollard wraps hyper wraps io).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

impl DockerProvider {
    pub(crate) async fn connect(
        settings: &DockerSettings,
        overrides: &Overrides,
    ) -> Result<DockerProvider, ProviderError> {
        let host = describe_host(settings);
        if let Some(path) = host.strip_prefix("unix://") {
            if !std::path::Path::new(path).exists() {
                return Err(unavailable(&host, "the socket does not exist"));
            }
        }
        let docker =
            Docker::connect_with_host(&host).map_err(|e| unavailable(&host, &root_cause(&e)))?;
        let docker = tokio::time::timeout(Duration::from_secs(20), docker.negotiate_version())
            .await
            .map_err(|_| unavailable(&host, "no answer within 20s"))?
            .map_err(|e| unavailable(&host, &root_cause(&e)))?;
        docker
            .ping()
            .await
            .map_err(|e| unavailable(&host, &root_cause(&e)))?;
        let crash = overrides.docker_crash.clone();
        Ok(DockerProvider {
            docker,
            lb_lock: tokio::sync::Mutex::new(()),
            crash,
            creates: AtomicU64::new(0),
            readies: AtomicU64::new(0),
            staged: AtomicU64::new(0),
        })
    }

    fn maybe_crash(&self, point: &str, counter: &AtomicU64) {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((p, at)) = &self.crash {
            if p == point && *at == n {
                #[allow(
                    clippy::print_stderr,
                    reason = "a test hook announces itself before the kill"
                )]
                {
                    eprintln!("CAPI_DOCKER_CRASH: killing the process after {point} #{n}");
                }
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }

    // ------------------------------------------------------------ helpers

    async fn list_containers(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, ProviderError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_string(), labels.to_vec())]);
        self.docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| engine_err("listing containers", e))
    }

    async fn inspect(
        &self,
        name: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, ProviderError> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_404(&e) => Ok(None),
            Err(e) => Err(engine_err(&format!("inspecting container {name}"), e)),
        }
    }

    /// Make sure an image is on the engine: pull it when missing.
    async fn ensure_image(&self, image: &str) -> Result<(), ProviderError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_404(&e) => {}
            Err(e) => return Err(engine_err(&format!("inspecting image {image}"), e)),
        }
        let (repo, tag) = match image.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (image, "latest"),
        };
        let mut s = self.docker.create_image(
            Some(
                CreateImageOptionsBuilder::default()
                    .from_image(repo)
                    .tag(tag)
                    .build(),
            ),
            None,
            None,
        );
        while let Some(r) = s.next().await {
            if let Err(e) = r {
                return Err(ProviderError::Failed(format!(
                    "image {image} is not on the Docker Engine and pulling it failed ({}); load or build it first (see docs/providers/docker.md)",
                    root_cause(&e)
                )));
            }
        }
        Ok(())
    }

    /// Run a command in a container; returns (exit code, combined output).
    pub(crate) async fn exec(
        &self,
        container: &str,
        cmd: &[String],
    ) -> Result<(i64, String), ProviderError> {
        let id = self
            .docker
            .create_exec(
                container,
                ExecConfig {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| engine_err(&format!("exec in {container}"), e))?
            .id;
        let mut out = String::new();
        match self
            .docker
            .start_exec(&id, None::<StartExecOptions>)
            .await
            .map_err(|e| engine_err(&format!("exec in {container}"), e))?
        {
            StartExecResults::Attached { mut output, .. } => {
                while let Some(m) = output.next().await {
                    match m {
                        Ok(LogOutput::StdOut { message })
                        | Ok(LogOutput::StdErr { message })
                        | Ok(LogOutput::Console { message }) => {
                            out.push_str(&String::from_utf8_lossy(&message))
                        }
                        Ok(_) => {}
                        Err(e) => return Err(engine_err(&format!("exec in {container}"), e)),
                    }
                }
            }
            StartExecResults::Detached => {}
        }
        for _ in 0..200 {
            let i = self
                .docker
                .inspect_exec(&id)
                .await
                .map_err(|e| engine_err(&format!("exec in {container}"), e))?;
            if i.running != Some(true) {
                return Ok((i.exit_code.unwrap_or(-1), out));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok((-1, out))
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    /// Upload files as one tar to `/` of a container.
    async fn upload(
        &self,
        container: &str,
        files: &[(String, &[u8], u32)],
    ) -> Result<(), ProviderError> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path.trim_start_matches('/'), *data)
                .map_err(|e| ProviderError::Failed(format!("building an archive: {e}")))?;
        }
        let tar = b
            .into_inner()
            .map_err(|e| ProviderError::Failed(format!("building an archive: {e}")))?;
        self.docker
            .upload_to_container(
                container,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                body_full(tar.into()),
            )
            .await
            .map_err(|e| engine_err(&format!("uploading files to {container}"), e))
    }

    fn stage_name(&self) -> String {
        format!(
            "{STAGING}/{}-{}",
            std::process::id(),
            self.staged.fetch_add(1, Ordering::SeqCst)
        )
    }

    // ------------------------------------------------------------ network

    async fn create_network(
        &self,
        input: &OpInput<'_>,
        n: &NetworkSpec,
    ) -> Result<Observed, ProviderError> {
        let existing = match self
            .docker
            .inspect_network(&n.name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(x) => Some(x),
            Err(e) if is_404(&e) => None,
            Err(e) => return Err(engine_err(&format!("inspecting network {}", n.name), e)),
        };
        let net = match existing {
            Some(x) => x,
            None => {
                let mut labels = base_labels(input, "network");
                labels.remove(LABEL_CLUSTER);
                labels.insert("capi.x-k8s.io/managed".into(), "true".into());
                match self
                    .docker
                    .create_network(NetworkCreateRequest {
                        name: n.name.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(labels.into_iter().collect()),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => {}
                    // Another process (or cluster) created it meanwhile.
                    Err(e) if status_of(&e) == Some(409) => {}
                    Err(e) => return Err(engine_err(&format!("creating network {}", n.name), e)),
                }
                self.docker
                    .inspect_network(&n.name, None::<InspectNetworkOptions>)
                    .await
                    .map_err(|e| engine_err(&format!("inspecting network {}", n.name), e))?
            }
        };
        let labels = net.labels.clone().unwrap_or_default();
        let subnet = net
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.subnet.clone())
            .unwrap_or_default();
        Ok(BTreeMap::from([
            ("name".into(), json!(n.name)),
            ("id".into(), json!(net.id.unwrap_or_default())),
            ("subnet".into(), json!(subnet)),
            (
                "created_by_capi".into(),
                json!(labels.get("capi.x-k8s.io/managed").map(String::as_str) == Some("true")),
            ),
        ]))
    }

    async fn delete_network(&self, name: &str) -> Result<(), ProviderError> {
        let net = match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(x) => x,
            Err(e) if is_404(&e) => return Ok(()),
            Err(e) => return Err(engine_err(&format!("inspecting network {name}"), e)),
        };
        let ours = net
            .labels
            .as_ref()
            .and_then(|l| l.get("capi.x-k8s.io/managed"))
            .map(String::as_str)
            == Some("true");
        let in_use = net.containers.as_ref().is_some_and(|c| !c.is_empty());
        if !ours || in_use {
            // Shared: another cluster or a foreign container uses it, or
            // capi did not create it.
            return Ok(());
        }
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            // Something attached between inspect and remove: keep it.
            Err(e) if status_of(&e) == Some(403) || status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(engine_err(&format!("removing network {name}"), e)),
        }
    }

    // ------------------------------------------------------------ load balancer

    async fn create_lb(
        &self,
        input: &OpInput<'_>,
        l: &LoadBalancerSpec,
    ) -> Result<Observed, ProviderError> {
        let cluster = &input.cluster.name;
        let name = lb_name(cluster);
        let network = network_of(input);
        let lbs = l.infra.spec.get("loadBalancer");
        let image = image::lb_image(
            lbs.and_then(|v| v.get("imageRepository"))
                .and_then(Value::as_str),
            lbs.and_then(|v| v.get("imageTag")).and_then(Value::as_str),
        );
        let existing = self.inspect(&name).await?;
        if let Some(c) = &existing {
            check_owner(
                c.config.as_ref().and_then(|c| c.labels.as_ref()),
                input,
                &name,
            )?;
        } else {
            self.ensure_image(&image).await?;
            let mut labels = base_labels(input, "loadbalancer");
            labels.insert(LABEL_KIND_CLUSTER.into(), cluster.clone());
            labels.insert(LABEL_KIND_ROLE.into(), "external-load-balancer".into());
            labels.insert("capi.x-k8s.io/port".into(), l.port.to_string());
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                hostname: Some(name.clone()),
                labels: Some(labels.into_iter().collect()),
                exposed_ports: Some(vec![format!("{}/tcp", l.port), "8404/tcp".into()]),
                host_config: Some(HostConfig {
                    network_mode: Some(network.clone()),
                    port_bindings: Some(HashMap::from([
                        (
                            format!("{}/tcp", l.port),
                            Some(vec![PortBinding {
                                host_ip: Some("0.0.0.0".into()),
                                host_port: Some(String::new()),
                            }]),
                        ),
                        (
                            "8404/tcp".to_string(),
                            Some(vec![PortBinding {
                                host_ip: Some("0.0.0.0".into()),
                                host_port: Some(String::new()),
                            }]),
                        ),
                    ])),
                    restart_policy: Some(RestartPolicy {
                        name: Some(RestartPolicyNameEnum::ON_FAILURE),
                        maximum_retry_count: Some(1),
                    }),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.clone(),
                        EndpointSettings::default(),
                    )])),
                }),
                ..Default::default()
            };
            match self
                .docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    body,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if status_of(&e) == Some(409) => {
                    let c = self.inspect(&name).await?;
                    check_owner(
                        c.as_ref()
                            .and_then(|c| c.config.as_ref())
                            .and_then(|c| c.labels.as_ref()),
                        input,
                        &name,
                    )?;
                }
                Err(e) => return Err(engine_err(&format!("creating container {name}"), e)),
            }
        }
        // The configuration goes in before haproxy starts: no servers yet,
        // or the control-plane machines that already exist (adoption).
        let backends = self.backends(cluster, input.lineage, None, None).await?;
        let cfg = haproxy::render(l.port, &backends, false);
        self.upload(
            &name,
            &[(haproxy::CONFIG_PATH.to_string(), cfg.as_bytes(), 0o644)],
        )
        .await?;
        match self
            .docker
            .start_container(&name, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(304) => {
                // Already running (adopted): make it read the configuration.
                self.sighup(&name).await?;
            }
            Err(e) => return Err(engine_err(&format!("starting container {name}"), e)),
        }
        let c = self.inspect(&name).await?.ok_or_else(|| {
            ProviderError::Failed(format!("container {name} vanished after start"))
        })?;
        let ip = container_ip(&c, &network);
        if ip.is_empty() {
            return Err(ProviderError::Failed(format!(
                "the load balancer {name} has no address on network {network}"
            )));
        }
        let host_port = c
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref())
            .and_then(|p| p.get(&format!("{}/tcp", l.port)).cloned().flatten())
            .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
            .unwrap_or_default();
        let endpoint = l
            .fixed_endpoint
            .clone()
            .unwrap_or_else(|| format!("{}:{}", ip, l.port));
        Ok(BTreeMap::from([
            ("container".into(), json!(name)),
            ("id".into(), json!(c.id.unwrap_or_default())),
            ("image".into(), json!(image)),
            ("ip".into(), json!(ip)),
            ("endpoint".into(), json!(endpoint)),
            ("host_port".into(), json!(host_port)),
        ]))
    }

    async fn sighup(&self, name: &str) -> Result<(), ProviderError> {
        self.docker
            .kill_container(
                name,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal("SIGHUP")
                        .build(),
                ),
            )
            .await
            .map_err(|e| engine_err(&format!("sending SIGHUP to {name}"), e))
    }

    /// The control-plane containers of a cluster as haproxy servers.
    /// `drain`: the one about to be deleted (weight 0, unless it is the only
    /// one); `without`: one already gone.
    async fn backends(
        &self,
        cluster: &str,
        lineage: &str,
        drain: Option<&str>,
        without: Option<&str>,
    ) -> Result<Vec<haproxy::Backend>, ProviderError> {
        let list = self
            .list_containers(&[
                format!("{LABEL_KIND_CLUSTER}={cluster}"),
                format!("{LABEL_KIND_ROLE}=control-plane"),
                format!("{LABEL_LINEAGE}={lineage}"),
            ])
            .await?;
        let mut out: Vec<haproxy::Backend> = list
            .iter()
            .filter_map(|c| {
                let name = summary_name(c);
                if Some(name.as_str()) == without {
                    return None;
                }
                let ip = c
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref())
                    .and_then(|n| {
                        n.values()
                            .find_map(|e| e.ip_address.clone().filter(|s| !s.is_empty()))
                    })
                    .unwrap_or_default();
                Some(haproxy::Backend {
                    name,
                    address: ip,
                    weight: 100,
                })
            })
            .filter(|b| !b.address.is_empty())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if out.len() > 1 {
            for b in out.iter_mut() {
                if Some(b.name.as_str()) == drain {
                    b.weight = 0;
                }
            }
        }
        Ok(out)
    }

    /// Rewrite the LB's configuration from the current control-plane
    /// containers and reload it. No LB container: nothing to do.
    async fn reconfigure_lb(
        &self,
        cluster: &str,
        lineage: &str,
        drain: Option<&str>,
        without: Option<&str>,
    ) -> Result<(), ProviderError> {
        let _g = self.lb_lock.lock().await;
        let name = lb_name(cluster);
        let Some(c) = self.inspect(&name).await? else {
            return Ok(());
        };
        let port: u16 = c
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get("capi.x-k8s.io/port"))
            .and_then(|p| p.parse().ok())
            .unwrap_or(haproxy::BACKEND_PORT);
        let backends = self.backends(cluster, lineage, drain, without).await?;
        let cfg = haproxy::render(port, &backends, false);
        self.upload(
            &name,
            &[(haproxy::CONFIG_PATH.to_string(), cfg.as_bytes(), 0o644)],
        )
        .await?;
        let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
        if running {
            self.sighup(&name).await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ machines

    async fn create_machine(
        &self,
        input: &OpInput<'_>,
        m: &MachineSpec,
    ) -> Result<Observed, ProviderError> {
        let cluster = &input.cluster.name;
        let name = container_name(cluster, &m.name);
        let network = network_of(input);
        let spec = &m.infra.spec;
        let custom = spec.get("customImage").and_then(Value::as_str);
        let image = image::node_image(&m.version, custom);
        let opts = &m.infra.options;
        let existing = self.inspect(&name).await?;
        match &existing {
            Some(c) => {
                check_owner(
                    c.config.as_ref().and_then(|c| c.labels.as_ref()),
                    input,
                    &name,
                )?;
            }
            None => {
                self.ensure_image(&image).await?;
                let mut labels = base_labels(input, "machine");
                labels.insert(LABEL_IDENTITY.into(), m.identity.clone());
                labels.insert(LABEL_KIND_CLUSTER.into(), cluster.clone());
                labels.insert(LABEL_KIND_ROLE.into(), m.role.as_str().into());
                if let Some(fd) = &m.failure_domain {
                    labels.insert(LABEL_FAILURE_DOMAIN.into(), fd.clone());
                }
                let mut mounts = Vec::new();
                if opts.get(OPT_VAR_VOLUME).map(String::as_str) != Some("false") {
                    let vol = format!("{name}-var");
                    let mut vl = base_labels(input, "volume");
                    vl.insert(LABEL_KIND_CLUSTER.into(), cluster.clone());
                    self.docker
                        .create_volume(VolumeCreateRequest {
                            name: Some(vol.clone()),
                            labels: Some(vl.into_iter().collect()),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| engine_err(&format!("creating volume {vol}"), e))?;
                    mounts.push(Mount {
                        typ: Some(MountType::VOLUME),
                        source: Some(vol),
                        target: Some("/var".into()),
                        ..Default::default()
                    });
                }
                for em in spec
                    .get("extraMounts")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    mounts.push(Mount {
                        typ: Some(MountType::BIND),
                        source: em
                            .get("hostPath")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        target: em
                            .get("containerPath")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        read_only: em.get("readOnly").and_then(Value::as_bool),
                        ..Default::default()
                    });
                }
                let privileged = opts
                    .get(OPT_PRIVILEGED)
                    .map(|v| v.trim() != "false")
                    .unwrap_or(true);
                let security_opt: Vec<String> = match opts.get(OPT_SECURITY_OPT) {
                    Some(v) => v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    None => vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()],
                };
                let tmpfs: HashMap<String, String> = match opts.get(OPT_TMPFS) {
                    Some(v) => v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|p| (p.to_string(), String::new()))
                        .collect(),
                    None => HashMap::from([
                        ("/tmp".into(), String::new()),
                        ("/run".into(), String::new()),
                    ]),
                };
                let mut env = Vec::new();
                let mut port_bindings = HashMap::new();
                let mut exposed = Vec::new();
                if m.role == Role::ControlPlane {
                    env.push("KUBECONFIG=/etc/kubernetes/admin.conf".to_string());
                    if opts.get(OPT_PUBLISH).map(String::as_str) != Some("false") {
                        exposed.push("6443/tcp".to_string());
                        port_bindings.insert(
                            "6443/tcp".to_string(),
                            Some(vec![PortBinding {
                                host_ip: Some("127.0.0.1".into()),
                                host_port: Some(String::new()),
                            }]),
                        );
                    }
                }
                let body = ContainerCreateBody {
                    image: Some(image.clone()),
                    hostname: Some(name.clone()),
                    labels: Some(labels.into_iter().collect()),
                    tty: Some(true),
                    env: Some(env),
                    exposed_ports: (!exposed.is_empty()).then_some(exposed),
                    host_config: Some(HostConfig {
                        privileged: Some(privileged),
                        security_opt: Some(security_opt),
                        tmpfs: Some(tmpfs),
                        mounts: Some(mounts),
                        network_mode: Some(network.clone()),
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
                            network.clone(),
                            EndpointSettings {
                                aliases: Some(vec![name.clone()]),
                                ..Default::default()
                            },
                        )])),
                    }),
                    ..Default::default()
                };
                match self
                    .docker
                    .create_container(
                        Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                        body,
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        let err = engine_err(&format!("creating container {name}"), e);
                        let _ = self.remove_volume(&format!("{name}-var")).await;
                        return Err(err);
                    }
                }
                self.maybe_crash("create", &self.creates);
            }
        }
        // Start (again) when not running.
        let c = self.inspect(&name).await?.ok_or_else(|| {
            ProviderError::Failed(format!("container {name} vanished after create"))
        })?;
        if c.state.as_ref().and_then(|s| s.running) != Some(true) {
            self.docker
                .start_container(&name, None::<StartContainerOptions>)
                .await
                .map_err(|e| {
                    let privileged = c.host_config.as_ref().and_then(|h| h.privileged) == Some(true);
                    match engine_err(&format!("starting container {name}"), e) {
                        ProviderError::Failed(m) if privileged => ProviderError::Failed(format!(
                            "{m} (the container is privileged, as CAPD makes it; if this engine refuses privileged containers, use an image that runs unprivileged and set CAPI_DOCKER_PRIVILEGED=false or the annotation {OPT_PRIVILEGED}: \"false\")"
                        )),
                        other => other,
                    }
                })?;
        }
        let c = self.inspect(&name).await?.ok_or_else(|| {
            ProviderError::Failed(format!("container {name} vanished after start"))
        })?;
        let mut observed = machine_observed(&c, &name, &network, &image);
        if m.role == Role::ControlPlane {
            self.reconfigure_lb(cluster, input.lineage, None, None)
                .await?;
        }
        let timeout = Duration::from_secs(
            spec.get("bootstrapTimeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(300),
        );
        match tokio::time::timeout(timeout, self.bootstrap(input, &name, &mut observed)).await {
            Ok(r) => r?,
            Err(_) => {
                observed.insert("bootstrap".into(), json!("failed"));
                return Err(ProviderError::Bootstrap {
                    command: "(bootstrap)".into(),
                    exit_code: -1,
                    output_tail: format!(
                        "bootstrap did not finish within {}s (bootstrapTimeout)",
                        timeout.as_secs()
                    ),
                    observed,
                });
            }
        }
        observed.insert("ready".into(), json!(true));
        let wait = opts
            .get(OPT_NODE_READY_TIMEOUT)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        observed.insert(
            "node".into(),
            json!(self.node_status(cluster, input.lineage, &name, wait).await),
        );
        self.maybe_crash("ready", &self.readies);
        Ok(observed)
    }

    /// Execute the cloud-config as CAPD does, unless it already ran here.
    async fn bootstrap(
        &self,
        input: &OpInput<'_>,
        name: &str,
        observed: &mut Observed,
    ) -> Result<(), ProviderError> {
        let r = input.redactor;
        let doc = input.bootstrap.unwrap_or_default();
        let acts = cloudinit::actions(doc).map_err(|e| ProviderError::Failed(r.redact(&e)))?;
        if !acts.ignored_modules.is_empty() {
            observed.insert(
                "ignored_cloud_config_modules".into(),
                json!(acts.ignored_modules),
            );
        }
        // Never twice: a machine whose bootstrap started (capi's or CAPD's
        // marker) and did not succeed is unusable and will be replaced.
        let (code, _) = self
            .exec(name, &Self::sh(&format!(
                "if [ -f {SUCCESS_SENTINEL} ] || [ -f {PERSISTENT_MARKERS}/succeeded ]; then exit 10; \
                 elif [ -f {} ] || [ -f {PERSISTENT_MARKERS}/started ]; then exit 11; fi; \
                 mkdir -p /run/cluster-api {STAGING} {PERSISTENT_MARKERS} && echo started > {} && echo started > {PERSISTENT_MARKERS}/started",
                cloudinit::STARTED_SENTINEL,
                cloudinit::STARTED_SENTINEL
            )))
            .await?;
        match code {
            10 => {
                observed.insert("bootstrap".into(), json!("succeeded"));
                observed.insert("adopted".into(), json!(true));
                return Ok(());
            }
            11 => {
                observed.insert("bootstrap".into(), json!("failed"));
                return Err(ProviderError::Bootstrap {
                    command: "(interrupted)".into(),
                    exit_code: -1,
                    output_tail:
                        "bootstrap was interrupted earlier and is never run twice on one machine"
                            .into(),
                    observed: observed.clone(),
                });
            }
            0 => {}
            other => {
                return Err(ProviderError::Failed(format!(
                "cannot prepare bootstrap in {name} (exit {other}); does the image have /bin/sh?"
            )))
            }
        }
        let fail = |observed: &mut Observed, command: String, exit_code: i64, out: &str| {
            observed.insert("bootstrap".into(), json!("failed"));
            observed.insert("failed_command".into(), json!(command));
            ProviderError::Bootstrap {
                command,
                exit_code,
                output_tail: r.redact(&tail(out, 20)),
                observed: observed.clone(),
            }
        };
        // Consecutive write_files entries go in one upload (to the staging
        // directory) and one exec that moves each into place, in order.
        let mut commands: Vec<Value> = Vec::new();
        let mut i = 0;
        while i < acts.actions.len() {
            let mut writes = Vec::new();
            while let Some(Action::Write(f)) = acts.actions.get(i) {
                writes.push(f);
                i += 1;
            }
            if !writes.is_empty() {
                let staged: Vec<String> = writes.iter().map(|_| self.stage_name()).collect();
                let files: Vec<(String, &[u8], u32)> = writes
                    .iter()
                    .zip(&staged)
                    .map(|(f, st)| (st.clone(), f.content.as_slice(), 0o600))
                    .collect();
                self.upload(name, &files).await?;
                let (script, args) = write_script(&writes, &staged);
                let mut cmd = vec!["/bin/sh".into(), "-c".into(), script, "sh".into()];
                cmd.extend(args);
                let (code, out) = self.exec(name, &cmd).await?;
                if code != 0 {
                    let failed = out
                        .lines()
                        .rev()
                        .find_map(|l| l.strip_prefix("capi: write_files "))
                        .and_then(|l| l.strip_suffix(" failed"))
                        .unwrap_or("(one of the files)")
                        .to_string();
                    for f in &writes {
                        commands.push(json!(format!("write_files {}", f.path)));
                        if f.path == failed {
                            break;
                        }
                    }
                    observed.insert("commands".into(), json!(commands));
                    return Err(fail(
                        observed,
                        r.redact(&format!("write_files {failed}")),
                        code,
                        &out,
                    ));
                }
                commands.extend(
                    writes
                        .iter()
                        .map(|f| json!(format!("write_files {}", f.path))),
                );
                continue;
            }
            if let Some(Action::Run(cmd)) = acts.actions.get(i) {
                let cmd = cloudinit::capd_command(cmd);
                let shown = r.redact(&cmd.join(" "));
                commands.push(json!(shown));
                let (code, out) = self.exec(name, &cmd).await?;
                if code != 0 {
                    observed.insert("commands".into(), json!(commands));
                    return Err(fail(observed, shown, code, &out));
                }
            }
            i += 1;
        }
        observed.insert("commands".into(), json!(commands));
        let (code, _) = self
            .exec(
                name,
                &Self::sh(&format!(
                    "test -f {SUCCESS_SENTINEL} && echo success > {PERSISTENT_MARKERS}/succeeded"
                )),
            )
            .await?;
        if code != 0 {
            return Err(fail(
                observed,
                "(bootstrap)".into(),
                1,
                &format!("every command succeeded but the sentinel {SUCCESS_SENTINEL} is missing"),
            ));
        }
        observed.insert("bootstrap".into(), json!("succeeded"));
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<(), ProviderError> {
        match self
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            Err(e) => Err(engine_err(&format!("removing volume {name}"), e)),
        }
    }

    async fn remove_container(&self, name: &str) -> Result<(), ProviderError> {
        match self
            .docker
            .remove_container(
                name,
                Some(
                    RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            Err(e) => Err(engine_err(&format!("removing container {name}"), e)),
        }
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
        let Ok(list) = self
            .list_containers(&[
                format!("{LABEL_KIND_CLUSTER}={cluster}"),
                format!("{LABEL_KIND_ROLE}=control-plane"),
                format!("{LABEL_LINEAGE}={lineage}"),
            ])
            .await
        else {
            return "unknown".into();
        };
        let Some(cp) = list.iter().find(|c| summary_state(c) == "running") else {
            return "unknown (no running control-plane machine)".into();
        };
        let cp = summary_name(cp);
        let script = "command -v kubectl >/dev/null 2>&1 && [ -f /etc/kubernetes/admin.conf ] || exit 42; \
            kubectl --kubeconfig /etc/kubernetes/admin.conf get node \"$1\" -o 'jsonpath={.status.conditions[?(@.type==\"Ready\")].status}'";
        let deadline = std::time::Instant::now() + Duration::from_secs(wait_secs);
        loop {
            let r = self
                .exec(
                    &cp,
                    &[
                        "/bin/sh".into(),
                        "-c".into(),
                        script.into(),
                        "sh".into(),
                        node.into(),
                    ],
                )
                .await;
            let status = match r {
                Ok((42, _)) => {
                    return "not checked (no kubectl or admin.conf in the control-plane container)"
                        .into()
                }
                Ok((0, out)) if out.trim() == "True" => return "Ready".into(),
                Ok((0, out)) => format!("NotReady ({})", out.trim()),
                Ok((_, _)) => "not registered".to_string(),
                Err(_) => "unknown".to_string(),
            };
            if std::time::Instant::now() >= deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Register the bootstrap token through a bootstrapped control-plane
    /// machine (`kubeadm token create`); the token travels as a file, never
    /// on a command line.
    async fn register_token(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        let (token, expires) = input
            .token
            .ok_or_else(|| ProviderError::Failed("no token to register".into()))?;
        let cluster = &input.cluster.name;
        let list = self
            .list_containers(&[
                format!("{LABEL_KIND_CLUSTER}={cluster}"),
                format!("{LABEL_KIND_ROLE}=control-plane"),
                format!("{LABEL_LINEAGE}={}", input.lineage),
            ])
            .await?;
        let ttl = (expires - crate::util::time::now_unix()).max(60);
        let mut last = format!(
            "no running control-plane machine in {cluster} to register the bootstrap token with"
        );
        for c in list.iter().filter(|c| summary_state(c) == "running") {
            let name = summary_name(c);
            let staged = self.stage_name();
            self.upload(&name, &[(staged.clone(), token.as_bytes(), 0o600)])
                .await?;
            let script = format!(
                "test -f {SUCCESS_SENTINEL} || {{ echo 'not bootstrapped'; rm -f \"$1\"; exit 3; }}; kubeadm token create \"$(cat \"$1\")\" --ttl {ttl}s --description 'capi bootstrap token'; rc=$?; rm -f \"$1\"; exit $rc"
            );
            let (code, out) = self
                .exec(
                    &name,
                    &["/bin/sh".into(), "-c".into(), script, "sh".into(), staged],
                )
                .await?;
            if code == 0 {
                return Ok(BTreeMap::from([("registered_with".into(), json!(name))]));
            }
            last = format!(
                "registering the bootstrap token with {name} failed (exit {code}): {}",
                input.redactor.redact(&tail(&out, 5))
            );
        }
        Err(ProviderError::Failed(last))
    }
}

// ------------------------------------------------------------ pure helpers

/// CAPD's container name: `<cluster>-<machine>`, or the machine name when it
/// already starts with the cluster name.
pub(crate) fn container_name(cluster: &str, machine: &str) -> String {
    if machine.starts_with(cluster) {
        machine.to_string()
    } else {
        format!("{cluster}-{machine}")
    }
}

pub(crate) fn lb_name(cluster: &str) -> String {
    format!("{cluster}-lb")
}

fn network_of(input: &OpInput<'_>) -> String {
    match input
        .dep(crate::resource::ResourceKind::Network)
        .map(|r| &r.attributes)
    {
        Some(Spec::Network(n)) => n.name.clone(),
        _ => "kind".into(),
    }
}

fn base_labels(input: &OpInput<'_>, kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_LINEAGE.to_string(), input.lineage.to_string()),
        (LABEL_ADDRESS.to_string(), input.address.to_string()),
        (
            LABEL_CLUSTER.to_string(),
            input.address.cluster_key().to_string(),
        ),
        (LABEL_TYPE.to_string(), kind.to_string()),
    ])
}

fn check_owner(
    labels: Option<&HashMap<String, String>>,
    input: &OpInput<'_>,
    name: &str,
) -> Result<(), ProviderError> {
    let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    match (get(LABEL_LINEAGE), get(LABEL_ADDRESS)) {
        (Some(l), Some(a)) if l == input.lineage && a == input.address.as_str() => Ok(()),
        (l, a) => Err(ProviderError::Conflict(format!(
            "container {name} already exists and is not {} of this state (lineage {}, address {}); remove it (docker rm -f {name}) or use another cluster name",
            input.address,
            l.unwrap_or("none"),
            a.unwrap_or("none")
        ))),
    }
}

fn container_ip(c: &bollard::models::ContainerInspectResponse, network: &str) -> String {
    c.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(network))
        .and_then(|e| e.ip_address.clone())
        .unwrap_or_default()
}

fn machine_observed(
    c: &bollard::models::ContainerInspectResponse,
    name: &str,
    network: &str,
    image: &str,
) -> Observed {
    let api_port = c
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .and_then(|p| p.get("6443/tcp").cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()));
    let mut o = BTreeMap::from([
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
    if let Some(p) = api_port {
        o.insert("api_server_host_port".into(), json!(p));
    }
    o
}

fn summary_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

fn summary_state(c: &ContainerSummary) -> String {
    c.state.map(|s| s.to_string()).unwrap_or_default()
}

/// The shell script that moves staged files into place as CAPD writes them
/// (`mkdir -p`, `cat >`/`>>`, `chmod` unless 0644, `chown` unless root),
/// stopping at the first failure; paths travel as arguments.
fn write_script(writes: &[&cloudinit::FileWrite], staged: &[String]) -> (String, Vec<String>) {
    let mut script = String::new();
    let mut args = Vec::new();
    for (k, (f, st)) in writes.iter().zip(staged).enumerate() {
        let (s_arg, p_arg) = (2 * k + 1, 2 * k + 2);
        args.push(st.clone());
        args.push(f.path.clone());
        let mut step = format!(
            "mkdir -p \"$(dirname \"${{{p_arg}}}\")\" && cat \"${{{s_arg}}}\" {} \"${{{p_arg}}}\" && rm -f \"${{{s_arg}}}\"",
            if f.append { ">>" } else { ">" }
        );
        let perm = f
            .permissions
            .as_deref()
            .map(|p| p.trim().trim_matches('\''))
            .unwrap_or("0644");
        if perm != "0644" && perm != "644" {
            step.push_str(&format!(" && chmod {} \"${{{p_arg}}}\"", shell_quote(perm)));
        }
        if let Some(o) = f
            .owner
            .as_deref()
            .map(str::trim)
            .filter(|o| *o != "root:root" && *o != "root" && !o.is_empty())
        {
            step.push_str(&format!(" && chown {} \"${{{p_arg}}}\"", shell_quote(o)));
        }
        script.push_str(&format!(
            "{{ {step}; }} || {{ echo \"capi: write_files ${{{p_arg}}} failed\" >&2; exit 1; }}\n"
        ));
    }
    (script, args)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_404(e: &bollard::errors::Error) -> bool {
    status_of(e) == Some(404)
}

fn engine_err(what: &str, e: bollard::errors::Error) -> ProviderError {
    match &e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            ProviderError::Failed(format!("{what}: {message}"))
        }
        _ => ProviderError::Failed(format!("{what}: {}", root_cause(&e))),
    }
}

#[async_trait]
impl Provider for DockerProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Docker
    }

    async fn create(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        match input.spec {
            Spec::Network(n) => self.create_network(input, n).await,
            Spec::Loadbalancer(l) => self.create_lb(input, l).await,
            Spec::Machine(m) => self.create_machine(input, m).await,
            Spec::Token(_) => self.register_token(input).await,
            Spec::Pki(_) | Spec::Bootstrap(_) => Err(ProviderError::Failed(
                "local resource sent to the Docker provider".into(),
            )),
        }
    }

    async fn update(
        &self,
        input: &OpInput<'_>,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        match input.spec {
            Spec::Token(_) => self.register_token(input).await,
            Spec::Machine(m) => {
                // Machine labels and annotations live in capi's state only;
                // container labels are immutable.
                let name = container_name(&input.cluster.name, &m.name);
                match self.inspect(&name).await? {
                    Some(_) => Ok(current.observed.clone()),
                    None => Err(ProviderError::Failed(format!(
                        "container {name} no longer exists"
                    ))),
                }
            }
            _ => Ok(current.observed.clone()),
        }
    }

    async fn delete(
        &self,
        r: &Resource,
        lineage: &str,
        _redactor: &Redactor,
    ) -> Result<(), ProviderError> {
        let cluster = r.address.cluster_name().to_string();
        match &r.attributes {
            Spec::Network(n) => self.delete_network(&n.name).await,
            Spec::Loadbalancer(_) => self.remove_container(&lb_name(&cluster)).await,
            Spec::Token(_) | Spec::Pki(_) | Spec::Bootstrap(_) => Ok(()),
            Spec::Machine(m) => {
                let name = r
                    .observed
                    .get("container")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| container_name(&cluster, &m.name));
                if m.role == Role::ControlPlane {
                    // Drain first: weight 0 and a reload.
                    self.reconfigure_lb(&cluster, lineage, Some(&name), None)
                        .await?;
                }
                self.remove_container(&name).await?;
                self.remove_volume(&format!("{name}-var")).await?;
                if m.role == Role::ControlPlane {
                    self.reconfigure_lb(&cluster, lineage, None, Some(&name))
                        .await?;
                }
                Ok(())
            }
        }
    }

    async fn refresh(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        // One list call per type.
        let containers = if resources
            .iter()
            .any(|r| matches!(r.attributes, Spec::Machine(_) | Spec::Loadbalancer(_)))
        {
            self.list_containers(&[format!("{LABEL_LINEAGE}={lineage}")])
                .await?
        } else {
            Vec::new()
        };
        let networks = if resources
            .iter()
            .any(|r| matches!(r.attributes, Spec::Network(_)))
        {
            self.docker
                .list_networks(None::<ListNetworksOptions>)
                .await
                .map_err(|e| engine_err("listing networks", e))?
        } else {
            Vec::new()
        };
        let by_address: HashMap<String, &ContainerSummary> = containers
            .iter()
            .filter_map(|c| Some((c.labels.as_ref()?.get(LABEL_ADDRESS)?.clone(), c)))
            .collect();
        let mut out = Vec::new();
        for r in resources {
            let observation = match &r.attributes {
                Spec::Network(n) => (!networks
                    .iter()
                    .any(|x| x.name.as_deref() == Some(n.name.as_str())))
                .then_some(Observation::Missing),
                Spec::Loadbalancer(_) | Spec::Machine(_) => {
                    match by_address.get(r.address.as_str()) {
                        None => Some(Observation::Missing),
                        Some(c) => {
                            let state = summary_state(c);
                            if state != "running" {
                                Some(Observation::Stopped(if state.is_empty() {
                                    "unknown".into()
                                } else {
                                    state
                                }))
                            } else {
                                let mut diffs = Vec::new();
                                if let Some(img) = r.observed.get("image").and_then(Value::as_str) {
                                    let actual = c.image.clone().unwrap_or_default();
                                    if actual != img {
                                        diffs.push(AttributeChange {
                                            path: "image".into(),
                                            before: Some(json!(img)),
                                            after: Some(json!(actual)),
                                        });
                                    }
                                }
                                if let Spec::Machine(m) = &r.attributes {
                                    let labels = c.labels.clone().unwrap_or_default();
                                    if labels.get(LABEL_IDENTITY) != Some(&m.identity) {
                                        diffs.push(AttributeChange {
                                            path: format!("labels.{LABEL_IDENTITY}"),
                                            before: Some(json!(m.identity)),
                                            after: labels.get(LABEL_IDENTITY).map(|v| json!(v)),
                                        });
                                    }
                                    let role =
                                        labels.get(LABEL_KIND_ROLE).cloned().unwrap_or_default();
                                    if role != m.role.as_str() {
                                        diffs.push(AttributeChange {
                                            path: format!("labels.{LABEL_KIND_ROLE}"),
                                            before: Some(json!(m.role.as_str())),
                                            after: Some(json!(role)),
                                        });
                                    }
                                }
                                if let Some(id) = r.observed.get("id").and_then(Value::as_str) {
                                    let actual = c.id.clone().unwrap_or_default();
                                    if !id.is_empty() && actual != id {
                                        diffs.push(AttributeChange {
                                            path: "id".into(),
                                            before: Some(json!(id)),
                                            after: Some(json!(actual)),
                                        });
                                    }
                                }
                                (!diffs.is_empty()).then_some(Observation::Changed(diffs))
                            }
                        }
                    }
                }
                _ => None,
            };
            out.push(Refreshed {
                address: r.address.clone(),
                observation,
            });
        }
        Ok(out)
    }

    async fn unmanaged(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError> {
        let known: std::collections::BTreeSet<&str> =
            known.iter().map(|r| r.address.as_str()).collect();
        let list = self
            .list_containers(&[format!("{LABEL_LINEAGE}={lineage}")])
            .await?;
        Ok(list
            .iter()
            .filter_map(|c| {
                let a = c.labels.as_ref()?.get(LABEL_ADDRESS)?.clone();
                let address = Address::parse(&a).ok()?;
                (!known.contains(a.as_str())).then(|| Unmanaged {
                    detail: format!(
                        "container {} ({}) carries this state's labels but is not in the state",
                        summary_name(c),
                        summary_state(c)
                    ),
                    address,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            container_name("dev", "dev-md-0-abcde-0"),
            "dev-md-0-abcde-0"
        );
        assert_eq!(container_name("dev", "worker-1"), "dev-worker-1");
        assert_eq!(lb_name("dev"), "dev-lb");
    }

    #[test]
    fn write_script_moves_each_file_in_order() {
        let a = cloudinit::FileWrite {
            path: "/etc/a b".into(),
            content: b"x".to_vec(),
            permissions: Some("'0600'".into()),
            owner: Some("nobody:nogroup".into()),
            append: false,
        };
        let b = cloudinit::FileWrite {
            path: "/run/b".into(),
            content: b"y".to_vec(),
            permissions: None,
            owner: Some("root:root".into()),
            append: true,
        };
        let (script, args) = write_script(&[&a, &b], &["/s/1".into(), "/s/2".into()]);
        assert_eq!(args, vec!["/s/1", "/etc/a b", "/s/2", "/run/b"]);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("cat \"${1}\" > \"${2}\""), "{script}");
        assert!(
            lines[0].contains("chmod '0600' \"${2}\"")
                && lines[0].contains("chown 'nobody:nogroup' \"${2}\"")
        );
        assert!(
            lines[1].contains("cat \"${3}\" >> \"${4}\"")
                && !lines[1].contains("chmod")
                && !lines[1].contains("chown")
        );
        assert!(lines[1].ends_with("|| { echo \"capi: write_files ${4} failed\" >&2; exit 1; }"));
        assert!(
            !script.contains("/etc/a b"),
            "paths are arguments, not script text"
        );
    }
}
