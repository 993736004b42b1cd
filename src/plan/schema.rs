//! The plan's JSON Schema (`capi schema plan`), generated from the Rust types.

use serde_json::Value;

pub(crate) fn plan_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(super::Plan)).expect("schema serialises")
}
