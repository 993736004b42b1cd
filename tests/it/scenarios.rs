//! Scenario folders (`tests/scenarios/<name>/`): `manifest.yaml` is planned
//! against `state.json` and the plan text must equal `plan.txt` (or, when
//! planning fails, the error must equal `error.txt`).
//!
//! `state.json` is produced from `setup.yaml` (applied on the simulator) and
//! checked in, stripped of secret material (`setup-2.yaml`, when present, is
//! applied after it: machines then have different ages). Regenerate states and expected
//! outputs with `CAPI_UPDATE_SCENARIOS=1 cargo test --test it scenarios`, then
//! review the diff. Optional files: `setup.env` (KEY=VALUE lines for the
//! setup apply, e.g. failure injection), `args` (extra plan arguments).

use std::path::{Path, PathBuf};

use capi::state::StateStore;

use crate::common::*;

/// A fixed clock for every scenario plan (the states were generated before it).
const NOW: &str = "2030-01-01T00:00:00Z";

fn scenarios() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/scenarios"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("manifest.yaml").exists())
        .collect();
    v.sort();
    v
}

fn read_lines(p: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Apply `setup.yaml` (then `setup-2.yaml`, if present) on the simulator and
/// keep the state without secrets.
fn regenerate_state(dir: &Path) {
    let work = tempfile::tempdir().unwrap();
    for setup in ["setup.yaml", "setup-2.yaml"] {
        if !dir.join(setup).exists() {
            continue;
        }
        let mut c = capi(work.path());
        c.args(["apply", "--auto-approve", "--sim-latency", "0s", "-f"])
            .arg(dir.join(setup))
            .env("CAPI_NOW", "2029-12-31T23:00:00Z");
        for (k, v) in read_lines(&dir.join("setup.env")) {
            c.env(k, v);
        }
        let _ = c.output().unwrap();
    }
    let mut state = StateStore::new(work.path().join("capi.state.json"))
        .load()
        .unwrap()
        .expect("setup produced a state");
    for r in &mut state.resources {
        for v in r.sensitive.values_mut() {
            *v = "(stripped from the scenario)".into();
        }
        // Long PEM blocks are noise in review; keep the hash and dates.
        r.observed
            .retain(|k, _| !k.ends_with(".crt") && !k.ends_with(".pub"));
        // Make the token valid at the scenario clock.
        if let Some(e) = r.observed.get_mut("expires_unix") {
            *e = serde_json::json!(capi::util::time::parse_rfc3339(NOW).unwrap() + 12 * 3600);
        }
    }
    let _ = std::fs::remove_file(dir.join("state.json"));
    StateStore::new(dir.join("state.json"))
        .save(&state)
        .unwrap();
    let _ = std::fs::remove_file(dir.join("state.json.backup"));
}

#[test]
fn scenario_folders() {
    let update = std::env::var_os("CAPI_UPDATE_SCENARIOS").is_some();
    let mut failures = Vec::new();
    let all = scenarios();
    assert!(all.len() >= 7, "scenario folders are missing");
    for dir in all {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if update && dir.join("setup.yaml").exists() {
            regenerate_state(&dir);
        }
        let work = tempfile::tempdir().unwrap();
        if dir.join("state.json").exists() {
            std::fs::copy(dir.join("state.json"), work.path().join("capi.state.json")).unwrap();
        } else {
            assert!(
                !dir.join("setup.yaml").exists(),
                "{name}: state.json missing; run with CAPI_UPDATE_SCENARIOS=1"
            );
        }
        let mut c = capi(work.path());
        c.args(["plan", "--refresh=false", "-f"])
            .arg(dir.join("manifest.yaml"))
            .env("CAPI_NOW", NOW);
        let extra = std::fs::read_to_string(dir.join("args")).unwrap_or_default();
        c.args(extra.split_whitespace());
        let out = c.output().unwrap();
        let (file, actual) = if out.status.success() {
            ("plan.txt", stdout(&out))
        } else {
            (
                "error.txt",
                stderr(&out).replace(&dir.display().to_string(), "<scenario>"),
            )
        };
        let expected_path = dir.join(file);
        if update {
            let _ = std::fs::remove_file(dir.join("plan.txt"));
            let _ = std::fs::remove_file(dir.join("error.txt"));
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected =
            std::fs::read_to_string(&expected_path).unwrap_or_else(|_| format!("<{file} missing>"));
        if expected != actual {
            failures.push(format!(
                "--- {name}/{file} expected\n{expected}\n--- actual\n{actual}"
            ));
        }
        // Determinism: the same inputs give a byte-identical plan.
        let again = c.output().unwrap();
        assert_eq!(
            out.stdout, again.stdout,
            "{name}: plan is not deterministic"
        );
    }
    assert!(
        failures.is_empty(),
        "{} scenario(s) differ (review, then CAPI_UPDATE_SCENARIOS=1):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
