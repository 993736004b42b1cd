//! CLI snapshot tests: plan text, JSON plan events and error rendering.

use crate::common::*;
use crate::manifests::BASE;

const NOW: &str = "2030-01-01T00:00:00Z";

#[test]
fn example_applies_and_replans_clean() {
    let dir = tempfile::tempdir().unwrap();
    let ex = example("sim");
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f"])
        .arg(&ex)
        .assert()
        .success();
    let out = capi(dir.path())
        .args(["plan", "--detailed-exitcode", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("No changes."));
}

#[test]
fn plan_text_of_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let out = capi(dir.path())
        .args(["plan", "--detailed-exitcode", "-f"])
        .arg(example("sim"))
        .env("CAPI_NOW", NOW)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "changes present → 2");
    insta::assert_snapshot!("plan_example_fresh", stdout(&out));
    assert!(
        !dir.path().join("capi.state.json").exists(),
        "plan writes no state"
    );
}

#[test]
fn plan_json_events() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), BASE).unwrap();
    let out = capi(dir.path())
        .args(["plan", "--json", "-f", "c.yaml"])
        .env("CAPI_NOW", NOW)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_events(&stdout(&out));
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"version"));
    assert_eq!(types.last(), Some(&"change_summary"));
    assert!(types.contains(&"plan"));
    let changes: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "planned_change")
        .collect();
    // Every change names its address, action(s) and a reason.
    for c in &changes {
        assert!(
            c["address"].is_string()
                && c["action"].is_string()
                && c["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{c}"
        );
        assert!(c["actions"].is_array());
    }
    // A new machine's event lists each attribute of its spec as a change
    // from nothing (the plan holds them only as its `after`).
    let machine = changes
        .iter()
        .find(|c| c["resource_type"] == "machine")
        .unwrap();
    let attributes = machine["attributes"].as_array().unwrap();
    let name = attributes.iter().find(|a| a["path"] == "name").unwrap();
    assert_eq!(name["after"], machine["after"]["name"], "{machine}");
    assert!(name.get("before").is_none_or(|b| b.is_null()), "{name}");
    assert!(
        attributes.iter().any(|a| a["path"] == "owner.kind"),
        "{machine}"
    );
    let summary = events.last().unwrap();
    assert_eq!(
        summary["add"], 9,
        "pki, network, lb, token, 3 cp + 2 workers: {summary}"
    );
    // The first three planned changes, without volatile fields, as a snapshot.
    let first: Vec<serde_json::Value> = changes.iter().take(3).map(|c| serde_json::json!({"address": c["address"], "action": c["action"], "actions": c["actions"], "reason_code": c["reason_code"], "reason": c["reason"]})).collect();
    insta::assert_json_snapshot!("plan_json_first_changes", first);
}

/// A replacement that deletes first (a control plane that may not surge)
/// lists Terraform's actions in the order they run, and the `plan` event
/// says so; the text plan shows `-/+` (tests/scenarios/kcp-3-surge-0).
#[test]
fn delete_first_replacements_list_delete_then_create() {
    let scenario = repo().join("tests/scenarios/kcp-3-surge-0");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        scenario.join("state.json"),
        dir.path().join("capi.state.json"),
    )
    .unwrap();
    let out = capi(dir.path())
        .args(["plan", "--json", "--refresh=false", "-f"])
        .arg(scenario.join("manifest.yaml"))
        .env("CAPI_NOW", "2030-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_events(&stdout(&out));
    let replaced: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "planned_change" && e["action"] == "replace")
        .collect();
    assert_eq!(replaced.len(), 3, "three control-plane machines");
    for c in &replaced {
        assert_eq!(c["actions"], serde_json::json!(["delete", "create"]), "{c}");
    }
    let plan = events.iter().find(|e| e["type"] == "plan").unwrap();
    let in_plan: Vec<&serde_json::Value> = plan["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "replace")
        .collect();
    assert_eq!(in_plan.len(), 3);
    assert!(
        in_plan.iter().all(|c| c["delete_first"] == true),
        "{in_plan:?}"
    );
    let text = std::fs::read_to_string(scenario.join("plan.txt")).unwrap();
    assert!(text.contains("-/+ destroy and then create replacement"));
    assert!(!text.contains("+/-"), "{text}");
}

