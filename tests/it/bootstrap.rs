//! Bootstrap data (CABPK): golden renderings, what CAPD would execute,
//! certificates checked with openssl, the kubeconfig, token rotation, bad
//! input, and no secret in any output.

use std::path::Path;
use std::process::Command;

use capi::bootstrap::{self, refs};
use capi::manifest::{self, Variables};
use capi::provider::cloudinit::{self, Action};

use crate::common::*;
use crate::manifests::BASE;

fn capo_vars() -> Variables {
    let mut v = Variables::new();
    for (k, val) in [
        ("CLUSTER_NAME", "capo"),
        ("OPENSTACK_CLOUD_CACERT_B64", "Y2E="),
        ("OPENSTACK_CLOUD_YAML_B64", "Y2xvdWRzOiB7fQ=="),
        ("WORKER_MACHINE_COUNT", "2"),
        ("OPENSTACK_FAILURE_DOMAIN", "nova"),
        ("KUBERNETES_VERSION", "v1.30.4"),
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
        v.set(k, val);
    }
    v
}

/// (golden name, fixture, variables): the three upstream fixtures.
fn fixtures() -> Vec<(&'static str, std::path::PathBuf, Variables)> {
    let mut out = Vec::new();
    for (name, rel, vars) in [
        (
            "capi-simple-cluster-v1beta2",
            "fixtures/upstream/cluster-api/simple-cluster.yaml",
            Variables::new(),
        ),
        (
            "capo-v1beta2",
            "fixtures/upstream/cluster-api-provider-openstack/cluster-template.yaml",
            capo_vars(),
        ),
        (
            "capo-v1beta1",
            "fixtures/upstream/cluster-api-provider-openstack/cluster-template-capi-v1beta1.yaml",
            capo_vars(),
        ),
    ] {
        if let Some(p) = shared(rel) {
            out.push((name, p, vars));
        }
    }
    out
}

/// The three renderings of a fixture's cluster: init and join-control-plane
/// from the control plane, join-worker from the first MachineDeployment.
fn renderings(path: &Path, vars: &Variables) -> Vec<(&'static str, String)> {
    let sources = manifest::read_sources(&[path.to_path_buf()], &mut std::io::empty()).unwrap();
    let m = manifest::load(sources, vars).unwrap();
    let d = capi::desired::build(&m, &Default::default()).unwrap();
    let c = &d.clusters[0];
    let cp = &c.groups[0];
    let worker = c
        .groups
        .iter()
        .find(|g| g.role == capi::resource::Role::Worker)
        .unwrap();
    vec![
        (
            "init",
            d.documents[&cp.init_document.as_ref().unwrap().0].clone(),
        ),
        (
            "join-control-plane",
            d.documents[&cp.join_document.0].clone(),
        ),
        ("join-worker", d.documents[&worker.join_document.0].clone()),
    ]
}

#[test]
fn golden_renderings_of_the_upstream_fixtures() {
    let update = std::env::var_os("CAPI_UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    for (name, path, vars) in fixtures() {
        for (role, doc) in renderings(&path, &vars) {
            let golden = repo().join(format!("tests/golden/{name}.{role}.cloud-config"));
            if update {
                std::fs::write(&golden, &doc).unwrap();
            }
            let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
                panic!(
                    "{} missing; run with CAPI_UPDATE_GOLDEN=1 and review",
                    golden.display()
                )
            });
            assert_eq!(
                doc,
                expected,
                "{name} {role} differs from {}",
                golden.display()
            );
            checked += 1;
        }
    }
    if checked == 0 {
        eprintln!("SKIPPED: golden renderings need ../shared/fixtures");
        return;
    }
    // The same CAPO cluster written in v1beta1 and in v1beta2 renders the same.
    for role in ["init", "join-control-plane", "join-worker"] {
        let a = std::fs::read_to_string(
            repo().join(format!("tests/golden/capo-v1beta1.{role}.cloud-config")),
        )
        .unwrap();
        let b = std::fs::read_to_string(
            repo().join(format!("tests/golden/capo-v1beta2.{role}.cloud-config")),
        )
        .unwrap();
        assert_eq!(a, b, "{role}: v1beta1 and v1beta2 normalise differently");
    }
}

