//! Rollout scheduling for one machine group, following Cluster API:
//!
//! - KubeadmControlPlane: one operation at a time. While outdated machines
//!   exist, create a new one when fewer than `replicas + maxSurge` machines
//!   exist, otherwise delete an outdated one (unhealthy first, then the
//!   failure domain holding the most machines, then the oldest).
//! - MachineDeployment RollingUpdate: waves in which the total never exceeds
//!   `replicas + maxSurge` and available machines never drop below
//!   `replicas − maxUnavailable` (surge % rounds up, unavailable % rounds down;
//!   both 0 → unavailable 1).
//! - OnDelete (and MachineSets, standalone Machines): outdated machines stay
//!   until deleted; missing replicas are created from the current template.
//!
//! Unhealthy machines (failed, missing, stopped) are replaced when
//! remediation is allowed.

use std::cmp::Reverse;
use std::collections::VecDeque;

use crate::desired::{MachineGroup, Rollout};
use crate::manifest::{DeletionOrder, IntOrPercent};
use crate::resource::hash_json;

use super::ReasonCode;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Existing {
    pub(crate) name: String,
    pub(crate) sequence: u64,
    pub(crate) failure_domain: Option<String>,
    pub(crate) up_to_date: bool,
    /// Failed, missing or stopped: not available.
    pub(crate) unhealthy: bool,
    /// `--replace` names it: deleted (and replaced) whatever the strategy,
    /// as deleting a machine by hand is with OnDelete.
    pub(crate) requested: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GroupOp {
    Create {
        failure_domain: Option<String>,
        reason: ReasonCode,
    },
    Delete {
        name: String,
        reason: ReasonCode,
    },
}

/// Ordered waves: every operation of a wave waits for the whole previous wave.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Schedule {
    pub(crate) waves: Vec<Vec<GroupOp>>,
    /// Unhealthy machines left alone (remediation not allowed), for warnings.
    pub(crate) not_remediated: Vec<String>,
}

/// Resolved (maxSurge, maxUnavailable) for `replicas`.
pub(crate) fn fenceposts(
    surge: IntOrPercent,
    unavailable: IntOrPercent,
    replicas: u32,
) -> (u32, u32) {
    let s = surge.resolve(replicas, true).max(0) as u32;
    let mut u = unavailable.resolve(replicas, false).max(0) as u32;
    if s == 0 && u == 0 {
        u = 1;
    }
    (s, u.min(replicas.max(1)))
}

/// Order in which machines are deleted: unhealthy first, then by policy.
fn deletion_sort(machines: &mut [Existing], order: DeletionOrder, seed: &str) {
    machines.sort_by(|a, b| {
        let base = Reverse(a.unhealthy).cmp(&Reverse(b.unhealthy));
        base.then_with(|| match order {
            DeletionOrder::Oldest => a.sequence.cmp(&b.sequence),
            DeletionOrder::Newest => b.sequence.cmp(&a.sequence),
            DeletionOrder::Random => {
                let ka = hash_json(&(seed, &a.name));
                let kb = hash_json(&(seed, &b.name));
                ka.cmp(&kb)
            }
        })
        .then_with(|| a.name.cmp(&b.name))
    });
}

pub(crate) fn schedule(
    group: &MachineGroup,
    existing: &[Existing],
    seed: &str,
    remediate: bool,
) -> Schedule {
    let mut sched = Schedule::default();
    // Machines to get rid of: outdated ones, and unhealthy ones when allowed.
    let (old, current): (Vec<Existing>, Vec<Existing>) = existing
        .iter()
        .cloned()
        .partition(|m| !m.up_to_date || (m.unhealthy && remediate));
    if !remediate {
        sched.not_remediated = existing
            .iter()
            .filter(|m| m.unhealthy)
            .map(|m| m.name.clone())
            .collect();
    }
    if group.paused {
        return sched;
    }
    let machines = Machines {
        old,
        current,
        remediate,
    };
    match &group.rollout {
        Rollout::ControlPlane { max_surge } => {
            schedule_control_plane(group, machines, *max_surge, &mut sched)
        }
        Rollout::RollingUpdate {
            max_surge,
            max_unavailable,
        } => {
            let (surge, unavail) = fenceposts(*max_surge, *max_unavailable, group.replicas);
            schedule_rolling_update(group, machines, (surge, unavail), seed, &mut sched)
        }
        Rollout::OnDelete => schedule_on_delete(group, machines, seed, &mut sched),
    }
    sched
}

