//! The provider's logic against the in-memory cloud ([`MemoryApi`]): no
//! services needed. The same paths run against real services in
//! tests/it/openstack.rs.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::api::{ApiError, Kind};
use super::memory::MemoryApi;
use super::*;
use crate::infra::{classify_infra_change, InfraChange};
use crate::resource::{
    Address, Backend, ClusterId, InfraSpec, LoadBalancerSpec, MachineSpec, NetworkSpec,
    Observation, Owner, OwnerKind, ResourceKind, Role, Version,
};
use crate::state::{Resource, Status};

const LINEAGE: &str = "0f5e7a9c-1111-2222-3333-444455556666";

fn cluster_spec(lb: bool) -> Value {
    let mut s = json!({
        "externalNetwork": {"id": "ext-net"},
        "managedSubnets": [{"cidr": "10.6.0.0/24", "dnsNameservers": ["192.0.2.53"]}],
        "managedSecurityGroups": {"clusterNodesSecurityGroupRules": [
            {"description": "BGP", "direction": "ingress", "etherType": "IPv4", "portRangeMin": 179, "portRangeMax": 179, "protocol": "tcp", "remoteManagedGroups": ["controlplane", "worker"]}
        ]},
    });
    if lb {
        s["apiServer"] = json!({"managedLoadBalancer": {"enabled": true}});
    }
    s
}

fn infra(kind: &str, spec: Value) -> InfraSpec {
    InfraSpec {
        kind: kind.into(),
        name: "c".into(),
        backend: Backend::Openstack,
        spec,
        options: BTreeMap::new(),
    }
}

fn res(address: &str, spec: Spec, observed: Observed) -> Resource {
    Resource {
        address: Address::parse(address).unwrap(),
        kind: spec.kind(),
        provider: ProviderKind::Openstack,
        status: Status::Ready,
        attributes: spec,
        observed,
        sensitive: BTreeMap::new(),
        dependencies: vec![],
        sequence: 1,
        error: None,
    }
}

fn machine(name: &str, role: Role, flavor: &str) -> Spec {
    Spec::Machine(MachineSpec {
        name: name.into(),
        role,
        owner: Owner {
            kind: OwnerKind::MachineDeployment,
            name: "md".into(),
        },
        version: Version::parse("v1.31.2").unwrap(),
        identity: format!("id-{flavor}").into(),
        failure_domain: Some("nova".into()),
        infra: infra(
            "OpenStackMachineTemplate",
            json!({"flavor": {"filter": {"name": flavor}}, "image": {"filter": {"name": "tiny"}}, "sshKeyName": "key"}),
        )
        .into(),
        bootstrap_template: "KubeadmConfigTemplate/w".into(),
        labels: Default::default(),
        annotations: Default::default(),
    })
}

struct World {
    api: Arc<MemoryApi>,
    p: OpenStackProvider,
    cluster: ClusterId,
    redactor: Redactor,
}

impl World {
    fn new() -> World {
        World::with(&Overrides::default())
    }

    fn with(overrides: &Overrides) -> World {
        let api = Arc::new(MemoryApi::seeded());
        World {
            p: OpenStackProvider::new(Clients::Fixed(api.clone()), overrides),
            api,
            cluster: ClusterId::new("default", "c"),
            redactor: Redactor::default(),
        }
    }

    async fn create(
        &self,
        address: &str,
        spec: &Spec,
        deps: &[&Resource],
    ) -> Result<Resource, ProviderError> {
        let a = Address::parse(address).unwrap();
        let input = OpInput {
            address: &a,
            cluster: &self.cluster,
            lineage: LINEAGE,
            spec,
            deps: deps.to_vec(),
            bootstrap: Some("#cloud-config\nruncmd: [kubeadm init]\n"),
            token: None,
            redactor: &self.redactor,
        };
        let o = self.p.create(&input).await?;
        Ok(res(address, spec.clone(), o))
    }

    /// `capi import`'s lookup of `id` for the resource at `address`.
    async fn lookup(
        &self,
        address: &str,
        spec: Spec,
        deps: &[&Resource],
        id: &str,
    ) -> Result<Found, ProviderError> {
        let a = Address::parse(address).unwrap();
        let input = OpInput {
            address: &a,
            cluster: &self.cluster,
            lineage: LINEAGE,
            spec: &spec,
            deps: deps.to_vec(),
            bootstrap: None,
            token: None,
            redactor: &self.redactor,
        };
        self.p.lookup(&input, id).await
    }

