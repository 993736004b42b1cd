//! What a new user's first week found (2026-12-07): manifests that define
//! no cluster, a cluster rehearsed on the simulator and then planned
//! without `--provider sim`, `--replace` of the PKI or network under machines,
//! two states sharing a simulator directory, `upgrade --write` from stdin,
//! and `apply PLANFILE --json` with nothing to do. Each is refused or
//! handled before anything is lost.

use std::path::Path;

use crate::common::{capi, example, stderr, stdout};

fn copy_example(dir: &Path, rel: &str, to: &str) {
    std::fs::copy(example(rel), dir.join(to)).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    capi(dir).args(args).output().unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

/// The sim example as `c.yaml` in `dir`, applied.
fn applied_example(dir: &Path) {
    copy_example(dir, "sim/cluster.yaml", "c.yaml");
    ok(dir, &["apply", "-f", "c.yaml", "--auto-approve"]);
}

/// One JSON event per line of `out`.
fn json_events(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn state_bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

#[test]
fn manifests_that_define_no_cluster_are_refused_not_planned_as_a_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    applied_example(d);
    let before = state_bytes(d, "capi.state.json");
    std::fs::write(d.join("comment.yaml"), "# rendered from a template\n").unwrap();
    std::fs::write(d.join("dashes.yaml"), "---\n---\n").unwrap();
    std::fs::write(
        d.join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",
    )
    .unwrap();
    // Credentials kept apart from the clusters.
    std::fs::write(
        d.join("secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {a: b}\n",
    )
    .unwrap();
    for file in ["comment.yaml", "dashes.yaml", "cm.yaml", "secret.yaml"] {
        for cmd in [
            vec!["plan", "-f", file],
            vec!["apply", "-f", file, "--auto-approve"],
        ] {
            let o = run(d, &cmd);
            assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stdout(&o));
            let err = stderr(&o);
            assert!(
                err.contains("the manifests define no cluster, and the state holds 1 (demo)")
                    && err.contains("capi destroy"),
                "{cmd:?}: {err}"
            );
            assert!(
                !stdout(&o).contains("to destroy"),
                "{cmd:?}: {}",
                stdout(&o)
            );
        }
    }
    assert_eq!(
        state_bytes(d, "capi.state.json"),
        before,
        "the state changed"
    );
    // Next to real manifests, such a file is harmless; a deliberate destroy
    // plan is not refused.
    let out = ok(d, &["plan", "-f", "c.yaml", "-f", "secret.yaml"]);
    assert!(out.contains("No changes"), "{out}");
    let out = ok(d, &["plan", "-destroy", "-f", "comment.yaml"]);
    assert!(out.contains("to destroy"), "{out}");
}

#[test]
fn a_cluster_rehearsed_on_the_simulator_is_not_extended_onto_another_provider() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d, "docker/cluster.yaml", "c.yaml");
    ok(
        d,
        &[
            "apply",
            "-f",
            "c.yaml",
            "--provider",
            "sim",
            "--auto-approve",
        ],
    );
    let before = state_bytes(d, "capi.state.json");
    // One more worker, planned without --provider sim: refused, not a
    // Docker machine next to simulated ones.
    let more = ["--var", "WORKER_MACHINE_COUNT=3"];
    for cmd in [
        vec!["plan", "-f", "c.yaml"],
        vec!["apply", "-f", "c.yaml", "--auto-approve"],
        vec![
            "upgrade",
            "--to",
            "v1.31.3",
            "-f",
            "c.yaml",
            "--auto-approve",
        ],
    ] {
        let cmd: Vec<&str> = cmd.into_iter().chain(more).collect();
        let o = run(d, &cmd);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains("is on the sim provider in the state, and this plan puts it on docker")
                && err.contains("pass --provider sim again")
                && err.contains("c.yaml:"),
            "{cmd:?}: {err}"
        );
    }
    assert_eq!(
        state_bytes(d, "capi.state.json"),
        before,
        "the state changed"
    );
    let out = ok(
        d,
        &[
            "plan",
            "-f",
            "c.yaml",
            "--provider",
            "sim",
            more[0],
            more[1],
        ],
    );
    assert!(out.contains("1 to add"), "{out}");
    // Removing it creates nothing: no --provider needed.
    let out = ok(d, &["plan", "-destroy", "-f", "c.yaml"]);
    assert!(out.contains("to destroy"), "{out}");
}

