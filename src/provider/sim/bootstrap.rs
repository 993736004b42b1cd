//! The simulated bootstrap: the cloud-config is parsed as CAPD would
//! (`write_files` and `runcmd`) and every file and command is recorded on
//! the machine, in order, nothing run. The record (started, what ran, how
//! it ended) is one line of the machine log, written in one `write`: a
//! kill leaves either no bootstrap, which the next apply runs, or a whole
//! one, never half of one. A record that says started and not finished
//! (from an earlier layout, or edited) is never bootstrapped again, as
//! CAPD's started marker. With failure injection, the first kubeadm command
//! of the chosen bootstrap fails.
//!
//! Also here: registering a bootstrap token, which needs a bootstrapped,
//! running control-plane machine; only the token id is recorded.

use std::sync::{Arc, Mutex};

use super::machine::observed_of;
use super::store::{read_json, write_json, SimMachine, SimTokens};
use super::SimProvider;
use crate::provider::cloudinit::{self, Action, Actions};
use crate::provider::{Observed, OpInput, ProviderError};

/// The cloud-config documents parsed last, with what they parsed to: the
/// machines of a group share one document, parsed once instead of once per
/// machine. A few are kept (groups of one cluster apply side by side).
#[derive(Default)]
pub(super) struct Parsed(Mutex<Vec<(String, Arc<Actions>)>>);

/// How many documents [`Parsed`] keeps.
const PARSED_KEPT: usize = 8;

impl SimProvider {
    /// The machine's cloud-config as CAPD would run it.
    pub(super) fn actions(&self, input: &OpInput<'_>) -> Result<Arc<Actions>, ProviderError> {
        let doc = input.bootstrap.unwrap_or_default();
        if let Some((_, a)) = self.parsed.0.lock().unwrap().iter().find(|(d, _)| d == doc) {
            return Ok(a.clone());
        }
        let parsed = Arc::new(cloudinit::actions(doc).map_err(ProviderError::Failed)?);
        let mut kept = self.parsed.0.lock().unwrap();
        // Machines of one group starting together may all have parsed it.
        if let Some((_, a)) = kept.iter().find(|(d, _)| d == doc) {
            return Ok(a.clone());
        }
        if kept.len() >= PARSED_KEPT {
            kept.remove(0);
        }
        kept.push((doc.to_string(), parsed.clone()));
        Ok(parsed)
    }
}

/// A machine whose bootstrap started and never finished.
pub(super) fn interrupted(m: &SimMachine) -> ProviderError {
    ProviderError::Bootstrap {
        command: "(interrupted)".into(),
        exit_code: -1,
        output_tail: "bootstrap was interrupted earlier and is never run twice on one machine"
            .into(),
        observed: observed_of(m, false),
    }
}

impl SimProvider {
    /// Record the bootstrap's files and commands on the machine; it ends
    /// running, bootstrapped or failed.
    pub(super) fn run_bootstrap(
        &self,
        input: &OpInput<'_>,
        m: &mut SimMachine,
        acts: &Actions,
    ) -> Result<(), ProviderError> {
        let cluster = input.address.cluster_key();
        let write = |m: &SimMachine| self.with_log(cluster, |l| l.put(m));
        // Nothing runs between the mark and the end, so one line holds
        // both (see the module header).
        m.bootstrap.started = true;
        m.bootstrap.ignored_modules = acts.ignored_modules.clone();
        let fail_bootstrap = self.inject("bootstrap", &input.address.to_string());
        for a in &acts.actions {
            match a {
                Action::Write(f) => m.bootstrap.files.push(f.path.clone()),
                Action::Run(cmd) => {
                    let cmd = cloudinit::capd_command(cmd);
                    let is_kubeadm = cmd.join(" ").contains("kubeadm ");
                    m.bootstrap.commands.push(cmd.clone());
                    if fail_bootstrap && is_kubeadm {
                        let text = input.redactor.redact(&cmd.join(" "));
                        m.bootstrap.failed_command = Some(text.clone());
                        m.status = "running".into();
                        write(m)?;
                        return Err(ProviderError::Bootstrap {
                            command: text,
                            exit_code: 1,
                            output_tail: "simulated bootstrap failure (CAPI_SIM_FAIL)".into(),
                            observed: observed_of(m, false),
                        });
                    }
                }
            }
        }
        m.bootstrap.succeeded = true;
        m.status = "running".into();
        write(m)
    }

    /// Record the token's id and expiry for the cluster.
    pub(super) fn register_token(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        let cluster = input.address.cluster_key();
        let (token, expires) = input
            .token
            .ok_or_else(|| ProviderError::Failed("no token to register".into()))?;
        if self.inject("token", cluster) {
            return Err(ProviderError::Failed(
                "simulated failure registering the bootstrap token (CAPI_SIM_FAIL)".into(),
            ));
        }
        let ready_cp = self.with_log(cluster, |l| l.has_ready_control_plane())?;
        if !ready_cp {
            return Err(ProviderError::Failed(format!("no running control-plane machine in {cluster} to register the bootstrap token with")));
        }
        let path = self.token_path(cluster);
        let mut t = read_json::<SimTokens>(&path)?.unwrap_or_default();
        let id = crate::bootstrap::token::id(token).to_string();
        t.tokens.retain(|(i, _)| *i != id);
        t.tokens.push((id, expires));
        write_json(&path, &t)?;
        Ok(Observed::new())
    }
}
