//! The cluster network: a bridge network (`kind` unless the manifests name
//! another), shared by every cluster on it. capi creates it with its labels
//! when it is missing and removes it only when capi created it and nothing
//! is attached to it any more.

use std::collections::BTreeMap;

use bollard::models::{NetworkCreateRequest, NetworkInspect};
use serde_json::json;

use super::{base_labels, DockerProvider, LABEL_CLUSTER};
use crate::provider::{Observed, OpInput, ProviderError};
use crate::resource::NetworkSpec;

/// The label that says capi created a network (and may remove it).
const LABEL_MANAGED: &str = "capi.x-k8s.io/managed";

fn created_by_capi(net: &NetworkInspect) -> bool {
    net.labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED))
        .map(String::as_str)
        == Some("true")
}

impl DockerProvider {
    /// Use the network when it exists, else create it.
    pub(super) async fn create_network(
        &self,
        input: &OpInput<'_>,
        n: &NetworkSpec,
    ) -> Result<Observed, ProviderError> {
        let net = match self.engine.inspect_network(&n.name).await? {
            Some(x) => x,
            None => {
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
                self.engine.inspect_network(&n.name).await?.ok_or_else(|| {
                    ProviderError::Failed(format!(
                        "inspecting network {}: it vanished after its creation",
                        n.name
                    ))
                })?
            }
        };
        let subnet = net
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.subnet.clone())
            .unwrap_or_default();
        Ok(BTreeMap::from([
            ("name".into(), json!(n.name)),
            ("id".into(), json!(net.id.clone().unwrap_or_default())),
            ("subnet".into(), json!(subnet)),
            ("created_by_capi".into(), json!(created_by_capi(&net))),
        ]))
    }

    /// Remove the network when capi created it and nothing uses it.
    pub(super) async fn delete_network(&self, name: &str) -> Result<(), ProviderError> {
        let Some(net) = self.engine.inspect_network(name).await? else {
            return Ok(());
        };
        let in_use = net.containers.as_ref().is_some_and(|c| !c.is_empty());
        if !created_by_capi(&net) || in_use {
            // Shared: another cluster or a foreign container uses it, or
            // capi did not create it.
            return Ok(());
        }
        self.engine.remove_network(name).await
    }
}
