//! The executor: runs a plan's steps on tokio, each as soon as the steps it
//! waits for are done, at most `parallelism` provider operations at a time
//! (local steps and durable writes of results take no slot). Before each provider
//! operation the intent is journalled in state (pending); after it, the
//! result. A failed step skips its dependents while independent branches
//! finish. Cancellation (the first Ctrl-C) stops new steps and lets the ones
//! in flight finish. Apply makes no decision the plan did not record.

pub(crate) mod health;

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::bootstrap::{self, refs};
use crate::plan::{Action, Op, Plan, Step};
use crate::provider::{OpInput, Provider, ProviderError, Redactor};
use crate::resource::{Address, ClusterId, ProviderKind, ResourceKind, Spec};
use crate::state::{ErrorRecord, Resource, State, StateStore, Status};
use crate::util::time::{format_rfc3339, now_unix};

use crate::state::Journal;

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
        error: Option<String>,
    },
    Skipped {
        address: Address,
        op: Op,
        because: Address,
    },
    Interrupted,
    HealthCheck(health::Attempt),
}

#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Secrets from the manifests, for `<capi:secret:NAME:KEY>` references.
pub(crate) type ManifestSecrets = BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>;

pub struct Executor {
    pub parallelism: usize,
    pub providers: BTreeMap<ProviderKind, Arc<dyn Provider>>,
    pub secrets: ManifestSecrets,
    pub cancel: Cancel,
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// `--health-check`: run between rollout steps.
    pub health: Option<health::HealthCheck>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Failed(String),
    Skipped,
    NotStarted,
}

#[derive(Debug)]
pub struct ApplyReport {
    pub outcomes: Vec<Outcome>,
    pub added: usize,
    pub changed: usize,
    pub replaced: usize,
    pub destroyed: usize,
    pub failures: Vec<(Address, String)>,
    pub interrupted: bool,
    pub state: State,
    pub elapsed: Duration,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && !self.interrupted
    }
}

struct Ctx {
    journal: Journal,
    providers: BTreeMap<ProviderKind, Arc<dyn Provider>>,
    secrets: ManifestSecrets,
    documents: Arc<BTreeMap<String, String>>,
    redactor: RwLock<Redactor>,
    health: Option<health::HealthCheck>,
    gates: health::Gates,
    events: Option<mpsc::UnboundedSender<Event>>,
    /// Admin kubeconfigs for health checks, written on first use.
    kubeconfigs: tokio::sync::Mutex<BTreeMap<String, std::path::PathBuf>>,
    scratch: tempfile::TempDir,
}

impl Ctx {
    fn provider(&self, kind: ProviderKind) -> Result<&Arc<dyn Provider>, String> {
        self.providers
            .get(&kind)
            .ok_or_else(|| format!("no {kind} provider is configured"))
    }

    fn redact(&self, s: &str) -> String {
        self.redactor.read().unwrap().redact(s)
    }

    fn add_secrets(&self, values: impl IntoIterator<Item = String>) {
        self.redactor.write().unwrap().add(values);
    }
}

/// Every secret value in a state, for redaction.
pub(crate) fn state_secrets(state: &State) -> Vec<String> {
    state
        .resources
        .iter()
        .flat_map(|r| r.sensitive.values().cloned())
        .collect()
}

