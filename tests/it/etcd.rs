//! The etcd state backend against a real three-member etcd cluster on
//! loopback (scripts/setup.d/40-etcd.sh, scripts/etcd-cluster.sh): the same
//! results as the file backend, clear errors for bad input, the lease lock,
//! fencing, SIGKILL and SIGSTOP of capi, the loss of the leader and of quorum.
//! Without a cluster these tests skip visibly (under CAPI_CI=1 they fail).
//! They run one at a time (some stop members), each under its own prefix.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::*;

const ENDPOINTS: &str = "127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793";
static SERIAL: Mutex<()> = Mutex::new(());

/// crash.rs's cluster (3 control-plane machines, 6 workers), named `ec`.
fn cluster() -> String {
    crate::crash::CLUSTER.replace("crash", "ec")
}

fn cluster_script(args: &[&str]) -> bool {
    Command::new(repo().join("scripts/etcd-cluster.sh"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The cluster, healthy (started if needed), and this test's turn; `None`
/// (skipped visibly) without etcd, a failure under CAPI_CI=1.
fn etcd() -> Option<std::sync::MutexGuard<'static, ()>> {
    let turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if cluster_script(&["status"]) || cluster_script(&["start"]) {
        return Some(turn);
    }
    assert!(
        std::env::var("CAPI_CI").as_deref() != Ok("1"),
        "CAPI_CI=1: no etcd cluster at {ENDPOINTS} (scripts/setup.d/40-etcd.sh)"
    );
    eprintln!("SKIPPED: no etcd cluster at {ENDPOINTS} (run scripts/setup.d/40-etcd.sh); the etcd backend tests did not run");
    None
}

/// A prefix of its own for each test run.
fn prefix(test: &str) -> String {
    format!("capi-test/{test}-{}", uuid::Uuid::new_v4().simple())
}

fn url(prefix: &str) -> String {
    format!("etcd://{ENDPOINTS}/{prefix}")
}

fn etcdctl(args: &[&str]) -> String {
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ENDPOINTS}"))
        .args(args)
        .output()
        .expect("etcdctl");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn in_dir(dir: &Path, state: &str, args: &[&str]) -> std::process::Output {
    capi(dir)
        .args(["--state", state])
        .args(args)
        .output()
        .unwrap()
}

fn setup(test: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster()).unwrap();
    let p = prefix(test);
    let u = url(&p);
    (dir, p, u)
}

fn pulled(dir: &Path, state: &str) -> serde_json::Value {
    let out = in_dir(dir, state, &["state", "pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// State and simulator agree (no machine lost or duplicated) and a plan
/// has nothing to do.
fn assert_converged(dir: &Path, p: &str, u: &str) {
    let st = pulled(dir, u);
    let in_state: BTreeSet<String> = st["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "machine")
        .map(|r| r["attributes"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(in_state.len(), 9, "{in_state:?}");
    let sim_dir = dir.join(format!("capi-etcd-{}.sim", p.replace('/', "-")));
    let sim = capi::provider::sim::SimProvider::open(&sim_dir, None).unwrap();
    let names: Vec<String> = sim.machines(None).iter().map(|m| m.name.clone()).collect();
    let unique: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(unique.len(), names.len(), "duplicates: {names:?}");
    assert_eq!(unique, in_state, "simulator and state disagree");
    let out = in_dir(dir, u, &["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Start an apply; return it once it printed `marker` on stderr, with
/// the rest of its stderr as it comes.
fn apply_until(
    dir: &Path,
    u: &str,
    extra: &[&str],
    marker: &str,
) -> (std::process::Child, Arc<Mutex<String>>) {
    let mut child = capi_process(dir)
        .args(["--state", u, "apply", "--auto-approve", "-f", "c.yaml"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains(marker) {
            break;
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    let rest = Arc::new(Mutex::new(String::new()));
    let sink = rest.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    });
    (child, rest)
}

#[test]
fn apply_and_plan_match_the_file_backend() {
    let Some(_turn) = etcd() else { return };
    let (dir, _p, u) = setup("roundtrip");
    let file_dir = tempfile::tempdir().unwrap();
    std::fs::write(file_dir.path().join("c.yaml"), cluster()).unwrap();
    let f = "capi.state.json";
    for (d, s) in [(dir.path(), u.as_str()), (file_dir.path(), f)] {
        let out = in_dir(d, s, &["apply", "--auto-approve", "-f", "c.yaml"]);
        assert!(out.status.success(), "{s}: {}", stderr(&out));
    }
    let e = pulled(dir.path(), &u);
    let fs = pulled(file_dir.path(), f);
    assert_eq!(e["next_sequence"], fs["next_sequence"]);
    let addrs = |v: &serde_json::Value| -> Vec<String> {
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["address"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(addrs(&e), addrs(&fs));
    // The same change planned from both shows the same plan.
    let more = cluster().replace("replicas: 6", "replicas: 8");
    std::fs::write(dir.path().join("c.yaml"), &more).unwrap();
    std::fs::write(file_dir.path().join("c.yaml"), &more).unwrap();
    let pe = in_dir(dir.path(), &u, &["plan", "-f", "c.yaml"]);
    let pf = in_dir(file_dir.path(), f, &["plan", "-f", "c.yaml"]);
    assert!(pe.status.success(), "{}", stderr(&pe));
    assert_eq!(scrub(&stdout(&pe)), scrub(&stdout(&pf)));
    assert!(stdout(&pe).contains("2 to add"), "{}", stdout(&pe));
    // The layout: one key per resource, meta, documents; no lock left.
    let keys = etcdctl(&["get", "--prefix", "--keys-only", &format!("{_p}/")]);
    assert!(keys.contains(&format!("{_p}/meta")), "{keys}");
    assert!(keys.contains(&format!("{_p}/r/ec/machine/")), "{keys}");
    assert!(!keys.contains(&format!("{_p}/lock")), "{keys}");
}

#[test]
fn unreachable_endpoints_and_bad_addresses_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster()).unwrap();
    let out = in_dir(
        dir.path(),
        "etcd://127.0.0.1:1,127.0.0.1:2/x",
        &["plan", "-f", "c.yaml"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no etcd endpoint answered"), "{err}");
    assert!(err.contains("127.0.0.1:2"), "{err}");
    let out = in_dir(
        dir.path(),
        "etcd://127.0.0.1:23791",
        &["plan", "-f", "c.yaml"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("prefix is missing"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("capi.state.json").exists());
}

#[test]
fn a_prefix_holding_something_else_or_a_newer_format_is_refused_untouched() {
    let Some(_turn) = etcd() else { return };
    let (dir, p, u) = setup("foreign");
    etcdctl(&["put", &format!("{p}/config"), "not capi"]);
    let out = in_dir(dir.path(), &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a capi state"),
        "{}",
        stderr(&out)
    );
    let keys = etcdctl(&["get", "--prefix", "--keys-only", &format!("{p}/")]);
    assert_eq!(
        keys.split_whitespace().collect::<Vec<_>>(),
        vec![format!("{p}/config")]
    );

    let (dir, p, u) = setup("future");
    let out = in_dir(dir.path(), &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = r#"{"kind":"capi-state","format_version":99,"lineage":"x","serial":1,"next_sequence":1,"capi_version":"9.0.0"}"#;
    let value = format!(
        "sha256:{}\n{json}",
        hex::encode(Sha256::digest(json.as_bytes()))
    );
    etcdctl(&["put", &format!("{p}/meta"), &value]);
    let out = in_dir(dir.path(), &u, &["plan", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("format version 99"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        etcdctl(&["get", "--print-value-only", &format!("{p}/meta")]).trim_end(),
        value
    );
}

#[test]
fn a_second_apply_is_refused_naming_the_holder_or_waits() {
    let Some(_turn) = etcd() else { return };
    let (dir, _p, u) = setup("twoapplies");
    let (first, _) = apply_until(
        dir.path(),
        &u,
        &["--sim-latency", "150ms", "--parallelism", "1"],
        ": Creating...",
    );
    let out = in_dir(dir.path(), &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("locked by another capi"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("\"apply\""), "{err}");
    // With --lock-timeout it waits for the first to finish, then has nothing to do.
    let out = in_dir(
        dir.path(),
        &u,
        &[
            "plan",
            "--lock-timeout",
            "120s",
            "--detailed-exitcode",
            "-f",
            "c.yaml",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut first = first;
    assert!(first.wait().unwrap().success());
}

#[test]
fn sigkill_mid_apply_the_lease_expires_and_the_next_apply_converges() {
    let Some(_turn) = etcd() else { return };
    let (dir, p, u) = setup("sigkill");
    let ttl = ["--lock-ttl", "3s"];
    let (mut child, _) = apply_until(
        dir.path(),
        &u,
        &[
            "--lock-ttl",
            "3s",
            "--sim-latency",
            "100ms",
            "--parallelism",
            "2",
        ],
        "/machine/",
    );
    std::thread::sleep(Duration::from_millis(50));
    child.kill().unwrap();
    child.wait().unwrap();
    // The lock is still there (its lease lives a few seconds)...
    let out = in_dir(
        dir.path(),
        &u,
        &[&ttl[..], &["apply", "--auto-approve", "-f", "c.yaml"]].concat(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("locked by another capi"),
        "{}",
        stderr(&out)
    );
    // force-unlock is refused while the dead holder's lease lives.
    let err = stderr(&out);
    let id = err
        .split("ID ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .to_string();
    let out = in_dir(dir.path(), &u, &["force-unlock", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("live etcd lease"), "{}", stderr(&out));
    // ...and goes by itself: no force-unlock.
    let out = in_dir(
        dir.path(),
        &u,
        &[
            &ttl[..],
            &[
                "apply",
                "--auto-approve",
                "--lock-timeout",
                "30s",
                "-f",
                "c.yaml",
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_converged(dir.path(), &p, &u);
}

#[test]
fn a_frozen_holder_whose_lease_expired_is_fenced_and_exits_1() {
    let Some(_turn) = etcd() else { return };
    let (dir, p, u) = setup("sigstop");
    let (mut a, a_err) = apply_until(
        dir.path(),
        &u,
        &[
            "--lock-ttl",
            "2s",
            "--sim-latency",
            "300ms",
            "--parallelism",
            "1",
        ],
        "/machine/",
    );
    unsafe { libc::kill(a.id() as i32, libc::SIGSTOP) };
    // Another apply takes the lock once A's lease expired, and holds it.
    let mut b = capi_process(dir.path())
        .args([
            "--state",
            &u,
            "--lock-ttl",
            "2s",
            "apply",
            "--auto-approve",
            "--lock-timeout",
            "60s",
        ])
        .args([
            "--sim-latency",
            "300ms",
            "--parallelism",
            "1",
            "-f",
            "c.yaml",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let holder = format!("\"Pid\":{}", b.id());
    for _ in 0..200 {
        if etcdctl(&["get", "--print-value-only", &format!("{p}/lock")]).contains(&holder) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(etcdctl(&["get", "--print-value-only", &format!("{p}/lock")]).contains(&holder));
    unsafe { libc::kill(a.id() as i32, libc::SIGCONT) };
    use std::io::Read;
    let out_a = a.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let err_a = a_err.lock().unwrap().clone();
    assert_eq!(
        out_a.code(),
        Some(1),
        "the fenced apply must exit 1: {err_a}"
    );
    assert!(err_a.contains("fencing token no longer matches"), "{err_a}");
    assert!(err_a.contains("was lost while this apply ran"), "{err_a}");
    let mut err_b = String::new();
    let _ = b.stderr.take().unwrap().read_to_string(&mut err_b);
    assert!(b.wait().unwrap().success(), "{err_b}");
    let out = in_dir(dir.path(), &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_converged(dir.path(), &p, &u);
}

#[test]
fn killing_the_leader_mid_apply_then_reapply_converges() {
    let Some(_turn) = etcd() else { return };
    let (dir, p, u) = setup("leader");
    let (mut child, _) = apply_until(
        dir.path(),
        &u,
        &["--sim-latency", "100ms", "--parallelism", "2"],
        "/machine/",
    );
    let leader = Command::new(repo().join("scripts/etcd-cluster.sh"))
        .arg("leader")
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&leader.stdout).trim().to_string();
    assert!(
        ["1", "2", "3"].contains(&n.as_str()),
        "no leader found: {n:?}"
    );
    assert!(cluster_script(&["kill-member", &n]));
    let status = child.wait().unwrap();
    assert!(matches!(status.code(), Some(0) | Some(1)), "{status:?}");
    assert!(cluster_script(&["restart-member", &n]));
    let out = in_dir(dir.path(), &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_converged(dir.path(), &p, &u);
}

#[test]
fn losing_quorum_fails_clearly_and_leaves_the_state_unchanged() {
    let Some(_turn) = etcd() else { return };
    let (dir, p, u) = setup("quorum");
    let out = in_dir(dir.path(), &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = pulled(dir.path(), &u);
    assert!(cluster_script(&["stop-member", "2"]));
    assert!(cluster_script(&["stop-member", "3"]));
    let more = cluster().replace("replicas: 6", "replicas: 7");
    std::fs::write(dir.path().join("c.yaml"), &more).unwrap();
    let out = in_dir(dir.path(), &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    let restarted =
        cluster_script(&["restart-member", "2"]) && cluster_script(&["restart-member", "3"]);
    assert!(restarted, "the members did not come back");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no etcd endpoint answered"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pulled(dir.path(), &u), before);
    let _ = p;
}

#[test]
fn migrate_file_to_etcd_and_back_keeps_the_source_marked() {
    let Some(_turn) = etcd() else { return };
    let (dir, _p, u) = setup("migrate");
    let d = dir.path();
    let f = "capi.state.json";
    let out = in_dir(d, f, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let original = pulled(d, f);
    let file_bytes = std::fs::read(d.join(f)).unwrap();

    let out = in_dir(d, f, &["state", "migrate", "--to", &u]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pulled(d, &u), original);
    // The source is intact, and refused, naming the new location.
    assert_eq!(std::fs::read(d.join(f)).unwrap(), file_bytes);
    let out = in_dir(d, f, &["plan", "--refresh=false", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("was migrated to"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&u), "{}", stderr(&out));

    // A destination holding another state is refused.
    let (other_dir, _, other) = setup("migrate-other");
    let out = in_dir(
        other_dir.path(),
        &other,
        &["apply", "--auto-approve", "-f", "c.yaml"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = in_dir(d, &u, &["state", "migrate", "--to", &other]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("another state"), "{}", stderr(&out));

    // Back to the same file (same lineage, older copy there): allowed.
    let out = in_dir(d, &u, &["state", "migrate", "--to", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pulled(d, f), original);
    let out = in_dir(d, &u, &["state", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was migrated to"), "{}", stderr(&out));
}

#[test]
fn push_on_etcd_checks_lineage_and_serial() {
    let Some(_turn) = etcd() else { return };
    let (dir, _p, u) = setup("push");
    let d = dir.path();
    let out = in_dir(d, &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = in_dir(d, &u, &["state", "pull", "-o", "copy.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The same serial is refused; a newer one with one resource fewer is taken.
    let out = in_dir(d, &u, &["state", "push", "copy.json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("serial"), "{}", stderr(&out));
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("copy.json")).unwrap()).unwrap();
    let before = v["resources"].as_array().unwrap().len();
    v["resources"].as_array_mut().unwrap().pop();
    v["serial"] = serde_json::json!(v["serial"].as_u64().unwrap() + 1);
    v.as_object_mut().unwrap().remove("checksum");
    // Re-encode through the file backend so the checksum is right.
    let st: capi::state::State = serde_json::from_value(v).unwrap();
    let mut store = capi::state::StateStore::new(d.join("edited.json"));
    store.save(&st).unwrap();
    let out = in_dir(d, &u, &["state", "push", "edited.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = pulled(d, &u);
    assert_eq!(after["serial"], st.serial);
    assert_eq!(after["resources"].as_array().unwrap().len(), before - 1);
}

/// A single-member etcd with authentication enabled, stopped (and its
/// data directory removed) when dropped.
struct AuthEtcd(std::process::Child, Option<tempfile::TempDir>);

impl Drop for AuthEtcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        drop(self.1.take());
    }
}

#[test]
fn etcd_authentication_wrong_credentials_are_refused_right_ones_work() {
    let Some(_turn) = etcd() else { return };
    let data = tempfile::tempdir().unwrap();
    let child = Command::new("etcd")
        .args(["--name", "auth", "--data-dir"])
        .arg(data.path().join("d"))
        .args(["--listen-client-urls", "http://127.0.0.1:23795"])
        .args(["--advertise-client-urls", "http://127.0.0.1:23795"])
        .args(["--listen-peer-urls", "http://127.0.0.1:23805"])
        .args(["--initial-advertise-peer-urls", "http://127.0.0.1:23805"])
        .args(["--initial-cluster", "auth=http://127.0.0.1:23805"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _etcd = AuthEtcd(child, Some(data));
    let ctl = |args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints=127.0.0.1:23795")
            .args(args)
            .output()
            .unwrap()
            .status
            .success()
    };
    let mut up = false;
    for _ in 0..100 {
        if ctl(&["endpoint", "health"]) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "the single-member etcd did not start");
    assert!(ctl(&["user", "add", "root:rootpw"]));
    assert!(ctl(&["auth", "enable"]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), cluster()).unwrap();
    let u = "etcd://127.0.0.1:23795/capi/auth";
    let run = |user: Option<&str>, args: &[&str]| {
        let mut c = capi(dir.path());
        c.env_remove("ETCDCTL_USER").env_remove("ETCDCTL_PASSWORD");
        if let Some(user) = user {
            c.env("ETCDCTL_USER", user);
        }
        c.args(["--state", u]).args(args).output().unwrap()
    };
    let out = run(
        Some("root:wrong"),
        &["apply", "--auto-approve", "-f", "c.yaml"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("authentication as \"root\" failed"), "{err}");
    assert!(!err.contains("wrong"), "the password is never shown: {err}");
    let out = run(None, &["plan", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run(
        Some("root:rootpw"),
        &["apply", "--auto-approve", "-f", "c.yaml"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        Some("root:rootpw"),
        &["plan", "--detailed-exitcode", "-f", "c.yaml"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn an_encrypted_state_on_etcd_stores_no_plaintext_secret() {
    use base64::Engine as _;
    let Some(_turn) = etcd() else { return };
    let (dir, p, u) = setup("encrypted");
    let d = dir.path();
    let k1 = base64::engine::general_purpose::STANDARD.encode([11u8; 32]);
    let k2 = base64::engine::general_purpose::STANDARD.encode([12u8; 32]);
    let with_key = |k: Option<&str>, args: &[&str]| {
        let mut c = capi(d);
        c.env_remove("CAPI_STATE_KEY").args(["--state", &u]);
        if let Some(k) = k {
            c.env("CAPI_STATE_KEY", k);
        }
        c.args(args).output().unwrap()
    };
    let out = with_key(Some(&k1), &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The raw values under the prefix, as etcd holds them.
    let raw = etcdctl(&["get", "--prefix", &format!("{p}/")]);
    assert!(raw.contains("\"ca.key\":\"capi-enc:v1:"), "{raw}");
    assert!(raw.contains("\"token\":\"capi-enc:v1:"), "{raw}");
    assert!(!raw.contains("PRIVATE KEY"), "{raw}");

    // Plan without the key; kubeconfig without it (or with a wrong one) refused.
    let out = with_key(None, &["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for k in [None, Some(k2.as_str())] {
        let out = with_key(k, &["kubeconfig", "ec"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("CAPI_STATE_KEY"), "{}", stderr(&out));
    }
    let out = with_key(Some(&k1), &["kubeconfig", "ec"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // rekey on etcd: the old key stops working, the new one works.
    let mut c = capi(d);
    let out = c
        .env("CAPI_STATE_KEY", &k1)
        .env("CAPI_STATE_NEW_KEY", &k2)
        .args(["--state", &u, "state", "rekey"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        with_key(Some(&k1), &["kubeconfig", "ec"]).status.code(),
        Some(1)
    );
    let out = with_key(Some(&k2), &["kubeconfig", "ec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let raw = etcdctl(&["get", "--prefix", &format!("{p}/")]);
    assert!(!raw.contains("PRIVATE KEY"), "{raw}");
    etcdctl(&["del", "--prefix", &format!("{p}/")]);
}

/// The keys under `prefix/sub` (etcdctl, one per line).
fn keys_under(p: &str, sub: &str) -> Vec<String> {
    etcdctl(&["get", "--prefix", "--keys-only", &format!("{p}/{sub}")])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A commit of more than 127 changes is several transactions; killed at any
/// moment (here `capi state migrate` of 400 machines, SIGKILLed after
/// various delays), a reader sees all of it or none of it, never a mix, and
/// the next writer finishes or replaces it, leaving no record parts behind.
#[test]
fn a_large_commit_killed_midway_is_seen_whole_or_not_at_all() {
    let Some(_turn) = etcd() else { return };
    let (dir, _, _) = setup("large-commit");
    let d = dir.path();
    std::fs::write(
        d.join("big.yaml"),
        cluster().replace("replicas: 6", "replicas: 400"),
    )
    .unwrap();
    let out = in_dir(
        d,
        "src.json",
        &[
            "apply",
            "--auto-approve",
            "--sim-latency",
            "0ms",
            "-f",
            "big.yaml",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let original = pulled(d, "src.json");
    let resources = original["resources"].as_array().unwrap().len();
    assert!(resources > 800, "{resources}");

    let (mut none, mut whole, mut pending_seen) = (0, 0, 0);
    for (i, delay_ms) in [0u64, 15, 30, 45, 60, 80, 100, 130, 160, 200]
        .into_iter()
        .enumerate()
    {
        let run = d.join(format!("run{i}"));
        std::fs::create_dir(&run).unwrap();
        std::fs::copy(d.join("src.json"), run.join("src.json")).unwrap();
        let p = prefix(&format!("large-commit-{i}"));
        let u = url(&p);
        let mut child = capi_process(&run)
            .args(["--state", "src.json", "--lock-ttl", "2s"])
            .args(["state", "migrate", "--to", &u])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        if etcdctl(&["get", "--print-value-only", &format!("{p}/meta")]).contains("\"pending\"") {
            pending_seen += 1;
        }
        let out = in_dir(&run, &u, &["state", "pull"]);
        if out.status.success() {
            let got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(
                got, original,
                "run {i} ({delay_ms} ms): a partial state was read"
            );
            whole += 1;
        } else {
            assert!(
                stderr(&out).contains("there is no state"),
                "run {i} ({delay_ms} ms): {}",
                stderr(&out)
            );
            none += 1;
        }
        // The next writer: the migration again, once the killed one's lease
        // expired (refused only when the first one finished and marked its
        // source).
        let out = in_dir(
            &run,
            "src.json",
            &["--lock-timeout", "10s", "state", "migrate", "--to", &u],
        );
        if !out.status.success() {
            assert!(stderr(&out).contains("was migrated to"), "{}", stderr(&out));
        }
        assert_eq!(pulled(&run, &u), original, "run {i}: after the next write");
        assert_eq!(keys_under(&p, "p/"), Vec::<String>::new(), "run {i}");
    }
    eprintln!("large commit killed: {none} read as no state, {whole} whole ({pending_seen} caught between its commit point and its end)");
    assert_eq!(none + whole, 10);
}

/// A large commit stopped after its commit point (crafted here with etcdctl:
/// `meta` names a pending record that removes a worker, whose key is still
/// there; another directory holds a killed writer's leftover part): readers
/// see the worker gone; the next apply finishes the commit before its own
/// writes, deletes every part, and converges with the simulator.
#[test]
fn an_unfinished_large_commit_is_replayed_by_readers_and_finished_by_the_next_apply() {
    let Some(_turn) = etcd() else { return };
    let (dir, p, u) = setup("unfinished");
    let d = dir.path();
    let out = in_dir(d, &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = pulled(d, &u);
    let victim = before["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "machine")
        .map(|r| r["address"].as_str().unwrap().to_string())
        .max()
        .unwrap();
    let seal = |json: &str| format!("sha256:{}\n{json}", hex::encode(Sha256::digest(json)));
    let meta_text = etcdctl(&["get", "--print-value-only", &format!("{p}/meta")]);
    let meta_json = meta_text.trim_end().split_once('\n').unwrap().1;
    let mut meta: serde_json::Value = serde_json::from_str(meta_json).unwrap();
    let serial = meta["serial"].as_u64().unwrap() + 1;
    let record = serde_json::json!({"serial": serial, "next_sequence": meta["next_sequence"], "remove": [victim]});
    let part = seal(&record.to_string());
    etcdctl(&["put", &format!("{p}/p/crafted/00000"), &part]);
    // A part a killed writer left in another directory changes nothing.
    etcdctl(&["put", &format!("{p}/p/leftover/00000"), "junk"]);
    meta["serial"] = serial.into();
    meta["pending"] = serde_json::json!({"serial": serial, "id": "crafted", "parts": 1, "sha256": hex::encode(Sha256::digest(&part))});
    etcdctl(&["put", &format!("{p}/meta"), &seal(&meta.to_string())]);
    assert_eq!(keys_under(&p, &format!("r/{victim}")).len(), 1);

    let read = pulled(d, &u);
    assert_eq!(read["serial"].as_u64(), Some(serial));
    assert!(
        !read
            .to_string()
            .contains(&format!("\"address\":\"{victim}\"")),
        "the pending removal of {victim} was not replayed"
    );
    let out = in_dir(d, &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(keys_under(&p, "p/"), Vec::<String>::new());
    assert!(!etcdctl(&["get", "--print-value-only", &format!("{p}/meta")]).contains("pending"));
    assert_converged(d, &p, &u);
}

/// After a write the snapshot names `meta`'s current revision; a damaged
/// snapshot is not used (the keys are read instead), and the next write
/// replaces it and deletes the old parts.
#[test]
fn the_snapshot_follows_meta_and_a_damaged_one_is_not_used() {
    let Some(_turn) = etcd() else { return };
    let (dir, p, u) = setup("snapshot");
    let d = dir.path();
    let out = in_dir(d, &u, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let head = |p: &str| -> serde_json::Value {
        let v = etcdctl(&["get", "--print-value-only", &format!("{p}/snap")]);
        serde_json::from_str(v.trim_end().split_once('\n').expect("a snapshot head").1).unwrap()
    };
    let meta_rev = |p: &str| -> i64 {
        let v: serde_json::Value =
            serde_json::from_str(&etcdctl(&["get", "-w", "json", &format!("{p}/meta")])).unwrap();
        v["kvs"][0]["mod_revision"].as_i64().unwrap()
    };
    let h = head(&p);
    assert_eq!(h["meta_revision"].as_i64(), Some(meta_rev(&p)));
    let id = h["id"].as_str().unwrap().to_string();
    let parts = keys_under(&p, "s/");
    assert_eq!(parts, vec![format!("{p}/s/{id}/00000")]);
    let whole = pulled(d, &u);

    etcdctl(&["put", &parts[0], "not a snapshot"]);
    assert_eq!(pulled(d, &u), whole);

    let worker = whole["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap().to_string())
        .filter(|a| a.contains("/machine/") && a.contains("-md-"))
        .max()
        .unwrap();
    let out = in_dir(d, &u, &["state", "rm", &worker]);
    assert!(out.status.success(), "{}", stderr(&out));
    let h2 = head(&p);
    assert_ne!(h2["id"], h["id"]);
    assert_eq!(h2["meta_revision"].as_i64(), Some(meta_rev(&p)));
    assert_eq!(
        keys_under(&p, "s/"),
        vec![format!("{p}/s/{}/00000", h2["id"].as_str().unwrap())]
    );
    let after = pulled(d, &u);
    assert_eq!(
        after["resources"].as_array().unwrap().len() + 1,
        whole["resources"].as_array().unwrap().len()
    );
}
