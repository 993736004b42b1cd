//! The command-line interface: arguments, resolved settings, the output
//! gate, one file per command. Errors are rendered here, once.

pub mod args;
pub mod commands;
pub mod json;
pub mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::manifest::{ManifestError, Problem, ProblemReport, SourceFile};
use crate::plan::PlanError;
use crate::provider::ProviderError;
use crate::state::{LockError, StateError};

use args::{Cli, Command, StateCommand};
use output::Printer;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
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
            CliError::Manifest(ManifestError::Invalid { problems, files }) | CliError::Problems(problems, files) => {
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

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(cli.global.no_color, cli.global.json);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
        Command::Plan { manifests, run, targets, detailed_exitcode } => commands::plan::run(g, &manifests, &run, &targets, detailed_exitcode, p).await,
        Command::Apply { manifests, run, apply, targets } => commands::apply::run(g, &manifests, &run, &apply, &targets, p).await,
        Command::Destroy { manifests, run, apply } => commands::destroy::run(g, &manifests, &run, &apply, p).await,
        Command::Validate { manifests } => commands::validate::run(&manifests, p),
        Command::Graph { manifests, format } => commands::graph::run(g, &manifests, format, p),
        Command::Show { cluster } => commands::show::run(g, cluster.as_deref(), p),
        Command::State(StateCommand::List) => commands::state::list(g, p),
        Command::State(StateCommand::Show { address }) => commands::state::show(g, &address, p),
        Command::Schema { which } => {
            let v = match which {
                args::SchemaKind::State => crate::state::schema::state_schema(),
                args::SchemaKind::Plan => crate::state::schema::plan_schema(),
            };
            p.data(&crate::state::schema::to_file_text(&v));
            Ok(0)
        }
        Command::ForceUnlock { id } => commands::force_unlock::run(g, &id, p),
    }
}
