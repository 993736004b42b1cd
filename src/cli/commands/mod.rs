//! One file per command; the helpers here are what they share: reading
//! manifests and variables, the state and its lock, providers, approval, and
//! running the executor with progress output.

pub(crate) mod apply;
pub(crate) mod describe;
pub(crate) mod destroy;
pub(crate) mod drift;
pub(crate) mod force_unlock;
pub(crate) mod generate;
pub(crate) mod graph;
pub(crate) mod kubeconfig;
pub(crate) mod plan;
pub(crate) mod show;
pub(crate) mod state;
pub(crate) mod upgrade;
pub(crate) mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apply::{ApplyReport, Cancel, Event, Executor, ManifestSecrets, Outcome};
use crate::desired::{Desired, GraphOptions};
use crate::manifest::{self, Body, Kind, Manifest, Variables};
use crate::plan::{Op, Plan, PlanOptions};
use crate::provider::{self, Provider, ProviderSettings};
use crate::resource::ProviderKind;
use crate::state::{State, StateLock, StateStore};

use super::args::{GlobalArgs, ManifestArgs, ProviderOverride, RunArgs};
use super::output::Printer;
use super::{json, CliError};

/// Variables from the environment, `--var-file`s and `--var`s.
pub(crate) fn variables(args: &ManifestArgs) -> Result<Variables, CliError> {
    let mut v = Variables::new().with_env(std::env::vars());
    for f in &args.var_files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| CliError::Usage(format!("cannot read --var-file {}: {e}", f.display())))?;
        let map: BTreeMap<String, serde_yaml::Value> =
            serde_yaml::from_str(&text).map_err(|e| {
                CliError::Usage(format!(
                    "--var-file {}: {e}; expected a YAML mapping of KEY: value",
                    f.display()
                ))
            })?;
        for (k, val) in map {
            let s = match val {
                serde_yaml::Value::String(s) => s,
                serde_yaml::Value::Null => String::new(),
                other => serde_yaml::to_string(&other)
                    .unwrap_or_default()
                    .trim_end()
                    .to_string(),
            };
            v.set_from_file(k, s);
        }
    }
    for kv in &args.vars {
        let (k, val) = kv
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--var {kv:?}: expected KEY=VALUE")))?;
        if k.is_empty() {
            return Err(CliError::Usage(format!("--var {kv:?}: the key is empty")));
        }
        v.set(k, val);
    }
    Ok(v)
}

pub(crate) fn load_manifests(args: &ManifestArgs, p: &Printer) -> Result<Manifest, CliError> {
    if args.files.is_empty() {
        return Err(CliError::Usage(
            "no manifests given: pass -f FILE, -f DIRECTORY or -f - (stdin)".into(),
        ));
    }
    let vars = variables(args)?;
    let sources = manifest::read_sources(&args.files, &mut std::io::stdin())?;
    let m = manifest::load(sources, &vars)?;
    for w in &m.warnings {
        if p.json {
            p.event(&json::diagnostic(w));
        }
        p.warning(&format!(
            "{}:{}: {} ({})",
            w.file, w.pos.line, w.message, w.help
        ));
    }
    Ok(m)
}

pub(crate) fn graph_options(args: &ManifestArgs) -> GraphOptions {
    let mut default_options = BTreeMap::new();
    if let Ok(v) = std::env::var("CAPI_DOCKER_PRIVILEGED") {
        default_options.insert("capi.x-k8s.io/docker-privileged".to_string(), v);
    }
    GraphOptions {
        default_options,
        provider_override: args.provider.map(|o| match o {
            ProviderOverride::Sim => ProviderKind::Sim,
        }),
        docker_network: std::env::var("DOCKER_NETWORK")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "kind".into()),
        ..Default::default()
    }
}

pub(crate) fn build_desired(m: &Manifest, args: &ManifestArgs) -> Result<Desired, CliError> {
    crate::desired::build(m, &graph_options(args))
        .map_err(|problems| CliError::Problems(problems, m.files.clone()))
}

/// Secrets in the manifests, by (namespace, name).
pub(crate) fn manifest_secrets(m: &Manifest) -> ManifestSecrets {
    m.of_kind(Kind::Secret)
        .filter_map(|o| match &o.body {
            Body::Secret(d) => Some(((o.key.namespace.clone(), o.key.name.clone()), d.clone())),
            _ => None,
        })
        .collect()
}

/// The simulator's directory beside the state: `capi.state.json` → `capi.state.sim`.
pub(crate) fn sim_dir(state: &Path) -> PathBuf {
    let name = state
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capi.state".into());
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    state.with_file_name(format!("{stem}.sim"))
}

