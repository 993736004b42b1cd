//! ClusterClass: upstream's quick-start class with clusterctl's development
//! flavor (read by path, unchanged) expands, plans and applies on `sim`;
//! every quick-start patch renders its field; names are deterministic; bad
//! topologies are reported together with file and line.

use std::path::{Path, PathBuf};

use capi::manifest::{ManifestError, Variables};

use crate::common::{capi, shared, stderr, stdout};

const CLASS: &str = "fixtures/upstream/cluster-api/clusterclass-quick-start.yaml";
const FLAVOR: &str = "fixtures/upstream/cluster-api/cluster-template-development.yaml";

/// clusterctl's variables for the development flavor.
fn dev_vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("CLUSTER_NAME", "dev"),
        ("NAMESPACE", "default"),
        ("KUBERNETES_VERSION", "v1.31.2"),
        ("CONTROL_PLANE_MACHINE_COUNT", "1"),
        ("WORKER_MACHINE_COUNT", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, val) in extra {
        v.retain(|(name, _)| name != k);
        v.push((k.to_string(), val.to_string()));
    }
    v
}

fn fixtures() -> Option<(PathBuf, PathBuf)> {
    Some((shared(CLASS)?, shared(FLAVOR)?))
}

fn load(
    files: &[&Path],
    vars: &[(String, String)],
) -> Result<capi::manifest::Manifest, ManifestError> {
    let mut v = Variables::new();
    for (k, val) in vars {
        v.set(k, val);
    }
    let paths: Vec<PathBuf> = files.iter().map(|p| p.to_path_buf()).collect();
    let sources = capi::manifest::read_sources(&paths, &mut std::io::empty()).unwrap();
    capi::topology::load(sources, &v)
}

/// The flavor with its text changed (`from` → `to`), written to `dir`.
fn flavor_with(dir: &Path, flavor: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(flavor).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from:?} not in the flavor");
        text = text.replace(from, to);
    }
    let p = dir.join("cluster.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn var_args(vars: &[(String, String)]) -> Vec<String> {
    vars.iter()
        .flat_map(|(k, v)| ["--var".to_string(), format!("{k}={v}")])
        .collect()
}

fn debug_of(m: &capi::manifest::Manifest) -> String {
    format!("{:#?}", m.objects)
}

#[test]
fn quick_start_expands_into_the_topology_objects() {
    let Some((class, flavor)) = fixtures() else {
        return;
    };
    let m = load(&[&class, &flavor], &dev_vars(&[])).unwrap_or_else(|e| panic!("{e:?}"));
    let kinds: Vec<String> = m
        .objects
        .iter()
        .map(|o| {
            let d = format!("{o:?}");
            d.split("kind: ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    for want in [
        "Cluster",
        "DevCluster",
        "KubeadmControlPlane",
        "DevMachineTemplate",
        "KubeadmConfigTemplate",
        "MachineDeployment",
        "MachineHealthCheck",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "{want} missing from {kinds:?}"
        );
    }
    // One control plane, one MachineDeployment, two machine templates, two MHCs.
    assert_eq!(
        kinds.iter().filter(|k| *k == "KubeadmControlPlane").count(),
        1
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "MachineDeployment").count(),
        1
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "DevMachineTemplate").count(),
        2
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "MachineHealthCheck").count(),
        2
    );
    // Names follow upstream's templates with a derived suffix.
    let dbg = debug_of(&m);
    assert!(dbg.contains("name: \"dev-md-0-"), "{dbg}");
    // Same manifests, same names.
    let again = load(&[&class, &flavor], &dev_vars(&[])).unwrap();
    assert_eq!(dbg, debug_of(&again));
}

