//! The plan/apply pipeline `plan`, `apply`, `destroy` and `upgrade` share:
//! read the manifests into desired state, lock and load the state, refresh,
//! plan, show the plan, ask, execute with progress and Ctrl-C handling, and
//! report the outcome. Each command file strings these steps together; none
//! repeats them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::sync::Arc;

use crate::apply::{ApplyReport, Cancel, Event, Executor, ManifestSecrets, Outcome};
use crate::desired::Desired;
use crate::manifest::{self, Body, Kind, Manifest};
use crate::plan::{self, DriftEntry, Plan, PlanOptions};
use crate::provider::{self, Provider, ProviderSettings};
use crate::resource::ProviderKind;
use crate::state::{HeldLock, State, StateStore};

use super::json::{self, JsonEvent};
use super::output::Printer;
use super::settings::{ApplySettings, GlobalSettings, ManifestSettings, RunSettings};
use super::{progress, CliError, ExitStatus};

/// Read, substitute and validate the manifests; print their warnings.
pub(crate) fn load_manifests(ms: &ManifestSettings, p: &Printer) -> Result<Manifest, CliError> {
    if ms.files.is_empty() {
        return Err(CliError::Usage(
            "no manifests given: pass -f FILE, -f DIRECTORY or -f - (stdin)".into(),
        ));
    }
    let (sources, skipped) =
        manifest::read_sources_in(&ms.files, ms.recursive, &mut std::io::stdin())?;
    for dir in &skipped {
        p.warning(&format!(
            "{}: subdirectory with manifests not read (pass -R to read subdirectories)",
            dir.display()
        ));
    }
    let m = crate::topology::load(sources, &ms.variables)?;
    for w in &m.warnings {
        if p.json {
            p.emit(&JsonEvent::diagnostic(w));
        }
        p.warning(&format!(
            "{}:{}: {} ({})",
            w.file, w.pos.line, w.message, w.help
        ));
    }
    Ok(m)
}

