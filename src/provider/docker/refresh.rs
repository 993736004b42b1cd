//! Reading a state's Docker resources back: one list call for the
//! containers carrying the state's lineage label, one for the networks,
//! whatever the number of resources; each resource is then compared with
//! what capi recorded (gone, not running, another image, id or identity).
//! Containers with this state's labels that the state does not know are
//! reported as unmanaged (a create interrupted before the state write).
//! `capi import` finds a container (load balancer, machine) or a network by
//! its id or name here, with one inspect call.

use std::collections::{BTreeSet, HashMap};

use bollard::models::ContainerSummary;
use serde_json::{json, Value};

use super::engine::{labels_of, summary_name, summary_state};
use super::{container_name, lb_name, DockerProvider, LABEL_KIND_ROLE};
use crate::provider::{
    Found, OpInput, ProviderError, Refreshed, Unmanaged, LABEL_ADDRESS, LABEL_IDENTITY,
    LABEL_LINEAGE,
};
use crate::resource::{Address, AttributeChange, Observation, Spec};
use crate::state::Resource;

/// A recorded value that now differs.
fn change(path: impl Into<String>, before: Value, after: Option<Value>) -> AttributeChange {
    AttributeChange {
        path: path.into(),
        before: Some(before),
        after,
    }
}

/// A load balancer's or machine's container compared with the state.
fn container_observation(r: &Resource, c: &ContainerSummary) -> Option<Observation> {
    let state = summary_state(c);
    if state != "running" {
        return Some(Observation::Stopped(if state.is_empty() {
            "unknown".into()
        } else {
            state
        }));
    }
    let mut diffs = Vec::new();
    if let Some(img) = r.observed.get("image").and_then(Value::as_str) {
        let actual = c.image.clone().unwrap_or_default();
        if actual != img {
            diffs.push(change("image", json!(img), Some(json!(actual))));
        }
    }
    if let Spec::Machine(m) = &r.attributes {
        let labels = c.labels.clone().unwrap_or_default();
        if labels.get(LABEL_IDENTITY) != Some(&m.identity) {
            diffs.push(change(
                format!("labels.{LABEL_IDENTITY}"),
                json!(m.identity),
                labels.get(LABEL_IDENTITY).map(|v| json!(v)),
            ));
        }
        let role = labels.get(LABEL_KIND_ROLE).cloned().unwrap_or_default();
        if role != m.role.as_str() {
            diffs.push(change(
                format!("labels.{LABEL_KIND_ROLE}"),
                json!(m.role.as_str()),
                Some(json!(role)),
            ));
        }
    }
    if let Some(id) = r.observed.get("id").and_then(Value::as_str) {
        let actual = c.id.clone().unwrap_or_default();
        if !id.is_empty() && actual != id {
            diffs.push(change("id", json!(id), Some(json!(actual))));
        }
    }
    (!diffs.is_empty()).then_some(Observation::Changed(diffs))
}

impl DockerProvider {
    /// The containers carrying this state's lineage label.
    async fn state_containers(
        &self,
        lineage: &str,
    ) -> Result<Vec<ContainerSummary>, ProviderError> {
        self.engine
            .list_containers(&[format!("{LABEL_LINEAGE}={lineage}")])
            .await
    }

    /// Refresh: compare each resource with what the engine has.
    pub(super) async fn read_back(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        // One list call per type.
        let containers = if resources
            .iter()
            .any(|r| matches!(r.attributes, Spec::Machine(_) | Spec::Loadbalancer(_)))
        {
            self.state_containers(lineage).await?
        } else {
            Vec::new()
        };
        let networks = if resources
            .iter()
            .any(|r| matches!(r.attributes, Spec::Network(_)))
        {
            self.engine.list_networks().await?
        } else {
            Vec::new()
        };
        let by_address: HashMap<String, &ContainerSummary> = containers
            .iter()
            .filter_map(|c| Some((c.labels.as_ref()?.get(LABEL_ADDRESS)?.clone(), c)))
            .collect();
        let observe = |r: &Resource| match &r.attributes {
            Spec::Network(n) => (!networks
                .iter()
                .any(|x| x.name.as_deref() == Some(n.name.as_str())))
            .then_some(Observation::Missing),
            Spec::Loadbalancer(_) | Spec::Machine(_) => match by_address.get(r.address.as_str()) {
                None => Some(Observation::Missing),
                Some(c) => container_observation(r, c),
            },
            _ => None,
        };
        Ok(resources
            .iter()
            .map(|r| Refreshed {
                address: r.address.clone(),
                observation: observe(r),
            })
            .collect())
    }

