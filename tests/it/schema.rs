//! The checked-in state schema matches the Rust types, and states validate.

use std::path::Path;

use crate::common::*;

const STATE_SCHEMA: &str = "state-schema/state.schema.json";

fn check_file(rel: &str, generated: &str) {
    let path = repo().join(rel);
    if std::env::var_os("CAPI_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{rel} is stale: the state types changed. Regenerate it with `CAPI_UPDATE_SCHEMA=1 cargo test --test it schema` and review the diff"
    );
}

#[test]
fn json_events_schema_is_current() {
    let out = capi(&repo()).args(["schema", "events"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    check_file("docs/json-output.schema.json", &stdout(&out));
}

#[test]
fn state_schema_is_current() {
    check_file(
        STATE_SCHEMA,
        &capi::state::schema::to_file_text(&capi::state::schema::state_schema()),
    );
}

/// Validate a state file against the checked-in schema.
pub fn assert_state_valid(state: &Path) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(STATE_SCHEMA)).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(state).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{} does not validate against {STATE_SCHEMA}:\n{}",
        state.display(),
        errors.join("\n")
    );
}

#[test]
fn applied_state_validates_and_rejects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "--sim-latency", "0s", "-f"])
        .arg(example("sim"))
        .assert()
        .success();
    assert_state_valid(&dir.path().join("capi.state.json"));
    // The validator is not vacuous: a state with a bad status is rejected.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("capi.state.json")).unwrap())
            .unwrap();
    doc["resources"][0]["status"] = serde_json::json!("exploded");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join(STATE_SCHEMA)).unwrap()).unwrap();
    assert!(!jsonschema::validator_for(&schema).unwrap().is_valid(&doc));
}
