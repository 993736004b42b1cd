//! Tests against real OpenStack services (see docs/providers/openstack.md):
//! the dev cloud of scripts/openstack-dev-cloud, brought up by
//! scripts/setup.d/30-openstack.sh, which writes target/devcloud/clouds.yaml.
//! Without it these tests skip visibly (under CAPI_CI=1 they fail).
//!
//! capi talks to the cloud as the non-admin `demo` user, with credentials
//! from the identityRef Secret of the manifests (as CAPO does); the tests
//! check the results as `admin` with the `openstack` CLI, independently of
//! capi's client code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use base64::Engine;
use capi::state::StateStore;
use serde_json::Value;

use crate::common::*;
use crate::schema::assert_state_valid;

fn clouds_yaml() -> Option<PathBuf> {
    let p = std::env::var_os("CAPI_OPENSTACK_CLOUDS_YAML")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/devcloud/clouds.yaml"));
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CAPI_CI").as_deref() == Ok("1") {
        panic!("CAPI_CI=1 but the OpenStack dev cloud is not set up ({} is missing; run scripts/setup.d/30-openstack.sh)", p.display());
    }
    eprintln!("SKIPPED: no OpenStack dev cloud ({} is missing; run scripts/setup.d/30-openstack.sh as root)", p.display());
    None
}