/// Resolve a document's references with real generated material.
fn resolve(doc: &str, pki: &bootstrap::pki::ClusterPki, token: &str) -> String {
    refs::resolve(doc, &|n: &str| match n {
        refs::TOKEN => Some(token.to_string()),
        refs::CA_CERT_HASH => Some(pki.ca_cert_hash.clone()),
        refs::ENDPOINT => Some("10.0.0.10:6443".to_string()),
        other => pki
            .public
            .get(other)
            .or_else(|| pki.secret.get(other))
            .cloned(),
    })
    .unwrap()
}

#[test]
fn renderings_parse_back_into_what_capd_executes() {
    let pki =
        bootstrap::pki::generate("ECDSA-P256", 30, false, capi::util::time::now_unix()).unwrap();
    let token = bootstrap::token::generate();
    for (name, path, vars) in fixtures() {
        for (role, doc) in renderings(&path, &vars) {
            let resolved = resolve(&doc, &pki, &token);
            assert!(
                !resolved.contains("<capi:"),
                "{name} {role}: unresolved reference"
            );
            let acts =
                cloudinit::actions(&resolved).unwrap_or_else(|e| panic!("{name} {role}: {e}"));
            assert!(
                acts.ignored_modules.is_empty(),
                "{name} {role}: {:?}",
                acts.ignored_modules
            );
            let files: Vec<&cloudinit::FileWrite> = acts
                .actions
                .iter()
                .filter_map(|a| {
                    if let Action::Write(f) = a {
                        Some(f)
                    } else {
                        None
                    }
                })
                .collect();
            let cmds: Vec<String> = acts
                .actions
                .iter()
                .filter_map(|a| {
                    if let Action::Run(c) = a {
                        Some(c.join(" "))
                    } else {
                        None
                    }
                })
                .collect();
            let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            let last = cmds.last().unwrap();
            assert!(
                last.ends_with("&& echo success > /run/cluster-api/bootstrap-success.complete"),
                "{name} {role}: {last}"
            );
            let (config_path, verb) = if role == "init" {
                (
                    "/run/kubeadm/kubeadm.yaml",
                    "kubeadm init --config /run/kubeadm/kubeadm.yaml",
                )
            } else {
                (
                    "/run/kubeadm/kubeadm-join-config.yaml",
                    "kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml",
                )
            };
            assert!(last.contains(verb), "{name} {role}: {last}");
            assert!(
                paths.contains(&config_path) && paths.contains(&"/run/cluster-api/placeholder"),
                "{name} {role}: {paths:?}"
            );
            let ca_files = [
                "ca.crt",
                "ca.key",
                "etcd/ca.crt",
                "etcd/ca.key",
                "front-proxy-ca.crt",
                "front-proxy-ca.key",
                "sa.pub",
                "sa.key",
            ];
            for f in ca_files {
                let p = format!("/etc/kubernetes/pki/{f}");
                assert_eq!(
                    paths.contains(&p.as_str()),
                    role != "join-worker",
                    "{name} {role}: {p}"
                );
            }
            // Keys are 0600, certificates 0640; the CA key is the generated one.
            for f in &files {
                if f.path.ends_with(".key") {
                    assert_eq!(f.permissions.as_deref(), Some("0600"), "{}", f.path);
                }
                if f.path == "/etc/kubernetes/pki/ca.key" {
                    assert_eq!(String::from_utf8_lossy(&f.content), pki.secret["ca.key"]);
                }
            }
            // The kubeadm documents parse, with the API version for the Kubernetes version.
            let cfg = files.iter().find(|f| f.path == config_path).unwrap();
            let text = String::from_utf8_lossy(&cfg.content).to_string();
            let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .filter(|v: &serde_yaml::Value| !v.is_null())
                .collect();
            let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
            match role {
                "init" => assert_eq!(kinds, ["ClusterConfiguration", "InitConfiguration"]),
                _ => assert_eq!(kinds, ["JoinConfiguration"]),
            }
            let api = if name.starts_with("capo") {
                "kubeadm.k8s.io/v1beta3"
            } else {
                "kubeadm.k8s.io/v1beta4"
            };
            assert!(docs.iter().all(|d| d["apiVersion"] == api), "{name} {role}");
            if role == "join-worker" {
                let taints = &docs[0]["nodeRegistration"]["taints"];
                assert!(
                    taints
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .any(|t| t["key"] == "node.cluster.x-k8s.io/uninitialized"),
                    "{name}: {taints:?}"
                );
                assert_eq!(
                    docs[0]["discovery"]["bootstrapToken"]["token"].as_str(),
                    Some(token.as_str())
                );
                assert_eq!(
                    docs[0]["discovery"]["bootstrapToken"]["caCertHashes"][0].as_str(),
                    Some(pki.ca_cert_hash.as_str())
                );
            }
            if role == "join-control-plane" {
                assert!(
                    docs[0]["controlPlane"].is_mapping(),
                    "{name}: the control-plane join has controlPlane"
                );
            }
            if api.ends_with("v1beta3") {
                // v1beta3: extra args are maps.
                let args = &docs[0]["nodeRegistration"]["kubeletExtraArgs"];
                if role != "init" || name.starts_with("capo") {
                    assert!(
                        args.is_mapping() || args.is_null(),
                        "{name} {role}: {args:?}"
                    );
                }
            }
        }
    }
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut c = Command::new("openssl");
    c.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c
        .spawn()
        .expect("openssl (scripts/test.sh installs it from Debian's packages)");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn certificates_verify_with_openssl() {
    let now = capi::util::time::now_unix();
    for alg in ["RSA-2048", "ECDSA-P256"] {
        let pki = bootstrap::pki::generate(alg, 3650, false, now).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, pem) in pki.public.iter().chain(pki.secret.iter()) {
            let p = dir.path().join(name.replace('/', "_"));
            std::fs::write(&p, pem).unwrap();
        }
        for ca in ["ca.crt", "etcd_ca.crt", "front-proxy-ca.crt"] {
            let p = dir.path().join(ca);
            let p = p.to_str().unwrap();
            let text = openssl(&["x509", "-in", p, "-noout", "-text"], None);
            assert!(
                text.contains("Subject: CN = kubernetes")
                    || text.contains("Subject: CN=kubernetes"),
                "{alg} {ca}: {text}"
            );
            assert!(
                text.contains("CA:TRUE, pathlen:0"),
                "{alg} {ca}: basic constraints"
            );
            assert!(
                text.contains("Digital Signature, Key Encipherment, Certificate Sign"),
                "{alg} {ca}: key usage\n{text}"
            );
            assert!(text.contains("Serial Number: 0"), "{alg} {ca}: serial 0");
            let verify = openssl(&["verify", "-CAfile", p, p], None);
            assert!(verify.contains(": OK"), "{verify}");
            // Valid for 3650 days from 5 minutes ago.
            let end = openssl(&["x509", "-in", p, "-noout", "-enddate"], None);
            let expected = now + 3650 * 86_400;
            let checkend = Command::new("openssl")
                .args([
                    "x509",
                    "-in",
                    p,
                    "-noout",
                    "-checkend",
                    &(expected - now - 120).to_string(),
                ])
                .status()
                .unwrap();
            assert!(checkend.success(), "{alg} {ca} expires too early: {end}");
            let past = Command::new("openssl")
                .args([
                    "x509",
                    "-in",
                    p,
                    "-noout",
                    "-checkend",
                    &(expected - now + 120).to_string(),
                ])
                .status()
                .unwrap();
            assert!(!past.success(), "{alg} {ca} expires too late: {end}");
        }
        // The discovery hash is what kubeadm computes.
        let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
        let pubkey = openssl(&["x509", "-pubkey", "-noout"], Some(&ca));
        let der = {
            let mut c = Command::new("openssl")
                .args(["pkey", "-pubin", "-outform", "der"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(pubkey.as_bytes())
                .unwrap();
            c.wait_with_output().unwrap().stdout
        };
        let hash = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der))
        );
        assert_eq!(hash, pki.ca_cert_hash, "{alg}");
        // Keys match their certificates; the SA key pair matches.
        let key_pub = openssl(
            &[
                "pkey",
                "-in",
                dir.path().join("ca.key").to_str().unwrap(),
                "-pubout",
            ],
            None,
        );
        assert_eq!(
            key_pub.trim(),
            pubkey.trim(),
            "{alg}: ca.key matches ca.crt"
        );
        let sa_pub = openssl(
            &[
                "pkey",
                "-in",
                dir.path().join("sa.key").to_str().unwrap(),
                "-pubout",
            ],
            None,
        );
        assert_eq!(
            sa_pub.trim(),
            pki.public["sa.pub"].trim(),
            "{alg}: sa.key matches sa.pub"
        );
        if alg == "RSA-2048" {
            assert!(
                pki.secret["ca.key"].starts_with("-----BEGIN RSA PRIVATE KEY-----"),
                "PKCS#1 like CABPK"
            );
            let t = openssl(
                &[
                    "pkey",
                    "-in",
                    dir.path().join("ca.key").to_str().unwrap(),
                    "-noout",
                    "-text",
                ],
                None,
            );
            assert!(t.contains("2048 bit"), "{t}");
        }
    }
}

