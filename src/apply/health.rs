//! Health gates between rollout steps (`--health-check CMD`), like kops's
//! rolling-update validation: after a new machine is ready, the command must
//! pass `count` times in a row, `interval` apart, within `timeout`. It runs
//! with `CAPI_CLUSTER`, `CAPI_MACHINE` and `KUBECONFIG` (an admin kubeconfig
//! for the cluster, written once per cluster, mode 0600, into the run's
//! scratch directory) in its environment. Concurrent gates of one cluster
//! share a check that started after they became ready. Also owns building a
//! cluster's admin kubeconfig from the state (`capi kubeconfig` uses it too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::bootstrap;
use crate::provider::Redactor;
use crate::resource::{Address, ClusterId, ResourceKind, Spec};
use crate::state::{State, StateKey};
use crate::util::time::now_unix;

use super::context::Ctx;
use super::error::StepError;
use super::step::finish;
use super::Event;

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub command: String,
    pub count: u32,
    pub interval: Duration,
    pub timeout: Duration,
}

/// One attempt, for progress output.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub(crate) cluster: String,
    pub(crate) machine: String,
    pub(crate) attempt: u32,
    pub(crate) passed: bool,
    pub(crate) output: String,
}

/// Why a cluster's admin kubeconfig cannot be built from the state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KubeconfigError {
    #[error("the cluster has no certificates in the state")]
    NoPki,
    #[error("the cluster has no control-plane endpoint yet")]
    NoEndpoint,
    #[error("the cluster CA certificate is missing")]
    NoCaCert,
    #[error("the cluster CA key is missing")]
    NoCaKey,
    /// The CA key is encrypted and cannot be opened.
    #[error("{0}")]
    Secret(String),
    /// Signing the client certificate failed.
    #[error("{0}")]
    Pki(String),
}

/// Why a health gate stopped the rollout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// The kubeconfig for the check could not be written.
    #[error("{0}")]
    WriteKubeconfig(String),
    #[error(
        "the health check `{command}` did not pass {count} time(s) in a row within {timeout:?} after {machine} joined ({attempts} attempt(s)); the rollout stops here. Last failure output:\n{last_output}"
    )]
    Failed {
        command: String,
        count: u32,
        timeout: Duration,
        machine: String,
        attempts: u32,
        last_output: String,
    },
}

impl GateError {
    /// The same error with every secret `r` knows of hidden in its text.
    pub(crate) fn redacted(self, r: &Redactor) -> GateError {
        match self {
            GateError::Kubeconfig(KubeconfigError::Pki(m)) => {
                GateError::Kubeconfig(KubeconfigError::Pki(r.redact(&m)))
            }
            GateError::Kubeconfig(k) => GateError::Kubeconfig(k),
            GateError::WriteKubeconfig(m) => GateError::WriteKubeconfig(r.redact(&m)),
            GateError::Failed {
                command,
                count,
                timeout,
                machine,
                attempts,
                last_output,
            } => GateError::Failed {
                command: r.redact(&command),
                count,
                timeout,
                machine: r.redact(&machine),
                attempts,
                last_output: r.redact(&last_output),
            },
        }
    }
}

#[derive(Default)]
pub(crate) struct Gates {
    /// Per cluster: when the last successful check sequence started.
    last_pass: std::sync::Mutex<BTreeMap<String, Arc<Mutex<Option<Instant>>>>>,
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Who the check runs for, and where it finds the cluster.
struct Subject<'a> {
    cluster: &'a str,
    machine: &'a str,
    kubeconfig: &'a Path,
}

/// Run the command once, within `limit`: did it pass, and what did it say.
async fn run_check(hc: &HealthCheck, s: &Subject<'_>, limit: Duration) -> (bool, String) {
    let run = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&hc.command)
        .env("CAPI_CLUSTER", s.cluster)
        .env("CAPI_MACHINE", s.machine)
        .env("KUBECONFIG", s.kubeconfig)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(o)) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Ok(Err(e)) => (false, format!("cannot run the health check: {e}")),
        Err(_) => (
            false,
            "the health check command did not finish in time".to_string(),
        ),
    }
}