#[test]
fn each_quick_start_patch_renders_its_field() {
    let Some((class, flavor)) = fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Defaults: podSecurityStandard enabled, the image patches off.
    let base = debug_of(&load(&[&class, &flavor], &dev_vars(&[])).unwrap());
    assert!(
        base.contains("admission-control-config-file"),
        "podSecurityStandard patch"
    );
    assert!(base.contains("/etc/kubernetes/kube-apiserver-admission-pss.yaml"));
    assert!(
        base.contains("pod-security.admission.config.k8s.io/v1\\n"),
        "semverCompare picks v1 for v1.31"
    );
    assert!(base.contains("enforce: \\\"baseline\\\""), "{base}");
    assert!(
        base.contains("kindest/node:v1.31.2"),
        "customImage patch (control plane and workers)"
    );
    assert!(!base.contains("registry.example"));
    // imageRepository, etcdImageTag, coreDNSImageTag.
    let f = flavor_with(
        dir.path(),
        &flavor,
        &[
            (
                "- name: imageRepository\n      value: \"\"",
                "- name: imageRepository\n      value: \"registry.example/k8s\"",
            ),
            (
                "- name: etcdImageTag\n      value: \"\"",
                "- name: etcdImageTag\n      value: \"3.5.16-0\"",
            ),
            (
                "- name: coreDNSImageTag\n      value: \"\"",
                "- name: coreDNSImageTag\n      value: \"v1.11.3\"",
            ),
        ],
    );
    let patched = debug_of(&load(&[&class, &f], &dev_vars(&[])).unwrap());
    assert!(
        patched.contains("registry.example/k8s"),
        "imageRepository patch"
    );
    assert!(patched.contains("3.5.16-0"), "etcdImageTag patch");
    assert!(patched.contains("v1.11.3"), "coreDNSImageTag patch");
    // podSecurityStandard off: no admission file; an old version picks v1beta1.
    let off = debug_of(
        &load(
            &[&class, &flavor],
            &dev_vars(&[("POD_SECURITY_STANDARD_ENABLED", "false")]),
        )
        .unwrap(),
    );
    assert!(!off.contains("admission-control-config-file"));
    let old = debug_of(
        &load(
            &[&class, &flavor],
            &dev_vars(&[("KUBERNETES_VERSION", "v1.24.17")]),
        )
        .unwrap(),
    );
    assert!(old.contains("pod-security.admission.config.k8s.io/v1beta1"));
    assert!(old.contains("kindest/node:v1.24.17"));
}

fn problems(e: ManifestError) -> Vec<capi::manifest::Problem> {
    match e {
        ManifestError::Invalid { problems, .. } => problems,
        other => panic!("expected manifest problems, got {other}"),
    }
}

#[test]
fn bad_topologies_are_all_reported_with_file_and_line() {
    let Some((class, flavor)) = fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = flavor_with(
        dir.path(),
        &flavor,
        &[
            (
                "- name: etcdImageTag\n      value: \"\"",
                "- name: etcdImageTag\n      value: 5",
            ),
            (
                "- name: coreDNSImageTag",
                "- name: nosuchVariable\n      value: 1\n    - name: coreDNSImageTag",
            ),
            ("- class: default-worker", "- class: no-such-class"),
        ],
    );
    let ps = problems(load(&[&class, &f], &dev_vars(&[])).unwrap_err());
    let text = std::fs::read_to_string(&f).unwrap();
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1;
    let find = |s: &str| {
        ps.iter()
            .find(|p| p.message.contains(s))
            .unwrap_or_else(|| panic!("no problem with {s:?} in {ps:#?}"))
    };
    let ty = find("etcdImageTag");
    assert!(
        ty.message.contains("type: must be string"),
        "{}",
        ty.message
    );
    assert_eq!(ty.pos.line, line("value: 5"));
    assert!(ty.file.ends_with("cluster.yaml"));
    assert_eq!(find("nosuchVariable").pos.line, line("nosuchVariable"));
    assert_eq!(find("no-such-class").pos.line, line("no-such-class"));
    // A missing class is reported at the classRef.
    let ps = problems(load(&[&flavor], &dev_vars(&[])).unwrap_err());
    assert!(ps[0]
        .message
        .contains("ClusterClass default/quick-start is not in the manifests"));
}

#[test]
fn bad_patches_are_reported_in_the_class() {
    let Some((class, flavor)) = fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(&class).unwrap();
    text = text.replacen(
        "path: \"/spec/template/spec/kubeadmConfigSpec/clusterConfiguration/dns\"",
        "path: \"/spec/template/spec/nope/dns\"",
        1,
    );
    text = text.replacen(
        "imageTag: {{ .etcdImageTag }}",
        "imageTag: {{ .etcdImageTag | frobnicate }}",
        1,
    );
    let c = dir.path().join("class.yaml");
    std::fs::write(&c, &text).unwrap();
    let f = flavor_with(
        dir.path(),
        &flavor,
        &[
            (
                "- name: etcdImageTag\n      value: \"\"",
                "- name: etcdImageTag\n      value: \"x\"",
            ),
            (
                "- name: coreDNSImageTag\n      value: \"\"",
                "- name: coreDNSImageTag\n      value: \"y\"",
            ),
        ],
    );
    let ps = problems(load(&[&c, &f], &dev_vars(&[])).unwrap_err());
    let line = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() as u32 + 1;
    let path = ps
        .iter()
        .find(|p| p.message.contains("does not exist"))
        .expect("bad path");
    assert_eq!(path.pos.line, line("/spec/template/spec/nope/dns"));
    assert!(path.file.ends_with("class.yaml"));
    let func = ps
        .iter()
        .find(|p| p.message.contains("frobnicate"))
        .expect("unknown function");
    // At the `template:` key of the failing valueFrom.
    assert_eq!(func.pos.line, line("frobnicate") - 2, "{func:?}");
    assert!(func.message.contains("not defined"), "{}", func.message);
}

