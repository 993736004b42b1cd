//! The state lock across real processes.

use std::time::{Duration, Instant};

use crate::common::*;

fn slow_cluster(dir: &std::path::Path) {
    let text = std::fs::read_to_string(example("sim/cluster.yaml")).unwrap();
    std::fs::write(dir.join("c.yaml"), text).unwrap();
}

fn wait_for_lock_info(dir: &std::path::Path) -> serde_json::Value {
    let info = dir.join("capi.state.json.lock.info");
    let start = Instant::now();
    loop {
        if let Ok(b) = std::fs::read(&info) {
            if let Ok(v) = serde_json::from_slice(&b) {
                return v;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the first apply never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_processes_race_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    slow_cluster(dir.path());
    let mut first = capi_process(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--sim-latency",
            "1500ms",
            "-f",
            "c.yaml",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let info = wait_for_lock_info(dir.path());
    assert_eq!(info["Operation"], "apply");
    assert_eq!(info["Pid"], first.id());

    // A second apply fails without waiting (no --lock-timeout), naming the holder.
    let out = capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        first.try_wait().unwrap().is_none(),
        "the second apply returned only after the first had finished"
    );
    let err = stderr(&out);
    assert!(
        err.contains("locked by another capi")
            && err.contains(&format!("pid {}", first.id()))
            && err.contains("\"apply\""),
        "{err}"
    );

    // So is state surgery: `capi import` (and `state rm`) do not wait.
    for args in [
        &["import", "demo/network", "demo", "-f", "c.yaml"][..],
        &["state", "rm", "demo/network"],
    ] {
        let out = capi(dir.path()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("locked by another capi"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // force-unlock is refused while the holder lives.
    let id = info["ID"].as_str().unwrap();
    let out = capi(dir.path())
        .args(["force-unlock", id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("held by a live process"),
        "{}",
        stderr(&out)
    );

    // With --lock-timeout, a plan waits for the apply to finish.
    let out = capi(dir.path())
        .args([
            "plan",
            "--lock-timeout",
            "60s",
            "--detailed-exitcode",
            "-f",
            "c.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("No changes."));
    assert!(first.wait().unwrap().success());
}

#[test]
fn a_lock_cannot_outlive_its_process() {
    let dir = tempfile::tempdir().unwrap();
    slow_cluster(dir.path());
    let mut first = capi_process(dir.path())
        .args([
            "apply",
            "--auto-approve",
            "--sim-latency",
            "3s",
            "-f",
            "c.yaml",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let info = wait_for_lock_info(dir.path());
    first.kill().unwrap();
    first.wait().unwrap();
    // The info file of the dead holder may remain; the kernel lock does not.
    let out = capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // force-unlock of an old id is refused as unknown (the record was replaced).
    let out = capi(dir.path())
        .args(["force-unlock", info["ID"].as_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
