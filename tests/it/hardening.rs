//! Hostile files around the state (issue "Hardening", items 1-9): planted
//! symlinks, permissions, two names for one state, a lock file removed while
//! held, damaged journals, temporaries left by a killed writer.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;

fn cluster(dir: &Path) {
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    std::fs::write(dir.join("c.yaml"), text).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn victim(dir: &Path) -> std::path::PathBuf {
    let v = dir.join("victim.txt");
    std::fs::write(&v, "untouched").unwrap();
    std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o644)).unwrap();
    v
}

fn apply_ok(dir: &Path, extra: &[&str]) {
    let out = capi(dir)
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn side_files_never_write_through_planted_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let v = victim(dir.path());
    // Names earlier versions wrote to, and the journal's name.
    for name in [
        "capi.state.json.lock.info.tmp",
        &format!("capi.state.json.tmp.{}", std::process::id()),
        &format!("capi.state.json.backup.tmp.{}", std::process::id()),
    ] {
        symlink(&v, dir.path().join(name)).unwrap();
    }
    apply_ok(dir.path(), &[]);
    // A journal is never a symlink: reading through one is refused, naming it.
    let journal = dir.path().join("capi.state.json.journal");
    symlink(&v, &journal).unwrap();
    let text = std::fs::read_to_string(dir.path().join("c.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 4");
    std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    let out = capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is a symlink"), "{}", stderr(&out));
    std::fs::remove_file(&journal).unwrap();
    apply_ok(dir.path(), &[]);
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "untouched");
    assert_eq!(mode(&v), 0o644);
    assert_eq!(mode(&dir.path().join("capi.state.json")), 0o600);
    assert_eq!(mode(&dir.path().join("capi.state.json.backup")), 0o600);
    // What a killed writer may have left (the planted names) is gone.
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains(".tmp"), "left behind: {n}");
    }
}

#[test]
fn saved_plans_are_private_and_replace_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let v = victim(dir.path());
    symlink(&v, dir.path().join("p.plan")).unwrap();
    let out = capi(dir.path())
        .args(["plan", "-f", "c.yaml", "-out", "p.plan"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "untouched");
    let plan = dir.path().join("p.plan");
    assert!(!std::fs::symlink_metadata(&plan)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode(&plan), 0o600);
}

