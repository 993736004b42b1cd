//! Tests against a real Docker Engine (see docs/providers/docker.md).
//!
//! They use the offline test images of `scripts/setup.d/20-docker.sh` (run
//! here when missing): `capi-test/node:v1` (busybox + a fake kubeadm that
//! records its calls) and `capi-test/haproxy:lb` (a stand-in haproxy that
//! logs every load and the configuration it sees). Containers are
//! unprivileged. Without an engine the tests skip with a message, except
//! under `CAPI_CI=1`, where that is a failure. Every test has its own cluster
//! and network names, and a guard removes what it made even on failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Once;

use capi::state::StateStore;

use crate::common::*;

const NODE_IMAGE: &str = "capi-test/node:v1";

fn docker(args: &[&str]) -> (bool, String) {
    match Command::new("docker").args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                stdout(&o),
                if o.status.success() {
                    String::new()
                } else {
                    stderr(&o)
                }
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

fn docker_ok(args: &[&str]) -> String {
    let (ok, out) = docker(args);
    assert!(ok, "docker {args:?} failed: {out}");
    out
}

/// A live `docker events` stream of one cluster's container creates and
/// destroys. It ends at a sentinel container created (and removed) with the
/// same label key, so no event of the cluster can still be in flight.
struct EventWatch {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    cluster: String,
}

impl EventWatch {
    fn start(cluster: &str, sentinel: &str) -> EventWatch {
        use std::io::BufRead;
        let mut child = Command::new("docker")
            .args([
                "events",
                "--filter",
                "type=container",
                "--filter",
                "event=create",
                "--filter",
                "event=destroy",
                "--filter",
                "label=io.x-k8s.kind.cluster",
                "--format",
                "{{.Action}} {{.Actor.Attributes.name}} {{index .Actor.Attributes \"io.x-k8s.kind.role\"}}",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker events");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        // The stream is subscribed once it reports a marker of our own.
        let watch = EventWatch {
            child,
            lines,
            cluster: cluster.to_string(),
        };
        let start = format!("{sentinel}-start");
        watch.mark(&start);
        watch.collect_until(&start);
        watch
    }

    fn mark(&self, name: &str) {
        docker_ok(&[
            "create",
            "--name",
            name,
            "--label",
            &format!("io.x-k8s.kind.cluster={name}"),
            NODE_IMAGE,
        ]);
        docker_ok(&["rm", "-f", name]);
    }

    /// This cluster's (action, container, role) events until the marker's
    /// destroy arrives.
    fn collect_until(&self, marker: &str) -> Vec<(String, String, String)> {
        let mut seq = Vec::new();
        loop {
            let l = self
                .lines
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("docker events: no {marker} after {seq:?}: {e}"));
            let p: Vec<&str> = l.split_whitespace().collect();
            if p.len() >= 2 && p[1] == marker && p[0] == "destroy" {
                return seq;
            }
            if p.len() == 3 && p[1].starts_with(&format!("{}-", self.cluster)) {
                seq.push((p[0].to_string(), p[1].to_string(), p[2].to_string()));
            }
        }
    }

    fn finish(mut self, sentinel: &str) -> Vec<(String, String, String)> {
        self.mark(sentinel);
        let seq = self.collect_until(sentinel);
        let _ = self.child.kill();
        let _ = self.child.wait();
        seq
    }
}

static SETUP: Once = Once::new();

/// Is there an engine with the test images? Skips visibly, or fails under CI.
fn engine() -> bool {
    let ci = std::env::var("CAPI_CI").as_deref() == Ok("1");
    if std::env::var("DOCKER_HOST")
        .is_ok_and(|h| h.starts_with("unix://") && !Path::new(&h[7..]).exists())
        || !docker(&["info"]).0
    {
        assert!(
            !ci,
            "CAPI_CI=1: no Docker Engine answers; the Docker tests must run in CI"
        );
        eprintln!("SKIPPED: no Docker Engine answers (docker info failed); the Docker provider tests did not run");
        return false;
    }
    SETUP.call_once(|| {
        if !docker(&["image", "inspect", NODE_IMAGE]).0 {
            let o = Command::new(repo().join("scripts/setup.d/20-docker.sh"))
                .output()
                .unwrap();
            eprintln!("{}{}", stdout(&o), stderr(&o));
        }
    });
    if !docker(&["image", "inspect", NODE_IMAGE]).0 {
        assert!(
            !ci,
            "CAPI_CI=1: the test image {NODE_IMAGE} could not be built"
        );
        eprintln!("SKIPPED: the test image {NODE_IMAGE} could not be built (scripts/setup.d/20-docker.sh)");
        return false;
    }
    true
}

/// One test's cluster: its directory, names, and a guard that removes
/// everything carrying its cluster label when dropped.
struct TestCluster {
    dir: tempfile::TempDir,
    name: String,
    network: String,
    vars: BTreeMap<&'static str, String>,
}

impl TestCluster {
    fn new(tag: &str) -> TestCluster {
        let name = format!("dk{tag}{}", std::process::id() % 100000);
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(example("docker/cluster.yaml"), dir.path().join("c.yaml")).unwrap();
        let vars = BTreeMap::from([
            ("CLUSTER_NAME", name.clone()),
            ("DOCKER_NODE_IMAGE", NODE_IMAGE.to_string()),
            ("DOCKER_LB_IMAGE_REPOSITORY", "capi-test".to_string()),
            ("DOCKER_LB_IMAGE_TAG", "lb".to_string()),
            ("CONTROL_PLANE_MACHINE_COUNT", "1".to_string()),
            ("WORKER_MACHINE_COUNT", "2".to_string()),
        ]);
        TestCluster {
            network: format!("{name}-net"),
            dir,
            name,
            vars,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = capi(self.path());
        c.env("DOCKER_NETWORK", &self.network)
            .env("CAPI_DOCKER_PRIVILEGED", "false")
            .env_remove("CAPI_DOCKER_CRASH")
            .args(args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }

    fn apply(&self) -> std::process::Output {
        let o = self.run(&["apply", "--auto-approve", "-f", "c.yaml"]);
        assert!(
            o.status.success(),
            "apply failed:\n{}\n{}",
            stdout(&o),
            stderr(&o)
        );
        o
    }

    fn plan_code(&self) -> (i32, String) {
        let o = self.run(&["plan", "--detailed-exitcode", "-f", "c.yaml"]);
        (
            o.status.code().unwrap_or(-1),
            format!("{}{}", stdout(&o), stderr(&o)),
        )
    }

    /// Containers of this cluster: name → (role, state, image, id).
    fn containers(&self) -> BTreeMap<String, (String, String, String, String)> {
        docker_ok(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.x-k8s.kind.cluster={}", self.name),
            "--format",
            "{{.Names}}|{{.Label \"io.x-k8s.kind.role\"}}|{{.State}}|{{.Image}}|{{.ID}}",
        ])
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.split('|').collect();
            (
                p[0].to_string(),
                (
                    p[1].to_string(),
                    p[2].to_string(),
                    p[3].to_string(),
                    p[4].to_string(),
                ),
            )
        })
        .collect()
    }

    fn machines(&self, role: &str) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|(_, v)| v.0 == role)
            .map(|(k, _)| k)
            .collect()
    }

    fn volumes(&self) -> Vec<String> {
        docker_ok(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.x-k8s.kind.cluster={}", self.name),
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }

    fn exec(&self, container: &str, script: &str) -> String {
        docker_ok(&["exec", container, "sh", "-c", script])
    }

    fn lb(&self) -> String {
        format!("{}-lb", self.name)
    }

    /// The LB stand-in's log: one entry per load (start or SIGHUP) with the
    /// configuration it saw.
    fn lb_loads(&self) -> Vec<String> {
        let log = self.exec(&self.lb(), "cat /var/log/haproxy-reloads.log");
        log.split("=== load ").skip(1).map(str::to_string).collect()
    }

    fn state(&self) -> capi::state::State {
        StateStore::new(self.path().join("capi.state.json"))
            .load()
            .unwrap()
            .expect("state")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.x-k8s.kind.cluster={}", self.name),
        ])
        .1;
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
        for v in self.volumes() {
            let _ = docker(&["volume", "rm", "-f", &v]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// Seconds of host uptime at which `kubeadm <verb>` ran in a container (the
/// fake kubeadm stamps each call).
fn kubeadm_calls(tc: &TestCluster, container: &str) -> Vec<(f64, String)> {
    tc.exec(container, "cat /var/log/kubeadm.log 2>/dev/null || true")
        .lines()
        .filter_map(|l| {
            let (t, rest) = l.split_once(' ')?;
            Some((t.parse().ok()?, rest.to_string()))
        })
        .collect()
}

fn haproxy_check(cfg: &str) {
    let Ok(o) = Command::new("haproxy").arg("-v").output() else {
        assert!(
            std::env::var("CAPI_CI").as_deref() != Ok("1"),
            "CAPI_CI=1: haproxy is not installed"
        );
        eprintln!("SKIPPED: haproxy is not installed; the rendered configuration was not checked with haproxy -c");
        return;
    };
    assert!(o.status.success());
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), cfg).unwrap();
    let o = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "haproxy -c rejects the configuration:\n{cfg}\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn rendered_haproxy_configuration_passes_haproxy_check() {
    use capi::provider::docker::haproxy::{render, Backend};
    let backends = vec![
        Backend {
            name: "a-cp-0".into(),
            address: "172.18.0.3".into(),
            weight: 100,
        },
        Backend {
            name: "a-cp-1".into(),
            address: "172.18.0.4".into(),
            weight: 0,
        },
    ];
    haproxy_check(&render(6443, &backends, false));
    haproxy_check(&render(6443, &[], false));
    haproxy_check(&render(7443, &backends[..1], true));
}

