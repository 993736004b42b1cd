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
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct GlobalArgs {
    /// State: a file, or etcd://HOST:PORT[,HOST:PORT...]/PREFIX (a shared state on etcd).
    #[arg(
        long,
        global = true,
        env = "CAPI_STATE",
        default_value = "capi.state.json"
    )]
    pub(crate) state: PathBuf,
    /// The etcd state lock's lease time to live: a holder that dies releases
    /// the lock this long after its last renewal (file states: unused).
    #[arg(long, global = true, env = "CAPI_LOCK_TTL", default_value = "15s", value_parser = parse_duration)]
    pub(crate) lock_ttl: std::time::Duration,
    /// Wait this long for the state lock (e.g. 30s); 0 fails at once.
    #[arg(long, global = true, default_value = "0s", value_parser = parse_duration)]
    pub(crate) lock_timeout: std::time::Duration,
    /// The state key: a file holding 32 random bytes in base64 (make one with
    /// `head -c32 /dev/urandom | base64 > FILE; chmod 600 FILE`), not readable
    /// by group or others. Sensitive values are encrypted with it. Also:
    /// CAPI_STATE_KEY (the base64 itself); the file wins.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) state_key_file: Option<PathBuf>,
    /// Disable colours (also: NO_COLOR).
    #[arg(long, global = true)]
    pub(crate) no_color: bool,
    /// Machine-readable output: one JSON object per line on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Show every change of a big plan (groups with more than 20 machine
    /// changes are otherwise summarised: one in full, then counts).
    #[arg(long, global = true)]
    pub(crate) full: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub(crate) struct ManifestArgs {
    /// Manifest files, directories (every *.yaml/*.yml) or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub(crate) files: Vec<PathBuf>,
    /// Read the subdirectories of -f directories too (as kubectl -R).
    #[arg(short = 'R', long)]
    pub(crate) recursive: bool,
    /// Set a variable (clusterctl syntax: ${VAR}, ${VAR:=default}). Repeatable.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub(crate) vars: Vec<String>,
    /// Read variables from a YAML file of KEY: value pairs. Repeatable.
    #[arg(long = "var-file", value_name = "FILE")]
    pub(crate) var_files: Vec<PathBuf>,
    /// Run every cluster on this provider instead of its own (`sim` rehearses
    /// Docker or OpenStack manifests on the simulator).
    #[arg(long, value_enum)]
    pub(crate) provider: Option<ProviderOverride>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum ProviderOverride {
    Sim,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct RunArgs {
    /// Provisioning time of simulated machines (overrides the manifests).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) sim_latency: Option<std::time::Duration>,
    /// Read real infrastructure back before planning (--refresh=false skips it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) refresh: bool,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ApplyArgs {
    /// Skip the interactive approval.
    #[arg(long)]
    pub(crate) auto_approve: bool,
    /// Provider operations in flight at once, at least 1 (local steps take no slot).
    #[arg(long, default_value = "10")]
    pub(crate) parallelism: std::num::NonZeroUsize,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct UpgradeArgs {
    /// The Kubernetes version to reach. Without it: list the versions the
    /// cluster can move to next.
    #[arg(long, value_name = "VERSION")]
    pub(crate) to: Option<String>,
    /// The cluster (required when the manifests hold several): `name`
    /// (unambiguous), `namespace:name`, or `name -n namespace`.
    pub(crate) cluster: Option<String>,
    /// The cluster's namespace.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub(crate) namespace: Option<String>,
    /// Only these MachineDeployments (default: all of the cluster). Repeatable.
    #[arg(long = "md", value_name = "NAME")]
    pub(crate) md: Vec<String>,
    /// Intermediate version for a minor of a chained upgrade (default vX.Y.0). Repeatable.
    #[arg(long, value_name = "VERSION")]
    pub(crate) via: Vec<String>,
    /// Show the steps and waves only.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Write the new versions into the manifest files (nothing else changes in them).
    #[arg(long)]
    pub(crate) write: bool,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct HealthArgs {
    /// A command that must pass between rollout steps (with CAPI_CLUSTER,
    /// CAPI_MACHINE and KUBECONFIG set); a failure stops the rollout.
    #[arg(long, value_name = "CMD")]
    pub(crate) health_check: Option<String>,
    /// Consecutive passes required.
    #[arg(long, default_value = "2")]
    pub(crate) health_check_count: std::num::NonZeroU32,
    /// Time between attempts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) health_check_interval: std::time::Duration,
    /// Give up after this long.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub(crate) health_check_timeout: std::time::Duration,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct TargetArgs {
    /// Only this and what it depends on: a resource ADDRESS, a cluster
    /// (CLUSTER, Cluster/NAME) or a machine group (KubeadmControlPlane/NAME,
    /// MachineDeployment/NAME, MachineSet/NAME; kcp/, md/, ms/). Repeatable.
    #[arg(long = "target", value_name = "TARGET")]
    pub(crate) targets: Vec<crate::resource::Target>,
    /// Force replacement of this resource. Repeatable.
    #[arg(long = "replace", value_name = "ADDRESS")]
    pub(crate) replace: Vec<crate::resource::Address>,
}

pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    crate::util::time::go_duration_seconds(s)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a duration like 30s, 2m or 500ms"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
        /// Plan the destruction of everything in the state (or what
        /// `--target` names), as `capi destroy` would; `-out FILE` saves it
        /// for `capi apply FILE`.
        #[arg(long)]
        destroy: bool,
        /// Save the plan to FILE; `capi apply FILE` applies exactly it (also `-out FILE`).
        #[arg(long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Apply the manifests: plan, ask for approval, execute. With a saved
    /// plan FILE: apply exactly that plan, without asking.
    Apply {
        /// A plan saved with `capi plan -out FILE`.
        #[arg(value_name = "PLAN_FILE")]
        plan_file: Option<PathBuf>,
        #[command(flatten)]
        manifests: ManifestArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        apply: ApplyArgs,
        #[command(flatten)]
        targets: TargetArgs,
        #[command(flatten)]
        health: HealthArgs,
    },
    /// Rolling Kubernetes upgrade: the control plane, then the
    /// MachineDeployments, one minor version per step.
    Upgrade {
        #[command(flatten)]
        upgrade: UpgradeArgs,
        #[command(flatten)]
        manifests: ManifestArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        apply: ApplyArgs,
        #[command(flatten)]
        health: HealthArgs,
    },
    /// Delete everything in the state (or one cluster), in reverse dependency order.
    Destroy {
        /// Only this cluster (`name` when unambiguous, `namespace:name`, or
        /// `name -n namespace`); the others stay.
        cluster: Option<String>,
        /// The cluster's namespace (then CLUSTER is its bare name).
        #[arg(short = 'n', long, requires = "cluster")]
        namespace: Option<String>,
        /// Only this (and what depends on it): a resource ADDRESS, a cluster,
        /// or a machine group (KubeadmControlPlane/NAME, MachineDeployment/NAME,
        /// MachineSet/NAME). Repeatable.
        #[arg(long = "target", value_name = "TARGET")]
        targets: Vec<crate::resource::Target>,
        #[command(flatten)]
        manifests: ManifestArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        apply: ApplyArgs,
    },
    /// Compare real infrastructure with the state (read-only, no lock).
    /// Exit 0: no drift; 2: drift; 1: error.
    Drift {
        #[command(flatten)]
        manifests: ManifestArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Ignore a resource (ADDRESS) or one attribute (ADDRESS.ATTRIBUTE). Repeatable.
        #[arg(long = "ignore", value_name = "ADDRESS[.ATTRIBUTE]")]
        ignore: Vec<String>,
    },
    /// Render manifests from a template.
    #[command(subcommand)]
    Generate(GenerateCommand),
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
    /// Describe a cluster as a tree (like `clusterctl describe cluster`).
    #[command(subcommand)]
    Describe(DescribeCommand),
    /// Show the state, or one cluster's part of it, or what a saved plan will do.
    Show {
        /// Only this cluster; or a saved plan file (`capi plan -out FILE`) to show what it will do.
        #[arg(value_name = "CLUSTER|PLANFILE")]
        cluster: Option<String>,
        /// The cluster's namespace (then CLUSTER is its bare name).
        #[arg(short = 'n', long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        /// text, json or yaml (secrets masked in all three).
        #[arg(
            short = 'o',
            long = "output",
            value_enum,
            default_value = "text",
            value_name = "FORMAT"
        )]
        output: OutputFormat,
    },
    /// Inspect and edit the state: list, show, rm, pull, push.
    #[command(subcommand)]
    State(StateCommand),
    /// Adopt an existing container, server or simulated record into the
    /// state (like `terraform import`) once its labels say it is ADDRESS of
    /// this state; the next apply adopts it instead of creating another.
    /// Locked, backed up; refused while an apply runs.
    #[command(
        after_help = "Example: after `capi state rm demo/machine/demo-md-0-a9ed1-0`, `capi drift` lists it as unmanaged;
  capi import demo/machine/demo-md-0-a9ed1-0 demo-md-0-a9ed1-0 -f cluster.yaml
records it as an interrupted create, and `capi apply` adopts it."
    )]
    Import {
        /// A resource the manifests describe and the state does not hold:
        /// CLUSTER/network, CLUSTER/loadbalancer or CLUSTER/machine/NAME.
        #[arg(value_name = "ADDRESS")]
        address: String,
        /// The object's id or name: a Docker container or network, an
        /// OpenStack server, a simulated machine (name or provider id),
        /// network (name) or load balancer (address).
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        manifests: ManifestArgs,
    },
    /// Write an admin kubeconfig for a cluster (like `clusterctl get kubeconfig`).
    Kubeconfig {
        /// The cluster: `name` (unambiguous), `namespace:name`, or `name -n namespace`.
        cluster: String,
        /// The cluster's namespace (then CLUSTER is its bare name).
        #[arg(short = 'n', long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        /// Write to this file (mode 0600) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a JSON Schema: the state file, the plan, or the `--json` events.
    Schema {
        #[arg(value_enum)]
        which: SchemaKind,
    },
    /// Remove a stale lock record; refused while its holder is alive.
    ForceUnlock {
        /// The lock ID printed by the command that holds it.
        id: String,
    },
    /// Shell completions on stdout (`source <(capi completion bash)`).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout (`capi man | man -l -`).
    Man,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DescribeCommand {
    /// The cluster, its infrastructure, control plane and MachineDeployments,
    /// with READY and UP TO DATE counts (UP TO DATE needs -f manifests).
    Cluster {
        cluster: String,
        /// The cluster's namespace (then CLUSTER is its bare name).
        #[arg(short = 'n', long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        #[command(flatten)]
        manifests: ManifestArgs,
        /// Collapse identical ready machines into one row (--grouping=false lists them all).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        grouping: bool,
        /// text (the tree), json or yaml (its rows, with their depth in the tree).
        #[arg(
            short = 'o',
            long = "output",
            value_enum,
            default_value = "text",
            value_name = "FORMAT"
        )]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// A cluster from a flavor (sim, docker, development, openstack) or --from TEMPLATE,
    /// with clusterctl's variables; prints to stdout.
    Cluster(GenerateArgs),
}