#[test]
fn development_flavor_plans_and_applies_on_sim_with_stable_names() {
    let Some((class, flavor)) = fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let vars = var_args(&dev_vars(&[]));
    let files = [
        "-f".to_string(),
        class.display().to_string(),
        "-f".into(),
        flavor.display().to_string(),
    ];
    let plan = |extra: &[&str]| {
        capi(dir.path())
            .args(["plan", "--provider", "sim"])
            .args(extra)
            .args(&files)
            .args(&vars)
            .output()
            .unwrap()
    };
    let first = plan(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let p1 = stdout(&first);
    assert!(p1.contains("dev/machine/dev-md-0-"), "{p1}");
    assert_eq!(p1, stdout(&plan(&[])), "plans are byte-identical");
    let out = capi(dir.path())
        .args(["apply", "--auto-approve", "--provider", "sim"])
        .args(&files)
        .args(&vars)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // After apply, the same manifests change nothing: names are stable.
    let after = plan(&["--detailed-exitcode"]);
    assert_eq!(
        after.status.code(),
        Some(0),
        "{}{}",
        stdout(&after),
        stderr(&after)
    );
    // topology.version lowered: refused, at the Cluster's topology.version.
    let lowered = var_args(&dev_vars(&[("KUBERNETES_VERSION", "v1.30.5")]));
    let out = capi(dir.path())
        .args(["plan", "--provider", "sim"])
        .args(&files)
        .args(&lowered)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&flavor).unwrap();
    let line = text
        .lines()
        .position(|l| l.trim() == "version: ${KUBERNETES_VERSION}")
        .unwrap()
        + 1;
    let err = stderr(&out);
    assert!(err.contains("does not downgrade"), "{err}");
    assert!(
        err.contains(&format!("{}:{line}", flavor.display())),
        "{line}: {err}"
    );
    // describe names the class and the topology entries.
    let out = capi(dir.path())
        .args(["describe", "cluster", "dev"])
        .args(&files)
        .args(&vars)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("Cluster/dev (ClusterClass quick-start)"),
        "{text}"
    );
    assert!(
        text.contains("(ClusterClass quick-start, topology machineDeployment md-0)"),
        "{text}"
    );
    assert!(
        text.contains("(ClusterClass quick-start, topology controlPlane)"),
        "{text}"
    );
    // A variable changed: the plan names the patch and the variable behind
    // the replacement, on the template that changed (and no other).
    let vars = var_args(&dev_vars(&[]));
    let edited = flavor_with(
        dir.path(),
        &flavor,
        &[(
            "- name: imageRepository\n      value: \"\"",
            "- name: imageRepository\n      value: \"registry.example/k8s\"",
        )],
    );
    let out = capi(dir.path())
        .args(["plan", "--provider", "sim", "-f"])
        .arg(&class)
        .arg("-f")
        .arg(&edited)
        .args(&vars)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Plan: 0 to add, 0 to change, 1 to replace"),
        "{text}"
    );
    assert!(
        text.contains("[ClusterClass quick-start, topology controlPlane: patch imageRepository (variable imageRepository) sets KubeadmControlPlaneTemplate /spec/template/spec/kubeadmConfigSpec/clusterConfiguration/imageRepository"),
        "{text}"
    );
    assert!(!text.contains("patch customImage"), "{text}");
}

/// Every step id `id` waits for, directly or not (explicit `after` edges and
/// the steps of the resources it depends on).
fn waits_for(p: &capi::plan::Plan, id: usize) -> std::collections::BTreeSet<usize> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![id];
    while let Some(i) = todo.pop() {
        let s = &p.steps[i];
        let deps = p
            .steps
            .iter()
            .filter(|o| s.dependencies.contains(&o.address))
            .map(|o| o.id);
        for a in s.after.iter().copied().chain(deps) {
            if seen.insert(a) {
                todo.push(a);
            }
        }
    }
    seen
}

