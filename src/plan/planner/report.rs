//! What the planner decided, step by step: one report per cluster, with a
//! part per planning step (infrastructure, each machine group, the
//! control-plane gate, the bootstrap token, removals). The plan says what
//! will happen; the report says which step decided it and why, in terms a
//! test (or a person) can check without reading steps and edges.

use crate::resource::Address;

use super::super::ReasonCode;

/// Every cluster the plan looked at, in the order it planned them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanReport {
    pub clusters: Vec<ClusterReport>,
}

impl PlanReport {
    /// The report of one cluster (`name`, or `namespace:name` outside the
    /// default namespace).
    pub fn cluster(&self, key: &str) -> Option<&ClusterReport> {
        self.clusters.iter().find(|c| c.cluster == key)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterReport {
    /// The cluster part of its addresses.
    pub cluster: String,
    pub disposition: ClusterDisposition,
}

impl ClusterReport {
    /// The step reports, when the cluster was planned step by step.
    pub fn steps(&self) -> Option<&ClusterSteps> {
        match &self.disposition {
            ClusterDisposition::Planned(steps) => Some(steps),
            _ => None,
        }
    }
}

/// What happens to a cluster as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterDisposition {
    /// In the manifests: planned step by step.
    Planned(Box<ClusterSteps>),
    /// `spec.paused`: left untouched.
    Paused,
    /// Gone from the manifests ([`ReasonCode::Removed`]) or `capi destroy`
    /// ([`ReasonCode::Destroy`]): every resource is deleted, in this order.
    Removed {
        reason: ReasonCode,
        deleted: Vec<Address>,
    },
}

/// The reports of a planned cluster's steps, in the order they ran.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSteps {
    pub infrastructure: InfrastructureReport,
    /// One per machine group, control plane first.
    pub groups: Vec<GroupReport>,
    pub control_plane_gate: ControlPlaneGateReport,
    pub token: TokenDecision,
    pub removals: RemovalReport,
}

impl ClusterSteps {
    /// The report of one machine group (`MachineDeployment/md-0`).
    pub fn group(&self, group: &str) -> Option<&GroupReport> {
        self.groups.iter().find(|g| g.group == group)
    }
}

/// What a step decided for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    Keep,
    Create(ReasonCode),
    Update(ReasonCode),
    /// Deleted and created again.
    Replace(ReasonCode),
}

/// The cluster's singletons: certificate authorities, network, load balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct InfrastructureReport {
    pub resources: Vec<(Address, Decision)>,
}

/// One machine and why a step planned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineDecision {
    pub machine: String,
    pub reason: ReasonCode,
}

/// One wave of a group's rollout: creates with the reason the rollout
/// scheduled them for, deletes with the reason their change gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaveReport {
    pub created: Vec<MachineDecision>,
    pub deleted: Vec<MachineDecision>,
}

/// An old machine and the new one that replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub old: String,
    pub new: String,
    pub reason: ReasonCode,
}

/// One machine group's steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupReport {
    /// `MachineDeployment/md-0`.
    pub group: String,
    /// Paused groups are neither scaled nor rolled.
    pub paused: bool,
    /// Deletes a previous apply left unfinished, finished before the rollout.
    pub finished_deletes: Vec<String>,
    /// Creates a previous apply left unfinished, resumed before the rollout
    /// (unless the rollout deletes the machine).
    pub resumed_creates: Vec<String>,
    /// Machines that failed or are missing, stopped or changed at the provider.
    pub unhealthy: Vec<String>,
    /// Whether the group's MachineHealthChecks allow replacing them.
    pub remediation_allowed: bool,
    /// Unhealthy machines left alone because remediation is not allowed.
    pub not_remediated: Vec<String>,
    /// The rollout, wave by wave.
    pub waves: Vec<WaveReport>,
    /// Deletes paired with creates of the same rollout.
    pub replacements: Vec<Replacement>,
    /// Machines whose labels or annotations are updated in place.
    pub updated_in_place: Vec<String>,
    /// In-place updates a previous apply left unfinished, run again.
    pub resumed_updates: Vec<String>,
    /// Machines left as they are.
    pub kept: Vec<String>,
}

impl GroupReport {
    /// Every machine the rollout creates, in wave order.
    pub fn created(&self) -> impl Iterator<Item = &MachineDecision> {
        self.waves.iter().flat_map(|w| w.created.iter())
    }

    /// Every machine the rollout deletes, in wave order.
    pub fn deleted(&self) -> impl Iterator<Item = &MachineDecision> {
        self.waves.iter().flat_map(|w| w.deleted.iter())
    }
}

/// Workers wait for a control-plane rollout to finish (Cluster API's
/// ControlPlaneIsStable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlPlaneGateReport {
    /// The control plane rolls (or finishes an interrupted delete) in this plan.
    pub control_plane_rolls: bool,
    /// Worker steps made to wait for the end of that rollout.
    pub gated_worker_steps: usize,
}

/// What happens to the cluster's bootstrap token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDecision {
    /// No token yet, and no machine joins in this plan.
    NotNeeded,
    /// Created for the machines this plan joins.
    Create,
    /// The token in the state serves (or nothing joins).
    Keep,
    /// A new token is made before machines join.
    Rotate(TokenRotation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRotation {
    /// A previous apply did not finish registering it, or it failed.
    Interrupted,
    Expired,
    /// It expires within the rotation margin.
    ExpiresSoon,
}

/// Machines of groups no longer in the manifests, and bootstrap data whose
/// machine is gone from the state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemovalReport {
    /// Workers first, then control-plane machines newest first.
    pub machines: Vec<Address>,
    pub stray_bootstrap: Vec<Address>,
}