    /// Containers with this state's labels that the state does not know.
    pub(super) async fn unknown_containers(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError> {
        let known: BTreeSet<&str> = known.iter().map(|r| r.address.as_str()).collect();
        let list = self.state_containers(lineage).await?;
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

/// The first 12 characters of an id, as `docker ps` shows it.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// capi's labels on an object.
fn label(labels: Option<&HashMap<String, String>>, key: &str) -> Option<String> {
    labels.and_then(|l| l.get(key)).cloned()
}

impl DockerProvider {
    /// `capi import`: the container (load balancer, machine) or network of
    /// `input`'s kind with this id or name.
    pub(super) async fn find_object(
        &self,
        input: &OpInput<'_>,
        id: &str,
    ) -> Result<Found, ProviderError> {
        let cluster = &input.cluster.name;
        let want = match input.spec {
            Spec::Network(n) => return self.find_network(input, &n.name, id).await,
            Spec::Machine(m) => container_name(cluster, &m.name),
            Spec::Loadbalancer(_) => lb_name(cluster),
            _ => {
                return Err(ProviderError::Failed(format!(
                    "{} is not a Docker object: nothing to look up",
                    input.address
                )))
            }
        };
        let c = self.engine.inspect(id).await?.ok_or_else(|| {
            ProviderError::NotFound(format!(
                "no Docker container has the id or name {id:?} (looked for the container of {}, which capi names {want}; see `docker ps -a`)",
                input.address
            ))
        })?;
        let name = c
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let cid = c.id.clone().unwrap_or_default();
        let labels = labels_of(&c);
        Ok(Found {
            description: format!("container {name} ({})", short(&cid)),
            lineage: label(labels, LABEL_LINEAGE),
            address: label(labels, LABEL_ADDRESS),
            identity: label(labels, LABEL_IDENTITY),
            not_adoptable: (name != want).then(|| {
                format!(
                    "it is named {name}, and the create of {} looks for the container {want}: rename it (`docker rename {name} {want}`) and import it again",
                    input.address
                )
            }),
            observed: crate::provider::Observed::from([
                ("container".into(), json!(name)),
                ("id".into(), json!(cid)),
            ]),
            id: cid,
        })
    }

    /// A network by id or name.
    async fn find_network(
        &self,
        input: &OpInput<'_>,
        want: &str,
        id: &str,
    ) -> Result<Found, ProviderError> {
        let net = self.engine.inspect_network(id).await?.ok_or_else(|| {
            ProviderError::NotFound(format!(
                "no Docker network has the id or name {id:?} (looked for the network of {}, named {want} in the manifests; see `docker network ls`)",
                input.address
            ))
        })?;
        let name = net.name.clone().unwrap_or_default();
        let nid = net.id.clone().unwrap_or_default();
        let labels = net.labels.as_ref();
        Ok(Found {
            description: format!("network {name} ({})", short(&nid)),
            lineage: label(labels, LABEL_LINEAGE),
            address: label(labels, LABEL_ADDRESS),
            identity: None,
            not_adoptable: (name != want).then(|| {
                format!(
                    "it is named {name}, and the manifests name the network of {} {want}",
                    input.address
                )
            }),
            observed: crate::provider::Observed::from([
                ("name".into(), json!(name)),
                ("id".into(), json!(nid)),
            ]),
            id: nid,
        })
    }
}
