//! The cluster network: a bridge network (`kind` unless the manifests name
//! another), shared by every cluster on it. capi creates it with its labels
//! when it is missing and removes it only when capi created it and nothing
//! is attached to it any more.
//!
//! Docker allows several networks with one name, and then refuses every call
//! that names it ("network kind is ambiguous"), starting a container on it
//! included. So capi creates a network at most once per process (clusters
//! sharing it in one apply wait for each other) and works with a network's
//! id: among networks of one name it uses the one with capi's label, else
//! the oldest, removes the unused duplicates (a duplicate in use is an error
//! naming it) and records what it did (`note`) in the state.

use bollard::models::{Network, NetworkCreateRequest, NetworkInspect};
use serde_json::json;

use super::{base_labels, DockerProvider, LABEL_CLUSTER};
use crate::provider::{Observed, OpInput, ProviderError};
use crate::resource::NetworkSpec;

/// The label that says capi created a network (and may remove it).
const LABEL_MANAGED: &str = "capi.x-k8s.io/managed";

fn labelled_by_capi(labels: Option<&std::collections::HashMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(LABEL_MANAGED))
        .map(String::as_str)
        == Some("true")
}

fn created_by_capi(net: &NetworkInspect) -> bool {
    labelled_by_capi(net.labels.as_ref())
}

/// The network capi uses among several of one name: capi's (labelled), else
/// the oldest; ties by id, so every run picks the same one.
fn preferred(nets: &[Network]) -> Option<&Network> {
    nets.iter().min_by(|a, b| {
        (!labelled_by_capi(a.labels.as_ref()), &a.created, &a.id).cmp(&(
            !labelled_by_capi(b.labels.as_ref()),
            &b.created,
            &b.id,
        ))
    })
}

/// What to record when the name was ambiguous.
fn duplicates_note(name: &str, count: usize, chosen: &Network, removed: &[String]) -> String {
    format!(
        "{count} networks were named {name}; capi uses {} ({}) and removed the unused duplicate(s) {} (Docker cannot start a container on an ambiguous network name)",
        short_id(chosen.id.as_deref().unwrap_or("")),
        if labelled_by_capi(chosen.labels.as_ref()) {
            "the one with capi's label"
        } else {
            "the oldest"
        },
        removed.join(", ")
    )
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl DockerProvider {
    /// Every network named exactly `name` (Docker's name filter matches
    /// substrings).
    async fn networks_named(&self, name: &str) -> Result<Vec<Network>, ProviderError> {
        Ok(self
            .engine
            .list_networks()
            .await?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect())
    }

    /// The id of the network capi uses for `name` (see [`preferred`]), or
    /// the name itself when there is none (the engine then says so).
    pub(super) async fn network_id(&self, name: &str) -> Result<String, ProviderError> {
        let nets = self.networks_named(name).await?;
        Ok(preferred(&nets)
            .and_then(|n| n.id.clone())
            .unwrap_or_else(|| name.to_string()))
    }

    /// Use the network when it exists (adopt it), else create it. One
    /// create at a time in this process: two clusters sharing the network
    /// in one apply create it once.
    pub(super) async fn create_network(
        &self,
        input: &OpInput<'_>,
        n: &NetworkSpec,
    ) -> Result<Observed, ProviderError> {
        let _guard = self.network_lock.lock().await;
        let mut nets = self.networks_named(&n.name).await?;
        if nets.is_empty() {
            let mut labels = base_labels(input, "network");
            labels.remove(LABEL_CLUSTER);
            labels.insert(LABEL_MANAGED.into(), "true".into());
            self.engine
                .create_network(NetworkCreateRequest {
                    name: n.name.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(labels.into_iter().collect()),
                    ..Default::default()
                })
                .await?;
            nets = self.networks_named(&n.name).await?;
        }
        let chosen = preferred(&nets).ok_or_else(|| {
            ProviderError::Failed(format!(
                "inspecting network {}: it vanished after its creation",
                n.name
            ))
        })?;
        let id = chosen.id.clone().unwrap_or_default();
        let note = if nets.len() > 1 {
            let removed = self.remove_duplicates(&n.name, &nets, &id).await?;
            Some(duplicates_note(&n.name, nets.len(), chosen, &removed))
        } else {
            None
        };
        let net = self.engine.inspect_network(&id).await?.ok_or_else(|| {
            ProviderError::Failed(format!("inspecting network {} ({id}): it vanished", n.name))
        })?;
        let subnet = net
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.subnet.clone())
            .unwrap_or_default();
        let mut observed = Observed::from([
            ("name".into(), json!(n.name)),
            ("id".into(), json!(id)),
            ("subnet".into(), json!(subnet)),
            ("created_by_capi".into(), json!(created_by_capi(&net))),
        ]);
        if let Some(note) = note {
            tracing::warn!("{note}");
            observed.insert("note".into(), json!(note));
        }
        Ok(observed)
    }

    /// Docker refuses to start a container on a network name that several
    /// networks share, so the duplicates of `keep` go when nothing uses
    /// them. One in use cannot be removed by capi: that is an error saying
    /// which networks and how to resolve it. Returns the removed ids.
    async fn remove_duplicates(
        &self,
        name: &str,
        nets: &[Network],
        keep: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let mut removed = Vec::new();
        for other in nets
            .iter()
            .filter_map(|n| n.id.as_deref())
            .filter(|id| *id != keep)
        {
            let Some(net) = self.engine.inspect_network(other).await? else {
                continue;
            };
            if net.containers.as_ref().is_some_and(|c| !c.is_empty()) {
                return Err(ProviderError::Failed(format!(
                    "{} networks are named {name} and {} (not the one capi uses, {}) has containers attached; Docker cannot start containers on an ambiguous network name. Move or remove those containers and run `docker network rm {}`, then apply again",
                    nets.len(),
                    short_id(other),
                    short_id(keep),
                    short_id(other)
                )));
            }
            self.engine.remove_network(other).await?;
            removed.push(short_id(other).to_string());
        }
        Ok(removed)
    }

    /// Remove the networks of this name that capi created and nothing uses
    /// (duplicates included: destroy must never be stuck on an ambiguous
    /// name). Others stay: another cluster or a foreign container uses them,
    /// or capi did not create them.
    pub(super) async fn delete_network(&self, name: &str) -> Result<(), ProviderError> {
        let _guard = self.network_lock.lock().await;
        for n in self.networks_named(name).await? {
            let Some(id) = n.id else { continue };
            let Some(net) = self.engine.inspect_network(&id).await? else {
                continue;
            };
            let in_use = net.containers.as_ref().is_some_and(|c| !c.is_empty());
            if created_by_capi(&net) && !in_use {
                self.engine.remove_network(&id).await?;
            }
        }
        Ok(())
    }
}
