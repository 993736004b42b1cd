//! The planner's step reports, checked on small clusters: what each step
//! decided must match the plan it produced.

use crate::desired::Desired;
use crate::plan::simulate::simulate;
use crate::resource::{Address, Observation};
use crate::state::{State, Status};

use super::super::{Action, Change, Op, Operation, Plan, ReasonCode};
use super::*;

/// 2030-01-01T00:00:00Z.
const NOW: i64 = 1_893_456_000;

struct Cluster {
    version: &'static str,
    worker_version: &'static str,
    cp: u32,
    workers: u32,
    worker_labels: &'static str,
    paused: bool,
    with_workers: bool,
    health_check: Option<&'static str>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            version: "v1.31.2",
            worker_version: "v1.31.2",
            cp: 3,
            workers: 2,
            worker_labels: "{}",
            paused: false,
            with_workers: true,
            health_check: None,
        }
    }
}

impl Cluster {
    fn yaml(&self) -> String {
        let mut s = format!(
            r#"apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {{name: t}}
spec:
  paused: {paused}
  controlPlaneRef: {{apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: t-cp}}
  infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevCluster, name: t}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata: {{name: t}}
spec: {{backend: {{inMemory: {{}}}}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {{name: t-cp}}
spec:
  replicas: {cp}
  version: {version}
  machineTemplate:
    spec:
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: t-m}}
  kubeadmConfigSpec:
    clusterConfiguration: {{encryptionAlgorithm: ECDSA-P256}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {{name: t-m}}
spec: {{template: {{spec: {{backend: {{inMemory: {{}}}}}}}}}}
"#,
            paused = self.paused,
            cp = self.cp,
            version = self.version,
        );
        if self.with_workers {
            s.push_str(&format!(
                r#"---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {{name: t-w}}
spec: {{template: {{spec: {{}}}}}}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {{name: t-md}}
spec:
  clusterName: t
  replicas: {workers}
  template:
    metadata: {{labels: {labels}}}
    spec:
      clusterName: t
      version: {worker_version}
      bootstrap: {{configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: t-w}}}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: t-m}}
"#,
                workers = self.workers,
                labels = self.worker_labels,
                worker_version = self.worker_version,
            ));
        }
        if let Some(trigger) = self.health_check {
            s.push_str(&format!(
                r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineHealthCheck
metadata: {{name: t-mhc}}
spec:
  clusterName: t
  selector: {{matchLabels: {{cluster.x-k8s.io/deployment-name: t-md}}}}
  remediation: {{triggerIf: {trigger}}}
"#
            ));
        }
        s
    }

    fn desired(&self) -> Desired {
        let m = crate::manifest::load_str("t.yaml", &self.yaml(), &Default::default()).unwrap();
        crate::desired::build(&m, &Default::default()).unwrap()
    }
}

fn opts() -> PlanOptions {
    PlanOptions {
        now_unix: NOW,
        ..Default::default()
    }
}

fn planned(desired: &Desired, state: &State, opts: &PlanOptions) -> (Plan, PlanReport) {
    let (plan, report) = plan_with_report(desired, state, opts).unwrap();
    assert_eq!(
        plan,
        super::plan(desired, state, opts).unwrap(),
        "plan_with_report plans as plan does"
    );
    (plan, report)
}

/// The state after applying `c` to an empty state an hour ago.
fn applied(c: &Cluster) -> State {
    let (plan, _) = planned(&c.desired(), &State::empty(), &opts());
    simulate(&State::empty(), &plan, NOW - 3600)
}

fn steps(report: &PlanReport) -> &ClusterSteps {
    report.cluster("t").unwrap().steps().expect("planned")
}