#[test]
fn kubeconfig_chains_to_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f"])
        .arg(example("sim"))
        .assert()
        .success();
    capi(dir.path())
        .args(["kubeconfig", "demo", "-o", "kc.yaml"])
        .assert()
        .success();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path().join("kc.yaml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let kc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.path().join("kc.yaml")).unwrap())
            .unwrap();
    assert_eq!(kc["current-context"], "demo-admin@demo");
    let state = capi::state::StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    let endpoint = state.get("demo/loadbalancer").unwrap().observed["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"].as_str().unwrap(),
        format!("https://{endpoint}")
    );
    use base64::Engine;
    let b64 = |v: &serde_yaml::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    std::fs::write(
        dir.path().join("ca.pem"),
        b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("client.pem"),
        b64(&kc["users"][0]["user"]["client-certificate-data"]),
    )
    .unwrap();
    let verify = openssl(
        &[
            "verify",
            "-CAfile",
            dir.path().join("ca.pem").to_str().unwrap(),
            dir.path().join("client.pem").to_str().unwrap(),
        ],
        None,
    );
    assert!(verify.contains(": OK"), "{verify}");
    let subject = openssl(
        &[
            "x509",
            "-in",
            dir.path().join("client.pem").to_str().unwrap(),
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
        ],
        None,
    );
    assert!(
        subject.contains("O = system:masters") && subject.contains("CN = kubernetes-admin"),
        "{subject}"
    );
    assert!(
        subject.contains("TLS Web Client Authentication"),
        "{subject}"
    );
}