/// The desired clusters the manifests describe.
pub(crate) fn build_desired(m: &Manifest, ms: &ManifestSettings) -> Result<Desired, CliError> {
    crate::desired::build(m, &ms.graph)
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

/// The state, loaded under its lock (held until this is dropped).
pub(crate) struct LockedState {
    _lock: Box<dyn HeldLock>,
    pub(crate) store: StateStore,
    pub(crate) state: State,
    /// Providers opened while the state loaded, which read ahead for the
    /// refresh that follows (see [`LockedState::acquire_reading_ahead`]).
    pub(crate) opened: Providers,
}

/// Connected providers, by kind.
pub(crate) type Providers = BTreeMap<ProviderKind, Arc<dyn Provider>>;

impl LockedState {
    pub(crate) fn acquire(
        g: &GlobalSettings,
        run: &RunSettings,
        operation: &str,
    ) -> Result<LockedState, CliError> {
        let mut store = g.store()?;
        let lock = store.lock(operation, run.lock_timeout)?;
        let state = store.load()?.unwrap_or_else(State::empty);
        Ok(LockedState {
            _lock: lock,
            store,
            state,
            opened: Providers::new(),
        })
    }

    /// Lock, then load the state while the providers of the desired
    /// clusters that read ahead for a refresh (the simulator: its machine
    /// logs) do so on another thread. With `--refresh=false` it is
    /// [`LockedState::acquire`].
    pub(crate) async fn acquire_reading_ahead(
        g: &GlobalSettings,
        run: &RunSettings,
        operation: &str,
        desired: &Desired,
        m: Option<&Manifest>,
    ) -> Result<LockedState, CliError> {
        let kinds: BTreeSet<ProviderKind> = desired
            .clusters
            .iter()
            .map(|c| c.provider)
            .filter(|k| run.refresh && k.reads_ahead())
            .collect();
        if kinds.is_empty() {
            return LockedState::acquire(g, run, operation);
        }
        let mut store = g.store()?;
        let lock = store.lock(operation, run.lock_timeout)?;
        let opened = providers_for(&kinds, &provider_settings(run, m)).await?;
        let state = std::thread::scope(|scope| {
            let ahead = scope.spawn(|| opened.values().for_each(|p| p.read_ahead()));
            let loaded = store.load();
            // A read-ahead that failed (panicked) leaves the refresh to
            // read for itself.
            let _ = ahead.join();
            loaded
        })?
        .unwrap_or_else(State::empty);
        Ok(LockedState {
            _lock: lock,
            store,
            state,
            opened,
        })
    }

    /// Release the lock now (removing its files) and hand back the state,
    /// for a command that ends without freeing it.
    pub(crate) fn release(self) -> State {
        let LockedState { _lock, state, .. } = self;
        drop(_lock);
        state
    }
}

/// Provider settings with the manifests' Secrets (credentials) added.
pub(crate) fn provider_settings(run: &RunSettings, m: Option<&Manifest>) -> ProviderSettings {
    let mut s = run.providers.clone();
    s.secrets = m.map(manifest_secrets).unwrap_or_default();
    s
}

/// Connect the providers of these kinds.
pub(crate) async fn providers_for(
    kinds: &BTreeSet<ProviderKind>,
    settings: &ProviderSettings,
) -> Result<Providers, CliError> {
    let mut out = BTreeMap::new();
    for k in kinds {
        if *k == ProviderKind::Local {
            continue;
        }
        out.insert(*k, provider::registry(*k, settings).await?);
    }
    Ok(out)
}

/// Refresh what the state knows (unless `--refresh=false`) and put the
/// observations into the plan options. Returns the drift to show. The
/// providers in `opened` are used as they are (they may have read ahead);
/// the others are connected here.
pub(crate) async fn refresh_into(
    opts: &mut PlanOptions,
    state: &State,
    opened: &Providers,
    run: &RunSettings,
    m: Option<&Manifest>,
    p: &Printer,
) -> Result<Vec<DriftEntry>, CliError> {
    if !run.refresh || state.resources.is_empty() {
        return Ok(Vec::new());
    }
    let used = provider::refresh::providers_in(state);
    let missing = used
        .iter()
        .filter(|k| !opened.contains_key(k))
        .copied()
        .collect();
    let mut providers = providers_for(&missing, &provider_settings(run, m)).await.map_err(|e| {
        CliError::Message(format!("{e}\n  (refreshing the state needs the provider; plan without it with --refresh=false)"))
    })?;
    for (k, p) in opened.iter().filter(|(k, _)| used.contains(k)) {
        providers.insert(*k, p.clone());
    }
    let r = provider::refresh::refresh(state, &providers).await?;
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

/// Refresh, then plan the desired state against the locked state.
pub(crate) async fn plan_changes(
    desired: &Desired,
    locked: &LockedState,
    mut opts: PlanOptions,
    run: &RunSettings,
    m: Option<&Manifest>,
    p: &Printer,
) -> Result<Plan, CliError> {
    let mut known = locked.state.cluster_keys();
    known.extend(desired.clusters.iter().map(|c| c.id.key()));
    known.sort();
    known.dedup();
    super::cluster_name::resolve_targets(&mut opts.targets, &known)?;
    let drift = refresh_into(&mut opts, &locked.state, &locked.opened, run, m, p).await?;
    let mut pl = plan::plan(desired, &locked.state, &opts)?;
    pl.drift = drift;
    Ok(pl)
}

/// Show the plan, ask (unless approved), execute. When nothing is asked
/// and the output is JSON, the plan's events (megabytes for thousands of
/// machines) are written on a thread of their own while the execution
/// starts on a copy of what it runs; every later line waits for them.
pub(crate) async fn show_and_execute(
    pl: Plan,
    locked: LockedState,
    run: &RunSettings,
    a: &ApplySettings,
    m: Option<&Manifest>,
    op: &Operation<'_>,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    if p.json && a.auto_approve && !pl.is_empty() {
        let runs = pl.for_execution();
        json::emit_plan_behind(p, pl, op.name);
        return approve_and_execute(runs, locked, run, a, m, op, p).await;
    }
    show_plan(p, &pl, op.name);
    approve_and_execute(pl, locked, run, a, m, op, p).await
}

/// The plan, as text on stdout or as JSON events.
pub(crate) fn show_plan(p: &Printer, pl: &Plan, operation: &str) {
    if p.json {
        json::emit_plan(p, pl, operation);
    } else {
        p.data(&plan::render::render_plan(pl, p.style()));
    }
}

/// The signals that stop an apply: Ctrl-C, a CI runner's or systemd's
/// SIGTERM, a closed terminal's SIGHUP.
pub(crate) struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    Int,
    Term,
    Hup,
}

