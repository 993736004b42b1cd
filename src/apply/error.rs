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
    /// The apply was interrupted while the step waited for a provider slot:
    /// its provider was not called and its intent was taken back (the
    /// scheduler counts it as not started).
    #[error("{address}: interrupted before its provider call")]
    Interrupted { address: Address },
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
            | StepError::NotBootstrapData
            | StepError::Interrupted { .. }) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn record(message: &str) -> ErrorRecord {
        ErrorRecord {
            message: message.into(),
            command: Some("kubeadm join --token abcdef.0123456789abcdef".into()),
            exit_code: Some(1),
            output_tail: Some("token abcdef.0123456789abcdef rejected".into()),
        }
    }

    /// The texts users (and the CLI snapshots) see, one per way to fail.
    #[test]
    fn every_error_renders_its_message() {
        let m = addr("dev/machine/dev-md-0-abcde-0");
        let cases = [
            (
                StepError::Interrupted { address: m.clone() },
                "dev/machine/dev-md-0-abcde-0: interrupted before its provider call",
            ),
            (
                StepError::NoProvider(ProviderKind::Docker),
                "no docker provider is configured",
            ),
            (
                StepError::Provider {
                    verb: Verb::Deleting,
                    address: addr("team:x/network"),
                    message: "network in use".into(),
                },
                "deleting team:x/network: network in use",
            ),
            (
                StepError::Provider {
                    verb: Verb::Updating,
                    address: addr("dev/loadbalancer"),
                    message: "quota".into(),
                },
                "updating dev/loadbalancer: quota",
            ),
            (
                StepError::MachineCreate {
                    address: m.clone(),
                    record: record("bootstrap failed: exit 1"),
                },
                "creating dev/machine/dev-md-0-abcde-0: bootstrap failed: exit 1",
            ),
            (
                StepError::DocumentMissing {
                    address: addr("dev/bootstrap/dev-md-0-abcde-0"),
                    sha256: "ab12".into(),
                    missing_from: DocumentSource::Plan,
                },
                "dev/bootstrap/dev-md-0-abcde-0: bootstrap document ab12 is missing from the plan",
            ),
            (
                StepError::DocumentMissing {
                    address: m.clone(),
                    sha256: "ab12".into(),
                    missing_from: DocumentSource::State,
                },
                "dev/machine/dev-md-0-abcde-0: bootstrap document ab12 is missing from the state",
            ),
            (
                StepError::BootstrapDataMissing {
                    machine: m.clone(),
                    bootstrap: addr("dev/bootstrap/dev-md-0-abcde-0"),
                },
                "dev/machine/dev-md-0-abcde-0: its bootstrap data dev/bootstrap/dev-md-0-abcde-0 is not in the state",
            ),
            (
                StepError::NotBootstrapData,
                "bootstrap resource without a bootstrap spec",
            ),
            (
                StepError::Pki {
                    address: addr("dev/pki"),
                    message: "key generation failed: no entropy".into(),
                },
                "dev/pki: key generation failed: no entropy",
            ),
            (
                StepError::StateWrite("the state writer stopped".into()),
                "the state writer stopped",
            ),
            (
                StepError::HealthGate(GateError::Kubeconfig(
                    super::super::health::KubeconfigError::NoEndpoint,
                )),
                "the cluster has no control-plane endpoint yet",
            ),
            (
                StepError::HealthGate(GateError::Failed {
                    command: "kubectl get nodes".into(),
                    count: 2,
                    timeout: std::time::Duration::from_secs(30),
                    machine: "dev-md-0-abcde-0".into(),
                    attempts: 7,
                    last_output: "connection refused".into(),
                }),
                "the health check `kubectl get nodes` did not pass 2 time(s) in a row within 30s after dev-md-0-abcde-0 joined (7 attempt(s)); the rollout stops here. Last failure output:\nconnection refused",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    /// Each kind of reference names what should have supplied it.
    #[test]
    fn an_unresolved_reference_says_what_supplies_it() {
        let m = addr("dev/machine/dev-cp-0");
        let hint = |reference: &str| {
            StepError::UnresolvedReference {
                machine: m.clone(),
                reference: reference.into(),
            }
            .to_string()
        };
        assert_eq!(
            hint(refs::TOKEN),
            format!(
                "dev/machine/dev-cp-0: cannot resolve <capi:{}> in its bootstrap data (is the bootstrap token known?)",
                refs::TOKEN
            )
        );
        assert!(hint(refs::ENDPOINT).ends_with("(is the control-plane endpoint known?)"));
        assert!(hint("secret:creds:password").ends_with("(is the Secret in the manifests known?)"));
        assert!(hint("ca.key").ends_with("(is the cluster PKI known?)"));
    }

    /// Redaction hides secrets in every text an error carries, and leaves
    /// what it says around them alone.
    #[test]
    fn redaction_hides_secrets_in_every_text() {
        let r = Redactor::new(["abcdef.0123456789abcdef".to_string()]);
        let m = addr("dev/machine/dev-cp-0");
        let e = StepError::MachineCreate {
            address: m.clone(),
            record: record("join with abcdef.0123456789abcdef failed"),
        }
        .redacted(&r);
        let StepError::MachineCreate { record, .. } = &e else {
            panic!("the variant changed: {e:?}");
        };
        assert_eq!(
            record.command.as_deref(),
            Some("kubeadm join --token (sensitive)")
        );
        assert_eq!(
            record.output_tail.as_deref(),
            Some("token (sensitive) rejected")
        );
        assert_eq!(
            e.to_string(),
            "creating dev/machine/dev-cp-0: join with (sensitive) failed"
        );

        let gate = StepError::HealthGate(GateError::Failed {
            command: "check --token abcdef.0123456789abcdef".into(),
            count: 1,
            timeout: std::time::Duration::from_secs(1),
            machine: "dev-cp-0".into(),
            attempts: 1,
            last_output: "abcdef.0123456789abcdef".into(),
        })
        .redacted(&r)
        .to_string();
        assert!(!gate.contains("0123456789abcdef"), "{gate}");
        assert!(gate.contains("`check --token (sensitive)`"), "{gate}");

        for e in [
            StepError::StateWrite("writing abcdef.0123456789abcdef".into()),
            StepError::Panicked("abcdef.0123456789abcdef".into()),
            StepError::Pki {
                address: addr("dev/pki"),
                message: "abcdef.0123456789abcdef".into(),
            },
            StepError::Provider {
                verb: Verb::Creating,
                address: addr("dev/token"),
                message: "abcdef.0123456789abcdef".into(),
            },
        ] {
            let text = e.redacted(&r).to_string();
            assert!(!text.contains("0123456789abcdef"), "{text}");
            assert!(text.contains("(sensitive)"), "{text}");
        }
    }
}