/// Run a plan against a locked state.
pub async fn apply(plan: &Plan, state: State, store: StateStore, exec: Executor) -> ApplyReport {
    let start = Instant::now();
    let mut secret_values = state_secrets(&state);
    for data in exec.secrets.values() {
        for v in data.values() {
            if let Ok(s) = std::str::from_utf8(v) {
                secret_values.push(s.to_string());
            }
        }
    }
    let (journal, writer) = Journal::start(state, store);
    let ctx = Arc::new(Ctx {
        journal: journal.clone(),
        providers: exec.providers,
        secrets: exec.secrets,
        documents: Arc::new(plan.documents.clone()),
        redactor: RwLock::new(Redactor::new(secret_values)),
        health: exec.health,
        gates: health::Gates::default(),
        events: exec.events.clone(),
        kubeconfigs: tokio::sync::Mutex::new(BTreeMap::new()),
        scratch: tempfile::tempdir().expect("a temporary directory"),
    });
    let n = plan.steps.len();
    let mut outcomes = vec![Outcome::NotStarted; n];
    let mut waiting: Vec<usize> = plan.steps.iter().map(|s| s.after.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for s in &plan.steps {
        for &a in &s.after {
            dependents[a].push(s.id);
        }
    }
    // Steps that call a provider wait for one of `parallelism` slots and
    // hold it only for the provider operation and its intent record; local
    // steps (PKI, bootstrap data), health gates and the durable write of a
    // result take none, so they never idle a slot.
    let mut ready_local: BinaryHeap<std::cmp::Reverse<usize>> = BinaryHeap::new();
    let mut ready_remote: BinaryHeap<std::cmp::Reverse<usize>> = BinaryHeap::new();
    let push_ready = |id: usize,
                      local: &mut BinaryHeap<std::cmp::Reverse<usize>>,
                      remote: &mut BinaryHeap<std::cmp::Reverse<usize>>| {
        if needs_slot(&plan.steps[id]) {
            remote.push(std::cmp::Reverse(id));
        } else {
            local.push(std::cmp::Reverse(id));
        }
    };
    for i in (0..n).filter(|&i| waiting[i] == 0) {
        push_ready(i, &mut ready_local, &mut ready_remote);
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Msg>();
    let mut free_slots = exec.parallelism.max(1);
    let mut in_flight = 0usize;
    let mut interrupted = false;
    let emit = |e: Event| {
        if let Some(tx) = &exec.events {
            let _ = tx.send(e);
        }
    };
    loop {
        if exec.cancel.is_cancelled() && !interrupted {
            interrupted = true;
            emit(Event::Interrupted);
        }
        // Start what is ready (local steps first), unless interrupted.
        if !interrupted {
            loop {
                let next = match ready_local.pop() {
                    Some(std::cmp::Reverse(id)) => (id, None),
                    None if free_slots > 0 => match ready_remote.pop() {
                        Some(std::cmp::Reverse(id)) => {
                            free_slots -= 1;
                            (id, Some(Slot(done_tx.clone())))
                        }
                        None => break,
                    },
                    None => break,
                };
                let (id, mut slot) = next;
                let step = plan.steps[id].clone();
                emit(Event::Started {
                    address: step.address.clone(),
                    op: step.op,
                });
                let ctx = ctx.clone();
                let tx = done_tx.clone();
                in_flight += 1;
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = run_step(&ctx, &step, &mut slot).await;
                    drop(slot);
                    let _ = tx.send(Msg::Done(id, r, t.elapsed()));
                });
            }
        }
        if in_flight == 0 {
            break;
        }
        let msg = tokio::select! {
            m = done_rx.recv() => m,
            _ = tokio::time::sleep(Duration::from_millis(100)), if !interrupted => None,
        };
        let (id, result, elapsed) = match msg {
            Some(Msg::Done(id, result, elapsed)) => (id, result, elapsed),
            Some(Msg::SlotFreed) => {
                free_slots += 1;
                continue;
            }
            None => continue,
        };
        in_flight -= 1;
        let step = &plan.steps[id];
        match result {
            Ok(()) => {
                outcomes[id] = Outcome::Done;
                emit(Event::Finished {
                    address: step.address.clone(),
                    op: step.op,
                    elapsed,
                    error: None,
                });
                for &d in &dependents[id] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && outcomes[d] == Outcome::NotStarted {
                        push_ready(d, &mut ready_local, &mut ready_remote);
                    }
                }
            }
            Err(e) => {
                let e = ctx.redact(&e);
                outcomes[id] = Outcome::Failed(e.clone());
                emit(Event::Finished {
                    address: step.address.clone(),
                    op: step.op,
                    elapsed,
                    error: Some(e),
                });
                // Everything that (transitively) waits for it is skipped.
                let mut stack = dependents[id].clone();
                while let Some(d) = stack.pop() {
                    if outcomes[d] == Outcome::NotStarted {
                        outcomes[d] = Outcome::Skipped;
                        emit(Event::Skipped {
                            address: plan.steps[d].address.clone(),
                            op: plan.steps[d].op,
                            because: step.address.clone(),
                        });
                        stack.extend(dependents[d].iter().copied());
                    }
                }
            }
        }
    }
    drop(done_tx);
    let final_state = journal.snapshot();
    drop(journal);
    drop(ctx);
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;

    let mut report = ApplyReport {
        added: 0,
        changed: 0,
        replaced: 0,
        destroyed: 0,
        failures: Vec::new(),
        interrupted,
        state: final_state,
        elapsed: start.elapsed(),
        outcomes,
    };
    let mut by_address: HashMap<&Address, Vec<usize>> = HashMap::new();
    for s in &plan.steps {
        by_address.entry(&s.address).or_default().push(s.id);
    }
    for (i, o) in report.outcomes.iter().enumerate() {
        if let Outcome::Failed(e) = o {
            report
                .failures
                .push((plan.steps[i].address.clone(), e.clone()));
        }
    }
    for c in plan.reviewed_changes() {
        let ids: Vec<usize> = by_address
            .get(&c.address)
            .into_iter()
            .flatten()
            .chain(
                c.replacement
                    .as_ref()
                    .and_then(|r| by_address.get(r))
                    .into_iter()
                    .flatten(),
            )
            .copied()
            .collect();
        if !ids.is_empty() && ids.iter().all(|&i| report.outcomes[i] == Outcome::Done) {
            match c.action {
                Action::Create => report.added += 1,
                Action::Update => report.changed += 1,
                Action::Replace => report.replaced += 1,
                Action::Delete => report.destroyed += 1,
            }
        }
    }
    report
}