/// `plan -destroy` needs no manifests, as `capi destroy` does; the plan it
/// saves is applied without any, and refused with some.
#[test]
fn a_destroy_plan_needs_no_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    applied_example(d);
    let listed = ok(d, &["state", "list"]);
    let out = ok(d, &["plan", "-destroy", "-out", "d.plan"]);
    assert!(
        out.contains("Plan: 0 to add, 0 to change, 0 to replace,") && out.contains("to destroy"),
        "{out}"
    );
    let o = run(d, &["apply", "-f", "c.yaml", "d.plan"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("was made without manifests"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ok(d, &["state", "list"]), listed, "nothing was destroyed");
    let out = ok(d, &["apply", "d.plan"]);
    assert!(out.contains("destroyed"), "{out}");
    assert_eq!(ok(d, &["state", "list"]).trim(), "");
    // A plan to apply still needs its manifests.
    let o = run(d, &["plan"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no manifests given"), "{}", stderr(&o));
}

#[test]
fn replace_refuses_what_every_machine_depends_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    applied_example(d);
    for (addr, what) in [
        ("demo/pki", "certificate authorities"),
        ("demo/network", "network every machine is attached to"),
    ] {
        let o = run(d, &["plan", "-f", "c.yaml", "--replace", addr]);
        assert_eq!(o.status.code(), Some(1), "{addr}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains(addr) && err.contains(what) && err.contains("5 machine(s)"),
            "{addr}: {err}"
        );
    }
    // A machine and the load balancer still can be.
    let list = ok(d, &["state", "list"]);
    let machine = list
        .lines()
        .find(|l| l.starts_with("demo/machine/"))
        .expect("a machine in the state");
    let out = ok(d, &["plan", "-f", "c.yaml", "--replace", machine]);
    assert!(out.contains("1 to replace"), "{out}");
    let out = ok(
        d,
        &["plan", "-f", "c.yaml", "--replace", "demo/loadbalancer"],
    );
    assert!(out.contains("1 to replace"), "{out}");
    // What a replacement would not change is said, not ignored.
    let bootstrap = list
        .lines()
        .find(|l| l.starts_with("demo/bootstrap/"))
        .expect("bootstrap data in the state");
    for (addr, why) in [
        ("demo/token", "rotates the join token"),
        (bootstrap, "replace the machine"),
    ] {
        let o = run(d, &["plan", "-f", "c.yaml", "--replace", addr]);
        assert_eq!(o.status.code(), Some(1), "{addr}: {}", stdout(&o));
        assert!(stderr(&o).contains(why), "{addr}: {}", stderr(&o));
    }
}

/// `s.json` and `s` both keep their simulator in `s.sim`: the second state's
/// network is refused (it belongs to the first), and the replacement of its
/// failed network that the next apply plans must not delete the first's.
#[test]
fn two_states_sharing_a_simulator_never_delete_each_others_objects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d, "sim/cluster.yaml", "c.yaml");
    ok(
        d,
        &[
            "apply",
            "-f",
            "c.yaml",
            "--auto-approve",
            "--state",
            "s.json",
        ],
    );
    let net = d.join("s.sim/networks/demo.json");
    let owner = std::fs::read_to_string(&net).unwrap();
    let o = run(
        d,
        &["apply", "-f", "c.yaml", "--auto-approve", "--state", "s"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("belongs to another state"),
        "{}",
        stderr(&o)
    );
    // The next apply replaces the failed network: its delete leaves the
    // other state's record alone, and its create is refused again.
    let o = run(
        d,
        &["apply", "-f", "c.yaml", "--auto-approve", "--state", "s"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("belongs to another state"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&net).unwrap(), owner);
    let o = run(d, &["drift", "--state", "s.json"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    // Seen from the second state, another state's record is not its own.
    let o = run(d, &["drift", "--state", "s"]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    // Destroying the second state removes nothing of the first.
    ok(d, &["destroy", "--auto-approve", "--state", "s"]);
    assert_eq!(std::fs::read_to_string(&net).unwrap(), owner);
    let o = run(d, &["drift", "--state", "s.json"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn upgrade_write_from_stdin_is_refused_before_anything_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    applied_example(d);
    let before = state_bytes(d, "capi.state.json");
    let o = capi(d)
        .args([
            "upgrade",
            "--to",
            "v1.31.3",
            "--write",
            "-f",
            "-",
            "--auto-approve",
        ])
        .write_stdin(std::fs::read(d.join("c.yaml")).unwrap())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--write cannot update manifests read from stdin"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("Apply complete"), "{}", stdout(&o));
    assert_eq!(
        state_bytes(d, "capi.state.json"),
        before,
        "machines were rolled"
    );
}

#[test]
fn applying_a_saved_plan_with_nothing_to_do_speaks_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    applied_example(d);
    ok(d, &["plan", "-f", "c.yaml", "-out", "p.plan"]);
    let out = ok(d, &["apply", "p.plan", "--json"]);
    let events = json_events(&out);
    assert_eq!(
        events.first().map(|e| &e["type"]),
        Some(&"version".into()),
        "{out}"
    );
    let summary = events
        .iter()
        .find(|e| e["type"] == "change_summary")
        .unwrap_or_else(|| panic!("no change_summary: {out}"));
    assert_eq!(summary["add"], 0, "{out}");
}

#[test]
fn a_leading_byte_order_mark_is_read_as_editors_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut bytes = vec![0xEF, 0xBB, 0xBF];
    bytes.extend(std::fs::read(example("sim/cluster.yaml")).unwrap());
    std::fs::write(d.join("bom.yaml"), bytes).unwrap();
    let out = ok(d, &["validate", "-f", "bom.yaml"]);
    assert!(out.contains("valid"), "{out}");
    let out = ok(d, &["plan", "-f", "bom.yaml"]);
    assert!(out.contains("to add"), "{out}");
}

#[test]
fn a_saved_plan_is_applied_with_the_manifests_it_was_made_from() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d, "sim/cluster.yaml", "c.yaml");
    copy_example(d, "sim/cluster.yaml", "other.yaml");
    ok(d, &["plan", "-f", "c.yaml", "-out", "p.plan"]);
    let o = run(d, &["apply", "p.plan", "-f", "other.yaml"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("was made from c.yaml") && err.contains("leave out -f"),
        "{err}"
    );
    // The same file, spelled differently, is the same file.
    let out = ok(d, &["apply", "p.plan", "-f", "./c.yaml"]);
    assert!(out.contains("Apply complete!"), "{out}");
}

#[test]
fn validate_refuses_workers_newer_than_their_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    // The MachineDeployment's version is the second one in the file.
    let at = text.rfind("version: v1.31.2").expect("a worker version");
    let newer = format!("{}version: v1.32.0{}", &text[..at], &text[at + 16..]);
    std::fs::write(d.join("c.yaml"), newer).unwrap();
    let o = run(d, &["validate", "-f", "c.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("would be newer than the control plane") && err.contains("c.yaml:"),
        "{err}"
    );
}

#[test]
fn json_diagnostics_of_plan_errors_and_unset_variables_carry_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    let unset = text.replacen("version: v1.31.2", "version: ${KUBE_VERSION}", 1);
    std::fs::write(d.join("vars.yaml"), unset).unwrap();
    let at = text.rfind("version: v1.31.2").expect("a worker version");
    let newer = format!("{}version: v1.32.0{}", &text[..at], &text[at + 16..]);
    std::fs::write(d.join("skew.yaml"), newer).unwrap();
    for file in ["vars.yaml", "skew.yaml"] {
        let o = run(d, &["plan", "-f", file, "--json"]);
        assert_eq!(o.status.code(), Some(1), "{file}");
        let out = stdout(&o);
        let diag = json_events(&out)
            .into_iter()
            .find(|e| e["type"] == "diagnostic")
            .unwrap_or_else(|| panic!("{file}: no diagnostic in {out}"));
        assert_eq!(diag["file"], file, "{out}");
        assert!(diag["line"].as_u64().is_some_and(|l| l > 1), "{out}");
    }
}

#[test]
fn the_json_summary_of_a_failed_apply_says_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d, "sim/cluster.yaml", "c.yaml");
    let o = capi(d)
        .env("CAPI_SIM_FAIL", "bootstrap:1")
        .args(["apply", "-f", "c.yaml", "--auto-approve", "--json"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let out = stdout(&o);
    let summary = json_events(&out)
        .into_iter()
        .find(|e| e["type"] == "apply_summary")
        .unwrap_or_else(|| panic!("no apply_summary: {out}"));
    let message = summary["@message"].as_str().unwrap();
    assert!(message.starts_with("Apply failed!"), "{message}");
    assert!(!summary["failed"].as_array().unwrap().is_empty(), "{out}");
}

/// The same with the load balancer: the second state's network is its own
/// (the first's record was removed by hand), its load balancer the first's.
#[test]
fn a_load_balancer_of_another_state_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_example(d, "sim/cluster.yaml", "c.yaml");
    ok(
        d,
        &[
            "apply",
            "-f",
            "c.yaml",
            "--auto-approve",
            "--state",
            "s.json",
        ],
    );
    std::fs::remove_file(d.join("s.sim/networks/demo.json")).unwrap();
    let lb = d.join("s.sim/loadbalancers/demo.json");
    let owner = std::fs::read_to_string(&lb).unwrap();
    for _ in 0..2 {
        let o = run(
            d,
            &["apply", "-f", "c.yaml", "--auto-approve", "--state", "s"],
        );
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains("load balancer") && err.contains("belongs to another state"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&lb).unwrap(), owner);
    }
    ok(d, &["destroy", "--auto-approve", "--state", "s"]);
    assert_eq!(std::fs::read_to_string(&lb).unwrap(), owner);
}

#[test]
fn generate_names_a_bad_kubernetes_version_not_its_built_in_template() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        dir.path(),
        &[
            "generate",
            "cluster",
            "c",
            "--flavor",
            "sim",
            "--kubernetes-version",
            "1.31",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("--kubernetes-version 1.31") && err.contains("v1.31.2"),
        "{err}"
    );
    assert!(!err.contains("cluster-template"), "{err}");
}

