//! The ClusterClass benchmark: `cargo bench --bench topology`. One cluster
//! with 3 control-plane machines and 100 MachineDeployments × 100 replicas
//! (10,003 machines), written once as a topology Cluster with its
//! ClusterClass and once flat (the same objects written out), read,
//! expanded, validated, rendered and planned against an empty state, in a
//! child process each so that peak memory (from `wait4`) is per case.
//! Figures go to docs/clusterclass.md. Nothing here asserts a timing.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark reports on the terminal

use std::time::{Duration, Instant};

const MDS: usize = 100;
const REPLICAS: usize = 100;

fn header() -> String {
    "apiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata: {name: bench}\nspec:\n".into()
}

fn topology() -> String {
    let mut s = header();
    s.push_str("  topology:\n    classRef: {name: bench}\n    version: v1.31.2\n    controlPlane: {replicas: 3}\n    variables:\n    - {name: imageRepository, value: registry.example}\n    workers:\n      machineDeployments:\n");
    for i in 0..MDS {
        s.push_str(&format!(
            "      - {{class: worker, name: md-{i}, replicas: {REPLICAS}}}\n"
        ));
    }
    s.push_str(
        r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: ClusterClass
metadata: {name: bench}
spec:
  infrastructure: {templateRef: {apiVersion: infrastructure.cluster.x-k8s.io/v1beta2, kind: DevClusterTemplate, name: bench}}
  controlPlane:
    templateRef: {apiVersion: controlplane.cluster.x-k8s.io/v1beta2, kind: KubeadmControlPlaneTemplate, name: bench-cp}
    machineInfrastructure: {templateRef: {apiVersion: infrastructure.cluster.x-k8s.io/v1beta2, kind: DevMachineTemplate, name: bench-m}}
  workers:
    machineDeployments:
    - class: worker
      bootstrap: {templateRef: {apiVersion: bootstrap.cluster.x-k8s.io/v1beta2, kind: KubeadmConfigTemplate, name: bench-w}}
      infrastructure: {templateRef: {apiVersion: infrastructure.cluster.x-k8s.io/v1beta2, kind: DevMachineTemplate, name: bench-m}}
  variables:
  - name: imageRepository
    required: true
    schema: {openAPIV3Schema: {type: string, default: ""}}
  patches:
  - name: imageRepository
    enabledIf: '{{ ne .imageRepository "" }}'
    definitions:
    - selector: {apiVersion: controlplane.cluster.x-k8s.io/v1beta2, kind: KubeadmControlPlaneTemplate, matchResources: {controlPlane: true}}
      jsonPatches:
      - {op: add, path: /spec/template/spec/kubeadmConfigSpec/clusterConfiguration/imageRepository, valueFrom: {variable: imageRepository}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevClusterTemplate
metadata: {name: bench}
spec: {template: {spec: {backend: {inMemory: {}}}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlaneTemplate
metadata: {name: bench-cp}
spec: {template: {spec: {kubeadmConfigSpec: {clusterConfiguration: {encryptionAlgorithm: ECDSA-P256}}}}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {name: bench-m}
spec: {template: {spec: {backend: {inMemory: {}}}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {name: bench-w}
spec: {template: {spec: {}}}
"#,
    );
    s
}

fn flat() -> String {
    let mut s = header();
    s.push_str(
        r#"  controlPlaneRef: {apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: bench-cp}
  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevCluster, name: bench}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata: {name: bench}
spec: {backend: {inMemory: {}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {name: bench-cp}
spec:
  replicas: 3
  version: v1.31.2
  machineTemplate: {spec: {infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: bench-cpm}}}
  kubeadmConfigSpec: {clusterConfiguration: {encryptionAlgorithm: ECDSA-P256, imageRepository: registry.example}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {name: bench-cpm}
spec: {template: {spec: {backend: {inMemory: {}}}}}
"#,
    );
    for i in 0..MDS {
        s.push_str(&format!(
            r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {{name: md-{i}}}
spec:
  clusterName: bench
  replicas: {REPLICAS}
  template:
    spec:
      clusterName: bench
      version: v1.31.2
      bootstrap: {{configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: md-{i}-w}}}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: md-{i}-m}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {{name: md-{i}-w}}
spec: {{template: {{spec: {{}}}}}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {{name: md-{i}-m}}
spec: {{template: {{spec: {{backend: {{inMemory: {{}}}}}}}}}}
"#
        ));
    }
    s
}

/// Read, expand, build and plan `text`; the number of plan changes.
fn run_once(text: &str) -> usize {
    let m = capi::topology::load_str("bench.yaml", text, &Default::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let d = capi::desired::build(&m, &Default::default()).unwrap();
    let p = capi::plan::plan(
        &d,
        &capi::state::State::empty(),
        &capi::plan::PlanOptions {
            now_unix: 1_800_000_000,
            ..Default::default()
        },
    )
    .unwrap();
    p.changes.len()
}

/// Run one case in a child process: (median wall time, peak RSS in KiB).
// The child is reaped with wait4 (for its peak memory), not wait().
#[allow(clippy::zombie_processes)]
fn measure(case: &str) -> (Duration, i64, String) {
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe)
        .arg("--case")
        .arg(case)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.unwrap(), &mut out).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let mut parts = out.split_whitespace();
    let micros: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let changes = parts.next().unwrap_or("?").to_string();
    (Duration::from_micros(micros), usage.ru_maxrss, changes)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let text = if args[i + 1] == "topology" {
            topology()
        } else {
            flat()
        };
        let mut times = Vec::new();
        let mut changes = 0;
        for _ in 0..3 {
            let start = Instant::now();
            changes = run_once(&text);
            times.push(start.elapsed());
        }
        times.sort();
        println!("{} {changes}", times[1].as_micros());
        return;
    }
    println!("| case | median of 3 | peak RSS | plan changes |");
    println!("| --- | --- | --- | --- |");
    for case in ["flat", "topology"] {
        let (t, rss, changes) = measure(case);
        println!(
            "| {case} ({MDS} MachineDeployments × {REPLICAS} replicas) | {:.2} s | {:.1} MiB | {changes} |",
            t.as_secs_f64(),
            rss as f64 / 1024.0
        );
    }
}