enum Msg {
    Done(usize, Result<(), String>, Duration),
    SlotFreed,
}

/// One of the executor's `parallelism` slots for provider operations; it
/// goes back to the scheduler when dropped.
struct Slot(mpsc::UnboundedSender<Msg>);

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::SlotFreed);
    }
}

/// Does the step call a provider (and so wait for a slot)?
fn needs_slot(step: &Step) -> bool {
    match step.op {
        Op::Delete => !step.address.kind().is_local(),
        Op::Create | Op::Update => {
            !matches!(step.spec, Some(Spec::Pki(_)) | Some(Spec::Bootstrap(_)))
        }
    }
}

fn record_error(e: &ProviderError, redact: &dyn Fn(&str) -> String) -> ErrorRecord {
    match e {
        ProviderError::Bootstrap {
            command,
            exit_code,
            output_tail,
            ..
        } => ErrorRecord {
            message: redact(&e.to_string()),
            command: Some(redact(command)),
            exit_code: Some(*exit_code),
            output_tail: Some(redact(output_tail)),
        },
        other => ErrorRecord {
            message: redact(&other.to_string()),
            command: None,
            exit_code: None,
            output_tail: None,
        },
    }
}

/// Journal a pending operation on a resource (durable before the provider is called).
async fn journal_pending(ctx: &Ctx, step: &Step, status: Status) -> Result<(), String> {
    let step = step.clone();
    ctx.journal
        .commit(&step.address.clone(), move |st| {
            let existing = st.get(&step.address).cloned();
            let sequence = existing
                .as_ref()
                .map(|r| r.sequence)
                .unwrap_or_else(|| st.take_sequence());
            let mut r = existing.unwrap_or(Resource {
                address: step.address.clone(),
                kind: step.address.kind(),
                provider: step.provider,
                status,
                attributes: step.spec.clone().expect("create/update steps carry a spec"),
                observed: BTreeMap::new(),
                sensitive: BTreeMap::new(),
                dependencies: step.dependencies.clone(),
                sequence,
                error: None,
            });
            r.status = status;
            if let Some(spec) = &step.spec {
                if status != Status::Updating {
                    r.attributes = spec.clone();
                }
            }
            if status == Status::Creating {
                r.dependencies = step.dependencies.clone();
                r.error = None;
            }
            st.upsert(r);
        })
        .await
}

