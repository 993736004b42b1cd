//! Why a step failed: one typed error per way a step can go wrong (the
//! provider refused, a machine failed to bootstrap, a bootstrap document or
//! reference could not be found, the state could not be made durable, a
//! health gate did not pass, a step's task panicked). Each renders as the
//! one-line message the progress output, the JSON events and the summary
//! show; `redacted` hides every secret the run knows of before it leaves
//! the executor.

use std::fmt;

use crate::bootstrap::refs;
use crate::provider::Redactor;
use crate::resource::{Address, ProviderKind};
use crate::state::ErrorRecord;

use super::health::GateError;

/// What a provider operation was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Creating,
    Updating,
    Deleting,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Creating => "creating",
            Verb::Updating => "updating",
            Verb::Deleting => "deleting",
        })
    }
}

/// Where a bootstrap document was looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentSource {
    /// The plan's documents (a bootstrap-data step).
    Plan,
    /// The state's documents (a machine resolving its bootstrap data).
    State,
}

impl fmt::Display for DocumentSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DocumentSource::Plan => "plan",
            DocumentSource::State => "state",
        })
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The plan names a provider this run did not connect.
    #[error("no {0} provider is configured")]
    NoProvider(ProviderKind),
    /// The provider's create, update or delete failed (message redacted).
    #[error("{verb} {address}: {message}")]
    Provider {
        verb: Verb,
        address: Address,
        message: String,
    },
    /// Creating a machine failed; `record` is what the state keeps of it
    /// (for a bootstrap failure: the command, its exit code, its output).
    #[error("creating {address}: {}", record.message)]
    MachineCreate {
        address: Address,
        record: ErrorRecord,
    },
    /// A bootstrap document is missing from where it should be.
    #[error("{address}: bootstrap document {sha256} is missing from the {missing_from}")]
    DocumentMissing {
        address: Address,
        sha256: String,
        missing_from: DocumentSource,
    },
    /// A machine's bootstrap-data resource is not in the state.
    #[error("{machine}: its bootstrap data {bootstrap} is not in the state")]
    BootstrapDataMissing {
        machine: Address,
        bootstrap: Address,
    },
    /// The resource at a bootstrap-data address has another kind of spec.
    #[error("bootstrap resource without a bootstrap spec")]
    NotBootstrapData,
    /// A `<capi:...>` reference in a machine's bootstrap data has no value.
    #[error(
        "{machine}: cannot resolve <capi:{reference}> in its bootstrap data (is the {} known?)",
        what_resolves(reference)
    )]
    UnresolvedReference { machine: Address, reference: String },
    /// Generating a cluster's certificates failed.
    #[error("{address}: {message}")]
    Pki { address: Address, message: String },
    /// The state journal could not make a record durable.
    #[error("{0}")]
    StateWrite(String),
    /// The health gate after a machine did not pass (or could not run).
    #[error(transparent)]
    HealthGate(#[from] GateError),
    /// The task running the step (or its blocking work) panicked.
    #[error("{0}")]
    Panicked(String),
}

/// What supplies the value of a bootstrap reference, for the hint.
fn what_resolves(reference: &str) -> &'static str {
    match reference {
        refs::TOKEN => "bootstrap token",
        refs::ENDPOINT => "control-plane endpoint",
        r if r.starts_with("secret:") => "Secret in the manifests",
        _ => "cluster PKI",
    }
}

impl StepError {
    /// The same error with every secret `r` knows of hidden in its text.
    pub(crate) fn redacted(self, r: &Redactor) -> StepError {
        let hide = |s: String| r.redact(&s);
        match self {
            StepError::Provider {
                verb,
                address,
                message,
            } => StepError::Provider {
                verb,
                address,
                message: hide(message),
            },
            StepError::MachineCreate { address, record } => StepError::MachineCreate {
                address,
                record: ErrorRecord {
                    message: hide(record.message),
                    command: record.command.map(hide),
                    exit_code: record.exit_code,
                    output_tail: record.output_tail.map(hide),
                },
            },
            StepError::UnresolvedReference { machine, reference } => {
                StepError::UnresolvedReference {
                    machine,
                    reference: hide(reference),
                }
            }
            StepError::Pki { address, message } => StepError::Pki {
                address,
                message: hide(message),
            },
            StepError::StateWrite(m) => StepError::StateWrite(hide(m)),
            StepError::HealthGate(g) => StepError::HealthGate(g.redacted(r)),
            StepError::Panicked(m) => StepError::Panicked(hide(m)),
            other @ (StepError::NoProvider(_)
            | StepError::DocumentMissing { .. }
            | StepError::BootstrapDataMissing { .. }
            | StepError::NotBootstrapData) => other,
        }
    }
}