    async fn base(&self, lb: bool) -> (Resource, Resource) {
        let net = Spec::Network(NetworkSpec {
            name: "k8s-clusterapi-cluster-default-c".into(),
            infra: infra("OpenStackCluster", cluster_spec(lb)),
        });
        let net = self.create("c/network", &net, &[]).await.unwrap();
        let lbs = Spec::Loadbalancer(LoadBalancerSpec {
            port: 6443,
            fixed_endpoint: None,
            infra: infra("OpenStackCluster", cluster_spec(lb)),
        });
        let lbr = self.create("c/loadbalancer", &lbs, &[&net]).await.unwrap();
        (net, lbr)
    }
}

#[tokio::test]
async fn cluster_objects_in_capo_order_with_tags() {
    let w = World::new();
    let (net, lbr) = w.base(true).await;
    let tag = lineage_tag(LINEAGE);
    for k in [
        Kind::Network,
        Kind::Subnet,
        Kind::Router,
        Kind::SecurityGroup,
    ] {
        let tagged: Vec<Value> = w
            .api
            .all(k)
            .into_iter()
            .filter(|o| o["tags"].as_array().unwrap().contains(&json!(tag)))
            .collect();
        assert!(!tagged.is_empty(), "no tagged {}", k.as_str());
    }
    let subnet = &w.api.all(Kind::Subnet)[0];
    assert_eq!(subnet["cidr"], "10.6.0.0/24");
    assert_eq!(subnet["dns_nameservers"], json!(["192.0.2.53"]));
    let router = &w.api.all(Kind::Router)[0];
    assert_eq!(router["external_gateway_info"]["network_id"], "ext-net");
    assert_eq!(router["interfaces"], json!([subnet["id"]]));
    // control plane: API, etcd, 2x kubelet, 2x BGP; workers: 2x NodePort, 2x kubelet, 2x BGP
    assert_eq!(w.api.all(Kind::SecurityGroupRule).len(), 12);
    assert_eq!(lbr.observed["mode"], "loadbalancer");
    assert!(lbr.observed["endpoint"]
        .as_str()
        .unwrap()
        .starts_with("203.0.113."));
    assert_eq!(net.observed["network_managed"], true);

    let cp = w
        .create(
            "c/machine/c-cp-0",
            &machine("c-cp-0", Role::ControlPlane, "m1.small"),
            &[&net, &lbr],
        )
        .await
        .unwrap();
    let servers = w.api.all(Kind::Server);
    assert_eq!(servers.len(), 1);
    let s = &servers[0];
    assert_eq!(s["metadata"]["capi-address"], "c/machine/c-cp-0");
    assert_eq!(s["availability_zone"], "nova");
    assert_eq!(s["key_name"], "key");
    let ud = base64::engine::general_purpose::STANDARD
        .decode(s["user_data"].as_str().unwrap())
        .unwrap();
    assert!(String::from_utf8(ud).unwrap().contains("kubeadm init"));
    let port = &w.api.all(Kind::Port)[0];
    assert_eq!(
        port["security_groups"],
        json!([net.observed["security_groups"]["controlplane"]])
    );
    assert_eq!(
        cp.observed["member_id"]
            .as_str()
            .map(|s| s.starts_with("member")),
        Some(true)
    );
    assert_eq!(
        w.api
            .list_members(cp.observed["pool_id"].as_str().unwrap())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn floating_ip_mode_follows_the_first_control_plane_machine() {
    let w = World::new();
    let (net, lbr) = w.base(false).await;
    assert_eq!(lbr.observed["mode"], "floating-ip");
    let cp = w
        .create(
            "c/machine/c-cp-0",
            &machine("c-cp-0", Role::ControlPlane, "m1.small"),
            &[&net, &lbr],
        )
        .await
        .unwrap();
    let fip = &w.api.all(Kind::FloatingIp)[0];
    assert_eq!(fip["port_id"], cp.observed["port_id"]);
    w.p.delete(&cp, LINEAGE, &w.redactor).await.unwrap();
    assert!(
        w.api.all(Kind::FloatingIp)[0]["port_id"].is_null(),
        "dissociated before the port went"
    );
}

#[tokio::test]
async fn refresh_lists_once_per_type_and_reports_drift() {
    let w = World::new();
    let (net, lbr) = w.base(true).await;
    let mut machines = vec![];
    for (i, role) in [Role::ControlPlane, Role::Worker, Role::Worker, Role::Worker]
        .into_iter()
        .enumerate()
    {
        let name = format!("c-m-{i}");
        machines.push(
            w.create(
                &format!("c/machine/{name}"),
                &machine(&name, role, "m1.small"),
                &[&net, &lbr],
            )
            .await
            .unwrap(),
        );
    }
    let mut all: Vec<&Resource> = vec![&net, &lbr];
    all.extend(machines.iter());
    let before = w.api.calls();
    let r = w.p.refresh(&all, LINEAGE).await.unwrap();
    assert!(r.iter().all(|x| x.observation.is_none()), "{r:?}");
    // As `capi plan` does: refresh, then look for unmanaged servers.
    assert!(w.p.unmanaged(&all, LINEAGE).await.unwrap().is_empty());
    let after = w.api.calls();
    let delta: BTreeMap<String, u64> = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect();
    // One list per object type, nothing per resource.
    assert_eq!(delta.len(), 8, "{delta:?}");
    assert!(
        delta.iter().all(|(k, v)| k.starts_with("list ") && *v == 1),
        "{delta:?}"
    );

    // A server deleted behind capi's back; a rule removed.
    w.api.remove(
        Kind::Server,
        machines[2].observed["server_id"].as_str().unwrap(),
    );
    let rule = w.api.all(Kind::SecurityGroupRule)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.api.remove(Kind::SecurityGroupRule, &rule);
    let r = w.p.refresh(&all, LINEAGE).await.unwrap();
    let obs: BTreeMap<String, Option<Observation>> = r
        .into_iter()
        .map(|x| (x.address.to_string(), x.observation))
        .collect();
    assert_eq!(obs["c/machine/c-m-2"], Some(Observation::Missing));
    assert!(matches!(obs["c/network"], Some(Observation::Changed(_))));
    // Update puts the rule back.
    let a = Address::parse("c/network").unwrap();
    let input = OpInput {
        address: &a,
        cluster: &w.cluster,
        lineage: LINEAGE,
        spec: &net.attributes,
        deps: vec![],
        bootstrap: None,
        token: None,
        redactor: &w.redactor,
    };
    w.p.update(&input, &net).await.unwrap();
    assert_eq!(w.api.all(Kind::SecurityGroupRule).len(), 12);
    // DNS servers change in place.
    let mut spec2 = net.attributes.clone();
    if let Spec::Network(n) = &mut spec2 {
        n.infra.spec["managedSubnets"][0]["dnsNameservers"] = json!(["192.0.2.1"]);
    }
    let input = OpInput {
        address: &a,
        cluster: &w.cluster,
        lineage: LINEAGE,
        spec: &spec2,
        deps: vec![],
        bootstrap: None,
        token: None,
        redactor: &w.redactor,
    };
    w.p.update(&input, &net).await.unwrap();
    assert_eq!(
        w.api.all(Kind::Subnet)[0]["dns_nameservers"],
        json!(["192.0.2.1"])
    );
}

#[tokio::test]
async fn a_server_created_before_a_crash_is_adopted() {
    let w = World::new();
    let (net, lbr) = w.base(false).await;
    let spec = machine("c-md-0", Role::Worker, "m1.small");
    let first = w
        .create("c/machine/c-md-0", &spec, &[&net, &lbr])
        .await
        .unwrap();
    // The state never learnt about it: the same create runs again.
    let second = w
        .create("c/machine/c-md-0", &spec, &[&net, &lbr])
        .await
        .unwrap();
    assert_eq!(first.observed["server_id"], second.observed["server_id"]);
    assert_eq!(w.api.all(Kind::Server).len(), 1);
    assert_eq!(w.api.all(Kind::Port).len(), 1);
    // unmanaged(): found by its tags when the state does not know it.
    let u = w.p.unmanaged(&[&net, &lbr], LINEAGE).await.unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].address.as_str(), "c/machine/c-md-0");
}

