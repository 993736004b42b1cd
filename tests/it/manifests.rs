//! Reading manifests: upstream fixtures, one test per validation rule (file,
//! line, message, help), variables.

use capi::manifest::{self, ManifestError, Problem, Variables};

use crate::common::*;

/// A valid v1beta2 cluster; each test breaks one thing in it.
pub const BASE: &str = r#"apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata:
  name: c1
spec:
  controlPlaneRef:
    apiGroup: controlplane.cluster.x-k8s.io
    kind: KubeadmControlPlane
    name: c1-cp
  infrastructureRef:
    apiGroup: infrastructure.cluster.x-k8s.io
    kind: DevCluster
    name: c1
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata:
  name: c1
spec:
  backend:
    inMemory: {}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata:
  name: c1-cp
spec:
  replicas: 3
  version: v1.31.2
  machineTemplate:
    spec:
      infrastructureRef:
        apiGroup: infrastructure.cluster.x-k8s.io
        kind: DevMachineTemplate
        name: c1-machines
  kubeadmConfigSpec: {}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata:
  name: c1-machines
spec:
  template:
    spec:
      backend:
        inMemory: {}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata:
  name: c1-md
spec:
  clusterName: c1
  replicas: 2
  template:
    spec:
      clusterName: c1
      version: v1.31.2
      bootstrap:
        configRef:
          apiGroup: bootstrap.cluster.x-k8s.io
          kind: KubeadmConfigTemplate
          name: c1-md
      infrastructureRef:
        apiGroup: infrastructure.cluster.x-k8s.io
        kind: DevMachineTemplate
        name: c1-machines
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata:
  name: c1-md
spec:
  template:
    spec: {}
"#;

fn load(text: &str) -> Result<manifest::Manifest, ManifestError> {
    manifest::load_str("cluster.yaml", text, &Variables::new())
}

/// Load, expecting problems; return the errors.
fn errors(text: &str) -> Vec<Problem> {
    match load(text) {
        Err(ManifestError::Invalid { problems, .. }) => {
            problems.into_iter().filter(|p| p.is_error()).collect()
        }
        Err(other) => panic!("expected validation problems, got {other}"),
        Ok(_) => panic!("expected validation problems, the manifests loaded"),
    }
}

/// Line (1-based) of the first line containing `needle` after `after`.
fn line_of(text: &str, needle: &str, after: &str) -> u32 {
    let start = text.find(after).expect("anchor");
    let idx = start + text[start..].find(needle).expect("needle");
    text[..idx].matches('\n').count() as u32 + 1
}