/// The `openstack` CLI as admin, JSON output.
fn os(clouds: &Path, args: &[&str]) -> Value {
    let out = Command::new("openstack")
        .env("OS_CLIENT_CONFIG_FILE", clouds)
        .env_remove("OS_CLOUD")
        .args(["--os-cloud", "devcloud"])
        .args(args)
        .args(["-f", "json"])
        .output()
        .expect("the openstack CLI runs");
    assert!(out.status.success(), "openstack {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn os_ok(clouds: &Path, args: &[&str]) {
    let out = Command::new("openstack")
        .env("OS_CLIENT_CONFIG_FILE", clouds)
        .args(["--os-cloud", "devcloud"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openstack {args:?}: {}", stderr(&out));
}

fn external_network_id(clouds: &Path) -> String {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        os(clouds, &["network", "show", "public"])["id"]
            .as_str()
            .unwrap()
            .to_string()
    })
    .clone()
}

/// A unique cluster name per test and run (tests run in parallel and the
/// cloud outlives runs).
fn cluster_name(test: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000;
    format!("os-{test}-{}-{t}", std::process::id() % 10_000)
}

struct Cluster {
    dir: tempfile::TempDir,
    clouds: PathBuf,
    vars: Vec<String>,
    files: Vec<PathBuf>,
}

impl Cluster {
    fn new(clouds: &Path, name: &str, files: Vec<PathBuf>) -> Cluster {
        let yaml = std::fs::read(clouds).unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let vars = [
            ("CLUSTER_NAME", name.to_string()),
            ("OPENSTACK_CLOUD_YAML_B64", b64(&yaml)),
            ("OPENSTACK_CLOUD_CACERT_B64", b64(b"\n")),
            ("OPENSTACK_CLOUD", "devcloud-demo".into()),
            ("OPENSTACK_EXTERNAL_NETWORK_ID", external_network_id(clouds)),
            ("OPENSTACK_DNS_NAMESERVERS", "192.0.2.53".into()),
            ("OPENSTACK_FAILURE_DOMAIN", "nova".into()),
            ("OPENSTACK_CONTROL_PLANE_MACHINE_FLAVOR", "m1.small".into()),
            ("OPENSTACK_NODE_MACHINE_FLAVOR", "m1.tiny".into()),
            ("OPENSTACK_IMAGE_NAME", "tiny".into()),
            ("OPENSTACK_SSH_KEY_NAME", "capi-test".into()),
            ("KUBERNETES_VERSION", "v1.31.2".into()),
            ("CONTROL_PLANE_MACHINE_COUNT", "1".into()),
            ("WORKER_MACHINE_COUNT", "3".into()),
        ]
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
        Cluster {
            dir: tempfile::tempdir().unwrap(),
            clouds: clouds.to_path_buf(),
            vars,
            files,
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|v| !v.starts_with(&format!("{key}=")));
        self.vars.push(format!("{key}={value}"));
    }

    fn run(&self, cmd: &str, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut c = capi_process(self.dir.path());
        c.arg(cmd);
        for f in &self.files {
            c.arg("-f").arg(f);
        }
        for v in &self.vars {
            c.arg("--var").arg(v);
        }
        c.args(extra)
            .env_remove("OS_CLOUD")
            .env_remove("OS_AUTH_URL")
            .env("HOME", self.dir.path());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn apply(&self) -> std::process::Output {
        self.run("apply", &["--auto-approve"], &[])
    }

    fn apply_ok(&self) {
        let o = self.apply();
        assert!(
            o.status.success(),
            "apply failed:\n{}\n{}",
            stdout(&o),
            stderr(&o)
        );
    }

    fn destroy_ok(&self) {
        let o = self.run("destroy", &["--auto-approve"], &[]);
        assert!(
            o.status.success(),
            "destroy failed:\n{}\n{}",
            stdout(&o),
            stderr(&o)
        );
    }

    fn state(&self) -> capi::state::State {
        let p = self.dir.path().join("capi.state.json");
        assert_state_valid(&p);
        StateStore::new(p).load().unwrap().expect("a state")
    }

    fn tag(&self) -> String {
        format!("capi-lineage:{}", self.state().lineage)
    }

    /// Everything in the cloud carrying this state's tag.
    fn tagged(&self, tag: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (what, args) in [
            (
                "server",
                vec![
                    "server",
                    "list",
                    "--all-projects",
                    "--tags",
                    tag,
                    "--os-compute-api-version",
                    "2.90",
                ],
            ),
            ("network", vec!["network", "list", "--tags", tag]),
            ("subnet", vec!["subnet", "list", "--tags", tag]),
            ("router", vec!["router", "list", "--tags", tag]),
            (
                "security group",
                vec!["security", "group", "list", "--all-projects", "--tags", tag],
            ),
            ("port", vec!["port", "list", "--tags", tag]),
            ("floating ip", vec!["floating", "ip", "list", "--tags", tag]),
            ("load balancer", vec!["loadbalancer", "list", "--tags", tag]),
        ] {
            if let Value::Array(items) = os(&self.clouds, &args) {
                out.extend(items.into_iter().map(|i| (what.to_string(), i)));
            }
        }
        out
    }

    fn assert_nothing_left(&self, tag: &str) {
        let left = self.tagged(tag);
        assert!(
            left.is_empty(),
            "left in the cloud after destroy: {left:#?}"
        );
    }

    fn machines(&self) -> Vec<capi::state::Resource> {
        self.state()
            .resources
            .into_iter()
            .filter(|r| r.attributes.as_machine().is_some())
            .map(|r| *r)
            .collect()
    }

    fn servers(&self, tag: &str) -> Vec<Value> {
        match os(
            &self.clouds,
            &[
                "server",
                "list",
                "--all-projects",
                "--tags",
                tag,
                "--long",
                "--os-compute-api-version",
                "2.90",
            ],
        ) {
            Value::Array(a) => a,
            _ => vec![],
        }
    }
}

fn fixture() -> Option<PathBuf> {
    shared("fixtures/upstream/cluster-api-provider-openstack/cluster-template.yaml")
}

fn ids(v: &[Value], key: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .iter()
        .filter_map(|x| x[key].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// The upstream CAPO template, unchanged: apply, check every object through
/// the OpenStack APIs, count the refresh calls, scale, change the worker
/// flavor, destroy.
#[test]
fn upstream_fixture_full_lifecycle() {
    let (Some(clouds), Some(fx)) = (clouds_yaml(), fixture()) else {
        return;
    };
    let name = cluster_name("fx");
    let mut c = Cluster::new(&clouds, &name, vec![fx]);
    let t0 = Instant::now();
    c.apply_ok();
    let apply_secs = t0.elapsed().as_secs_f64();
    let st = c.state();
    let tag = c.tag();
    let res = |a: &str| {
        st.get(format!("{name}/{a}").as_str())
            .unwrap_or_else(|| panic!("{a} in state"))
            .clone()
    };
    let net = res("network");
    let lb = res("loadbalancer");
    let o =
        |r: &capi::state::Resource, k: &str| r.observed[k].as_str().unwrap_or_default().to_string();

    // Network, subnet (CIDR and DNS from managedSubnets), router with the
    // external gateway and an interface on the subnet.
    let n = os(&clouds, &["network", "show", &o(&net, "network_id")]);
    assert_eq!(n["name"], format!("k8s-clusterapi-cluster-default-{name}"));
    assert!(n["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::String(tag.clone())));
    let subnet_id = net.observed["subnet_ids"][0].as_str().unwrap().to_string();
    let s = os(&clouds, &["subnet", "show", &subnet_id]);
    assert_eq!(s["cidr"], "10.6.0.0/24");
    assert_eq!(s["dns_nameservers"], serde_json::json!(["192.0.2.53"]));
    let r = os(&clouds, &["router", "show", &o(&net, "router_id")]);
    assert_eq!(
        r["external_gateway_info"]["network_id"],
        external_network_id(&clouds)
    );
    let rports = os(
        &clouds,
        &["port", "list", "--router", &o(&net, "router_id"), "--long"],
    );
    assert!(
        rports
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Fixed IP Addresses"].to_string().contains(&subnet_id)),
        "router interface on the subnet: {rports}"
    );

    // Security groups with CAPO's rules and the fixture's Calico rules.
    let sgs = net.observed["security_groups"].clone();
    for (role, must) in [
        ("controlplane", vec![6443, 2379, 10250, 179]),
        ("worker", vec![30000, 10250, 179]),
    ] {
        let gid = sgs[role].as_str().unwrap();
        let g = os(&clouds, &["security", "group", "show", gid]);
        assert_eq!(
            g["name"],
            format!("k8s-cluster-default-{name}-secgroup-{role}")
        );
        let rules = os(
            &clouds,
            &["security", "group", "rule", "list", gid, "--long"],
        );
        let rules = rules.as_array().unwrap();
        for port in must {
            assert!(
                rules.iter().any(|r| r["Port Range"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&format!("{port}:")))),
                "{role}: no rule for port {port}: {rules:#?}"
            );
        }
        // IP-in-IP (protocol 4) from both managed groups.
        assert_eq!(
            rules.iter().filter(|r| r["IP Protocol"] == "4").count(),
            2,
            "{role}: {rules:#?}"
        );
    }

    // The API server load balancer: listener, pool with the control-plane
    // member, health monitor, floating IP on the VIP.
    let lbv = os(
        &clouds,
        &["loadbalancer", "show", &o(&lb, "loadbalancer_id")],
    );
    assert_eq!(lbv["provisioning_status"], "ACTIVE");
    assert_eq!(lbv["vip_subnet_id"], subnet_id);
    let pool = o(&lb, "pool_id");
    let p = os(&clouds, &["loadbalancer", "pool", "show", &pool]);
    assert!(
        p["healthmonitor_id"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "health monitor: {p}"
    );
    let members = os(&clouds, &["loadbalancer", "member", "list", &pool]);
    assert_eq!(
        members.as_array().unwrap().len(),
        1,
        "one control-plane member: {members}"
    );
    assert_eq!(members[0]["protocol_port"], 6443);
    let fip = os(
        &clouds,
        &["floating", "ip", "show", &o(&lb, "floating_ip_id")],
    );
    assert_eq!(fip["port_id"], lbv["vip_port_id"]);
    assert_eq!(
        o(&lb, "endpoint"),
        format!("{}:6443", fip["floating_ip_address"].as_str().unwrap())
    );

    // Servers: one per machine, ACTIVE, on their port, with tags, metadata,
    // key pair, availability zone and the bootstrap cloud-config as user_data.
    let machines = c.machines();
    assert_eq!(machines.len(), 4);
    for m in &machines {
        let spec = m.attributes.as_machine().unwrap();
        let sv = os(
            &clouds,
            &[
                "server",
                "show",
                &o(m, "server_id"),
                "--os-compute-api-version",
                "2.90",
            ],
        );
        assert_eq!(sv["status"], "ACTIVE");
        assert_eq!(sv["name"], spec.name);
        assert_eq!(sv["key_name"], "capi-test");
        assert_eq!(sv["OS-EXT-AZ:availability_zone"], "nova");
        assert!(
            sv["tags"].to_string().contains(&tag),
            "tags: {}",
            sv["tags"]
        );
        assert_eq!(sv["properties"]["capi-address"], m.address.as_str());
        let flavor = if spec.role == capi::resource::Role::ControlPlane {
            "m1.small"
        } else {
            "m1.tiny"
        };
        assert!(
            sv["flavor"].to_string().contains(flavor),
            "flavor: {}",
            sv["flavor"]
        );
        let ud = sv["OS-EXT-SRV-ATTR:user_data"]
            .as_str()
            .expect("user_data (admin, microversion >= 2.3)");
        let doc = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(ud)
                .unwrap(),
        )
        .unwrap();
        assert!(
            doc.starts_with("## template: jinja\n#cloud-config") || doc.contains("#cloud-config"),
            "{doc}"
        );
        assert!(
            doc.contains(if spec.role == capi::resource::Role::ControlPlane {
                "kubeadm init"
            } else {
                "kubeadm join"
            })
        );
        let port = os(&clouds, &["port", "show", &o(m, "port_id")]);
        assert_eq!(port["device_id"], sv["id"]);
        assert_eq!(port["network_id"], o(&net, "network_id"));
        let role = if spec.role == capi::resource::Role::ControlPlane {
            "controlplane"
        } else {
            "worker"
        };
        assert_eq!(port["security_group_ids"], serde_json::json!([sgs[role]]));
        assert!(port["tags"].to_string().contains(&tag));
    }

    // Credentials never reach the state.
    let state_text = std::fs::read_to_string(c.dir.path().join("capi.state.json")).unwrap();
    let yaml_b64 =
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&clouds).unwrap());
    assert!(!state_text.contains(&yaml_b64) && !state_text.contains("password: \"devcloud\""));

    // Refresh cost: one list call per object type, not per resource.
    let plan = c.run("plan", &["--detailed-exitcode"], &[("CAPI_LOG", "debug")]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "no changes after apply:\n{}\n{}",
        stdout(&plan),
        stderr(&plan)
    );
    assert!(
        stderr(&plan).contains("openstack: refreshed 6 resources with 8 API calls"),
        "refresh calls: {}",
        stderr(&plan)
    );

    // Scale the workers down to 1, then up to 3 again.
    c.set("WORKER_MACHINE_COUNT", "1");
    c.apply_ok();
    assert_eq!(c.machines().len(), 2);
    assert_eq!(c.servers(&tag).len(), 2);
    c.set("WORKER_MACHINE_COUNT", "3");
    c.apply_ok();
    assert_eq!(c.servers(&tag).len(), 4);

    // Editing the workers' OpenStackMachineTemplate in place (its flavor) is
    // refused, as CAPO's webhook refuses it, and nothing is touched.
    let servers_before = ids(&c.servers(&tag), "ID");
    c.set("OPENSTACK_NODE_MACHINE_FLAVOR", "m1.small");
    let refused = c.apply();
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    let err = stderr(&refused);
    assert!(err.contains("OpenStackMachineTemplate"), "{err}");
    assert!(
        err.contains("create a new OpenStackMachineTemplate"),
        "{err}"
    );
    assert_eq!(ids(&c.servers(&tag), "ID"), servers_before);
    c.set("OPENSTACK_NODE_MACHINE_FLAVOR", "m1.tiny");

    // A replacement (here forced with --replace) creates a new server first,
    // then deletes the old one.
    let worker = c
        .machines()
        .into_iter()
        .find(|m| m.attributes.as_machine().unwrap().role == capi::resource::Role::Worker)
        .unwrap();
    let old_server = o(&worker, "server_id");
    let out = c.run(
        "apply",
        &["--auto-approve", "--replace", worker.address.as_str()],
        &[],
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let after = ids(&c.servers(&tag), "ID");
    assert_eq!(after.len(), 4);
    assert!(!after.contains(&old_server), "the worker was not replaced");
    let plan = c.run("plan", &["--detailed-exitcode"], &[]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));

    // Destroy: nothing of this state is left in the project.
    let t1 = Instant::now();
    c.destroy_ok();
    let destroy_secs = t1.elapsed().as_secs_f64();
    c.assert_nothing_left(&tag);
    let _ = std::fs::write(
        repo().join("target/devcloud/openstack-measure.json"),
        serde_json::json!({"apply_1cp_3w_seconds": apply_secs, "destroy_1cp_3w_seconds": destroy_secs}).to_string(),
    );
    eprintln!("openstack: apply 1 CP + 3 workers {apply_secs:.1}s, destroy {destroy_secs:.1}s");
}

/// A smaller cluster without a load balancer (floating IP on the first
/// control-plane machine), as a capi manifest of its own.
fn small_cluster(dir: &Path, name: &str, worker_flavor: &str, image: &str) -> PathBuf {
    let yaml = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: {name}-cloud-config}}
data:
  clouds.yaml: ${{OPENSTACK_CLOUD_YAML_B64}}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata: {{name: {name}}}
spec:
  controlPlaneRef: {{apiGroup: controlplane.cluster.x-k8s.io, kind: KubeadmControlPlane, name: {name}-cp}}
  infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: OpenStackCluster, name: {name}}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: OpenStackCluster
metadata: {{name: {name}}}
spec:
  identityRef: {{cloudName: devcloud-demo, name: {name}-cloud-config}}
  externalNetwork: {{filter: {{name: public}}}}
  managedSubnets: [{{cidr: 10.8.0.0/24}}]
  managedSecurityGroups: {{allowAllInClusterTraffic: true}}
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata: {{name: {name}-cp}}
spec:
  replicas: 1
  version: v1.31.2
  machineTemplate:
    spec:
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: OpenStackMachineTemplate, name: {name}-cp}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: OpenStackMachineTemplate
metadata: {{name: {name}-cp}}
spec:
  template:
    spec:
      flavor: {{filter: {{name: m1.tiny}}}}
      image: {{filter: {{name: tiny}}}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: OpenStackMachineTemplate
metadata: {{name: {name}-md-{worker_flavor}-{image}}}
spec:
  template:
    spec:
      flavor: {{filter: {{name: {worker_flavor}}}}}
      image: {{filter: {{name: {image}}}}}
---
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {{name: {name}-md}}
spec: {{template: {{spec: {{}}}}}}
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata: {{name: {name}-md}}
spec:
  clusterName: {name}
  replicas: 2
  template:
    spec:
      clusterName: {name}
      version: v1.31.2
      bootstrap: {{configRef: {{apiGroup: bootstrap.cluster.x-k8s.io, kind: KubeadmConfigTemplate, name: {name}-md}}}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: OpenStackMachineTemplate, name: {name}-md-{worker_flavor}-{image}}}
