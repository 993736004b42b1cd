//! Running one step: a function per operation and kind (delete; record
//! bootstrap data; generate PKI; issue a join token; create or update a
//! network or load balancer; update a machine; machine creates live in
//! machine.rs), and the journal writes they share. Every step that calls a
//! provider journals its intent (status creating, updating or deleting;
//! durable) first and its result after. Machine creates and every provider
//! delete are staged (see permit.rs): the intent is written before the
//! provider slot is taken; the others take their slot first. The slot is released as soon
//! as the provider call returns, before the result is written. A step's last
//! commit releases its dependents once it is queued ([`commit_releasing`]);
//! the step ends when it is durable.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use crate::bootstrap;
use crate::plan::{Op, Step};
use crate::provider::{Observed, OpInput, Provider, ProviderError};
use crate::resource::{Address, BootstrapSpec, PkiSpec, ProviderKind, ResourceKind, Spec};
use crate::state::{ErrorRecord, Resource, State, Status};
use crate::util::time::{format_rfc3339, now_unix};

use super::context::Ctx;
use super::error::{DocumentSource, StepError, Verb};
use super::machine;
use super::permit::Permit;
use super::scheduler::Release;

/// Run one step to its end (its result durable in the state). Its
/// dependents may start earlier, once its result is queued (`release`).
pub(super) async fn run(
    ctx: &Ctx,
    step: &Step,
    permit: Permit,
    release: Release,
) -> Result<(), StepError> {
    if step.op == Op::Delete {
        return delete(ctx, step, permit, release).await;
    }
    let spec = step
        .spec
        .clone()
        .expect("create and update steps carry a spec");
    match &spec {
        Spec::Bootstrap(b) => record_bootstrap_data(ctx, step, b, release).await,
        Spec::Pki(p) => generate_pki(ctx, step, p, release).await,
        Spec::Token(t) => {
            let ttl_seconds = t.ttl_seconds;
            issue_token(ctx, step, spec, ttl_seconds, permit, release).await
        }
        Spec::Network(_) | Spec::Loadbalancer(_) => {
            apply_infra(ctx, step, spec, permit, release).await
        }
        Spec::Machine(_) if step.op == Op::Update => {
            update_machine(ctx, step, spec, permit, release).await
        }
        Spec::Machine(_) => machine::create(ctx, step, spec, permit, release).await,
    }
}

/// Mark the resource deleting, delete it at its provider (local resources
/// have none), then remove it from the state.
async fn delete(ctx: &Ctx, step: &Step, permit: Permit, release: Release) -> Result<(), StepError> {
    let Some(existing) = ctx.journal.read(|s| s.get(&step.address).cloned()) else {
        return Ok(());
    };
    interrupted(step, &permit)?;
    super::health::recheck_before_delete(ctx, &step.address).await?;
    interrupted(step, &permit)?;
    let a = step.address.clone();
    let status = ctx
        .journal
        .read(|s| s.get(&step.address).map(|r| r.status))
        .unwrap_or(existing.status);
    commit(ctx, &step.address, move |st| {
        if let Some(r) = st.get_mut(&a) {
            r.status = Status::Deleting;
        }
    })
    .await?;
    // Staged: the intent was made durable while the slot was still taken.
    let Some(permit) = permit.slot().await else {
        // Only the status goes back: a health verdict recorded on this
        // machine meanwhile stays.
        let a = step.address.clone();
        commit(ctx, &step.address, move |st| {
            if let Some(r) = st.get_mut(&a) {
                r.status = status;
            }
        })
        .await?;
        return Err(StepError::Interrupted {
            address: step.address.clone(),
        });
    };
    if !step.address.kind().is_local() {
        let lineage = ctx.journal.read(|s| s.lineage.clone());
        let redactor = ctx.redactor();
        let p = ctx.provider(existing.provider)?;
        let r = p.delete(&existing, &lineage, &redactor).await;
        drop(permit);
        r.map_err(|e| provider_failure(ctx, Verb::Deleting, &step.address, &e))?;
    }
    let a = step.address.clone();
    commit_releasing(ctx, &step.address, release, move |st| {
        st.remove(&a);
    })
    .await
}