fn names(decisions: impl Iterator<Item = MachineDecision>) -> Vec<String> {
    decisions.map(|d| d.machine).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Machine names of a group in `state`, oldest first.
fn machines_of(state: &State, group_prefix: &str) -> Vec<String> {
    let mut ms: Vec<_> = state
        .resources
        .iter()
        .filter_map(|r| {
            r.attributes
                .as_machine()
                .map(|m| (r.sequence, m.name.clone()))
        })
        .filter(|(_, n)| n.starts_with(group_prefix))
        .collect();
    ms.sort();
    ms.into_iter().map(|(_, n)| n).collect()
}

fn address(name: &str) -> Address {
    name.parse().unwrap()
}

/// The executor's copy of a plan is the plan with its review shed, field
/// for field (a field added to `Change` or `Plan` must be carried over).
#[test]
fn the_copy_for_execution_is_the_plan_without_its_review() {
    let c = Cluster::default();
    let upgraded = Cluster {
        version: "v1.32.0",
        worker_version: "v1.32.0",
        ..Cluster::default()
    };
    for (desired, state) in [
        (c.desired(), State::empty()),
        (upgraded.desired(), applied(&c)),
    ] {
        let (plan, _) = planned(&desired, &state, &opts());
        assert!(plan
            .changes
            .iter()
            .any(|c| c.part_of.is_some() || c.before.is_some()));
        let mut shed = plan.clone();
        shed.shed_review();
        assert_eq!(plan.for_execution(), shed);
    }
}

#[test]
fn fresh_cluster_creates_everything_one_control_plane_machine_at_a_time() {
    let (plan, report) = planned(&Cluster::default().desired(), &State::empty(), &opts());
    let s = steps(&report);
    assert_eq!(
        s.infrastructure.resources,
        vec![
            (address("t/pki"), Decision::Create(ReasonCode::New)),
            (address("t/network"), Decision::Create(ReasonCode::New)),
            (address("t/loadbalancer"), Decision::Create(ReasonCode::New)),
        ]
    );
    let cp = s.group("KubeadmControlPlane/t-cp").unwrap();
    assert_eq!(cp.waves.len(), 3, "one control-plane machine per wave");
    assert!(cp
        .created()
        .all(|d| d.reason == ReasonCode::ScaleUp && d.machine.starts_with("t-cp-")));
    let md = s.group("MachineDeployment/t-md").unwrap();
    assert_eq!(md.waves.len(), 1);
    assert_eq!(md.created().count(), 2);
    assert!(md.deleted().next().is_none() && md.replacements.is_empty());
    assert_eq!(s.token, TokenDecision::Create);
    assert_eq!(s.control_plane_gate, ControlPlaneGateReport::default());
    assert_eq!(s.removals, RemovalReport::default());
    // Every machine the report creates has a create step in the plan.
    for d in cp.created().chain(md.created()) {
        let a = address(&format!("t/machine/{}", d.machine));
        assert!(plan
            .steps
            .iter()
            .any(|st| st.address == a && st.op == Op::Create));
    }
}

#[test]
fn nothing_to_do_keeps_every_machine() {
    let c = Cluster::default();
    let state = applied(&c);
    let (plan, report) = planned(&c.desired(), &state, &opts());
    assert!(plan.is_empty());
    let s = steps(&report);
    assert!(s
        .infrastructure
        .resources
        .iter()
        .all(|(_, d)| *d == Decision::Keep));
    let md = s.group("MachineDeployment/t-md").unwrap();
    assert_eq!(
        sorted(md.kept.clone()),
        sorted(machines_of(&state, "t-md-"))
    );
    assert!(md.waves.is_empty());
    assert_eq!(s.token, TokenDecision::Keep);
}

#[test]
fn worker_upgrade_pairs_each_old_machine_with_a_new_one() {
    let before = Cluster {
        worker_version: "v1.31.1",
        ..Default::default()
    };
    let state = applied(&before);
    let after = Cluster::default();
    let (plan, report) = planned(&after.desired(), &state, &opts());
    let s = steps(&report);
    let md = s.group("MachineDeployment/t-md").unwrap();
    let old = machines_of(&state, "t-md-");
    let replaced: Vec<String> = md.replacements.iter().map(|r| r.old.clone()).collect();
    assert_eq!(
        sorted(replaced),
        sorted(old.clone()),
        "every old machine is replaced"
    );
    assert!(md
        .replacements
        .iter()
        .all(|r| r.reason == ReasonCode::Outdated && !old.contains(&r.new)));
    assert!(md.kept.is_empty());
    assert_eq!(
        names(md.deleted().cloned()).len(),
        old.len(),
        "the rollout deletes the old machines"
    );
    // The control plane does not roll, so nothing is gated on it.
    assert!(!s.control_plane_gate.control_plane_rolls);
    assert!(s
        .group("KubeadmControlPlane/t-cp")
        .unwrap()
        .waves
        .is_empty());
    // The plan reviews the same pairs as replacements.
    for r in &md.replacements {
        let c = plan
            .changes
            .iter()
            .find(|c| c.address == address(&format!("t/machine/{}", r.old)))
            .unwrap();
        assert_eq!(c.action, Action::Replace);
        assert_eq!(
            c.replacement,
            Some(address(&format!("t/machine/{}", r.new)))
        );
    }
}

/// A rollout that may not surge deletes each old machine before its
/// replacement exists, and the plan says so as Terraform does (`-/+`,
/// actions delete then create); one that surges creates first (`+/-`).
#[test]
fn a_rollout_without_surge_replaces_delete_first() {
    let state = applied(&Cluster {
        version: "v1.31.1",
        worker_version: "v1.31.1",
        ..Default::default()
    });
    let yaml = Cluster::default().yaml().replacen(
        "  replicas: 3\n",
        "  replicas: 3\n  rollout: {strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0}}}\n",
        1,
    );
    let m = crate::manifest::load_str("t.yaml", &yaml, &Default::default()).unwrap();
    let desired = crate::desired::build(&m, &Default::default()).unwrap();
    let (plan, _) = planned(&desired, &state, &opts());
    let replaced = |prefix: &str| -> Vec<&Change> {
        plan.changes
            .iter()
            .filter(|c| c.action == Action::Replace)
            .filter(|c| c.address.name().is_some_and(|n| n.starts_with(prefix)))
            .collect()
    };
    let cps = replaced("t-cp-");
    assert_eq!(cps.len(), 3, "every control-plane machine is replaced");
    for c in &cps {
        assert!(
            c.delete_first,
            "{} is deleted before its replacement",
            c.address
        );
        assert_eq!(c.shown().symbol(), "-/+");
        assert_eq!(c.shown().terraform_actions(), ["delete", "create"]);
    }
    // The MachineDeployment's default strategy (maxSurge 1) creates first.
    let workers = replaced("t-md-");
    assert_eq!(workers.len(), 2, "every worker is replaced");
    for c in &workers {
        assert!(!c.delete_first, "{} is replaced create-first", c.address);
        assert_eq!(c.shown().symbol(), "+/-");
        assert_eq!(c.shown().terraform_actions(), ["create", "delete"]);
    }
}

#[test]
fn control_plane_upgrade_gates_the_workers() {
    let before = Cluster {
        version: "v1.30.5",
        worker_version: "v1.30.5",
        ..Default::default()
    };
    let state = applied(&before);
    let after = Cluster {
        version: "v1.31.2",
        worker_version: "v1.31.2",
        ..Default::default()
    };
    let (_, report) = planned(&after.desired(), &state, &opts());
    let s = steps(&report);
    let cp = s.group("KubeadmControlPlane/t-cp").unwrap();
    assert_eq!(cp.replacements.len(), 3);
    assert!(cp
        .waves
        .iter()
        .all(|w| w.created.len() + w.deleted.len() == 1));
    assert!(s.control_plane_gate.control_plane_rolls);
    // Every worker step waits: each new machine's bootstrap data and
    // machine, and each delete.
    let md = s.group("MachineDeployment/t-md").unwrap();
    assert_eq!(md.replacements.len(), 2);
    assert_eq!(
        s.control_plane_gate.gated_worker_steps,
        2 * md.created().count() + md.deleted().count()
    );
}

#[test]
fn scale_down_deletes_without_replacing() {
    let state = applied(&Cluster::default());
    let c = Cluster {
        workers: 1,
        ..Default::default()
    };
    let (_, report) = planned(&c.desired(), &state, &opts());
    let md = steps(&report)
        .group("MachineDeployment/t-md")
        .unwrap()
        .clone();
    let deleted: Vec<MachineDecision> = md.deleted().cloned().collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].reason, ReasonCode::ScaleDown);
    assert!(md.replacements.is_empty());
    assert_eq!(md.kept.len(), 1);
    assert_eq!(steps(&report).token, TokenDecision::Keep);
}