async fn finish(
    ctx: &Ctx,
    address: &Address,
    f: impl FnOnce(&mut Resource) + Send + 'static,
) -> Result<(), String> {
    let a = address.clone();
    ctx.journal
        .commit(address, move |st| {
            if let Some(r) = st.get_mut(&a) {
                f(r);
            }
        })
        .await
}

async fn run_step(ctx: &Ctx, step: &Step, slot: &mut Option<Slot>) -> Result<(), String> {
    let kind = step.address.kind();
    match step.op {
        Op::Delete => {
            let Some(existing) = ctx.journal.read(|s| s.get(&step.address).cloned()) else {
                return Ok(());
            };
            ctx.journal
                .commit(&step.address, {
                    let a = step.address.clone();
                    move |st| {
                        if let Some(r) = st.get_mut(&a) {
                            r.status = Status::Deleting;
                        }
                    }
                })
                .await?;
            if !kind.is_local() {
                let lineage = ctx.journal.read(|s| s.lineage.clone());
                let redactor = ctx.redactor.read().unwrap().clone();
                let p = ctx.provider(existing.provider)?;
                let r = p.delete(&existing, &lineage, &redactor).await;
                drop(slot.take());
                r.map_err(|e| {
                    format!("deleting {}: {}", step.address, ctx.redact(&e.to_string()))
                })?;
            }
            let a = step.address.clone();
            ctx.journal
                .commit(&step.address, move |st| {
                    st.remove(&a);
                })
                .await
        }
        Op::Create | Op::Update => {
            let spec = step.spec.clone().expect("spec");
            match &spec {
                Spec::Bootstrap(b) => {
                    // Machines of one template share a document: it is copied
                    // into the state only by the first of them to commit
                    // (thousands of these steps can wait for the writer at once).
                    enum Source {
                        Plan(Arc<BTreeMap<String, String>>),
                        State(String),
                    }
                    let source = if ctx.documents.contains_key(&b.sha256) {
                        Source::Plan(ctx.documents.clone())
                    } else {
                        // A saved plan may refer to a document the state holds.
                        Source::State(
                            ctx.journal
                                .read(|s| s.documents.get(&b.sha256).cloned())
                                .ok_or_else(|| {
                                    format!(
                                        "{}: bootstrap document {} is missing from the plan",
                                        step.address, b.sha256
                                    )
                                })?,
                        )
                    };
                    let step2 = step.clone();
                    let sha = b.sha256.clone();
                    ctx.journal
                        .commit(&step.address, move |st| {
                            if let std::collections::btree_map::Entry::Vacant(e) =
                                st.documents.entry(sha)
                            {
                                let doc = match source {
                                    Source::Plan(docs) => docs[e.key()].clone(),
                                    Source::State(doc) => doc,
                                };
                                e.insert(doc);
                            }
                            let sequence = st
                                .get(&step2.address)
                                .map(|r| r.sequence)
                                .unwrap_or_else(|| st.take_sequence());
                            st.upsert(Resource {
                                address: step2.address.clone(),
                                kind: ResourceKind::Bootstrap,
                                provider: ProviderKind::Local,
                                status: Status::Ready,
                                attributes: step2.spec.clone().unwrap(),
                                observed: BTreeMap::new(),
                                sensitive: BTreeMap::new(),
                                dependencies: step2.dependencies.clone(),
                                sequence,
                                error: None,
                            });
                        })
                        .await
                }
                Spec::Pki(p) => {
                    journal_pending(ctx, step, Status::Creating).await?;
                    let (alg, days, ext) = (
                        p.encryption_algorithm.clone(),
                        p.ca_validity_days,
                        p.external_etcd,
                    );
                    let now = now_unix();
                    let pki = tokio::task::spawn_blocking(move || {
                        bootstrap::pki::generate(&alg, days, ext, now)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{}: {e}", step.address))?;
                    ctx.add_secrets(pki.secret.values().cloned());
                    finish(ctx, &step.address, move |r| {
                        r.status = Status::Ready;
                        r.observed = pki
                            .public
                            .iter()
                            .map(|(k, v)| (k.clone(), json!(v)))
                            .collect();
                        r.observed
                            .insert("ca_cert_hash".into(), json!(pki.ca_cert_hash));
                        r.observed
                            .insert("not_before".into(), json!(pki.not_before));
                        r.observed
                            .insert("not_after".into(), json!(format_rfc3339(pki.not_after)));
                        r.sensitive = pki.secret;
                    })
                    .await
                }
                Spec::Token(t) => {
                    journal_pending(
                        ctx,
                        step,
                        if step.op == Op::Create {
                            Status::Creating
                        } else {
                            Status::Updating
                        },
                    )
                    .await?;
                    let token = bootstrap::token::generate();
                    ctx.add_secrets([token.clone()]);
                    let expires = now_unix() + t.ttl_seconds as i64;
                    let current = ctx
                        .journal
                        .read(|s| s.get(&step.address).cloned())
                        .expect("journalled");
                    let observed = provider_call(
                        ctx,
                        step,
                        &spec,
                        None,
                        Some((&token, expires)),
                        Some(&current),
                    )
                    .await;
                    drop(slot.take());
                    let observed = observed?;
                    let id = bootstrap::token::id(&token).to_string();
                    finish(ctx, &step.address, move |r| {
                        r.status = Status::Ready;
                        r.attributes = spec;
                        r.observed = observed;
                        r.observed.insert("token_id".into(), json!(id));
                        r.observed
                            .insert("expires".into(), json!(format_rfc3339(expires)));
                        r.observed.insert("expires_unix".into(), json!(expires));
                        r.sensitive = BTreeMap::from([("token".to_string(), token)]);
                    })
                    .await
                }
                Spec::Network(_) | Spec::Loadbalancer(_) => {
                    journal_pending(
                        ctx,
                        step,
                        if step.op == Op::Create {
                            Status::Creating
                        } else {
                            Status::Updating
                        },
                    )
                    .await?;
                    let current = ctx.journal.read(|s| s.get(&step.address).cloned());
                    let r = provider_call(ctx, step, &spec, None, None, current.as_ref()).await;
                    drop(slot.take());
                    match r {
                        Ok(observed) => {
                            finish(ctx, &step.address, move |r| {
                                r.status = Status::Ready;
                                r.attributes = spec;
                                r.observed = observed;
                                r.error = None;
                            })
                            .await
                        }
                        Err(e) => {
                            let msg = e.clone();
                            finish(ctx, &step.address, move |r| {
                                r.status = Status::Failed;
                                r.error = Some(ErrorRecord {
                                    message: msg,
                                    command: None,
                                    exit_code: None,
                                    output_tail: None,
                                });
                            })
                            .await?;
                            Err(e)
                        }
                    }
                }
                Spec::Machine(_) => {
                    if step.op == Op::Update {
                        journal_pending(ctx, step, Status::Updating).await?;
                        let current = ctx.journal.read(|s| s.get(&step.address).cloned());
                        let observed =
                            provider_call(ctx, step, &spec, None, None, current.as_ref()).await;
                        drop(slot.take());
                        let observed = observed?;
                        return finish(ctx, &step.address, move |r| {
                            r.status = Status::Ready;
                            r.attributes = spec;
                            r.observed = observed;
                        })
                        .await;
                    }
                    journal_pending(ctx, step, Status::Creating).await?;
                    let doc = resolve_bootstrap(ctx, &step.address)?;
                    let r = machine_create(ctx, step, &spec, &doc).await;
                    drop(slot.take());
                    match r {
                        Ok(observed) => {
                            finish(ctx, &step.address, move |r| {
                                r.status = Status::Ready;
                                r.observed = observed;
                                r.error = None;
                            })
                            .await?;
                            // The machine is recorded as ready; a failing health
                            // gate stops the rollout without undoing it.
                            if step.health_gate {
                                if let Some(hc) = &ctx.health {
                                    health_gate(ctx, hc, &step.address).await?;
                                }
                            }
                            Ok(())
                        }
                        Err((msg, record, observed)) => {
                            finish(ctx, &step.address, move |r| {
                                r.status = Status::Failed;
                                r.error = Some(record);
                                if let Some(o) = observed {
                                    r.observed = o;
                                }
                            })
                            .await?;
                            Err(msg)
                        }
                    }
                }
            }
        }
    }
}

async fn health_gate(ctx: &Ctx, hc: &health::HealthCheck, machine: &Address) -> Result<(), String> {
    let ready_at = Instant::now();
    let key = machine.cluster_key().to_string();
    let kubeconfig = {
        let mut k = ctx.kubeconfigs.lock().await;
        match k.get(&key) {
            Some(p) => p.clone(),
            None => {
                let text = ctx
                    .journal
                    .read(|s| admin_kubeconfig(s, &machine.cluster()))?;
                let path = ctx
                    .scratch
                    .path()
                    .join(format!("{}.kubeconfig", key.replace(':', "_")));
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| e.to_string())?;
                std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| e.to_string())?;
                k.insert(key.clone(), path.clone());
                path
            }
        }
    };
    let events = ctx.events.clone();
    let report = move |a: health::Attempt| {
        if let Some(tx) = &events {
            let _ = tx.send(Event::HealthCheck(a));
        }
    };
    let cluster = machine.cluster_name().to_string();
    ctx.gates
        .gate(
            hc,
            &cluster,
            machine.name().unwrap_or_default(),
            &kubeconfig,
            ready_at,
            &report,
        )
        .await
        .map_err(|e| ctx.redact(&e))
}

