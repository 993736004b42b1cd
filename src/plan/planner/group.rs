//! The machine-group step, itself a sequence of named sub-steps: finish
//! interrupted deletes, assess the machines in state, schedule the rollout
//! (`rollout.rs`), resume interrupted creates, materialise the waves
//! (`waves.rs`), pair replacements (`replacements.rs`), then update the
//! machines the rollout keeps.

use std::collections::BTreeSet;

use crate::desired::{self, MachineGroup};
use crate::manifest::{IntOrPercent, TriggerIf};
use crate::resource::{Observation, OwnerKind, Role, Spec};
use crate::state::{Resource, Status};

use super::super::rollout::{self, Existing, GroupOp, Schedule};
use super::super::{skew, Action, ReasonCode};
use super::cluster::ClusterPlanner;
use super::machines::{
    delete_machine, machine_change, machine_up_to_date, only_bootstrap_template_content_differs,
};
use super::report::GroupReport;
use super::{attribute_diff, PlanError, ProtoStep};

/// A group and its machines in state.
pub(super) struct GroupMachines<'a> {
    pub(super) g: &'a MachineGroup,
    /// `MachineDeployment/md-0`.
    pub(super) label: String,
    /// Machines whose delete a previous apply did not finish.
    pub(super) deleting: Vec<&'a Resource>,
    /// The others, in state order.
    pub(super) live: Vec<&'a Resource>,
}

/// Delete reasons that make a rollout (the new machines are health-gated,
/// the old ones are replacements).
pub(super) fn is_replacement(code: ReasonCode) -> bool {
    matches!(
        code,
        ReasonCode::Outdated | ReasonCode::Failed | ReasonCode::Drifted | ReasonCode::Requested
    )
}

/// Infrastructure machine templates are immutable in Cluster API (CAPD's and
/// CAPO's webhooks reject an edit): a template whose content differs from
/// what its machines were created from, under the same name, is refused
/// rather than rolled.
fn refuse_infra_template_edits(gm: &GroupMachines<'_>) -> Result<(), PlanError> {
    let g = gm.g;
    for r in &gm.live {
        let Some(m) = r.attributes.as_machine() else {
            continue;
        };
        if m.infra.kind == g.infra.kind
            && m.infra.name == g.infra.name
            && m.infra.spec != g.infra.spec
        {
            return Err(PlanError::Immutable {
                address: r.address.clone(),
                field: format!("the content of {} {:?}", g.infra.kind, g.infra.name),
                before: "what the machine was created from".into(),
                after: "edited in place".into(),
                help: format!(
                    "infrastructure machine templates are immutable in Cluster API (the provider's webhook rejects the edit): create a new {} with a new name and update the reference in {}; capi then rolls its machines. Or undo the edit",
                    g.infra.kind, g.owner
                ),
                file: g.infra_source.file.clone(),
                line: g.infra_source.line,
            });
        }
    }
    Ok(())
}

