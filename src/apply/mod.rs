//! The executor: runs a plan's steps on tokio, each as soon as the steps it
//! waits for are done, at most `parallelism` provider operations at a time
//! (local steps, health gates and durable writes of results take no permit).
//! Before each provider operation the intent is journalled in state
//! (pending, fsynced); after it, the result. A failed step skips its
//! dependents while independent branches finish. Cancellation (the first
//! Ctrl-C) stops new steps and lets the ones in flight finish. Apply makes
//! no decision the plan did not record.
//!
//! This file owns the executor's public face (`Executor`, `Cancel`,
//! `Event`, `apply`); the rooms behind it:
//! - scheduler/: the order, the permits (a `Semaphore`), the running
//!   steps (a `JoinSet`), dependents released once a step's last commit is
//!   queued, failure skipping and cancellation;
//! - step.rs: running one step, a function per operation and kind, and the
//!   journal writes around provider calls;
//! - machine.rs: machine creates, with bootstrap reference resolution;
//! - health.rs: health gates between rollout steps, admin kubeconfigs;
//! - error.rs: the typed step errors;
//! - report.rs: outcomes and the apply report;
//! - context.rs: what the steps of one run share.

mod context;
mod error;
pub(crate) mod health;
mod machine;
mod permit;
mod report;
mod scheduler;
mod step;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::plan::{Op, Plan, Step};
use crate::provider::{Provider, Redactor};
use crate::resource::{Address, ProviderKind};
use crate::state::{Journal, State, StateKey, StateStore};

use context::{Ctx, Events};

pub use error::{DocumentSource, StepError, Verb};
pub(crate) use health::admin_kubeconfig;
pub use health::{GateError, KubeconfigError};
pub use report::{ApplyReport, Outcome};

/// Progress events for the UI.
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        address: Address,
        op: Op,
    },
    Finished {
        address: Address,
        op: Op,
        elapsed: Duration,
        error: Option<StepError>,
    },
    Skipped {
        address: Address,
        op: Op,
        because: Address,
    },
    Interrupted,
    HealthCheck(health::Attempt),
}

/// Stops an apply from starting more steps (clones share one token).
#[derive(Clone, Default)]
pub struct Cancel(CancellationToken);

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.0.cancel();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Wait until `cancel` is called (at once if it was).
    pub(crate) async fn cancelled(&self) {
        self.0.cancelled().await;
    }
}

/// Secrets from the manifests, for `<capi:secret:NAME:KEY>` references.
pub(crate) type ManifestSecrets = BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>;

pub struct Executor {
    pub parallelism: std::num::NonZeroUsize,
    pub providers: BTreeMap<ProviderKind, Arc<dyn Provider>>,
    pub secrets: ManifestSecrets,
    pub cancel: Cancel,
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// `--health-check`: run between rollout steps.
    pub health: Option<health::HealthCheck>,
    /// A fixed clock for what apply records (`CAPI_NOW`); `None`: the
    /// system clock.
    pub clock: Option<i64>,
}

/// Every secret value in a state, in plaintext, for redaction (those that
/// cannot be opened without the key cannot reach any output either).
pub(crate) fn state_secrets(state: &State, key: Option<&StateKey>) -> Vec<String> {
    state
        .resources
        .iter()
        .flat_map(|r| r.secrets(key).unwrap_or_default())
        .collect()
}

/// Run a plan against a locked state.
pub async fn apply(plan: &Plan, state: State, store: StateStore, exec: Executor) -> ApplyReport {
    let start = Instant::now();
    let key = store.key().cloned();
    let mut secret_values = state_secrets(&state, key.as_deref());
    for data in exec.secrets.values() {
        for v in data.values() {
            if let Ok(s) = std::str::from_utf8(v) {
                secret_values.push(s.to_string());
            }
        }
    }
    let earlier_unchecked = health::unchecked_at_start(&state);
    let (journal, writer) = Journal::start(state, store);
    let events = Events::new(exec.events);
    let ctx = Arc::new(Ctx {
        journal: journal.clone(),
        providers: exec.providers,
        secrets: exec.secrets,
        documents: Arc::new(plan.documents.clone()),
        redactor: RwLock::new(Redactor::new(secret_values)),
        health: exec.health,
        earlier_unchecked,
        clock: exec.clock,
        gates: health::Gates::default(),
        events: events.clone(),
        kubeconfigs: tokio::sync::Mutex::new(BTreeMap::new()),
        scratch: tempfile::tempdir().expect("a temporary directory"),
        key,
    });
    let run_step = |s: &Step, permit, release| {
        let (ctx, s) = (ctx.clone(), s.clone());
        async move {
            step::run(&ctx, &s, permit, release)
                .await
                .map_err(|e| e.redacted(&ctx.redactor()))
        }
    };
    let done = scheduler::run(
        &plan.steps,
        exec.parallelism,
        &exec.cancel,
        &events,
        run_step,
    )
    .await;
    // The writer folds the journal into the final snapshot while the
    // providers close (the simulator compacts its machine logs).
    let shared = journal.close();
    drop(ctx);
    let _ = writer.ended().await;
    let final_state = Journal::into_state(shared);
    ApplyReport::new(
        plan,
        done.outcomes,
        done.interrupted,
        final_state,
        start.elapsed(),
    )
}
