//! Encryption at rest of the state's sensitive values on the file backend
//! (the etcd backend's test is in etcd.rs): what is stored, which commands
//! work without the key, which refuse clearly and change nothing, a wrong
//! key, `capi state rekey`, and plaintext states sealed on their next write.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::common::*;

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn key_id(byte: u8) -> String {
    hex::encode(&Sha256::digest([byte; 32])[..8])
}

/// `capi ARGS` in `dir` with `CAPI_STATE_KEY` set to `key` (or unset).
fn run(dir: &Path, key: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut c = capi(dir);
    c.env_remove("CAPI_STATE_KEY")
        .env_remove("CAPI_STATE_NEW_KEY");
    if let Some(k) = key {
        c.env("CAPI_STATE_KEY", k);
    }
    c.args(args).output().unwrap()
}

fn state(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("capi.state.json")).unwrap()
}

/// Every sensitive value in the state file.
fn sensitive_values(text: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["sensitive"].as_object())
        .flat_map(|m| m.values().map(|s| s.as_str().unwrap().to_string()))
        .collect()
}

fn cluster(dir: &Path, workers: u32) {
    let text = std::fs::read_to_string(example("sim").join("cluster.yaml")).unwrap();
    let text = text.replace("replicas: 2", &format!("replicas: {workers}"));
    std::fs::write(dir.join("c.yaml"), text).unwrap();
}

#[test]
fn sensitive_values_are_encrypted_and_need_the_key_only_where_used() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cluster(d, 2);
    let (k1, id1) = (key(1), key_id(1));
    let out = run(d, Some(&k1), &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = state(d);
    assert!(!stored.contains("PRIVATE KEY"), "{stored}");
    let values = sensitive_values(&stored);
    assert!(values.len() >= 2, "{values:?}");
    let prefix = format!("capi-enc:v1:{id1}:");
    assert!(values.iter().all(|v| v.starts_with(&prefix)), "{values:?}");

    // Without the key: plan (with refresh), show, state list and pull work.
    let out = run(d, None, &["plan", "--detailed-exitcode", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for args in [
        &["show"][..],
        &["state", "list"],
        &["state", "show", "demo/pki"],
    ] {
        let out = run(d, None, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let out = run(d, None, &["state", "pull"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), stored, "pull writes what is stored");

    // kubeconfig without the key: a clear error, nothing written.
    let out = run(d, None, &["kubeconfig", "demo", "-o", "kc"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&id1) && err.contains("CAPI_STATE_KEY"),
        "{err}"
    );
    assert!(err.contains("--state-key-file"), "{err}");
    assert!(!d.join("kc").exists());
    assert_eq!(state(d), stored);

    // A scale-up without the key is refused before anything changes.
    cluster(d, 3);
    let out = run(d, None, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&id1) && err.contains("Nothing was changed"),
        "{err}"
    );
    assert_eq!(state(d), stored);
    // The same with --json, where the plan is written while the apply
    // starts and the refusal comes at once: the version line first and
    // once, the whole plan, then the error.
    for _ in 0..5 {
        let out = run(
            d,
            None,
            &["apply", "--auto-approve", "--json", "-f", "c.yaml"],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let events = json_events(&stdout(&out));
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types[0], "version", "{types:?}");
        assert_eq!(types.iter().filter(|t| **t == "version").count(), 1);
        let summary = types.iter().position(|t| *t == "change_summary");
        let error = types.iter().position(|t| *t == "diagnostic");
        assert!(summary.is_some() && summary < error, "{types:?}");
    }
    assert_eq!(state(d), stored);

    // A wrong key: the same clear error, for any command; nothing written.
    for args in [&["kubeconfig", "demo"][..], &["plan", "-f", "c.yaml"]] {
        let out = run(d, Some(&key(2)), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("wrong key") && err.contains(&id1), "{err}");
        assert!(err.contains(&key_id(2)), "{err}");
    }
    assert_eq!(state(d), stored);

    // With the key: the kubeconfig, and the scale-up (secrets never printed).
    let out = run(d, Some(&k1), &["kubeconfig", "demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("client-key-data"));
    let out = run(d, Some(&k1), &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let stored = state(d);
    assert!(!stored.contains("PRIVATE KEY"));
    assert!(sensitive_values(&stored)
        .iter()
        .all(|v| v.starts_with(&prefix)));
}

#[test]
fn rekey_moves_to_a_new_key_or_to_plaintext_and_plaintext_states_are_sealed_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cluster(d, 1);
    // An unencrypted state (as before encryption existed).
    let out = run(d, None, &["apply", "--auto-approve", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(state(d).contains("PRIVATE KEY"));
    // It keeps loading with a key given; the next write seals every value, said once.
    let out = run(d, Some(&key(1)), &["plan", "-f", "c.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(state(d).contains("PRIVATE KEY"), "a plan writes nothing");
    let worker = stdout(&run(d, None, &["state", "list"]))
        .lines()
        .find(|l| l.contains("/machine/demo-md-0"))
        .unwrap()
        .to_string();
    let out = run(d, Some(&key(1)), &["state", "rm", &worker]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("Encrypting"), "{}", stderr(&out));
    assert!(!state(d).contains("PRIVATE KEY"));

    // rekey to a key in a file: the old key no longer works, the new one does.
    let kf = d.join("new.key");
    std::fs::write(&kf, key(2) + "\n").unwrap();
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let rekey = ["state", "rekey", "--new-key-file", "new.key"];
    let out = run(d, Some(&key(1)), &rekey);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = state(d);
    let out = run(d, None, &rekey);
    assert_eq!(out.status.code(), Some(1), "rekey needs the current key");
    assert!(stderr(&out).contains(&key_id(1)), "{}", stderr(&out));
    assert_eq!(state(d), before);
    let out = run(d, Some(&key(1)), &rekey);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&key_id(2)), "{}", stderr(&out));
    assert!(d.join("capi.state.json.backup").exists());
    let out = run(d, Some(&key(1)), &["kubeconfig", "demo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
    let out = run(
        d,
        None,
        &["--state-key-file", "new.key", "kubeconfig", "demo"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sensitive_values(&state(d))
        .iter()
        .all(|v| v.starts_with(&format!("capi-enc:v1:{}:", key_id(2)))));

    // Back to plaintext, loudly.
    let out = run(
        d,
        None,
        &[
            "--state-key-file",
            "new.key",
            "state",
            "rekey",
            "--to-plaintext",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("PLAINTEXT"), "{}", stderr(&out));
    assert!(state(d).contains("PRIVATE KEY"));
    let out = run(d, None, &["kubeconfig", "demo"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
