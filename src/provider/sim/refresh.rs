//! Reading the simulated resources back: each record compared with the
//! state (gone, stopped, a bootstrap that never finished, another version,
//! identity or address), and machine records carrying this state's lineage
//! that the state does not know. Each record is read once per refresh: the
//! search for unknown machines takes the records the read-back just read.

use std::collections::BTreeSet;

use serde_json::json;

use super::store::{read_json, SimLoadBalancer, SimMachine, SimNetwork};
use super::SimProvider;
use crate::provider::{
    ProviderError, Refreshed, Unmanaged, LABEL_ADDRESS, LABEL_IDENTITY, LABEL_LINEAGE,
};
use crate::resource::{Address, AttributeChange, MachineSpec, Observation, Spec};
use crate::state::Resource;

/// A running machine record compared with the state.
fn machine_changes(r: &Resource, m: &MachineSpec, sm: &SimMachine) -> Option<Observation> {
    let mut diffs = Vec::new();
    if sm.version != m.version.to_string() {
        diffs.push(AttributeChange {
            path: "version".into(),
            before: Some(json!(m.version)),
            after: Some(json!(sm.version)),
        });
    }
    if sm.labels.get(LABEL_IDENTITY) != Some(&m.identity) {
        diffs.push(AttributeChange {
            path: format!("labels.{LABEL_IDENTITY}"),
            before: Some(json!(m.identity)),
            after: sm.labels.get(LABEL_IDENTITY).map(|v| json!(v)),
        });
    }
    if let Some(ip) = r.observed.get("ip") {
        if ip != &json!(sm.ip) {
            diffs.push(AttributeChange {
                path: "ip".into(),
                before: Some(ip.clone()),
                after: Some(json!(sm.ip)),
            });
        }
    }
    (!diffs.is_empty()).then_some(Observation::Changed(diffs))
}

impl SimProvider {
    fn observe(&self, r: &Resource) -> Result<Option<Observation>, ProviderError> {
        let cluster = r.address.cluster_key();
        Ok(match &r.attributes {
            Spec::Network(_) => read_json::<SimNetwork>(&self.network_path(cluster))?
                .is_none()
                .then_some(Observation::Missing),
            Spec::Loadbalancer(_) => read_json::<SimLoadBalancer>(&self.lb_path(cluster))?
                .is_none()
                .then_some(Observation::Missing),
            Spec::Machine(m) => {
                let path = self.machine_path(cluster, &m.name);
                let Some(sm) = read_json::<SimMachine>(&path)? else {
                    return Ok(Some(Observation::Missing));
                };
                let observation = if sm.status != "running" && sm.status != "provisioning" {
                    Some(Observation::Stopped(sm.status.clone()))
                } else if sm.bootstrap.started && !sm.bootstrap.succeeded {
                    Some(Observation::Stopped("unusable: its bootstrap was interrupted or failed, and bootstrap never runs twice".into()))
                } else {
                    machine_changes(r, m, &sm)
                };
                self.refreshed.lock().unwrap().insert(path, sm);
                observation
            }
            _ => None,
        })
    }

    /// Refresh: each resource's record compared with the state.
    pub(super) fn read_back(
        &self,
        resources: &[&Resource],
    ) -> Result<Vec<Refreshed>, ProviderError> {
        resources
            .iter()
            .map(|r| {
                Ok(Refreshed {
                    address: r.address.clone(),
                    observation: self.observe(r)?,
                })
            })
            .collect()
    }

    /// Machine records with this state's lineage the state does not know.
    pub(super) fn unknown_machines(&self, known: &[&Resource], lineage: &str) -> Vec<Unmanaged> {
        let known: BTreeSet<&str> = known.iter().map(|r| r.address.as_str()).collect();
        let mut already_read = std::mem::take(&mut *self.refreshed.lock().unwrap());
        self.machines_read_once(None, &mut already_read)
            .into_iter()
            .filter(|m| m.labels.get(LABEL_LINEAGE).map(String::as_str) == Some(lineage))
            .filter_map(|m| {
                let a = m.labels.get(LABEL_ADDRESS)?.clone();
                let address = Address::parse(&a).ok()?;
                (!known.contains(a.as_str())).then(|| Unmanaged {
                    address,
                    detail: format!(
                        "simulated machine {} ({}) carries this state's labels but is not in the state",
                        m.name, m.ip
                    ),
                })
            })
            .collect()
    }
}