#[derive(Debug, Args, Clone)]
pub(crate) struct GenerateArgs {
    /// The cluster's name (CLUSTER_NAME).
    pub(crate) name: Option<String>,
    /// Built-in template: sim (default), docker, development (a topology
    /// Cluster with its ClusterClass, on Docker), sim-topology (the same on
    /// the simulator), openstack.
    #[arg(long)]
    pub(crate) flavor: Option<String>,
    /// A template file (or - for stdin) instead of a flavor.
    #[arg(long, value_name = "TEMPLATE")]
    pub(crate) from: Option<PathBuf>,
    /// KUBERNETES_VERSION.
    #[arg(long)]
    pub(crate) kubernetes_version: Option<String>,
    /// CONTROL_PLANE_MACHINE_COUNT (default 1).
    #[arg(long)]
    pub(crate) control_plane_machine_count: Option<u32>,
    /// WORKER_MACHINE_COUNT (default 0).
    #[arg(long)]
    pub(crate) worker_machine_count: Option<u32>,
    /// NAMESPACE (default: $NAMESPACE, else default).
    #[arg(long, short = 'n')]
    pub(crate) target_namespace: Option<String>,
    /// List the template's variables instead of rendering it.
    #[arg(long)]
    pub(crate) list_variables: bool,
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub(crate) vars: Vec<String>,
    #[arg(long = "var-file", value_name = "FILE")]
    pub(crate) var_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SchemaKind {
    /// The state file.
    State,
    /// A plan (`capi plan -out`, the `plan` JSON event).
    Plan,
    /// The lines of a `--json` stream.
    Events,
}

/// `-o FORMAT` of `describe`, `show` and `state show`, as kubectl spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// For people (the default).
    Text,
    /// One JSON document (pretty-printed); `--json` gives the event stream.
    Json,
    /// One YAML document.
    Yaml,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Dot,
    Text,
}