/// A group's machines, split by what the rollout does with them.
struct Machines {
    /// Outdated, or unhealthy and remediation allowed: to get rid of.
    old: Vec<Existing>,
    current: Vec<Existing>,
    remediate: bool,
}

/// Why an old machine goes: it is unhealthy (and may be remediated), or
/// outdated.
fn reason_for(m: &Existing, remediate: bool) -> ReasonCode {
    if m.unhealthy && remediate {
        ReasonCode::Failed
    } else {
        ReasonCode::Outdated
    }
}

/// KubeadmControlPlane: one operation per wave; create while below
/// `replicas + maxSurge` machines, otherwise delete an old machine.
fn schedule_control_plane(
    group: &MachineGroup,
    machines: Machines,
    max_surge: u32,
    sched: &mut Schedule,
) {
    let replicas = group.replicas;
    let fds = &group.failure_domains;
    let Machines {
        mut old,
        mut current,
        remediate,
    } = machines;
    let mut created: Vec<Option<String>> = Vec::new();
    // Old machines deleted, and creates that replace one: with maxSurge 0
    // the last old machine goes before its replacement is created, which is
    // still a replacement, not a scale-up.
    let (mut old_deleted, mut replacing) = (0u32, 0u32);
    loop {
        let up = current.len() as u32 + created.len() as u32;
        let total = up + old.len() as u32;
        let create = if !old.is_empty() {
            up < replicas && total < replicas + max_surge
        } else {
            up < replicas
        };
        if create {
            let fd = next_failure_domain(fds, &current, &created, &old);
            created.push(fd.clone());
            let replaces = !old.is_empty() || old_deleted > replacing;
            replacing += u32::from(replaces);
            sched.waves.push(vec![GroupOp::Create {
                failure_domain: fd,
                reason: if replaces {
                    ReasonCode::Outdated
                } else {
                    ReasonCode::ScaleUp
                },
            }]);
            continue;
        }
        let victim: Option<(Existing, ReasonCode)> = if !old.is_empty() {
            old_deleted += 1;
            pick_control_plane_victim(&mut old, &current).map(|m| {
                let r = reason_for(&m, remediate);
                (m, r)
            })
        } else if up > replicas {
            pick_control_plane_victim(&mut current, &[]).map(|m| (m, ReasonCode::ScaleDown))
        } else {
            None
        };
        match victim {
            Some((m, reason)) => sched.waves.push(vec![GroupOp::Delete {
                name: m.name,
                reason,
            }]),
            None => break,
        }
    }
}