#[test]
fn error_rendering_of_validation_problems() {
    let dir = tempfile::tempdir().unwrap();
    let bad = BASE
        .replace(
            "  replicas: 3\n  version: v1.31.2",
            "  replicas: 2\n  verison: v1.31.2\n  version: v1.31.2",
        )
        .replace("      version: v1.31.2\n", "      version: 1.31\n");
    std::fs::write(dir.path().join("cluster.yaml"), bad).unwrap();
    let out = capi(dir.path())
        .args(["plan", "-f", "cluster.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!("validation_errors", stderr(&out));
}

#[test]
fn error_rendering_of_missing_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        BASE.replace(
            "name: c1-md\nspec:\n  clusterName",
            "name: ${MD_NAME}\nspec:\n  clusterName",
        )
        .replace("  replicas: 2\n", "  replicas: ${WORKERS}\n"),
    )
    .unwrap();
    let out = capi(dir.path())
        .args(["plan", "-f", "c.yaml"])
        .env_remove("MD_NAME")
        .env_remove("WORKERS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!("missing_variables", stderr(&out));
    // Supplied with --var and --var-file, they resolve.
    std::fs::write(dir.path().join("vars.yaml"), "WORKERS: 1\n").unwrap();
    capi(dir.path())
        .args([
            "validate",
            "-f",
            "c.yaml",
            "--var",
            "MD_NAME=c1-md",
            "--var-file",
            "vars.yaml",
        ])
        .assert()
        .success();
}

#[test]
fn apply_without_terminal_or_approval_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let out = capi(dir.path())
        .args(["apply", "-f"])
        .arg(example("sim"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("needs approval") && err.contains("--auto-approve"),
        "{err}"
    );
    assert!(!dir.path().join("capi.state.json").exists());
}

#[test]
fn show_state_list_and_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f"])
        .arg(example("sim"))
        .assert()
        .success();
    let list = capi(dir.path()).args(["state", "list"]).output().unwrap();
    let addrs = stdout(&list);
    assert!(
        addrs.lines().any(|l| l == "demo/pki")
            && addrs
                .lines()
                .filter(|l| l.starts_with("demo/machine/"))
                .count()
                == 5,
        "{addrs}"
    );
    let pki = capi(dir.path())
        .args(["state", "show", "demo/pki"])
        .output()
        .unwrap();
    let text = stdout(&pki);
    assert!(text.contains("\"ca.key\": \"(sensitive)\""), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let show = capi(dir.path()).args(["show", "--json"]).output().unwrap();
    assert!(!stdout(&show).contains("PRIVATE KEY"));
    // Like every --json stream: the version line, then the state.
    let events = json_events(&stdout(&show));
    assert_eq!(events[0]["type"], "version");
    assert_eq!(events[1]["type"], "state");
    assert_eq!(events.len(), 2);
    let text = capi(dir.path()).args(["show", "demo"]).output().unwrap();
    assert!(stdout(&text).contains("demo/loadbalancer") && stdout(&text).contains("endpoint="));
    let missing = capi(dir.path()).args(["show", "nope"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn graph_dot_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = capi(dir.path())
        .args(["graph", "-f"])
        .arg(example("sim"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph capi {"));
    assert!(
        dot.contains("\"demo/network\" -> \"demo/loadbalancer\""),
        "{dot}"
    );
    let text = capi(dir.path())
        .args(["graph", "--format", "text", "-f"])
        .arg(example("sim"))
        .output()
        .unwrap();
    let t = stdout(&text);
    // Dependencies come first.
    let pos = |s: &str| {
        t.lines()
            .position(|l| l == s)
            .unwrap_or_else(|| panic!("{s} in\n{t}"))
    };
    assert!(pos("demo/network") < pos("demo/loadbalancer"));
    assert!(
        t.contains("demo/machine/demo-control-plane-888g1-1\n") && t.contains("  <- demo/token")
    );
    // The executor's ordering is drawn too: the first control-plane machine
    // (kubeadm init) before the token, then the joining machines.
    assert!(
        dot.contains(
            "\"demo/machine/demo-control-plane-888g1-0\" -> \"demo/token\" [style = \"dashed\"]"
        ),
        "{dot}"
    );
    assert!(pos("demo/machine/demo-control-plane-888g1-0") < pos("demo/token"));
    assert!(
        t.contains("  <- demo/machine/demo-control-plane-888g1-0 (runs after it)"),
        "{t}"
    );
}

#[test]
fn destroy_removes_everything_in_reverse_order() {
    let dir = tempfile::tempdir().unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f"])
        .arg(example("sim"))
        .assert()
        .success();
    let out = capi(dir.path())
        .args(["destroy", "--auto-approve"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Destroy complete! Resources: 9 destroyed."),
        "{text}"
    );
    // The plan lists workers before control-plane machines and machines before the network.
    let idx = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s}"));
    assert!(idx("# demo/machine/demo-md-0") < idx("# demo/machine/demo-control-plane"));
    assert!(idx("# demo/machine/demo-control-plane") < idx("# demo/network"));
    let sim =
        capi::provider::sim::SimProvider::open(&dir.path().join("capi.state.sim"), None).unwrap();
    assert!(sim.machines(None).is_empty());
    assert!(capi(dir.path())
        .args(["state", "list"])
        .output()
        .unwrap()
        .stdout
        .is_empty());
}

#[test]
fn usage_errors_exit_1_never_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["plan", "--bogus"][..],
        &["plann"],
        &["state", "frobnicate"],
        &["apply", "-auto-aprove"],
    ] {
        let out = capi(dir.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    }
    // The whole flag is named, with the nearest real one.
    let out = capi(dir.path())
        .args(["apply", "-auto-aprove"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("--auto-aprove"), "{err}");
    assert!(err.contains("--auto-approve"), "{err}");
    // Help and version are not errors.
    for args in [&["--help"][..], &["--version"], &["plan", "--help"]] {
        let out = capi(dir.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn terraform_single_dash_flags_work() {
    let dir = tempfile::tempdir().unwrap();
    let ex = example("sim");
    let out = capi(dir.path())
        .args([
            "apply",
            "-auto-approve",
            "-parallelism=2",
            "-input=false",
            "-lock=true",
            "-no-color",
            "-f",
        ])
        .arg(&ex)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = capi(dir.path())
        .args(["plan", "-detailed-exitcode", "-refresh=false", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("No changes."), "{}", stdout(&out));
}

/// One control-plane machine and no workers, each create taking `latency`.
fn single_machine(dir: &std::path::Path) {
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    let text =
        text.replacen("replicas: 3", "replicas: 1", 1)
            .replacen("replicas: 2", "replicas: 0", 1);
    std::fs::write(dir.join("c.yaml"), text).unwrap();
}

#[test]
fn piped_apply_says_still_creating_every_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    single_machine(dir.path());
    let out = capi(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "-f",
            "c.yaml",
            "--sim-latency",
            "12s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let beat = err
        .lines()
        .find(|l| l.contains("Still creating... [10s elapsed]"))
        .unwrap_or_else(|| panic!("no heartbeat in:\n{err}"));
    assert!(beat.starts_with("demo/machine/"), "{beat}");
    assert!(err.contains("Creation complete after"), "{err}");
    // The same as JSON.
    let dir = tempfile::tempdir().unwrap();
    single_machine(dir.path());
    let out = capi(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--json",
            "-f",
            "c.yaml",
            "--sim-latency",
            "12s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_events(&stdout(&out));
    let progress: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "apply_progress")
        .collect();
    assert!(!progress.is_empty(), "{}", stdout(&out));
    assert_eq!(progress[0]["elapsed_seconds"], 10.0);
    assert_eq!(progress[0]["action"], "create");
}

#[test]
fn show_planfile_prints_what_apply_will_do() {
    let dir = tempfile::tempdir().unwrap();
    let ex = example("sim");
    let out = capi(dir.path())
        .args(["plan", "-out", "p.plan", "-f"])
        .arg(&ex)
        .env("CAPI_NOW", NOW)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let planned = stdout(&out);
    let out = capi(dir.path()).args(["show", "p.plan"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The same plan text as when it was made (the plan's own lines).
    let shown = stdout(&out);
    assert!(shown.contains("to add"), "{shown}");
    for line in shown.lines().filter(|l| l.contains("will be created")) {
        assert!(planned.contains(line), "{line} not in the plan as made");
    }
    let out = capi(dir.path())
        .args(["show", "--json", "p.plan"])
        .output()
        .unwrap();
    let events = json_events(&stdout(&out));
    assert!(events.iter().any(|e| e["type"] == "planned_change"));
    // Applying it with --json: a stream like any other, version first, each
    // line with Terraform's @level/@message/@timestamp (checked by the schema).
    let out = capi(dir.path())
        .args(["apply", "--json", "p.plan"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_events(&stdout(&out));
    assert_eq!(events[0]["type"], "version");
    assert_eq!(events.iter().filter(|e| e["type"] == "version").count(), 1);
    assert_eq!(events.last().unwrap()["type"], "apply_summary");
    let start = events.iter().find(|e| e["type"] == "apply_start").unwrap();
    assert_eq!(
        start["@message"],
        format!("{}: Creating...", start["address"].as_str().unwrap())
    );
    // A file that is no plan is a clear error.
    std::fs::write(dir.path().join("junk"), "hello").unwrap();
    let out = capi(dir.path()).args(["show", "junk"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("plan file"), "{}", stderr(&out));
}

#[test]
fn completions_and_man_page_come_from_the_real_flags() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = capi(dir.path())
            .args(["completion", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("auto-approve"), "{shell}: {text}");
        assert!(text.contains("detailed-exitcode"), "{shell}");
    }
    let out = capi(dir.path()).args(["man"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(".ie") || stdout(&out).contains(".TH capi"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn destroy_one_cluster_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["alpha", "beta"] {
        let out = capi(d)
            .args(["generate", "cluster", name, "--flavor", "sim"])
            .args(["--kubernetes-version", "v1.31.2"])
            .args([
                "--control-plane-machine-count",
                "1",
                "--worker-machine-count",
                "1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::write(d.join(format!("{name}.yaml")), out.stdout).unwrap();
    }
    let out = capi(d)
        .args([
            "apply",
            "--auto-approve",
            "-f",
            "alpha.yaml",
            "-f",
            "beta.yaml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = capi(d)
        .args(["destroy", "gamma", "--auto-approve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("alpha, beta"), "{}", stderr(&out));
    let out = capi(d)
        .args(["destroy", "beta", "--auto-approve"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&capi(d).args(["state", "list"]).output().unwrap());
    assert!(!list.contains("beta/"), "{list}");
    assert_eq!(
        list.lines().filter(|l| l.starts_with("alpha/")).count(),
        8,
        "{list}"
    );
    // alpha is exactly as applied.
    let out = capi(d)
        .args(["plan", "--detailed-exitcode", "-f", "alpha.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn plan_leaves_no_lock_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let ex = example("sim");
    let out = capi(dir.path())
        .args(["apply", "--auto-approve", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for args in [&["plan"][..], &["plan", "--refresh=false"]] {
        let out = capi(dir.path())
            .args(args)
            .arg("-f")
            .arg(&ex)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".lock"))
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

#[test]
fn short_cluster_names_and_namespace_flag_in_every_cluster_command() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = BASE
        .replace("c1", "alpha")
        .replace("metadata:\n", "metadata:\n  namespace: fleet\n");
    let beta = BASE.replace("c1", "beta");
    std::fs::write(dir.path().join("two.yaml"), format!("{alpha}---\n{beta}")).unwrap();
    let run = |args: &[&str]| capi(dir.path()).args(args).output().unwrap();
    let ok = |args: &[&str]| {
        let o = run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    ok(&["apply", "--auto-approve", "-f", "two.yaml"]);
    // upgrade lists the clusters as they must be named, and takes the short name.
    let o = run(&["upgrade", "--to", "v1.31.3", "--dry-run", "-f", "two.yaml"]);
    assert!(stderr(&o).contains("fleet:alpha, beta"), "{}", stderr(&o));
    let text = ok(&[
        "upgrade",
        "--to",
        "v1.31.3",
        "--dry-run",
        "-f",
        "two.yaml",
        "alpha",
    ]);
    assert!(text.contains("Upgrade of cluster fleet:alpha"), "{text}");
    ok(&[
        "upgrade",
        "--to",
        "v1.31.3",
        "--dry-run",
        "-f",
        "two.yaml",
        "-n",
        "fleet",
        "alpha",
    ]);
    // show, kubeconfig, describe: short name, namespace:name, -n.
    for args in [
        vec!["show", "alpha"],
        vec!["show", "fleet:alpha"],
        vec!["show", "-n", "fleet", "alpha"],
    ] {
        let text = ok(&args);
        assert!(text.contains("fleet:alpha/machine/"), "{args:?}: {text}");
        assert!(!text.contains("beta/"), "{args:?}: {text}");
    }
    for args in [
        vec!["kubeconfig", "alpha"],
        vec!["kubeconfig", "alpha", "--namespace", "fleet"],
    ] {
        assert!(ok(&args).contains("certificate-authority-data"), "{args:?}");
    }
    for args in [
        vec!["describe", "cluster", "alpha"],
        vec![
            "describe", "cluster", "-n", "fleet", "alpha", "-f", "two.yaml",
        ],
    ] {
        assert!(ok(&args).contains("Cluster/fleet:alpha"), "{args:?}");
    }
    // The wrong namespace is not silently ignored.
    let o = run(&["show", "-n", "default", "alpha"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fleet:alpha"), "{}", stderr(&o));
    // destroy: the wrong namespace is refused; --target and CLUSTER take the
    // short name (and -n); only that cluster goes.
    let o = run(&["destroy", "-n", "default", "alpha", "--auto-approve"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no cluster"), "{}", stderr(&o));
    ok(&["destroy", "--target", "alpha", "--auto-approve"]);
    let list = ok(&["state", "list"]);
    assert!(!list.contains("fleet:alpha/"), "{list}");
    assert!(list.contains("beta/machine/"), "{list}");
    ok(&["destroy", "-n", "default", "beta", "--auto-approve"]);
    assert!(ok(&["state", "list"]).trim().is_empty());
}

#[test]
fn describe_shows_the_planners_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let on_delete = BASE.replace(
        "  replicas: 2\n  template:",
        "  replicas: 2\n  rollout:\n    strategy:\n      type: OnDelete\n  template:",
    );
    let older = |t: &str| t.replace("      version: v1.31.2\n", "      version: v1.31.1\n");
    std::fs::write(dir.path().join("c.yaml"), &on_delete).unwrap();
    let run = |args: &[&str]| capi(dir.path()).args(args).output().unwrap();
    assert!(run(&["apply", "--auto-approve", "-f", "c.yaml"])
        .status
        .success());
    // OnDelete: outdated machines stay; plan and describe agree.
    std::fs::write(dir.path().join("c.yaml"), older(&on_delete)).unwrap();
    let out = run(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = run(&["describe", "cluster", "c1", "-f", "c.yaml"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!text.contains("will be replaced"), "{text}");
    assert!(
        text.contains("kept, `capi plan` does not replace it"),
        "{text}"
    );
    // RollingUpdate: the same edit rolls the machines, and describe says so.
    std::fs::write(dir.path().join("c.yaml"), older(BASE)).unwrap();
    let out = run(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = stdout(&run(&["describe", "cluster", "c1", "-f", "c.yaml"]));
    assert!(text.contains("outdated (v1.31.2): will be"), "{text}");
}

#[test]
fn template_edits_in_place_follow_cluster_api() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| capi(dir.path()).args(args).output().unwrap();
    // A clock past the rolloutAfter below (apply records it as the
    // creation time of the machines it makes).
    let later = |args: &[&str]| {
        capi(dir.path())
            .args(args)
            .env("CAPI_NOW", NOW)
            .output()
            .unwrap()
    };
    let write = |text: &str| std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    // describe's UP TO DATE count of the MachineDeployment.
    let md_up_to_date = |out: std::process::Output| -> String {
        assert!(out.status.success(), "{}", stderr(&out));
        let events = json_events(&stdout(&out));
        let rows = events
            .iter()
            .find(|e| e["type"] == "describe")
            .expect("a describe event")["rows"]
            .clone();
        let md = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "MachineDeployment/c1-md")
            .cloned()
            .expect("the MachineDeployment's row");
        md["up_to_date"].as_str().unwrap_or_default().to_string()
    };
    let describe = ["describe", "cluster", "c1", "-f", "c.yaml", "--json"];
    write(BASE);
    assert!(run(&["apply", "--auto-approve", "-f", "c.yaml"])
        .status
        .success());

    // An infrastructure template edited in place is refused, with upstream's advice.
    let edited = BASE.replace(
        "      backend:\n        inMemory: {}\n",
        "      backend:\n        inMemory: {vm: {provisioning: {startupDuration: 1s}}}\n",
    );
    write(&edited);
    let out = run(&["plan", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("DevMachineTemplate \"c1-machines\""), "{err}");
    assert!(
        err.contains("create a new DevMachineTemplate with a new name"),
        "{err}"
    );
    // The template's own document.
    let doc = "apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\nkind: DevMachineTemplate";
    let line = BASE[..BASE.find(doc).unwrap()].lines().count() + 1;
    assert!(err.contains(&format!("c.yaml:{line}")), "{line}: {err}");
    // The same content under a new name rolls the machines.
    write(&edited.replace("c1-machines", "c1-machines-2"));
    let out = run(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("will be replaced by"),
        "{}",
        stdout(&out)
    );

    // A KubeadmConfigTemplate edited in place replaces nothing; new machines differ.
    let bootstrap = BASE.replace(
        "  template:\n    spec: {}\n",
        "  template:\n    spec: {preKubeadmCommands: [echo new]}\n",
    );
    write(&bootstrap);
    let out = run(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out)
            .contains("KubeadmConfigTemplate/c1-md was edited in place: the 2 existing machine(s)"),
        "{}",
        stdout(&out)
    );
    // describe agrees with plan: the machines are up to date.
    assert_eq!(md_up_to_date(run(&describe)), "2");
    write(&bootstrap.replace("  replicas: 2\n  template:", "  replicas: 3\n  template:"));
    let out = run(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(
        text.contains("1 to add, 0 to change, 0 to replace, 0 to destroy"),
        "{text}"
    );
    // The new machine's bootstrap document is the new content's: no machine
    // in the state has it.
    let sha = text
        .split("join-worker (kubeadm.k8s.io/v1beta4), sha256:")
        .nth(1)
        .map(|t| &t[..12])
        .expect("the new machine's bootstrap document");
    let state_text = std::fs::read_to_string(dir.path().join("capi.state.json")).unwrap();
    assert!(
        state_text.contains("\"sha256\":\""),
        "bootstrap documents are in the state"
    );
    assert!(!state_text.contains(sha), "new machines differ: {sha}");

    // spec.rollout.after (rolloutAfter) forces a rollout once it has passed.
    let after = |when: &str| {
        BASE.replace(
            "  replicas: 2\n  template:",
            &format!("  replicas: 2\n  rollout:\n    after: \"{when}\"\n  template:"),
        )
    };
    write(&after("2029-06-01T00:00:00Z"));
    assert_eq!(
        run(&["plan", "--detailed-exitcode", "-f", "c.yaml"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(md_up_to_date(run(&describe)), "2");
    let out = later(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    // Past rolloutAfter, describe counts them outdated, as plan rolls them.
    assert_eq!(md_up_to_date(later(&describe)), "0");
    let text = stdout(&out);
    assert!(
        text.contains("spec.rolloutAfter (2029-06-01T00:00:00Z) has passed"),
        "{text}"
    );
    assert!(text.contains("c1/machine/c1-md-"), "{text}");
    assert!(
        !text.contains("c1/machine/c1-cp-"),
        "only the MachineDeployment rolls: {text}"
    );
    let out = later(&["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = later(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert!(
        !stdout(&out).contains("rolloutAfter"),
        "rolled once: {}",
        stdout(&out)
    );
}

#[test]
fn directories_recurse_with_r_and_say_what_they_skip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    std::fs::create_dir_all(d.join("m/clusters/demo")).unwrap();
    std::fs::write(d.join("m/clusters/demo/c.yaml"), &text).unwrap();
    // Nothing at the top: an error that points at -R.
    let out = capi(d).args(["validate", "-f", "m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("-R"), "{}", stderr(&out));
    // -R reads it.
    let out = capi(d).args(["plan", "-R", "-f", "m"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("demo/network"), "{}", stdout(&out));
    // Something at the top: the skipped subdirectory is named.
    std::fs::write(
        d.join("m/extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
    )
    .unwrap();
    let out = capi(d).args(["validate", "-f", "m"]).output().unwrap();
    assert!(stderr(&out).contains("clusters"), "{}", stderr(&out));
    assert!(stderr(&out).contains("not read"), "{}", stderr(&out));
}

#[test]
fn a_500_machine_plan_is_summarised_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = capi(d)
        .args(["generate", "cluster", "big", "--flavor", "sim"])
        .args(["--kubernetes-version", "v1.31.2"])
        .args([
            "--control-plane-machine-count",
            "3",
            "--worker-machine-count",
            "500",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(d.join("big.yaml"), out.stdout).unwrap();
    let out = capi(d).args(["plan", "-f", "big.yaml"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.lines().count() < 150, "{} lines", text.lines().count());
    assert!(text.contains("and 499 more machine change(s)"), "{text}");
    assert!(text.contains("499 to create"), "{text}");
    assert!(text.contains("Plan: 507 to add"), "{text}");
    // --full: every machine.
    let out = capi(d)
        .args(["plan", "--full", "-f", "big.yaml"])
        .output()
        .unwrap();
    let full = stdout(&out);
    assert_eq!(full.matches("will be created").count(), 507);
    // --json is always complete.
    let out = capi(d)
        .args(["plan", "--json", "-f", "big.yaml"])
        .output()
        .unwrap();
    let machines = json_events(&stdout(&out))
        .into_iter()
        .filter(|e| e["type"] == "planned_change" && e["resource_type"] == "machine")
        .count();
    assert_eq!(machines, 503);
}

#[test]
fn describe_show_and_state_show_speak_json_and_yaml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), BASE).unwrap();
    let run = |args: &[&str]| {
        let out = capi(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    run(&["apply", "--auto-approve", "-f", "c.yaml"]);

    // describe: the same rows as the tree, for programs.
    let tree = run(&["describe", "cluster", "c1", "-f", "c.yaml"]);
    let doc: serde_json::Value = serde_json::from_str(&run(&[
        "describe", "cluster", "c1", "-f", "c.yaml", "-o", "json",
    ]))
    .unwrap();
    assert_eq!(doc["cluster"], "c1");
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), tree.lines().count() - 1, "{tree}");
    assert_eq!(rows[0]["name"], "Cluster/c1");
    assert_eq!(rows[0]["depth"], 0);
    assert_eq!(rows[0]["up_to_date"], "5");
    let md = rows
        .iter()
        .find(|r| r["name"] == "MachineDeployment/c1-md")
        .unwrap();
    assert_eq!(md["depth"], 2);
    assert_eq!(md["replicas"], "2/2");
    let yaml: serde_json::Value = serde_yaml::from_str(&run(&[
        "describe", "cluster", "c1", "-f", "c.yaml", "-o", "yaml",
    ]))
    .unwrap();
    assert_eq!(yaml, doc);
    let events = json_events(&run(&[
        "describe", "cluster", "c1", "-f", "c.yaml", "--json",
    ]));
    assert_eq!(events[1]["type"], "describe");
    assert_eq!(events[1]["rows"], doc["rows"]);

    // show and state show: documents with secrets masked.
    let state: serde_json::Value = serde_yaml::from_str(&run(&["show", "-o", "yaml"])).unwrap();
    assert!(state["serial"].as_u64().unwrap() > 0);
    let pki: serde_json::Value =
        serde_yaml::from_str(&run(&["state", "show", "c1/pki", "-o", "yaml"])).unwrap();
    assert_eq!(pki["address"], "c1/pki");
    let text = run(&["state", "show", "c1/pki", "-o", "yaml"]);
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(text.contains("(sensitive)"), "{text}");
    let shown = run(&["show", "-o", "json"]);
    assert!(!shown.contains("PRIVATE KEY"));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["resources"].as_array().unwrap().len(),
        state["resources"].as_array().unwrap().len()
    );
}

/// `apply` and `destroy --auto-approve --json` write their plan while the
/// operations start: the stream is still the plan's events first (version
/// line once, every planned change, the whole plan, the summary), then the
/// operations', in time order; the `plan` event is the plan as reviewed,
/// not the executor's copy.
#[test]
fn auto_approved_json_apply_and_destroy_write_the_whole_plan_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), BASE).unwrap();
    let check = |args: &[&str]| {
        let out = capi(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let events = json_events(&stdout(&out));
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types[0], "version");
        assert_eq!(types.iter().filter(|t| **t == "version").count(), 1);
        let summary = types.iter().position(|t| *t == "change_summary").unwrap();
        let first_apply = types.iter().position(|t| *t == "apply_start").unwrap();
        assert!(summary < first_apply, "{types:?}");
        assert!(
            types[..summary]
                .iter()
                .all(|t| matches!(*t, "version" | "planned_change" | "plan")),
            "{types:?}"
        );
        assert_eq!(*types.last().unwrap(), "apply_summary");
        // Times never go back (UTC, compared with nine fraction digits).
        let times: Vec<String> = events
            .iter()
            .map(|e| {
                let t = e["@timestamp"].as_str().unwrap().strip_suffix('Z').unwrap();
                let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
                format!("{secs}.{frac:0<9}")
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        let plan = events[types.iter().position(|t| *t == "plan").unwrap()]["plan"].clone();
        let planned = types.iter().filter(|t| **t == "planned_change").count();
        assert_eq!(planned, plan["changes"].as_array().unwrap().len());
        plan
    };
    // The plan as reviewed: every change with its specs, bootstrap data too.
    let plan = check(&["apply", "--auto-approve", "--json", "-f", "c.yaml"]);
    let changes = plan["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["part_of"].is_string()), "{plan}");
    assert!(changes.iter().any(|c| c["after"].is_object()), "{plan}");
    let plan = check(&["destroy", "--auto-approve", "--json"]);
    let changes = plan["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["before"].is_object()), "{plan}");
    assert!(changes.iter().all(|c| c["action"] == "delete"), "{plan}");
}

#[test]
fn target_names_a_cluster_or_a_machine_group_on_plan_and_destroy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), BASE).unwrap();
    let run = |args: &[&str]| capi(dir.path()).args(args).output().unwrap();
    assert!(run(&["apply", "--auto-approve", "-f", "c.yaml"])
        .status
        .success());
    // Both groups change: the control plane grows to 5, the workers to 4.
    let grown = BASE
        .replace("  replicas: 3\n", "  replicas: 5\n")
        .replace("  replicas: 2\n", "  replicas: 4\n");
    std::fs::write(dir.path().join("c.yaml"), &grown).unwrap();
    let planned = |target: &str| {
        let out = run(&[
            "plan",
            "--refresh=false",
            "--target",
            target,
            "-f",
            "c.yaml",
        ]);
        assert!(out.status.success(), "{target}: {}", stderr(&out));
        stdout(&out)
    };
    for md in ["MachineDeployment/c1-md", "md/c1-md"] {
        let text = planned(md);
        assert!(text.contains("Plan: 2 to add,"), "{text}");
        assert!(!text.contains("c1-cp-"), "{text}");
    }
    let text = planned("KubeadmControlPlane/c1-cp");
    assert!(text.contains("Plan: 2 to add,"), "{text}");
    assert!(!text.contains("c1-md-"), "{text}");
    let text = planned("c1");
    assert!(text.contains("Plan: 4 to add,"), "{text}");
    // A group nobody has is an error naming the ones there are.
    let out = run(&["plan", "--target", "md/c1-mdd", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("groups: KubeadmControlPlane/c1-cp, MachineDeployment/c1-md"),
        "{}",
        stderr(&out)
    );
    // A machine address nothing has (misspelt) is an error naming some
    // there are, not "No changes"; one the plan would create is targeted.
    let out = run(&["plan", "--target", "c1/machine/c1-md-typo", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no resource in the state or in this plan has that address"),
        "{err}"
    );
    assert!(err.contains("c1/machine/c1-cp-"), "{err}");
    let new_machine = planned("c1")
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("# ")?
                .strip_suffix(" will be created")
        })
        .map(str::to_string)
        .expect("a machine to create");
    let text = planned(&new_machine);
    assert!(text.contains("Plan: 1 to add,"), "{text}");
    // destroy --target: only the group's machines and their bootstrap data.
    let out = run(&["destroy", "--auto-approve", "--target", "md/c1-md"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&run(&["state", "list"]));
    assert!(!listed.contains("c1-md-"), "{listed}");
    assert!(listed.contains("c1/machine/c1-cp-"), "{listed}");
    assert!(listed.contains("c1/network"), "{listed}");
}

#[test]
fn generate_and_kubeconfig_speak_json_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| capi(dir.path()).args(args).output().unwrap();
    let out = run(&[
        "generate",
        "cluster",
        "j1",
        "--kubernetes-version",
        "v1.31.2",
        "--worker-machine-count",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_events(&stdout(&out));
    let g = &events[1];
    assert_eq!(g["type"], "generated");
    assert_eq!(g["cluster"], "j1");
    let objects: Vec<&str> = g["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(objects.contains(&"Cluster/default/j1"), "{objects:?}");
    // The manifest in the event is the one plain `generate` prints.
    let plain = run(&[
        "generate",
        "cluster",
        "j1",
        "--kubernetes-version",
        "v1.31.2",
        "--worker-machine-count",
        "2",
    ]);
    assert_eq!(g["manifest"], stdout(&plain));
    std::fs::write(dir.path().join("c.yaml"), stdout(&plain)).unwrap();
    assert!(run(&["apply", "--auto-approve", "-f", "c.yaml"])
        .status
        .success());

    // The kubeconfig holds the admin key: --json needs a file.
    let out = run(&["kubeconfig", "j1", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stdout(&out).contains("PRIVATE KEY"));
    assert!(stderr(&out).contains("-o FILE"), "{}", stderr(&out));
    let out = run(&["kubeconfig", "j1", "--json", "-o", "kc.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = json_events(&stdout(&out));
    assert_eq!(events[1]["type"], "kubeconfig");
    assert_eq!(events[1]["path"], "kc.yaml");
    assert!(events[1]["server"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    assert!(!stdout(&out).contains("PRIVATE KEY"));
    let kc = std::fs::read_to_string(dir.path().join("kc.yaml")).unwrap();
    assert!(kc.contains(events[1]["server"].as_str().unwrap()));
}