#[test]
fn no_engine_is_one_clear_error_naming_the_socket() {
    let tc = TestCluster::new("none");
    let o = tc
        .cmd(&["apply", "--auto-approve", "-f", "c.yaml"])
        .env("DOCKER_HOST", "unix:///nonexistent/capi/docker.sock")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("unix:///nonexistent/capi/docker.sock"),
        "{err}"
    );
    assert!(err.contains("no Docker Engine answers"), "{err}");
    assert_eq!(
        err.matches("docker.sock").count(),
        1,
        "one error, not a stack of causes: {err}"
    );
    assert!(!err.contains("Caused by"), "{err}");
}

#[test]
fn apply_one_control_plane_two_workers_then_destroy() {
    if !engine() {
        return;
    }
    let tc = TestCluster::new("full");
    let out = tc.apply();
    let text = format!("{}{}", stdout(&out), stderr(&out));

    // The engine holds exactly what the manifests describe.
    let all = tc.containers();
    let cps = tc.machines("control-plane");
    let workers = tc.machines("worker");
    assert_eq!(cps.len(), 1, "{all:?}");
    assert_eq!(workers.len(), 2, "{all:?}");
    let lb = all.get(&tc.lb()).expect("the load balancer container");
    assert_eq!(lb.0, "external-load-balancer");
    assert_eq!(lb.2, "capi-test/haproxy:lb");
    for (name, (_, state, image, _)) in &all {
        assert_eq!(state, "running", "{name}");
        if name != &tc.lb() {
            assert_eq!(image, NODE_IMAGE);
            assert!(name.starts_with(&tc.name), "CAPD's naming: {name}");
        }
    }
    assert_eq!(tc.volumes().len(), 3, "one /var volume per machine");

    // Labels: CAPD's and capi's (lineage, address, identity).
    let state = tc.state();
    for r in state
        .resources
        .iter()
        .filter(|r| r.attributes.as_machine().is_some())
    {
        let m = r.attributes.as_machine().unwrap();
        let c = r.observed["container"].as_str().unwrap();
        let labels: BTreeMap<String, String> =
            serde_json::from_str(&docker_ok(&["inspect", "-f", "{{json .Config.Labels}}", c]))
                .unwrap();
        assert_eq!(labels["io.x-k8s.kind.cluster"], tc.name);
        assert_eq!(labels["io.x-k8s.kind.role"], m.role.as_str());
        assert_eq!(labels[capi::provider::LABEL_LINEAGE], state.lineage);
        assert_eq!(labels[capi::provider::LABEL_ADDRESS], r.address.as_str());
        assert_eq!(labels[capi::provider::LABEL_IDENTITY], m.identity.as_str());
        assert_eq!(
            docker_ok(&["inspect", "-f", "{{.Config.Hostname}}", c]).trim(),
            c
        );
        let host: serde_json::Value =
            serde_json::from_str(&docker_ok(&["inspect", "-f", "{{json .HostConfig}}", c]))
                .unwrap();
        assert_eq!(host["Privileged"], false);
        assert!(
            host["Tmpfs"].get("/run").is_some() && host["Tmpfs"].get("/tmp").is_some(),
            "{host}"
        );
        assert!(
            host["SecurityOpt"]
                .to_string()
                .contains("seccomp=unconfined"),
            "{host}"
        );
        assert_eq!(r.observed["provider_id"], format!("docker:////{c}"));
        assert_eq!(r.observed["bootstrap"], "succeeded");
        // Network: the test's own.
        assert!(
            docker_ok(&["inspect", "-f", "{{json .NetworkSettings.Networks}}", c])
                .contains(&tc.network)
        );
    }

    // Bootstrap: files written (content, permissions), commands run in order.
    let cp = &cps[0];
    assert_eq!(
        tc.exec(cp, "cat /etc/capi-example/motd"),
        format!("control plane of {}\n", tc.name)
    );
    assert_eq!(
        tc.exec(cp, "stat -c %a /etc/capi-example/motd").trim(),
        "600"
    );
    assert_eq!(
        tc.exec(cp, "stat -c %a /etc/kubernetes/pki/ca.key").trim(),
        "600"
    );
    assert!(tc
        .exec(cp, "cat /etc/kubernetes/pki/ca.crt")
        .contains("BEGIN CERTIFICATE"));
    assert!(tc
        .exec(cp, "cat /run/kubeadm/kubeadm.yaml")
        .contains("kind: InitConfiguration"));
    assert_eq!(
        tc.exec(cp, "cat /run/cluster-api/bootstrap-success.complete")
            .trim(),
        "success"
    );
    assert_eq!(
        tc.exec(cp, "cat /run/cluster-api/capd.bootstrap.started")
            .trim(),
        "started"
    );
    assert!(
        tc.exec(cp, "ls -A /.capi-staging").trim().is_empty(),
        "staged files are removed"
    );
    let init = kubeadm_calls(&tc, cp);
    assert!(init[0].1.starts_with("kubeadm init --ignore-preflight-errors=SystemVerification,Swap,FileContent--proc-sys-net-bridge-bridge-nf-call-iptables"), "{init:?}");
    assert!(
        init[0].1.contains("--config /run/kubeadm/kubeadm.yaml"),
        "{init:?}"
    );
    assert!(
        init.iter()
            .any(|(_, c)| c.starts_with("kubeadm token create (token hidden)")),
        "token registered through the control plane: {init:?}"
    );
    for w in &workers {
        let calls = kubeadm_calls(&tc, w);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(
            calls[0].1.contains("kubeadm join")
                && calls[0].1.contains("/run/kubeadm/kubeadm-join-config.yaml")
        );
        assert!(
            calls[0].0 > init[0].0,
            "init before joins: {init:?} {calls:?}"
        );
        assert!(tc
            .exec(w, "cat /run/kubeadm/kubeadm-join-config.yaml")
            .contains(&format!(
                "apiServerEndpoint: {}",
                state
                    .resources
                    .iter()
                    .find(|r| r.address.as_str().ends_with("/loadbalancer"))
                    .unwrap()
                    .observed["endpoint"]
                    .as_str()
                    .unwrap()
            )));
        assert_eq!(
            tc.exec(
                w,
                "test -e /etc/kubernetes/pki/ca.key && echo yes || echo no"
            )
            .trim(),
            "no",
            "workers get no CA keys"
        );
    }

    // The LB: its endpoint is the control-plane endpoint; its configuration
    // lists the control plane; it passes haproxy -c.
    let lbr = state
        .resources
        .iter()
        .find(|r| r.address.as_str().ends_with("/loadbalancer"))
        .unwrap();
    let lb_ip = docker_ok(&[
        "inspect",
        "-f",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            tc.network
        ),
        &tc.lb(),
    ]);
    assert_eq!(lbr.observed["endpoint"], format!("{}:6443", lb_ip.trim()));
    let cfg = tc.exec(&tc.lb(), "cat /usr/local/etc/haproxy/haproxy.cfg");
    assert!(
        cfg.contains(&format!("server {cp} ")) && cfg.contains("weight 100"),
        "{cfg}"
    );
    haproxy_check(&cfg);
    let loads = tc.lb_loads();
    assert!(
        loads.len() >= 2 && loads.last().unwrap().contains(&format!("server {cp} ")),
        "reloaded with the control plane: {loads:?}"
    );

    // Secrets never appear in the output.
    let pki = state
        .resources
        .iter()
        .find(|r| r.address.as_str().ends_with("/pki"))
        .unwrap();
    let token = state
        .resources
        .iter()
        .find(|r| r.address.as_str().ends_with("/token"))
        .unwrap();
    for s in pki.sensitive.values().chain(token.sensitive.values()) {
        for line in s
            .lines()
            .filter(|l| l.len() > 20 && !l.starts_with("-----"))
        {
            assert!(!text.contains(line), "a secret appears in the apply output");
        }
    }

    crate::schema::assert_state_valid(&tc.path().join("capi.state.json"));

    // Nothing to do afterwards; refresh reads everything back.
    let (code, out) = tc.plan_code();
    assert_eq!(code, 0, "{out}");

    // Destroy: nothing left, and the network (made by capi, now unused) goes.
    let o = tc.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(tc.containers().is_empty(), "{:?}", tc.containers());
    assert!(tc.volumes().is_empty(), "{:?}", tc.volumes());
    assert!(
        !docker(&["network", "inspect", &tc.network]).0,
        "the unused network made by capi is removed"
    );
}

