//! Property tests of the planner and executor on the simulator: plans respect
//! the graph order, and applying a plan then planning again gives no changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use capi::apply::{self, Cancel, Executor};
use capi::plan::{self, Op, Plan, PlanOptions};
use capi::provider::{sim::SimProvider, Provider};
use capi::resource::ProviderKind;
use capi::state::{State, StateStore};

#[derive(Debug, Clone)]
struct Md {
    replicas: u32,
    strategy: String,
    patch: u32,
}

#[derive(Debug, Clone)]
struct Shape {
    cp_replicas: u32,
    cp_surge: u32,
    cp_patch: u32,
    mds: Vec<Md>,
    pre_command: bool,
}

fn render(s: &Shape) -> String {
    let mut out = format!(
        r#"apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {{name: p}}
spec:
  controlPlaneRef: {{apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: p-cp}}
  infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevCluster, name: p}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata: {{name: p}}
spec: {{backend: {{inMemory: {{}}}}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {{name: p-cp}}
spec:
  replicas: {}
  version: v1.31.{}
  rollout: {{strategy: {{rollingUpdate: {{maxSurge: {}}}}}}}
  machineTemplate:
    spec:
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: p-m}}
  kubeadmConfigSpec:
    clusterConfiguration: {{encryptionAlgorithm: ECDSA-P256}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {{name: p-m}}
spec: {{template: {{spec: {{backend: {{inMemory: {{}}}}}}}}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {{name: p-w}}
spec:
  template:
    spec:
      preKubeadmCommands: [{}]
"#,
        s.cp_replicas,
        s.cp_patch,
        s.cp_surge,
        if s.pre_command {
            "\"echo changed\""
        } else {
            ""
        }
    );
    for (i, md) in s.mds.iter().enumerate() {
        out.push_str(&format!(
            r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {{name: p-md-{i}}}
spec:
  clusterName: p
  replicas: {}
  rollout: {{strategy: {}}}
  template:
    spec:
      clusterName: p
      version: v1.31.{}
      bootstrap: {{configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: p-w}}}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: p-m}}
"#,
            md.replicas, md.strategy, md.patch
        ));
    }
    out
}

fn strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{type: OnDelete}".to_string()),
        (0u32..3, 0u32..3)
            .prop_filter("not both 0", |(s, u)| s + u > 0)
            .prop_map(|(s, u)| format!(
                "{{type: RollingUpdate, rollingUpdate: {{maxSurge: {s}, maxUnavailable: {u}}}}}"
            )),
        Just(
            "{type: RollingUpdate, rollingUpdate: {maxSurge: \"50%\", maxUnavailable: \"25%\"}}"
                .to_string()
        ),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop_oneof![Just(1u32), Just(3u32)],
        0u32..2,
        0u32..2,
        proptest::collection::vec(
            (0u32..5, strategy(), 0u32..2).prop_map(|(replicas, strategy, patch)| Md {
                replicas,
                strategy,
                patch,
            }),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(cp_replicas, surge, cp_patch, mds, pre_command)| Shape {
            cp_replicas,
            cp_surge: if cp_replicas >= 3 { surge } else { 1 },
            cp_patch,
            // Workers may not be newer than the control plane.
            mds: mds
                .into_iter()
                .map(|m| Md {
                    patch: m.patch.min(cp_patch),
                    ..m
                })
                .collect(),
            pre_command,
        })
}

fn plan_for(text: &str, state: &State) -> Plan {
    let m = capi::manifest::load_str("p.yaml", text, &Default::default()).expect("manifest");
    let d = capi::desired::build(&m, &Default::default()).expect("graph");
    plan::plan(
        &d,
        state,
        &PlanOptions {
            now_unix: 1_900_000_000,
            ..Default::default()
        },
    )
    .expect("plan")
}

/// An independent check of the order: a create/update runs after the
/// creates of everything it depends on (transitively through `after`), and a
/// delete after the deletes of what depended on it.
fn assert_ordered(p: &Plan, state: &State) {
    let mut position = BTreeMap::new();
    for s in &p.steps {
        position.entry((s.address.clone(), s.op)).or_insert(s.id);
    }
    // Transitive predecessors.
    let mut preds: Vec<std::collections::BTreeSet<usize>> = Vec::new();
    for s in &p.steps {
        let mut set = std::collections::BTreeSet::new();
        for &a in &s.after {
            set.insert(a);
            set.extend(preds[a].iter().copied());
        }
        preds.push(set);
    }
    for s in &p.steps {
        if s.op == Op::Delete {
            for r in &state.resources {
                if r.dependencies.contains(&s.address) {
                    if let Some(&d) = position.get(&(r.address.clone(), Op::Delete)) {
                        assert!(
                            preds[s.id].contains(&d),
                            "{} deleted before its dependent {}",
                            s.address,
                            r.address
                        );
                    }
                }
            }
        } else {
            for dep in &s.dependencies {
                for op in [Op::Create, Op::Update] {
                    if let Some(&d) = position.get(&(dep.clone(), op)) {
                        assert!(
                            preds[s.id].contains(&d),
                            "{} does not wait for {} it depends on",
                            s.address,
                            dep
                        );
                    }
                }
            }
        }
    }
}

fn run(p: &Plan, state: State, dir: &std::path::Path) -> State {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sim: Arc<dyn Provider> =
            Arc::new(SimProvider::open(&dir.join("sim"), Some(std::time::Duration::ZERO)).unwrap());
        let exec = Executor {
            parallelism: std::num::NonZeroUsize::new(8).unwrap(),
            providers: BTreeMap::from([(ProviderKind::Sim, sim)]),
            secrets: Default::default(),
            cancel: Cancel::default(),
            events: None,
            health: None,
            clock: None,
        };
        let report = apply::apply(p, state, StateStore::new(dir.join("state.json")), exec).await;
        assert!(report.ok(), "apply failed: {:?}", report.failures);
        report.state
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn plans_are_ordered_and_apply_converges(before in shape(), after in shape()) {
        let dir = tempfile::tempdir().unwrap();
        let empty = State::empty();
        let p1 = plan_for(&render(&before), &empty);
        assert_ordered(&p1, &empty);
        let s1 = run(&p1, empty, dir.path());
        let again = plan_for(&render(&before), &s1);
        prop_assert!(again.is_empty(), "re-plan after apply is not empty:\n{}", plan::render::render_plan(&again, Default::default()));

        let p2 = plan_for(&render(&after), &s1);
        assert_ordered(&p2, &s1);
        let s2 = run(&p2, s1, dir.path());
        let again = plan_for(&render(&after), &s2);
        prop_assert!(again.is_empty(), "re-plan after the change is not empty:\n{}", plan::render::render_plan(&again, Default::default()));
        // Same inputs, same plan.
        prop_assert_eq!(serde_json::to_string(&plan_for(&render(&after), &s2)).unwrap(), serde_json::to_string(&again).unwrap());
    }
}
