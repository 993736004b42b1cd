//! Reading the simulated resources back: each record compared with the
//! state (gone, stopped, a bootstrap that never finished, another version,
//! identity or address), and machine records carrying this state's lineage
//! that the state does not know. Each machine log is read once per refresh:
//! the search for unknown machines takes the records the read-back just read.
//! `capi import` finds a record by id or name here: a machine by its name
//! or provider id, a network by its name, a load balancer by its address
//! or its cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::machines::MachineView;
use super::store::{read_json, SimLoadBalancer, SimMachine, SimNetwork};
use super::SimProvider;
use crate::provider::{
    Found, OpInput, ProviderError, Refreshed, Unmanaged, LABEL_ADDRESS, LABEL_IDENTITY,
    LABEL_LINEAGE,
};
use crate::resource::{Address, AttributeChange, MachineSpec, Observation, Spec};
use crate::state::Resource;

/// A running machine record compared with the state.
fn machine_changes(r: &Resource, m: &MachineSpec, sm: &MachineView) -> Option<Observation> {
    let mut diffs = Vec::new();
    if *sm.version != m.version.to_string() {
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

/// Machine records read during one refresh, by cluster and name.
type ReadLogs = HashMap<String, BTreeMap<String, MachineView>>;

impl SimProvider {
    /// A record of another state where this one's was (the two states'
    /// simulators share a directory) is this state's object missing.
    fn observe(
        &self,
        r: &Resource,
        lineage: &str,
        logs: &mut ReadLogs,
    ) -> Result<Option<Observation>, ProviderError> {
        let cluster = r.address.cluster_key();
        let ours = |labels: &BTreeMap<String, String>| Self::owned_by(labels, lineage);
        Ok(match &r.attributes {
            Spec::Network(_) => read_json::<SimNetwork>(&self.network_path(cluster))?
                .is_none_or(|n| !ours(&n.labels))
                .then_some(Observation::Missing),
            Spec::Loadbalancer(_) => read_json::<SimLoadBalancer>(&self.lb_path(cluster))?
                .is_none_or(|lb| !ours(&lb.labels))
                .then_some(Observation::Missing),
            Spec::Machine(m) => {
                if !logs.contains_key(cluster) {
                    logs.insert(cluster.to_string(), self.cluster_machines(cluster)?);
                }
                let Some(sm) = logs[cluster]
                    .get(&m.name)
                    .filter(|sm| sm.labels.get(LABEL_LINEAGE).is_some_and(|l| l == lineage))
                else {
                    return Ok(Some(Observation::Missing));
                };
                if sm.status.as_str() != "running" && sm.status.as_str() != "provisioning" {
                    Some(Observation::Stopped(sm.status.to_string()))
                } else if sm.bootstrap.started && !sm.bootstrap.succeeded {
                    Some(Observation::Stopped("unusable: its bootstrap was interrupted or failed, and bootstrap never runs twice".into()))
                } else {
                    machine_changes(r, m, sm)
                }
            }
            _ => None,
        })
    }

    /// Refresh: each resource's record compared with the state.
    pub(super) fn read_back(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        // What was read ahead (every cluster's log, while the state
        // loaded); a log that could not be read then is read again here, and
        // its error reported.
        let mut logs = std::mem::take(&mut *self.read_ahead.lock().unwrap());
        let out = resources
            .iter()
            .map(|r| {
                Ok(Refreshed {
                    address: r.address.clone(),
                    observation: self.observe(r, lineage, &mut logs)?,
                })
            })
            .collect();
        *self.refreshed.lock().unwrap() = logs;
        out
    }

    /// Every cluster's machine log, parsed, for the refresh that follows.
    pub(super) fn read_logs_ahead(&self) {
        let logs: ReadLogs = self
            .machine_clusters()
            .into_iter()
            .filter_map(|c| Some((c.clone(), self.cluster_machines(&c).ok()?)))
            .collect();
        *self.read_ahead.lock().unwrap() = logs;
    }

    /// Machine records with this state's lineage the state does not know.
    pub(super) fn unknown_machines(&self, known: &[&Resource], lineage: &str) -> Vec<Unmanaged> {
        let known: BTreeSet<&str> = known.iter().map(|r| r.address.as_str()).collect();
        let mut already_read = std::mem::take(&mut *self.refreshed.lock().unwrap());
        self.machine_clusters()
            .into_iter()
            .flat_map(|c| match already_read.remove(&c) {
                Some(records) => records,
                None => self.cluster_machines::<MachineView>(&c).unwrap_or_default(),
            })
            .map(|(_, m)| m)
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

/// A found record's labels, as [`Found`] carries them.
fn found(
    description: String,
    id: String,
    labels: &BTreeMap<String, String>,
    not_adoptable: Option<String>,
    observed: crate::provider::Observed,
) -> Found {
    Found {
        description,
        id,
        lineage: labels.get(LABEL_LINEAGE).cloned(),
        address: labels.get(LABEL_ADDRESS).cloned(),
        identity: labels.get(LABEL_IDENTITY).cloned(),
        not_adoptable,
        observed,
    }
}

/// Exactly one record matched, or a clear error.
fn one<T>(mut hits: Vec<(PathBuf, T)>, what: &str, id: &str) -> Result<(PathBuf, T), String> {
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(format!("no simulated {what} has the id or name {id:?}")),
        n => Err(format!(
            "{n} simulated {what}s match {id:?} ({}); name one by its id",
            hits.iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The JSON records directly in `dir`, sorted.
fn records_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

impl SimProvider {
    /// `capi import`: the record of `input`'s kind with this id or name.
    pub(super) fn find_record(
        &self,
        input: &OpInput<'_>,
        id: &str,
    ) -> Result<Found, ProviderError> {
        let cluster = input.address.cluster_key();
        let elsewhere = |path: &Path, want: &Path| {
            (path != want).then(|| {
                format!(
                    "it is recorded at {}, and the create of {} looks at {}",
                    path.display(),
                    input.address,
                    want.display()
                )
            })
        };
        let r = match input.spec {
            Spec::Machine(m) => {
                let mut hits = Vec::new();
                for c in self.machine_clusters() {
                    let path = self.machine_log_path(&c);
                    for sm in self.cluster_machines::<SimMachine>(&c)?.into_values() {
                        if sm.name == id || sm.provider_id == id {
                            hits.push((path.clone(), sm));
                        }
                    }
                }
                one(hits, "machine", id).map(|(path, sm)| {
                    let interrupted = (sm.bootstrap.started && !sm.bootstrap.succeeded).then(|| {
                        format!("its bootstrap was interrupted or failed and never runs twice, so apply could not use it; delete its line from {} and let capi apply create {}", path.display(), input.address)
                    });
                    let observed = crate::provider::Observed::from([
                        ("provider_id".into(), json!(sm.provider_id)),
                        ("ip".into(), json!(sm.ip)),
                    ]);
                    let want = self.machine_log_path(cluster);
                    let moved = (sm.name != m.name || path != want).then(|| {
                        format!(
                            "it is recorded as {} in {}, and the create of {} looks for {} in {}",
                            sm.name,
                            path.display(),
                            input.address,
                            m.name,
                            want.display()
                        )
                    });
                    found(
                        format!("simulated machine {} ({})", sm.name, sm.ip),
                        sm.provider_id.clone(),
                        &sm.labels,
                        moved.or(interrupted),
                        observed,
                    )
                })
            }
            Spec::Network(_) => {
                let hits = records_in(&self.dir.join("networks"))
                    .into_iter()
                    .filter_map(|f| Some((f.clone(), read_json::<SimNetwork>(&f).ok()??)))
                    .filter(|(_, n)| n.name == id)
                    .collect();
                one(hits, "network", id).map(|(path, n)| {
                    let observed = crate::provider::Observed::from([
                        ("name".into(), json!(n.name)),
                        ("cidr".into(), json!(n.cidr)),
                    ]);
                    found(
                        format!("simulated network {} ({})", n.name, n.cidr),
                        n.name.clone(),
                        &n.labels,
                        elsewhere(&path, &self.network_path(cluster)),
                        observed,
                    )
                })
            }
            Spec::Loadbalancer(_) => {
                let hits = records_in(&self.dir.join("loadbalancers"))
                    .into_iter()
                    .filter_map(|f| Some((f.clone(), read_json::<SimLoadBalancer>(&f).ok()??)))
                    .filter(|(_, l)| l.ip == id || l.cluster == id)
                    .collect();
                one(hits, "load balancer", id).map(|(path, l)| {
                    found(
                        format!("simulated load balancer of {} ({})", l.cluster, l.ip),
                        l.ip.clone(),
                        &l.labels,
                        elsewhere(&path, &self.lb_path(cluster)),
                        crate::provider::Observed::from([("ip".into(), json!(l.ip))]),
                    )
                })
            }
            _ => {
                return Err(ProviderError::Failed(format!(
                    "{} is not something the simulator holds: nothing to look up",
                    input.address
                )))
            }
        };
        r.map_err(|e| ProviderError::NotFound(format!("{e} (in {})", self.dir.display())))
    }
}