#[test]
fn interrupted_operations_are_resumed_or_finished() {
    let c = Cluster {
        workers: 3,
        ..Default::default()
    };
    let mut state = applied(&c);
    let workers = machines_of(&state, "t-md-");
    for (name, status) in workers
        .iter()
        .zip([Status::Creating, Status::Deleting, Status::Updating])
    {
        let a = address(&format!("t/machine/{name}"));
        state
            .resources
            .iter_mut()
            .find(|r| r.address == a)
            .unwrap()
            .status = status;
    }
    let (_, report) = planned(&c.desired(), &state, &opts());
    let md = steps(&report).group("MachineDeployment/t-md").unwrap();
    assert_eq!(md.resumed_creates, vec![workers[0].clone()]);
    assert_eq!(md.finished_deletes, vec![workers[1].clone()]);
    assert_eq!(md.resumed_updates, vec![workers[2].clone()]);
    // The finished delete leaves a replica missing: the rollout creates one.
    assert_eq!(md.created().count(), 1);
    assert_eq!(md.created().next().unwrap().reason, ReasonCode::ScaleUp);
}

#[test]
fn label_changes_update_machines_in_place() {
    let state = applied(&Cluster::default());
    let c = Cluster {
        worker_labels: "{tier: web}",
        ..Default::default()
    };
    let (_, report) = planned(&c.desired(), &state, &opts());
    let md = steps(&report).group("MachineDeployment/t-md").unwrap();
    assert_eq!(
        sorted(md.updated_in_place.clone()),
        sorted(machines_of(&state, "t-md-"))
    );
    assert!(md.waves.is_empty() && md.kept.is_empty());
}

