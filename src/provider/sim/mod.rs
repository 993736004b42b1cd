//! Simulated infrastructure, like Cluster API's in-memory backend: networks,
//! load balancers and machines kept as JSON files in a directory beside the
//! state (`<state>.sim/`), so they persist between runs and can be inspected
//! or edited: a file per network, load balancer and token list, and a
//! JSON-lines file per cluster with a line per machine
//! (`machines/<cluster>.jsonl`; delete a machine's line to simulate a
//! machine lost behind capi's back, set its `status` to `stopped`).
//!
//! The same rooms as the other providers: [`network`], [`loadbalancer`]
//! (members and reloads, like CAPD's haproxy), [`machine`], [`bootstrap`]
//! (the simulated run, and token registration), [`refresh`]; the records
//! and their crash-safe writes are in [`store`], the machine logs in
//! [`machines`], the clock that ends simulated durations in [`timer`].
//!
//! Machines take the provisioning time of their `DevMachineTemplate`
//! (`inMemory.{vm,node,apiServer,etcd}.provisioning.startupDuration`, with
//! deterministic jitter) or `--sim-latency`. Their bootstrap data is parsed
//! as CAPD would (write_files + runcmd) and every file and command is
//! recorded, in order.
//!
//! Failure injection for tests ([`Overrides`], from `CAPI_SIM_FAIL`,
//! `CAPI_SIM_FAIL_RATE`, `CAPI_SIM_SEED`): `machine:3,bootstrap:2` makes the
//! 3rd machine create and the 2nd bootstrap of this process fail (also
//! `network`, `loadbalancer`, `token`, `delete`); a fail rate of 0.1 fails
//! that fraction of machine creates, chosen by the seed.

mod bootstrap;
mod ips;
mod loadbalancer;
mod machine;
mod machines;
mod network;
mod refresh;
mod store;
mod timer;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

pub use self::store::{SimBootstrap, SimMachine};
use super::{
    Found, Observed, OpInput, Overrides, Provider, ProviderError, Redactor, Refreshed, Unmanaged,
    LABEL_ADDRESS, LABEL_LINEAGE,
};
use crate::resource::{Address, ProviderKind, Spec};
use crate::state::Resource;

pub struct SimProvider {
    dir: PathBuf,
    latency: Option<Duration>,
    failures: BTreeMap<String, u64>,
    fail_rate: f64,
    seed: u64,
    counters: Mutex<BTreeMap<String, u64>>,
    /// Addresses handed out; read from the machine records at the first
    /// allocation (a plan allocates none, so it never reads them for this).
    ips: Mutex<Option<ips::IpPool>>,
    /// Machine records the last refresh read, by cluster and name, for the
    /// search for unknown machines that follows it: each log is read once
    /// per plan. Taken (emptied) by that search.
    refreshed: Mutex<HashMap<String, BTreeMap<String, machines::MachineView>>>,
    /// Machine records read ahead of a refresh, by cluster and name; taken
    /// (emptied) by the refresh that follows.
    read_ahead: Mutex<HashMap<String, BTreeMap<String, machines::MachineView>>>,
    /// The machine logs this provider wrote to, by cluster; compacted when
    /// it is dropped.
    logs: Mutex<HashMap<String, machines::MachineLog>>,
    /// The `machines` directory, whose `flock` is the writers' lock.
    machines_dir: std::sync::OnceLock<fs::File>,
    log_seq: AtomicU64,
    /// `ops.log`, opened at the first event and kept open.
    log_file: Mutex<Option<fs::File>>,
    lb_lock: tokio::sync::Mutex<()>,
    /// Cloud-config documents parsed (see [`bootstrap::Parsed`]).
    parsed: bootstrap::Parsed,
}

/// A deterministic 64-bit hash of some strings.
fn h64(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap())
}

