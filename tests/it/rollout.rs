//! Rollouts on the simulator, observed through its operation log
//! (`capi.state.sim/ops.log`): limits hold at every moment, interrupted
//! rollouts resume, health gates stop them, chained upgrades run in order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::schema::assert_state_valid;

fn cluster(
    version: &str,
    cp_replicas: u32,
    md_replicas: u32,
    surge: u32,
    unavailable: u32,
) -> String {
    format!(
        r#"apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {{name: roll}}
spec:
  controlPlaneRef: {{apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: roll-cp}}
  infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevCluster, name: roll}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata: {{name: roll}}
spec: {{backend: {{inMemory: {{}}}}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {{name: roll-cp}}
spec:
  replicas: {cp_replicas}
  version: {version}   # the control plane's version
  machineTemplate:
    spec:
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: roll-m}}
  kubeadmConfigSpec:
    clusterConfiguration: {{encryptionAlgorithm: ECDSA-P256}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {{name: roll-m}}
spec: {{template: {{spec: {{backend: {{inMemory: {{}}}}}}}}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {{name: roll-w}}
spec: {{template: {{spec: {{}}}}}}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {{name: roll-md}}
spec:
  clusterName: roll
  replicas: {md_replicas}
  rollout:
    strategy:
      rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}
  template:
    spec:
      clusterName: roll
      version: "{version}"
      bootstrap: {{configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: roll-w}}}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: roll-m}}
"#
    )
}

#[derive(Debug, Clone)]
struct Ev {
    pid: u64,
    already_gone: bool,
    event: String,
    address: String,
    group: String,
    version: String,
}

fn ops(dir: &Path) -> Vec<Ev> {
    std::fs::read_to_string(dir.join("capi.state.sim/ops.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Ev {
                pid: v["pid"].as_u64().unwrap_or(0),
                already_gone: v["already_gone"].as_bool().unwrap_or(false),
                event: v["event"].as_str().unwrap().into(),
                address: v["address"].as_str().unwrap().into(),
                group: v["group"].as_str().unwrap().into(),
                version: v["version"].as_str().unwrap_or_default().into(),
            }
        })
        .collect()
}

/// Replay the log from `from`, checking at every event that the group holds
/// at most `max_total` machines and at least `min_ready` ready ones.
fn check_limits(
    events: &[Ev],
    from: usize,
    group: &str,
    max_total: usize,
    min_ready: usize,
) -> Result<(), String> {
    let mut total: BTreeSet<String> = BTreeSet::new();
    let mut ready: BTreeSet<String> = BTreeSet::new();
    for (i, e) in events.iter().enumerate() {
        if e.group != group {
            continue;
        }
        match e.event.as_str() {
            "machine-created" => {
                total.insert(e.address.clone());
            }
            "machine-ready" => {
                total.insert(e.address.clone());
                ready.insert(e.address.clone());
            }
            "machine-deleted" => {
                total.remove(&e.address);
                ready.remove(&e.address);
            }
            _ => {}
        }
        if i >= from && (total.len() > max_total || ready.len() < min_ready) {
            let trace: Vec<String> = events[from..=i]
                .iter()
                .enumerate()
                .map(|(j, x)| {
                    format!(
                        "{}: [{}] {} {} {} {}",
                        from + j,
                        x.pid,
                        x.event,
                        x.group,
                        x.address,
                        x.version
                    )
                })
                .collect();
            return Err(format!("{group}: {} machines ({} ready) at event {i}; limits: at most {max_total}, at least {min_ready} ready\n{}", total.len(), ready.len(), trace.join("\n")));
        }
    }
    Ok(())
}