#[test]
fn the_token_rotates_when_it_expires_before_machines_join() {
    let state = applied(&Cluster::default());
    let c = Cluster {
        workers: 3,
        ..Default::default()
    };
    let expires = state
        .get(&address("t/token"))
        .unwrap()
        .observed
        .get("expires_unix")
        .and_then(|v| v.as_i64())
        .unwrap();
    let at = |now: i64| {
        let o = PlanOptions {
            now_unix: now,
            ..Default::default()
        };
        steps(&planned(&c.desired(), &state, &o).1).token
    };
    assert_eq!(at(expires - 86_400), TokenDecision::Keep);
    assert_eq!(
        at(expires - 60),
        TokenDecision::Rotate(TokenRotation::ExpiresSoon)
    );
    assert_eq!(
        at(expires + 60),
        TokenDecision::Rotate(TokenRotation::Expired)
    );
    // Nothing joins: an expired token is left alone.
    let o = PlanOptions {
        now_unix: expires + 60,
        ..Default::default()
    };
    let (_, report) = planned(&Cluster::default().desired(), &state, &o);
    assert_eq!(steps(&report).token, TokenDecision::Keep);
}

/// A group renamed in the manifests looks like one gone and one new: the
/// warning says how to keep the machines (`capi state mv`), when exactly
/// one new group of its kind came in.
#[test]
fn a_renamed_group_is_warned_with_the_state_mv_that_keeps_its_machines() {
    let state = applied(&Cluster::default());
    let renamed = |yaml: String| {
        let m = crate::manifest::load_str("t.yaml", &yaml, &Default::default()).unwrap();
        let desired = crate::desired::build(&m, &Default::default()).unwrap();
        planned(&desired, &state, &opts()).0.warnings
    };
    let one = Cluster::default()
        .yaml()
        .replace("metadata: {name: t-md}", "metadata: {name: t-workers}");
    let warnings = renamed(one.clone());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("MachineDeployment default/t-md is no longer in the manifests: its 2 machines will be destroyed; if it was renamed to t-workers, `capi state mv t/MachineDeployment/t-md t/MachineDeployment/t-workers`"),
        "{warnings:?}"
    );
    // Two new groups: which one is meant cannot be told.
    let md = &one[one
        .find("---\napiVersion: cluster.x-k8s.io/v1beta2\nkind: MachineDeployment")
        .unwrap()..];
    let two = format!("{one}{}", md.replace("t-workers", "t-more"));
    let warnings = renamed(two);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].ends_with("will be destroyed"), "{warnings:?}");
}

