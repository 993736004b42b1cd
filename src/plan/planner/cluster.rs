//! One cluster in the manifests, planned as named steps over a
//! [`ClusterPlanner`]: infrastructure singletons, each machine group
//! (`group.rs`), the control-plane gate for workers, the bootstrap token
//! (`token.rs`) and removals (`removal.rs`). Each step returns its report;
//! the planner carries what the steps share (whether the control plane is
//! initialised, the last control-plane step, the workers' steps).

use std::collections::HashMap;

use crate::desired::DesiredCluster;
use crate::resource::{Address, Observation, Owner, ResourceKind, Role};
use crate::state::{Resource, Status};

use super::report::{ClusterSteps, ControlPlaneGateReport};
use super::{Builder, PlanError};

pub(super) struct ClusterPlanner<'p, 'a> {
    pub(super) b: &'p mut Builder<'a>,
    pub(super) dc: &'a DesiredCluster,
    pub(super) key: String,
    pub(super) token_addr: Address,
    /// The cluster has a control plane, or the plan has already created its
    /// first machine (`kubeadm init`): further control-plane machines join.
    pub(super) initialized: bool,
    /// The cluster had a control plane before this plan: a control-plane
    /// machine it adds (scale-up or rollout) is health-gated.
    pub(super) was_initialized: bool,
    /// Some machine joins (it needs the bootstrap token).
    pub(super) joins_planned: bool,
    /// The create of the `kubeadm init` machine.
    pub(super) init_step: Option<usize>,
    /// Control-plane machines change one at a time: each step waits for the
    /// previous one.
    pub(super) last_cp_step: Option<usize>,
    /// The last step of a control-plane rollout, which workers wait for.
    pub(super) cp_rollout_end: Option<usize>,
    pub(super) worker_step_ids: Vec<usize>,
}

impl<'p, 'a> ClusterPlanner<'p, 'a> {
    pub(super) fn new(b: &'p mut Builder<'a>, dc: &'a DesiredCluster) -> Self {
        let initialized = cluster_initialized(b, dc);
        ClusterPlanner {
            b,
            dc,
            key: dc.id.key(),
            token_addr: dc.address(ResourceKind::Token, None),
            initialized,
            was_initialized: initialized,
            joins_planned: false,
            init_step: None,
            last_cp_step: None,
            cp_rollout_end: None,
            worker_step_ids: Vec::new(),
        }
    }

    pub(super) fn do_plan(mut self) -> Result<ClusterSteps, PlanError> {
        self.warn_unchecked_machines();
        let infrastructure = self.do_plan_infrastructure()?;
        let mut by_owner = self.machines_by_owner();
        let dc = self.dc;
        let mut groups = Vec::with_capacity(dc.groups.len());
        let mut rolling = Vec::new();
        for g in &dc.groups {
            let in_state = by_owner.remove(&g.owner).unwrap_or_default();
            let start = self.b.steps.len();
            let report = self.do_plan_group(g, in_state)?;
            if g.role == Role::Worker && !report.replacements.is_empty() {
                rolling.push(start..self.b.steps.len());
            }
            groups.push(report);
        }
        self.do_gate_worker_rollouts(&rolling);
        let control_plane_gate = self.do_plan_control_plane_gate();
        let token = self.do_plan_token();
        let removals = self.do_plan_removals();
        Ok(ClusterSteps {
            infrastructure,
            groups,
            control_plane_gate,
            token,
            removals,
        })
    }

    /// Machines whose `--health-check` verdict is not "passed" (it failed,
    /// or the run stopped first): said out loud, since only a run with
    /// `--health-check` checks them again before deleting other machines.
    fn warn_unchecked_machines(&mut self) {
        let unchecked: Vec<String> = self
            .b
            .state
            .cluster_resources(&self.key)
            .filter(|r| {
                r.observed
                    .get("health_check")
                    .and_then(|v| v.as_str())
                    .is_some_and(|v| v != "passed")
            })
            .filter_map(|r| r.address.name().map(str::to_string))
            .collect();
        if !unchecked.is_empty() {
            self.b.warnings.push(format!(
                "cluster {}: machine(s) {} never passed the health check; with --health-check they are checked again (and must pass) before another machine of the cluster is created or deleted; without it nothing checks them",
                self.key,
                unchecked.join(", ")
            ));
        }
    }

    /// The cluster's machines in state by owner, in state order (one pass,
    /// not one per group: a cluster may have hundreds of groups).
    fn machines_by_owner(&self) -> HashMap<&'a Owner, Vec<&'a Resource>> {
        let state = self.b.state;
        let mut by_owner: HashMap<&Owner, Vec<&Resource>> = HashMap::new();
        // (`State::cluster_resources` would tie the machines to `self.key`.)
        let key = self.key.as_str();
        for r in state
            .resources
            .iter()
            .filter(|r| r.address.cluster_key() == key)
        {
            if let Some(m) = r.attributes.as_machine() {
                by_owner.entry(&m.owner).or_default().push(r);
            }
        }
        by_owner
    }

    /// Workers wait for a control-plane rollout to finish (ControlPlaneIsStable).
    fn do_plan_control_plane_gate(&mut self) -> ControlPlaneGateReport {
        let Some(end) = self.cp_rollout_end else {
            return ControlPlaneGateReport::default();
        };
        let mut gated = 0;
        for id in &self.worker_step_ids {
            if *id > end {
                self.b.steps[*id].after.push(end);
                gated += 1;
            }
        }
        ControlPlaneGateReport {
            control_plane_rolls: true,
            gated_worker_steps: gated,
        }
    }

    /// Topology Clusters roll at most `upgrade_concurrency` MachineDeployments
    /// at a time: the first steps of the k-th rolling group wait for the last
    /// steps of the (k − n)-th.
    fn do_gate_worker_rollouts(&mut self, rolling: &[std::ops::Range<usize>]) {
        let Some(n) = self.dc.upgrade_concurrency else {
            return;
        };
        for k in n..rolling.len() {
            let prev = &rolling[k - n];
            let waited: std::collections::HashSet<usize> = prev
                .clone()
                .flat_map(|i| self.b.steps[i].after.clone())
                .collect();
            let last: Vec<usize> = prev.clone().filter(|i| !waited.contains(i)).collect();
            for id in rolling[k].clone() {
                if !self.b.steps[id]
                    .after
                    .iter()
                    .any(|a| rolling[k].contains(a))
                {
                    self.b.steps[id].after.extend(last.iter().copied());
                }
            }
        }
    }

    /// Record a step of a machine of `role` (control-plane steps chain).
    pub(super) fn record_machine_step(&mut self, role: Role, id: usize) {
        if role == Role::ControlPlane {
            self.last_cp_step = Some(id);
        } else {
            self.worker_step_ids.push(id);
        }
    }
}

fn cluster_initialized(b: &Builder<'_>, dc: &DesiredCluster) -> bool {
    b.state.cluster_resources(&dc.id.key()).any(|r| {
        r.attributes
            .as_machine()
            .is_some_and(|m| m.role == Role::ControlPlane)
            && matches!(
                r.status,
                Status::Ready | Status::Updating | Status::Deleting
            )
            && !matches!(b.observation(&r.address), Some(Observation::Missing))
    })
}
