//! Crash safety: processes killed with SIGKILL at random points during
//! apply; re-apply converges with no duplicate or leaked machine and a state
//! that validates. A corrupt state is refused and left untouched.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use capi::state::StateStore;

use crate::common::*;
use crate::schema::assert_state_valid;

pub(crate) const CLUSTER: &str = r#"apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata:
  name: crash
spec:
  controlPlaneRef: {apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: crash-cp}
  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevCluster, name: crash}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata: {name: crash}
spec: {backend: {inMemory: {}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {name: crash-cp}
spec:
  replicas: 3
  version: v1.31.2
  machineTemplate:
    spec:
      infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: crash-m}
  kubeadmConfigSpec:
    clusterConfiguration:
      encryptionAlgorithm: ECDSA-P256
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {name: crash-m}
spec: {template: {spec: {backend: {inMemory: {}}}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {name: crash-w}
spec: {template: {spec: {}}}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {name: crash-md}
spec:
  clusterName: crash
  replicas: 6
  template:
    spec:
      clusterName: crash
      version: v1.31.2
      bootstrap: {configRef: {apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: crash-w}}
      infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: crash-m}
"#;

/// Check that state, simulator and manifests agree: every machine in state is
/// in the simulator once, nothing else carries the state's lineage, and a new
/// plan has nothing to do.
fn assert_converged(dir: &Path) {
    let state = StateStore::new(dir.join("capi.state.json"))
        .load()
        .unwrap()
        .expect("state");
    assert_state_valid(&dir.join("capi.state.json"));
    let in_state: BTreeSet<String> = state
        .resources
        .iter()
        .filter_map(|r| r.attributes.as_machine().map(|m| m.name.clone()))
        .collect();
    assert_eq!(
        in_state.len(),
        9,
        "3 control-plane + 6 workers in state: {in_state:?}"
    );
    let sim = capi::provider::sim::SimProvider::open(&dir.join("capi.state.sim"), None).unwrap();
    let machines = sim.machines(None);
    let in_sim: Vec<String> = machines.iter().map(|m| m.name.clone()).collect();
    let unique: BTreeSet<String> = in_sim.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        in_sim.len(),
        "duplicate simulated machines: {in_sim:?}"
    );
    assert_eq!(
        unique, in_state,
        "simulated machines and state disagree (leak or loss)"
    );
    for m in &machines {
        assert_eq!(
            m.labels.get(capi::provider::LABEL_LINEAGE),
            Some(&state.lineage)
        );
        assert!(m.bootstrap.succeeded, "{} is not bootstrapped", m.name);
    }
    let out = capi(dir)
        .args(["plan", "--detailed-exitcode", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "plan after convergence:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A tiny deterministic generator for the kill points.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn sigkill_at_random_points_then_reapply_converges() {
    // Kill points are taken from the apply's own progress, not from the
    // clock (a loaded machine shifts every timing): SIGKILL a random time
    // (0-40 ms) after the k-th "Creating..." line, counting only machine
    // lines on even runs (a machine create is in flight for 60 ms) and every
    // resource on odd runs.
    let mut rng = Lcg(0x5eed);
    let mut interrupted_with_pending = 0;
    for i in 0..10 {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
        let machines_only = i % 2 == 0;
        let k = 1 + rng.next() % if machines_only { 5 } else { 12 };
        let delay = Duration::from_millis(rng.next() % 40);
        let mut child = capi_process(dir.path())
            .args([
                "apply",
                "--auto-approve",
                "--sim-latency",
                "60ms",
                "--parallelism",
                "3",
                "-f",
                "c.yaml",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let progress = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = 0;
        let mut kill_point = None;
        for line in progress.lines() {
            let line = line.unwrap();
            if line.ends_with(": Creating...") && (!machines_only || line.contains("/machine/")) {
                seen += 1;
                if seen == k {
                    kill_point = Some(line);
                    break;
                }
            }
        }
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let at = format!("{kill_point:?} + {delay:?}");
        // The state (if any) loads and validates right after the kill.
        if dir.path().join("capi.state.json").exists() {
            let st = StateStore::new(dir.path().join("capi.state.json"))
                .load()
                .unwrap_or_else(|e| panic!("run {i} (killed at {at}): {e}"))
                .unwrap();
            assert_state_valid(&dir.path().join("capi.state.json"));
            if st.resources.iter().any(|r| r.status.is_pending()) {
                interrupted_with_pending += 1;
            }
        }
        let out = capi(dir.path())
            .args(["apply", "--auto-approve", "-f", "c.yaml"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run {i}: re-apply after a kill at {at} failed:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        assert_converged(dir.path());
    }
    // The kill points must actually catch operations in flight.
    assert!(
        interrupted_with_pending >= 3,
        "only {interrupted_with_pending} of 10 kills caught a pending operation"
    );
}

#[test]
fn corrupt_state_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        CLUSTER.replace("replicas: 6", "replicas: 1"),
    )
    .unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    // A second apply so that a backup exists.
    std::fs::write(
        dir.path().join("c.yaml"),
        CLUSTER.replace("replicas: 6", "replicas: 2"),
    )
    .unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    let path = dir.path().join("capi.state.json");
    let good = std::fs::read(&path).unwrap();
    for (what, bad) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        (
            "edited",
            String::from_utf8(good.clone())
                .unwrap()
                .replacen("\"serial\": ", "\"serial\": 1", 1)
                .into_bytes(),
        ),
    ] {
        std::fs::write(&path, &bad).unwrap();
        for cmd in [
            &["plan", "-f", "c.yaml"][..],
            &["apply", "--auto-approve", "-f", "c.yaml"][..],
            &["destroy", "--auto-approve"][..],
        ] {
            let out = capi(dir.path()).args(cmd).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{what} {cmd:?}");
            let err = stderr(&out);
            assert!(
                err.contains("is corrupt") && err.contains("capi.state.json.backup"),
                "{what}: {err}"
            );
            assert!(
                err.contains("it loads and its checksum is valid"),
                "{what}: the backup is good: {err}"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bad,
                "{what}: the file must not be modified"
            );
        }
    }
}

fn wait_for(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn first_ctrl_c_finishes_in_flight_work_second_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
    let child = capi_process(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--sim-latency",
            "400ms",
            "-f",
            "c.yaml",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until machines are being created, then interrupt once.
    wait_for(&dir.path().join("capi.state.sim/machines/crash.jsonl"));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Interrupt received") && err.contains("did not start"),
        "{err}"
    );
    // Operations in flight finished: nothing is left pending, the state is valid.
    let st = StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    assert_state_valid(&dir.path().join("capi.state.json"));
    assert!(
        st.resources.iter().all(|r| !r.status.is_pending()),
        "pending after a graceful stop"
    );
    assert!(
        st.resources
            .iter()
            .filter(|r| r.attributes.as_machine().is_some())
            .count()
            < 9,
        "the apply stopped early"
    );
    // The next apply finishes the job.
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    assert_converged(dir.path());

    // Twice: exit at once with 130, and the state still loads.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), CLUSTER).unwrap();
    let mut child = capi_process(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--sim-latency",
            "10m",
            "-f",
            "c.yaml",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("capi.state.sim/machines/crash.jsonl"));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // A guard, not a timing: the operation in flight lasts ten minutes.
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the second interrupt did not end the process");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    // It did not wait for the machine in flight (a ten-minute operation):
    // the state loads and still shows that machine as pending.
    let st = StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    assert!(
        st.resources.iter().any(|r| r.status.is_pending()),
        "{:?}",
        st.resources
            .iter()
            .map(|r| (&r.address, r.status))
            .collect::<Vec<_>>()
    );
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    assert_converged(dir.path());
}
