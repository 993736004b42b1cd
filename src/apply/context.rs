//! What every step of one apply shares: the state journal, the connected
//! providers, the manifests' Secrets, the plan's bootstrap documents, the
//! redactor (which learns the secrets generated during the run), the health
//! gates and the progress channel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::provider::{Provider, Redactor};
use crate::resource::ProviderKind;
use crate::state::{Journal, StateKey};

use super::error::StepError;
use super::{health, Event, ManifestSecrets};

/// Where progress events go (nowhere without a reporter).
#[derive(Clone, Default)]
pub(crate) struct Events(Option<mpsc::UnboundedSender<Event>>);

impl Events {
    pub(crate) fn new(tx: Option<mpsc::UnboundedSender<Event>>) -> Events {
        Events(tx)
    }

    /// Send an event; a reporter that went away is not an error.
    pub(crate) fn emit(&self, e: Event) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(e);
        }
    }
}

pub(crate) struct Ctx {
    pub(crate) journal: Journal,
    pub(crate) providers: BTreeMap<ProviderKind, Arc<dyn Provider>>,
    pub(crate) secrets: ManifestSecrets,
    /// The plan's bootstrap documents, by SHA-256.
    pub(crate) documents: Arc<BTreeMap<String, String>>,
    pub(crate) redactor: RwLock<Redactor>,
    pub(crate) health: Option<health::HealthCheck>,
    /// Machines whose health check had not passed when the run started (a
    /// failed or interrupted earlier run): with `--health-check`, each is
    /// checked again, and must pass, before another machine of its cluster
    /// is created or deleted.
    pub(crate) earlier_unchecked: std::collections::BTreeSet<crate::resource::Address>,
    /// A fixed clock (`CAPI_NOW`) for what apply records.
    pub(crate) clock: Option<i64>,
    pub(crate) gates: health::Gates,
    pub(crate) events: Events,
    /// Admin kubeconfigs for health checks, written on first use.
    pub(crate) kubeconfigs: tokio::sync::Mutex<BTreeMap<String, PathBuf>>,
    pub(crate) scratch: tempfile::TempDir,
    /// The state key: sensitive values are read and written through it.
    pub(crate) key: Option<Arc<StateKey>>,
}

impl Ctx {
    pub(crate) fn provider(&self, kind: ProviderKind) -> Result<&Arc<dyn Provider>, StepError> {
        self.providers.get(&kind).ok_or(StepError::NoProvider(kind))
    }

    /// Now, by the run's clock.
    pub(crate) fn now(&self) -> i64 {
        self.clock.unwrap_or_else(crate::util::time::now_unix)
    }

    pub(crate) fn redact(&self, s: &str) -> String {
        self.redactor.read().unwrap().redact(s)
    }

    /// A copy of the redactor as it is now, for a provider call.
    pub(crate) fn redactor(&self) -> Redactor {
        self.redactor.read().unwrap().clone()
    }

    /// Secrets generated during the run (keys, tokens) to hide from now on.
    pub(crate) fn add_secrets(&self, values: impl IntoIterator<Item = String>) {
        self.redactor.write().unwrap().add(values);
    }
}
