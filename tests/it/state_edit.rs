//! State surgery (`capi state rm|pull|push`, `capi import`): locked, backed
//! up, refusing what would silently lose records or adopt what capi cannot
//! vouch for.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    capi(dir).args(args).output().unwrap()
}

fn serial(dir: &std::path::Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("capi.state.json")).unwrap()).unwrap();
    v["serial"].as_u64().unwrap()
}

/// The bundled simulator example applied in `d`; its path.
fn applied_example(d: &std::path::Path) -> std::path::PathBuf {
    let ex = example("sim");
    let out = capi(d)
        .args(["apply", "--auto-approve", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    ex
}

#[test]
fn rm_pull_push_keep_the_state_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ex = applied_example(d);

    // pull: the whole state, 0600.
    let out = run(d, &["state", "pull", "-o", "pulled.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(d.join("pulled.json")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read(d.join("pulled.json")).unwrap(),
        std::fs::read(d.join("capi.state.json")).unwrap()
    );

    // The same as JSON: addresses, and one resource with secrets masked.
    let out = run(d, &["state", "list", "--json"]);
    let events = json_events(&stdout(&out));
    assert_eq!(events[0]["type"], "version");
    let ev = &events[1];
    assert_eq!(ev["type"], "state_list");
    assert!(ev["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "demo/pki"));
    let out = run(d, &["state", "show", "demo/pki", "--json"]);
    let text = stdout(&out);
    let ev = &json_events(&text)[1];
    assert_eq!(ev["type"], "state_resource");
    assert_eq!(ev["resource"]["address"], "demo/pki");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(text.contains("(sensitive)"), "{text}");

    // rm of something others depend on is refused, naming them; nothing changes.
    let before = serial(d);
    let out = run(d, &["state", "rm", "demo/pki"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("depend"), "{}", stderr(&out));
    assert_eq!(serial(d), before);

    // rm of a worker (and nothing depends on it).
    let list = stdout(&run(d, &["state", "list"]));
    let worker = list
        .lines()
        .find(|l| l.contains("/machine/demo-md-0"))
        .expect("a worker in the state")
        .to_string();
    let out = run(d, &["state", "rm", &worker]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&run(d, &["state", "list"])).contains(&worker));
    assert!(serial(d) > before);
    assert!(d.join("capi.state.json.backup").exists());

    // push of the older pull is refused, then forced.
    let out = run(d, &["state", "push", "pulled.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("older"), "{}", stderr(&out));
    let after_rm = serial(d);
    let out = run(d, &["state", "push", "pulled.json", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&run(d, &["state", "list"])).contains(&worker));
    assert!(serial(d) > after_rm, "a forced push still moves forward");

    // Another lineage is refused.
    let other = tempfile::tempdir().unwrap();
    let out = capi(other.path())
        .args(["apply", "--auto-approve", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let foreign = other.path().join("capi.state.json");
    let out = capi(d)
        .args(["state", "push"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lineage"), "{}", stderr(&out));

    // Not a state at all.
    std::fs::write(d.join("junk.json"), "{\"hello\": 1}").unwrap();
    let out = run(d, &["state", "push", "junk.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a capi state"),
        "{}",
        stderr(&out)
    );
    // The state still loads and plans clean.
    let out = capi(d)
        .args(["plan", "--detailed-exitcode", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The manifest with the MachineDeployment (only its own name, not its
/// templates') renamed from demo-md-0 to workers.
fn renamed_deployment(d: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(example("sim").join("cluster.yaml")).unwrap();
    let renamed = text.replacen(
        "kind: MachineDeployment\nmetadata:\n  name: demo-md-0",
        "kind: MachineDeployment\nmetadata:\n  name: workers",
        1,
    );
    assert_ne!(text, renamed, "the example's MachineDeployment moved");
    let path = d.join("renamed.yaml");
    std::fs::write(&path, renamed).unwrap();
    path
}

#[test]
fn mv_gives_a_renamed_group_its_machines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    applied_example(d);
    let renamed = renamed_deployment(d);
    let plan = |d: &std::path::Path| {
        let out = capi(d)
            .args(["plan", "--no-color", "-f"])
            .arg(&renamed)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };

    // Without the move, the rename destroys the group's two machines.
    let before = plan(d);
    assert!(before.contains("2 to destroy"), "{before}");

    // Refusals change nothing: not a group, another kind, unknown group.
    let serial_before = serial(d);
    for (from, to, says) in [
        ("demo/network", "md/workers", "not a machine group"),
        ("md/demo-md-0", "kcp/workers", "same kind"),
        (
            "md/nope",
            "md/workers",
            "no machine in the state belongs to",
        ),
        ("md/demo-md-0", "md/demo-md-0", "the same group"),
        (
            "other/md/demo-md-0",
            "md/workers",
            "no machine in the state belongs to",
        ),
    ] {
        let out = run(d, &["state", "mv", from, to]);
        assert_eq!(out.status.code(), Some(1), "{from} {to}");
        assert!(stderr(&out).contains(says), "{from} {to}: {}", stderr(&out));
    }
    assert_eq!(serial(d), serial_before);

    let out = run(
        d,
        &[
            "state",
            "mv",
            "demo/MachineDeployment/demo-md-0",
            "md/workers",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Moved 2 machine(s)"),
        "{}",
        stderr(&out)
    );
    assert!(serial(d) > serial_before);
    assert!(d.join("capi.state.json.backup").exists());

    // Now the same plan keeps the machines: no create, no destroy.
    let after = plan(d);
    assert!(
        after.contains("Plan: 0 to add, 2 to change, 0 to replace, 0 to destroy."),
        "{after}"
    );
    assert!(
        after.contains("deployment-name = \"demo-md-0\" -> \"workers\""),
        "{after}"
    );
}

/// `machine-created` events in the simulator's log: machines made, ever.
fn machines_created(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("capi.state.sim/ops.log"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"event\":\"machine-created\""))
        .count()
}

/// The simulator's machine records of cluster `demo`.
fn machine_records(dir: &std::path::Path) -> usize {
    SimLog::read(dir, "demo").records.len()
}

/// `capi import` refuses, exits 1, names `why` and changes nothing.
fn refused(dir: &std::path::Path, args: &[&str], why: &str) {
    let before = std::fs::read(dir.join("capi.state.json")).unwrap();
    let ex = example("sim");
    let out = capi(dir)
        .arg("import")
        .args(args)
        .arg("-f")
        .arg(&ex)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
    assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    assert_eq!(
        std::fs::read(dir.join("capi.state.json")).unwrap(),
        before,
        "{args:?} changed the state"
    );
}

#[test]
fn import_brings_back_a_forgotten_machine_and_apply_adopts_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ex = applied_example(d);
    let list = stdout(&run(d, &["state", "list"]));
    let workers: Vec<&str> = list
        .lines()
        .filter(|l| l.contains("/machine/demo-md-0"))
        .collect();
    let (worker, other) = (workers[0].to_string(), workers[1].to_string());
    let name = worker.rsplit('/').next().unwrap().to_string();
    let other_name = other.rsplit('/').next().unwrap().to_string();

    let out = run(d, &["state", "rm", &worker]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(d, &["drift"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("unmanaged {worker}")),
        "{}",
        stdout(&out)
    );

    // Refusals, each naming its reason and leaving the state as it was.
    refused(
        d,
        &[&worker, "nope"],
        "no simulated machine has the id or name \"nope\"",
    );
    refused(
        d,
        &[&worker, &other_name],
        &format!("is {other} of this state; it cannot be imported as {worker}"),
    );
    refused(d, &[&other, &other_name], "is already in the state");
    refused(
        d,
        &["demo/machine/demo-md-0-zzzzz-0", &name],
        "is not a machine the manifests describe",
    );
    refused(
        d,
        &["elsewhere/network", "x"],
        "is not described by the manifests",
    );
    refused(d, &["demo/pki", "x"], "demo/pki cannot be imported");
    refused(d, &["demo/token", "x"], "demo/token cannot be imported");

    // A record without capi's labels, or with another state's.
    let mut log = SimLog::read(d, "demo");
    let original = std::fs::read(&log.path).unwrap();
    log.get_mut(&name)["labels"] = serde_json::json!({});
    log.write();
    refused(d, &[&worker, &name], "carries no capi labels");
    log.get_mut(&name)["labels"] = serde_json::json!({
        "capi.x-k8s.io/lineage": "11111111-2222-3333-4444-555555555555",
        "capi.x-k8s.io/address": worker,
    });
    log.write();
    refused(
        d,
        &[&worker, &name],
        &format!("belongs to {worker} of state lineage 11111111-2222-3333-4444-555555555555"),
    );
    std::fs::write(&log.path, &original).unwrap();

    // The import: by name, with its JSON event.
    let before = serial(d);
    let out = capi(d)
        .args(["import", &worker, &name, "--json", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("instead of creating a new one"),
        "{}",
        stderr(&out)
    );
    let events = json_events(&stdout(&out));
    assert_eq!(events[1]["type"], "imported");
    assert_eq!(events[1]["address"], worker.as_str());
    assert_eq!(events[1]["id"], format!("sim:///demo/{name}"));
    assert_eq!(serial(d), before + 1);
    assert!(d.join("capi.state.json.backup").exists());
    let shown = stdout(&run(d, &["state", "show", &worker]));
    let r: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(r["status"], "creating");
    assert_eq!(r["observed"]["provider_id"], format!("sim:///demo/{name}"));
    assert_eq!(run(d, &["drift"]).status.code(), Some(0));

    // apply adopts it: no machine is created.
    let (created, records) = (machines_created(d), machine_records(d));
    let out = capi(d)
        .args(["apply", "--auto-approve", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("adopt"), "{}", stdout(&out));
    assert_eq!(machines_created(d), created, "apply created a machine");
    assert_eq!(machine_records(d), records);
    let r: serde_json::Value =
        serde_json::from_str(&stdout(&run(d, &["state", "show", &worker]))).unwrap();
    assert_eq!(r["status"], "ready");
    let out = capi(d)
        .args(["plan", "--detailed-exitcode", "-f"])
        .arg(&ex)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("No changes"), "{}", stdout(&out));
}

#[test]
fn plan_destroy_shows_and_saves_what_destroy_would_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ex = applied_example(d);
    let before = serial(d);
    // Terraform's spelling; nothing changes until the saved plan is applied.
    let out = capi(d)
        .args([
            "plan",
            "-destroy",
            "-detailed-exitcode",
            "-out=gone.plan",
            "-f",
        ])
        .arg(&ex)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("0 to add, 0 to change, 0 to replace,"),
        "{text}"
    );
    assert!(text.contains("will be destroyed"), "{text}");
    assert_eq!(serial(d), before);
    let out = capi(d).args(["apply", "gone.plan"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&run(d, &["state", "list"])).trim().is_empty());
}