/// Put a machine's bootstrap data (and its document) into the state.
async fn record_bootstrap_data(
    ctx: &Ctx,
    step: &Step,
    b: &BootstrapSpec,
    release: Release,
) -> Result<(), StepError> {
    // Machines of one template share a document: it is copied into the
    // state only by the first of them to commit (thousands of these steps
    // can wait for the writer at once).
    enum Source {
        Plan(Arc<BTreeMap<String, String>>),
        State(String),
    }
    let source = if ctx.documents.contains_key(b.sha256.as_str()) {
        Source::Plan(ctx.documents.clone())
    } else {
        // A saved plan may refer to a document the state holds.
        let doc = ctx
            .journal
            .read(|s| s.documents.get(b.sha256.as_str()).cloned());
        Source::State(doc.ok_or_else(|| StepError::DocumentMissing {
            address: step.address.clone(),
            sha256: b.sha256.to_string(),
            missing_from: DocumentSource::Plan,
        })?)
    };
    let step = step.clone();
    let sha = b.sha256.to_string();
    let address = step.address.clone();
    commit_releasing(ctx, &address, release, move |st| {
        if let Entry::Vacant(e) = st.documents.entry(sha) {
            let doc = match source {
                Source::Plan(docs) => docs[e.key()].clone(),
                Source::State(doc) => doc,
            };
            e.insert(doc);
        }
        let sequence = st
            .get(&step.address)
            .map(|r| r.sequence)
            .unwrap_or_else(|| st.take_sequence());
        st.upsert(Resource {
            address: step.address.clone(),
            kind: ResourceKind::Bootstrap,
            provider: ProviderKind::Local,
            status: Status::Ready,
            attributes: step
                .spec
                .clone()
                .expect("a bootstrap step carries its spec"),
            observed: Observed::new(),
            sensitive: BTreeMap::new(),
            dependencies: step.dependencies.clone(),
            sequence,
            error: None,
        });
    })
    .await
}

/// Generate a cluster's certificates and keys (on a blocking thread).
async fn generate_pki(
    ctx: &Ctx,
    step: &Step,
    p: &PkiSpec,
    release: Release,
) -> Result<(), StepError> {
    journal_pending(ctx, step, Status::Creating).await?;
    let (alg, days, ext) = (
        p.encryption_algorithm.clone(),
        p.ca_validity_days,
        p.external_etcd,
    );
    let now = now_unix();
    let pki = tokio::task::spawn_blocking(move || bootstrap::pki::generate(&alg, days, ext, now))
        .await
        .map_err(|e| StepError::Panicked(e.to_string()))?
        .map_err(|e| StepError::Pki {
            address: step.address.clone(),
            message: e.to_string(),
        })?;
    ctx.add_secrets(pki.secret.values().cloned());
    let key = ctx.key.clone();
    finish_releasing(ctx, &step.address, release, move |r| {
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
        r.set_sensitive(pki.secret, key.as_deref());
    })
    .await
}

/// Generate a join token and register it with the provider.
async fn issue_token(
    ctx: &Ctx,
    step: &Step,
    spec: Spec,
    ttl_seconds: u64,
    permit: Permit,
    release: Release,
) -> Result<(), StepError> {
    let permit = slot(step, permit).await?;
    journal_pending(ctx, step, pending_status(step.op)).await?;
    let token = bootstrap::token::generate();
    ctx.add_secrets([token.clone()]);
    let expires = now_unix() + ttl_seconds as i64;
    let current = ctx
        .journal
        .read(|s| s.get(&step.address).cloned())
        .expect("the intent was journalled");
    let extras = Extras {
        token: Some((&token, expires)),
        current: Some(&current),
        ..Extras::default()
    };
    let observed = provider_call(ctx, step, &spec, extras).await;
    drop(permit);
    let observed = observed?;
    let id = bootstrap::token::id(&token).to_string();
    let key = ctx.key.clone();
    finish_releasing(ctx, &step.address, release, move |r| {
        r.status = Status::Ready;
        r.attributes = spec;
        r.observed = observed;
        r.observed.insert("token_id".into(), json!(id));
        r.observed
            .insert("expires".into(), json!(format_rfc3339(expires)));
        r.observed.insert("expires_unix".into(), json!(expires));
        r.set_sensitive([("token".to_string(), token)], key.as_deref());
    })
    .await
}

