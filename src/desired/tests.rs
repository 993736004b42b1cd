//! The desired-state steps on small manifests: group order, standalone
//! control-plane Machines, health checks, the infrastructure decisions, and
//! rendering problems that leave a cluster out.

use super::*;

const CLUSTER: &str = r#"apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {name: d}
spec:
  controlPlaneEndpoint: {host: 10.0.0.9, port: 0}
  infrastructureRef: {apiGroup: infrastructure.cluster.x-k8s.io, kind: DockerCluster, name: d}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DockerCluster
metadata: {name: d}
spec:
  failureDomains:
    - {name: b, controlPlane: true}
    - {name: a, controlPlane: true}
    - {name: c, controlPlane: false}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DockerMachineTemplate
metadata: {name: d-m}
spec: {template: {spec: {}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfig
metadata: {name: d-cp}
spec: {}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {name: d-w}
spec: {template: {spec: {}}}
"#;

fn machine(name: &str, control_plane: bool) -> String {
    let labels = if control_plane {
        "{cluster.x-k8s.io/control-plane: \"\"}"
    } else {
        "{}"
    };
    format!(
        r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: Machine
metadata: {{name: {name}, labels: {labels}}}
spec:
  clusterName: d
  version: v1.31.2
  bootstrap: {{configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfig, name: d-cp}}}}
  infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DockerMachineTemplate, name: d-m}}
"#
    )
}

fn deployment(name: &str) -> String {
    format!(
        r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {{name: {name}}}
spec:
  clusterName: d
  replicas: 2
  template:
    spec:
      clusterName: d
      version: v1.31.2
      bootstrap: {{configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: d-w}}}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DockerMachineTemplate, name: d-m}}
"#
    )
}

fn build_text(text: &str, opts: &GraphOptions) -> Result<Desired, Vec<Problem>> {
    let m = crate::manifest::load_str("d.yaml", text, &Default::default()).unwrap();
    build(&m, opts)
}

#[test]
fn control_plane_machines_come_first_by_name_then_workers_in_manifest_order() {
    let text = [
        CLUSTER.to_string(),
        deployment("d-zz"),
        machine("d-cp-b", true),
        deployment("d-aa"),
        machine("d-cp-a", true),
        machine("d-solo", false),
    ]
    .concat();
    let d = build_text(&text, &Default::default()).unwrap();
    let c = &d.clusters[0];
    let owners: Vec<String> = c.groups.iter().map(|g| g.owner.to_string()).collect();
    assert_eq!(
        owners,
        [
            "Machine/d-cp-a",
            "Machine/d-cp-b",
            "MachineDeployment/d-zz",
            "MachineDeployment/d-aa",
            "Machine/d-solo"
        ]
    );
    // A standalone control-plane Machine renders init and join documents; a
    // standalone worker only a join document, and keeps its name.
    let cp = &c.groups[0];
    assert_eq!(cp.role, Role::ControlPlane);
    assert!(cp.init_document.is_some());
    assert_ne!(cp.init_document.as_ref().unwrap().0, cp.join_document.0);
    let solo = &c.groups[4];
    assert_eq!(solo.role, Role::Worker);
    assert!(solo.init_document.is_none());
    assert_eq!(solo.fixed_name.as_deref(), Some("d-solo"));
    assert_eq!(solo.rollout, Rollout::OnDelete);
    // Every rendered document is kept, by its hash.
    for g in &c.groups {
        assert!(d.documents.contains_key(&g.join_document.0));
    }
}

#[test]
fn infrastructure_decides_provider_network_endpoint_and_override() {
    let text = [CLUSTER.to_string(), machine("d-cp-a", true)].concat();
    let d = build_text(&text, &Default::default()).unwrap();
    let c = &d.clusters[0];
    assert_eq!(c.provider, ProviderKind::Docker);
    assert_eq!(c.network.name, "kind");
    assert_eq!(
        c.loadbalancer.fixed_endpoint.as_deref(),
        Some("10.0.0.9:6443"),
        "port 0 takes the API server port"
    );
    assert_eq!(c.network.infra, c.loadbalancer.infra);

    let opts = GraphOptions {
        provider_override: Some(ProviderKind::Sim),
        docker_network: "other".into(),
        default_options: [("capi.x-k8s.io/x".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let d = build_text(&text, &opts).unwrap();
    let c = &d.clusters[0];
    assert_eq!(c.provider, ProviderKind::Sim);
    assert_eq!(c.network.name, "other");
    assert_eq!(
        c.network
            .infra
            .options
            .get("capi.x-k8s.io/x")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        c.groups[0]
            .infra
            .options
            .get("capi.x-k8s.io/x")
            .map(String::as_str),
        Some("1")
    );
}

#[test]
fn health_checks_belong_to_their_cluster() {
    let mhc = |name: &str, cluster: &str| {
        format!(
            "---\napiVersion: cluster.x-k8s.io/v1beta2\nkind: MachineHealthCheck\nmetadata: {{name: {name}}}\nspec:\n  clusterName: {cluster}\n  selector: {{matchLabels: {{a: b}}}}\n  remediation: {{triggerIf: {{unhealthyLessThanOrEqualTo: 2}}}}\n"
        )
    };
    let text = [CLUSTER.to_string(), machine("d-cp-a", true), mhc("h1", "d")].concat();
    let d = build_text(&text, &Default::default()).unwrap();
    let hcs = &d.clusters[0].health_checks;
    assert_eq!(hcs.len(), 1);
    assert_eq!(hcs[0].name, "h1");
    assert_eq!(hcs[0].trigger_if, TriggerIf::AtMost(IntOrPercent::Int(2)));
}

#[test]
fn a_group_whose_version_cannot_be_rendered_is_reported_at_its_version() {
    let text = [CLUSTER.to_string(), machine("d-cp-a", true)]
        .concat()
        .replace("v1.31.2", "v1.20.1");
    let problems = build_text(&text, &Default::default()).unwrap_err();
    // Init and join are both rendered (and both refused): reported once.
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].message.starts_with("Machine \"d-cp-a\": "));
    assert!(problems[0].message.contains("v1.20.1"), "{problems:#?}");
    let line = text[..text.find("version: v1.20.1").unwrap()]
        .matches('\n')
        .count()
        + 1;
    assert_eq!(problems[0].pos.line as usize, line, "{problems:#?}");
}

#[test]
fn a_group_knows_its_machine_names_and_what_they_are_made_from() {
    let text = [
        CLUSTER.to_string(),
        machine("d-cp-a", true),
        deployment("d-md"),
        machine("d-solo", false),
    ]
    .concat();
    let d = build_text(&text, &Default::default()).unwrap();
    let (md, solo) = (&d.clusters[0].groups[1], &d.clusters[0].groups[2]);
    let name = md.machine_name(3);
    assert!(md.names(&name));
    assert!(!md.names(&format!("{}-x", md.name_prefix)));
    assert!(!md.names(&format!("{}3", md.name_prefix)));
    assert!(!md.names("d-md-zzzzz-0"));
    assert!(solo.names("d-solo") && !solo.names("d-solo-0"));
    // The spec the planner creates machines from, in a failure domain.
    let fd = Some("c".to_string());
    let spec = md.machine_spec(&name, &fd);
    assert_eq!(spec.name, name);
    assert_eq!(spec.identity, md.machine_identity(&fd));
    assert_ne!(spec.identity, md.identity);
    assert_eq!(
        spec.labels
            .get("cluster.x-k8s.io/failure-domain")
            .map(String::as_str),
        Some("c")
    );
}
