//! Wave materialisation: a group's scheduled rollout becomes steps. Each
//! create names a machine, renders its role (init, control-plane join,
//! worker join) and plans its bootstrap data and the machine; each delete
//! plans the machine's delete with its reason. Every operation of a wave
//! waits for the whole previous wave; control-plane steps also chain.

use std::collections::BTreeSet;

use crate::desired::MachineGroup;
use crate::resource::{
    Address, BootstrapRole, BootstrapSpec, ProviderKind, ResourceKind, Role, Shared, Spec,
};
use crate::state::Resource;

use super::super::rollout::{GroupOp, Schedule};
use super::super::{ReasonCode, Rollout, Wave};
use super::cluster::ClusterPlanner;
use super::group::{is_replacement, GroupMachines};
use super::machines::{delete_machine, delete_reason};
use super::report::{GroupReport, MachineDecision, WaveReport};
use super::ProtoStep;

/// A machine the rollout creates.
pub(super) struct Created {
    pub(super) address: Address,
    /// Why the rollout scheduled it.
    pub(super) reason: ReasonCode,
    pub(super) wave: Option<u32>,
    pub(super) spec: Spec,
    /// Its bootstrap document.
    pub(super) sha: String,
}

/// What materialising a group's waves produced.
pub(super) struct Materialised {
    /// Machines deleted as replacements (to pair with creates), in order.
    pub(super) replaced: Vec<(Address, ReasonCode)>,
    pub(super) created: Vec<Created>,
    pub(super) deleted_names: BTreeSet<String>,
}

/// Where a wave's steps wait: the previous wave, and (control plane) the
/// previous control-plane step.
struct WaveSlot<'w> {
    number: Option<u32>,
    prev_wave: &'w [usize],
    /// A rollout (machines replaced) gates each new machine on health.
    rolling: bool,
}

