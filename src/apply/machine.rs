//! Creating a machine: journal the intent, resolve the `<capi:...>`
//! references in its bootstrap document from the state (token, CA hash,
//! endpoint, PKI, the manifests' Secrets), create it at the provider, record
//! the result (a failure keeps its error record: for a bootstrap failure the
//! command, exit code and output tail, and what the provider observed), then
//! run the health gate if the plan asked for one (its result recorded on the
//! machine: `observed.health_check`).

use crate::bootstrap::refs;
use crate::plan::Step;
use crate::provider::ProviderError;
use crate::resource::{Address, ResourceKind, Spec};
use crate::state::{ErrorRecord, State, Status};

use super::context::Ctx;
use super::error::{DocumentSource, StepError};
use super::health;
use super::permit::Permit;
use super::scheduler::Release;
use super::step::{
    finish, finish_releasing, interrupted, journal_pending, operate, take_back, Extras,
};

/// Create the machine of a create step, then gate on its health.
pub(super) async fn create(
    ctx: &Ctx,
    step: &Step,
    spec: Spec,
    permit: Permit,
    release: Release,
) -> Result<(), StepError> {
    interrupted(step, &permit)?;
    health::recheck_before_create(ctx, &step.address).await?;
    interrupted(step, &permit)?;
    // Staged: the intent is made durable while the slot is still taken.
    let before = ctx.journal.read(|s| s.get(&step.address).cloned());
    journal_pending(ctx, step, Status::Creating).await?;
    let doc = ctx
        .journal
        .read(|s| resolve_bootstrap(ctx, s, &step.address))?;
    let Some(permit) = permit.slot().await else {
        return take_back(ctx, &step.address, before).await;
    };
    let r = provider_create(ctx, step, &spec, &doc).await;
    drop(permit);
    let now = ctx.now();
    match r {
        Ok(observed) => {
            let ready = move |r: &mut crate::state::Resource| {
                r.status = Status::Ready;
                r.observed = observed;
                // For spec.rolloutAfter: machines created before it roll.
                r.observed
                    .insert("created_unix".into(), serde_json::json!(now));
                r.error = None;
            };
            if !(step.health_gate && ctx.health.is_some()) {
                return finish_releasing(ctx, &step.address, release, ready).await;
            }
            // The machine is recorded as ready; a failing health gate stops
            // the rollout without undoing it, and the state says the machine
            // has not passed (a later apply checks it again). Its dependents
            // wait for the gate.
            finish(ctx, &step.address, ready).await?;
            health::record(ctx, &step.address, health::PENDING).await?;
            health::checked(ctx, &step.address).await
        }
        Err(Failed {
            error,
            record,
            observed,
        }) => {
            finish(ctx, &step.address, move |r| {
                r.status = Status::Failed;
                r.error = Some(Box::new(record));
                if let Some(o) = observed {
                    r.observed = o;
                }
            })
            .await?;
            Err(error)
        }
    }
}

/// A failed machine create: the step's error and what the state records.
struct Failed {
    error: StepError,
    record: ErrorRecord,
    /// What the provider saw of a machine that exists but did not bootstrap.
    observed: Option<crate::provider::Observed>,
}

async fn provider_create(
    ctx: &Ctx,
    step: &Step,
    spec: &Spec,
    doc: &str,
) -> Result<crate::provider::Observed, Failed> {
    let p = ctx.provider(step.provider).map_err(|error| Failed {
        record: ErrorRecord {
            message: error.to_string(),
            command: None,
            exit_code: None,
            output_tail: None,
        },
        error,
        observed: None,
    })?;
    let extras = Extras {
        bootstrap: Some(doc),
        ..Extras::default()
    };
    operate(ctx, p.as_ref(), step, spec, extras)
        .await
        .map_err(|e| {
            let record = error_record(ctx, &e);
            let observed = match e {
                ProviderError::Bootstrap { observed, .. } => Some(observed),
                _ => None,
            };
            Failed {
                error: StepError::MachineCreate {
                    address: step.address.clone(),
                    record: record.clone(),
                },
                record,
                observed,
            }
        })
}

/// What the state keeps of a provider's failure, redacted.
fn error_record(ctx: &Ctx, e: &ProviderError) -> ErrorRecord {
    match e {
        ProviderError::Bootstrap {
            command,
            exit_code,
            output_tail,
            ..
        } => ErrorRecord {
            message: ctx.redact(&e.to_string()),
            command: Some(ctx.redact(command)),
            exit_code: Some(*exit_code),
            output_tail: Some(ctx.redact(output_tail)),
        },
        other => ErrorRecord {
            message: ctx.redact(&other.to_string()),
            command: None,
            exit_code: None,
            output_tail: None,
        },
    }
}

/// The machine's bootstrap document with every reference resolved.
fn resolve_bootstrap(ctx: &Ctx, s: &State, machine: &Address) -> Result<String, StepError> {
    let name = machine.name().unwrap_or_default();
    let bs_addr = machine.sibling(ResourceKind::Bootstrap, Some(name));
    let bs = s
        .get(&bs_addr)
        .ok_or_else(|| StepError::BootstrapDataMissing {
            machine: machine.clone(),
            bootstrap: bs_addr.clone(),
        })?;
    let sha = &bs
        .attributes
        .as_bootstrap()
        .ok_or(StepError::NotBootstrapData)?
        .sha256;
    let doc = s
        .documents
        .get(sha.as_str())
        .ok_or_else(|| StepError::DocumentMissing {
            address: machine.clone(),
            sha256: sha.to_string(),
            missing_from: DocumentSource::State,
        })?;
    refs::resolve(doc, &|n| reference_value(ctx, s, machine, n)).map_err(|missing| {
        StepError::UnresolvedReference {
            machine: machine.clone(),
            reference: missing,
        }
    })
}

/// The value of the reference `<capi:NAME>` in a machine's bootstrap data.
fn reference_value(ctx: &Ctx, s: &State, machine: &Address, name: &str) -> Option<String> {
    let observed = |kind: ResourceKind, key: &str| {
        s.get(&machine.sibling(kind, None))
            .and_then(|r| r.observed.get(key))
            .and_then(|v| v.as_str().map(str::to_string))
    };
    match name {
        refs::TOKEN => s
            .get(&machine.sibling(ResourceKind::Token, None))
            .and_then(|t| t.secret("token", ctx.key.as_deref()).ok().flatten()),
        refs::CA_CERT_HASH => observed(ResourceKind::Pki, "ca_cert_hash"),
        refs::ENDPOINT => observed(ResourceKind::Loadbalancer, "endpoint"),
        other => {
            if let Some(rest) = other.strip_prefix("secret:") {
                let (secret, key) = rest.split_once(':')?;
                let namespace = machine.cluster().namespace;
                let data = ctx.secrets.get(&(namespace, secret.to_string()))?;
                return data
                    .get(key)
                    .map(|b| String::from_utf8_lossy(b).into_owned());
            }
            let pki = s.get(&machine.sibling(ResourceKind::Pki, None))?;
            pki.secret(other, ctx.key.as_deref())
                .ok()
                .flatten()
                .or_else(|| observed(ResourceKind::Pki, other))
        }
    }
}