#[test]
fn removed_groups_and_clusters_are_deleted() {
    let state = applied(&Cluster::default());
    let without_workers = Cluster {
        with_workers: false,
        ..Default::default()
    };
    let (_, report) = planned(&without_workers.desired(), &state, &opts());
    let removed: Vec<String> = steps(&report)
        .removals
        .machines
        .iter()
        .map(|a| a.name().unwrap().to_string())
        .collect();
    assert_eq!(sorted(removed), sorted(machines_of(&state, "t-md-")));

    // Manifests that define no cluster at all are refused (they would
    // destroy every cluster); a cluster left out of them is removed.
    assert!(matches!(
        plan_with_report(&Desired::default(), &state, &opts()),
        Err(PlanError::NoClusters { count: 1, .. })
    ));
    let yaml = Cluster::default()
        .yaml()
        .replace("metadata: {name: ", "metadata: {namespace: other, name: ");
    let m = crate::manifest::load_str("o.yaml", &yaml, &Default::default()).unwrap();
    let another = crate::desired::build(&m, &Default::default()).unwrap();
    assert_eq!(another.clusters[0].id.key(), "other:t");
    let (plan, report) = planned(&another, &state, &opts());
    let ClusterDisposition::Removed { reason, deleted } = &report.cluster("t").unwrap().disposition
    else {
        panic!("the cluster is removed: {report:?}");
    };
    assert_eq!(*reason, ReasonCode::Removed);
    assert_eq!(deleted.len(), state.resources.len());
    assert_eq!(
        plan.summary.destroy,
        plan.reviewed_changes()
            .filter(|c| c.action == Action::Delete)
            .count()
    );
    // Workers go first.
    assert!(deleted[0].name().unwrap().starts_with("t-md-"));

    let destroy = PlanOptions {
        operation: Operation::Destroy,
        ..opts()
    };
    let (_, report) = planned(&Cluster::default().desired(), &state, &destroy);
    assert!(matches!(
        report.cluster("t").unwrap().disposition,
        ClusterDisposition::Removed {
            reason: ReasonCode::Destroy,
            ..
        }
    ));
}

#[test]
fn paused_clusters_are_left_alone() {
    let c = Cluster {
        paused: true,
        ..Default::default()
    };
    let (plan, report) = planned(&c.desired(), &State::empty(), &opts());
    assert!(plan.is_empty());
    assert_eq!(
        report.cluster("t").unwrap().disposition,
        ClusterDisposition::Paused
    );
}

#[test]
fn health_checks_stop_remediation_beyond_their_limit() {
    let c = Cluster {
        workers: 3,
        health_check: Some("{unhealthyLessThanOrEqualTo: 1}"),
        ..Default::default()
    };
    let state = applied(&c);
    let workers = machines_of(&state, "t-md-");
    let mut o = opts();
    for w in &workers[..2] {
        o.observations
            .insert(address(&format!("t/machine/{w}")), Observation::Missing);
    }
    let (plan, report) = planned(&c.desired(), &state, &o);
    let md = steps(&report).group("MachineDeployment/t-md").unwrap();
    assert_eq!(sorted(md.unhealthy.clone()), sorted(workers[..2].to_vec()));
    assert!(!md.remediation_allowed);
    assert_eq!(
        sorted(md.not_remediated.clone()),
        sorted(workers[..2].to_vec())
    );
    assert!(md.waves.is_empty());
    assert!(plan
        .warnings
        .iter()
        .any(|w| w.contains("remediation is stopped")));

    // One unhealthy machine is within the limit: it is replaced.
    let mut o = opts();
    o.observations.insert(
        address(&format!("t/machine/{}", workers[0])),
        Observation::Stopped("exited".into()),
    );
    let (_, report) = planned(&c.desired(), &state, &o);
    let md = steps(&report).group("MachineDeployment/t-md").unwrap();
    assert!(md.remediation_allowed);
    assert_eq!(md.replacements.len(), 1);
    assert_eq!(md.replacements[0].old, workers[0]);
    assert_eq!(md.replacements[0].reason, ReasonCode::Drifted);
}

#[test]
fn infrastructure_deleted_outside_capi_is_created_again() {
    let c = Cluster::default();
    let state = applied(&c);
    let mut o = opts();
    o.observations
        .insert(address("t/network"), Observation::Missing);
    let (_, report) = planned(&c.desired(), &state, &o);
    let infra = &steps(&report).infrastructure.resources;
    assert_eq!(infra[0], (address("t/pki"), Decision::Keep));
    assert_eq!(
        infra[1],
        (address("t/network"), Decision::Create(ReasonCode::Drifted))
    );

    let mut o = opts();
    o.replace = vec![address("t/loadbalancer")];
    let (_, report) = planned(&c.desired(), &state, &o);
    assert_eq!(
        steps(&report).infrastructure.resources[2].1,
        Decision::Replace(ReasonCode::Requested)
    );
}
