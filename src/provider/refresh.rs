//! Refresh: ask each provider to read back what the state knows (one batched
//! call per provider, providers in parallel) and turn the answers into
//! observations for the planner and drift entries for people.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;

use super::{Provider, ProviderError};
use crate::resource::{Address, AttributeChange, DriftEntry, DriftKind, Observation, ProviderKind};
use crate::state::{State, Status};

#[derive(Debug, Default, Clone)]
pub(crate) struct Refresh {
    pub(crate) observations: BTreeMap<Address, Observation>,
    pub(crate) drift: Vec<DriftEntry>,
    /// Per provider: resources read and time taken.
    pub(crate) stats: Vec<(ProviderKind, usize, std::time::Duration)>,
}

/// Provider kinds that hold something in this state.
pub(crate) fn providers_in(state: &State) -> BTreeSet<ProviderKind> {
    state
        .resources
        .iter()
        .map(|r| r.provider)
        .filter(|p| *p != ProviderKind::Local)
        .collect()
}

pub(crate) async fn refresh(
    state: &State,
    providers: &BTreeMap<ProviderKind, Arc<dyn Provider>>,
) -> Result<Refresh, ProviderError> {
    // The providers read back concurrently, borrowing the state (no copy of
    // its resources: at 100,000 machines a copy was most of a plan's memory).
    let lineage = state.lineage.as_str();
    let tasks = providers.iter().map(|(kind, p)| async move {
        let start = std::time::Instant::now();
        let refs: Vec<&crate::state::Resource> = state
            .resources
            .iter()
            .filter(|r| r.provider == *kind && r.status != Status::Deleting)
            .filter(|r| super::refreshable(r.kind))
            .map(|r| &**r)
            .collect();
        let refreshed = p.refresh(&refs, lineage).await?;
        let known: Vec<&crate::state::Resource> = state
            .resources
            .iter()
            .filter(|r| r.provider == *kind)
            .map(|r| &**r)
            .collect();
        let unmanaged = if lineage.is_empty() {
            Vec::new()
        } else {
            p.unmanaged(&known, lineage).await?
        };
        Ok::<_, ProviderError>((*kind, refs.len(), start.elapsed(), refreshed, unmanaged))
    });
    let results = futures::future::join_all(tasks).await;
    let mut out = Refresh::default();
    for result in results {
        let (kind, n, elapsed, refreshed, unmanaged) = result?;
        out.stats.push((kind, n, elapsed));
        for r in refreshed {
            let Some(obs) = r.observation else { continue };
            let (kind, detail, attributes) = match &obs {
                Observation::Missing => (
                    DriftKind::Missing,
                    "no longer exists at the provider".to_string(),
                    vec![],
                ),
                Observation::Stopped(s) => (
                    DriftKind::Stopped,
                    format!("is {s}"),
                    vec![AttributeChange {
                        path: "status".into(),
                        before: Some(json!("running")),
                        after: Some(json!(s)),
                    }],
                ),
                Observation::Changed(a) => (
                    DriftKind::Changed,
                    "attributes differ from what capi created".to_string(),
                    a.clone(),
                ),
            };
            out.drift.push(DriftEntry {
                address: r.address.clone(),
                kind,
                detail,
                attributes,
            });
            out.observations.insert(r.address, obs);
        }
        for u in unmanaged {
            out.drift.push(DriftEntry {
                address: u.address,
                kind: DriftKind::Unmanaged,
                detail: u.detail,
                attributes: vec![],
            });
        }
    }
    out.drift.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(out)
}
