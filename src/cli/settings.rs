//! The settings layer: command-line arguments and the environment, resolved
//! once into typed settings the commands use. This is the only place (with
//! clap's `env = ...` attributes in `args.rs`) where `capi` reads environment
//! variables; nothing below the CLI sees a raw argument or an environment
//! variable.
//!
//! The environment is captured once ([`Env::capture`]) so that resolution is
//! a function of (arguments, environment) and tests can resolve settings
//! from a map.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::apply::health::HealthCheck;
use crate::desired::GraphOptions;
use crate::manifest::Variables;
use crate::provider::docker::DockerSettings;
use crate::provider::openstack::OpenStackSettings;
use crate::provider::{Overrides, ProviderSettings};
use crate::resource::ProviderKind;
use crate::state::{Credentials, EtcdAccess, Location, StateKey, StateStore, TlsFiles};

use super::args::{ApplyArgs, GlobalArgs, HealthArgs, ManifestArgs, ProviderOverride, RunArgs};
use super::CliError;

/// The process environment, read once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub(crate) fn capture() -> Env {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        Env {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A variable's value; an empty value counts as unset.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn is_set(&self, key: &str) -> bool {
        self.vars.contains_key(key)
    }

    /// Every variable, for clusterctl's `${VAR}` substitution.
    pub(crate) fn all(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.vars.iter().map(|(k, v)| (k.clone(), v.clone()))
    }

    fn parsed<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, CliError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| CliError::Usage(format!("{key}={v:?} is not a valid value"))),
        }
    }
}

/// Settings every command has.
#[derive(Debug, Clone)]
pub(crate) struct GlobalSettings {
    /// The state file, resolved to the real file (symlinks followed): what
    /// is locked, read and written, and what side files sit beside.
    pub(crate) state: PathBuf,
    /// The state path as given, for messages.
    pub(crate) state_arg: PathBuf,
    /// Where the state lives: the file above, or an etcd prefix.
    pub(crate) location: Location,
    /// `--lock-ttl`: the etcd lock lease's time to live.
    pub(crate) lock_ttl: Duration,
    /// `--lock-timeout`: how long to wait for the state lock.
    pub(crate) lock_timeout: Duration,
    /// etcd's authentication, as etcdctl takes it: `ETCDCTL_USER=user:password`,
    /// or `ETCDCTL_USER=user` with `ETCDCTL_PASSWORD`.
    pub(crate) etcd_auth: Option<Credentials>,
    /// etcd's TLS files, as etcdctl takes them: `ETCDCTL_CACERT`,
    /// `ETCDCTL_CERT`, `ETCDCTL_KEY` (any of them: the endpoints are https).
    pub(crate) etcd_tls: TlsFiles,
    /// The state key: `--state-key-file`, or `CAPI_STATE_KEY`.
    pub(crate) state_key: Option<Arc<StateKey>>,
    /// A fixed clock for the planner: `CAPI_NOW` (unix seconds or RFC
    /// 3339), so that plans can be reproduced exactly.
    fixed_now: Option<i64>,
}