/// MachineDeployment RollingUpdate: waves within the (surge, unavailable)
/// fenceposts.
fn schedule_rolling_update(
    group: &MachineGroup,
    machines: Machines,
    (surge, unavail): (u32, u32),
    seed: &str,
    sched: &mut Schedule,
) {
    let replicas = group.replicas;
    let Machines {
        mut old,
        mut current,
        remediate,
    } = machines;
    deletion_sort(&mut old, group.deletion_order, seed);
    // Plain scale-down of up-to-date machines ignores the fenceposts.
    let mut first_wave = Vec::new();
    if current.len() as u32 > replicas {
        deletion_sort(&mut current, group.deletion_order, seed);
        let extra = current.len() - replicas as usize;
        for m in current.drain(..extra) {
            first_wave.push(GroupOp::Delete {
                name: m.name,
                reason: ReasonCode::ScaleDown,
            });
        }
    }
    let mut up = current.len() as u32;
    let mut old: VecDeque<Existing> = old.into();
    let mut guard = 0;
    loop {
        guard += 1;
        let mut wave = std::mem::take(&mut first_wave);
        let total = up + old.len() as u32;
        let old_available = old.iter().filter(|m| !m.unhealthy).count() as u32;
        let available = up + old_available;
        let c = if up < replicas {
            (replicas - up).min((replicas + surge).saturating_sub(total))
        } else {
            0
        };
        // Unavailable old machines can always go; available ones only
        // while availability stays at or above replicas − unavailable.
        let min_available = replicas.saturating_sub(unavail);
        let mut budget = available.saturating_sub(min_available);
        let mut keep = VecDeque::new();
        let mut deleted = 0;
        while let Some(m) = old.pop_front() {
            if m.unhealthy {
                let reason = reason_for(&m, remediate);
                wave.push(GroupOp::Delete {
                    name: m.name,
                    reason,
                });
                deleted += 1;
            } else if budget > 0 {
                budget -= 1;
                let reason = reason_for(&m, remediate);
                wave.push(GroupOp::Delete {
                    name: m.name,
                    reason,
                });
                deleted += 1;
            } else {
                keep.push_back(m);
            }
        }
        old = keep;
        for _ in 0..c {
            wave.push(GroupOp::Create {
                failure_domain: group.failure_domains.first().cloned().flatten(),
                reason: if deleted > 0
                    || !old.is_empty()
                    || sched.waves.iter().flatten().any(|o| {
                        matches!(
                            o,
                            GroupOp::Delete {
                                reason: ReasonCode::Outdated | ReasonCode::Failed,
                                ..
                            }
                        )
                    }) {
                    ReasonCode::Outdated
                } else {
                    ReasonCode::ScaleUp
                },
            });
        }
        up += c;
        if wave.is_empty() || guard > 100_000 {
            break;
        }
        // Creates first within a wave, for readability.
        wave.sort_by_key(|op| matches!(op, GroupOp::Delete { .. }));
        sched.waves.push(wave);
    }
}

/// OnDelete (MachineSets, standalone Machines): outdated machines stay;
/// unhealthy ones are remediated; the replica count is restored in one wave.
fn schedule_on_delete(group: &MachineGroup, machines: Machines, seed: &str, sched: &mut Schedule) {
    let replicas = group.replicas;
    let (unhealthy, keep_old): (Vec<Existing>, Vec<Existing>) = machines
        .old
        .into_iter()
        .partition(|m| m.unhealthy && machines.remediate);
    // `--replace` is OnDelete's "delete the machine": the set then creates
    // its replacement.
    let (requested, keep_old): (Vec<Existing>, Vec<Existing>) =
        keep_old.into_iter().partition(|m| m.requested);
    let mut wave = Vec::new();
    for m in &unhealthy {
        wave.push(GroupOp::Delete {
            name: m.name.clone(),
            reason: ReasonCode::Failed,
        });
    }
    for m in &requested {
        wave.push(GroupOp::Delete {
            name: m.name.clone(),
            reason: ReasonCode::Outdated,
        });
    }
    let mut remaining: Vec<Existing> = keep_old;
    let mut up = machines.current;
    let total = (remaining.len() + up.len()) as u32;
    if total > replicas {
        // Scale down: outdated (older MachineSets) first.
        deletion_sort(&mut remaining, group.deletion_order, seed);
        deletion_sort(&mut up, group.deletion_order, seed);
        let mut extra = (total - replicas) as usize;
        for m in remaining.drain(..extra.min(remaining.len())) {
            wave.push(GroupOp::Delete {
                name: m.name,
                reason: ReasonCode::ScaleDown,
            });
            extra -= 1;
        }
        for m in up.drain(..extra.min(up.len())) {
            wave.push(GroupOp::Delete {
                name: m.name,
                reason: ReasonCode::ScaleDown,
            });
        }
    } else {
        for _ in 0..(replicas - total) {
            wave.push(GroupOp::Create {
                failure_domain: group.failure_domains.first().cloned().flatten(),
                reason: if !unhealthy.is_empty() {
                    ReasonCode::Failed
                } else if !requested.is_empty() {
                    ReasonCode::Outdated
                } else {
                    ReasonCode::ScaleUp
                },
            });
        }
    }
    if wave.is_empty() {
        return;
    }
    wave.sort_by_key(|op| matches!(op, GroupOp::Create { .. }));
    // A fixed name (standalone Machine) must be deleted before it is created
    // again: split into two waves.
    if group.fixed_name.is_some()
        && wave.iter().any(|o| matches!(o, GroupOp::Delete { .. }))
        && wave.iter().any(|o| matches!(o, GroupOp::Create { .. }))
    {
        let (d, c): (Vec<GroupOp>, Vec<GroupOp>) = wave
            .into_iter()
            .partition(|o| matches!(o, GroupOp::Delete { .. }));
        sched.waves.push(d);
        sched.waves.push(c);
    } else {
        sched.waves.push(wave);
    }
}