/// Create or update a network or load balancer; a failure is recorded on
/// the resource.
async fn apply_infra(
    ctx: &Ctx,
    step: &Step,
    spec: Spec,
    permit: Permit,
    release: Release,
) -> Result<(), StepError> {
    let permit = slot(step, permit).await?;
    journal_pending(ctx, step, pending_status(step.op)).await?;
    let current = ctx.journal.read(|s| s.get(&step.address).cloned());
    let extras = Extras {
        current: current.as_ref(),
        ..Extras::default()
    };
    let r = provider_call(ctx, step, &spec, extras).await;
    drop(permit);
    match r {
        Ok(observed) => {
            finish_releasing(ctx, &step.address, release, move |r| {
                r.status = Status::Ready;
                r.attributes = spec;
                r.observed = observed;
                r.error = None;
            })
            .await
        }
        Err(e) => {
            let record = ErrorRecord {
                message: e.to_string(),
                command: None,
                exit_code: None,
                output_tail: None,
            };
            finish(ctx, &step.address, move |r| {
                r.status = Status::Failed;
                r.error = Some(Box::new(record));
            })
            .await?;
            Err(e)
        }
    }
}

/// Update a machine in place.
async fn update_machine(
    ctx: &Ctx,
    step: &Step,
    spec: Spec,
    permit: Permit,
    release: Release,
) -> Result<(), StepError> {
    let permit = slot(step, permit).await?;
    journal_pending(ctx, step, Status::Updating).await?;
    let current = ctx.journal.read(|s| s.get(&step.address).cloned());
    let extras = Extras {
        current: current.as_ref(),
        ..Extras::default()
    };
    let observed = provider_call(ctx, step, &spec, extras).await;
    drop(permit);
    let observed = observed?;
    finish_releasing(ctx, &step.address, release, move |r| {
        r.status = Status::Ready;
        r.attributes = spec;
        // What capi itself records (creation time, health-check verdict)
        // survives the provider's new observation.
        let mut observed = observed;
        for key in ["created_unix", super::health::HEALTH_KEY] {
            if let Some(v) = r.observed.get(key) {
                observed.insert_if_absent(key, || v.clone());
            }
        }
        r.observed = observed;
    })
    .await
}

/// Take the step's slot before anything else (steps that are rare in a
/// plan: their intent is not staged).
async fn slot(step: &Step, permit: Permit) -> Result<Permit, StepError> {
    permit.slot().await.ok_or_else(|| StepError::Interrupted {
        address: step.address.clone(),
    })
}

/// A staged step stops before a recheck or its intent once the apply is
/// interrupted: it ends as not started, having written nothing.
pub(super) fn interrupted(step: &Step, permit: &Permit) -> Result<(), StepError> {
    if permit.interrupted() {
        return Err(StepError::Interrupted {
            address: step.address.clone(),
        });
    }
    Ok(())
}

/// A staged step interrupted before its slot came: its provider was not
/// called, so its intent is taken back (the resource as it was before,
/// or none), and it ends as not started.
pub(super) async fn take_back(
    ctx: &Ctx,
    address: &Address,
    before: Option<Resource>,
) -> Result<(), StepError> {
    let a = address.clone();
    commit(ctx, address, move |st| match before {
        Some(r) => st.upsert(r),
        None => {
            st.remove(&a);
        }
    })
    .await?;
    Err(StepError::Interrupted {
        address: address.clone(),
    })
}

fn pending_status(op: Op) -> Status {
    if op == Op::Create {
        Status::Creating
    } else {
        Status::Updating
    }
}

/// Make a mutation of one resource durable.
async fn commit(
    ctx: &Ctx,
    address: &Address,
    f: impl FnOnce(&mut State) + Send + 'static,
) -> Result<(), StepError> {
    ctx.journal
        .commit(address, f)
        .await
        .map_err(StepError::StateWrite)
}