impl Interrupt {
    /// The exit code of a process that dies of this signal (128 + number).
    pub(crate) fn exit_code(self) -> i32 {
        128 + match self {
            Interrupt::Hup => libc::SIGHUP,
            Interrupt::Int => libc::SIGINT,
            Interrupt::Term => libc::SIGTERM,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Interrupt::Int => "Interrupt received",
            Interrupt::Term => "Interrupt received (SIGTERM)",
            Interrupt::Hup => "Interrupt received (SIGHUP)",
        }
    }
}

impl Interrupts {
    /// From now on these signals no longer end the process: they arrive here.
    /// The process's one set of signal streams, installed on first use and
    /// kept for the life of the process. Once installed, a signal no longer
    /// kills the process, so a signal between two uses (after the approval,
    /// while the providers connect) must wait in these streams for the next
    /// use; a fresh set of streams would never see it.
    pub(crate) fn shared() -> Result<&'static tokio::sync::Mutex<Interrupts>, CliError> {
        static SHARED: std::sync::OnceLock<tokio::sync::Mutex<Interrupts>> =
            std::sync::OnceLock::new();
        if let Some(s) = SHARED.get() {
            return Ok(s);
        }
        let fresh = Interrupts::install()?;
        Ok(SHARED.get_or_init(|| tokio::sync::Mutex::new(fresh)))
    }

    fn install() -> Result<Interrupts, CliError> {
        use tokio::signal::unix::{signal, SignalKind};
        let s = |k| signal(k).map_err(|e| CliError::Message(format!("cannot handle signals: {e}")));
        Ok(Interrupts {
            int: s(SignalKind::interrupt())?,
            term: s(SignalKind::terminate())?,
            hup: s(SignalKind::hangup())?,
        })
    }

    pub(crate) async fn next(&mut self) -> Interrupt {
        tokio::select! {
            _ = self.int.recv() => Interrupt::Int,
            _ = self.term.recv() => Interrupt::Term,
            _ = self.hup.recv() => Interrupt::Hup,
        }
    }
}

/// The answer to the approval prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Yes,
    No,
    /// Ctrl-C (or SIGTERM, SIGHUP) while waiting.
    Interrupted,
}

impl Answer {
    /// Report a refusal: `Some(status)` unless the answer was yes. As
    /// Terraform says it: a plain "Apply cancelled.", not an error (the
    /// exit status is 1 all the same).
    pub(crate) fn refused(self, operation: &str, p: &Printer) -> Option<ExitStatus> {
        let mut name = operation.to_string();
        name[..1].make_ascii_uppercase();
        match self {
            Answer::Yes => None,
            Answer::No => {
                p.message(&format!("{name} cancelled: only 'yes' is accepted."));
                Some(ExitStatus::Failure)
            }
            Answer::Interrupted => {
                p.message(&format!("{name} cancelled."));
                Some(ExitStatus::Failure)
            }
        }
    }
}