/// KCP scale-up placement: the failure domain with the fewest up-to-date
/// machines, then the fewest machines, then the first by name.
fn next_failure_domain(
    fds: &[Option<String>],
    current: &[Existing],
    created: &[Option<String>],
    old: &[Existing],
) -> Option<String> {
    fds.iter()
        .min_by_key(|fd| {
            let up = current.iter().filter(|m| &m.failure_domain == *fd).count()
                + created.iter().filter(|c| c == fd).count();
            let all = up + old.iter().filter(|m| &m.failure_domain == *fd).count();
            (up, all)
        })
        .cloned()
        .flatten()
}

/// KCP scale-down selection among `eligible` (removed from it): unhealthy
/// first; then the failure domain with the most machines (counting `others`
/// too); then the oldest.
fn pick_control_plane_victim(
    eligible: &mut Vec<Existing>,
    others: &[Existing],
) -> Option<Existing> {
    if eligible.is_empty() {
        return None;
    }
    let any_unhealthy = eligible.iter().any(|m| m.unhealthy);
    let count_in = |fd: &Option<String>| {
        eligible.iter().filter(|m| &m.failure_domain == fd).count()
            + others.iter().filter(|m| &m.failure_domain == fd).count()
    };
    let idx = eligible
        .iter()
        .enumerate()
        .filter(|(_, m)| !any_unhealthy || m.unhealthy)
        .max_by_key(|(_, m)| {
            (
                count_in(&m.failure_domain),
                Reverse(m.sequence),
                Reverse(m.name.clone()),
            )
        })
        .map(|(i, _)| i)?;
    Some(eligible.remove(idx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{MachineGroup, Source};
    use crate::resource::{Backend, OwnerKind, Version};
    use crate::resource::{InfraSpec, Owner, Role};

    pub(crate) fn group(replicas: u32, rollout: Rollout, order: DeletionOrder) -> MachineGroup {
        MachineGroup {
            owner: Owner {
                kind: OwnerKind::MachineDeployment,
                name: "md".into(),
            },
            role: Role::Worker,
            replicas,
            version: Version::parse("v1.31.0").unwrap(),
            identity: "new".into(),
            name_prefix: "md-new".into(),
            fixed_name: None,
            failure_domains: vec![None],
            infra: InfraSpec {
                kind: "DevMachineTemplate".into(),
                name: "t".into(),
                backend: Backend::InMemory,
                spec: serde_json::json!({}),
                options: Default::default(),
            }
            .into(),
            bootstrap_template: "KubeadmConfigTemplate/t".into(),
            init_document: None,
            join_document: ("x".into(), "kubeadm.k8s.io/v1beta4"),
            rollout,
            deletion_order: order,
            topology: None,
            labels: Default::default(),
            annotations: Default::default(),
            paused: false,
            source: Source {
                file: "f".into(),
                line: 1,
            },
            infra_source: Source {
                file: "f".into(),
                line: 1,
            },
            rollout_after: None,
        }
    }

    fn old(n: usize) -> Vec<Existing> {
        (0..n)
            .map(|i| Existing {
                name: format!("old-{i}"),
                sequence: i as u64,
                failure_domain: None,
                up_to_date: false,
                unhealthy: false,
                requested: false,
            })
            .collect()
    }

    /// Render waves compactly: "+2 -1 | +1 -2".
    fn shape(s: &Schedule) -> String {
        s.waves
            .iter()
            .map(|w| {
                let c = w
                    .iter()
                    .filter(|o| matches!(o, GroupOp::Create { .. }))
                    .count();
                let d = w
                    .iter()
                    .filter(|o| matches!(o, GroupOp::Delete { .. }))
                    .count();
                match (c, d) {
                    (0, d) => format!("-{d}"),
                    (c, 0) => format!("+{c}"),
                    (c, d) => format!("+{c} -{d}"),
                }
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    #[test]
    fn kcp_surge_one_and_zero() {
        let g = group(
            3,
            Rollout::ControlPlane { max_surge: 1 },
            DeletionOrder::Oldest,
        );
        assert_eq!(
            shape(&schedule(&g, &old(3), "s", true)),
            "+1 | -1 | +1 | -1 | +1 | -1"
        );
        let g0 = group(
            3,
            Rollout::ControlPlane { max_surge: 0 },
            DeletionOrder::Oldest,
        );
        assert_eq!(
            shape(&schedule(&g0, &old(3), "s", true)),
            "-1 | +1 | -1 | +1 | -1 | +1"
        );
        // Oldest first.
        let s = schedule(&g, &old(3), "s", true);
        assert_eq!(
            s.waves[1],
            vec![GroupOp::Delete {
                name: "old-0".into(),
                reason: ReasonCode::Outdated
            }]
        );
    }

    #[test]
    fn md_surge_two_unavailable_one() {
        let g = group(
            5,
            Rollout::RollingUpdate {
                max_surge: IntOrPercent::Int(2),
                max_unavailable: IntOrPercent::Int(1),
            },
            DeletionOrder::Oldest,
        );
        assert_eq!(
            shape(&schedule(&g, &old(5), "s", true)),
            "+2 -1 | +1 -2 | +2 -1 | -1"
        );
    }

    #[test]
    fn md_percent_fenceposts() {
        assert_eq!(
            fenceposts(IntOrPercent::Percent(25), IntOrPercent::Percent(25), 5),
            (2, 1)
        );
        assert_eq!(
            fenceposts(IntOrPercent::Int(0), IntOrPercent::Int(0), 5),
            (0, 1)
        );
        assert_eq!(
            fenceposts(IntOrPercent::Percent(10), IntOrPercent::Percent(0), 100),
            (10, 0)
        );
    }

    #[test]
    fn md_default_one_at_a_time() {
        let g = group(
            3,
            Rollout::RollingUpdate {
                max_surge: IntOrPercent::Int(1),
                max_unavailable: IntOrPercent::Int(0),
            },
            DeletionOrder::Oldest,
        );
        assert_eq!(
            shape(&schedule(&g, &old(3), "s", true)),
            "+1 | -1 | +1 | -1 | +1 | -1"
        );
    }

    #[test]
    fn scale_up_and_down() {
        let g = group(
            5,
            Rollout::RollingUpdate {
                max_surge: IntOrPercent::Int(1),
                max_unavailable: IntOrPercent::Int(0),
            },
            DeletionOrder::Newest,
        );
        let mut cur = old(3);
        cur.iter_mut().for_each(|m| m.up_to_date = true);
        assert_eq!(shape(&schedule(&g, &cur, "s", true)), "+2");
        let g2 = group(1, g.rollout.clone(), DeletionOrder::Newest);
        let s = schedule(&g2, &cur, "s", true);
        assert_eq!(shape(&s), "-2");
        let names: Vec<_> = s.waves[0]
            .iter()
            .map(|o| match o {
                GroupOp::Delete { name, .. } => name.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(names, vec!["old-2", "old-1"]);
    }

    #[test]
    fn on_delete_keeps_outdated() {
        let g = group(3, Rollout::OnDelete, DeletionOrder::Random);
        assert_eq!(shape(&schedule(&g, &old(3), "s", true)), "");
        assert_eq!(shape(&schedule(&g, &old(2), "s", true)), "+1");
    }
}
