//! CI use: `capi drift`, saved plans, `--target` / `--replace`, JSON streams.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

fn applied() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example("sim/cluster.yaml"), dir.path().join("c.yaml")).unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    dir
}

fn drift(dir: &Path, extra: &[&str]) -> (i32, String, Vec<serde_json::Value>) {
    let text = capi(dir).arg("drift").args(extra).output().unwrap();
    let json = capi(dir)
        .args(["drift", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(text.status.code(), json.status.code());
    (
        text.status.code().unwrap(),
        stdout(&text),
        json_events(&stdout(&json)),
    )
}

/// A plan writes nothing: no state, and no simulated infrastructure (its
/// refresh's provider, opened to read ahead, leaves no directory behind).
#[test]
fn a_plan_in_a_fresh_directory_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example("sim/cluster.yaml"), dir.path().join("c.yaml")).unwrap();
    capi(dir.path())
        .args(["plan", "--detailed-exitcode", "-f", "c.yaml"])
        .assert()
        .code(2);
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "c.yaml")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A machine log damaged behind capi's back: the plan (whose refresh reads
/// the logs ahead, while the state loads) fails naming the file and line,
/// and changes nothing; without the refresh the plan does not read it.
#[test]
fn a_damaged_machine_log_fails_the_refresh_naming_its_line() {
    let dir = applied();
    let path = dir.path().join("capi.state.sim/machines/demo.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    lines[1] = "{\"name\": \"half a record";
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let state_before = std::fs::read(dir.path().join("capi.state.json")).unwrap();
    let out = capi(dir.path())
        .args(["plan", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("demo.jsonl:2"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("capi.state.json")).unwrap(),
        state_before
    );
    capi(dir.path())
        .args([
            "plan",
            "--refresh=false",
            "--detailed-exitcode",
            "-f",
            "c.yaml",
        ])
        .assert()
        .code(0);
}

#[test]
fn drift_exit_codes_and_no_state_write() {
    let dir = applied();
    let state_before = std::fs::read(dir.path().join("capi.state.json")).unwrap();
    let (code, text, events) = drift(dir.path(), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("No drift"));
    assert_eq!(events.last().unwrap()["drifted"], 0);

    // Unapplied manifest changes are not drift.
    let scaled = std::fs::read_to_string(dir.path().join("c.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 4");
    std::fs::write(dir.path().join("c.yaml"), scaled).unwrap();
    assert_eq!(drift(dir.path(), &["-f", "c.yaml"]).0, 0);

    // A machine deleted behind capi's back.
    let mut log = SimLog::read(dir.path(), "demo");
    let gone = log.name_containing("md-0");
    log.remove(&gone);
    // A machine stopped.
    let stopped = log.name_containing("control-plane");
    log.get_mut(&stopped)["status"] = "stopped".into();
    // A machine whose attributes changed.
    let changed = log.name_containing("md-0");
    log.get_mut(&changed)["version"] = "v1.99.0".into();
    // An extra machine carrying this state's labels.
    let mut extra = log.get_mut(&changed).clone();
    extra["name"] = "intruder".into();
    extra["labels"]["capi.x-k8s.io/address"] = "demo/machine/intruder".into();
    log.records.push(extra);
    log.write();

    let (code, text, events) = drift(dir.path(), &[]);
    assert_eq!(code, 2, "{text}");
    let kinds: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["type"] == "resource_drift")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["address"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |k: &str, a: &str| kinds.iter().any(|(kk, aa)| kk == k && aa.contains(a));
    assert!(has("missing", &gone), "{kinds:?}");
    assert!(has("stopped", &stopped), "{kinds:?}");
    assert!(has("changed", &changed), "{kinds:?}");
    assert!(has("unmanaged", "intruder"), "{kinds:?}");
    assert!(text.contains("v1.99.0"), "{text}");
    // Ignoring: one attribute, one resource.
    let (_, _, ev) = drift(
        dir.path(),
        &["--ignore", &format!("demo/machine/{}.version", changed)],
    );
    assert!(!ev.iter().any(|e| e["kind"] == "changed"), "{ev:?}");
    let all: Vec<String> = kinds.iter().map(|(_, a)| a.clone()).collect();
    let mut args = Vec::new();
    for a in &all {
        args.push("--ignore".to_string());
        args.push(a.clone());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        drift(dir.path(), &args).0,
        0,
        "everything ignored → no drift"
    );
    // Drift never writes the state.
    assert_eq!(
        std::fs::read(dir.path().join("capi.state.json")).unwrap(),
        state_before
    );
    // An error (corrupt state) is 1, never 2.
    std::fs::write(dir.path().join("capi.state.json"), b"{").unwrap();
    assert_eq!(drift(dir.path(), &[]).0, 1);
}

#[test]
fn apply_repairs_drift_by_replacing_machines() {
    let dir = applied();
    let mut log = SimLog::read(dir.path(), "demo");
    log.remove(&log.name_containing("md-0"));
    log.write();
    let out = capi(dir.path())
        .args(["plan", "-f", "c.yaml"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("Note: Objects have changed outside capi") && text.contains("missing"),
        "{text}"
    );
    assert!(
        text.contains("was deleted outside capi") && text.contains("1 to replace"),
        "{text}"
    );
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    assert_eq!(
        capi(dir.path())
            .arg("drift")
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    let out = capi(dir.path())
        .args([
            "plan",
            "--refresh=false",
            "--detailed-exitcode",
            "-f",
            "c.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn machine_health_check_limits_remediation() {
    let dir = applied();
    let mhc = "---\napiVersion: cluster.x-k8s.io/v1beta2\nkind: MachineHealthCheck\nmetadata: {name: demo-md-0-mhc}\nspec:\n  clusterName: demo\n  selector: {matchLabels: {cluster.x-k8s.io/deployment-name: demo-md-0}}\n  remediation: {triggerIf: {unhealthyLessThanOrEqualTo: 1}}\n";
    let text = std::fs::read_to_string(dir.path().join("c.yaml")).unwrap() + mhc;
    std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    // Two of two workers lost: more than the check allows → no remediation.
    let mut log = SimLog::read(dir.path(), "demo");
    log.records
        .retain(|r| !r["name"].as_str().unwrap().contains("md-0"));
    log.write();
    let out = capi(dir.path())
        .args(["plan", "--detailed-exitcode", "-f", "c.yaml"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("2 of 2 machines are unhealthy") && text.contains("remediation is stopped"),
        "{text}"
    );
    // Raise the limit: both are replaced.
    let t = std::fs::read_to_string(dir.path().join("c.yaml"))
        .unwrap()
        .replace(
            "unhealthyLessThanOrEqualTo: 1",
            "unhealthyLessThanOrEqualTo: 100%",
        );
    std::fs::write(dir.path().join("c.yaml"), t).unwrap();
    let out = capi(dir.path())
        .args(["plan", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("2 to replace"), "{}", stdout(&out));
}

#[test]
fn concurrent_drift_while_apply_holds_the_lock() {
    let dir = applied();
    let scaled = std::fs::read_to_string(dir.path().join("c.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 3");
    std::fs::write(dir.path().join("scaled.yaml"), scaled).unwrap();
    let mut apply = capi_process(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--sim-latency",
            "10m",
            "-f",
            "scaled.yaml",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let info = dir.path().join("capi.state.json.lock.info");
    let t = Instant::now();
    while !info.exists() {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = capi(dir.path()).arg("drift").output().unwrap();
    // The apply (ten minutes per machine) still holds the lock: drift did
    // not wait for it.
    assert!(
        apply.try_wait().unwrap().is_none(),
        "drift returned only after the apply had finished"
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(2)),
        "{}",
        stderr(&out)
    );
    apply.kill().unwrap();
    apply.wait().unwrap();
}

#[test]
fn saved_plan_is_applied_exactly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example("sim/cluster.yaml"), dir.path().join("c.yaml")).unwrap();
    let out = capi(dir.path())
        .args(["plan", "-out", "p.plan", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan_bytes = std::fs::read(dir.path().join("p.plan")).unwrap();
    let saved = capi::plan::file::decode(&plan_bytes).unwrap();
    assert!(!String::from_utf8_lossy(&plan_bytes).contains("PRIVATE KEY"));
    // Applied without a prompt (no terminal, no --auto-approve).
    let out = capi(dir.path())
        .args(["apply", "--json", "p.plan"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_events(&stdout(&out));
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "apply_start")
        .map(|e| e["address"].as_str().unwrap())
        .collect();
    let planned: std::collections::BTreeSet<&str> = saved
        .plan
        .steps
        .iter()
        .map(|s| s.address.as_str())
        .collect();
    assert_eq!(started.len(), saved.plan.steps.len());
    assert_eq!(
        started
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        planned
    );
    // The same file again: the state moved on → stale.
    let out = capi(dir.path()).args(["apply", "p.plan"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Saved plan is stale: the state changed since the plan was made"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stale_saved_plans_are_refused_each_way() {
    let dir = applied();
    let scaled = std::fs::read_to_string(dir.path().join("c.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: ${WORKERS:=3}");
    std::fs::write(dir.path().join("s.yaml"), &scaled).unwrap();
    capi(dir.path())
        .args(["plan", "-out=p.plan", "-f", "s.yaml"])
        .assert()
        .success();
    let state = dir.path().join("capi.state.json");
    let err = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = capi(dir.path());
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        stderr(&out)
    };
    // Variables changed.
    assert!(err(&["apply", "p.plan"], &[("WORKERS", "4")]).contains("variable values changed"));
    // Manifests changed.
    std::fs::write(
        dir.path().join("s.yaml"),
        scaled.replace("v1.31.2", "v1.31.2 # edited"),
    )
    .unwrap();
    assert!(err(&["apply", "p.plan"], &[]).contains("the manifests changed"));
    std::fs::write(dir.path().join("s.yaml"), &scaled).unwrap();
    // Serial changed (another apply happened).
    let original = std::fs::read(&state).unwrap();
    let st = capi::state::StateStore::new(&state)
        .load()
        .unwrap()
        .unwrap();
    let worker = st
        .resources
        .iter()
        .find(|r| r.address.as_str().contains("/machine/demo-md-0"))
        .unwrap()
        .address
        .to_string();
    capi(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "-f",
            "c.yaml",
            "--replace",
            &worker,
        ])
        .assert()
        .success();
    assert!(err(&["apply", "p.plan"], &[]).contains("Saved plan is stale"));
    // Lineage changed (a different state).
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("c.yaml"), other.path().join("c.yaml")).unwrap();
    capi(other.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .assert()
        .success();
    std::fs::copy(other.path().join("capi.state.json"), &state).unwrap();
    assert!(err(&["apply", "p.plan"], &[]).contains("does not match the given state"));
    std::fs::write(&state, original).unwrap();
    // A modified plan file is refused by its checksum.
    let mut bytes = std::fs::read(dir.path().join("p.plan")).unwrap();
    let i = bytes.iter().position(|&b| b == b'3').unwrap();
    bytes[i] = b'4';
    std::fs::write(dir.path().join("p.plan"), bytes).unwrap();
    assert!(err(&["apply", "p.plan"], &[]).contains("checksum mismatch"));
}

#[test]
fn target_and_replace() {
    let dir = applied();
    let text = std::fs::read_to_string(dir.path().join("c.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 4");
    std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    // Without a target: 2 machines to add.
    let full = stdout(
        &capi(dir.path())
            .args(["plan", "-f", "c.yaml"])
            .output()
            .unwrap(),
    );
    assert!(full.contains("Plan: 2 to add"), "{full}");
    let names: Vec<String> = full
        .lines()
        .filter_map(|l| {
            l.strip_prefix("  # demo/machine/")
                .and_then(|r| r.strip_suffix(" will be created"))
                .map(str::to_string)
        })
        .collect();
    let target = format!("demo/machine/{}", names[0]);
    let out = capi(dir.path())
        .args(["plan", "--target", &target, "-f", "c.yaml"])
        .output()
        .unwrap();
    let t = stdout(&out);
    assert!(
        t.contains("Plan: 1 to add") && t.contains(&target) && !t.contains(&names[1]),
        "{t}"
    );
    // --replace forces a replacement with its reason.
    let state = capi::state::StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    let victim = state
        .resources
        .iter()
        .find(|r| r.address.as_str().contains("/machine/demo-md-0"))
        .unwrap()
        .address
        .to_string();
    let t = stdout(
        &capi(dir.path())
            .args(["plan", "--replace", &victim, "-f", "c.yaml"])
            .output()
            .unwrap(),
    );
    assert!(
        t.contains(&format!("# {victim} will be replaced by"))
            && t.contains("replacement requested with --replace"),
        "{t}"
    );
    let bad = capi(dir.path())
        .args(["plan", "--replace", "demo/machine/nope", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("no such resource"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn generate_each_flavor_plans_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for flavor in ["sim", "docker", "development", "sim-topology", "openstack"] {
        let mut c = capi(dir.path());
        c.args([
            "generate",
            "cluster",
            "gen",
            "--flavor",
            flavor,
            "--kubernetes-version",
            "v1.31.2",
            "--control-plane-machine-count",
            "3",
            "--worker-machine-count",
            "2",
        ]);
        if flavor == "openstack" {
            for kv in [
                "OPENSTACK_CLOUD_YAML_B64=Y2xvdWRzOiB7fQ==",
                "OPENSTACK_EXTERNAL_NETWORK_ID=ext",
                "OPENSTACK_CLOUD=devcloud",
                "OPENSTACK_CONTROL_PLANE_MACHINE_FLAVOR=m1.small",
                "OPENSTACK_NODE_MACHINE_FLAVOR=m1.small",
                "OPENSTACK_IMAGE_NAME=tiny",
            ] {
                c.args(["--var", kv]);
            }
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{flavor}: {}", stderr(&out));
        let manifest = stdout(&out);
        assert!(
            manifest.contains("name: gen")
                && manifest.contains("replicas: 3")
                && !manifest.contains("${"),
            "{flavor}"
        );
        // Ready for `capi plan -f -`.
        let state = format!("{flavor}.state.json");
        let plan = capi(dir.path())
            .args(["plan", "--state", &state, "--detailed-exitcode", "-f", "-"])
            .write_stdin(manifest.clone())
            .output()
            .unwrap();
        assert_eq!(plan.status.code(), Some(2), "{flavor}: {}", stderr(&plan));
        assert!(
            stdout(&plan).contains("Plan: 9 to add"),
            "{flavor}: {}",
            stdout(&plan)
        );
        // The sim flavors apply and converge.
        if flavor.starts_with("sim") {
            capi(dir.path())
                .args([
                    "apply",
                    "--state",
                    &state,
                    "--auto-approve",
                    "--sim-latency",
                    "0s",
                    "-f",
                    "-",
                ])
                .write_stdin(manifest.clone())
                .assert()
                .success();
            let again = capi(dir.path())
                .args(["plan", "--state", &state, "--detailed-exitcode", "-f", "-"])
                .write_stdin(manifest)
                .output()
                .unwrap();
            assert_eq!(again.status.code(), Some(0));
        }
    }
}

#[test]
fn generate_reports_every_missing_variable_and_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = capi(dir.path())
        .args(["generate", "cluster", "gen", "--flavor", "openstack"])
        .env_remove("KUBERNETES_VERSION")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("[KUBERNETES_VERSION, OPENSTACK_CLOUD, OPENSTACK_CLOUD_YAML_B64, OPENSTACK_CONTROL_PLANE_MACHINE_FLAVOR, OPENSTACK_EXTERNAL_NETWORK_ID, OPENSTACK_IMAGE_NAME, OPENSTACK_NODE_MACHINE_FLAVOR]"), "{err}");
    let list = capi(dir.path())
        .args([
            "generate",
            "cluster",
            "--flavor",
            "docker",
            "--list-variables",
        ])
        .output()
        .unwrap();
    let text = stdout(&list);
    assert!(
        text.contains("Required variables:\n  - CLUSTER_NAME\n"),
        "{text}"
    );
    assert!(text.contains("  - DOCKER_PRIVILEGED\n"), "{text}");
    let bad = capi(dir.path())
        .args(["generate", "cluster", "x", "--flavor", "nope"])
        .output()
        .unwrap();
    assert!(stderr(&bad)
        .contains("built-in flavors: sim, docker, development, sim-topology, openstack"));
}