/// An admin kubeconfig for a cluster from the state (CA and endpoint).
pub(crate) fn admin_kubeconfig(state: &State, cluster: &ClusterId) -> Result<String, String> {
    let pki = state
        .get(&Address::new(cluster, ResourceKind::Pki, None))
        .ok_or("the cluster has no certificates in the state")?;
    let endpoint = state
        .get(&Address::new(cluster, ResourceKind::Loadbalancer, None))
        .and_then(|r| r.observed.get("endpoint"))
        .and_then(|v| v.as_str())
        .ok_or("the cluster has no control-plane endpoint yet")?;
    let ca = pki
        .observed
        .get("ca.crt")
        .and_then(|v| v.as_str())
        .ok_or("the cluster CA certificate is missing")?;
    let key = pki
        .sensitive
        .get("ca.key")
        .ok_or("the cluster CA key is missing")?;
    let alg = match &pki.attributes {
        Spec::Pki(p) => p.encryption_algorithm.clone(),
        _ => String::new(),
    };
    let not_before = pki
        .observed
        .get("not_before")
        .and_then(|v| v.as_i64())
        .unwrap_or_else(now_unix);
    bootstrap::pki::admin_kubeconfig(
        &cluster.name,
        endpoint,
        ca,
        key,
        &alg,
        not_before,
        now_unix(),
    )
    .map_err(|e| e.to_string())
}

