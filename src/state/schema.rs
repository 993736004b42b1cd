//! The state file's JSON Schema, generated from the Rust types (checked in
//! under `state-schema/`; a test fails when it is stale).

use serde_json::Value;

use super::State;

pub fn state_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(State)).expect("schema serialises")
}

/// Pretty JSON with a trailing newline, as checked in.
pub fn to_file_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("json");
    s.push('\n');
    s
}
