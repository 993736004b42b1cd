//! The planner: a pure function from (desired clusters, state, options) to a
//! plan. The plan lists *changes* (what a person reviews: one per resource,
//! each with a reason) and *steps* (what the executor runs: provider
//! operations with explicit dependencies). No clock, randomness or I/O: the
//! current time is an input, and the same inputs give a byte-identical plan.

pub(crate) mod check;
pub mod file;
pub(crate) mod order;
pub(crate) mod planner;
pub mod render;
pub(crate) mod rollout;
pub(crate) mod schema;
pub mod simulate;
pub(crate) mod skew;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::resource::{Address, ProviderKind, ResourceKind, Spec};
pub(crate) use crate::resource::{AttributeChange, DriftEntry};

pub(crate) use planner::machines::machine_up_to_date;
pub use planner::report::*;
pub use planner::{plan, plan_with_report, PlanError, PlanOptions};

pub(crate) const PLAN_FORMAT_VERSION: u32 = 1;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    Create,
    Update,
    /// Create the replacement, then delete (or, where the rollout asks for
    /// it, delete first).
    Replace,
    Delete,
}

/// How a change is shown: its action, with a replacement's order told
/// apart as Terraform does (`+/-` creates the replacement first, `-/+`
/// destroys first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Shown {
    Create,
    Update,
    Replace,
    ReplaceDeleteFirst,
    Delete,
}

impl Shown {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Shown::Create => "+",
            Shown::Update => "~",
            Shown::Replace => "+/-",
            Shown::ReplaceDeleteFirst => "-/+",
            Shown::Delete => "-",
        }
    }

    /// What the plan's legend says the symbol means.
    pub(crate) fn legend(self) -> &'static str {
        match self {
            Shown::Create => "create",
            Shown::Update => "update in-place",
            Shown::Replace => "create replacement and then destroy",
            Shown::ReplaceDeleteFirst => "destroy and then create replacement",
            Shown::Delete => "destroy",
        }
    }

    /// Terraform's JSON action list (its order is the order they run in).
    pub(crate) fn terraform_actions(self) -> &'static [&'static str] {
        match self {
            Shown::Create => &["create"],
            Shown::Update => &["update"],
            Shown::Replace => &["create", "delete"],
            Shown::ReplaceDeleteFirst => &["delete", "create"],
            Shown::Delete => &["delete"],
        }
    }
}

/// Why a change is planned (machine-readable; `Change::reason` is the sentence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Not in state yet.
    New,
    /// More replicas requested.
    ScaleUp,
    /// Fewer replicas requested.
    ScaleDown,
    /// What the machine was created from changed; machines are immutable.
    Outdated,
    /// The resource failed; machines are replaced, never repaired.
    Failed,
    /// Missing or stopped at the provider (drift).
    Drifted,
    /// Mutable fields changed.
    InPlace,
    /// A previous apply was interrupted while working on it.
    Interrupted,
    /// No longer in the manifests.
    Removed,
    /// The bootstrap token expired or is about to.
    TokenExpired,
    /// `--replace` asked for it.
    Requested,
    /// `capi destroy`.
    Destroy,
}

/// One reviewed change to one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    pub(crate) address: Address,
    #[serde(rename = "type")]
    pub(crate) kind: ResourceKind,
    pub(crate) provider: ProviderKind,
    pub(crate) action: Action,
    pub(crate) reason_code: ReasonCode,
    pub(crate) reason: String,
    /// For replacements: the resource that replaces this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replacement: Option<Address>,
    /// A replacement whose old resource is deleted before its replacement
    /// is created, or while it is (the same rollout wave): in a rollout
    /// that may not surge (`maxSurge: 0`), an `OnDelete` `--replace`, a
    /// remediation, a standalone Machine replaced under its own name, the
    /// cluster's infrastructure. Shown `-/+`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) delete_first: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) before: Option<Spec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) after: Option<Spec>,
    /// Attribute-level changes. A machine's creation lists none here: each
    /// attribute of `after` is a change from nothing.
    // Derived where they are shown (`Change::attribute_changes`): 100,000
    // new machines held ~250 MB of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) attributes: Vec<AttributeChange>,
    /// Unified diff of the bootstrap cloud-config (replacements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bootstrap_diff: Option<String>,
    /// Bootstrap data is reviewed with its machine: the machine's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) part_of: Option<Address>,
    /// The machine group (`MachineDeployment/md-0`) and rollout wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) wave: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Change {
    /// How it is shown (its symbol, its Terraform action list).
    pub(crate) fn shown(&self) -> Shown {
        match self.action {
            Action::Create => Shown::Create,
            Action::Update => Shown::Update,
            Action::Replace if self.delete_first => Shown::ReplaceDeleteFirst,
            Action::Replace => Shown::Replace,
            Action::Delete => Shown::Delete,
        }
    }

    /// Its attribute-level changes: those listed, or for a machine's
    /// creation (which lists none), every attribute of its `after` spec.
    pub(crate) fn attribute_changes(&self) -> std::borrow::Cow<'_, [AttributeChange]> {
        match &self.after {
            Some(after)
                if self.attributes.is_empty()
                    && self.kind == ResourceKind::Machine
                    && self.action == Action::Create =>
            {
                std::borrow::Cow::Owned(created_attributes(after))
            }
            _ => std::borrow::Cow::Borrowed(&self.attributes),
        }
    }
}

