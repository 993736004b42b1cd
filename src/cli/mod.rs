//! The command-line interface, in the order a command flows through it:
//! clap arguments (`args`) → resolved settings (`settings`, the only reader
//! of the environment) → one file per command (`commands`), sharing the
//! plan/apply `pipeline` → the one output gate (`output`, with `progress`
//! and `json`). Errors are rendered here, once, and every command ends in an
//! [`ExitStatus`].

pub(crate) mod args;
pub(crate) mod cluster_name;
pub(crate) mod commands;
mod dash_flags;
pub(crate) mod json;
pub(crate) mod output;
pub(crate) mod pipeline;
pub(crate) mod progress;
pub(crate) mod settings;

use std::process::ExitCode;

use clap::Parser;

use crate::manifest::{ManifestError, Problem, ProblemReport, SourceFile};
use crate::plan::PlanError;
use crate::provider::ProviderError;
use crate::state::{LockError, StateError};

use args::{Cli, Command, StateCommand};
use output::Printer;
use settings::{ApplySettings, Env, GlobalSettings, ManifestSettings, RunSettings};

/// How a command ended, as the process exit code says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    /// 0: done; `plan --detailed-exitcode`: no changes; `drift`: none.
    Success,
    /// 1: an error (reported before returning this).
    Failure,
    /// 2 with `plan --detailed-exitcode`: there are changes to apply.
    Changes,
    /// 2 for `drift`: something changed outside capi.
    Drift,
}

impl ExitStatus {
    pub(crate) fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Changes | ExitStatus::Drift => 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{} problem(s) in the manifests", .0.len())]
    Problems(Vec<Problem>, Vec<SourceFile>),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Message(String),
}

/// A JSON diagnostic's own message (else the error's), file and line.
type JsonPlace = (Option<String>, Option<String>, Option<u32>);

impl CliError {
    /// The error's JSON diagnostics: a message of their own (else the
    /// error's), a file and a line. One per unset variable's use, or one.
    fn locations(&self) -> Vec<JsonPlace> {
        let at = |file: &str, line: u32| vec![(None, Some(file.to_string()), Some(line))];
        match self {
            CliError::Plan(
                PlanError::Immutable { file, line, .. }
                | PlanError::VersionSkew { file, line, .. }
                | PlanError::ProviderChanged { file, line, .. },
            ) => at(file, *line),
            CliError::Manifest(ManifestError::MissingVariables(vars)) if !vars.is_empty() => vars
                .iter()
                .map(|v| {
                    let message = format!(
                        "variable {} is not set: pass --var {}=VALUE (or --var-file, or the environment), or give it a default with ${{{}:=VALUE}}",
                        v.name, v.name, v.name
                    );
                    (Some(message), Some(v.file.clone()), Some(v.line))
                })
                .collect(),
            _ => vec![(None, None, None)],
        }
    }

    fn report(&self, p: &Printer) -> u8 {
        match self {
            CliError::Manifest(ManifestError::Invalid { problems, files })
            | CliError::Problems(problems, files) => {
                // Problems are sorted, errors first: the first ones are
                // shown in full, the rest counted.
                let max = crate::manifest::limits::MAX_REPORTED_PROBLEMS;
                let (reports, hidden) = ProblemReport::all(problems, files, max);
                for r in &reports {
                    p.diagnostic(r);
                }
                let n = problems.iter().filter(|x| x.is_error()).count();
                if p.json {
                    for pr in problems.iter().take(max) {
                        p.emit(&json::JsonEvent::diagnostic(pr));
                    }
                }
                if hidden > 0 {
                    let note = format!(
                        "{hidden} more problem{} not shown (the first {max} are); fix these and run again",
                        if hidden == 1 { " is" } else { "s are" }
                    );
                    if p.json {
                        p.emit(&json::JsonEvent::message(
                            json::DiagnosticSeverity::Error,
                            note.clone(),
                        ));
                    }
                    p.error(&note);
                }
                p.error(&format!(
                    "{n} problem{} in the manifests; nothing was changed.",
                    if n == 1 { "" } else { "s" }
                ));
            }
            other => {
                if p.json {
                    for (message, file, line) in other.locations() {
                        p.emit(&json::JsonEvent::Diagnostic {
                            severity: json::DiagnosticSeverity::Error,
                            message: message.unwrap_or_else(|| other.to_string()),
                            help: None,
                            file,
                            line,
                            column: None,
                        });
                    }
                }
                p.error(&other.to_string());
            }
        }
        1
    }
}