#[test]
fn topology_upgrade_rolls_the_control_plane_then_one_deployment_at_a_time() {
    let Some((class, flavor)) = fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = flavor_with(
        dir.path(),
        &flavor,
        &[(
            "        replicas: ${WORKER_MACHINE_COUNT}\n",
            "        replicas: ${WORKER_MACHINE_COUNT}\n      - class: default-worker\n        name: md-1\n        replicas: 1\n",
        )],
    );
    let now = 1_800_000_000;
    let opts = capi::plan::PlanOptions {
        now_unix: now,
        ..Default::default()
    };
    let m1 = load(&[&class, &f], &dev_vars(&[])).unwrap();
    let d1 = capi::desired::build(&m1, &Default::default()).unwrap();
    let empty = capi::state::State::empty();
    let p1 = capi::plan::plan(&d1, &empty, &opts).unwrap();
    let state = capi::plan::simulate::simulate(&empty, &p1, now + 86_400 * 365);
    let m2 = load(
        &[&class, &f],
        &dev_vars(&[("KUBERNETES_VERSION", "v1.32.0")]),
    )
    .unwrap();
    let d2 = capi::desired::build(&m2, &Default::default()).unwrap();
    let p2 = capi::plan::plan(&d2, &state, &opts).unwrap();
    let machine_steps = |needle: &str| -> Vec<usize> {
        p2.steps
            .iter()
            .filter(|s| {
                let a = s.address.to_string();
                a.contains("/machine/") && a.contains(needle)
            })
            .map(|s| s.id)
            .collect()
    };
    let md0 = machine_steps("dev-md-0-");
    let md1 = machine_steps("dev-md-1-");
    let cp: Vec<usize> = p2
        .steps
        .iter()
        .filter(|s| {
            let a = s.address.to_string();
            a.contains("/machine/") && !a.contains("-md-")
        })
        .map(|s| s.id)
        .collect();
    assert!(
        !cp.is_empty() && !md0.is_empty() && !md1.is_empty(),
        "{:#?}",
        p2.steps
    );
    // Every worker step waits for every control-plane step.
    for w in md0.iter().chain(&md1) {
        let before = waits_for(&p2, *w);
        assert!(
            cp.iter().all(|c| before.contains(c)),
            "worker step {w} does not wait for the control plane"
        );
    }
    // upgrade-concurrency 1: every md-1 step waits for all of md-0's.
    for s in &md1 {
        let before = waits_for(&p2, *s);
        assert!(
            md0.iter().all(|c| before.contains(c)),
            "md-1 step {s} does not wait for md-0"
        );
    }
}

#[test]
fn capi_upgrade_on_a_topology_cluster_writes_only_topology_version() {
    let Some((class, flavor)) = fixtures() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = flavor_with(
        dir.path(),
        &flavor,
        &[("version: ${KUBERNETES_VERSION}", "version: v1.31.2")],
    );
    let before = std::fs::read_to_string(&f).unwrap();
    let vars = var_args(&dev_vars(&[]));
    let files = [
        "-f".to_string(),
        class.display().to_string(),
        "-f".into(),
        f.display().to_string(),
    ];
    let out = capi(dir.path())
        .args(["apply", "--auto-approve", "--provider", "sim"])
        .args(&files)
        .args(&vars)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = capi(dir.path())
        .args([
            "upgrade",
            "--to",
            "v1.32.0",
            "--write",
            "--auto-approve",
            "--provider",
            "sim",
        ])
        .args(&files)
        .args(&vars)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let after = std::fs::read_to_string(&f).unwrap();
    assert_eq!(
        after,
        before.replace("version: v1.31.2", "version: v1.32.0")
    );
    let plan = capi(dir.path())
        .args(["plan", "--detailed-exitcode", "--provider", "sim"])
        .args(&files)
        .args(&vars)
        .output()
        .unwrap();
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}{}",
        stdout(&plan),
        stderr(&plan)
    );
}

fn docker(args: &[&str]) -> (bool, String) {
    match std::process::Command::new("docker").args(args).output() {
        Ok(o) => (o.status.success(), format!("{}{}", stdout(&o), stderr(&o))),
        Err(e) => (false, e.to_string()),
    }
}

/// Removes the test's containers, network and image tags, even on failure.
struct DockerGuard {
    cluster: String,
    network: String,
    tags: Vec<String>,
}