/// A new resource's attributes, each a change from nothing.
pub(crate) fn created_attributes(spec: &Spec) -> Vec<AttributeChange> {
    spec.flatten()
        .into_iter()
        .map(|(path, v)| AttributeChange {
            path,
            before: None,
            after: Some(v),
        })
        .collect()
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Create,
    Update,
    Delete,
}

/// One provider operation, with the steps it must wait for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    pub id: usize,
    pub op: Op,
    pub address: Address,
    pub(crate) provider: ProviderKind,
    /// The desired spec (create and update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) spec: Option<Spec>,
    /// The resource's dependencies, recorded in state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Address>,
    /// Steps (by id) that must finish first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<usize>,
    /// For machine creates in a rollout: wait until the machine is healthy
    /// before dependents start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) health_gate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Apply,
    Destroy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    pub(crate) add: usize,
    pub(crate) change: usize,
    pub(crate) replace: usize,
    pub(crate) destroy: usize,
}

/// One wave of a group's rollout: machines created and deleted together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Wave {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) create: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) delete: Vec<String>,
}

/// The ordered waves of one machine group (each waits for the previous).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rollout {
    pub(crate) cluster: String,
    /// `MachineDeployment/md-0`.
    pub(crate) group: String,
    pub(crate) waves: Vec<Wave>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub format_version: u32,
    pub capi_version: String,
    pub operation: Operation,
    /// The state the plan was made against.
    pub prior_lineage: String,
    pub prior_serial: u64,
    pub changes: Vec<Change>,
    pub steps: Vec<Step>,
    /// Machine groups that change, as ordered waves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<Rollout>,
    /// Bootstrap documents the steps create, by SHA-256 (references only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub documents: BTreeMap<String, String>,
    /// Changes made outside capi, found by refresh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub summary: Summary,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Drop what only the review of the plan needed (each change's specs
    /// before and after, its attribute diff and bootstrap diff, and the
    /// bootstrap-data changes, reviewed with their machines), once it is
    /// approved: an apply counts the reviewed changes by address and
    /// action, and the steps carry what it runs. A 10,000-machine apply
    /// holds ~50 MB less.
    pub(crate) fn shed_review(&mut self) {
        self.changes.retain(|c| c.part_of.is_none());
        for c in &mut self.changes {
            c.before = None;
            c.after = None;
            c.attributes = Vec::new();
            c.bootstrap_diff = None;
        }
        self.changes.shrink_to_fit();
    }

    /// A copy with what [`Plan::shed_review`] keeps: what an apply runs and
    /// counts, for the executor while the whole plan is still being written
    /// out (`capi apply --auto-approve --json`).
    pub(crate) fn for_execution(&self) -> Plan {
        let changes = self
            .reviewed_changes()
            .map(|c| Change {
                address: c.address.clone(),
                kind: c.kind,
                provider: c.provider,
                action: c.action,
                reason_code: c.reason_code,
                reason: c.reason.clone(),
                replacement: c.replacement.clone(),
                delete_first: c.delete_first,
                before: None,
                after: None,
                attributes: Vec::new(),
                bootstrap_diff: None,
                part_of: None,
                group: c.group.clone(),
                wave: c.wave,
            })
            .collect();
        Plan {
            format_version: self.format_version,
            capi_version: self.capi_version.clone(),
            operation: self.operation,
            prior_lineage: self.prior_lineage.clone(),
            prior_serial: self.prior_serial,
            changes,
            steps: self.steps.clone(),
            rollouts: self.rollouts.clone(),
            documents: self.documents.clone(),
            drift: self.drift.clone(),
            warnings: self.warnings.clone(),
            summary: self.summary.clone(),
        }
    }

    /// Changes a person reviews (bootstrap data is reviewed with its machine).
    pub(crate) fn reviewed_changes(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.part_of.is_none())
    }

    pub(crate) fn compute_summary(changes: &[Change]) -> Summary {
        let mut s = Summary::default();
        for c in changes.iter().filter(|c| c.part_of.is_none()) {
            match c.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.destroy += 1,
            }
        }
        s
    }
}