pub(crate) fn provider_settings(
    g: &GlobalArgs,
    run: Option<&RunArgs>,
    manifest: Option<&Manifest>,
) -> ProviderSettings {
    ProviderSettings {
        secrets: manifest.map(manifest_secrets).unwrap_or_default(),
        sim_dir: sim_dir(&g.state),
        sim_latency: run.and_then(|r| r.sim_latency),
        docker: crate::provider::docker::DockerSettings {
            host: std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()),
        },
        openstack: Default::default(),
    }
}

pub(crate) fn load_state(store: &StateStore) -> Result<State, CliError> {
    Ok(store.load()?.unwrap_or_else(State::empty))
}

pub(crate) fn lock(g: &GlobalArgs, operation: &str, run: &RunArgs) -> Result<StateLock, CliError> {
    Ok(StateLock::acquire(&g.state, operation, run.lock_timeout)?)
}

pub(crate) async fn providers_for(
    kinds: &BTreeSet<ProviderKind>,
    settings: &ProviderSettings,
) -> Result<BTreeMap<ProviderKind, Arc<dyn Provider>>, CliError> {
    let mut out = BTreeMap::new();
    for k in kinds {
        if *k == ProviderKind::Local {
            continue;
        }
        out.insert(*k, provider::registry(*k, settings).await?);
    }
    Ok(out)
}

/// Refresh what the state knows (unless --refresh=false) and put the
/// observations into the plan options. Returns the drift to show.
pub(crate) async fn refresh_into(
    opts: &mut PlanOptions,
    state: &State,
    g: &GlobalArgs,
    run: &RunArgs,
    m: Option<&Manifest>,
    p: &Printer,
) -> Result<Vec<crate::plan::DriftEntry>, CliError> {
    if !run.refresh || state.resources.is_empty() {
        return Ok(Vec::new());
    }
    let kinds = crate::provider::refresh::providers_in(state);
    let providers = providers_for(&kinds, &provider_settings(g, Some(run), m)).await.map_err(|e| {
        CliError::Message(format!("{e}\n  (refreshing the state needs the provider; plan without it with --refresh=false)"))
    })?;
    let r = crate::provider::refresh::refresh(state, &providers).await?;
    for (kind, n, t) in &r.stats {
        if !p.json {
            p.message(&format!(
                "Refreshed {n} {kind} resource(s) in {:.2}s",
                t.as_secs_f64()
            ));
        }
    }
    opts.observations = r.observations;
    Ok(r.drift)
}

/// The current time for planning: the clock, or `CAPI_NOW` (unix seconds or
/// RFC 3339) so that plans can be reproduced exactly (tests, reviews).
pub(crate) fn now() -> i64 {
    std::env::var("CAPI_NOW")
        .ok()
        .and_then(|v| {
            v.parse::<i64>()
                .ok()
                .or_else(|| crate::util::time::parse_rfc3339(&v))
        })
        .unwrap_or_else(crate::util::time::now_unix)
}

pub(crate) fn plan_options(now: i64) -> PlanOptions {
    PlanOptions {
        now_unix: now,
        ..Default::default()
    }
}

/// Ask for `yes` on a terminal; refuse without one.
pub(crate) fn confirm(p: &Printer, what: &str) -> Result<bool, CliError> {
    if !p.stdin_tty {
        return Err(CliError::Usage(format!(
            "{what} needs approval, but there is no terminal to ask on; re-run with --auto-approve (for CI), or save a plan with `capi plan -out FILE` and apply that file"
        )));
    }
    p.message(&format!("\nDo you want to perform these actions?\n  capi will {what} as shown above.\n  Only 'yes' will be accepted to approve.\n"));
    eprint!("  Enter a value: ");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Message(e.to_string()))?;
    Ok(line.trim() == "yes")
}