type MachineErr = (String, ErrorRecord, Option<BTreeMap<String, Value>>);

async fn machine_create(
    ctx: &Ctx,
    step: &Step,
    spec: &Spec,
    doc: &str,
) -> Result<BTreeMap<String, Value>, MachineErr> {
    let (deps, lineage) = ctx.journal.read(|s| {
        (
            step.dependencies
                .iter()
                .filter_map(|d| s.get(d).cloned())
                .collect::<Vec<_>>(),
            s.lineage.clone(),
        )
    });
    let p = ctx.provider(step.provider).map_err(|e| {
        (
            e.clone(),
            ErrorRecord {
                message: e,
                command: None,
                exit_code: None,
                output_tail: None,
            },
            None,
        )
    })?;
    let redactor = ctx.redactor.read().unwrap().clone();
    let cluster = step.address.cluster();
    let input = OpInput {
        address: &step.address,
        cluster: &cluster,
        lineage: &lineage,
        spec,
        deps: deps.iter().collect(),
        bootstrap: Some(doc),
        token: None,
        redactor: &redactor,
    };
    p.create(&input).await.map_err(|e| {
        let record = record_error(&e, &|s| ctx.redact(s));
        let observed = match &e {
            ProviderError::Bootstrap { observed, .. } => Some(observed.clone()),
            _ => None,
        };
        (
            format!("creating {}: {}", step.address, ctx.redact(&e.to_string())),
            record,
            observed,
        )
    })
}