"#
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p
}

#[test]
fn server_deleted_behind_capis_back_is_reported_and_recreated() {
    let Some(clouds) = clouds_yaml() else { return };
    let name = cluster_name("drift");
    let tmp = tempfile::tempdir().unwrap();
    let f = small_cluster(tmp.path(), &name, "m1.tiny", "tiny");
    let c = Cluster::new(&clouds, &name, vec![f]);
    c.apply_ok();
    let tag = c.tag();
    // The API floating IP follows the control-plane machine.
    let st = c.state();
    let lb = st.get(format!("{name}/loadbalancer").as_str()).unwrap();
    assert_eq!(lb.observed["mode"], "floating-ip");
    let cp = c
        .machines()
        .into_iter()
        .find(|m| m.attributes.as_machine().unwrap().role == capi::resource::Role::ControlPlane)
        .unwrap();
    let fip = os(
        &clouds,
        &[
            "floating",
            "ip",
            "show",
            lb.observed["floating_ip_id"].as_str().unwrap(),
        ],
    );
    assert_eq!(fip["port_id"], cp.observed["port_id"]);

    let victim = c
        .machines()
        .into_iter()
        .find(|m| m.attributes.as_machine().unwrap().role == capi::resource::Role::Worker)
        .unwrap();
    os_ok(
        &clouds,
        &[
            "server",
            "delete",
            "--wait",
            victim.observed["server_id"].as_str().unwrap(),
        ],
    );
    let plan = c.run("plan", &["--detailed-exitcode"], &[]);
    let out = stdout(&plan);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "drift means changes:\n{out}\n{}",
        stderr(&plan)
    );
    assert!(
        out.contains(victim.address.as_str()) && out.contains("deleted outside capi"),
        "{out}"
    );
    c.apply_ok();
    let servers = c.servers(&tag);
    assert_eq!(servers.len(), 3, "recreated: {servers:#?}");
    assert_eq!(ids(&servers, "Status"), vec!["ACTIVE", "ACTIVE", "ACTIVE"]);
    let plan = c.run("plan", &["--detailed-exitcode"], &[]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));

    // CAPO's immutability at plan time: the subnet CIDR cannot change
    // (refused, naming the field); security-group rules can (in place).
    let text = std::fs::read_to_string(&c.files[0]).unwrap();
    let cidr = tmp.path().join("cidr.yaml");
    std::fs::write(&cidr, text.replace("10.8.0.0/24", "10.9.0.0/24")).unwrap();
    let mut c = c;
    let original = std::mem::replace(&mut c.files, vec![cidr]);
    let plan = c.run("plan", &[], &[]);
    let out = format!("{}{}", stdout(&plan), stderr(&plan));
    assert!(!plan.status.success(), "{out}");
    assert!(
        out.contains("spec.managedSubnets") && out.contains("cannot change"),
        "{out}"
    );
    let rules = tmp.path().join("rules.yaml");
    std::fs::write(
        &rules,
        text.replace(
            "allowAllInClusterTraffic: true",
            "allowAllInClusterTraffic: false",
        ),
    )
    .unwrap();
    c.files = vec![rules];
    c.apply_ok();
    let net = c
        .state()
        .resources
        .into_iter()
        .find(|r| r.address.as_str().ends_with("/network"))
        .unwrap();
    let cp_sg = net.observed["security_groups"]["controlplane"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = os(
        &clouds,
        &["security", "group", "rule", "list", &cp_sg, "--long"],
    );
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["Port Range"] == "2379:2380"),
        "etcd rule after allowAllInClusterTraffic: false: {listed}"
    );
    c.files = original;
    c.destroy_ok();
    c.assert_nothing_left(&tag);
}