#[test]
fn bad_bootstrap_input_names_file_and_line() {
    // A contentFrom Secret that does not exist.
    let text = BASE.replace("    spec: {}\n", "    spec:\n      files:\n        - path: /etc/x\n          contentFrom:\n            secret:\n              name: nope\n              key: k\n");
    let errs = match manifest::load_str("c.yaml", &text, &Variables::new()) {
        Err(manifest::ManifestError::Invalid { problems, .. }) => problems,
        other => panic!("{other:?}"),
    };
    let p = errs
        .iter()
        .find(|p| p.message.contains("Secret \"nope\""))
        .expect("contentFrom problem");
    let line = text[..text.find("name: nope").unwrap()]
        .matches('\n')
        .count() as u32
        + 1;
    assert_eq!((p.file.as_str(), p.pos.line), ("c.yaml", line), "{p:?}");
    assert!(p.help.contains("add the Secret"), "{}", p.help);
    // A Kubernetes version kubeadm bootstrap does not support.
    let old = BASE.replace(
        "  version: v1.31.2\n  machineTemplate",
        "  version: v1.21.3\n  machineTemplate",
    );
    let m = manifest::load_str("c.yaml", &old, &Variables::new()).unwrap();
    let problems = capi::desired::build(&m, &Default::default()).unwrap_err();
    let p = problems
        .iter()
        .find(|p| p.message.contains("v1.21.3"))
        .expect("version problem");
    let line = old[..old.find("version: v1.21.3").unwrap()]
        .matches('\n')
        .count() as u32
        + 1;
    assert_eq!(p.pos.line, line, "{p:?}");
    assert!(
        p.message.contains("not supported") && p.help.contains("v1.22"),
        "{p:?}"
    );
    // On the command line: exit 1, the file and line, nothing written.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), &old).unwrap();
    let out = capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("c.yaml:{line}")),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("capi.state.json").exists());
}