#[tokio::test]
async fn import_looks_a_server_up_by_id_or_name() {
    let w = World::new();
    let (net, lbr) = w.base(false).await;
    let spec = machine("c-md-0", Role::Worker, "m1.small");
    let made = w
        .create("c/machine/c-md-0", &spec, &[&net, &lbr])
        .await
        .unwrap();
    let server_id = made.observed["server_id"].as_str().unwrap().to_string();
    let deps = [&net, &lbr];
    // By id and by name: the metadata capi wrote, nothing to object to.
    for id in [server_id.as_str(), "c-md-0"] {
        let f = w
            .lookup("c/machine/c-md-0", spec.clone(), &deps, id)
            .await
            .unwrap();
        assert_eq!(f.id, server_id);
        assert_eq!(f.lineage.as_deref(), Some(LINEAGE));
        assert_eq!(f.address.as_deref(), Some("c/machine/c-md-0"));
        assert_eq!(f.identity.as_deref(), Some("id-m1.small"));
        assert_eq!(f.not_adoptable, None);
        assert_eq!(f.observed["server_id"], json!(server_id));
    }
    // Nothing by that id or name: named, with what was looked for.
    let e = w
        .lookup("c/machine/c-md-0", spec.clone(), &deps, "nope")
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::NotFound(_)), "{e:?}");
    assert!(
        e.to_string().contains("\"nope\"") && e.to_string().contains("c/machine/c-md-0"),
        "{e}"
    );
    // Asked for as another machine: the create of that one looks for
    // another name, so it would not adopt this server.
    let f = w
        .lookup(
            "c/machine/c-md-1",
            machine("c-md-1", Role::Worker, "m1.small"),
            &deps,
            "c-md-0",
        )
        .await
        .unwrap();
    assert!(
        f.not_adoptable.as_deref().unwrap().contains("named c-md-0"),
        "{f:?}"
    );
    // Without the lineage tag the create looks for, it is not adoptable.
    for s in w
        .api
        .objects
        .lock()
        .unwrap()
        .get_mut(&Kind::Server)
        .unwrap()
    {
        s["tags"] = json!([]);
    }
    let f = w
        .lookup("c/machine/c-md-0", spec.clone(), &deps, "c-md-0")
        .await
        .unwrap();
    assert!(
        f.not_adoptable
            .as_deref()
            .unwrap()
            .contains(&lineage_tag(LINEAGE)),
        "{f:?}"
    );
    // Two servers of that name: one must be named by its id.
    let twin =
        json!({"id": "srv-twin", "name": "c-md-0", "status": "ACTIVE", "tags": [], "metadata": {}});
    w.api
        .objects
        .lock()
        .unwrap()
        .get_mut(&Kind::Server)
        .unwrap()
        .push(twin);
    let e = w
        .lookup("c/machine/c-md-0", spec.clone(), &deps, "c-md-0")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("import one by its id"), "{e}");
    // Networks and load balancers are not imported on OpenStack.
    let e = w
        .lookup("c/network", net.attributes.clone(), &deps, "anything")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("servers) only"), "{e}");
}

