//! The Docker provider's only contact with the engine: every `bollard` call
//! lives here, each turning the engine's answers into what the rooms need
//! (`None` for a 404, `Ok` for "already there" where that is harmless) and
//! its errors into [`ProviderError`]s that say what was being done.
//!
//! The rooms (network, load balancer, machine, bootstrap, refresh) build the
//! request bodies and decide; this file talks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ExecConfig, Network,
    NetworkCreateRequest, NetworkInspect, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    InspectNetworkOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptions, RemoveContainerOptionsBuilder, RemoveVolumeOptions, StartContainerOptions,
    UploadToContainerOptionsBuilder,
};
use bollard::{body_full, Docker};
use futures::StreamExt;

use super::DockerSettings;
use crate::provider::ProviderError;

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where files are staged (in the container's writable layer) before they
/// are moved into place; tmpfs mounts cannot receive archive uploads.
const STAGING: &str = "/.capi-staging";

/// A connected engine.
pub(crate) struct Engine {
    docker: Docker,
    /// Numbers the staged files of this process.
    staged: AtomicU64,
}

fn describe_host(settings: &DockerSettings) -> String {
    settings
        .host
        .clone()
        .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"))
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

/// `/bin/sh -c <script> sh <args>...`: the arguments are `$1`, `$2`... in
/// the script, never part of its text.
pub(super) fn sh_args(script: &str, args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut cmd = vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into()];
    cmd.extend(args);
    cmd
}

impl Engine {
    /// Connect to the engine named by `DOCKER_HOST` (or the default socket)
    /// and negotiate the API version.
    pub(crate) async fn connect(settings: &DockerSettings) -> Result<Engine, ProviderError> {
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
        Ok(Engine {
            docker,
            staged: AtomicU64::new(0),
        })
    }

    // ------------------------------------------------------------ containers

    /// Containers (running or not) carrying every label (`key=value`).
    pub(super) async fn list_containers(
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

    /// `None` when there is no such container.
    pub(super) async fn inspect(
        &self,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, ProviderError> {
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

    /// Create a container. `Ok(false)`: the name is taken, and `taken_ok`
    /// said that is for the caller to judge; otherwise a taken name is an
    /// error like any other.
    pub(super) async fn create_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
        taken_ok: bool,
    ) -> Result<bool, ProviderError> {
        match self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(name).build()),
                body,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if taken_ok && status_of(&e) == Some(409) => Ok(false),
            Err(e) => Err(engine_err(&format!("creating container {name}"), e)),
        }
    }

    /// Start a container. `Ok(false)`: it was already running.
    pub(super) async fn start_container(&self, name: &str) -> Result<bool, ProviderError> {
        // A published port is an ephemeral host port the engine picks; a
        // process outside Docker may hold the one it picked ("address already
        // in use"). Starting again makes the engine pick the next one.
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            match self
                .docker
                .start_container(name, None::<StartContainerOptions>)
                .await
            {
                Ok(()) => return Ok(true),
                Err(e) if status_of(&e) == Some(304) => return Ok(false),
                Err(e)
                    if attempt < ATTEMPTS && e.to_string().contains("address already in use") =>
                {
                    tracing::debug!("starting container {name}: {e}; starting it again");
                    attempt += 1;
                }
                Err(e) => return Err(engine_err(&format!("starting container {name}"), e)),
            }
        }
    }

    /// Remove a container and its anonymous volumes; gone already is fine.
    pub(super) async fn remove_container(&self, name: &str) -> Result<(), ProviderError> {
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

    /// Make a container's process reread its configuration.
    pub(super) async fn sighup(&self, name: &str) -> Result<(), ProviderError> {
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

    /// Make sure an image is on the engine: pull it when missing.
    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), ProviderError> {
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

    // ------------------------------------------------------------ exec and files

    /// Run a command in a container; returns (exit code, combined output).
    pub(super) async fn exec(
        &self,
        container: &str,
        cmd: &[String],
    ) -> Result<(i64, String), ProviderError> {
        let failed = |e| engine_err(&format!("exec in {container}"), e);
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
            .map_err(failed)?
            .id;
        let mut out = String::new();
        match self
            .docker
            .start_exec(&id, None::<StartExecOptions>)
            .await
            .map_err(failed)?
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
                        Err(e) => return Err(failed(e)),
                    }
                }
            }
            StartExecResults::Detached => {}
        }
        for _ in 0..200 {
            let i = self.docker.inspect_exec(&id).await.map_err(failed)?;
            if i.running != Some(true) {
                return Ok((i.exit_code.unwrap_or(-1), out));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok((-1, out))
    }

    /// Upload files as one tar to `/` of a container.
    pub(super) async fn upload(
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

    /// A fresh path under [`STAGING`] for one staged file.
    pub(super) fn stage_name(&self) -> String {
        format!(
            "{STAGING}/{}-{}",
            std::process::id(),
            self.staged.fetch_add(1, Ordering::SeqCst)
        )
    }

    // ------------------------------------------------------------ networks and volumes

    /// `None` when there is no such network.
    pub(super) async fn inspect_network(
        &self,
        name: &str,
    ) -> Result<Option<NetworkInspect>, ProviderError> {
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(x) => Ok(Some(x)),
            Err(e) if is_404(&e) => Ok(None),
            Err(e) => Err(engine_err(&format!("inspecting network {name}"), e)),
        }
    }

    /// Create a network; one that another process (or cluster) created
    /// meanwhile is fine.
    pub(super) async fn create_network(
        &self,
        request: NetworkCreateRequest,
    ) -> Result<(), ProviderError> {
        let name = request.name.clone();
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(engine_err(&format!("creating network {name}"), e)),
        }
    }

    /// Remove a network. Gone already is fine, and so is one that something
    /// attached to since it was inspected (it stays).
    pub(super) async fn remove_network(&self, name: &str) -> Result<(), ProviderError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            Err(e) if status_of(&e) == Some(403) || status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(engine_err(&format!("removing network {name}"), e)),
        }
    }

    pub(super) async fn list_networks(&self) -> Result<Vec<Network>, ProviderError> {
        self.docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| engine_err("listing networks", e))
    }

    pub(super) async fn create_volume(
        &self,
        request: VolumeCreateRequest,
    ) -> Result<(), ProviderError> {
        let name = request.name.clone().unwrap_or_default();
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| engine_err(&format!("creating volume {name}"), e))
    }

    /// Remove a volume; gone already is fine.
    pub(super) async fn remove_volume(&self, name: &str) -> Result<(), ProviderError> {
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
}

// ------------------------------------------------------------ reading answers

/// A container's name as a list call gives it (without the leading `/`).
pub(super) fn summary_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

/// A container's state as a list call gives it (`running`, `exited`...).
pub(super) fn summary_state(c: &ContainerSummary) -> String {
    c.state.map(|s| s.to_string()).unwrap_or_default()
}

/// A container's address on a network; empty when it has none.
pub(super) fn container_ip(c: &ContainerInspectResponse, network: &str) -> String {
    c.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(network))
        .and_then(|e| e.ip_address.clone())
        .unwrap_or_default()
}

/// The host port a container port (`6443/tcp`) is published on.
pub(super) fn host_port(c: &ContainerInspectResponse, port: &str) -> Option<String> {
    c.network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .and_then(|p| p.get(port).cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
}

/// A container's labels as an inspect gives them.
pub(super) fn labels_of(c: &ContainerInspectResponse) -> Option<&HashMap<String, String>> {
    c.config.as_ref().and_then(|c| c.labels.as_ref())
}
