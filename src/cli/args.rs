//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "capi",
    version,
    about = "Plan and apply Kubernetes Cluster API manifests, without a management cluster",
    long_about = "capi reads Cluster API manifests (Cluster, KubeadmControlPlane, MachineDeployment, \
                  infrastructure templates...), compares them with a local state file and shows the \
                  minimal, ordered plan of operations before applying it through a provider \
                  (simulated infrastructure, Docker, OpenStack).",
    after_help = "Exit codes: 0 success, 1 error, 2 changes present (plan --detailed-exitcode) or drift found (drift)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// State file.
    #[arg(long, global = true, env = "CAPI_STATE", default_value = "capi.state.json")]
    pub state: PathBuf,
    /// Disable colours (also: NO_COLOR).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ManifestArgs {
    /// Manifest files, directories (every *.yaml/*.yml) or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Set a variable (clusterctl syntax: ${VAR}, ${VAR:=default}). Repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a YAML file of KEY: value pairs. Repeatable.
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// Run every cluster on this provider instead of its own (`sim` rehearses
    /// Docker or OpenStack manifests on the simulator).
    #[arg(long, value_enum)]
    pub provider: Option<ProviderOverride>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ProviderOverride {
    Sim,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Wait this long for the state lock (e.g. 30s); 0 fails at once.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// Provisioning time of simulated machines (overrides the manifests).
    #[arg(long, value_parser = parse_duration)]
    pub sim_latency: Option<std::time::Duration>,
    /// Read real infrastructure back before planning (--refresh=false skips it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refresh: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    /// Skip the interactive approval.
    #[arg(long)]
    pub auto_approve: bool,
    /// Operations run at the same time.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
}

#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Only this resource and what it depends on. Repeatable.
    #[arg(long = "target", value_name = "ADDRESS")]
    pub targets: Vec<String>,
    /// Force replacement of this resource. Repeatable.
    #[arg(long = "replace", value_name = "ADDRESS")]
    pub replace: Vec<String>,
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::manifest::normalize::go_duration_seconds(s)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a duration like 30s, 2m or 500ms"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the changes that apply would make.
    Plan {
        #[command(flatten)]
        manifests: ManifestArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        targets: TargetArgs,
        /// Exit 0 when there are no changes, 2 when there are, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Apply the manifests: plan, ask for approval, execute.
    Apply {
        #[command(flatten)]
        manifests: ManifestArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        apply: ApplyArgs,
        #[command(flatten)]
        targets: TargetArgs,
    },
    /// Delete everything in the state, in reverse dependency order.
    Destroy {
        #[command(flatten)]
        manifests: ManifestArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Check the manifests and report every problem.
    Validate {
        #[command(flatten)]
        manifests: ManifestArgs,
    },
    /// Print the dependency graph (DOT or indented text).
    Graph {
        #[command(flatten)]
        manifests: ManifestArgs,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
    /// Show the state, or one cluster's part of it.
    Show {
        /// Only this cluster.
        cluster: Option<String>,
    },
    /// Inspect the state.
    #[command(subcommand)]
    State(StateCommand),
    /// Print a JSON Schema: the state file or the plan.
    Schema {
        #[arg(value_enum)]
        which: SchemaKind,
    },
    /// Remove a stale lock record; refused while its holder is alive.
    ForceUnlock {
        /// The lock ID printed by the command that holds it.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SchemaKind {
    State,
    Plan,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List resource addresses.
    List,
    /// Show one resource (secrets are masked).
    Show { address: String },
}