impl Gates {
    /// Wait until the cluster passes the check (started after `ready_at`).
    async fn gate(
        &self,
        hc: &HealthCheck,
        s: &Subject<'_>,
        ready_at: Instant,
        report: &(dyn Fn(Attempt) + Send + Sync),
    ) -> Result<(), GateError> {
        let slot = self
            .last_pass
            .lock()
            .unwrap()
            .entry(s.cluster.to_string())
            .or_default()
            .clone();
        let mut last = slot.lock().await;
        if last.is_some_and(|t| t >= ready_at) {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + hc.timeout;
        let mut consecutive = 0;
        let mut attempt = 0;
        let mut last_output = String::new();
        loop {
            attempt += 1;
            let remaining = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_secs(1));
            let (passed, output) = run_check(hc, s, remaining).await;
            report(Attempt {
                cluster: s.cluster.to_string(),
                machine: s.machine.to_string(),
                attempt,
                passed,
                output: tail(&output, 5),
            });
            if passed {
                consecutive += 1;
                if consecutive >= hc.count {
                    *last = Some(started);
                    return Ok(());
                }
            } else {
                consecutive = 0;
                last_output = tail(&output, 5);
            }
            if Instant::now() + hc.interval > deadline {
                return Err(GateError::Failed {
                    command: hc.command.clone(),
                    count: hc.count,
                    timeout: hc.timeout,
                    machine: s.machine.to_string(),
                    attempts: attempt,
                    last_output,
                });
            }
            tokio::time::sleep(hc.interval).await;
        }
    }
}

/// The gate after `machine` became ready (a no-op without `--health-check`).
/// The machine stays recorded as ready whatever the gate says.
pub(super) async fn after_machine(ctx: &Ctx, machine: &Address) -> Result<(), GateError> {
    let Some(hc) = &ctx.health else {
        return Ok(());
    };
    let ready_at = Instant::now();
    let kubeconfig = kubeconfig_file(ctx, machine).await?;
    let events = ctx.events.clone();
    let report = move |a: Attempt| events.emit(Event::HealthCheck(a));
    let subject = Subject {
        cluster: machine.cluster_name(),
        machine: machine.name().unwrap_or_default(),
        kubeconfig: &kubeconfig,
    };
    ctx.gates.gate(hc, &subject, ready_at, &report).await
}

/// `observed.health_check` of a machine created behind a health gate:
/// written when it is ready, then replaced by the gate's verdict.
pub(crate) const HEALTH_KEY: &str = "health_check";
pub(crate) const PENDING: &str = "pending";
pub(crate) const PASSED: &str = "passed";
pub(crate) const FAILED: &str = "failed";

/// Record a machine's health-check state (durable when this returns).
pub(super) async fn record(
    ctx: &Ctx,
    machine: &Address,
    verdict: &'static str,
) -> Result<(), StepError> {
    finish(ctx, machine, move |r| {
        r.observed
            .insert(HEALTH_KEY.into(), serde_json::json!(verdict));
    })
    .await
}

/// Run the gate for `machine` and record its verdict.
pub(super) async fn checked(ctx: &Ctx, machine: &Address) -> Result<(), StepError> {
    let verdict = after_machine(ctx, machine).await;
    record(ctx, machine, if verdict.is_ok() { PASSED } else { FAILED }).await?;
    Ok(verdict?)
}

/// Before a machine of a cluster is deleted (with `--health-check`): every
/// other machine of the cluster that never passed its check (it failed, or
/// the run stopped before its verdict) is checked again and must pass. A
/// failed rollout run again must not remove the last good machine on the
/// word of an unchecked one.
pub(super) async fn recheck_before_delete(ctx: &Ctx, deleting: &Address) -> Result<(), StepError> {
    if ctx.health.is_none() || deleting.kind() != ResourceKind::Machine {
        return Ok(());
    }
    let unchecked: Vec<Address> = ctx.journal.read(|s| unchecked_machines(s, deleting));
    for m in unchecked {
        // Another delete may have checked it meanwhile.
        let still = ctx
            .journal
            .read(|s| unchecked_machines(s, deleting).contains(&m));
        if still {
            checked(ctx, &m).await?;
        }
    }
    Ok(())
}