#[test]
fn network_in_use_by_a_foreign_container_is_kept() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("shared");
    tc.vars.insert("WORKER_MACHINE_COUNT", "0".into());
    tc.apply();
    // A container that is not capi's joins the network.
    let foreign = format!("{}-foreign", tc.name);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--label",
        &format!("io.x-k8s.kind.cluster={}", tc.name),
        "--network",
        &tc.network,
        NODE_IMAGE,
    ]);
    let o = tc.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        docker(&["network", "inspect", &tc.network]).0,
        "the network is kept while something uses it"
    );
    assert_eq!(
        tc.containers().keys().cloned().collect::<Vec<_>>(),
        vec![foreign]
    );
}

/// Two states with the same cluster name on one engine: the second's load
/// balancer is refused (the container is the first's), and the replacement
/// of that failed create, which its next apply plans, must not remove the
/// first state's container; neither may its destroy.
#[test]
fn another_states_containers_are_never_removed() {
    if !engine() {
        return;
    }
    let mut first = TestCluster::new("own");
    first.vars.insert("WORKER_MACHINE_COUNT", "0".into());
    first.apply();
    let before = first.containers();
    assert_eq!(before.len(), 2, "{before:?}");
    let mut second = TestCluster::new("own");
    second.vars.insert("WORKER_MACHINE_COUNT", "0".into());
    assert_eq!(second.name, first.name);
    for _ in 0..2 {
        let o = second.run(&["apply", "--auto-approve", "-f", "c.yaml"]);
        assert!(!o.status.success(), "{}", stdout(&o));
        assert!(
            stderr(&o).contains("is not") && stderr(&o).contains("of this state"),
            "{}",
            stderr(&o)
        );
        assert_eq!(
            first.containers(),
            before,
            "the first state's containers changed"
        );
    }
    let o = second.run(&["destroy", "--auto-approve"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        first.containers(),
        before,
        "the first state's containers changed"
    );
    let (code, out) = first.plan_code();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn scale_worker_upgrade_and_control_plane_replacement() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("roll");
    tc.vars.insert("WORKER_MACHINE_COUNT", "1".into());
    tc.apply();
    let lb_id = tc.containers()[&tc.lb()].3.clone();
    let cp0 = tc.machines("control-plane");

    // Scale up, then down.
    tc.vars.insert("WORKER_MACHINE_COUNT", "3".into());
    tc.apply();
    assert_eq!(tc.machines("worker").len(), 3);
    tc.vars.insert("WORKER_MACHINE_COUNT", "2".into());
    tc.apply();
    let before = tc.machines("worker");
    assert_eq!(before.len(), 2);
    assert_eq!(
        tc.volumes().len(),
        3,
        "the removed worker's volume went with it"
    );

    // Worker version change: new workers replace the old; LB untouched.
    let loads = tc.lb_loads().len();
    tc.vars
        .insert("WORKER_KUBERNETES_VERSION", "v1.31.3".into());
    tc.apply();
    let after = tc.machines("worker");
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|w| !before.contains(w)),
        "{before:?} → {after:?}"
    );
    assert_eq!(
        tc.containers()[&tc.lb()].3,
        lb_id,
        "the LB container is kept"
    );
    assert_eq!(
        tc.lb_loads().len(),
        loads,
        "worker changes do not reload the LB"
    );
    assert_eq!(tc.machines("control-plane"), cp0);

    // Control-plane replacement: the new one joins, the old one is drained
    // (weight 0, reload) before it goes, then the LB lists only the new one.
    tc.vars.insert("KUBERNETES_VERSION", "v1.31.3".into());
    tc.vars
        .insert("WORKER_KUBERNETES_VERSION", "v1.31.3".into());
    tc.apply();
    let cp1 = tc.machines("control-plane");
    assert_eq!(cp1.len(), 1);
    assert_ne!(cp1, cp0);
    let (old, new) = (&cp0[0], &cp1[0]);
    assert!(
        kubeadm_calls(&tc, new)[0].1.contains("kubeadm join"),
        "a replacement control plane joins"
    );
    let loads = tc.lb_loads();
    let both = loads
        .iter()
        .position(|l| {
            l.contains(&format!("server {old} "))
                && l.contains(&format!("server {new} "))
                && !l.contains(" weight 0 ")
        })
        .expect("a configuration with both members");
    let drained = loads
        .iter()
        .position(|l| {
            l.contains(&format!("server {old} "))
                && l.lines()
                    .any(|x| x.contains(&format!("server {old} ")) && x.contains("weight 0 "))
        })
        .expect("the old member drained at weight 0");
    let last = loads.last().unwrap();
    assert!(both < drained, "{loads:?}");
    assert!(
        drained < loads.len() - 1,
        "removed after draining: {loads:?}"
    );
    assert!(
        !last.contains(&format!("server {old} ")) && last.contains(&format!("server {new} ")),
        "{last}"
    );
    assert_eq!(
        tc.containers()[&tc.lb()].3,
        lb_id,
        "the LB is reconfigured, not recreated"
    );
    let (code, out) = tc.plan_code();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn container_removed_behind_capis_back_is_planned_and_recreated() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("drift");
    tc.vars.insert("WORKER_MACHINE_COUNT", "1".into());
    tc.apply();
    let w = tc.machines("worker")[0].clone();
    docker_ok(&["rm", "-f", "-v", &w]);
    let (code, out) = tc.plan_code();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no longer exists") || out.contains("missing"),
        "{out}"
    );
    assert!(out.contains(&w), "{out}");
    tc.apply();
    let now = tc.machines("worker");
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], w);
    // A stopped container is drift too.
    docker_ok(&["stop", "-t", "1", &now[0]]);
    let (code, out) = tc.plan_code();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("exited"), "{out}");
    tc.apply();
    let (code, out) = tc.plan_code();
    assert_eq!(code, 0, "{out}");
    // The load balancer removed: recreated, with the existing control plane
    // in its configuration.
    docker_ok(&["rm", "-f", &tc.lb()]);
    let (code, out) = tc.plan_code();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("loadbalancer missing"), "{out}");
    tc.apply();
    let cp = &tc.machines("control-plane")[0];
    let cfg = tc.exec(&tc.lb(), "cat /usr/local/etc/haproxy/haproxy.cfg");
    assert!(cfg.contains(&format!("server {cp} ")), "{cfg}");
    let (code, out) = tc.plan_code();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn imported_container_is_adopted_not_duplicated() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("imp");
    tc.vars.insert("WORKER_MACHINE_COUNT", "1".into());
    tc.apply();
    let w = tc.machines("worker")[0].clone();
    let id = tc.containers()[&w].3.clone();
    let state = tc.state();
    let address = state
        .resources
        .iter()
        .find(|r| r.observed.get("container").and_then(|c| c.as_str()) == Some(w.as_str()))
        .map(|r| r.address.to_string())
        .expect("the worker in the state");
    let o = tc.run(&["state", "rm", &address]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The load balancer's container is not this machine.
    let o = tc.run(&["import", &address, &tc.lb(), "-f", "c.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("is {}/loadbalancer of this state", tc.name)),
        "{}",
        stderr(&o)
    );
    let o = tc.run(&["import", &address, &id, "-f", "c.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = tc.containers();
    tc.apply();
    assert_eq!(tc.containers(), before, "apply adopted, created nothing");
    let joins = kubeadm_calls(&tc, &w)
        .into_iter()
        .filter(|(_, x)| x.contains("join"))
        .count();
    assert_eq!(joins, 1, "bootstrap ran once");
    let (code, out) = tc.plan_code();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn process_killed_after_container_create_is_adopted() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("crash");
    tc.vars.insert("WORKER_MACHINE_COUNT", "1".into());
    for point in ["create:2", "ready:1"] {
        let o = tc
            .cmd(&["apply", "--auto-approve", "-f", "c.yaml"])
            .env("CAPI_DOCKER_CRASH", point)
            .output()
            .unwrap();
        assert!(!o.status.success(), "the hook kills the process ({point})");
        assert!(stderr(&o).contains("CAPI_DOCKER_CRASH"), "{}", stderr(&o));
        tc.apply();
        let all = tc.containers();
        assert_eq!(
            tc.machines("control-plane").len(),
            1,
            "{point}: no duplicate: {all:?}"
        );
        assert_eq!(
            tc.machines("worker").len(),
            1,
            "{point}: no duplicate: {all:?}"
        );
        let state = tc.state();
        let machines: Vec<_> = state
            .resources
            .iter()
            .filter(|r| r.attributes.as_machine().is_some())
            .collect();
        assert_eq!(machines.len(), 2);
        for m in machines {
            assert!(all.contains_key(m.observed["container"].as_str().unwrap()));
            assert_eq!(m.observed["bootstrap"], "succeeded");
        }
        for c in tc
            .machines("control-plane")
            .iter()
            .chain(tc.machines("worker").iter())
        {
            let calls = kubeadm_calls(&tc, c);
            assert_eq!(
                calls
                    .iter()
                    .filter(|(_, x)| x.contains("init") || x.contains("join"))
                    .count(),
                1,
                "bootstrap ran once: {calls:?}"
            );
        }
        let (code, out) = tc.plan_code();
        assert_eq!(code, 0, "{point}: {out}");
        // Next round: replace the worker, crashing once it is bootstrapped.
        tc.vars
            .insert("WORKER_KUBERNETES_VERSION", "v1.31.3".into());
    }
}

#[test]
fn failing_bootstrap_command_is_recorded_and_the_machine_replaced() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("fail");
    tc.vars.insert("WORKER_MACHINE_COUNT", "1".into());
    // The worker numbered 0 fails its pre-kubeadm command; its replacement
    // (another number) succeeds.
    let m = std::fs::read_to_string(tc.path().join("c.yaml")).unwrap();
    let m = m.replace(
        "  template:\n    spec:\n      joinConfiguration:",
        "  template:\n    spec:\n      preKubeadmCommands:\n        - 'case $(hostname) in *-0) echo boom-output; exit 7;; esac'\n      joinConfiguration:",
    );
    assert!(m.contains("boom-output"));
    std::fs::write(tc.path().join("c.yaml"), m).unwrap();
    let o = tc.run(&["apply", "--auto-approve", "-f", "c.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("exited with 7") && err.contains("boom-output"),
        "{err}"
    );
    let state = tc.state();
    let failed = state
        .resources
        .iter()
        .find(|r| {
            r.attributes
                .as_machine()
                .is_some_and(|m| m.role == capi::resource::Role::Worker)
        })
        .unwrap();
    let e = failed.error.as_ref().expect("the error is recorded");
    assert_eq!(e.exit_code, Some(7));
    assert!(
        e.command.as_deref().unwrap().contains("boom-output"),
        "{e:?}"
    );
    assert!(
        e.output_tail.as_deref().unwrap().contains("boom-output"),
        "{e:?}"
    );
    assert_eq!(failed.observed["bootstrap"], "failed");
    let failed_name = failed.observed["container"].as_str().unwrap().to_string();
    assert!(
        kubeadm_calls(&tc, &failed_name).is_empty(),
        "kubeadm never ran after the failure"
    );

    let (code, out) = tc.plan_code();
    assert_eq!(code, 2, "{out}");
    tc.apply();
    let workers = tc.machines("worker");
    assert_eq!(workers.len(), 1);
    assert_ne!(workers[0], failed_name, "the failed machine is replaced");
    let (code, out) = tc.plan_code();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn write_files_encodings_owner_append_extra_mounts_and_ignored_modules() {
    if !engine() {
        return;
    }
    use base64::Engine;
    use std::io::Write;
    let mut tc = TestCluster::new("files");
    tc.vars.insert("WORKER_MACHINE_COUNT", "1".into());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"hello gz\n").unwrap();
    let gz_b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let files = format!(
        "  template:\n    spec:\n      files:\n        - {{path: /etc/capi-test/b64, encoding: base64, content: aGVsbG8gYjY0Cg==}}\n        - {{path: /etc/capi-test/gz, encoding: gzip+base64, content: \"{gz_b64}\"}}\n        - {{path: /etc/capi-test/owned, owner: 'nobody:nogroup', permissions: '0640', content: owned}}\n        - {{path: /etc/capi-test/log, content: \"first\\n\"}}\n        - {{path: /etc/capi-test/log, content: \"second\\n\", append: true}}\n      ntp:\n        servers: [ntp.example.org]\n      joinConfiguration:"
    );
    let m = std::fs::read_to_string(tc.path().join("c.yaml"))
        .unwrap()
        .replace("  template:\n    spec:\n      joinConfiguration:", &files);
    assert!(m.contains("gzip+base64"));
    // extraMounts on the workers' template (the last DockerMachineTemplate).
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("hello"), "from the host\n").unwrap();
    let anchor = "      customImage: \"${DOCKER_NODE_IMAGE:=}\"\n";
    let at = m.rfind(anchor).unwrap() + anchor.len();
    let m = format!(
        "{}      extraMounts:\n        - {{containerPath: /mnt/host, hostPath: {}, readOnly: true}}\n{}",
        &m[..at],
        host.path().display(),
        &m[at..]
    );
    std::fs::write(tc.path().join("c.yaml"), m).unwrap();
    tc.apply();
    let w = &tc.machines("worker")[0];
    assert_eq!(tc.exec(w, "cat /etc/capi-test/b64"), "hello b64\n");
    assert_eq!(tc.exec(w, "cat /etc/capi-test/gz"), "hello gz\n");
    assert_eq!(
        tc.exec(w, "stat -c '%U:%G %a' /etc/capi-test/owned").trim(),
        "nobody:nogroup 640"
    );
    assert_eq!(tc.exec(w, "cat /etc/capi-test/log"), "first\nsecond\n");
    assert_eq!(tc.exec(w, "cat /mnt/host/hello"), "from the host\n");
    assert_eq!(
        tc.exec(w, "touch /mnt/host/x 2>/dev/null && echo rw || echo ro")
            .trim(),
        "ro"
    );
    let state = tc.state();
    let r = state
        .resources
        .iter()
        .find(|r| r.observed.get("container").and_then(|c| c.as_str()) == Some(w.as_str()))
        .unwrap();
    assert_eq!(
        r.observed["ignored_cloud_config_modules"],
        serde_json::json!(["ntp"]),
        "{:?}",
        r.observed
    );
    assert!(
        r.observed["node"]
            .as_str()
            .unwrap()
            .starts_with("not checked"),
        "{:?}",
        r.observed
    );
}

#[test]
fn machines_are_privileged_by_default_as_capd_makes_them() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("priv");
    tc.vars.insert("WORKER_MACHINE_COUNT", "0".into());
    let o = tc
        .cmd(&["apply", "--auto-approve", "-f", "c.yaml"])
        .env_remove("CAPI_DOCKER_PRIVILEGED")
        .output()
        .unwrap();
    let cp = tc.machines("control-plane");
    assert_eq!(cp.len(), 1);
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.HostConfig.Privileged}}", &cp[0]]).trim(),
        "true"
    );
    if !o.status.success() {
        // Engines that refuse privileged containers (like the one this was
        // developed on): the error says how to proceed.
        let err = stderr(&o);
        assert!(err.contains("CAPI_DOCKER_PRIVILEGED=false"), "{err}");
        eprintln!("note: this engine refuses privileged containers");
    }
}