/// Journal a pending operation on a resource (durable before the provider is called).
pub(super) async fn journal_pending(
    ctx: &Ctx,
    step: &Step,
    status: Status,
) -> Result<(), StepError> {
    let step = step.clone();
    let address = step.address.clone();
    commit(ctx, &address, move |st| {
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
            observed: Observed::new(),
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

/// Record a step's result on its resource (durable when this returns).
pub(super) async fn finish(
    ctx: &Ctx,
    address: &Address,
    f: impl FnOnce(&mut Resource) + Send + 'static,
) -> Result<(), StepError> {
    let a = address.clone();
    commit(ctx, address, move |st| {
        if let Some(r) = st.get_mut(&a) {
            f(r);
        }
    })
    .await
}

/// [`finish`] for a step's last commit: its dependents may start once the
/// record is applied and queued (see [`commit_releasing`]).
pub(super) async fn finish_releasing(
    ctx: &Ctx,
    address: &Address,
    release: Release,
    f: impl FnOnce(&mut Resource) + Send + 'static,
) -> Result<(), StepError> {
    let a = address.clone();
    commit_releasing(ctx, address, release, move |st| {
        if let Some(r) = st.get_mut(&a) {
            f(r);
        }
    })
    .await
}

/// A step's last commit: its dependents are released as soon as it is
/// applied and queued, and the step ends once it is durable. Safe because
/// every provider call waits for its own intent to be durable, written
/// after this commit, and the journal acknowledges nothing after a failed
/// write ([`crate::state::Journal::commit_applied`]): a dependent never
/// acts on a result that does not become durable.
async fn commit_releasing(
    ctx: &Ctx,
    address: &Address,
    release: Release,
    f: impl FnOnce(&mut State) + Send + 'static,
) -> Result<(), StepError> {
    let pending = ctx
        .journal
        .commit_applied(address, f)
        .await
        .map_err(StepError::StateWrite)?;
    release.now();
    pending.durable().await.map_err(StepError::StateWrite)
}

/// What a create or update passes to the provider besides the step.
#[derive(Default)]
pub(super) struct Extras<'a> {
    /// A machine's bootstrap document, references resolved.
    pub(super) bootstrap: Option<&'a str>,
    /// A join token and its expiry (unix seconds).
    pub(super) token: Option<(&'a str, i64)>,
    /// The resource as the state has it (an update needs it).
    pub(super) current: Option<&'a Resource>,
}

/// Call the provider for a create or update step: an update when the step
/// updates a resource the state has, a create otherwise.
pub(super) async fn operate(
    ctx: &Ctx,
    provider: &dyn Provider,
    step: &Step,
    spec: &Spec,
    x: Extras<'_>,
) -> Result<Observed, ProviderError> {
    // Providers read the infrastructure their resource depends on; the
    // local dependencies (PKI, bootstrap data) and the token reach them
    // resolved (`bootstrap`, `token`), so they are not copied out of the
    // state for every machine.
    let (deps, lineage) = ctx.journal.read(|s| {
        (
            step.dependencies
                .iter()
                .filter(|d| provider_reads(d.kind()))
                .filter_map(|d| s.get(d).cloned())
                .collect::<Vec<_>>(),
            s.lineage.clone(),
        )
    });
    let redactor = ctx.redactor();
    let cluster = step.address.cluster();
    let input = OpInput {
        address: &step.address,
        cluster: &cluster,
        lineage: &lineage,
        spec,
        deps: deps.iter().collect(),
        bootstrap: x.bootstrap,
        token: x.token,
        redactor: &redactor,
    };
    match (step.op, x.current) {
        (Op::Update, Some(cur)) => provider.update(&input, cur).await,
        _ => provider.create(&input).await,
    }
}

/// The kinds of dependency a provider's create or update is given
/// ([`OpInput::deps`]).
fn provider_reads(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::Network | ResourceKind::Loadbalancer | ResourceKind::Machine
    )
}

/// `operate` with the step's provider, failures as step errors.
async fn provider_call(
    ctx: &Ctx,
    step: &Step,
    spec: &Spec,
    x: Extras<'_>,
) -> Result<Observed, StepError> {
    let p = ctx.provider(step.provider)?;
    let verb = if step.op == Op::Create {
        Verb::Creating
    } else {
        Verb::Updating
    };
    operate(ctx, p.as_ref(), step, spec, x)
        .await
        .map_err(|e| provider_failure(ctx, verb, &step.address, &e))
}

/// A provider's failure as a step error, its message redacted.
pub(super) fn provider_failure(
    ctx: &Ctx,
    verb: Verb,
    address: &Address,
    e: &ProviderError,
) -> StepError {
    StepError::Provider {
        verb,
        address: address.clone(),
        message: ctx.redact(&e.to_string()),
    }
}