impl GlobalSettings {
    pub(crate) fn resolve(g: &GlobalArgs, env: &Env) -> Result<GlobalSettings, CliError> {
        let fixed_now = match env.get("CAPI_NOW") {
            None => None,
            Some(v) => Some(
                v.parse::<i64>()
                    .ok()
                    .or_else(|| crate::util::time::parse_rfc3339(v))
                    .ok_or_else(|| {
                        CliError::Usage(format!(
                            "CAPI_NOW={v:?}: expected unix seconds or an RFC 3339 time"
                        ))
                    })?,
            ),
        };
        let given = g.state.to_string_lossy().into_owned();
        let location = Location::parse(&given).map_err(CliError::Usage)?;
        if g.lock_ttl < Duration::from_secs(2) {
            return Err(CliError::Usage(format!(
                "--lock-ttl {:?} is too short: etcd needs a few seconds (2s at least) to renew a lease",
                g.lock_ttl
            )));
        }
        let state = match &location {
            // An unusable path fails later, where it is opened, with the
            // error that says why.
            Location::File(p) => {
                crate::state::files::resolve_state_path(p).unwrap_or_else(|_| p.clone())
            }
            // Local side files (the simulator's world) are named after the prefix.
            Location::Etcd { prefix, .. } => {
                PathBuf::from(format!("capi-etcd-{}.json", prefix.replace('/', "-")))
            }
        };
        let state_for_location = state.clone();
        Ok(GlobalSettings {
            state,
            state_arg: g.state.clone(),
            location: match location {
                Location::File(_) => Location::File(state_for_location),
                etcd => etcd,
            },
            lock_ttl: g.lock_ttl,
            lock_timeout: g.lock_timeout,
            etcd_auth: etcd_auth(env),
            etcd_tls: TlsFiles {
                ca: env.get("ETCDCTL_CACERT").map(PathBuf::from),
                cert: env.get("ETCDCTL_CERT").map(PathBuf::from),
                key: env.get("ETCDCTL_KEY").map(PathBuf::from),
            },
            state_key: state_key(g.state_key_file.as_deref(), env, "CAPI_STATE_KEY")?.map(Arc::new),
            fixed_now,
        })
    }

    /// The state store (file or etcd).
    pub(crate) fn store(&self) -> Result<StateStore, CliError> {
        self.store_at(&self.location)
    }

    /// The state store at `location`, with this command's credentials and key.
    pub(crate) fn store_at(&self, location: &Location) -> Result<StateStore, CliError> {
        Ok(StateStore::open(
            location,
            self.lock_ttl,
            EtcdAccess {
                auth: self.etcd_auth.clone(),
                tls: self.etcd_tls.clone(),
            },
        )?
        .with_key(self.state_key.clone()))
    }

    /// The time for planning: `CAPI_NOW`, or the clock.
    pub(crate) fn now(&self) -> i64 {
        self.fixed_now.unwrap_or_else(crate::util::time::now_unix)
    }

    /// The simulator's directory beside the state: `capi.state.json` → `capi.state.sim`.
    pub(crate) fn sim_dir(&self) -> PathBuf {
        sim_dir(&self.state)
    }
}

fn etcd_auth(env: &Env) -> Option<Credentials> {
    let user = env.get("ETCDCTL_USER")?;
    let (user, password) = match user.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => (
            user.to_string(),
            env.get("ETCDCTL_PASSWORD").unwrap_or_default().to_string(),
        ),
    };
    Some(Credentials { user, password })
}

/// A state key from `file` (which must not be readable by group or others),
/// or else from the variable `var` (the base64 itself).
fn state_key(file: Option<&Path>, env: &Env, var: &str) -> Result<Option<StateKey>, CliError> {
    let (text, source) = match file {
        Some(f) => (read_key_file(f)?, f.display().to_string()),
        None => match env.get(var) {
            Some(v) => (v.to_string(), var.to_string()),
            None => return Ok(None),
        },
    };
    StateKey::from_base64(&text, &source)
        .map(Some)
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// The new key of `capi state rekey`: `--new-key-file`, or `CAPI_STATE_NEW_KEY`.
pub(crate) fn new_state_key(file: Option<&Path>, env: &Env) -> Result<StateKey, CliError> {
    state_key(file, env, "CAPI_STATE_NEW_KEY")?.ok_or_else(|| {
        CliError::Usage(
            "capi state rekey needs the new key: --new-key-file FILE or CAPI_STATE_NEW_KEY=<base64 of 32 bytes> (make one with `head -c32 /dev/urandom | base64`); or --to-plaintext to decrypt every value".into(),
        )
    })
}

fn read_key_file(f: &Path) -> Result<String, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(f).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the state key file {}: {e}",
            f.display()
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CliError::Usage(format!(
            "the state key file {} is readable by others (mode {mode:04o}): refusing to use it. Restrict it with `chmod 600 {}`",
            f.display(),
            f.display()
        )));
    }
    std::fs::read_to_string(f).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the state key file {}: {e}",
            f.display()
        ))
    })
}