/// Run a plan with progress output and Ctrl-C handling.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute(
    plan: &Plan,
    state: State,
    store: StateStore,
    providers: BTreeMap<ProviderKind, Arc<dyn Provider>>,
    secrets: ManifestSecrets,
    parallelism: usize,
    health: Option<crate::apply::health::HealthCheck>,
    p: &Printer,
) -> ApplyReport {
    let cancel = Cancel::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let sig_cancel = cancel.clone();
    let printer = p.clone();
    let signals = tokio::spawn(async move {
        let mut count = 0;
        while tokio::signal::ctrl_c().await.is_ok() {
            count += 1;
            if count == 1 {
                sig_cancel.cancel();
                printer.message("\nInterrupt received: no new operations start; waiting for the ones in flight to finish and saving the state. Press Ctrl-C again to exit at once (the state stays valid; operations in flight are left for the next apply to resolve).");
            } else {
                printer.message("\nTwo interrupts received: exiting now.");
                std::process::exit(130);
            }
        }
    });
    let total = plan.steps.len();
    let printer = p.clone();
    let progress = tokio::spawn(async move {
        let bar = if printer.stderr_tty && !printer.json {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
                )
                .unwrap(),
            );
            Some(b)
        } else {
            None
        };
        let verb = |op: Op| match op {
            Op::Create => ("Creating...", "Creation complete"),
            Op::Update => ("Modifying...", "Modifications complete"),
            Op::Delete => ("Destroying...", "Destruction complete"),
        };
        while let Some(e) = rx.recv().await {
            match &e {
                Event::Started { address, op, .. } => {
                    if printer.json {
                        printer.event(&serde_json::json!({"type": "apply_start", "address": address, "action": op}));
                    } else if let Some(b) = &bar {
                        b.set_message(format!("{address}: {}", verb(*op).0));
                    } else {
                        printer.message(&format!("{address}: {}", verb(*op).0));
                    }
                }
                Event::Finished {
                    address,
                    op,
                    elapsed,
                    error,
                    ..
                } => {
                    if printer.json {
                        match error {
                            None => printer.event(&serde_json::json!({"type": "apply_complete", "address": address, "action": op, "elapsed_seconds": elapsed.as_secs_f64()})),
                            Some(err) => printer.event(&serde_json::json!({"type": "apply_errored", "address": address, "action": op, "error": err, "elapsed_seconds": elapsed.as_secs_f64()})),
                        }
                    }
                    let line = match error {
                        None => format!(
                            "{address}: {} after {:.1}s",
                            verb(*op).1,
                            elapsed.as_secs_f64()
                        ),
                        Some(err) => format!(
                            "{address}: failed after {:.1}s: {err}",
                            elapsed.as_secs_f64()
                        ),
                    };
                    match &bar {
                        Some(b) => {
                            b.inc(1);
                            if error.is_some() {
                                b.println(line);
                            }
                        }
                        None if !printer.json => printer.message(&line),
                        None => {}
                    }
                }
                Event::Skipped {
                    address,
                    because,
                    op,
                    ..
                } => {
                    if printer.json {
                        printer.event(&serde_json::json!({"type": "apply_skipped", "address": address, "action": op, "because": because}));
                    }
                    let line = format!("{address}: skipped, it depends on {because}, which failed");
                    match &bar {
                        Some(b) => {
                            b.inc(1);
                            b.println(line);
                        }
                        None if !printer.json => printer.message(&line),
                        None => {}
                    }
                }
                Event::Interrupted => {
                    if printer.json {
                        printer.event(&serde_json::json!({"type": "interrupted"}));
                    }
                }
                Event::HealthCheck(a) => {
                    if printer.json {
                        printer.event(&serde_json::json!({"type": "health_check", "cluster": a.cluster, "after": a.machine, "attempt": a.attempt, "passed": a.passed, "output": a.output}));
                    }
                    let line = format!(
                        "health check after {} (attempt {}): {}",
                        a.machine,
                        a.attempt,
                        if a.passed { "passed" } else { "failed" }
                    );
                    match &bar {
                        Some(b) => b.println(line),
                        None if !printer.json => printer.message(&line),
                        None => {}
                    }
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    });
    let exec = Executor {
        parallelism,
        providers,
        secrets,
        cancel,
        events: Some(tx),
        health,
    };
    let report = crate::apply::apply(plan, state, store, exec).await;
    let _ = progress.await;
    signals.abort();
    report
}

/// Print the outcome of an apply or destroy; exit code 0 or 1.
pub(crate) fn report_outcome(r: &ApplyReport, plan: &Plan, operation: &str, p: &Printer) -> u8 {
    if p.json {
        p.event(&json::apply_summary(r, operation));
    }
    let skipped = r
        .outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Skipped))
        .count();
    let not_started = r
        .outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::NotStarted))
        .count();
    if r.ok() {
        if !p.json {
            if operation == "destroy" {
                p.data(&format!(
                    "\nDestroy complete! Resources: {} destroyed.\n",
                    r.destroyed
                ));
            } else {
                p.data(&format!(
                    "\nApply complete! Resources: {} added, {} changed, {} replaced, {} destroyed.\n",
                    r.added, r.changed, r.replaced, r.destroyed
                ));
            }
        }
        return 0;
    }
    let mut msg = String::new();
    if r.interrupted {
        msg.push_str(&format!(
            "{operation} interrupted: {not_started} of {} operations did not start. ",
            plan.steps.len()
        ));
    }
    if !r.failures.is_empty() {
        msg.push_str(&format!("{} operation(s) failed", r.failures.len()));
        if skipped > 0 {
            msg.push_str(&format!(" and {skipped} that depend on them were skipped"));
        }
        msg.push_str(":\n");
        for (a, e) in &r.failures {
            msg.push_str(&format!("  - {a}: {e}\n"));
        }
    }
    msg.push_str(&format!(
        "Done before stopping: {} added, {} changed, {} replaced, {} destroyed. The state is saved; run `capi {operation}` again to finish.",
        r.added, r.changed, r.replaced, r.destroyed
    ));
    p.error(&msg);
    1
}