#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// List resource addresses.
    List,
    /// Show one resource (secrets are masked).
    Show {
        address: String,
        /// json (the default) or yaml.
        #[arg(
            short = 'o',
            long = "output",
            value_enum,
            default_value = "json",
            value_name = "FORMAT"
        )]
        output: OutputFormat,
    },
    /// Forget resources (their infrastructure is not touched). Locked, backed up.
    Rm {
        #[arg(required = true, value_name = "ADDRESS")]
        addresses: Vec<String>,
    },
    /// Give a renamed machine group its machines: [CLUSTER/]KIND/NAME to the
    /// new name (`capi state mv md/md-0 md/workers`). Locked, backed up.
    Mv {
        #[arg(value_name = "FROM")]
        from: String,
        #[arg(value_name = "TO")]
        to: String,
    },
    /// The whole state as JSON, as stored: private keys included (like `capi
    /// kubeconfig`) in a plaintext state; encrypted values stay encrypted
    /// (no key needed, none used).
    Pull {
        /// Write to this file (mode 0600) instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Replace the state with FILE: same lineage and a newer serial, unless --force.
    Push {
        file: PathBuf,
        /// Push another lineage or an older serial anyway.
        #[arg(long)]
        force: bool,
    },
    /// Encrypt every sensitive value again under a new state key (the current
    /// one from --state-key-file or CAPI_STATE_KEY, if the state is encrypted),
    /// or decrypt them all with --to-plaintext. Locked, backed up.
    Rekey {
        /// The new key (32 random bytes, base64; mode 0600). Also:
        /// CAPI_STATE_NEW_KEY (the base64 itself).
        #[arg(long, value_name = "FILE", conflicts_with = "to_plaintext")]
        new_key_file: Option<PathBuf>,
        /// Store every sensitive value in plaintext (no encryption at rest).
        #[arg(long)]
        to_plaintext: bool,
    },
    /// Copy the state to another backend (a file or etcd://...); the source
    /// is left intact and marked as migrated, so it is not used by mistake.
    Migrate {
        /// The destination: a path or etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
        #[arg(long, value_name = "URL")]
        to: String,
    },
}