fn sim_dir(state: &Path) -> PathBuf {
    let name = state
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capi.state".into());
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    state.with_file_name(format!("{stem}.sim"))
}

/// Where manifests come from and how they are read.
#[derive(Debug, Clone)]
pub(crate) struct ManifestSettings {
    pub(crate) files: Vec<PathBuf>,
    /// `-R`: read subdirectories of `-f` directories.
    pub(crate) recursive: bool,
    /// `--var`, `--var-file` and the environment, in clusterctl's precedence.
    pub(crate) variables: Variables,
    /// `--provider`, the Docker network and default infrastructure options.
    pub(crate) graph: GraphOptions,
}

impl ManifestSettings {
    pub(crate) fn resolve(a: &ManifestArgs, env: &Env) -> Result<ManifestSettings, CliError> {
        let mut default_options = BTreeMap::new();
        if env.is_set("CAPI_DOCKER_PRIVILEGED") {
            default_options.insert(
                "capi.x-k8s.io/docker-privileged".to_string(),
                env.vars["CAPI_DOCKER_PRIVILEGED"].clone(),
            );
        }
        let graph = GraphOptions {
            default_options,
            provider_override: a.provider.map(|o| match o {
                ProviderOverride::Sim => ProviderKind::Sim,
            }),
            docker_network: env.get("DOCKER_NETWORK").unwrap_or("kind").to_string(),
            ..Default::default()
        };
        Ok(ManifestSettings {
            files: a.files.clone(),
            recursive: a.recursive,
            variables: variables(&a.vars, &a.var_files, env)?,
            graph,
        })
    }

    /// `--provider` as written in saved plans.
    pub(crate) fn provider_override_name(&self) -> Option<String> {
        self.graph.provider_override.map(|p| p.as_str().to_string())
    }
}