/// One line of `ops.log` (its fields in the order `serde_json` writes a map's
/// keys, as the lines have always been written).
#[derive(serde::Serialize)]
struct OpsLine<'a> {
    address: &'a Address,
    already_gone: bool,
    event: &'a str,
    group: &'a str,
    pid: u32,
    seq: u64,
    version: &'a str,
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
        let p = SimProvider {
            dir: dir.to_path_buf(),
            latency,
            failures: overrides.sim_failures.iter().cloned().collect(),
            fail_rate: overrides.sim_fail_rate,
            seed: overrides.sim_seed,
            counters: Mutex::new(BTreeMap::new()),
            ips: Mutex::new(None),
            refreshed: Mutex::new(HashMap::new()),
            read_ahead: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            machines_dir: std::sync::OnceLock::new(),
            log_seq: AtomicU64::new(0),
            log_file: Mutex::new(None),
            lb_lock: tokio::sync::Mutex::new(()),
            parsed: bootstrap::Parsed::default(),
        };
        Ok(p)
    }

    /// The addresses already handed out, from every machine record.
    fn scan_ips(&self) -> ips::IpPool {
        let mut ips = ips::IpPool::default();
        // Only the addresses: a light view, not whole records.
        for c in self.machine_clusters() {
            let records = self.cluster_machines::<machines::MachineView>(&c);
            for m in records.unwrap_or_default().values() {
                ips.insert_existing(&m.ip);
            }
        }
        ips
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
    /// A cluster's machine log.
    fn machine_log_path(&self, cluster: &str) -> PathBuf {
        self.dir.join("machines").join(format!("{cluster}.jsonl"))
    }
    /// A cluster's machine records in the earlier layout, a file each.
    fn legacy_machine_dir(&self, cluster: &str) -> PathBuf {
        self.dir.join("machines").join(cluster)
    }

    /// Run `f` on the cluster's machine log, opened at its first use.
    fn with_log<R>(
        &self,
        cluster: &str,
        f: impl FnOnce(&mut machines::MachineLog) -> Result<R, ProviderError>,
    ) -> Result<R, ProviderError> {
        self.with_logs(|logs| {
            if !logs.contains_key(cluster) {
                let mut log = machines::MachineLog::open(
                    &self.machine_log_path(cluster),
                    &self.legacy_machine_dir(cluster),
                )?;
                log.begin_turn();
                logs.insert(cluster.to_string(), log);
            }
            f(logs.get_mut(cluster).expect("just opened"))
        })
    }

    /// Run `f` on the open machine logs, holding the writers' lock: a
    /// `flock` on the `machines` directory (which survives a compaction's
    /// rename), so another provider in this process or another process
    /// never appends between a compaction's read and its rename, and a
    /// torn last line can only be a dead writer's.
    fn with_logs<R>(
        &self,
        f: impl FnOnce(&mut HashMap<String, machines::MachineLog>) -> Result<R, ProviderError>,
    ) -> Result<R, ProviderError> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.dir.join("machines");
        let fd = match self.machines_dir.get() {
            Some(fd) => fd,
            None => {
                let err = |e: std::io::Error| store::io_err(&dir.display().to_string(), e);
                store::create_private_dir(&dir).map_err(err)?;
                let fd = fs::File::open(&dir).map_err(err)?;
                self.machines_dir.get_or_init(|| fd)
            }
        };
        let _held = machines::DirLock::exclusive(fd)
            .map_err(|e| store::io_err(&dir.display().to_string(), e))?;
        logs.values_mut().for_each(machines::MachineLog::begin_turn);
        let r = f(&mut logs);
        logs.values_mut().for_each(machines::MachineLog::end_turn);
        r
    }

    /// The clusters with machine records, sorted.
    fn machine_clusters(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(self.dir.join("machines"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if e.file_type().ok()?.is_dir() {
                    Some(name)
                } else {
                    name.strip_suffix(".jsonl").map(str::to_string)
                }
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// One cluster's machine records (or views of them), by name.
    fn cluster_machines<T: serde::de::DeserializeOwned + machines::Named>(
        &self,
        cluster: &str,
    ) -> Result<BTreeMap<String, T>, ProviderError> {
        machines::read_cluster(
            &self.machine_log_path(cluster),
            &self.legacy_machine_dir(cluster),
        )
    }

    /// All machine records of a cluster (or of all clusters), sorted by
    /// cluster and name. A log that cannot be read counts as empty here;
    /// refresh reports it.
    pub fn machines(&self, cluster: Option<&str>) -> Vec<SimMachine> {
        let clusters = match cluster {
            Some(c) => vec![c.to_string()],
            None => self.machine_clusters(),
        };
        clusters
            .iter()
            .flat_map(|c| {
                self.cluster_machines::<SimMachine>(c)
                    .unwrap_or_default()
                    .into_values()
            })
            .collect()
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
        static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let mut file = self.log_file.lock().unwrap();
        let seq = self.log_seq.fetch_add(1, Ordering::SeqCst);
        let mut line = serde_json::to_vec(&OpsLine {
            address,
            already_gone,
            event,
            group,
            pid: *PID.get_or_init(std::process::id),
            seq,
            version,
        })
        .expect("serialises");
        line.push(b'\n');
        if file.is_none() {
            let _ = store::create_private_dir(&self.dir);
            *file = store::open_private(&self.dir.join("ops.log"), true).ok();
        }
        if let Some(f) = file.as_mut() {
            let _ = f.write_all(&line);
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

    /// The labels every simulated object carries.
    fn labels(input: &OpInput<'_>) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert(LABEL_LINEAGE.into(), input.lineage.into());
        l.insert(LABEL_ADDRESS.into(), input.address.to_string());
        l
    }

    /// Whether an object with these labels may be deleted by the state of
    /// `lineage`: another state's (a create refused because of it, now
    /// deleted to be replaced) is left alone, so a delete never removes
    /// what this state did not create.
    fn owned_by(labels: &BTreeMap<String, String>, lineage: &str) -> bool {
        labels.get(LABEL_LINEAGE).is_some_and(|l| l == lineage)
    }

    /// An object that exists already may be adopted only when it is this
    /// state's.
    fn check_owner(
        &self,
        labels: &BTreeMap<String, String>,
        input: &OpInput<'_>,
        what: &str,
    ) -> Result<(), ProviderError> {
        match labels.get(LABEL_LINEAGE) {
            Some(l) if l == input.lineage => Ok(()),
            other => Err(ProviderError::Conflict(format!(
                "simulated {what} for {} already exists and belongs to another state (lineage {}), which keeps its simulated infrastructure in the same directory, {} (state files named alike, such as `s` and `s.json`, share one): use another state path or another cluster name; do not delete the record, it is that state's",
                input.address,
                other.map(String::as_str).unwrap_or("unknown"),
                self.dir.display()
            ))),
        }
    }
}

impl Drop for SimProvider {
    /// Leave each machine log this provider wrote with one line per
    /// machine. Best effort: a log with superseded lines reads the same. A
    /// provider that wrote nothing (a refresh's) touches nothing.
    fn drop(&mut self) {
        if self.logs.get_mut().map_or(true, |l| l.is_empty()) {
            return;
        }
        let _ = self.with_logs(|logs| {
            for log in logs.values_mut() {
                let _ = log.compact();
            }
            Ok(())
        });
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sim
    }

    async fn create(&self, input: &OpInput<'_>) -> Result<Observed, ProviderError> {
        match input.spec {
            Spec::Network(n) => self.create_network(input, n),
            Spec::Loadbalancer(l) => self.create_lb(input, l),
            Spec::Token(_) => self.register_token(input),
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
            Spec::Token(_) => self.register_token(input),
            Spec::Machine(m) => self.update_machine(input, m, current),
            _ => Ok(current.observed.clone()),
        }
    }

    async fn delete(
        &self,
        r: &Resource,
        lineage: &str,
        _redactor: &Redactor,
    ) -> Result<(), ProviderError> {
        let cluster = r.address.cluster_key();
        if self.inject("delete", r.address.as_str()) {
            return Err(ProviderError::Failed(format!(
                "simulated failure deleting {} (CAPI_SIM_FAIL)",
                r.address
            )));
        }
        match &r.attributes {
            Spec::Network(_) => self.delete_network(cluster, lineage),
            Spec::Loadbalancer(_) => self.delete_lb(cluster, lineage),
            Spec::Machine(m) => self.delete_machine(r, m, lineage).await,
            // A deleted token is no longer registered with the cluster.
            Spec::Token(_) => store::remove_record(&self.token_path(cluster)).map(|_| ()),
            Spec::Pki(_) | Spec::Bootstrap(_) => Ok(()),
        }
    }

    fn read_ahead(&self) {
        self.read_logs_ahead();
    }

    async fn refresh(
        &self,
        resources: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Refreshed>, ProviderError> {
        self.read_back(resources, lineage)
    }

    async fn unmanaged(
        &self,
        known: &[&Resource],
        lineage: &str,
    ) -> Result<Vec<Unmanaged>, ProviderError> {
        Ok(self.unknown_machines(known, lineage))
    }

    async fn lookup(&self, input: &OpInput<'_>, id: &str) -> Result<Found, ProviderError> {
        self.find_record(input, id)
    }
}
