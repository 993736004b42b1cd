//! Health gates between rollout steps (`--health-check CMD`), like kops's
//! rolling-update validation: after a new machine is ready, the command must
//! pass `count` times in a row, `interval` apart, within `timeout`. It runs
//! with `CAPI_CLUSTER`, `CAPI_MACHINE` and `KUBECONFIG` (an admin kubeconfig
//! for the cluster) in its environment. Concurrent gates of one cluster share
//! a check that started after they became ready.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

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

#[derive(Default)]
pub(crate) struct Gates {
    /// Per cluster: when the last successful check sequence started.
    last_pass: std::sync::Mutex<BTreeMap<String, Arc<Mutex<Option<Instant>>>>>,
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Gates {
    /// Wait until the cluster passes the check (started after `ready_at`).
    pub(crate) async fn gate(
        &self,
        hc: &HealthCheck,
        cluster: &str,
        machine: &str,
        kubeconfig: &PathBuf,
        ready_at: Instant,
        report: &(dyn Fn(Attempt) + Send + Sync),
    ) -> Result<(), String> {
        let slot = self
            .last_pass
            .lock()
            .unwrap()
            .entry(cluster.to_string())
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
            let run = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&hc.command)
                .env("CAPI_CLUSTER", cluster)
                .env("CAPI_MACHINE", machine)
                .env("KUBECONFIG", kubeconfig)
                .kill_on_drop(true)
                .output();
            let (passed, output) = match tokio::time::timeout(remaining, run).await {
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
            };
            report(Attempt {
                cluster: cluster.to_string(),
                machine: machine.to_string(),
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
                return Err(format!(
                    "the health check `{}` did not pass {} time(s) in a row within {:?} after {machine} joined ({attempt} attempt(s)); the rollout stops here. Last failure output:\n{last_output}",
                    hc.command, hc.count, hc.timeout
                ));
            }
            tokio::time::sleep(hc.interval).await;
        }
    }
}