/// `CAPI_LOG=debug` (or `trace`, `info`...) logs capi's own `tracing` events
/// to stderr; anything else is a list of `target=level` (`capi=debug,hyper=info`).
fn init_logging(env: &Env) {
    let Some(filter) = settings::log_filter(env) else {
        return;
    };
    let level = filter.to_ascii_lowercase();
    let directive = if ["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
        format!("capi={level}")
    } else {
        filter
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let Ok(targets) = directive.parse::<tracing_subscriber::filter::Targets>() else {
        return;
    };
    // The builder's own ceiling is INFO: open it, and let the targets filter.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::io::stderr)
        .with_target(false)
        .finish()
        .with(targets)
        .try_init();
}

pub fn run() -> ExitCode {
    let cli = match Cli::try_parse_from(dash_flags::normalise(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version go to stdout and succeed; every usage error
            // exits 1, never 2 (which means "changes" or "drift").
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let env = Env::capture();
    init_logging(&env);
    let mut printer = Printer::new(
        settings::color_choice(cli.global.no_color, &env),
        cli.global.json,
        settings::dumb_terminal(&env),
    );
    printer.full = cli.global.full;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let code = match rt.block_on(dispatch(cli, &env, &printer)) {
        Ok(status) => status.code(),
        Err(e) => e.report(&printer),
    };
    // Output still being written on its own thread ends before the process.
    printer.finish();
    // A prompt abandoned by an interrupt leaves a blocking read of stdin
    // behind: do not wait for it.
    rt.shutdown_background();
    ExitCode::from(code)
}

/// `capi state ...`: one function per subcommand.
fn dispatch_state(
    g: &GlobalSettings,
    sc: StateCommand,
    env: &Env,
    p: &Printer,
) -> Result<ExitStatus, CliError> {
    match sc {
        StateCommand::List => commands::state::list(g, p),
        StateCommand::Show { address, output } => commands::state::show(g, &address, output, p),
        StateCommand::Rm { addresses } => commands::state_edit::rm(g, &addresses, p),
        StateCommand::Mv { from, to } => commands::state_edit::mv(g, &from, &to, p),
        StateCommand::Pull { output } => commands::state_edit::pull(g, output.as_deref(), p),
        StateCommand::Push { file, force } => commands::state_edit::push(g, &file, force, p),
        StateCommand::Migrate { to } => commands::state_edit::migrate(g, &to, p),
        StateCommand::Rekey {
            new_key_file,
            to_plaintext,
        } => {
            let new = match to_plaintext {
                true => None,
                false => Some(settings::new_state_key(new_key_file.as_deref(), env)?),
            };
            commands::rekey::run(g, new, p)
        }
    }
}

async fn dispatch(cli: Cli, env: &Env, p: &Printer) -> Result<ExitStatus, CliError> {
    let g = GlobalSettings::resolve(&cli.global, env)?;
    let manifests = |a: &args::ManifestArgs| ManifestSettings::resolve(a, env);
    let running = |r: Option<&args::RunArgs>| RunSettings::resolve(&g, r, env);
    match cli.command {
        Command::Plan {
            manifests: m,
            run,
            targets,
            detailed_exitcode,
            destroy,
            out,
        } => {
            let ms = manifests(&m)?;
            let flags = commands::plan::PlanFlags {
                detailed: detailed_exitcode,
                destroy,
                out: out.as_deref(),
            };
            commands::plan::run(&g, &ms, &running(Some(&run))?, &targets, &flags, p).await
        }
        Command::Apply {
            plan_file: Some(f),
            manifests: m,
            run,
            apply,
            targets,
            health,
        } => {
            if !targets.targets.is_empty() || !targets.replace.is_empty() {
                return Err(CliError::Usage("--target and --replace belong to `capi plan -out FILE`; a saved plan is applied exactly as it was made".into()));
            }
            let a = ApplySettings::resolve(&apply, Some(&health));
            commands::apply::run_saved(&g, &f, &manifests(&m)?, &running(Some(&run))?, &a, p).await
        }
        Command::Apply {
            plan_file: None,
            manifests: m,
            run,
            apply,
            targets,
            health,
        } => {
            let a = ApplySettings::resolve(&apply, Some(&health));
            commands::apply::run(&g, &manifests(&m)?, &running(Some(&run))?, &a, &targets, p).await
        }
        Command::Upgrade {
            upgrade,
            manifests: m,
            run,
            apply,
            health,
        } => {
            let a = ApplySettings::resolve(&apply, Some(&health));
            commands::upgrade::run(&g, &manifests(&m)?, &running(Some(&run))?, &a, &upgrade, p)
                .await
        }
        Command::Destroy {
            cluster,
            namespace,
            targets,
            manifests: m,
            run,
            apply,
        } => {
            let a = ApplySettings::resolve(&apply, None);
            let (ms, rs) = (manifests(&m)?, running(Some(&run))?);
            commands::destroy::run(
                &g,
                (cluster.as_deref(), namespace.as_deref()),
                targets,
                &ms,
                &rs,
                &a,
                p,
            )
            .await
        }
        Command::Drift {
            manifests: m,
            run,
            ignore,
        } => commands::drift::run(&g, &manifests(&m)?, &running(Some(&run))?, &ignore, p).await,
        Command::Generate(args::GenerateCommand::Cluster(a)) => commands::generate::run(&a, env, p),
        Command::Validate { manifests: m } => commands::validate::run(&manifests(&m)?, p),
        Command::Graph {
            manifests: m,
            format,
        } => commands::graph::run(&g, &manifests(&m)?, format, p),
        Command::Describe(args::DescribeCommand::Cluster {
            cluster,
            namespace,
            manifests: m,
            grouping,
            output,
        }) => {
            let c = commands::describe::Target {
                cluster: &cluster,
                namespace: namespace.as_deref(),
                grouping,
            };
            commands::describe::run(&g, c, &manifests(&m)?, output, p)
        }
        Command::Show {
            cluster,
            namespace,
            output,
        } => commands::show::run(&g, cluster.as_deref(), namespace.as_deref(), output, p),
        Command::State(sc) => dispatch_state(&g, sc, env, p),
        Command::Import {
            address,
            id,
            manifests: m,
        } => commands::import::run(&g, &manifests(&m)?, &running(None)?, &address, &id, p).await,
        Command::Kubeconfig {
            cluster,
            namespace,
            output,
        } => commands::kubeconfig::run(&g, &cluster, namespace.as_deref(), output.as_deref(), p),
        Command::Schema { which } => {
            let v = match which {
                args::SchemaKind::State => crate::state::schema::state_schema(),
                args::SchemaKind::Plan => crate::plan::schema::plan_schema(),
                args::SchemaKind::Events => json::events_schema(),
            };
            p.data(&crate::state::schema::to_file_text(&v));
            Ok(ExitStatus::Success)
        }
        Command::ForceUnlock { id } => commands::force_unlock::run(&g, &id, p),
        Command::Completion { shell } => Ok(commands::completion::completion(shell, p)),
        Command::Man => Ok(commands::completion::man(p)),
    }
}
