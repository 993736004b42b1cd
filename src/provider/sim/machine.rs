//! Simulated machines: a record per machine (a line in its cluster's log,
//! [`super::machines`]) with a deterministic address in
//! the cluster's /16, "provisioning" for the simulated startup time, then
//! bootstrapped ([`super::bootstrap`]) and, for control-plane machines,
//! added to the load balancer. A record whose bootstrap succeeded is adopted
//! (a crash came before the state write); one whose bootstrap started and
//! did not finish is never bootstrapped again.

use std::time::Duration;

use serde_json::{json, Value};

use super::bootstrap::interrupted;
use super::machines::MachineLog;
use super::network::cidr_base;
use super::store::{SimBootstrap, SimMachine, SimMember};
use super::{h64, SimProvider};
use crate::provider::{Observed, OpInput, ProviderError, LABEL_IDENTITY};
use crate::resource::{MachineSpec, Role};
use crate::state::Resource;

/// A duration from a DevMachineTemplate field: `10s` or a number of seconds.
fn duration_of(v: &Value) -> Option<Duration> {
    let secs = crate::util::time::duration_value_seconds(v)?;
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

/// What a machine record reports.
pub(super) fn observed_of(m: &SimMachine, ready: bool) -> Observed {
    let mut o = Observed::new();
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

/// A machine looked up in its cluster's log: there already (a re-run
/// adopts it), or recorded just now.
enum Found {
    Existing(SimMachine),
    New(SimMachine),
}

impl SimProvider {
    /// A deterministic address in the cluster's block (see [`super::ips`]).
    fn allocate_ip(&self, cluster: &str, name: &str) -> Result<String, ProviderError> {
        let start = h64(&[cluster, name]);
        let mut ips = self.ips.lock().unwrap();
        ips.get_or_insert_with(|| self.scan_ips())
            .allocate(cidr_base(cluster), start)
            .ok_or_else(|| {
                ProviderError::Failed(
                    "the simulator has no free machine address left (100.64.0.0/10 holds 4,160,000)"
                        .into(),
                )
            })
    }

    /// `--sim-latency`, else the sum of the template's startup durations
    /// (VM and node; API server and etcd too on control-plane machines),
    /// each with its deterministic jitter.
    fn startup_time(&self, spec: &MachineSpec) -> Duration {
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

    /// Adopt or record the machine, let its startup time pass, bootstrap
    /// it, add a control-plane machine to the load balancer.
    pub(super) async fn create_machine(
        &self,
        input: &OpInput<'_>,
        spec: &MachineSpec,
    ) -> Result<Observed, ProviderError> {
        // The simulated latency is the whole operation's duration, the
        // simulator's own bookkeeping included.
        let began = std::time::Instant::now();
        let cluster = input.address.cluster_key();
        let group = spec.owner.to_string();
        let version = spec.version.to_string();
        // One turn of the log's lock looks the machine up and, when it is
        // new, records it (the lock and its checks cost several system
        // calls; a new machine took two turns).
        let found = self.with_log(cluster, |l| match l.get(&spec.name)? {
            Some(m) => Ok(Found::Existing(m)),
            None => self.new_machine(l, input, spec, &group).map(Found::New),
        })?;
        let mut m = match found {
            Found::Existing(m) => {
                self.check_owner(&m.labels, input, "machine")?;
                if m.bootstrap.succeeded {
                    // Adopted (a crash came between its bootstrap and the
                    // state write): announce it again, the log may have
                    // missed it.
                    self.log("machine-ready", input.address, &group, &version);
                    return Ok(observed_of(&m, true));
                }
                if m.bootstrap.started {
                    // Never run bootstrap twice (CAPD's started marker).
                    return Err(interrupted(&m));
                }
                m
            }
            Found::New(m) => m,
        };
        // Read the cloud-config before the machine "boots": the simulator's
        // bookkeeping belongs inside the simulated duration.
        let acts = self.actions(input)?;
        let wait = self.startup_time(spec);
        if !wait.is_zero() {
            super::timer::sleep_until(began + wait).await;
        }
        self.run_bootstrap(input, &mut m, &acts)?;
        self.log("machine-ready", input.address, &group, &version);
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

    /// Record a new machine in `log` (whose lock the caller holds),
    /// provisioning (logged before it exists).
    fn new_machine(
        &self,
        log: &mut MachineLog,
        input: &OpInput<'_>,
        spec: &MachineSpec,
        group: &str,
    ) -> Result<SimMachine, ProviderError> {
        let cluster = input.address.cluster_key();
        if self.inject("machine", &input.address.to_string()) {
            return Err(ProviderError::Failed(format!(
                "simulated failure creating {} (CAPI_SIM_FAIL)",
                spec.name
            )));
        }
        let ip = self.allocate_ip(cluster, &spec.name)?;
        let mut labels = Self::labels(input);
        labels.insert(LABEL_IDENTITY.into(), spec.identity.to_string());
        let m = SimMachine {
            name: spec.name.clone(),
            cluster: cluster.to_string(),
            role: spec.role,
            group: group.to_string(),
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
            group,
            &spec.version.to_string(),
        );
        log.put(&m)?;
        Ok(m)
    }

    /// Only the identity label changes in place.
    pub(super) fn update_machine(
        &self,
        input: &OpInput<'_>,
        m: &MachineSpec,
        current: &Resource,
    ) -> Result<Observed, ProviderError> {
        self.with_log(input.address.cluster_key(), |l| match l.get(&m.name)? {
            Some(mut sm) => {
                sm.labels
                    .insert(LABEL_IDENTITY.into(), m.identity.to_string());
                l.put(&sm)?;
                Ok(current.observed.clone())
            }
            None => Err(ProviderError::Failed(format!(
                "simulated machine {} no longer exists",
                m.name
            ))),
        })
    }

    /// Remove the record (this state's: see `owned_by`); a control-plane
    /// machine is drained from the load balancer first and dropped from it
    /// after.
    pub(super) async fn delete_machine(
        &self,
        r: &Resource,
        m: &MachineSpec,
        lineage: &str,
    ) -> Result<(), ProviderError> {
        let cluster = r.address.cluster_key();
        // Another state's record: none of this state's to remove.
        let theirs = |l: &mut MachineLog| -> Result<bool, ProviderError> {
            Ok(l.get(&m.name)?
                .is_some_and(|found| !Self::owned_by(&found.labels, lineage)))
        };
        if m.role == Role::ControlPlane {
            if self.with_log(cluster, theirs)? {
                return Ok(());
            }
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
        // A worker's check and removal share one turn of the log's lock.
        let removed = self.with_log(cluster, |l| {
            if theirs(l)? {
                return Ok(None);
            }
            l.remove(&m.name).map(Some)
        })?;
        let Some(removed) = removed else {
            return Ok(());
        };
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
}