/// The MachineDeployment steps of every run's plan, for diagnosis.
fn plans(dir: &Path) -> String {
    let mut out = String::new();
    for i in 0.. {
        let Ok(text) = std::fs::read_to_string(dir.join(format!("run-{i}.jsonl"))) else {
            break;
        };
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            if v["type"] == "plan" {
                for s in v["plan"]["steps"].as_array().unwrap() {
                    let a = s["address"].as_str().unwrap();
                    if a.contains("/machine/") {
                        let pid = std::fs::read_to_string(dir.join(format!("run-{i}.pid")))
                            .unwrap_or_default();
                        out.push_str(&format!(
                            "run {i} [{pid}]: step {} {} {} after {}\n",
                            s["id"], s["op"], a, s["after"]
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Run `args` (with --json, output kept in `run-N.jsonl` for diagnosis),
/// killing it after the given numbers of simulator events, until a run ends.
fn run_until_done(dir: &Path, args: &[&str], kill_after_events: &[usize]) -> usize {
    let mut kills = 0;
    for &k in kill_after_events {
        let before = ops(dir).len();
        let out = std::fs::File::create(dir.join(format!("run-{kills}.jsonl"))).unwrap();
        let mut child = capi_process(dir)
            .args(args)
            .arg("--json")
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let _ = std::fs::write(dir.join(format!("run-{kills}.pid")), child.id().to_string());
        let t = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "apply failed without being killed");
                return kills;
            }
            if ops(dir).len() >= before + k {
                let _ = child.kill();
                let _ = child.wait();
                kills += 1;
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(120));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let out = capi(dir).args(args).arg("--json").output().unwrap();
    std::fs::write(dir.join(format!("run-{kills}.jsonl")), &out.stdout).unwrap();
    assert!(out.status.success(), "final apply: {}", stderr(&out));
    kills
}

#[test]
fn interrupted_rollouts_resume_and_never_break_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.2", 3, 5, 2, 1)).unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    let start = ops(dir.path()).len();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.3", 3, 5, 2, 1)).unwrap();
    // Kill after 1, 2, 3... more operations, until an apply finishes.
    let schedule: Vec<usize> = (1..=12).collect();
    let kills = run_until_done(
        dir.path(),
        &[
            "apply",
            "--auto-approve",
            "--sim-latency",
            "80ms",
            "-f",
            "c.yaml",
        ],
        &schedule,
    );
    assert!(
        kills >= 5,
        "only {kills} kills: the rollout finished too early to test resumption"
    );
    let events = ops(dir.path());
    // MachineDeployment: never more than 5 + 2, never fewer than 5 − 1 ready.
    if let Err(e) = check_limits(&events, start, "MachineDeployment/roll-md", 7, 4) {
        panic!("{e}\n{}", plans(dir.path()));
    }
    // KubeadmControlPlane, maxSurge 1: never more than 4, never fewer than 3 ready.
    if let Err(e) = check_limits(&events, start, "KubeadmControlPlane/roll-cp", 4, 3) {
        panic!("{e}\n{}", plans(dir.path()));
    }
    // Workers wait for the control plane: every new worker is created after
    // the last control-plane machine of the old version is gone.
    let last_cp_delete = events
        .iter()
        .rposition(|e| {
            e.group.starts_with("KubeadmControlPlane")
                && e.event == "machine-deleted"
                && !e.already_gone
        })
        .unwrap();
    let first_new_worker = events
        .iter()
        .position(|e| e.group.starts_with("MachineDeployment") && e.version == "v1.31.3")
        .unwrap();
    assert!(
        first_new_worker > last_cp_delete,
        "workers rolled before the control plane finished"
    );
    // Converged: all at the new version, state valid, nothing left to do.
    assert_state_valid(&dir.path().join("capi.state.json"));
    let state = capi::state::StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    let versions: BTreeSet<String> = state
        .resources
        .iter()
        .filter_map(|r| r.attributes.as_machine().map(|m| m.version.to_string()))
        .collect();
    assert_eq!(versions, BTreeSet::from(["v1.31.3".to_string()]));
    let sim =
        capi::provider::sim::SimProvider::open(&dir.path().join("capi.state.sim"), None).unwrap();
    assert_eq!(sim.machines(None).len(), 8);
    let out = capi(dir.path())
        .args(["plan", "--detailed-exitcode", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_failing_health_check_stops_the_rollout_and_apply_resumes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.2", 1, 3, 1, 0)).unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    std::fs::write(
        dir.path().join("c.yaml"),
        cluster("v1.31.3", 1, 3, 1, 0).replace(
            "replicas: 1\n  version: v1.31.3",
            "replicas: 1\n  version: v1.31.2",
        ),
    )
    .unwrap();
    let out = capi(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--json",
            "-f",
            "c.yaml",
            "--health-check",
            "echo not ready; exit 3",
            "--health-check-count",
            "2",
            "--health-check-interval",
            "10ms",
            "--health-check-timeout",
            "300ms",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let events = json_events(&stdout(&out));
    let checks: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "health_check")
        .collect();
    assert!(
        !checks.is_empty()
            && checks.iter().all(
                |c| c["passed"] == false && c["output"].as_str().unwrap().contains("not ready")
            )
    );
    assert!(
        stderr(&out).contains("did not pass 2 time(s) in a row"),
        "{}",
        stderr(&out)
    );
    // The first new machine exists; no old machine was deleted (the rollout stopped).
    let state = capi::state::StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    assert_state_valid(&dir.path().join("capi.state.json"));
    let by_version: BTreeMap<String, usize> = state
        .resources
        .iter()
        .filter_map(|r| r.attributes.as_machine())
        .filter(|m| m.owner.kind == capi::resource::OwnerKind::MachineDeployment)
        .fold(BTreeMap::new(), |mut acc, m| {
            *acc.entry(m.version.to_string()).or_default() += 1;
            acc
        });
    assert_eq!(by_version.get("v1.31.3"), Some(&1), "{by_version:?}");
    assert_eq!(by_version.get("v1.31.2"), Some(&3), "{by_version:?}");
    // A passing check (2 in a row), with the cluster and a kubeconfig in its environment.
    let check = r#"test "$CAPI_CLUSTER" = roll && grep -q "server: https://" "$KUBECONFIG""#;
    let out = capi(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "-f",
            "c.yaml",
            "--health-check",
            check,
            "--health-check-interval",
            "10ms",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("passed"));
    let out = capi(dir.path())
        .args(["plan", "--detailed-exitcode", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn chained_upgrade_from_1_29_to_1_31() {
    let dir = tempfile::tempdir().unwrap();
    let original = cluster("v1.29.4", 3, 2, 1, 0);
    std::fs::write(dir.path().join("c.yaml"), &original).unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    let state_before = std::fs::read(dir.path().join("capi.state.json")).unwrap();

    // Skipping a minor in the manifests is refused.
    std::fs::write(dir.path().join("skip.yaml"), cluster("v1.31.2", 3, 2, 1, 0)).unwrap();
    let out = capi(dir.path())
        .args(["plan", "-f", "skip.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("at most one minor version at a time"),
        "{}",
        stderr(&out)
    );

    // Without --to: where it can go next, one minor at a time, and nothing
    // changes.
    let out = capi(dir.path())
        .args(["upgrade", "-f", "c.yaml", "--via", "v1.30.7"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Cluster roll: the control plane runs v1.29.4, the workers v1.29.4."),
        "{text}"
    );
    assert!(text.contains("v1.29.x  patch"), "{text}");
    assert!(text.contains("v1.30.7  minor"), "{text}");
    assert!(text.contains("v1.31.0  chain"), "{text}");
    assert_eq!(
        std::fs::read(dir.path().join("capi.state.json")).unwrap(),
        state_before
    );

    // --dry-run shows both steps and their waves, and changes nothing.
    let out = capi(dir.path())
        .args(["upgrade", "--to", "v1.31.2", "--dry-run", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("from v1.29.4 to v1.31.2: 2 steps (v1.30.0 → v1.31.2)"),
        "{text}"
    );
    assert!(
        text.contains("=== Step 1/2: v1.30.0 ===") && text.contains("=== Step 2/2: v1.31.2 ==="),
        "{text}"
    );
    assert!(text.matches("Rollout order").count() == 2, "{text}");
    assert_eq!(
        std::fs::read(dir.path().join("capi.state.json")).unwrap(),
        state_before
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c.yaml")).unwrap(),
        original
    );

    // The real upgrade, writing the versions back.
    let start = ops(dir.path()).len();
    let out = capi(dir.path())
        .args([
            "upgrade",
            "--to",
            "v1.31.2",
            "--auto-approve",
            "--write",
            "-f",
            "c.yaml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = ops(dir.path());
    let order: Vec<(String, String)> = events[start..]
        .iter()
        .filter(|e| e.event == "machine-ready")
        .map(|e| {
            (
                e.version.clone(),
                e.group.split('/').next().unwrap().to_string(),
            )
        })
        .collect();
    // Control plane v1.30, then workers v1.30, then control plane v1.31, then workers v1.31.
    let mut phases: Vec<(String, String)> = Vec::new();
    for p in order {
        if phases.last() != Some(&p) {
            phases.push(p);
        }
    }
    let expected: Vec<(String, String)> = [
        ("v1.30.0", "KubeadmControlPlane"),
        ("v1.30.0", "MachineDeployment"),
        ("v1.31.2", "KubeadmControlPlane"),
        ("v1.31.2", "MachineDeployment"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(phases, expected);
    // --write changed the two version values and nothing else.
    let written = std::fs::read_to_string(dir.path().join("c.yaml")).unwrap();
    assert_eq!(written, original.replace("v1.29.4", "v1.31.2"));
    assert!(
        written.contains("version: v1.31.2   # the control plane's version"),
        "comment kept"
    );
    let out = capi(dir.path())
        .args(["plan", "--detailed-exitcode", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // describe shows everything ready and up to date.
    let d = stdout(
        &capi(dir.path())
            .args(["describe", "cluster", "roll", "-f", "c.yaml"])
            .output()
            .unwrap(),
    );
    assert!(
        d.starts_with("NAME") && d.contains("Cluster/roll") && d.contains("5/5"),
        "{d}"
    );
    assert!(
        d.contains("ControlPlane - KubeadmControlPlane/roll-cp") && d.contains("3 Machines..."),
        "{d}"
    );
}

#[test]
fn describe_shows_progress_and_reasons() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.2", 1, 3, 1, 0)).unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    std::fs::write(
        dir.path().join("new.yaml"),
        cluster("v1.31.3", 1, 3, 1, 0).replace(
            "replicas: 1\n  version: v1.31.3",
            "replicas: 1\n  version: v1.31.2",
        ),
    )
    .unwrap();
    let d = stdout(
        &capi(dir.path())
            .args([
                "describe",
                "cluster",
                "roll",
                "-f",
                "new.yaml",
                "--grouping=false",
            ])
            .output()
            .unwrap(),
    );
    assert!(
        d.contains("RollingUpdate") && d.contains("3 of 3 machines outdated"),
        "{d}"
    );
    assert_eq!(d.matches("Outdated").count(), 3, "{d}");
    let plain = stdout(
        &capi(dir.path())
            .args(["describe", "cluster", "roll"])
            .output()
            .unwrap(),
    );
    assert!(
        plain.contains("MachineDeployment/roll-md") && plain.contains("3/3"),
        "{plain}"
    );
}

/// `--parallelism` bounds the provider operations in flight, and the bound is
/// used: with 3 slots and 12 workers that become ready together, exactly 3
/// machines are ever being created at once (bootstrap data and durable state
/// writes take no slot).
#[test]
fn parallelism_bounds_machines_in_flight_and_is_used() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.2", 1, 12, 1, 0)).unwrap();
    capi(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--parallelism",
            "3",
            "--sim-latency",
            "100ms",
            "-f",
            "c.yaml",
        ])
        .assert()
        .success();
    let mut in_flight = BTreeSet::new();
    let mut most = 0;
    let events = ops(dir.path());
    for e in &events {
        match e.event.as_str() {
            "machine-created" => {
                in_flight.insert(e.address.clone());
            }
            "machine-ready" => {
                in_flight.remove(&e.address);
            }
            _ => {}
        }
        most = most.max(in_flight.len());
    }
    let ready = events.iter().filter(|e| e.event == "machine-ready").count();
    assert_eq!(ready, 13, "{events:#?}");
    assert_eq!(most, 3, "machines in creation at once: {events:#?}");
}

/// The control-plane machines in the state: name → (version, health_check).
fn cp_machines(dir: &Path) -> BTreeMap<String, (String, String)> {
    let state = capi::state::StateStore::new(dir.join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    state
        .resources
        .iter()
        .filter_map(|r| {
            let m = r.attributes.as_machine()?;
            (m.owner.kind == capi::resource::OwnerKind::KubeadmControlPlane).then(|| {
                let health = r
                    .observed
                    .get("health_check")
                    .and_then(|v| v.as_str())
                    .unwrap_or("-")
                    .to_string();
                (m.name.clone(), (m.version.to_string(), health))
            })
        })
        .collect()
}

#[test]
fn rerun_of_a_failed_health_checked_rollout_checks_the_new_machine_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.2", 1, 0, 1, 0)).unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.3", 1, 0, 1, 0)).unwrap();
    let apply_with = |check: &str| apply_with_check(dir.path(), check);
    // The new machine fails its check: the old one stays, the state says so.
    let out = apply_with("echo not ready; exit 3");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let cps = cp_machines(dir.path());
    assert_eq!(cps.len(), 2, "{cps:?}");
    let new = cps
        .iter()
        .find(|(_, (v, _))| v == "v1.31.3")
        .map(|(n, (_, h))| (n.clone(), h.clone()))
        .unwrap();
    assert_eq!(new.1, "failed", "{cps:?}");
    // The identical second run checks the new machine again before it
    // deletes the last good one: it fails again, the old machine stays.
    let out = apply_with("echo not ready; exit 3");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not pass"), "{}", stderr(&out));
    let cps = cp_machines(dir.path());
    assert_eq!(cps.len(), 2, "the old machine was deleted: {cps:?}");
    assert_eq!(cps[&new.0].1, "failed");
    // A passing check lets the rollout finish.
    let out = apply_with("true");
    assert!(out.status.success(), "{}", stderr(&out));
    let cps = cp_machines(dir.path());
    assert_eq!(
        cps.values().cloned().collect::<Vec<_>>(),
        vec![("v1.31.3".to_string(), "passed".to_string())]
    );
}

/// `capi apply --auto-approve -f c.yaml` gated by a health-check command,
/// with short intervals so that a failing check stops the run quickly.
fn apply_with_check(dir: &Path, check: &str) -> std::process::Output {
    capi(dir)
        .args([
            "apply",
            "--auto-approve",
            "-f",
            "c.yaml",
            "--health-check",
            check,
            "--health-check-interval",
            "10ms",
            "--health-check-timeout",
            "300ms",
        ])
        .output()
        .unwrap()
}

#[test]
fn control_plane_scale_up_is_health_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.2", 1, 0, 1, 0)).unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.31.2", 3, 0, 1, 0)).unwrap();
    let out = apply_with_check(dir.path(), "echo not ready; exit 3");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let cps = cp_machines(dir.path());
    // The first joining machine failed its check; the third never started.
    assert_eq!(cps.len(), 2, "{cps:?}");
    assert_eq!(
        cps.values().filter(|(_, h)| h == "failed").count(),
        1,
        "{cps:?}"
    );
    // Run again, the cluster still unhealthy: the machine that failed is
    // checked first, fails again, and the third is still not created.
    let rerun = |check: &str| apply_with_check(dir.path(), check);
    let out = rerun("echo not ready; exit 3");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not pass"), "{}", stderr(&out));
    assert_eq!(cp_machines(dir.path()).len(), 2);
    // Healthy now: the failed machine passes its check, then the third joins.
    let out = rerun("true");
    assert!(out.status.success(), "{}", stderr(&out));
    let cps = cp_machines(dir.path());
    assert_eq!(cps.len(), 3, "{cps:?}");
    // The first (created before --health-check was given) was never checked.
    assert_eq!(
        cps.values().filter(|(_, h)| h == "passed").count(),
        2,
        "{cps:?}"
    );
    assert!(!cps.values().any(|(_, h)| h == "failed"), "{cps:?}");
}

#[test]
fn plan_after_upgrade_without_write_explains_and_write_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster("v1.30.5", 1, 1, 1, 0)).unwrap();
    let run = |args: &[&str]| capi(dir.path()).args(args).output().unwrap();
    assert!(run(&["apply", "--auto-approve", "-f", "c.yaml"])
        .status
        .success());
    let out = run(&[
        "upgrade",
        "--to",
        "v1.31.3",
        "--auto-approve",
        "-f",
        "c.yaml",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The manifests still say v1.30.5: refused, with what happened and the fix.
    let out = run(&["plan", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("does not downgrade"), "{err}");
    assert!(
        err.contains("without --write") && err.contains("capi upgrade --to v1.31.3 --write"),
        "{err}"
    );
    assert!(err.contains("c.yaml:"), "{err}");
    // The advice works: nothing rolls, the files get the version.
    let out = run(&[
        "upgrade",
        "--to",
        "v1.31.3",
        "--write",
        "--auto-approve",
        "-f",
        "c.yaml",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("c.yaml")).unwrap();
    assert!(!text.contains("v1.30.5"), "{text}");
    let out = run(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Versions of the machines in the state by owner kind.
fn versions_by_owner(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let state = capi::state::StateStore::new(dir.join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in state
        .resources
        .iter()
        .filter_map(|r| r.attributes.as_machine())
    {
        out.entry(format!("{:?}", m.owner.kind))
            .or_default()
            .insert(m.version.to_string());
    }
    out
}

#[test]
fn upgrade_md_only_to_a_version_the_control_plane_is_past() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        cluster("v1.31.3", 1, 2, 1, 0).replace("version: \"v1.31.3\"", "version: \"v1.31.1\"");
    std::fs::write(dir.path().join("c.yaml"), &text).unwrap();
    let run = |args: &[&str]| capi(dir.path()).args(args).output().unwrap();
    assert!(run(&["apply", "--auto-approve", "-f", "c.yaml"])
        .status
        .success());
    let out = run(&[
        "upgrade",
        "--to",
        "v1.31.2",
        "--md",
        "roll-md",
        "--auto-approve",
        "--write",
        "-f",
        "c.yaml",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("the control plane keeps its version"),
        "{}",
        stdout(&out)
    );
    let v = versions_by_owner(dir.path());
    assert_eq!(
        v["KubeadmControlPlane"],
        BTreeSet::from(["v1.31.3".to_string()])
    );
    assert_eq!(
        v["MachineDeployment"],
        BTreeSet::from(["v1.31.2".to_string()])
    );
    let written = std::fs::read_to_string(dir.path().join("c.yaml")).unwrap();
    assert!(
        written.contains("version: v1.31.3") && written.contains("version: \"v1.31.2\""),
        "{written}"
    );
    let out = run(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn upgrade_without_a_kubeadm_control_plane_moves_the_machine_deployments() {
    let dir = tempfile::tempdir().unwrap();
    let base = cluster("v1.31.2", 1, 2, 1, 0);
    let mut docs: Vec<String> = base
        .split("---\n")
        .filter(|d| !d.contains("kind: KubeadmControlPlane\n"))
        .map(|d| d.replace("  controlPlaneRef: {apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: roll-cp}\n", ""))
        .collect();
    docs.push(
        r#"apiVersion: cluster.x-k8s.io/v1beta2
kind: Machine
metadata: {name: roll-cp-0, labels: {cluster.x-k8s.io/control-plane: ""}}
spec:
  clusterName: roll
  version: v1.31.3
  bootstrap: {configRef: {apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfig, name: roll-cp}}
  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: roll-m}
"#
        .to_string(),
    );
    docs.push(
        "apiVersion: bootstrap.cluster.x-k8s.io/v1beta2\nkind: KubeadmConfig\nmetadata: {name: roll-cp}\nspec: {}\n"
            .to_string(),
    );
    std::fs::write(dir.path().join("c.yaml"), docs.join("---\n")).unwrap();
    let run = |args: &[&str]| capi(dir.path()).args(args).output().unwrap();
    let out = run(&["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Newer than the control plane: refused, saying why.
    let out = run(&[
        "upgrade",
        "--to",
        "v1.32.0",
        "--auto-approve",
        "-f",
        "c.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("newer than the control plane at v1.31.3"),
        "{}",
        stderr(&out)
    );
    let out = run(&[
        "upgrade",
        "--to",
        "v1.31.3",
        "--auto-approve",
        "-f",
        "c.yaml",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let v = versions_by_owner(dir.path());
    assert_eq!(
        v["MachineDeployment"],
        BTreeSet::from(["v1.31.3".to_string()])
    );
    assert_eq!(v["Machine"], BTreeSet::from(["v1.31.3".to_string()]));
}
