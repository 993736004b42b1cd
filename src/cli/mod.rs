//! The command-line interface: arguments, resolved settings, the output
//! gate, one file per command. Errors are rendered here, once.

pub(crate) mod args;
pub(crate) mod commands;
pub(crate) mod json;
pub(crate) mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::manifest::{ManifestError, Problem, ProblemReport, SourceFile};
use crate::plan::PlanError;
use crate::provider::ProviderError;
use crate::state::{LockError, StateError};

use args::{Cli, Command, StateCommand};
use output::Printer;

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
    /// Already reported; exit with this code.
    #[error("exit {0}")]
    Exit(u8),
}

impl CliError {
    fn report(&self, p: &Printer) -> u8 {
        match self {
            CliError::Exit(code) => return *code,
            CliError::Manifest(ManifestError::Invalid { problems, files })
            | CliError::Problems(problems, files) => {
                for pr in problems {
                    p.diagnostic(&ProblemReport::new(pr.clone(), files));
                }
                let n = problems.iter().filter(|x| x.is_error()).count();
                if p.json {
                    for pr in problems {
                        p.event(&json::diagnostic(pr));
                    }
                }
                p.error(&format!(
                    "{n} problem{} in the manifests; nothing was changed.",
                    if n == 1 { "" } else { "s" }
                ));
            }
            other => {
                if p.json {
                    p.event(&serde_json::json!({"type": "diagnostic", "severity": "error", "message": other.to_string()}));
                }
                p.error(&other.to_string());
            }
        }
        1
    }
}

/// Terraform spells it `-out FILE` / `-out=FILE`; accept that too.
fn normalise_args(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| match a.to_str() {
        Some("-out") => "--out".into(),
        Some(s) if s.starts_with("-out=") => format!("-{s}").into(),
        _ => a,
    })
    .collect()
}

pub fn run() -> ExitCode {
    let cli = Cli::parse_from(normalise_args(std::env::args_os()));
    let printer = Printer::new(cli.global.no_color, cli.global.json);
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
    let result = rt.block_on(dispatch(cli, &printer));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => ExitCode::from(e.report(&printer)),
    }
}

async fn dispatch(cli: Cli, p: &Printer) -> Result<u8, CliError> {
    let g = &cli.global;
    match cli.command {
        Command::Plan {
            manifests,
            run,
            targets,
            detailed_exitcode,
            out,
        } => {
            commands::plan::run(
                g,
                &manifests,
                &run,
                &targets,
                detailed_exitcode,
                out.as_deref(),
                p,
            )
            .await
        }
        Command::Apply {
            plan_file: Some(f),
            manifests,
            run,
            apply,
            targets,
            health,
        } => {
            if !targets.targets.is_empty() || !targets.replace.is_empty() {
                return Err(CliError::Usage("--target and --replace belong to `capi plan -out FILE`; a saved plan is applied exactly as it was made".into()));
            }
            commands::apply::run_saved(g, &f, &manifests, &run, &apply, &health, p).await
        }
        Command::Apply {
            plan_file: None,
            manifests,
            run,
            apply,
            targets,
            health,
        } => commands::apply::run(g, &manifests, &run, &apply, &targets, &health, p).await,
        Command::Upgrade {
            upgrade,
            manifests,
            run,
            apply,
            health,
        } => commands::upgrade::run(g, &manifests, &run, &apply, &health, &upgrade, p).await,
        Command::Destroy {
            manifests,
            run,
            apply,
        } => commands::destroy::run(g, &manifests, &run, &apply, p).await,
        Command::Drift {
            manifests,
            run,
            ignore,
        } => commands::drift::run(g, &manifests, &run, &ignore, p).await,
        Command::Generate(args::GenerateCommand::Cluster(a)) => commands::generate::run(&a, p),
        Command::Validate { manifests } => commands::validate::run(&manifests, p),
        Command::Graph { manifests, format } => commands::graph::run(g, &manifests, format, p),
        Command::Describe(args::DescribeCommand::Cluster {
            cluster,
            manifests,
            grouping,
        }) => commands::describe::run(g, &cluster, &manifests, grouping, p),
        Command::Show { cluster } => commands::show::run(g, cluster.as_deref(), p),
        Command::State(StateCommand::List) => commands::state::list(g, p),
        Command::State(StateCommand::Show { address }) => commands::state::show(g, &address, p),
        Command::Kubeconfig { cluster, output } => {
            commands::kubeconfig::run(g, &cluster, output.as_deref(), p)
        }
        Command::Schema { which } => {
            let v = match which {
                args::SchemaKind::State => crate::state::schema::state_schema(),
                args::SchemaKind::Plan => crate::plan::schema::plan_schema(),
            };
            p.data(&crate::state::schema::to_file_text(&v));
            Ok(0)
        }
        Command::ForceUnlock { id } => commands::force_unlock::run(g, &id, p),
    }
}
