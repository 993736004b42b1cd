//! Reading a state's Docker resources back: one list call for the
//! containers carrying the state's lineage label, one for the networks,
//! whatever the number of resources; each resource is then compared with
//! what capi recorded (gone, not running, another image, id or identity).
//! Containers with this state's labels that the state does not know are
//! reported as unmanaged (a create interrupted before the state write).

use std::collections::{BTreeSet, HashMap};

use bollard::models::ContainerSummary;
use serde_json::{json, Value};

use super::engine::{summary_name, summary_state};
use super::{DockerProvider, LABEL_KIND_ROLE};
use crate::provider::{
    ProviderError, Refreshed, Unmanaged, LABEL_ADDRESS, LABEL_IDENTITY, LABEL_LINEAGE,
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
