//! What refresh reads back from providers: per-resource observations (inputs
//! to the pure planner) and drift entries (what people are shown).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Address;

/// One attribute that differs: its flattened path and both values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttributeChange {
    pub(crate) path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) after: Option<Value>,
}

/// What refresh found for a resource that differs from state.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Gone at the provider.
    Missing,
    /// Exists but is not running (stopped, exited, error).
    Stopped(String),
    /// Exists but attributes differ from state.
    Changed(Vec<AttributeChange>),
}

/// The kinds of drift `capi drift` reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DriftKind {
    /// In state, gone at the provider.
    Missing,
    /// Exists but is not running.
    Stopped,
    /// Recorded as failed.
    Failed,
    /// Attributes differ from what capi created.
    Changed,
    /// Carries this state's labels but state does not know it.
    Unmanaged,
}

impl DriftKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DriftKind::Missing => "missing",
            DriftKind::Stopped => "stopped",
            DriftKind::Failed => "failed",
            DriftKind::Changed => "changed",
            DriftKind::Unmanaged => "unmanaged",
        }
    }
}

impl std::fmt::Display for DriftKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something observed at the provider that differs from state (drift).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftEntry {
    pub(crate) address: Address,
    pub(crate) kind: DriftKind,
    pub(crate) detail: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) attributes: Vec<AttributeChange>,
}