impl<'a> ClusterPlanner<'_, 'a> {
    pub(super) fn do_plan_group(
        &mut self,
        g: &'a MachineGroup,
        in_state: Vec<&'a Resource>,
    ) -> Result<GroupReport, PlanError> {
        let (deleting, live): (Vec<&Resource>, Vec<&Resource>) = in_state
            .into_iter()
            .partition(|r| r.status == Status::Deleting);
        let gm = GroupMachines {
            g,
            label: g.owner.to_string(),
            deleting,
            live,
        };
        refuse_infra_template_edits(&gm)?;
        // Where this group's steps and changes begin.
        let from = (self.b.steps.len(), self.b.changes.len());
        let mut report = GroupReport {
            group: gm.label.clone(),
            paused: g.paused,
            ..Default::default()
        };
        // Interrupted deletes are finished first: the machines still exist
        // until then, so the rollout's first wave waits for them.
        let interrupted = self.finish_interrupted_deletes(&gm, &mut report);
        let existing = self.assess(&gm, &mut report);
        let sched = rollout::schedule(g, &existing, &self.b.seed, report.remediation_allowed);
        if sched
            .waves
            .iter()
            .flatten()
            .any(|o| matches!(o, GroupOp::Create { .. }))
        {
            skew::check_join(self.dc, g)?;
        }
        self.warn_about_group(g, &existing, &sched);
        let resumed = self.resume_interrupted_creates(&gm, &sched, &mut report);
        let prev_wave: Vec<usize> = resumed.iter().chain(interrupted.iter()).copied().collect();
        let materialised = self.materialise_waves(&gm, &sched, prev_wave, &mut report);
        if g.role == Role::ControlPlane
            && (self.cp_rollout_end.is_some()
                || sched.waves.iter().flatten().any(|o| {
                    matches!(
                        o,
                        GroupOp::Delete {
                            reason: ReasonCode::Outdated | ReasonCode::Failed,
                            ..
                        }
                    )
                }))
        {
            self.cp_rollout_end = self.last_cp_step;
        }
        // Pair replaced machines with their replacements for review.
        report.replacements = self.b.pair_replacements(
            &materialised.replaced,
            &materialised.created,
            &gm.label,
            from,
        );
        self.update_kept_machines(&gm, &materialised.deleted_names, &mut report);
        for n in &sched.not_remediated {
            self.b.warnings.push(format!(
                "{}: machine {n} is unhealthy and is not replaced",
                g.owner
            ));
        }
        report.not_remediated = sched.not_remediated;
        Ok(report)
    }

    /// Finish the deletes a previous apply left unfinished. Returns their steps.
    fn finish_interrupted_deletes(
        &mut self,
        gm: &GroupMachines<'a>,
        report: &mut GroupReport,
    ) -> Vec<usize> {
        let mut ids: Vec<usize> = Vec::new();
        for r in &gm.deleting {
            let chain = if gm.g.role == Role::ControlPlane {
                Some((vec![], self.last_cp_step))
            } else {
                None
            };
            let id = delete_machine(
                self.b,
                self.dc,
                r,
                ReasonCode::Interrupted,
                "a previous apply was interrupted while deleting it".into(),
                Some(&gm.label),
                None,
                chain,
            );
            if let Some(m) = id.and(r.attributes.as_machine()) {
                report.finished_deletes.push(m.name.clone());
            }
            ids.extend(id);
            if gm.g.role == Role::Worker {
                self.worker_step_ids.extend(id);
            } else if id.is_some() {
                // Finishing a control-plane delete is part of its rollout:
                // workers wait for it (ControlPlaneIsStable).
                self.last_cp_step = id;
                self.cp_rollout_end = id;
            }
        }
        ids
    }

    /// What the rollout needs to know of each live machine: up to date,
    /// healthy; and whether MachineHealthChecks allow replacing the unhealthy.
    fn assess(&mut self, gm: &GroupMachines<'a>, report: &mut GroupReport) -> Vec<Existing> {
        let g = gm.g;
        let existing: Vec<Existing> = gm
            .live
            .iter()
            .map(|r| {
                let m = r.attributes.as_machine().expect("machine");
                // A pending create that is missing was simply never made: it is
                // resumed, not replaced.
                let unhealthy = r.status == Status::Failed
                    || match self.b.observation(&r.address) {
                        Some(Observation::Missing) => r.status != Status::Creating,
                        Some(Observation::Stopped(_) | Observation::Changed(_)) => true,
                        None => false,
                    };
                Existing {
                    name: m.name.clone(),
                    sequence: r.sequence,
                    failure_domain: m.failure_domain.clone(),
                    up_to_date: machine_up_to_date(g, r, self.b.opts.now_unix)
                        && !self.b.opts.replace.contains(&r.address),
                    unhealthy,
                    requested: self.b.opts.replace.contains(&r.address),
                }
            })
            .collect();
        let kept_old_content = gm
            .live
            .iter()
            .filter(|r| only_bootstrap_template_content_differs(g, r))
            .count();
        if kept_old_content > 0 {
            self.b.warnings.push(format!(
                "{} was edited in place: the {kept_old_content} existing machine(s) of {} keep the bootstrap data they were created with, and machines created from now on get the new content (as in Cluster API). To roll them, point {} at a new template, or set its rolloutAfter",
                g.bootstrap_template, g.owner, g.owner
            ));
        }
        report.unhealthy = existing
            .iter()
            .filter(|e| e.unhealthy)
            .map(|e| e.name.clone())
            .collect();
        report.remediation_allowed =
            self.remediation_allowed(g, report.unhealthy.len(), existing.len());
        existing
    }

    /// Does a MachineHealthCheck allow remediating `unhealthy` of `total` machines?
    fn remediation_allowed(&mut self, g: &MachineGroup, unhealthy: usize, total: usize) -> bool {
        if unhealthy == 0 {
            return true;
        }
        for hc in &self.dc.health_checks {
            let selects = hc.selector.iter().all(|(k, v)| g.labels.get(k) == Some(v));
            if !selects {
                continue;
            }
            let ok = match hc.trigger_if {
                TriggerIf::Always => true,
                TriggerIf::AtMost(limit) => {
                    let max = match limit {
                        IntOrPercent::Int(i) => i,
                        IntOrPercent::Percent(_) => limit.resolve(total as u32, false),
                    };
                    unhealthy as i64 <= max
                }
                TriggerIf::InRange(lo, hi) => (lo as usize..=hi as usize).contains(&unhealthy),
            };
            if !ok {
                self.b.warnings.push(format!(
                    "{}: {unhealthy} of {total} machines are unhealthy, more than MachineHealthCheck {:?} allows ({}); remediation is stopped until fewer are unhealthy or the check is changed",
                    g.owner,
                    hc.name,
                    match hc.trigger_if {
                        TriggerIf::AtMost(l) => format!("unhealthyLessThanOrEqualTo {l}"),
                        TriggerIf::InRange(lo, hi) => format!("unhealthyInRange [{lo}-{hi}]"),
                        TriggerIf::Always => "always".into(),
                    }
                ));
                return false;
            }
        }
        true
    }

    /// Paused groups, and outdated machines an OnDelete strategy keeps.
    fn warn_about_group(&mut self, g: &MachineGroup, existing: &[Existing], sched: &Schedule) {
        if g.paused {
            self.b.warnings.push(format!(
                "{} is paused: capi does not scale or roll it",
                g.owner
            ));
        }
        if g.role == Role::Worker && matches!(g.rollout, desired::Rollout::OnDelete) {
            // Machines this plan deletes anyway (--replace, scale-down) are
            // not the ones left outdated.
            let deleted: BTreeSet<&str> = sched
                .waves
                .iter()
                .flatten()
                .filter_map(|o| match o {
                    GroupOp::Delete { name, .. } => Some(name.as_str()),
                    _ => None,
                })
                .collect();
            let outdated = existing
                .iter()
                .filter(|e| !e.up_to_date && !e.unhealthy && !deleted.contains(e.name.as_str()))
                .count();
            if outdated > 0 && g.owner.kind == OwnerKind::MachineDeployment {
                self.b.warnings.push(format!("{}: {outdated} machine(s) are outdated; with the OnDelete strategy they are replaced only when you delete them", g.owner));
            }
        }
    }

    /// Interrupted creates of machines the rollout keeps are resumed first:
    /// the rollout counts them as available, so its first wave waits for
    /// them. Returns their steps.
    fn resume_interrupted_creates(
        &mut self,
        gm: &GroupMachines<'a>,
        sched: &Schedule,
        report: &mut GroupReport,
    ) -> Vec<usize> {
        let scheduled_deletes: BTreeSet<&str> = sched
            .waves
            .iter()
            .flatten()
            .filter_map(|o| match o {
                GroupOp::Delete { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let mut resumed: Vec<usize> = Vec::new();
        for r in gm.live.iter().filter(|r| r.status == Status::Creating) {
            let m = r.attributes.as_machine().expect("machine");
            if scheduled_deletes.contains(m.name.as_str()) {
                continue;
            }
            let mut c = machine_change(r, Action::Create, ReasonCode::Interrupted, "a previous apply was interrupted while creating it: capi will adopt the machine if it exists, or create it".into(), Some(&gm.label), None);
            c.before = None;
            c.after = Some(r.attributes.clone());
            self.b.change(c);
            let mut s = ProtoStep::create(
                r.address.clone(),
                r.provider,
                r.attributes.clone(),
                r.dependencies.clone(),
            );
            if gm.g.role == Role::ControlPlane {
                s.after.extend(self.last_cp_step);
            }
            let id = self.b.step(s);
            self.record_machine_step(gm.g.role, id);
            resumed.push(id);
            report.resumed_creates.push(m.name.clone());
        }
        resumed
    }

    /// Machines the rollout keeps: labels and annotations update in place;
    /// interrupted updates run again.
    fn update_kept_machines(
        &mut self,
        gm: &GroupMachines<'a>,
        deleted_names: &BTreeSet<String>,
        report: &mut GroupReport,
    ) {
        let g = gm.g;
        for r in &gm.live {
            let m = r.attributes.as_machine().expect("machine");
            if deleted_names.contains(&m.name) || r.status == Status::Creating {
                continue;
            }
            let desired_labels = {
                let mut l = g.labels.clone();
                if let Some(fd) = &m.failure_domain {
                    l.make_mut()
                        .insert("cluster.x-k8s.io/failure-domain".into(), fd.clone());
                }
                l
            };
            if m.identity == g.machine_identity(&m.failure_domain)
                && (m.labels != desired_labels || m.annotations != g.annotations)
                && r.status != Status::Failed
            {
                let mut new = m.clone();
                new.labels = desired_labels;
                new.annotations = g.annotations.clone();
                let spec = Spec::Machine(new);
                let mut c = machine_change(
                    r,
                    Action::Update,
                    ReasonCode::InPlace,
                    "machine labels or annotations changed: updated in place, the machine is kept"
                        .into(),
                    Some(&gm.label),
                    None,
                );
                c.after = Some(spec.clone());
                c.attributes = attribute_diff(Some(&r.attributes), Some(&spec));
                self.b.change(c);
                self.b.step(ProtoStep::update(
                    r.address.clone(),
                    r.provider,
                    spec,
                    r.dependencies.clone(),
                ));
                report.updated_in_place.push(m.name.clone());
            } else if r.status == Status::Updating {
                let c = machine_change(
                    r,
                    Action::Update,
                    ReasonCode::Interrupted,
                    "a previous apply was interrupted while updating it".into(),
                    Some(&gm.label),
                    None,
                );
                self.b.change(c);
                self.b.step(ProtoStep::update(
                    r.address.clone(),
                    r.provider,
                    r.attributes.clone(),
                    r.dependencies.clone(),
                ));
                report.resumed_updates.push(m.name.clone());
            } else {
                report.kept.push(m.name.clone());
            }
        }
    }
}
