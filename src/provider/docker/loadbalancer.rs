//! The API server endpoint: the `<cluster>-lb` container running haproxy, as
//! CAPD runs it. Its configuration (rendered by [`super::haproxy`]) lists the
//! control-plane containers; it is rewritten and haproxy sent SIGHUP whenever
//! that set changes (a control-plane machine created, drained or removed).

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use serde_json::{json, Value};

use super::engine::{container_ip, host_port, labels_of, summary_name};
use super::{
    base_labels, check_owner, haproxy, image, lb_name, network_of, DockerProvider,
    LABEL_KIND_CLUSTER, LABEL_KIND_ROLE,
};
use crate::provider::{Observed, OpInput, ProviderError, LABEL_LINEAGE};
use crate::resource::LoadBalancerSpec;

/// The label recording the endpoint port on the container.
const LABEL_PORT: &str = "capi.x-k8s.io/port";
/// haproxy's statistics port, published like CAPD's.
const STATS_PORT: &str = "8404/tcp";

/// Any free port on every host address.
fn published() -> Option<Vec<PortBinding>> {
    Some(vec![PortBinding {
        host_ip: Some("0.0.0.0".into()),
        host_port: Some(String::new()),
    }])
}

/// The load-balancer container: the endpoint and statistics ports published,
/// restarted once on failure, on the cluster network.
fn lb_container(
    name: &str,
    image: &str,
    network: &str,
    port: u16,
    labels: BTreeMap<String, String>,
) -> ContainerCreateBody {
    let endpoint = format!("{port}/tcp");
    ContainerCreateBody {
        image: Some(image.to_string()),
        hostname: Some(name.to_string()),
        labels: Some(labels.into_iter().collect()),
        exposed_ports: Some(vec![endpoint.clone(), STATS_PORT.into()]),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_string()),
            port_bindings: Some(HashMap::from([
                (endpoint, published()),
                (STATS_PORT.to_string(), published()),
            ])),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(1),
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_string(),
                EndpointSettings::default(),
            )])),
        }),
        ..Default::default()
    }
}

impl DockerProvider {
    /// Create (or adopt) the load-balancer container, configure it with the
    /// control-plane machines that exist, start it.
    pub(super) async fn create_lb(
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
        match self.engine.inspect(&name).await? {
            Some(c) => check_owner(labels_of(&c), input, &name)?,
            None => {
                self.engine.ensure_image(&image).await?;
                let mut labels = base_labels(input, "loadbalancer");
                labels.insert(LABEL_KIND_CLUSTER.into(), cluster.clone());
                labels.insert(LABEL_KIND_ROLE.into(), "external-load-balancer".into());
                labels.insert(LABEL_PORT.into(), l.port.to_string());
                // By id: Docker refuses an ambiguous network name.
                let network_id = self.network_id(&network).await?;
                let body = lb_container(&name, &image, &network_id, l.port, labels);
                if !self.engine.create_container(&name, body, true).await? {
                    let c = self.engine.inspect(&name).await?;
                    check_owner(c.as_ref().and_then(labels_of), input, &name)?;
                }
            }
        }
        // The configuration goes in before haproxy starts: no servers yet,
        // or the control-plane machines that already exist (adoption).
        let backends = self.backends(cluster, input.lineage, None, None).await?;
        self.write_lb_config(&name, l.port, &backends).await?;
        if !self.engine.start_container(&name).await? {
            // Already running (adopted): make it read the configuration.
            self.engine.sighup(&name).await?;
        }
        let c = self.engine.inspect(&name).await?.ok_or_else(|| {
            ProviderError::Failed(format!("container {name} vanished after start"))
        })?;
        let ip = container_ip(&c, &network);
        if ip.is_empty() {
            return Err(ProviderError::Failed(format!(
                "the load balancer {name} has no address on network {network}"
            )));
        }
        let host_port = host_port(&c, &format!("{}/tcp", l.port)).unwrap_or_default();
        let endpoint = l
            .fixed_endpoint
            .clone()
            .unwrap_or_else(|| format!("{}:{}", ip, l.port));
        Ok(Observed::from([
            ("container".into(), json!(name)),
            ("id".into(), json!(c.id.unwrap_or_default())),
            ("image".into(), json!(image)),
            ("ip".into(), json!(ip)),
            ("endpoint".into(), json!(endpoint)),
            ("host_port".into(), json!(host_port)),
        ]))
    }

    pub(super) async fn delete_lb(
        &self,
        r: &crate::state::Resource,
        cluster: &str,
        lineage: &str,
    ) -> Result<(), ProviderError> {
        let name = lb_name(cluster);
        if !self.removable(&name, r, lineage).await? {
            return Ok(());
        }
        self.engine.remove_container(&name).await
    }

    async fn write_lb_config(
        &self,
        name: &str,
        port: u16,
        backends: &[haproxy::Backend],
    ) -> Result<(), ProviderError> {
        let cfg = haproxy::render(port, backends, false);
        self.engine
            .upload(
                name,
                &[(haproxy::CONFIG_PATH.to_string(), cfg.as_bytes(), 0o644)],
            )
            .await
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
        let list = self.control_planes(cluster, lineage).await?;
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

    /// The control-plane containers of a cluster in this state, running or
    /// not.
    pub(super) async fn control_planes(
        &self,
        cluster: &str,
        lineage: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, ProviderError> {
        self.engine
            .list_containers(&[
                format!("{LABEL_KIND_CLUSTER}={cluster}"),
                format!("{LABEL_KIND_ROLE}=control-plane"),
                format!("{LABEL_LINEAGE}={lineage}"),
            ])
            .await
    }

    /// Rewrite the LB's configuration from the current control-plane
    /// containers and reload it. No LB container: nothing to do.
    pub(super) async fn reconfigure_lb(
        &self,
        cluster: &str,
        lineage: &str,
        drain: Option<&str>,
        without: Option<&str>,
    ) -> Result<(), ProviderError> {
        let _g = self.lb_lock.lock().await;
        let name = lb_name(cluster);
        let Some(c) = self.engine.inspect(&name).await? else {
            return Ok(());
        };
        let port: u16 = labels_of(&c)
            .and_then(|l| l.get(LABEL_PORT))
            .and_then(|p| p.parse().ok())
            .unwrap_or(haproxy::BACKEND_PORT);
        let backends = self.backends(cluster, lineage, drain, without).await?;
        self.write_lb_config(&name, port, &backends).await?;
        let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
        if running {
            self.engine.sighup(&name).await?;
        }
        Ok(())
    }
}