async fn provider_call(
    ctx: &Ctx,
    step: &Step,
    spec: &Spec,
    bootstrap: Option<&str>,
    token: Option<(&str, i64)>,
    current: Option<&Resource>,
) -> Result<BTreeMap<String, Value>, String> {
    let (deps, lineage) = ctx.journal.read(|s| {
        (
            step.dependencies
                .iter()
                .filter_map(|d| s.get(d).cloned())
                .collect::<Vec<_>>(),
            s.lineage.clone(),
        )
    });
    let p = ctx.provider(step.provider)?;
    let redactor = ctx.redactor.read().unwrap().clone();
    let cluster = step.address.cluster();
    let input = OpInput {
        address: &step.address,
        cluster: &cluster,
        lineage: &lineage,
        spec,
        deps: deps.iter().collect(),
        bootstrap,
        token,
        redactor: &redactor,
    };
    let verb = if step.op == Op::Create {
        "creating"
    } else {
        "updating"
    };
    let r = match (step.op, current) {
        (Op::Update, Some(cur)) => p.update(&input, cur).await,
        _ => p.create(&input).await,
    };
    r.map_err(|e| format!("{verb} {}: {}", step.address, ctx.redact(&e.to_string())))
}

/// The machine's bootstrap document with every reference resolved.
fn resolve_bootstrap(ctx: &Ctx, machine: &Address) -> Result<String, String> {
    let name = machine.name().unwrap_or_default();
    let cluster = machine.cluster();
    let bs_addr = machine.sibling(ResourceKind::Bootstrap, Some(name));
    ctx.journal.read(|s| {
        let bs = s.get(&bs_addr).ok_or_else(|| format!("{machine}: its bootstrap data {bs_addr} is not in the state"))?;
        let sha = &bs.attributes.as_bootstrap().ok_or("bootstrap resource without a bootstrap spec")?.sha256;
        let doc = s.documents.get(sha).ok_or_else(|| format!("{machine}: bootstrap document {sha} is missing from the state"))?;
        let pki = s.get(&machine.sibling(ResourceKind::Pki, None));
        let token = s.get(&machine.sibling(ResourceKind::Token, None));
        let lb = s.get(&machine.sibling(ResourceKind::Loadbalancer, None));
        let lookup = |n: &str| -> Option<String> {
            match n {
                refs::TOKEN => token.and_then(|t| t.sensitive.get("token").cloned()),
                refs::CA_CERT_HASH => pki.and_then(|p| p.observed.get("ca_cert_hash")).and_then(|v| v.as_str().map(str::to_string)),
                refs::ENDPOINT => lb.and_then(|l| l.observed.get("endpoint")).and_then(|v| v.as_str().map(str::to_string)),
                other => {
                    if let Some(rest) = other.strip_prefix("secret:") {
                        let (sname, skey) = rest.split_once(':')?;
                        let data = ctx.secrets.get(&(cluster.namespace.clone(), sname.to_string()))?;
                        return data.get(skey).map(|b| String::from_utf8_lossy(b).into_owned());
                    }
                    let p = pki?;
                    p.sensitive
                        .get(other)
                        .cloned()
                        .or_else(|| p.observed.get(other).and_then(|v| v.as_str().map(str::to_string)))
                }
            }
        };
        refs::resolve(doc, &lookup).map_err(|missing| {
            format!("{machine}: cannot resolve <capi:{missing}> in its bootstrap data (is the {} known?)", match missing.as_str() {
                refs::TOKEN => "bootstrap token",
                refs::ENDPOINT => "control-plane endpoint",
                m if m.starts_with("secret:") => "Secret in the manifests",
                _ => "cluster PKI",
            })
        })
    })
}
