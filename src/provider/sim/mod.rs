//! Simulated infrastructure, like Cluster API's in-memory backend: networks,
//! load balancers and machines kept as JSON files in a directory beside the
//! state (`<state>.sim/`), so they persist between runs and can be inspected
//! or edited (delete a machine file to simulate a machine lost behind capi's
//! back; set its `status` to `stopped`).
//!
//! Machines take the provisioning time of their `DevMachineTemplate`
//! (`inMemory.{vm,node,apiServer,etcd}.provisioning.startupDuration`, with
//! deterministic jitter) or `--sim-latency`. Their bootstrap data is parsed
//! as CAPD would (write_files + runcmd) and every file and command is
//! recorded, in order.
//!
//! Failure injection for tests: `CAPI_SIM_FAIL=machine:3,bootstrap:2` makes
//! the 3rd machine create and the 2nd bootstrap of this process fail (also
//! `network`, `loadbalancer`, `token`, `delete`); `CAPI_SIM_FAIL_RATE=0.1`
//! fails that fraction of machine creates (seeded by `CAPI_SIM_SEED`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::cloudinit::{self, Action};
use super::*;
use crate::resource::{AttributeChange, Observation, Role};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SimBootstrap {
    pub started: bool,
    pub succeeded: bool,
    pub files: Vec<String>,
    pub commands: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_modules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_command: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimMachine {
    pub name: String,
    pub cluster: String,
    pub role: Role,
    pub group: String,
    pub version: String,
    pub ip: String,
    pub provider_id: String,
    /// `provisioning`, `running` or `stopped`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    pub bootstrap: SimBootstrap,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SimNetwork {
    pub(crate) cluster: String,
    pub(crate) name: String,
    pub(crate) cidr: String,
    pub(crate) labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SimMember {
    pub(crate) name: String,
    pub(crate) ip: String,
    pub(crate) weight: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SimLoadBalancer {
    pub(crate) cluster: String,
    pub(crate) ip: String,
    pub(crate) port: u16,
    pub(crate) members: Vec<SimMember>,
    /// Incremented at every reconfiguration (like CAPD's SIGHUP).
    pub(crate) reloads: u64,
    pub(crate) labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub(crate) struct SimTokens {
    /// Token ids with their expiry (the secret half is never stored here).
    pub(crate) tokens: Vec<(String, i64)>,
}

pub struct SimProvider {
    dir: PathBuf,
    latency: Option<Duration>,
    failures: BTreeMap<String, u64>,
    fail_rate: f64,
    seed: u64,
    counters: Mutex<BTreeMap<String, u64>>,
    ips: Mutex<BTreeSet<String>>,
    log_seq: AtomicU64,
    /// `ops.log`, opened at the first event and kept open.
    log_file: Mutex<Option<fs::File>>,
    lb_lock: tokio::sync::Mutex<()>,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Failed(format!("simulator: {what}: {e}"))
}

/// Records up to this size are rewritten in place; larger ones through a
/// temporary file and a rename.
const IN_PLACE_MAX: usize = 4096;

/// Write a simulator record. Small records (every machine) are rewritten in
/// place: creating and renaming a temporary file per write made ext4's inode
/// allocation and directory locks the largest cost of a 1,000-machine apply.
/// The record stays valid JSON whatever kills the process: the new text goes
/// to offset 0 in one write within one page, padded with spaces (JSON allows
/// trailing whitespace) to cover all of the old text; a file killed between
/// its creation and its first write is empty and counts as absent.
fn write_json(path: &Path, v: &impl Serialize) -> Result<(), ProviderError> {
    use std::os::unix::fs::FileExt;
    let mut bytes = serde_json::to_vec_pretty(v).expect("serialisable");
    bytes.push(b'\n');
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    };
    let f = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(p) = path.parent() {
                fs::create_dir_all(p).map_err(|e| io_err(&p.display().to_string(), e))?;
            }
            open()
        }
        r => r,
    }
    .map_err(|e| io_err(&path.display().to_string(), e))?;
    let old = f
        .metadata()
        .map_err(|e| io_err(&path.display().to_string(), e))?
        .len() as usize;
    if bytes.len().max(old) > IN_PLACE_MAX {
        drop(f);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        fs::write(&tmp, &bytes).map_err(|e| io_err(&tmp.display().to_string(), e))?;
        return fs::rename(&tmp, path).map_err(|e| io_err(&path.display().to_string(), e));
    }
    if bytes.len() < old {
        bytes.resize(old, b' ');
    }
    f.write_all_at(&bytes, 0)
        .map_err(|e| io_err(&path.display().to_string(), e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ProviderError> {
    // Another process (`capi drift` beside an apply) can catch a record in
    // the middle of its in-place rewrite; a second look sees it whole.
    let mut attempt = 0;
    loop {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path.display().to_string(), e)),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice(&bytes) {
            Ok(v) => return Ok(Some(v)),
            Err(_) if attempt < 3 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(io_err(
                    &format!("{} is not a valid simulator file", path.display()),
                    e,
                ))
            }
        }
    }
}

/// Sleep until `deadline` to within a fraction of a millisecond. tokio's
/// timer ticks in whole milliseconds and wakes up to one tick late (measured:
/// 1.05 ms on average for a 20 ms sleep), which would add 5% to every
/// simulated operation; the last stretch is slept on a blocking thread.
async fn sleep_precisely_until(deadline: tokio::time::Instant) {
    const COARSE_SLACK: Duration = Duration::from_millis(2);
    if let Some(early) = deadline.checked_sub(COARSE_SLACK) {
        tokio::time::sleep_until(early).await;
    }
    let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

fn h64(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap())
}

/// A duration from a DevMachineTemplate field: `10s` or a number of seconds.
fn duration_of(v: &Value) -> Option<Duration> {
    let secs = crate::util::time::duration_value_seconds(v)?;
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

impl SimProvider {
    /// The simulator in `dir`, without failure injection.
    pub fn open(dir: &Path, latency: Option<Duration>) -> Result<SimProvider, ProviderError> {
        Self::open_with(dir, latency, &Overrides::default())
    }

    /// The simulator in `dir`, failing what `overrides` asks for.
    pub(crate) fn open_with(
        dir: &Path,
        latency: Option<Duration>,
        overrides: &Overrides,
    ) -> Result<SimProvider, ProviderError> {
        let failures = overrides.sim_failures.iter().cloned().collect();
        let fail_rate = overrides.sim_fail_rate;
        let seed = overrides.sim_seed;
        let p = SimProvider {
            dir: dir.to_path_buf(),
            latency,
            failures,
            fail_rate,
            seed,
            counters: Mutex::new(BTreeMap::new()),
            ips: Mutex::new(BTreeSet::new()),
            log_seq: AtomicU64::new(0),
            log_file: Mutex::new(None),
            lb_lock: tokio::sync::Mutex::new(()),
        };
        // Addresses already handed out.
        let mut ips = p.ips.lock().unwrap();
        if let Ok(clusters) = fs::read_dir(dir.join("machines")) {
            for c in clusters.flatten() {
                for f in fs::read_dir(c.path()).into_iter().flatten().flatten() {
                    if let Ok(Some(m)) = read_json::<SimMachine>(&f.path()) {
                        ips.insert(m.ip);
                    }
                }
            }
        }
        drop(ips);
        Ok(p)
    }

    fn network_path(&self, cluster: &str) -> PathBuf {
        self.dir.join("networks").join(format!("{cluster}.json"))
    }
    fn lb_path(&self, cluster: &str) -> PathBuf {
        self.dir
            .join("loadbalancers")
            .join(format!("{cluster}.json"))
    }
    fn token_path(&self, cluster: &str) -> PathBuf {
        self.dir.join("tokens").join(format!("{cluster}.json"))
    }
    pub(crate) fn machine_path(&self, cluster: &str, name: &str) -> PathBuf {
        self.dir
            .join("machines")
            .join(cluster)
            .join(format!("{name}.json"))
    }

    /// All machine records of a cluster (or of all clusters).
    pub fn machines(&self, cluster: Option<&str>) -> Vec<SimMachine> {
        let mut out = Vec::new();
        let dirs: Vec<PathBuf> = match cluster {
            Some(c) => vec![self.dir.join("machines").join(c)],
            None => fs::read_dir(self.dir.join("machines"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect(),
        };
        for d in dirs {
            let mut files: Vec<PathBuf> = fs::read_dir(&d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            files.sort();
            for f in files {
                if let Ok(Some(m)) = read_json::<SimMachine>(&f) {
                    out.push(m);
                }
            }
        }
        out
    }

    /// Append an event to `ops.log` (used by tests to watch the simulated cloud).
    fn log(&self, event: &str, address: &Address, group: &str, version: &str) {
        self.log_with(event, address, group, version, false)
    }

    /// The log is conservative across crashes: a creation is logged before
    /// the machine exists, a deletion after it is gone (again on every retry),
    /// so a reader never misses a machine that exists.
    fn log_with(
        &self,
        event: &str,
        address: &Address,
        group: &str,
        version: &str,
        already_gone: bool,
    ) {
        let mut file = self.log_file.lock().unwrap();
        let seq = self.log_seq.fetch_add(1, Ordering::SeqCst);
        let line = json!({"seq": seq, "pid": std::process::id(), "event": event, "address": address, "group": group, "version": version, "already_gone": already_gone}).to_string();
        if file.is_none() {
            let _ = fs::create_dir_all(&self.dir);
            *file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("ops.log"))
                .ok();
        }
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }

    /// Should the `n`th operation of `kind` fail (failure injection)?
    fn inject(&self, kind: &str, key: &str) -> bool {
        let n = {
            let mut c = self.counters.lock().unwrap();
            let e = c.entry(kind.to_string()).or_insert(0);
            *e += 1;
            *e
        };
        if self.failures.get(kind) == Some(&n) {
            return true;
        }
        if kind == "machine" && self.fail_rate > 0.0 {
            let x = h64(&[&self.seed.to_string(), key]) as f64 / u64::MAX as f64;
            return x < self.fail_rate;
        }
        false
    }

    fn cidr_base(cluster: &str) -> (u8, u8) {
        let h = h64(&[cluster]);
        (64 + (h % 64) as u8, ((h >> 8) % 256) as u8)
    }

    /// A deterministic address inside the cluster's /16, probing past collisions.
    fn allocate_ip(&self, cluster: &str, name: &str) -> String {
        let (a, b) = Self::cidr_base(cluster);
        let mut ips = self.ips.lock().unwrap();
        let start = h64(&[cluster, name]) % 65_000;
        for i in 0..65_000u64 {
            let n = (start + i) % 65_000 + 10;
            let ip = format!("100.{a}.{}.{}", b.wrapping_add((n / 256) as u8), n % 256);
            if ips.insert(ip.clone()) {
                return ip;
            }
        }
        format!("100.{a}.{b}.255")
    }

    fn startup_time(&self, spec: &crate::resource::MachineSpec) -> Duration {
        if let Some(l) = self.latency {
            return l;
        }
        let s = &spec.infra.spec;
        let mut phases = vec!["vm", "node"];
        if spec.role == Role::ControlPlane {
            phases.extend(["apiServer", "etcd"]);
        }
        let mut total = Duration::ZERO;
        for p in phases {
            let prov = s.pointer(&format!("/{p}/provisioning"));
            let Some(d) = prov
                .and_then(|v| v.get("startupDuration"))
                .and_then(duration_of)
            else {
                continue;
            };
            let jitter = prov
                .and_then(|v| v.get("startupJitter"))
                .and_then(|j| {
                    j.as_str()
                        .and_then(|s| s.parse::<f64>().ok())
                        .or(j.as_f64())
                })
                .unwrap_or(0.0);
            let u = h64(&[&spec.name, p]) as f64 / u64::MAX as f64;
            total += d.mul_f64(1.0 + jitter * u);
        }
        total
    }

    async fn reconfigure_lb(
        &self,
        cluster: &str,
        change: impl FnOnce(&mut SimLoadBalancer),
    ) -> Result<(), ProviderError> {
        let _g = self.lb_lock.lock().await;
        let path = self.lb_path(cluster);
        let Some(mut lb) = read_json::<SimLoadBalancer>(&path)? else {
            return Ok(());
        };
        change(&mut lb);
        lb.reloads += 1;
        write_json(&path, &lb)
    }

    fn labels(input: &OpInput<'_>) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert(LABEL_LINEAGE.into(), input.lineage.into());
        l.insert(LABEL_ADDRESS.into(), input.address.to_string());
        l
    }

    fn check_owner(
        &self,
        labels: &BTreeMap<String, String>,
        input: &OpInput<'_>,
        what: &str,
    ) -> Result<(), ProviderError> {
        match labels.get(LABEL_LINEAGE) {
            Some(l) if l == input.lineage => Ok(()),
            other => Err(ProviderError::Conflict(format!(
                "simulated {what} for {} already exists and belongs to another state (lineage {}); delete it from {} or use a different cluster name",
                input.address,
                other.map(String::as_str).unwrap_or("unknown"),
                self.dir.display()
            ))),
        }
    }

    async fn create_machine(
        &self,
        input: &OpInput<'_>,
        spec: &crate::resource::MachineSpec,
    ) -> Result<Observed, ProviderError> {
        // The simulated latency is the whole operation's duration, the
        // simulator's own bookkeeping included.
        let began = tokio::time::Instant::now();
        let cluster = input.address.cluster_key();
        let path = self.machine_path(cluster, &spec.name);
        let group = spec.owner.to_string();
        let existing = read_json::<SimMachine>(&path)?;
        let mut m = match existing {
            Some(m) => {
                self.check_owner(&m.labels, input, "machine")?;
                if m.bootstrap.succeeded {
                    // Adopted (a crash came between its bootstrap and the
                    // state write): announce it again, the log may have
                    // missed it.
                    self.log(
                        "machine-ready",
                        input.address,
                        &group,
                        &spec.version.to_string(),
                    );
                    return Ok(observed_of(&m, true));
                }
                if m.bootstrap.started {
                    // Never run bootstrap twice (CAPD's started marker).
                    return Err(ProviderError::Bootstrap {
                        command: "(interrupted)".into(),
                        exit_code: -1,
                        output_tail: "bootstrap was interrupted earlier and is never run twice on one machine".into(),
                        observed: observed_of(&m, false),
                    });
                }
                m
            }
            None => {
                if self.inject("machine", &input.address.to_string()) {
                    return Err(ProviderError::Failed(format!(
                        "simulated failure creating {} (CAPI_SIM_FAIL)",
                        spec.name
                    )));
                }
                let ip = self.allocate_ip(cluster, &spec.name);
                let mut labels = Self::labels(input);
                labels.insert(LABEL_IDENTITY.into(), spec.identity.clone());
                let m = SimMachine {
                    name: spec.name.clone(),
                    cluster: cluster.to_string(),
                    role: spec.role,
                    group: group.clone(),
                    version: spec.version.to_string(),
                    ip,
                    provider_id: format!("sim:///{cluster}/{}", spec.name),
                    status: "provisioning".into(),
                    labels,
                    bootstrap: SimBootstrap::default(),
                };
                self.log(
                    "machine-created",
                    input.address,
                    &group,
                    &spec.version.to_string(),
                );
                write_json(&path, &m)?;
                m
            }
        };
        // Read the cloud-config before the machine "boots": the simulator's
        // bookkeeping belongs inside the simulated duration.
        let doc = input.bootstrap.unwrap_or_default();
        let acts = cloudinit::actions(doc).map_err(ProviderError::Failed)?;
        let wait = self.startup_time(spec);
        if !wait.is_zero() {
            sleep_precisely_until(began + wait).await;
        }
        m.bootstrap.started = true;
        m.bootstrap.ignored_modules = acts.ignored_modules.clone();
        write_json(&path, &m)?;
        let fail_bootstrap = self.inject("bootstrap", &input.address.to_string());
        for a in acts.actions {
            match a {
                Action::Write(f) => m.bootstrap.files.push(f.path),
                Action::Run(cmd) => {
                    let cmd = cloudinit::capd_command(&cmd);
                    let is_kubeadm = cmd.join(" ").contains("kubeadm ");
                    m.bootstrap.commands.push(cmd.clone());
                    if fail_bootstrap && is_kubeadm {
                        let text = input.redactor.redact(&cmd.join(" "));
                        m.bootstrap.failed_command = Some(text.clone());
                        m.status = "running".into();
                        write_json(&path, &m)?;
                        return Err(ProviderError::Bootstrap {
                            command: text,
                            exit_code: 1,
                            output_tail: "simulated bootstrap failure (CAPI_SIM_FAIL)".into(),
                            observed: observed_of(&m, false),
                        });
                    }
                }
            }
        }
        m.bootstrap.succeeded = true;
        m.status = "running".into();
        write_json(&path, &m)?;
        self.log(
            "machine-ready",
            input.address,
            &group,
            &spec.version.to_string(),
        );
        if spec.role == Role::ControlPlane {
            let (name, ip) = (m.name.clone(), m.ip.clone());
            self.reconfigure_lb(cluster, |lb| {
                if !lb.members.iter().any(|x| x.name == name) {
                    lb.members.push(SimMember {
                        name,
                        ip,
                        weight: 100,
                    });
                    lb.members.sort_by(|a, b| a.name.cmp(&b.name));
                }
            })
            .await?;
        }
        Ok(observed_of(&m, true))
    }
}

fn observed_of(m: &SimMachine, ready: bool) -> Observed {
    let mut o = BTreeMap::new();
    o.insert("ip".into(), json!(m.ip));
    o.insert("provider_id".into(), json!(m.provider_id));
    o.insert("status".into(), json!(m.status));
    o.insert("ready".into(), json!(ready));
    o.insert(
        "bootstrap".into(),
        json!(if m.bootstrap.succeeded {
            "succeeded"
        } else if m.bootstrap.started {
            "failed"
        } else {
            "pending"
        }),
    );
    if !m.bootstrap.ignored_modules.is_empty() {
        o.insert(
            "ignored_cloud_config_modules".into(),
            json!(m.bootstrap.ignored_modules),
        );
    }
    o
}

#[async_trait]
impl Provider for SimProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sim
    }

    async fn create(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        let cluster = input.address.cluster_key();
        match input.spec {
            Spec::Network(n) => {
                let path = self.network_path(cluster);
                if let Some(existing) = read_json::<SimNetwork>(&path)? {
                    self.check_owner(&existing.labels, input, "network")?;
                    return Ok(BTreeMap::from([
                        ("cidr".into(), json!(existing.cidr)),
                        ("name".into(), json!(existing.name)),
                    ]));
                }
                if self.inject("network", cluster) {
                    return Err(ProviderError::Failed(
                        "simulated failure creating the network (CAPI_SIM_FAIL)".into(),
                    ));
                }
                let (a, b) = Self::cidr_base(cluster);
                let net = SimNetwork {
                    cluster: cluster.into(),
                    name: n.name.clone(),
                    cidr: format!("100.{a}.{b}.0/16"),
                    labels: Self::labels(input),
                };
                write_json(&path, &net)?;
                Ok(BTreeMap::from([
                    ("cidr".into(), json!(net.cidr)),
                    ("name".into(), json!(net.name)),
                ]))
            }
            Spec::Loadbalancer(l) => {
                let path = self.lb_path(cluster);
                let lb = match read_json::<SimLoadBalancer>(&path)? {
                    Some(existing) => {
                        self.check_owner(&existing.labels, input, "load balancer")?;
                        existing
                    }
                    None => {
                        if self.inject("loadbalancer", cluster) {
                            return Err(ProviderError::Failed(
                                "simulated failure creating the load balancer (CAPI_SIM_FAIL)"
                                    .into(),
                            ));
                        }
                        let (a, b) = Self::cidr_base(cluster);
                        let lb = SimLoadBalancer {
                            cluster: cluster.into(),
                            ip: format!("100.{a}.{b}.2"),
                            port: l.port,
                            members: vec![],
                            reloads: 0,
                            labels: Self::labels(input),
                        };
                        write_json(&path, &lb)?;
                        lb
                    }
                };
                let endpoint = l
                    .fixed_endpoint
                    .clone()
                    .unwrap_or_else(|| format!("{}:{}", lb.ip, lb.port));
                Ok(BTreeMap::from([
                    ("ip".into(), json!(lb.ip)),
                    ("endpoint".into(), json!(endpoint)),
                ]))
            }
            Spec::Token(_) => {
                let (token, expires) = input
                    .token
                    .ok_or_else(|| ProviderError::Failed("no token to register".into()))?;
                if self.inject("token", cluster) {
                    return Err(ProviderError::Failed(
                        "simulated failure registering the bootstrap token (CAPI_SIM_FAIL)".into(),
                    ));
                }
                let ready_cp = self.machines(Some(cluster)).into_iter().any(|m| {
                    m.role == Role::ControlPlane && m.bootstrap.succeeded && m.status == "running"
                });
                if !ready_cp {
                    return Err(ProviderError::Failed(format!("no running control-plane machine in {cluster} to register the bootstrap token with")));
                }
                let path = self.token_path(cluster);
                let mut t = read_json::<SimTokens>(&path)?.unwrap_or_default();
                let id = crate::bootstrap::token::id(token).to_string();
                t.tokens.retain(|(i, _)| *i != id);
                t.tokens.push((id, expires));
                write_json(&path, &t)?;
                Ok(BTreeMap::new())
            }
            Spec::Machine(m) => self.create_machine(input, m).await,
            Spec::Pki(_) | Spec::Bootstrap(_) => Err(ProviderError::Failed(
                "local resource sent to the simulator".into(),
            )),
        }
    }

    async fn update(
        &self,
        input: &OpInput<'_>,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        match input.spec {
            Spec::Token(_) => self.create(input).await,
            Spec::Machine(m) => {
                let path = self.machine_path(input.address.cluster_key(), &m.name);
                match read_json::<SimMachine>(&path)? {
                    Some(mut sm) => {
                        sm.labels.insert(LABEL_IDENTITY.into(), m.identity.clone());
                        write_json(&path, &sm)?;
                        Ok(current.observed.clone())
                    }
                    None => Err(ProviderError::Failed(format!(
                        "simulated machine {} no longer exists",
                        m.name
                    ))),
                }
            }
            _ => Ok(current.observed.clone()),
        }
    }

    async fn delete(
        &self,
        r: &Resource,
        _lineage: &str,
        _redactor: &Redactor,
    ) -> Result<(), ProviderError> {
        let cluster = r.address.cluster_key();
        if self.inject("delete", r.address.as_str()) {
            return Err(ProviderError::Failed(format!(
                "simulated failure deleting {} (CAPI_SIM_FAIL)",
                r.address
            )));
        }
        // Ok(true) when something was removed.
        let rm = |p: PathBuf| match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&p.display().to_string(), e)),
        };
        match &r.attributes {
            Spec::Network(_) => rm(self.network_path(cluster)).map(|_| ()),
            Spec::Loadbalancer(_) => rm(self.lb_path(cluster)).map(|_| ()),
            Spec::Token(_) => Ok(()),
            Spec::Machine(m) => {
                if m.role == Role::ControlPlane {
                    // Drain first: weight 0 and a reload, unless it is the only member.
                    let name = m.name.clone();
                    self.reconfigure_lb(cluster, |lb| {
                        if lb.members.len() > 1 {
                            for x in lb.members.iter_mut().filter(|x| x.name == name) {
                                x.weight = 0;
                            }
                        }
                    })
                    .await?;
                }
                let removed = rm(self.machine_path(cluster, &m.name))?;
                self.log_with(
                    "machine-deleted",
                    &r.address,
                    &m.owner.to_string(),
                    &m.version.to_string(),
                    !removed,
                );
                if m.role == Role::ControlPlane {
                    let name = m.name.clone();
                    self.reconfigure_lb(cluster, |lb| lb.members.retain(|x| x.name != name))
                        .await?;
                }
                Ok(())
            }
            Spec::Pki(_) | Spec::Bootstrap(_) => Ok(()),
        }
    }

    async fn refresh(
        &self,
        resources: &[&Resource],
        _lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        let mut out = Vec::new();
        for r in resources {
            let cluster = r.address.cluster_key();
            let observation = match &r.attributes {
                Spec::Network(_) => read_json::<SimNetwork>(&self.network_path(cluster))?.is_none().then_some(Observation::Missing),
                Spec::Loadbalancer(_) => read_json::<SimLoadBalancer>(&self.lb_path(cluster))?.is_none().then_some(Observation::Missing),
                Spec::Machine(m) => match read_json::<SimMachine>(&self.machine_path(cluster, &m.name))? {
                    None => Some(Observation::Missing),
                    Some(sm) if sm.status != "running" && sm.status != "provisioning" => Some(Observation::Stopped(sm.status.clone())),
                    Some(sm) if sm.bootstrap.started && !sm.bootstrap.succeeded => {
                        Some(Observation::Stopped("unusable: its bootstrap was interrupted or failed, and bootstrap never runs twice".into()))
                    }
                    Some(sm) => {
                        let mut diffs = Vec::new();
                        if sm.version != m.version.to_string() {
                            diffs.push(AttributeChange { path: "version".into(), before: Some(json!(m.version)), after: Some(json!(sm.version)) });
                        }
                        if sm.labels.get(LABEL_IDENTITY) != Some(&m.identity) {
                            diffs.push(AttributeChange { path: format!("labels.{LABEL_IDENTITY}"), before: Some(json!(m.identity)), after: sm.labels.get(LABEL_IDENTITY).map(|v| json!(v)) });
                        }
                        if let Some(ip) = r.observed.get("ip") {
                            if ip != &json!(sm.ip) {
                                diffs.push(AttributeChange { path: "ip".into(), before: Some(ip.clone()), after: Some(json!(sm.ip)) });
                            }
                        }
                        (!diffs.is_empty()).then_some(Observation::Changed(diffs))
                    }
                },
                _ => None,
            };
            out.push(Refreshed {
                address: r.address.clone(),
                observation,
            });
        }
        Ok(out)
    }

    async fn unmanaged(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError> {
        let known: BTreeSet<&str> = known.iter().map(|r| r.address.as_str()).collect();
        Ok(self
            .machines(None)
            .into_iter()
            .filter(|m| m.labels.get(LABEL_LINEAGE).map(String::as_str) == Some(lineage))
            .filter_map(|m| {
                let a = m.labels.get(LABEL_ADDRESS)?.clone();
                let address = Address::parse(&a).ok()?;
                (!known.contains(a.as_str())).then(|| Unmanaged { address, detail: format!("simulated machine {} ({}) carries this state's labels but is not in the state", m.name, m.ip) })
            })
            .collect())
    }
}