#[tokio::test]
async fn a_server_in_error_is_a_clear_error_and_leaves_nothing() {
    let w = World::new();
    let (net, lbr) = w.base(false).await;
    let e = w
        .create(
            "c/machine/c-md-0",
            &machine("c-md-0", Role::Worker, "unschedulable"),
            &[&net, &lbr],
        )
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("went to ERROR") && msg.contains("No valid host"),
        "{msg}"
    );
    assert!(w.api.all(Kind::Server).is_empty());
    assert!(w.api.all(Kind::Port).is_empty());
    let e = w
        .create(
            "c/machine/c-md-1",
            &machine("c-md-1", Role::Worker, "m9.huge"),
            &[&net, &lbr],
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("flavor name \"m9.huge\" does not exist"),
        "{e}"
    );
}

#[tokio::test]
async fn transient_errors_are_retried_permanent_ones_are_not() {
    let w = World::with(&Overrides {
        openstack_retries: 3,
        ..Overrides::default()
    });
    let (net, lbr) = w.base(false).await;
    w.api
        .fail_once
        .lock()
        .unwrap()
        .insert("create port".into(), 503);
    w.create(
        "c/machine/c-md-0",
        &machine("c-md-0", Role::Worker, "m1.small"),
        &[&net, &lbr],
    )
    .await
    .unwrap();
    w.api
        .fail_once
        .lock()
        .unwrap()
        .insert("create port".into(), 403);
    let e = w
        .create(
            "c/machine/c-md-1",
            &machine("c-md-1", Role::Worker, "m1.small"),
            &[&net, &lbr],
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not allowed (403)"), "{e}");
    w.api
        .fail_once
        .lock()
        .unwrap()
        .insert("create port".into(), 409);
    // 409 quota is permanent, with a clear message.
    let q = ApiError::new(Some(409), "Quota exceeded for resources: ['port'].");
    assert!(q.is_quota() && !q.is_transient());
    assert!(q.explain("creating port").contains("quota is exhausted"));
}

#[tokio::test]
async fn destroy_in_reverse_order_leaves_nothing_and_keeps_referenced_objects() {
    let w = World::new();
    let (net, lbr) = w.base(true).await;
    let m = w
        .create(
            "c/machine/c-cp-0",
            &machine("c-cp-0", Role::ControlPlane, "m1.small"),
            &[&net, &lbr],
        )
        .await
        .unwrap();
    for r in [&m, &lbr, &net] {
        w.p.delete(r, LINEAGE, &w.redactor).await.unwrap();
        // Deleting again (already gone) succeeds.
        w.p.delete(r, LINEAGE, &w.redactor).await.unwrap();
    }
    for k in [
        Kind::Subnet,
        Kind::Router,
        Kind::SecurityGroup,
        Kind::Port,
        Kind::FloatingIp,
        Kind::Server,
        Kind::LoadBalancer,
    ] {
        assert!(w.api.all(k).is_empty(), "{} left", k.as_str());
    }
    // Only the pre-existing external network remains.
    assert_eq!(w.api.all(Kind::Network).len(), 1);

    // A referenced network is used, never deleted.
    let spec = json!({"network": {"filter": {"name": "public"}}, "disableExternalNetwork": true, "disableAPIServerFloatingIP": true});
    let n = Spec::Network(NetworkSpec {
        name: "x".into(),
        infra: infra("OpenStackCluster", spec),
    });
    w.api
        .create(
            Kind::Subnet,
            &json!({"network_id": "ext-net", "cidr": "203.0.113.0/24", "name": "pub"}),
        )
        .await
        .unwrap();
    let net = w.create("c/network", &n, &[]).await.unwrap();
    assert_eq!(net.observed["network_managed"], false);
    w.p.delete(&net, LINEAGE, &w.redactor).await.unwrap();
    assert_eq!(w.api.all(Kind::Network).len(), 1);
    assert_eq!(w.api.all(Kind::Subnet).len(), 1);
}

#[test]
fn immutable_fields_are_named() {
    let before = infra("OpenStackCluster", cluster_spec(true));
    let mut after = before.clone();
    after.spec["managedSecurityGroups"]["allowAllInClusterTraffic"] = json!(true);
    assert!(matches!(
        classify_infra_change(&before, &after),
        InfraChange::InPlace
    ));
    after.spec["apiServer"] = json!({"managedLoadBalancer": {"enabled": false}});
    match classify_infra_change(&before, &after) {
        InfraChange::Immutable(f, why) => {
            assert_eq!(f, "spec.apiServer");
            assert!(why.contains("endpoint"));
        }
        InfraChange::InPlace => panic!("load balancer toggle must be immutable"),
    }
    let _ = ResourceKind::Network;
}

#[test]
fn credentials_from_an_identity_ref_secret() {
    let yaml = b"clouds:\n  one:\n    auth: {auth_url: 'http://127.0.0.1:5000/v3', username: u, password: sekret, project_name: p, user_domain_name: Default, project_domain_name: Default}\n    region_name: RegionOne\n  two:\n    auth: {auth_url: 'http://127.0.0.1:5000/v3', application_credential_id: abc, application_credential_secret: xyz}\n    auth_type: v3applicationcredential\n";
    let mut settings = OpenStackSettings::default();
    let mut data = BTreeMap::new();
    data.insert("clouds.yaml".to_string(), yaml.to_vec());
    data.insert("cacert".to_string(), b"\n".to_vec());
    settings
        .secrets
        .insert(("ns".into(), "cloud-config".into()), data);
    let id = |c: &str| ("ns".to_string(), "cloud-config".to_string(), c.to_string());
    let (cfg, dir) = auth::cloud_config(&settings, Some(&id("two"))).unwrap();
    assert_eq!(cfg.auth_type.as_deref(), Some("v3applicationcredential"));
    assert_eq!(cfg.auth_cache, Some(false), "no token cache on disk");
    assert!(
        cfg.cacert.is_none(),
        "a cacert that is not a certificate is ignored"
    );
    let dir = dir.expect("the clouds.yaml lives in a private directory");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("clouds.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "clouds.yaml is private");
    }
    let (cfg, _) = auth::cloud_config(&settings, Some(&id("one"))).unwrap();
    assert_eq!(cfg.region_name.as_deref(), Some("RegionOne"));
    let e = auth::cloud_config(&settings, Some(&id("three"))).unwrap_err();
    assert!(e.contains("no cloud named \"three\""), "{e}");
    assert!(!e.contains("sekret"));
}