/// Ask for `yes` on stdin (a terminal, or a pipe: `echo yes | capi apply`).
/// An interrupt while waiting cancels, leaving no lock behind.
pub(crate) async fn confirm(p: &Printer, what: &str) -> Result<Answer, CliError> {
    let mut interrupts = Interrupts::shared()?.lock().await;
    p.message(&format!("\nDo you want to perform these actions?\n  capi will {what} as shown above.\n  Only 'yes' will be accepted to approve.\n"));
    p.prompt("  Enter a value: ");
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map(|n| (n, line))
    });
    tokio::select! {
        r = read => {
            let (n, line) = r
                .map_err(|e| CliError::Message(e.to_string()))?
                .map_err(|e| CliError::Message(format!("cannot read the answer from stdin: {e}")))?;
            if n == 0 {
                p.message("");
                return Err(CliError::Usage(format!(
                    "{what} needs approval, but stdin gave no answer (it was closed or empty); answer yes on stdin, re-run with --auto-approve (for CI), or save a plan with `capi plan -out FILE` and apply that file"
                )));
            }
            Ok(if line.trim() == "yes" { Answer::Yes } else { Answer::No })
        }
        _ = interrupts.next() => {
            p.message("");
            Ok(Answer::Interrupted)
        }
    }
}

/// What an approved plan runs as: its name in messages and the question
/// asked before it runs.
pub(crate) struct Operation<'a> {
    /// `apply`, `destroy`, `upgrade`.
    pub(crate) name: &'a str,
    /// "apply these changes", shown in the approval prompt.
    pub(crate) question: &'a str,
    /// Already approved (a saved plan, or an earlier question).
    pub(crate) approved: bool,
}

/// Ask (unless approved), connect the providers and execute the plan.
pub(crate) async fn approve_and_execute(
    mut pl: Plan,
    locked: LockedState,
    run: &RunSettings,
    a: &ApplySettings,
    m: Option<&Manifest>,
    op: &Operation<'_>,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    if pl.is_empty() {
        return Ok(ExitStatus::Success);
    }
    check_secrets_available(&pl, &locked, a, op.name)?;
    if !op.approved && !a.auto_approve {
        if let Some(status) = confirm(p, op.question).await?.refused(op.name, p) {
            return Ok(status);
        }
    }
    pl.shed_review();
    let kinds: BTreeSet<_> = pl.steps.iter().map(|s| s.provider).collect();
    let providers = providers_for(&kinds, &provider_settings(run, m)).await?;
    let secrets = m.map(manifest_secrets).unwrap_or_default();
    let LockedState {
        _lock,
        mut store,
        mut state,
        opened,
    } = locked;
    // The refresh's providers (and what they read ahead) are done with.
    drop(opened);
    if super::commands::rekey::seal_for_write(&store, &mut state, p) {
        state.serial += 1;
        store.save(&state)?;
    }
    let lock: Arc<dyn HeldLock> = Arc::from(_lock);
    let report = execute(&pl, state, store, (providers, secrets, &lock), run, a, p).await;
    if let Some(why) = lock.lost() {
        p.warning(&format!(
            "the state lock ({}) was lost while this {} ran: {why}. No new operation was started after that; the operations listed as failed were in flight or refused, and the next apply resolves them",
            lock.info().id,
            op.name
        ));
    }
    drop(lock);
    Ok(report_outcome(&report, &pl, op.name, p))
}

/// Refuse, before anything changes, a plan that needs the state's encrypted
/// sensitive values when no key was given (a wrong key was refused when the
/// state was loaded): machines created (their bootstrap data holds the join
/// token and CA keys), certificates or tokens generated (they would be
/// stored in plaintext beside encrypted ones), health checks (the admin
/// kubeconfig is signed with the CA key).
fn check_secrets_available(
    pl: &Plan,
    locked: &LockedState,
    a: &ApplySettings,
    operation: &str,
) -> Result<(), CliError> {
    use crate::plan::Op;
    use crate::resource::Spec;
    if locked.store.key().is_some() {
        return Ok(());
    }
    let ids = locked.state.sealed_key_ids();
    if ids.is_empty() {
        return Ok(());
    }
    let needs = pl.steps.iter().find_map(|s| match (&s.spec, s.op) {
        (Some(Spec::Machine(_)), Op::Create) => {
            Some((s, "creating it needs the cluster's join token and CA"))
        }
        (Some(Spec::Pki(_) | Spec::Token(_)), Op::Create | Op::Update) => Some((
            s,
            "it generates secrets, which must be encrypted like the others",
        )),
        (_, _)
            if a.health.is_some() && s.address.kind() == crate::resource::ResourceKind::Machine =>
        {
            Some((
                s,
                "the health check's admin kubeconfig is signed with the cluster CA key",
            ))
        }
        _ => None,
    });
    let Some((step, why)) = needs else {
        return Ok(());
    };
    Err(CliError::Usage(format!(
        "this {operation} needs the state's encrypted sensitive values ({} {}: {why}), and no state key was given: the state is encrypted with the key {}; give it with {}. Nothing was changed",
        match step.op {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        },
        step.address,
        ids.into_iter().collect::<Vec<_>>().join(", "),
        crate::state::cipher::KEY_HELP
    )))
}