#[test]
fn a_reference_into_another_namespace_names_the_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    assert_eq!(text.matches("namespace: default").count(), 1);
    let moved = text.replace("namespace: default", "namespace: other");
    std::fs::write(d.join("c.yaml"), moved).unwrap();
    let o = run(d, &["validate", "-f", "c.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    // The help is wrapped to the terminal's width.
    let err = stderr(&o).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        err.contains("there is no KubeadmControlPlane in namespace \"other\"")
            && err.contains("KubeadmControlPlanes in namespace default"),
        "{err}"
    );
}

/// The state forgets a cluster's PKI, bootstrap data and machines (`capi
/// state rm`, as the refusal to remove the PKI alone suggests), keeping its
/// network, load balancer and join token. The next apply would make a new
/// PKI and adopt the machines that exist, bootstrapped under the old
/// certificate authority: refused, and the state's backup brings it back.
#[test]
fn a_cluster_whose_control_plane_ran_gets_no_new_pki() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    applied_example(d);
    let forget: Vec<String> = ok(d, &["state", "list"])
        .lines()
        .filter(|l| {
            !l.ends_with("/network") && !l.ends_with("/loadbalancer") && !l.ends_with("/token")
        })
        .map(str::to_string)
        .collect();
    let mut rm = vec!["state", "rm"];
    rm.extend(forget.iter().map(String::as_str));
    ok(d, &rm);
    let before = state_bytes(d, "capi.state.json");
    for cmd in [
        vec!["plan", "-f", "c.yaml"],
        vec!["apply", "-f", "c.yaml", "--auto-approve"],
    ] {
        let o = run(d, &cmd);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains("cluster demo has its join token in the state but not its PKI")
                && err.contains("capi state push"),
            "{cmd:?}: {err}"
        );
    }
    assert_eq!(
        state_bytes(d, "capi.state.json"),
        before,
        "the state changed"
    );
    // The backup (the state before the `state rm`) puts everything back.
    std::fs::copy(d.join("capi.state.json.backup"), d.join("capi.state.json")).unwrap();
    let out = ok(d, &["plan", "-f", "c.yaml"]);
    assert!(out.contains("No changes"), "{out}");
}