/// Before a machine is created: the machines of its cluster that an earlier
/// run left unchecked (their check failed, or the run stopped before it)
/// are checked again, and must pass; a failure stops here, before the new
/// machine exists. Machines created by this run are gated where they are
/// created, not here.
pub(super) async fn recheck_before_create(ctx: &Ctx, creating: &Address) -> Result<(), StepError> {
    if ctx.health.is_none() || ctx.earlier_unchecked.is_empty() {
        return Ok(());
    }
    let earlier: Vec<&Address> = ctx
        .earlier_unchecked
        .iter()
        .filter(|m| m.cluster_key() == creating.cluster_key() && *m != creating)
        .collect();
    for m in earlier {
        let still = ctx
            .journal
            .read(|s| unchecked_machines(s, creating).contains(m));
        if still {
            checked(ctx, m).await?;
        }
    }
    Ok(())
}

/// Every machine whose health check has not passed, in a state as a run
/// finds it.
pub(crate) fn unchecked_at_start(s: &State) -> std::collections::BTreeSet<Address> {
    s.resources
        .iter()
        .filter(|r| r.kind == ResourceKind::Machine)
        .filter(|r| {
            r.observed
                .get(HEALTH_KEY)
                .and_then(|v| v.as_str())
                .is_some_and(|v| v != PASSED)
        })
        .map(|r| r.address.clone())
        .collect()
}

/// Machines of `deleting`'s cluster, other than it, whose health check has
/// not passed.
pub(crate) fn unchecked_machines(s: &State, deleting: &Address) -> Vec<Address> {
    s.cluster_resources(deleting.cluster_key())
        .filter(|r| r.kind == ResourceKind::Machine && r.address != *deleting)
        .filter(|r| {
            r.observed
                .get(HEALTH_KEY)
                .and_then(|v| v.as_str())
                .is_some_and(|v| v != PASSED)
        })
        .map(|r| r.address.clone())
        .collect()
}

/// The admin kubeconfig file of the machine's cluster, written on first use.
async fn kubeconfig_file(ctx: &Ctx, machine: &Address) -> Result<PathBuf, GateError> {
    use std::os::unix::fs::OpenOptionsExt;

    let key = machine.cluster_key().to_string();
    let mut files = ctx.kubeconfigs.lock().await;
    if let Some(p) = files.get(&key) {
        return Ok(p.clone());
    }
    let text = ctx
        .journal
        .read(|s| admin_kubeconfig(s, &machine.cluster(), ctx.key.as_deref()))?;
    let path = ctx
        .scratch
        .path()
        .join(format!("{}.kubeconfig", key.replace(':', "_")));
    let write_error = |e: std::io::Error| GateError::WriteKubeconfig(e.to_string());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(write_error)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(write_error)?;
    files.insert(key, path.clone());
    Ok(path)
}

/// An admin kubeconfig for a cluster from the state (CA and endpoint).
pub(crate) fn admin_kubeconfig(
    state: &State,
    cluster: &ClusterId,
    state_key: Option<&StateKey>,
) -> Result<String, KubeconfigError> {
    let pki = state
        .get(&Address::new(cluster, ResourceKind::Pki, None))
        .ok_or(KubeconfigError::NoPki)?;
    let endpoint = state
        .get(&Address::new(cluster, ResourceKind::Loadbalancer, None))
        .and_then(|r| r.observed.get("endpoint"))
        .and_then(|v| v.as_str())
        .ok_or(KubeconfigError::NoEndpoint)?;
    let ca = pki
        .observed
        .get("ca.crt")
        .and_then(|v| v.as_str())
        .ok_or(KubeconfigError::NoCaCert)?;
    let key = pki
        .secret("ca.key", state_key)
        .map_err(|e| KubeconfigError::Secret(e.to_string()))?
        .ok_or(KubeconfigError::NoCaKey)?;
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
        &key,
        &alg,
        not_before,
        now_unix(),
    )
    .map_err(|e| KubeconfigError::Pki(e.to_string()))
}