/// What a plan runs with: the providers, the manifests' Secrets, and the
/// state lock (a lost lock stops new operations).
type Connected<'a> = (
    BTreeMap<ProviderKind, Arc<dyn Provider>>,
    ManifestSecrets,
    &'a Arc<dyn HeldLock>,
);

/// Run a plan with progress output and Ctrl-C handling.
async fn execute(
    pl: &Plan,
    state: State,
    store: StateStore,
    (providers, secrets, lock): Connected<'_>,
    run: &RunSettings,
    a: &ApplySettings,
    p: &Printer,
) -> ApplyReport {
    let cancel = Cancel::default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let sig_cancel = cancel.clone();
    let printer = p.clone();
    // SIGINT, SIGTERM and SIGHUP alike: the first stops new operations, the
    // second exits at once (the state stays valid either way).
    let interrupts = Interrupts::shared();
    let signals = tokio::spawn(async move {
        let Ok(shared) = interrupts else {
            return;
        };
        let mut interrupts = shared.lock().await;
        let first = interrupts.next().await;
        sig_cancel.cancel();
        printer.message(&format!("\n{}: no new operations start; waiting for the ones in flight to finish and saving the state. Press Ctrl-C again to exit at once (the state stays valid; operations in flight are left for the next apply to resolve).", first.describe()));
        let second = interrupts.next().await;
        printer.message("\nTwo interrupts received: exiting now.");
        // An exit runs no destructor: write what a burst may be holding.
        printer.release_for_exit();
        std::process::exit(second.exit_code());
    });
    // A lock that is lost (an etcd lease not renewed) stops new operations.
    let lock_watch = {
        let (lock, cancel) = (Arc::downgrade(lock), cancel.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let Some(lock) = lock.upgrade() else {
                    return;
                };
                if lock.lost().is_some() {
                    cancel.cancel();
                    return;
                }
            }
        })
    };
    let progress = tokio::spawn(progress::report(p.clone(), progress::Tally::new(pl), rx));
    let exec = Executor {
        parallelism: a.parallelism,
        providers,
        secrets,
        cancel,
        events: Some(tx),
        health: a.health.clone(),
        clock: run.fixed_now,
    };
    let report = crate::apply::apply(pl, state, store, exec).await;
    let _ = progress.await;
    signals.abort();
    lock_watch.abort();
    report
}

/// Print the outcome of an apply or destroy.
pub(crate) fn report_outcome(
    r: &ApplyReport,
    pl: &Plan,
    operation: &str,
    p: &Printer,
) -> ExitStatus {
    if p.json {
        p.emit(&JsonEvent::apply_summary(r, operation));
    }
    let count = |f: fn(&Outcome) -> bool| r.outcomes.iter().filter(|o| f(o)).count();
    let skipped = count(|o| matches!(o, Outcome::Skipped));
    let not_started = count(|o| matches!(o, Outcome::NotStarted));
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
        return ExitStatus::Success;
    }
    let mut msg = String::new();
    if r.interrupted {
        msg.push_str(&format!(
            "{operation} interrupted: {not_started} of {} operations did not start. ",
            pl.steps.len()
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
    ExitStatus::Failure
}