#[test]
fn kubeconfig_output_is_0600_and_never_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    apply_ok(dir.path(), &[]);
    let existing = dir.path().join("kc.yaml");
    std::fs::write(&existing, "old").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = capi(dir.path())
        .args(["kubeconfig", "demo", "-o", "kc.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&existing), 0o600, "the admin key must not stay 0644");
    assert!(stderr(&out).contains("(mode 0600)"), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&existing)
        .unwrap()
        .contains("client-key-data"));

    let v = victim(dir.path());
    symlink(&v, dir.path().join("link.yaml")).unwrap();
    let out = capi(dir.path())
        .args(["kubeconfig", "demo", "-o", "link.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is a symlink"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "untouched");
}

#[test]
fn two_names_for_one_state_share_one_lock_and_one_simulator() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    apply_ok(dir.path(), &["--state", "real.json"]);
    symlink("real.json", dir.path().join("alias.json")).unwrap();
    // One more worker, created through the other name: `--sim-latency`
    // applies to creates (deletes are instant), so the holder keeps the
    // lock until it is killed below, however slow the machine is.
    let text = std::fs::read_to_string(dir.path().join("c.yaml")).unwrap();
    let scaled = text.replacen("replicas: 2", "replicas: 3", 1);
    assert_ne!(text, scaled, "the example has a pool of 2 workers");
    std::fs::write(dir.path().join("c.yaml"), scaled).unwrap();
    let mut holder = capi_process(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "-f",
            "c.yaml",
            "--state",
            "alias.json",
            "--sim-latency",
            "600s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The lock and its record sit beside the real file, whichever name is used.
    let start = Instant::now();
    while !dir.path().join("real.json.lock.info").exists() {
        if let Some(status) = holder.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the apply through alias.json ended ({status}) without holding the lock: {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the apply through alias.json never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!dir.path().join("alias.json.lock").exists());
    assert!(!dir.path().join("alias.sim").exists());
    let out = capi(dir.path())
        .args(["plan", "--state", "real.json", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    assert!(holder.try_wait().unwrap().is_none());
    let _ = holder.kill();
    let _ = holder.wait();
    // The symlink is still a symlink: the state never forked in two.
    assert!(std::fs::symlink_metadata(dir.path().join("alias.json"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_lock_file_removed_while_held_stops_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let first = capi_process(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--sim-latency",
            "700ms",
            "-f",
            "c.yaml",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Remove the lock once the apply has written under it: its first
    // snapshot is on disk and its creates (700 ms each) are under way.
    let info = dir.path().join("capi.state.json.lock.info");
    let journal = dir.path().join("capi.state.json.journal");
    wait_for("the apply never wrote under its lock", || {
        info.exists() && journal.exists()
    });
    std::fs::remove_file(dir.path().join("capi.state.json.lock")).unwrap();
    // A second command can now lock a new file under the same name...
    let out = capi(dir.path())
        .args(["plan", "-f", "c.yaml", "--refresh=false"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // ...and the first stops at its next write instead of writing on.
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("was removed or replaced while this command held the lock"),
        "{}",
        stderr(&out)
    );
    // What it wrote before is a state that loads.
    let show = capi(dir.path()).args(["show"]).output().unwrap();
    assert!(show.status.success(), "{}", stderr(&show));
}

#[test]
fn stale_temporaries_of_a_killed_writer_are_removed_by_the_next_locked_command() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let stale = [
        "capi.state.json.tmp.999999",
        ".capi.state.json.tmp.Ab12Cd",
        "capi.state.json.backup.tmp.999999",
    ];
    for n in stale {
        std::fs::write(dir.path().join(n), "-----BEGIN PRIVATE KEY-----").unwrap();
    }
    let out = capi(dir.path())
        .args(["plan", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for n in stale {
        assert!(!dir.path().join(n).exists(), "{n} is still there");
    }
}

#[test]
fn a_corrupt_journal_seen_while_another_process_holds_the_lock_is_not_called_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    apply_ok(dir.path(), &[]);
    // A journal whose header follows a newer snapshot than the one on disk:
    // what a reader sees in the middle of a compaction.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("capi.state.json")).unwrap())
            .unwrap();
    let header = serde_json::json!({
        "lineage": state["lineage"],
        "base_serial": state["serial"].as_u64().unwrap() + 5,
    })
    .to_string();
    std::fs::write(
        dir.path().join("capi.state.json.journal"),
        format!("{header}\t{}\n", hex_sha256(header.as_bytes())),
    )
    .unwrap();
    // Another process holds the lock meanwhile.
    let mut holder = std::process::Command::new("flock")
        .args(["-o", "capi.state.json.lock", "sleep", "20"])
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    wait_for("flock never took the lock", || {
        std::process::Command::new("flock")
            .args(["-n", "capi.state.json.lock", "true"])
            .current_dir(dir.path())
            .status()
            .map(|s| !s.success())
            .unwrap_or(false)
    });
    let out = capi(dir.path()).args(["show"]).output().unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is writing it right now"), "{err}");
    assert!(!err.contains("copy the backup"), "{err}");
    // Without a holder the same files are reported as corrupt, with advice.
    let out = capi(dir.path()).args(["show"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
}

fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn machine_versions(dir: &Path) -> Vec<String> {
    let st = capi::state::StateStore::new(dir.join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    st.resources
        .iter()
        .filter_map(|r| r.attributes.as_machine())
        .map(|m| format!("{}:{}", m.owner.kind, m.version))
        .collect()
}

#[test]
fn upgrade_resumes_workers_left_behind_by_a_killed_run() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    // What a run killed after its control-plane rollout leaves: the control
    // plane at the target, the workers still on the old version.
    let text = std::fs::read_to_string(dir.path().join("c.yaml")).unwrap();
    let mut n = 0;
    let text: String = text
        .lines()
        .map(|l| {
            if l.contains("version: v1.31.2") {
                n += 1;
                if n == 1 {
                    return l.replace("v1.31.2", "v1.31.3");
                }
            }
            l.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    apply_ok(dir.path(), &[]);
    let before = machine_versions(dir.path());
    assert!(
        before.contains(&"MachineDeployment:v1.31.2".to_string()),
        "{before:?}"
    );
    let out = capi(dir.path())
        .args([
            "upgrade",
            "--to",
            "v1.31.3",
            "--auto-approve",
            "-f",
            "c.yaml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("nothing to upgrade"),
        "{}",
        stdout(&out)
    );
    let after = machine_versions(dir.path());
    assert!(
        after.iter().all(|v| v.ends_with("v1.31.3")),
        "workers left behind: {after:?}"
    );
    // Now it is done.
    let out = capi(dir.path())
        .args([
            "upgrade",
            "--to",
            "v1.31.3",
            "--auto-approve",
            "-f",
            "c.yaml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("nothing to upgrade"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn sigterm_stops_an_apply_like_the_first_ctrl_c() {
    signal_stops_an_apply(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sighup_stops_an_apply_like_the_first_ctrl_c() {
    signal_stops_an_apply(libc::SIGHUP, "SIGHUP");
}

fn signal_stops_an_apply(signal: i32, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let child = capi_process(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--sim-latency",
            "500ms",
            "-f",
            "c.yaml",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("no machine was being created", || {
        dir.path()
            .join("capi.state.sim/machines/demo.jsonl")
            .exists()
    });
    unsafe { libc::kill(child.id() as i32, signal) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("Interrupt received ({name})")),
        "{err}"
    );
    assert!(err.contains("did not start"), "{err}");
    // Folded and released: no journal, no lock record, nothing pending.
    assert!(!dir.path().join("capi.state.json.journal").exists());
    assert!(!dir.path().join("capi.state.json.lock.info").exists());
    let st = capi::state::StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    assert!(st.resources.iter().all(|r| !r.status.is_pending()));
}

#[test]
fn approval_reads_stdin_and_an_interrupt_at_the_prompt_cancels_cleanly() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    // `echo yes | capi apply`
    let mut child = capi_process(dir.path())
        .args(["apply", "-f", "c.yaml"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"yes\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Enter a value"), "{}", stderr(&out));

    // Ctrl-C at the prompt.
    let text = std::fs::read_to_string(dir.path().join("c.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 3");
    std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    let serial_before = std::fs::read_to_string(dir.path().join("capi.state.json")).unwrap();
    let mut child = capi_process(dir.path())
        .args(["apply", "-f", "c.yaml"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("Enter a value") {
        let mut chunk = Vec::new();
        let n = err.read_until(b':', &mut chunk).unwrap();
        assert!(n > 0, "no prompt before EOF: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(1), "{seen}{rest}");
    assert!(rest.contains("Apply cancelled."), "{seen}{rest}");
    assert!(!rest.contains("Error:"), "a cancel is not an error: {rest}");
    assert!(!dir.path().join("capi.state.json.lock.info").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("capi.state.json")).unwrap(),
        serial_before,
        "a cancelled apply changed the state"
    );
}

#[test]
fn simulator_files_are_private_whatever_the_umask_and_destroy_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let bin = assert_cmd::cargo::cargo_bin("capi");
    let run = |args: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask 000; exec {} {args}", bin.display()))
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    run("plan -f c.yaml -out p.plan");
    run("apply --auto-approve -f c.yaml");
    let sim = dir.path().join("capi.state.sim");
    let mut seen = 0;
    let mut stack = vec![sim.clone()];
    while let Some(d) = stack.pop() {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= 5, "only {seen} simulator files");
    assert!(sim.join("tokens/demo.json").exists());
    assert!(sim.join("machines/demo.jsonl").exists());
    run("destroy --auto-approve");
    let left: Vec<String> = walk_files(&sim);
    assert_eq!(left, vec!["ops.log".to_string()], "left behind: {left:?}");
}

fn walk_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}