#[test]
fn restarted_machine_is_not_bootstrapped_twice() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("restart");
    tc.vars.insert("WORKER_MACHINE_COUNT", "1".into());
    tc.apply();
    let w = tc.machines("worker")[0].clone();
    // A restart empties the /run tmpfs (and CAPD's markers with it).
    docker_ok(&["restart", "-t", "1", &w]);
    assert_eq!(
        tc.exec(
            &w,
            "test -e /run/cluster-api/bootstrap-success.complete && echo yes || echo no"
        )
        .trim(),
        "no"
    );
    assert_eq!(tc.exec(&w, "cat /var/lib/capi/succeeded").trim(), "success");
    // Resuming its create (as after a crash) adopts it without running
    // bootstrap again.
    let path = tc.path().join("capi.state.json");
    let mut store = StateStore::new(path.clone());
    let mut st = store.load().unwrap().unwrap();
    let r = st
        .resources
        .iter_mut()
        .find(|r| r.observed.get("container").and_then(|c| c.as_str()) == Some(w.as_str()))
        .unwrap();
    r.status = capi::state::Status::Creating;
    store.save(&st).unwrap();
    tc.apply();
    assert_eq!(
        tc.machines("worker"),
        vec![w.clone()],
        "adopted, not replaced"
    );
    let calls = kubeadm_calls(&tc, &w);
    assert_eq!(calls.len(), 1, "kubeadm ran once: {calls:?}");
    let (code, out) = tc.plan_code();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn failing_file_write_names_the_file() {
    if !engine() {
        return;
    }
    let mut tc = TestCluster::new("badfile");
    tc.vars.insert("WORKER_MACHINE_COUNT", "0".into());
    let m = std::fs::read_to_string(tc.path().join("c.yaml")).unwrap().replace(
        "    files:\n",
        "    files:\n      - {path: /etc/capi-test/bad, owner: 'nosuchuser:nosuchgroup', content: x}\n",
    );
    std::fs::write(tc.path().join("c.yaml"), m).unwrap();
    let o = tc.run(&["apply", "--auto-approve", "-f", "c.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("write_files /etc/capi-test/bad"), "{err}");
    let st = tc.state();
    let cp = st
        .resources
        .iter()
        .find(|r| r.attributes.as_machine().is_some())
        .unwrap();
    let e = cp.error.as_ref().unwrap();
    assert_eq!(e.command.as_deref(), Some("write_files /etc/capi-test/bad"));
    assert_eq!(e.exit_code, Some(1));
}

#[test]
fn upgrade_moves_containers_to_the_next_node_image_in_rollout_order() {
    if !engine() {
        return;
    }
    // CAPD's image mapping, offline: the test node image under the two
    // kindest/node tags the versions map to.
    for v in ["v1.31.2", "v1.31.3"] {
        docker_ok(&["tag", NODE_IMAGE, &format!("kindest/node:{v}")]);
    }
    let mut tc = TestCluster::new("upg");
    tc.vars.insert("DOCKER_NODE_IMAGE", String::new());
    tc.apply();
    let before = tc.containers();
    let lb = tc.lb();
    let old: Vec<String> = before
        .iter()
        .filter(|(n, _)| **n != lb)
        .map(|(n, c)| {
            assert_eq!(c.2, "kindest/node:v1.31.2", "{n}");
            n.clone()
        })
        .collect();
    assert_eq!(old.len(), 3, "{before:?}");
    // Watch the engine's container events live while the upgrade runs. A
    // `--since` query afterwards is not enough: the daemon keeps only its
    // last 256 events, and the bootstrap execs of parallel tests push the
    // early creates out of that buffer.
    let sentinel = format!("capi-events-end-{}", tc.name);
    let watch = EventWatch::start(&tc.name, &sentinel);

    let o = tc.run(&[
        "upgrade",
        "--to",
        "v1.31.3",
        "--auto-approve",
        "-f",
        "c.yaml",
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));

    // Every machine now runs the next image; the LB is the same container.
    let after = tc.containers();
    assert_eq!(after[&lb].3, before[&lb].3, "the LB is kept");
    let new: Vec<&String> = after
        .iter()
        .filter(|(n, _)| **n != lb)
        .map(|(n, c)| {
            assert_eq!(c.2, "kindest/node:v1.31.3", "{n}");
            assert!(!old.contains(n), "{n} was not replaced");
            n
        })
        .collect();
    assert_eq!(new.len(), 3, "{after:?}");

    // The sequence the engine saw: the control plane first (its new machine
    // created before the old one is removed, maxSurge 1), then the workers
    // with never more than replicas + maxSurge (3) of them, never fewer
    // than replicas - maxUnavailable (2).
    let seq = watch.finish(&sentinel);
    let pos = |action: &str, role: &str| -> Vec<usize> {
        seq.iter()
            .enumerate()
            .filter(|(_, e)| e.0 == action && e.2 == role)
            .map(|(i, _)| i)
            .collect()
    };
    let (cp_created, cp_destroyed) = (
        pos("create", "control-plane"),
        pos("destroy", "control-plane"),
    );
    assert_eq!((cp_created.len(), cp_destroyed.len()), (1, 1), "{seq:?}");
    assert!(
        cp_created[0] < cp_destroyed[0],
        "surge 1: create before delete: {seq:?}"
    );
    let (w_created, w_destroyed) = (pos("create", "worker"), pos("destroy", "worker"));
    assert_eq!((w_created.len(), w_destroyed.len()), (2, 2), "{seq:?}");
    assert!(
        cp_destroyed[0] < w_created[0],
        "workers follow the control plane: {seq:?}"
    );
    let mut workers = 2i32;
    for e in seq.iter().filter(|e| e.2 == "worker") {
        workers += if e.0 == "create" { 1 } else { -1 };
        assert!(
            (2..=3).contains(&workers),
            "{workers} workers at {e:?}: {seq:?}"
        );
    }
    tc.run(&["destroy", "--auto-approve", "-f", "c.yaml"]);
}

/// Networks named exactly `name`: (id, has capi's label).
fn networks_named(name: &str) -> Vec<(String, bool)> {
    docker_ok(&[
        "network",
        "ls",
        "--no-trunc",
        "--filter",
        &format!("name=^{name}$"),
        "--format",
        "{{.ID}}|{{.Label \"capi.x-k8s.io/managed\"}}",
    ])
    .lines()
    .filter_map(|l| l.split_once('|'))
    .map(|(id, managed)| (id.to_string(), managed == "true"))
    .collect()
}

/// A network created through the engine's API without its duplicate check,
/// as a race between two creates leaves it. `None` without curl.
fn create_duplicate_network(name: &str) -> Option<String> {
    let o = Command::new("curl")
        .args([
            "-sf",
            "--unix-socket",
            "/var/run/docker.sock",
            "-XPOST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!("{{\"Name\":\"{name}\",\"CheckDuplicate\":false}}"),
            "http://localhost/networks/create",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    Some(v["Id"].as_str()?.to_string())
}

/// Two clusters in one manifest, both on the test's network.
fn two_clusters(a: &TestCluster, b: &TestCluster) {
    let text = std::fs::read_to_string(example("docker/cluster.yaml")).unwrap();
    let both = format!(
        "{}\n---\n{}",
        text.replace("${CLUSTER_NAME:=docker-demo}", &a.name),
        text.replace("${CLUSTER_NAME:=docker-demo}", &b.name)
    );
    std::fs::write(a.path().join("two.yaml"), both).unwrap();
}

#[test]
fn two_clusters_in_one_apply_share_one_network_and_survive_duplicates() {
    if !engine() {
        return;
    }
    let mut a = TestCluster::new("twoa");
    let b = TestCluster::new("twob");
    a.vars.insert("WORKER_MACHINE_COUNT", "1".into());
    two_clusters(&a, &b);
    let apply = |tc: &TestCluster| {
        let o = tc.run(&["apply", "--auto-approve", "-f", "two.yaml"]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    };
    let destroy = |tc: &TestCluster| {
        let o = tc.run(&["destroy", "--auto-approve"]);
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    };

    // Both clusters create the shared network in the same apply: it is
    // created once, with capi's label, and removed by the destroy.
    apply(&a);
    let nets = networks_named(&a.network);
    assert_eq!(nets.len(), 1, "one network, not one per cluster: {nets:?}");
    assert!(nets[0].1, "capi created it: {nets:?}");
    assert_eq!(b.machines("control-plane").len(), 1);
    destroy(&a);
    assert!(networks_named(&a.network).is_empty());

    // Someone left two networks of that name (a race, another tool): capi
    // uses the oldest, removes the unused duplicate (Docker cannot start a
    // container on an ambiguous name), says so in the state, and destroy is
    // not stuck.
    let Some(first) = create_duplicate_network(&a.network) else {
        eprintln!("SKIPPED (part): curl is needed to create duplicate networks");
        return;
    };
    let second = create_duplicate_network(&a.network).expect("second network");
    assert_eq!(networks_named(&a.network).len(), 2);
    apply(&a);
    for c in a.containers().keys().chain(b.containers().keys()) {
        let id = docker_ok(&[
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").NetworkID}}}}",
                a.network
            ),
            c,
        ]);
        assert_eq!(id.trim(), first, "{c} is on the oldest network");
    }
    let state = a.state();
    let note = state
        .resources
        .iter()
        .find_map(|r| r.observed.get("note").and_then(|v| v.as_str()))
        .expect("the duplicate is recorded");
    assert!(
        note.contains("2 networks were named") && note.contains(&second[..12]),
        "{note}"
    );
    assert_eq!(networks_named(&a.network), vec![(first.clone(), false)]);
    destroy(&a);
    assert!(a.containers().is_empty() && b.containers().is_empty());
    // Not capi's: it stays.
    assert_eq!(networks_named(&a.network).len(), 1);
    for id in [first, second] {
        let _ = docker(&["network", "rm", &id]);
    }
}