/// Variables from the environment, `--var-file`s and `--var`s.
pub(crate) fn variables(
    vars: &[String],
    var_files: &[PathBuf],
    env: &Env,
) -> Result<Variables, CliError> {
    let mut v = Variables::new().with_env(env.all());
    for f in var_files {
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
    for kv in vars {
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

/// Settings of commands that lock the state and talk to providers.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    pub(crate) lock_timeout: Duration,
    /// Read real infrastructure back before planning.
    pub(crate) refresh: bool,
    /// How providers are built (the manifests' Secrets are added per command).
    pub(crate) providers: ProviderSettings,
    /// `CAPI_NOW`: the time apply records too (machine creation times), so
    /// a fixed clock stays consistent between planning and applying.
    pub(crate) fixed_now: Option<i64>,
}

impl RunSettings {
    pub(crate) fn resolve(
        g: &GlobalSettings,
        run: Option<&RunArgs>,
        env: &Env,
    ) -> Result<RunSettings, CliError> {
        Ok(RunSettings {
            lock_timeout: g.lock_timeout,
            fixed_now: g.fixed_now,
            refresh: run.is_none_or(|r| r.refresh),
            providers: ProviderSettings {
                sim_dir: g.sim_dir(),
                sim_latency: run.and_then(|r| r.sim_latency),
                docker: DockerSettings {
                    host: env.get("DOCKER_HOST").map(str::to_string),
                },
                openstack: OpenStackSettings {
                    cloud: env.get("OS_CLOUD").map(str::to_string),
                    auth_url_set: env.is_set("OS_AUTH_URL"),
                    ..Default::default()
                },
                secrets: BTreeMap::new(),
                overrides: overrides(env)?,
            },
        })
    }
}

/// Test hooks and tuning knobs, from their `CAPI_*` variables (documented in
/// the provider docs; none is needed in normal use).
fn overrides(env: &Env) -> Result<Overrides, CliError> {
    let d = Overrides::default();
    let pair = |key: &str, v: &str| -> Result<(String, u64), CliError> {
        let bad = || CliError::Usage(format!("{key}: {v:?} is not POINT:N"));
        let (k, n) = v.trim().split_once(':').ok_or_else(bad)?;
        Ok((k.to_string(), n.parse().map_err(|_| bad())?))
    };
    let sim_failures = match env.get("CAPI_SIM_FAIL") {
        None => Vec::new(),
        Some(v) => v
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| pair("CAPI_SIM_FAIL", p))
            .collect::<Result<_, _>>()?,
    };
    Ok(Overrides {
        sim_failures,
        sim_fail_rate: env.parsed("CAPI_SIM_FAIL_RATE")?.unwrap_or(d.sim_fail_rate),
        sim_seed: env.parsed("CAPI_SIM_SEED")?.unwrap_or(d.sim_seed),
        docker_crash: env
            .get("CAPI_DOCKER_CRASH")
            .map(|v| pair("CAPI_DOCKER_CRASH", v))
            .transpose()?,
        openstack_crash_after_server_create: env
            .parsed("CAPI_OPENSTACK_CRASH_AFTER_SERVER_CREATE")?,
        openstack_retries: env
            .parsed("CAPI_OPENSTACK_RETRIES")?
            .unwrap_or(d.openstack_retries),
        openstack_server_timeout: env
            .parsed::<f64>("CAPI_OPENSTACK_SERVER_TIMEOUT")?
            .map(Duration::from_secs_f64)
            .unwrap_or(d.openstack_server_timeout),
    })
}

/// Settings of commands that change infrastructure.
#[derive(Debug, Clone)]
pub(crate) struct ApplySettings {
    pub(crate) auto_approve: bool,
    /// Provider operations in flight at once.
    pub(crate) parallelism: NonZeroUsize,
    /// `--health-check`: a command that must pass after each new machine of a rollout.
    pub(crate) health: Option<HealthCheck>,
}

impl ApplySettings {
    pub(crate) fn resolve(a: &ApplyArgs, h: Option<&HealthArgs>) -> ApplySettings {
        ApplySettings {
            auto_approve: a.auto_approve,
            parallelism: a.parallelism,
            health: h.and_then(|h| {
                h.health_check.as_ref().map(|c| HealthCheck {
                    command: c.clone(),
                    count: h.health_check_count.get(),
                    interval: h.health_check_interval,
                    timeout: h.health_check_timeout,
                })
            }),
        }
    }
}

/// Where `tracing` output goes: `CAPI_LOG` (`debug`, `trace`, or an
/// list of `target=level` such as `capi=debug,hyper=info`), to stderr; off by default.
pub(crate) fn log_filter(env: &Env) -> Option<String> {
    env.get("CAPI_LOG").map(str::to_string)
}

/// Colours: `--no-color`, `NO_COLOR` (any non-empty value) and `CLICOLOR=0`
/// turn them off; `CLICOLOR_FORCE` (non-zero) turns them on even when not
/// on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColorChoice {
    Auto,
    Never,
    Always,
}

/// `TERM=dumb`: no live progress bar (lines instead).
pub(crate) fn dumb_terminal(env: &Env) -> bool {
    env.get("TERM") == Some("dumb")
}