#[test]
fn a_machine_group_name_two_clusters_share_is_not_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = std::fs::read_to_string(example("sim/cluster.yaml"))
        .unwrap()
        .replace("demo-md-0", "workers");
    std::fs::write(d.join("c1.yaml"), text.replace("demo", "c1")).unwrap();
    // The second cluster in a namespace of its own (same group names).
    let ns2 = text
        .replace("demo", "c2")
        .replace("\n  namespace: default", "")
        .replace(
            "metadata:\n  name: ",
            "metadata:\n  namespace: ns2\n  name: ",
        );
    assert_eq!(ns2.matches("namespace: ns2").count(), 7, "{ns2}");
    std::fs::write(d.join("c2.yaml"), ns2).unwrap();
    let files = ["-f", "c1.yaml", "-f", "c2.yaml"];
    let mut apply = vec!["apply", "--auto-approve"];
    apply.extend(files);
    ok(d, &apply);
    for cmd in [
        vec!["plan", "--target", "md/workers"],
        vec!["destroy", "--target", "md/workers", "--auto-approve"],
    ] {
        let cmd: Vec<&str> = cmd.into_iter().chain(files).collect();
        let o = run(d, &cmd);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stdout(&o));
        let err = stderr(&o);
        assert!(
            err.contains(
                "more than one cluster has a MachineDeployment named \"workers\" (c1, ns2:c2)"
            ),
            "{cmd:?}: {err}"
        );
    }
    assert_eq!(
        ok(d, &["state", "list"])
            .lines()
            .filter(|l| l.contains("/machine/"))
            .count(),
        10
    );
    // One cluster's group, by its cluster.
    let mut plan = vec!["plan", "--target", "c1"];
    plan.extend(files);
    assert!(ok(d, &plan).contains("No changes"));
}

#[test]
fn drift_says_which_ignores_match_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    applied_example(d);
    let o = run(
        d,
        &[
            "drift",
            "--ignore",
            "demo/machine/typo",
            "--ignore",
            "demo/network.cidr",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--ignore demo/machine/typo: no resource"),
        "{err}"
    );
    assert!(!err.contains("demo/network.cidr"), "{err}");
}

#[test]
fn an_unsupported_worker_version_is_reported_once_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    let at = text.rfind("version: v1.31.2").expect("a worker version");
    let old = format!("{}version: v1.21.0{}", &text[..at], &text[at + 16..]);
    let line = text[..at].matches('\n').count() + 1;
    std::fs::write(d.join("c.yaml"), old).unwrap();
    let o = run(d, &["validate", "-f", "c.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "c.yaml:{line}: MachineDeployment \"demo-md-0\": Kubernetes v1.21.0"
        )),
        "{err}"
    );
    assert_eq!(err.matches("is not supported").count(), 1, "{err}");
}