fn one(text: &str) -> Problem {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected exactly one problem, got {e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn base_is_valid() {
    let m = load(BASE).unwrap();
    assert_eq!(m.objects.len(), 6);
    assert!(m.warnings.is_empty());
}

#[test]
fn upstream_fixtures_load_unchanged() {
    let mut vars = Variables::new();
    for (k, v) in [
        ("CLUSTER_NAME", "capo"),
        ("OPENSTACK_CLOUD_CACERT_B64", "Y2E="),
        ("OPENSTACK_CLOUD_YAML_B64", "Y2xvdWRzOiB7fQ=="),
        ("WORKER_MACHINE_COUNT", "2"),
        ("OPENSTACK_FAILURE_DOMAIN", "nova"),
        ("KUBERNETES_VERSION", "v1.31.2"),
        ("CONTROL_PLANE_MACHINE_COUNT", "3"),
        ("OPENSTACK_EXTERNAL_NETWORK_ID", "ext"),
        ("OPENSTACK_CLOUD", "devcloud"),
        ("OPENSTACK_DNS_NAMESERVERS", "8.8.8.8"),
        ("OPENSTACK_CONTROL_PLANE_MACHINE_FLAVOR", "m1.small"),
        ("OPENSTACK_NODE_MACHINE_FLAVOR", "m1.small"),
        ("OPENSTACK_IMAGE_NAME", "tiny"),
        ("OPENSTACK_IMAGE_NAME_UPGRADE_FROM", "tiny"),
        ("OPENSTACK_SSH_KEY_NAME", "key"),
    ] {
        vars.set(k, v);
    }
    let cases = [
        (
            "fixtures/upstream/cluster-api/simple-cluster.yaml",
            7,
            Variables::new(),
        ),
        (
            "fixtures/upstream/cluster-api-provider-openstack/cluster-template.yaml",
            8,
            vars.clone(),
        ),
        (
            "fixtures/upstream/cluster-api-provider-openstack/cluster-template-capi-v1beta1.yaml",
            8,
            vars.clone(),
        ),
    ];
    for (rel, objects, vars) in cases {
        let Some(path) = shared(rel) else { continue };
        let sources = manifest::read_sources(&[path], &mut std::io::empty()).unwrap();
        let m = match manifest::load(sources, &vars) {
            Ok(m) => m,
            Err(ManifestError::Invalid { problems, .. }) => panic!("{rel}: {problems:#?}"),
            Err(e) => panic!("{rel}: {e}"),
        };
        assert_eq!(m.objects.len(), objects, "{rel}");
        assert!(m.warnings.is_empty(), "{rel}: {:?}", m.warnings);
        // And they build a graph (rendering every bootstrap document).
        let d = capi::desired::build(&m, &Default::default())
            .unwrap_or_else(|p| panic!("{rel}: {p:#?}"));
        assert_eq!(d.clusters.len(), 1);
    }
}

#[test]
fn v1beta1_and_v1beta2_normalise_to_the_same_identity() {
    // The same cluster written in both generations hashes the same.
    let Some(b2) = shared("fixtures/upstream/cluster-api-provider-openstack/cluster-template.yaml")
    else {
        return;
    };
    let Some(b1) = shared(
        "fixtures/upstream/cluster-api-provider-openstack/cluster-template-capi-v1beta1.yaml",
    ) else {
        return;
    };
    let _ = (b1, b2);
    let v2 = BASE.replace("  kubeadmConfigSpec: {}", "  kubeadmConfigSpec:\n    clusterConfiguration:\n      apiServer:\n        extraArgs:\n          - name: b\n            value: \"2\"\n          - name: a\n            value: \"1\"");
    let v1 = BASE
        .replace("controlplane.cluster.x-k8s.io/v1beta2\nkind: KubeadmControlPlane", "controlplane.cluster.x-k8s.io/v1beta1\nkind: KubeadmControlPlane")
        .replace("  machineTemplate:\n    spec:\n      infrastructureRef:\n        apiGroup: infrastructure.cluster.x-k8s.io\n        kind: DevMachineTemplate", "  machineTemplate:\n    infrastructureRef:\n      apiVersion: infrastructure.cluster.x-k8s.io/v1beta2\n      kind: DevMachineTemplate")
        .replace("        name: c1-machines\n  kubeadmConfigSpec: {}", "      name: c1-machines\n  kubeadmConfigSpec:\n    clusterConfiguration:\n      apiServer:\n        extraArgs:\n          a: \"1\"\n          b: \"2\"");
    let d1 = capi::desired::build(&load(&v1).unwrap(), &Default::default()).unwrap();
    let d2 = capi::desired::build(&load(&v2).unwrap(), &Default::default()).unwrap();
    // v1beta1 maps are sorted by key (as Go marshals them); the v1beta2 list
    // keeps its order: these two differ in order, so compare against a sorted list.
    let v2_sorted = v2.replace("          - name: b\n            value: \"2\"\n          - name: a\n            value: \"1\"", "          - name: a\n            value: \"1\"\n          - name: b\n            value: \"2\"");
    let d2s = capi::desired::build(&load(&v2_sorted).unwrap(), &Default::default()).unwrap();
    assert_eq!(
        d1.clusters[0].groups[0].identity,
        d2s.clusters[0].groups[0].identity
    );
    assert_ne!(
        d2.clusters[0].groups[0].identity,
        d2s.clusters[0].groups[0].identity
    );
}

#[test]
fn explicit_defaults_equal_implicit_ones() {
    let explicit = BASE
        .replace("  replicas: 2\n  template:", "  replicas: 2\n  rollout:\n    strategy:\n      type: RollingUpdate\n      rollingUpdate:\n        maxSurge: 1\n        maxUnavailable: 0\n  deletion:\n    order: Random\n  template:")
        .replace("spec:\n  controlPlaneRef:", "spec:\n  clusterNetwork:\n    apiServerPort: 6443\n    serviceDomain: cluster.local\n    services:\n      cidrBlocks: [\"10.96.0.0/12\"]\n  controlPlaneRef:")
        .replace("    spec: {}\n", "    spec:\n      files: []\n      format: cloud-config\n      preKubeadmCommands: []\n");
    let a = capi::desired::build(&load(BASE).unwrap(), &Default::default()).unwrap();
    let b = capi::desired::build(&load(&explicit).unwrap(), &Default::default()).unwrap();
    for (ga, gb) in a.clusters[0].groups.iter().zip(&b.clusters[0].groups) {
        assert_eq!(ga.identity, gb.identity, "{}", ga.owner);
        assert_eq!(ga.join_document, gb.join_document, "{}", ga.owner);
        assert_eq!(ga.rollout, gb.rollout);
    }
}

#[test]
fn rule_dangling_reference() {
    let text = BASE.replace(
        "        kind: DevMachineTemplate\n        name: c1-machines\n  kubeadmConfigSpec",
        "        kind: DevMachineTemplate\n        name: c1-missing\n  kubeadmConfigSpec",
    );
    let p = one(&text);
    assert_eq!(p.file, "cluster.yaml");
    assert_eq!(
        p.pos.line,
        line_of(&text, "name: c1-missing", "kind: KubeadmControlPlane")
    );
    assert!(
        p.message
            .contains("KubeadmControlPlane \"c1-cp\" refers to DevMachineTemplate \"c1-missing\""),
        "{}",
        p.message
    );
    assert!(p.message.contains("not in the manifests"), "{}", p.message);
    assert!(
        p.help.contains("\"c1-machines\""),
        "help lists the known templates: {}",
        p.help
    );
}

#[test]
fn rule_cluster_name_mismatch() {
    let text = BASE.replace(
        "    spec:\n      clusterName: c1\n",
        "    spec:\n      clusterName: c2\n",
    );
    let p = one(&text);
    assert_eq!(
        p.pos.line,
        line_of(&text, "clusterName: c2", "kind: MachineDeployment")
    );
    assert!(
        p.message.contains(
            "spec.template.spec.clusterName \"c2\" does not match spec.clusterName \"c1\""
        ),
        "{}",
        p.message
    );
    assert!(p.help.contains("same Cluster name"));
}

#[test]
fn rule_cluster_name_unknown() {
    let text = BASE
        .replace(
            "  clusterName: c1\n  replicas: 2",
            "  clusterName: nope\n  replicas: 2",
        )
        .replace("      clusterName: c1\n", "      clusterName: nope\n");
    let p = one(&text);
    assert_eq!(
        p.pos.line,
        line_of(&text, "clusterName: nope", "kind: MachineDeployment")
    );
    assert!(
        p.message
            .contains("spec.clusterName \"nope\" is not a Cluster in the manifests"),
        "{}",
        p.message
    );
    assert!(p.help.contains("\"c1\""));
}

#[test]
fn rule_even_control_plane_replicas() {
    let text = BASE.replace(
        "  replicas: 3\n  version: v1.31.2",
        "  replicas: 2\n  version: v1.31.2",
    );
    let p = one(&text);
    assert_eq!(
        p.pos.line,
        line_of(&text, "replicas: 2", "kind: KubeadmControlPlane")
    );
    assert!(
        p.message
            .contains("replicas cannot be an even number (2) when etcd is stacked"),
        "{}",
        p.message
    );
    assert!(p.help.contains("1 or 3"));
}

#[test]
fn rule_even_replicas_allowed_with_external_etcd() {
    let text = BASE.replace("  replicas: 3\n  version: v1.31.2", "  replicas: 2\n  version: v1.31.2").replace(
        "  kubeadmConfigSpec: {}",
        "  kubeadmConfigSpec:\n    clusterConfiguration:\n      etcd:\n        external:\n          endpoints: [\"https://etcd:2379\"]\n          caFile: /etc/etcd/ca.crt\n          certFile: /etc/etcd/c.crt\n          keyFile: /etc/etcd/c.key",
    );
    // Loading succeeds (the Secrets for external etcd are a rendering matter).
    assert!(load(&text).is_ok());
}

#[test]
fn rule_control_plane_max_surge() {
    let text = BASE.replace("  replicas: 3\n  version: v1.31.2\n", "  replicas: 3\n  version: v1.31.2\n  rollout:\n    strategy:\n      rollingUpdate:\n        maxSurge: 2\n");
    let p = one(&text);
    assert_eq!(
        p.pos.line,
        line_of(&text, "maxSurge: 2", "kind: KubeadmControlPlane")
    );
    assert!(
        p.message
            .contains("control-plane maxSurge must be 0 or 1, found 2"),
        "{}",
        p.message
    );
}

#[test]
fn rule_control_plane_surge_zero_needs_three() {
    let text = BASE.replace("  replicas: 3\n  version: v1.31.2\n", "  replicas: 1\n  version: v1.31.2\n  rollout:\n    strategy:\n      rollingUpdate:\n        maxSurge: 0\n");
    let p = one(&text);
    assert!(
        p.message.contains("maxSurge 0 needs at least 3 replicas"),
        "{}",
        p.message
    );
    assert_eq!(
        p.pos.line,
        line_of(&text, "maxSurge: 0", "kind: KubeadmControlPlane")
    );
}

#[test]
fn rule_machine_deployment_surge_and_unavailable_zero() {
    // Percentages resolving to 0/0 are valid (the rollout falls back to
    // maxUnavailable 1, as Cluster API's does); only integer 0/0 is refused.
    let zero = |surge: &str, unavailable: &str| {
        BASE.replace("  replicas: 2\n  template:", &format!("  replicas: 2\n  rollout:\n    strategy:\n      rollingUpdate:\n        maxSurge: {surge}\n        maxUnavailable: {unavailable}\n  template:"))
    };
    for (s, u) in [("\"0%\"", "\"0%\""), ("0", "\"0%\""), ("\"0%\"", "0")] {
        let m = load(&zero(s, u));
        assert!(m.is_ok(), "{s}/{u}: {:?}", m.err());
    }
    let text = zero("0", "0");
    let p = one(&text);
    assert!(
        p.message
            .contains("maxSurge and maxUnavailable cannot both be 0"),
        "{}",
        p.message
    );
    assert_eq!(
        p.pos.line,
        line_of(&text, "rollingUpdate:", "kind: MachineDeployment")
    );
    assert!(p.help.contains("maxSurge to 1"));
}

#[test]
fn rule_unknown_rollout_strategy_points_at_its_type() {
    // v1beta2's spec.rollout.strategy and v1beta1's spec.strategy.
    for field in ["rollout:\n    strategy:", "strategy:"] {
        let text = BASE.replace(
            "  replicas: 2\n  template:",
            &format!("  replicas: 2\n  {field}\n      type: Bogus\n  template:"),
        );
        let p = one(&text);
        assert!(
            p.message.contains("unknown rollout strategy \"Bogus\""),
            "{}",
            p.message
        );
        assert_eq!(
            p.pos.line,
            line_of(&text, "type: Bogus", "kind: MachineDeployment"),
            "{field}"
        );
        assert!(p.help.contains("RollingUpdate or OnDelete"));
    }
}

#[test]
fn rule_health_check_threshold_points_at_its_field() {
    let mhc = |api: &str, remediation: &str| {
        format!(
            "{BASE}---\napiVersion: cluster.x-k8s.io/{api}\nkind: MachineHealthCheck\nmetadata:\n  name: c1-mhc\nspec:\n  clusterName: c1\n  selector:\n    matchLabels: {{cluster.x-k8s.io/deployment-name: c1-md}}\n{remediation}\n"
        )
    };
    for (api, remediation, field) in [
        (
            "v1beta2",
            "  remediation:\n    triggerIf:\n      unhealthyLessThanOrEqualTo: 140%",
            "unhealthyLessThanOrEqualTo: 140%",
        ),
        ("v1beta1", "  maxUnhealthy: 140%", "maxUnhealthy: 140%"),
    ] {
        let text = mhc(api, remediation);
        let p = one(&text);
        assert!(
            p.message
                .contains("unhealthy threshold 140% is out of range"),
            "{}",
            p.message
        );
        assert_eq!(
            p.pos.line,
            line_of(&text, field, "kind: MachineHealthCheck"),
            "{api}"
        );
    }
}

#[test]
fn rule_malformed_version() {
    let text = BASE.replace("      version: v1.31.2\n", "      version: v1.31\n");
    let p = one(&text);
    assert_eq!(
        p.pos.line,
        line_of(&text, "version: v1.31\n", "kind: MachineDeployment")
    );
    assert!(
        p.message.contains("malformed version") && p.message.contains("vMAJOR.MINOR.PATCH"),
        "{}",
        p.message
    );
    // A missing leading `v` is added, like the webhooks do: not an error.
    assert!(load(&BASE.replace("      version: v1.31.2\n", "      version: 1.31.2\n")).is_ok());
}

#[test]
fn rule_duplicate_objects() {
    let dup = "---\napiVersion: bootstrap.cluster.x-k8s.io/v1beta2\nkind: KubeadmConfigTemplate\nmetadata:\n  name: c1-md\nspec:\n  template:\n    spec: {}\n";
    let text = format!("{BASE}{dup}");
    let p = one(&text);
    assert!(
        p.message
            .contains("duplicate object: KubeadmConfigTemplate \"c1-md\" is defined twice"),
        "{}",
        p.message
    );
    assert_eq!(
        p.pos.line,
        text.lines().count() as u32 - 3,
        "points at the second metadata.name"
    );
    assert!(
        p.help.contains("first defined at cluster.yaml:"),
        "{}",
        p.help
    );
}

#[test]
fn rule_unknown_field_with_suggestion() {
    let text = BASE.replace(
        "  replicas: 3\n  version: v1.31.2",
        "  replicas: 3\n  verison: v1.31.2\n  version: v1.31.2",
    );
    let p = one(&text);
    assert_eq!(
        p.pos.line,
        line_of(&text, "verison:", "kind: KubeadmControlPlane")
    );
    assert!(
        p.message.contains("unknown field `verison`"),
        "{}",
        p.message
    );
    assert!(p.help.contains("did you mean `version`"), "{}", p.help);
}

#[test]
fn rule_unknown_kubeadm_field() {
    let text = BASE.replace("    spec: {}\n", "    spec:\n      joinConfiguration:\n        nodeRegistration:\n          kubeletExtraArg:\n            - name: a\n              value: b\n");
    let p = one(&text);
    assert_eq!(
        p.pos.line,
        line_of(&text, "kubeletExtraArg:", "kind: KubeadmConfigTemplate")
    );
    assert!(
        p.message.contains("unknown field `kubeletExtraArg`"),
        "{}",
        p.message
    );
    assert!(
        p.help.contains("did you mean `kubeletExtraArgs`"),
        "{}",
        p.help
    );
}

#[test]
fn rule_cluster_class_not_supported() {
    let text = BASE.replace("spec:\n  controlPlaneRef:", "spec:\n  topology:\n    classRef:\n      name: quick-start\n    version: v1.31.2\n  controlPlaneRef:");
    let errs = errors(&text);
    let p = errs
        .iter()
        .find(|p| p.message.contains("spec.topology"))
        .expect("topology problem");
    assert!(p.message.contains("not supported yet"), "{}", p.message);
    assert_eq!(p.pos.line, line_of(&text, "topology:", "kind: Cluster"));
    let cc = "apiVersion: cluster.x-k8s.io/v1beta2\nkind: ClusterClass\nmetadata:\n  name: quick-start\nspec: {}\n";
    let p = one(&format!("{BASE}---\n{cc}"));
    assert!(
        p.message.contains("ClusterClass") && p.message.contains("not supported yet"),
        "{}",
        p.message
    );
}

#[test]
fn unknown_kind_is_a_warning() {
    let extra = "---\napiVersion: addons.cluster.x-k8s.io/v1beta2\nkind: ClusterResourceSet\nmetadata:\n  name: crs\nspec: {}\n";
    let m = load(&format!("{BASE}{extra}")).unwrap();
    assert_eq!(m.warnings.len(), 1);
    let w = &m.warnings[0];
    assert!(
        w.message.contains("ClusterResourceSet \"crs\"") && w.message.contains("ignored"),
        "{}",
        w.message
    );
    assert_eq!(w.pos.line, BASE.lines().count() as u32 + 3);
}

#[test]
fn misspelt_cluster_api_kind_is_an_error_with_a_suggestion() {
    // A skipped MachineDeployment would make the next plan destroy its
    // machines: a typo in a Cluster API group is an error, not a warning.
    let text = BASE.replace("kind: MachineDeployment\n", "kind: MachineDeploymnet\n");
    let p = one(&text);
    assert!(
        p.message.contains("MachineDeploymnet \"c1-md\"")
            && p.message.contains("not a Cluster API kind"),
        "{}",
        p.message
    );
    assert!(
        p.help.contains("did you mean MachineDeployment?"),
        "{}",
        p.help
    );
    assert_eq!(
        p.pos.line,
        line_of(&text, "kind: MachineDeploymnet", "c1-cp")
    );
    // Unknown kinds of a Cluster API group without a close match are errors too.
    let extra = "---\napiVersion: infrastructure.cluster.x-k8s.io/v1beta1\nkind: AWSCluster\nmetadata:\n  name: x\nspec: {}\n";
    let p = one(&format!("{BASE}{extra}"));
    assert!(p.help.contains("capi manages DockerCluster"), "{}", p.help);
    // Other groups stay warnings.
    let extra = "---\napiVersion: example.com/v1\nkind: MachineDeploymnet\nmetadata:\n  name: x\nspec: {}\n";
    let m = load(&format!("{BASE}{extra}")).unwrap();
    assert_eq!(m.warnings.len(), 1, "{:#?}", m.warnings);
}

#[test]
fn rule_yaml_syntax_error() {
    let text = BASE.replace("  replicas: 2\n", "  replicas: [2\n");
    let e = errors(&text);
    assert!(
        e.iter().any(|p| p.message.starts_with("YAML syntax error")
            && p.pos.line >= line_of(&text, "replicas: [2", "kind: MachineDeployment")),
        "{e:#?}"
    );
}

#[test]
fn every_problem_is_reported_not_the_first() {
    let text = BASE
        .replace(
            "  replicas: 3\n  version: v1.31.2",
            "  replicas: 4\n  version: v1.31.2",
        )
        .replace("      version: v1.31.2\n", "      version: banana\n")
        .replace("          name: c1-md\n", "          name: c1-nope\n");
    let e = errors(&text);
    let msgs: Vec<&str> = e.iter().map(|p| p.message.as_str()).collect();
    assert!(msgs.iter().any(|m| m.contains("even number")), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.contains("malformed version")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.contains("\"c1-nope\"")), "{msgs:?}");
    // Sorted by position.
    let lines: Vec<u32> = e.iter().map(|p| p.pos.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn missing_variables_are_reported_together_sorted() {
    let text = BASE
        .replace(
            "name: c1-md\nspec:\n  clusterName: c1\n  replicas: 2",
            "name: c1-md\nspec:\n  clusterName: c1\n  replicas: ${WORKERS}",
        )
        .replace("  replicas: 3\n", "  replicas: ${CP_COUNT}\n")
        .replace(
            "      version: v1.31.2\n",
            "      version: ${K8S:=v1.31.2}\n",
        );
    match manifest::load_str("cluster.yaml", &text, &Variables::new()) {
        Err(ManifestError::MissingVariables(v)) => {
            let msg = ManifestError::MissingVariables(v.clone()).to_string();
            assert!(msg.contains("[CP_COUNT, WORKERS]"), "{msg}");
            assert!(
                msg.contains(&format!(
                    "CP_COUNT: first used at cluster.yaml:{}",
                    line_of(&text, "${CP_COUNT}", "kind: KubeadmControlPlane")
                )),
                "{msg}"
            );
        }
        other => panic!("expected missing variables, got {other:?}"),
    }
    let mut vars = Variables::new();
    vars.set("WORKERS", "3");
    vars.set("CP_COUNT", "1");
    let m = manifest::load_str("cluster.yaml", &text, &vars).unwrap();
    assert_eq!(m.variables.get("WORKERS").map(String::as_str), Some("3"));
}

#[test]
fn cli_validate_exit_codes_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        BASE.replace("  replicas: 3\n  version", "  replicas: 2\n  version"),
    )
    .unwrap();
    let out = capi(dir.path())
        .args(["validate", "-f", "bad.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.yaml:") && err.contains("even number"),
        "{err}"
    );
    let out = capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "bad.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !dir.path().join("capi.state.json").exists(),
        "nothing may be written on a manifest error"
    );
    std::fs::write(dir.path().join("good.yaml"), BASE).unwrap();
    let out = capi(dir.path())
        .args(["validate", "-f", "good.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Success!"));
}