pub(crate) fn color_choice(no_color_flag: bool, env: &Env) -> ColorChoice {
    if no_color_flag || env.get("NO_COLOR").is_some() {
        ColorChoice::Never
    } else if env.get("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
        ColorChoice::Always
    } else if env.get("CLICOLOR") == Some("0") || env.get("TERM") == Some("dumb") {
        ColorChoice::Never
    } else {
        ColorChoice::Auto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_dir_sits_beside_the_state() {
        assert_eq!(
            sim_dir(Path::new("x/capi.state.json")),
            PathBuf::from("x/capi.state.sim")
        );
        assert_eq!(sim_dir(Path::new("s")), PathBuf::from("s.sim"));
    }

    #[test]
    fn overrides_are_parsed_once_and_refuse_nonsense() {
        let env = Env::from_pairs(&[
            ("CAPI_SIM_FAIL", "bootstrap:5, create:2"),
            ("CAPI_OPENSTACK_RETRIES", "2"),
            ("CAPI_DOCKER_CRASH", "create:1"),
        ]);
        let o = overrides(&env).unwrap();
        assert_eq!(
            o.sim_failures,
            vec![("bootstrap".to_string(), 5), ("create".to_string(), 2)]
        );
        assert_eq!(o.openstack_retries, 2);
        assert_eq!(o.docker_crash, Some(("create".to_string(), 1)));
        assert_eq!(
            o.openstack_server_timeout,
            Overrides::default().openstack_server_timeout
        );
        assert!(overrides(&Env::from_pairs(&[("CAPI_SIM_FAIL", "bootstrap")])).is_err());
        assert!(overrides(&Env::from_pairs(&[("CAPI_OPENSTACK_RETRIES", "many")])).is_err());
    }

    #[test]
    fn clock_comes_from_capi_now() {
        let g = GlobalArgs {
            state: "s.json".into(),
            lock_ttl: Duration::from_secs(15),
            lock_timeout: Duration::ZERO,
            state_key_file: None,
            no_color: false,
            json: false,
            full: false,
        };
        let s =
            GlobalSettings::resolve(&g, &Env::from_pairs(&[("CAPI_NOW", "1700000000")])).unwrap();
        assert_eq!(s.now(), 1_700_000_000);
        let s = GlobalSettings::resolve(
            &g,
            &Env::from_pairs(&[("CAPI_NOW", "2023-11-14T22:13:20Z")]),
        )
        .unwrap();
        assert_eq!(s.now(), 1_700_000_000);
        assert!(GlobalSettings::resolve(&g, &Env::from_pairs(&[("CAPI_NOW", "soon")])).is_err());
    }

    #[test]
    fn the_state_key_comes_from_a_private_file_or_the_environment() {
        use std::os::unix::fs::PermissionsExt;
        let k = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let env = Env::from_pairs(&[("CAPI_STATE_KEY", k)]);
        let from_env = state_key(None, &env, "CAPI_STATE_KEY").unwrap().unwrap();
        assert!(state_key(None, &Env::default(), "CAPI_STATE_KEY")
            .unwrap()
            .is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        std::fs::write(&f, format!("{k}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = state_key(Some(&f), &env, "CAPI_STATE_KEY").unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let from_file = state_key(Some(&f), &Env::default(), "CAPI_STATE_KEY")
            .unwrap()
            .unwrap();
        assert_eq!(from_file.id(), from_env.id());
        let short = Env::from_pairs(&[("CAPI_STATE_NEW_KEY", "AAAA")]);
        assert!(new_state_key(None, &short).is_err());
        assert!(new_state_key(None, &Env::default()).is_err());
    }

    #[test]
    fn colours_follow_the_conventions() {
        let c = |pairs: &[(&str, &str)], flag| color_choice(flag, &Env::from_pairs(pairs));
        assert_eq!(c(&[], false), ColorChoice::Auto);
        assert_eq!(c(&[], true), ColorChoice::Never);
        assert_eq!(c(&[("NO_COLOR", "1")], false), ColorChoice::Never);
        assert_eq!(c(&[("NO_COLOR", "")], false), ColorChoice::Auto);
        assert_eq!(c(&[("CLICOLOR", "0")], false), ColorChoice::Never);
        assert_eq!(c(&[("TERM", "dumb")], false), ColorChoice::Never);
        assert_eq!(c(&[("CLICOLOR_FORCE", "1")], false), ColorChoice::Always);
        assert_eq!(
            c(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], false),
            ColorChoice::Never
        );
    }
}
