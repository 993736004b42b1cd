//! The executor through the library API, on the simulator behind a
//! provider that looks at the state file before every operation: the intent
//! of each provider operation is durable before the provider is called.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use capi::apply::{self, Cancel, Executor};
use capi::plan::{self, Operation, Plan, PlanOptions};
use capi::provider::sim::SimProvider;
use capi::provider::{Found, OpInput, Provider, ProviderError, Redactor, Refreshed, Unmanaged};
use capi::resource::{Observed, ProviderKind, ResourceKind};
use capi::state::{Resource, State, StateStore, Status};

use crate::common::example;

fn plan_for(state: &State, operation: Operation) -> Plan {
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    let m = capi::manifest::load_str("cluster.yaml", &text, &Default::default()).unwrap();
    let desired = match operation {
        Operation::Apply => capi::desired::build(&m, &Default::default()).unwrap(),
        Operation::Destroy => Default::default(),
    };
    let opts = PlanOptions {
        operation,
        now_unix: capi::util::time::now_unix(),
        ..Default::default()
    };
    plan::plan(&desired, state, &opts).unwrap()
}

/// Kinds whose creates and deletes go to the provider.
fn remote(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::Network
            | ResourceKind::Loadbalancer
            | ResourceKind::Token
            | ResourceKind::Machine
    )
}

/// Passes every operation to the simulator after reading the state file.
/// A create does not tell a provider outside the crate its address, so for
/// creates it checks that the file holds at least as many resources being
/// created as there are creates in its hands while it reads; for deletes,
/// that the resource itself is marked deleting.
struct Witness {
    inner: SimProvider,
    state: PathBuf,
    /// Creates inside `create`, by ticket.
    in_hand: Mutex<BTreeSet<usize>>,
    creates: AtomicUsize,
    problems: Mutex<Vec<String>>,
    deletes: Mutex<Vec<(String, Option<Status>)>>,
}

impl Witness {
    fn on_disk(&self) -> State {
        StateStore::new(&self.state)
            .load()
            .expect("the state file is readable while apply runs")
            .unwrap_or_else(State::empty)
    }
}

#[async_trait]
impl Provider for Witness {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    async fn create(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        let ticket = self.creates.fetch_add(1, Ordering::SeqCst);
        self.in_hand.lock().unwrap().insert(ticket);
        // Creates in hand for the whole read are journalled as creating for
        // the whole read (the executor writes a result only after the
        // provider returns).
        let before = self.in_hand.lock().unwrap().clone();
        let disk = self.on_disk();
        let throughout = before.intersection(&self.in_hand.lock().unwrap()).count();
        let pending = disk
            .resources
            .iter()
            .filter(|r| remote(r.kind) && r.status == Status::Creating)
            .count();
        if pending < throughout {
            self.problems.lock().unwrap().push(format!(
                "{throughout} create(s) at the provider, {pending} journalled as creating"
            ));
        }
        let r = self.inner.create(input).await;
        self.in_hand.lock().unwrap().remove(&ticket);
        r
    }

    async fn update(
        &self,
        input: &OpInput<'_>,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        self.inner.update(input, current).await
    }

    async fn delete(
        &self,
        resource: &Resource,
        lineage: &str,
        redactor: &Redactor,
    ) -> Result<(), ProviderError> {
        let status = self.on_disk().get(&resource.address).map(|r| r.status);
        self.deletes
            .lock()
            .unwrap()
            .push((resource.address.to_string(), status));
        self.inner.delete(resource, lineage, redactor).await
    }

    async fn refresh(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        self.inner.refresh(resources, lineage).await
    }

    async fn unmanaged(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError> {
        self.inner.unmanaged(known, lineage).await
    }

    async fn lookup(&self, input: &OpInput<'_>, id: &str) -> Result<Found, ProviderError> {
        self.inner.lookup(input, id).await
    }
}

fn executor(p: Arc<dyn Provider>) -> Executor {
    Executor {
        parallelism: std::num::NonZeroUsize::new(4).unwrap(),
        providers: BTreeMap::from([(ProviderKind::Sim, p)]),
        secrets: Default::default(),
        cancel: Cancel::default(),
        events: None,
        health: None,
        clock: None,
    }
}

/// Apply then destroy the example cluster: every create finds its intent
/// (creating) and every delete its resource marked deleting in the state
/// file before the provider is called; the file ends as the report says.
#[test]
fn every_provider_operation_finds_its_intent_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capi.state.json");
    let witness = Arc::new(Witness {
        inner: SimProvider::open(&dir.path().join("capi.state.sim"), Some(Duration::ZERO)).unwrap(),
        state: path.clone(),
        in_hand: Mutex::new(BTreeSet::new()),
        creates: AtomicUsize::new(0),
        problems: Mutex::new(Vec::new()),
        deletes: Mutex::new(Vec::new()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let created = rt.block_on(async {
        let plan = plan_for(&State::empty(), Operation::Apply);
        let report = apply::apply(
            &plan,
            State::empty(),
            StateStore::new(&path),
            executor(witness.clone()),
        )
        .await;
        assert!(report.ok(), "apply failed: {:?}", report.failures);
        let saved = StateStore::new(&path).load().unwrap().unwrap();
        assert_eq!(saved.resources, report.state.resources);
        assert!(saved.resources.iter().all(|r| r.status == Status::Ready));
        saved
    });
    let remote_resources = created.resources.iter().filter(|r| remote(r.kind)).count();
    assert_eq!(witness.creates.load(Ordering::SeqCst), remote_resources);
    assert_eq!(*witness.problems.lock().unwrap(), Vec::<String>::new());

    rt.block_on(async {
        let plan = plan_for(&created, Operation::Destroy);
        let report = apply::apply(
            &plan,
            created,
            StateStore::new(&path),
            executor(witness.clone()),
        )
        .await;
        assert!(report.ok(), "destroy failed: {:?}", report.failures);
    });
    assert!(StateStore::new(&path)
        .load()
        .unwrap()
        .unwrap()
        .resources
        .is_empty());
    let deletes = witness.deletes.lock().unwrap();
    assert_eq!(deletes.len(), remote_resources, "{deletes:#?}");
    for (address, status) in deletes.iter() {
        assert_eq!(*status, Some(Status::Deleting), "{address}");
    }
}