#[test]
fn directory_and_stdin_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("m");
    std::fs::create_dir(&md).unwrap();
    // Split BASE into two files; the directory is read in sorted order.
    let docs: Vec<&str> = BASE.split("---\n").collect();
    std::fs::write(md.join("a.yaml"), docs[..3].join("---\n")).unwrap();
    std::fs::write(md.join("b.yml"), docs[3..].join("---\n")).unwrap();
    std::fs::write(md.join("notes.txt"), "not yaml").unwrap();
    capi(dir.path())
        .args(["validate", "-f", "m"])
        .assert()
        .success();
    capi(dir.path())
        .args(["validate", "-f", "-"])
        .write_stdin(BASE)
        .assert()
        .success();
}

/// An error on a line with a `${VAR}` quotes the file as written, and the
/// label says what the variable became (the snippet used to show the
/// substituted text, which is not in the file).
#[test]
fn error_snippets_show_the_file_as_written_and_the_value_in_the_label() {
    let dir = tempfile::tempdir().unwrap();
    let text = BASE.replacen("  replicas: 2\n", "  replicas: ${WORKERS}\n", 1);
    assert_ne!(text, BASE);
    std::fs::write(dir.path().join("c.yaml"), &text).unwrap();
    let out = capi(dir.path())
        .args([
            "validate",
            "-f",
            "c.yaml",
            "--var",
            "WORKERS=many",
            "--no-color",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("replicas: ${WORKERS}"), "{err}");
    assert!(!err.contains("replicas: many"), "{err}");
    assert!(
        err.contains("${WORKERS} on this line became \"many\""),
        "{err}"
    );
}
