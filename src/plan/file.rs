//! Saved plans (`capi plan -out FILE`): the plan plus what it was made from,
//! checksummed. Encoding and decoding are pure; the CLI reads and writes.
//! A plan file holds no secret: bootstrap documents carry references only.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Plan;
use crate::state::codec::{encode_checksummed, verify_checksummed};

pub(crate) const PLAN_FILE_FORMAT: &str = "capi-plan";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub(crate) format: String,
    pub(crate) format_version: u32,
    pub(crate) capi_version: String,
    /// The `-f` arguments, re-read by `capi apply FILE` to check staleness.
    pub(crate) manifest_files: Vec<String>,
    /// SHA-256 of the manifest sources as written (before substitution).
    pub(crate) manifest_digest: String,
    /// SHA-256 of the variables the manifests used, with their values.
    pub(crate) variables_digest: String,
    /// `--provider` override the plan was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provider_override: Option<String>,
    pub plan: Plan,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) checksum: Option<String>,
}

pub(crate) fn encode(f: &PlanFile) -> Vec<u8> {
    let mut f = f.clone();
    f.checksum = None;
    encode_checksummed(&f)
}

pub fn decode(bytes: &[u8]) -> Result<PlanFile, String> {
    let text = verify_checksummed(bytes)?;
    let f: PlanFile =
        serde_json::from_str(text).map_err(|e| format!("it is not a capi plan file ({e})"))?;
    if f.format != PLAN_FILE_FORMAT {
        return Err(format!(
            "it is not a capi plan file (format {:?})",
            f.format
        ));
    }
    if f.format_version > super::PLAN_FORMAT_VERSION {
        return Err(format!(
            "it was written by a newer capi ({}); use that version to apply it",
            f.capi_version
        ));
    }
    Ok(f)
}

/// Why a saved plan can no longer be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum Stale {
    #[error("Saved plan does not match the given state: it was made for state lineage {plan:?}, but the state's lineage is {state:?}. Make a new plan against this state")]
    Lineage { plan: String, state: String },
    #[error("Saved plan is stale: the state changed since the plan was made (serial {plan} → {state}). Make a new plan")]
    Serial { plan: u64, state: u64 },
    #[error("Saved plan is stale: the manifests changed since the plan was made ({files}). Make a new plan")]
    Manifests { files: String },
    #[error("Saved plan is stale: variable values changed since the plan was made (the manifests are the same). Use the same --var, --var-file and environment values, or make a new plan")]
    Variables,
}

/// Compare a saved plan with the current state and inputs.
pub(crate) fn check_fresh(
    f: &PlanFile,
    lineage: &str,
    serial: u64,
    manifest_digest: &str,
    variables_digest: &str,
) -> Result<(), Stale> {
    let p = &f.plan;
    if !p.prior_lineage.is_empty() && p.prior_lineage != lineage {
        return Err(Stale::Lineage {
            plan: p.prior_lineage.clone(),
            state: lineage.to_string(),
        });
    }
    if p.prior_serial != serial || (p.prior_lineage.is_empty() && !lineage.is_empty()) {
        return Err(Stale::Serial {
            plan: p.prior_serial,
            state: serial,
        });
    }
    if f.manifest_digest != manifest_digest {
        return Err(Stale::Manifests {
            files: f.manifest_files.join(", "),
        });
    }
    if f.variables_digest != variables_digest {
        return Err(Stale::Variables);
    }
    Ok(())
}