impl<'a> ClusterPlanner<'_, 'a> {
    /// Turn the schedule's waves into steps and record the group's rollout.
    pub(super) fn materialise_waves(
        &mut self,
        gm: &GroupMachines<'a>,
        sched: &Schedule,
        mut prev_wave: Vec<usize>,
        report: &mut GroupReport,
    ) -> Materialised {
        let rolling = sched
            .waves
            .iter()
            .flatten()
            .any(|o| matches!(o, GroupOp::Delete { reason, .. } if is_replacement(*reason)));
        let mut out = Materialised {
            replaced: Vec::new(),
            created: Vec::new(),
            deleted_names: BTreeSet::new(),
        };
        let mut waves_record: Vec<Wave> = Vec::new();
        // Names are the smallest free index; `taken` only grows during a
        // plan, so every index below the last one handed out stays taken and
        // the search resumes there (it restarted at 0 for every machine:
        // quadratic, 5.9 s to plan 10,000 new machines).
        let mut next_index = 0u32;
        for (wi, wave) in sched.waves.iter().enumerate() {
            let slot = WaveSlot {
                number: Some(wi as u32 + 1),
                prev_wave: &prev_wave,
                rolling,
            };
            let mut this_wave = Vec::new();
            let mut record = Wave::default();
            let mut wave_report = WaveReport::default();
            for op in wave {
                match op {
                    GroupOp::Create {
                        failure_domain,
                        reason,
                    } => {
                        let name = self.next_machine_name(gm.g, &mut next_index);
                        let (id, created) =
                            self.create_machine(gm.g, &name, failure_domain, *reason, &slot);
                        this_wave.push(id);
                        record.create.push(name.clone());
                        wave_report.created.push(MachineDecision {
                            machine: name,
                            reason: *reason,
                        });
                        out.created.push(created);
                    }
                    GroupOp::Delete { name, reason } => {
                        let Some(r) = gm
                            .live
                            .iter()
                            .find(|r| r.attributes.as_machine().is_some_and(|m| &m.name == name))
                        else {
                            continue;
                        };
                        out.deleted_names.insert(name.clone());
                        record.delete.push(name.clone());
                        let (id, code) = self.delete_scheduled(gm, r, *reason, &slot);
                        wave_report.deleted.push(MachineDecision {
                            machine: name.clone(),
                            reason: code,
                        });
                        if let Some(id) = id {
                            this_wave.push(id);
                            if is_replacement(code) {
                                out.replaced.push((r.address.clone(), code));
                            }
                        }
                    }
                }
            }
            prev_wave = this_wave;
            waves_record.push(record);
            report.waves.push(wave_report);
        }
        if !waves_record.is_empty() {
            self.b.rollouts.push(Rollout {
                cluster: self.key.clone(),
                group: gm.label.clone(),
                waves: waves_record,
            });
        }
        out
    }

    /// The group's fixed name, or the smallest free `<prefix>-<index>` from
    /// `next_index` on; the name is taken.
    fn next_machine_name(&mut self, g: &MachineGroup, next_index: &mut u32) -> String {
        let name = match &g.fixed_name {
            Some(n) => n.clone(),
            None => {
                let mut i = *next_index;
                loop {
                    let n = g.machine_name(i);
                    i += 1;
                    if !self.b.taken.contains(&n) {
                        *next_index = i;
                        break n;
                    }
                }
            }
        };
        self.b.taken.insert(name.clone());
        name
    }

    /// The first control-plane machine of an uninitialised cluster runs
    /// `kubeadm init`; the others join.
    fn bootstrap_role(&mut self, g: &MachineGroup) -> BootstrapRole {
        if g.role == Role::ControlPlane && !self.initialized {
            self.initialized = true;
            BootstrapRole::Init
        } else if g.role == Role::ControlPlane {
            BootstrapRole::JoinControlPlane
        } else {
            BootstrapRole::JoinWorker
        }
    }

    /// Plan a new machine: its bootstrap data, then the machine. Returns the
    /// machine's step.
    fn create_machine(
        &mut self,
        g: &MachineGroup,
        name: &str,
        failure_domain: &Option<String>,
        reason: ReasonCode,
        slot: &WaveSlot<'_>,
    ) -> (usize, Created) {
        let dc = self.dc;
        let role = self.bootstrap_role(g);
        let (sha, api) = match role {
            BootstrapRole::Init => g
                .init_document
                .clone()
                .unwrap_or_else(|| g.join_document.clone()),
            _ => g.join_document.clone(),
        };
        if role != BootstrapRole::Init {
            self.joins_planned = true;
        }
        if let Some(doc) = self.b.desired.documents.get(&sha) {
            self.b.documents.insert(sha.clone(), doc.clone());
        }
        let m_addr = dc.address(ResourceKind::Machine, Some(name));
        let bs_addr = dc.address(ResourceKind::Bootstrap, Some(name));
        let bspec = Spec::Bootstrap(BootstrapSpec {
            machine: name.to_string(),
            role,
            // Through the recent values: the group's machines share them.
            kubeadm_api: Shared::recent(api.to_string()),
            sha256: Shared::recent(sha.clone()),
        });
        let pki = dc.address(ResourceKind::Pki, None);
        let network = dc.address(ResourceKind::Network, None);
        let loadbalancer = dc.address(ResourceKind::Loadbalancer, None);
        let mut bdeps = vec![pki, loadbalancer.clone()];
        if role != BootstrapRole::Init {
            bdeps.push(self.token_addr.clone());
        }
        let mut bs_step = ProtoStep::create(bs_addr.clone(), ProviderKind::Local, bspec, bdeps);
        bs_step.after.extend(slot.prev_wave.iter().copied());
        let bs_id = self.b.step(bs_step);
        let mspec = Spec::Machine(g.machine_spec(name, failure_domain));
        let mut mdeps = vec![bs_addr, network, loadbalancer];
        if role != BootstrapRole::Init {
            mdeps.push(self.token_addr.clone());
        }
        let mut ms = ProtoStep::create(m_addr.clone(), dc.provider, mspec.clone(), mdeps);
        ms.after.push(bs_id);
        ms.after.extend(slot.prev_wave.iter().copied());
        // A rollout gates each new machine; so does every control-plane
        // machine joining a running cluster (a plain scale-up included).
        ms.health_gate = slot.rolling || (g.role == Role::ControlPlane && self.was_initialized);
        if g.role == Role::ControlPlane {
            if let Some(p) = self.last_cp_step {
                ms.after.push(p);
            }
        }
        let id = self.b.step(ms);
        if g.role == Role::ControlPlane {
            self.last_cp_step = Some(id);
            if role == BootstrapRole::Init {
                self.init_step = Some(id);
            }
        } else {
            self.worker_step_ids.push(id);
            self.worker_step_ids.push(bs_id);
        }
        let created = Created {
            address: m_addr,
            reason,
            wave: slot.number,
            spec: mspec,
            sha,
        };
        (id, created)
    }

    /// Plan the delete of a machine the rollout scheduled. Returns the
    /// machine's step and the reason its change gives.
    fn delete_scheduled(
        &mut self,
        gm: &GroupMachines<'a>,
        r: &Resource,
        reason: ReasonCode,
        slot: &WaveSlot<'_>,
    ) -> (Option<usize>, ReasonCode) {
        let (text, code) = delete_reason(self.b, gm.g, r, reason);
        let cp_after = if gm.g.role == Role::ControlPlane {
            self.last_cp_step
        } else {
            None
        };
        let id = delete_machine(
            self.b,
            self.dc,
            r,
            code,
            text,
            Some(&gm.label),
            slot.number,
            Some((slot.prev_wave.to_vec(), cp_after)),
        );
        if let Some(id) = id {
            self.record_machine_step(gm.g.role, id);
        }
        (id, code)
    }
}