#[test]
fn kill_between_server_create_and_state_write_adopts_the_server() {
    let Some(clouds) = clouds_yaml() else { return };
    let name = cluster_name("crash");
    let tmp = tempfile::tempdir().unwrap();
    let f = small_cluster(tmp.path(), &name, "m1.tiny", "tiny");
    let c = Cluster::new(&clouds, &name, vec![f]);
    // The process dies right after Nova accepted the 2nd server.
    let o = c.run(
        "apply",
        &["--auto-approve"],
        &[("CAPI_OPENSTACK_CRASH_AFTER_SERVER_CREATE", "2")],
    );
    assert!(!o.status.success(), "the apply was killed:\n{}", stderr(&o));
    assert!(
        stderr(&o).contains("exiting as if killed"),
        "{}",
        stderr(&o)
    );
    let tag = c.tag();
    // The 2nd create was accepted (a 3rd may have been in flight); the state
    // knows only the control plane.
    let before = c.servers(&tag);
    assert!(before.len() >= 2, "servers after the kill: {before:#?}");
    c.apply_ok();
    let after = c.servers(&tag);
    let names: Vec<String> = ids(&after, "Name");
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(names, unique, "duplicate servers: {after:#?}");
    assert_eq!(after.len(), 3);
    for s in &before {
        assert!(
            after.iter().any(|a| a["ID"] == s["ID"]),
            "server {} was adopted, not replaced",
            s["Name"]
        );
    }
    let in_state: Vec<String> = {
        let mut v: Vec<String> = c
            .machines()
            .iter()
            .map(|m| m.observed["server_id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(in_state, ids(&after, "ID"));
    c.destroy_ok();
    c.assert_nothing_left(&tag);
}

#[test]
fn server_in_error_and_missing_image_are_clear_errors() {
    let Some(clouds) = clouds_yaml() else { return };
    let name = cluster_name("err");
    let tmp = tempfile::tempdir().unwrap();
    let f = small_cluster(tmp.path(), &name, "capi-unschedulable", "tiny");
    let c = Cluster::new(&clouds, &name, vec![f.clone()]);
    let o = c.apply();
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!o.status.success());
    assert!(
        err.contains("went to ERROR") && err.contains("No valid host"),
        "{err}"
    );
    let tag = c.tag();
    // The state is consistent: the workers are not recorded as ready, no
    // server in ERROR is left behind, and a plan still works.
    assert!(c.servers(&tag).iter().all(|s| s["Status"] == "ACTIVE"));
    let plan = c.run("plan", &[], &[]);
    assert!(plan.status.success(), "{}", stderr(&plan));

    // An image that does not exist: refused before any server is created.
    let f2 = small_cluster(tmp.path(), &name, "m1.tiny", "no-such-image");
    let c2 = Cluster {
        dir: c.dir,
        clouds: clouds.clone(),
        vars: c.vars.clone(),
        files: vec![f2],
    };
    let o = c2.apply();
    let err = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!o.status.success());
    assert!(
        err.contains("image name \"no-such-image\" does not exist"),
        "{err}"
    );
    assert_eq!(c2.servers(&tag).len(), 1, "only the control plane");
    c2.destroy_ok();
    c2.assert_nothing_left(&tag);
}