impl Drop for DockerGuard {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.x-k8s.kind.cluster={}", self.cluster),
        ])
        .1;
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
        let _ = docker(&["network", "rm", &self.network]);
        for t in &self.tags {
            let _ = docker(&["rmi", t]);
        }
    }
}

/// The quick-start class and the development flavor, unchanged, applied on
/// the real Docker Engine with the offline test images standing in for
/// kindest/node and kindest/haproxy (tagged locally, never pulled).
#[test]
fn quick_start_applies_on_docker() {
    let Some((class, flavor)) = fixtures() else {
        return;
    };
    let ci = std::env::var("CAPI_CI").as_deref() == Ok("1");
    if !docker(&["info"]).0 || !docker(&["image", "inspect", "capi-test/node:v1"]).0 {
        assert!(
            !ci,
            "CAPI_CI=1: Docker Engine or the test images (scripts/setup.d/20-docker.sh) missing"
        );
        eprintln!(
            "SKIPPED: no Docker Engine or no capi-test images (scripts/setup.d/20-docker.sh)"
        );
        return;
    }
    let cluster = format!("cc{}", std::process::id() % 100000);
    let mut guard = DockerGuard {
        cluster: cluster.clone(),
        network: format!("{cluster}-net"),
        tags: Vec::new(),
    };
    for (src, dst) in [
        ("capi-test/node:v1", "kindest/node:v1.31.2"),
        ("capi-test/node:v1", "kindest/node:v1.32.0"),
        ("capi-test/haproxy:lb", "kindest/haproxy:v20230606-42a2262b"),
    ] {
        if !docker(&["image", "inspect", dst]).0 {
            assert!(docker(&["tag", src, dst]).0);
            guard.tags.push(dst.to_string());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let vars = var_args(&dev_vars(&[("CLUSTER_NAME", cluster.as_str())]));
    let files = [
        "-f".to_string(),
        class.display().to_string(),
        "-f".into(),
        flavor.display().to_string(),
    ];
    let run = |args: &[&str]| {
        capi(dir.path())
            .env("DOCKER_NETWORK", &guard.network)
            .env("CAPI_DOCKER_PRIVILEGED", "false")
            .args(args)
            .args(&files)
            .args(&vars)
            .output()
            .unwrap()
    };
    let out = run(&["apply", "--auto-approve"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let ps = docker(&[
        "ps",
        "--filter",
        &format!("label=io.x-k8s.kind.cluster={cluster}"),
        "--format",
        "{{.Names}} {{.Image}}",
    ])
    .1;
    // A load balancer, one control-plane machine and two workers, running
    // the image the customImage patch chose.
    assert_eq!(ps.lines().count(), 4, "{ps}");
    assert_eq!(
        ps.lines()
            .filter(|l| l.ends_with("kindest/node:v1.31.2"))
            .count(),
        3,
        "{ps}"
    );
    assert!(ps.contains(&format!("{cluster}-md-0-")), "{ps}");
    let again = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}{}",
        stdout(&again),
        stderr(&again)
    );
    // topology.version v1.31.2 -> v1.32.0: the control plane is replaced
    // first, then the workers (Cluster API's upgrade order), as the
    // apply's events show.
    let upgraded = var_args(&dev_vars(&[
        ("CLUSTER_NAME", cluster.as_str()),
        ("KUBERNETES_VERSION", "v1.32.0"),
    ]));
    let out = capi(dir.path())
        .env("DOCKER_NETWORK", &guard.network)
        .env("CAPI_DOCKER_PRIVILEGED", "false")
        .args(["apply", "--auto-approve", "--json"])
        .args(&files)
        .args(&upgraded)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let events = crate::common::json_events(&stdout(&out));
    let machine_ops: Vec<(String, String, bool)> = events
        .iter()
        .filter(|e| e["type"] == "apply_complete")
        .filter_map(|e| {
            let a = e["address"].as_str()?;
            a.contains("/machine/").then(|| {
                (
                    e["action"].as_str().unwrap_or("").to_string(),
                    a.to_string(),
                    a.contains("-md-0-"),
                )
            })
        })
        .collect();
    let first_worker = machine_ops.iter().position(|(_, _, w)| *w);
    let last_cp = machine_ops.iter().rposition(|(_, _, w)| !*w);
    assert!(
        first_worker.is_some() && last_cp.is_some() && last_cp < first_worker,
        "control plane before workers: {machine_ops:?}"
    );
    assert_eq!(
        machine_ops
            .iter()
            .filter(|(a, _, w)| a == "create" && *w)
            .count(),
        2,
        "{machine_ops:?}"
    );
    let images = docker(&[
        "ps",
        "--filter",
        &format!("label=io.x-k8s.kind.cluster={cluster}"),
        "--format",
        "{{.Image}}",
    ])
    .1;
    assert_eq!(
        images
            .lines()
            .filter(|l| *l == "kindest/node:v1.32.0")
            .count(),
        3,
        "{images}"
    );
    let out = run(&["destroy", "--auto-approve"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// A v1beta1 ClusterClass (`ref`, `template.bootstrap.ref`,
/// `namingStrategy`) in another namespace than its v1beta1 Cluster
/// (`class`, `classNamespace`), with a per-MachineDeployment override.
const V1BETA1: &str = r#"apiVersion: cluster.x-k8s.io/v1beta1
kind: Cluster
metadata: {name: old, namespace: team}
spec:
  topology:
    class: legacy
    classNamespace: classes
    version: v1.30.4
    controlPlane: {replicas: 1}
    variables:
    - {name: image, value: base}
    workers:
      machineDeployments:
      - class: w
        name: a
        replicas: 1
      - class: w
        name: b
        replicas: 1
        variables:
          overrides:
          - {name: image, value: special}
---
apiVersion: cluster.x-k8s.io/v1beta1
kind: ClusterClass
metadata: {name: legacy, namespace: classes}
spec:
  infrastructure:
    ref: {apiVersion: infrastructure.cluster.x-k8s.io/v1beta1, kind: DockerClusterTemplate, name: c}
  controlPlane:
    ref: {apiVersion: controlplane.cluster.x-k8s.io/v1beta1, kind: KubeadmControlPlaneTemplate, name: cp}
    machineInfrastructure:
      ref: {apiVersion: infrastructure.cluster.x-k8s.io/v1beta1, kind: DockerMachineTemplate, name: m}
    namingStrategy: {template: "{{ .cluster.name }}-control"}
  workers:
    machineDeployments:
    - class: w
      namingStrategy: {template: "{{ .cluster.name }}-{{ .machineDeployment.topologyName }}"}
      template:
        bootstrap:
          ref: {apiVersion: bootstrap.cluster.x-k8s.io/v1beta1, kind: KubeadmConfigTemplate, name: w}
        infrastructure:
          ref: {apiVersion: infrastructure.cluster.x-k8s.io/v1beta1, kind: DockerMachineTemplate, name: m}
  variables:
  - name: image
    required: true
    schema: {openAPIV3Schema: {type: string, enum: [base, special]}}
  patches:
  - name: image
    definitions:
    - selector:
        apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
        kind: DockerMachineTemplate
        matchResources: {machineDeploymentClass: {names: ["w"]}}
      jsonPatches:
      - {op: add, path: /spec/template/spec/customImage, valueFrom: {template: "img/{{ .image }}:{{ .builtin.machineDeployment.topologyName }}"}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: DockerClusterTemplate
metadata: {name: c, namespace: classes}
spec: {template: {spec: {}}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta1
kind: KubeadmControlPlaneTemplate
metadata: {name: cp, namespace: classes}
spec: {template: {spec: {kubeadmConfigSpec: {}}}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta1
kind: DockerMachineTemplate
metadata: {name: m, namespace: classes}
spec: {template: {spec: {}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta1
kind: KubeadmConfigTemplate
metadata: {name: w, namespace: classes}
spec: {template: {spec: {}}}
"#;

#[test]
fn v1beta1_class_in_another_namespace_with_overrides() {
    let m = capi::topology::load_str("v1.yaml", V1BETA1, &Variables::new())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let dbg = debug_of(&m);
    assert!(
        dbg.contains("name: \"old-control\""),
        "naming strategy: {dbg}"
    );
    assert!(dbg.contains("name: \"old-a\"") && dbg.contains("name: \"old-b\""));
    assert!(dbg.contains("img/base:a"), "cluster value for md a");
    assert!(dbg.contains("img/special:b"), "override for md b");
    // An override breaking the schema is an error at its line.
    let bad = V1BETA1.replace("value: special", "value: other");
    let ps = problems(capi::topology::load_str("v1.yaml", &bad, &Variables::new()).unwrap_err());
    let line = bad
        .lines()
        .position(|l| l.contains("value: other"))
        .unwrap() as u32
        + 1;
    assert!(
        ps.iter()
            .any(|p| p.message.contains("enum") && p.pos.line == line),
        "{ps:#?}"
    );
}