#[test]
fn expired_token_is_rotated_first_and_nothing_else_changes() {
    let dir = tempfile::tempdir().unwrap();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f"])
        .arg(example("sim"))
        .assert()
        .success();
    let state = capi::state::StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    let token = state.get("demo/token").unwrap();
    let expires = token.observed["expires_unix"].as_i64().unwrap();
    let later = (expires + 60).to_string();
    // No machine joins: no rotation needed, no changes.
    let out = capi(dir.path())
        .args(["plan", "--detailed-exitcode", "-f"])
        .arg(example("sim"))
        .env("CAPI_NOW", &later)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // A scale-up after expiry: the token is rotated first, the new machine joins with it.
    let scaled = std::fs::read_to_string(example("sim/cluster.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 3");
    std::fs::write(dir.path().join("scaled.yaml"), &scaled).unwrap();
    let out = capi(dir.path())
        .args(["plan", "-f", "scaled.yaml"])
        .env("CAPI_NOW", &later)
        .output()
        .unwrap();
    let text = stdout(&out);
    let rot = text
        .find("# demo/token will be updated in-place")
        .expect(&text);
    let create = text.find("will be created").unwrap();
    assert!(rot < create, "rotation is shown first:\n{text}");
    assert!(text.contains("the bootstrap token expired at"), "{text}");
    assert!(
        text.contains("Plan: 1 to add, 1 to change, 0 to replace, 0 to destroy."),
        "{text}"
    );
    let before_docs: Vec<String> = state
        .resources
        .iter()
        .filter_map(|r| r.attributes.as_bootstrap().map(|b| b.sha256.to_string()))
        .collect();
    capi(dir.path())
        .args(["apply", "--auto-approve", "-f", "scaled.yaml"])
        .env("CAPI_NOW", &later)
        .assert()
        .success();
    let after = capi::state::StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    let new_token = &after.get("demo/token").unwrap().sensitive["token"];
    assert_ne!(new_token, &token.sensitive["token"], "rotated");
    // Existing machines keep the bootstrap data they were created with.
    for sha in &before_docs {
        assert!(after.documents.contains_key(sha));
    }
}

/// Every byte capi prints in a full cycle, checked for secret material.
#[test]
fn no_secret_in_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let ex = example("sim");
    let mut outputs = Vec::new();
    let mut run = |args: &[&str]| {
        let o = capi(dir.path()).args(args).output().unwrap();
        outputs.push(format!("{args:?}\n{}{}", stdout(&o), stderr(&o)));
        o
    };
    let exs = ex.to_str().unwrap();
    run(&["plan", "-f", exs]);
    run(&["plan", "--json", "-f", exs]);
    run(&["apply", "--auto-approve", "-f", exs]);
    run(&["show"]);
    run(&["show", "--json"]);
    run(&["state", "list"]);
    for a in ["demo/pki", "demo/token"] {
        run(&["state", "show", a]);
    }
    let scaled = std::fs::read_to_string(example("sim/cluster.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 3")
        .replace(
            "version: v1.31.2\n      bootstrap",
            "version: v1.31.3\n      bootstrap",
        );
    std::fs::write(dir.path().join("s.yaml"), scaled).unwrap();
    run(&["plan", "-f", "s.yaml"]);
    run(&["apply", "--auto-approve", "--json", "-f", "s.yaml"]);
    run(&["graph", "-f", "s.yaml"]);
    // A failing bootstrap: its error output is redacted too.
    let o = capi(dir.path())
        .args(["apply", "--auto-approve", "-f", exs])
        .env("CAPI_SIM_FAIL", "bootstrap:1")
        .output()
        .unwrap();
    outputs.push(format!("{}{}", stdout(&o), stderr(&o)));
    let mut run = |args: &[&str]| {
        let o = capi(dir.path()).args(args).output().unwrap();
        outputs.push(format!("{args:?}\n{}{}", stdout(&o), stderr(&o)));
        o
    };
    let state_text = std::fs::read_to_string(dir.path().join("capi.state.json")).unwrap();
    let state = capi::state::StateStore::new(dir.path().join("capi.state.json"))
        .load()
        .unwrap()
        .unwrap();
    run(&["destroy", "--auto-approve"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path().join("capi.state.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let mut secrets: Vec<String> = Vec::new();
    for r in &state.resources {
        for v in r.sensitive.values() {
            secrets.push(v.clone());
            // Each base64 line of a PEM key, so partial leaks are caught too.
            secrets.extend(
                v.lines()
                    .filter(|l| l.len() >= 40 && !l.starts_with("-----"))
                    .map(str::to_string),
            );
        }
    }
    assert!(
        secrets.iter().any(|s| s.contains("PRIVATE KEY"))
            && secrets.iter().any(|s| bootstrap::token::is_valid(s)),
        "the state holds keys and a token"
    );
    assert!(
        state_text.contains("PRIVATE KEY"),
        "(the state itself keeps them, mode 0600)"
    );
    let all = outputs.join("\n");
    for s in &secrets {
        assert!(
            !all.contains(s.as_str()),
            "a secret appeared in the output: {}…",
            &s[..16.min(s.len())]
        );
    }
    assert!(!all.contains("PRIVATE KEY"));
}
