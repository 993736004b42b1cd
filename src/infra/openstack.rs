//! CAPO's API, interpreted: what an OpenStackCluster and an
//! OpenStackMachineTemplate ask for, with CAPO's defaults. Pure functions
//! (no I/O), shared by the provider, the validator and the planner.
//!
//! Both the v1beta1 names (`apiServerLoadBalancer`, `disableAPIServerFloatingIP`,
//! `apiServerFloatingIP`, `apiServerPort`, `allNodesSecurityGroupRules`) and
//! the v1beta2 names (`apiServer.managedLoadBalancer`, `apiServer.floatingIP`,
//! `managedSecurityGroups.clusterNodesSecurityGroupRules`) are read.

use serde_json::Value;

use super::SpecProblem;

fn problem(pointer: String, message: String, help: String) -> SpecProblem {
    SpecProblem {
        pointer,
        message,
        help,
    }
}

/// A reference to an existing object: by id, or by a filter (name, tags).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Ref {
    pub(crate) id: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) tags: Vec<String>,
}

impl Ref {
    /// `{id}`, `{filter: {name, tags}}`, `{name}` or a plain string (a name).
    pub(crate) fn parse(v: Option<&Value>) -> Option<Ref> {
        let v = v?;
        if let Some(s) = v.as_str() {
            return (!s.is_empty()).then(|| Ref {
                name: Some(s.to_string()),
                ..Default::default()
            });
        }
        let f = v.get("filter").unwrap_or(v);
        let str_of = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
        let r = Ref {
            id: str_of(v, "id").or_else(|| str_of(f, "id")),
            name: str_of(f, "name"),
            tags: strings(f.get("tags")),
        };
        (r.id.is_some() || r.name.is_some() || !r.tags.is_empty()).then_some(r)
    }

    pub(crate) fn describe(&self) -> String {
        match (&self.id, &self.name) {
            (Some(id), _) => format!("id {id}"),
            (None, Some(n)) if self.tags.is_empty() => format!("name {n:?}"),
            (None, Some(n)) => format!("name {n:?} and tags {:?}", self.tags),
            (None, None) => format!("tags {:?}", self.tags),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ManagedSubnet {
    pub(crate) cidr: String,
    pub(crate) dns: Vec<String>,
    pub(crate) pools: Vec<(String, String)>,
}

/// One security-group rule as CAPO describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub(crate) description: String,
    pub(crate) direction: String,
    pub(crate) ether_type: String,
    pub(crate) protocol: Option<String>,
    pub(crate) port_min: Option<i64>,
    pub(crate) port_max: Option<i64>,
    pub(crate) remote_ip_prefix: Option<String>,
    /// `controlplane`, `worker` (managed groups), or `id:<sg id>`.
    pub(crate) remote_group: Option<String>,
}

impl Rule {
    fn tcp(desc: &str, min: i64, max: i64, remote: Remote) -> Rule {
        Rule::proto(desc, "tcp", Some((min, max)), remote)
    }

    fn proto(desc: &str, proto: &str, ports: Option<(i64, i64)>, remote: Remote) -> Rule {
        let (remote_ip_prefix, remote_group) = match remote {
            Remote::Any => (None, None),
            Remote::Group(g) => (None, Some(g.to_string())),
        };
        Rule {
            description: desc.to_string(),
            direction: "ingress".into(),
            ether_type: "IPv4".into(),
            protocol: (!proto.is_empty()).then(|| proto.to_string()),
            port_min: ports.map(|p| p.0),
            port_max: ports.map(|p| p.1),
            remote_ip_prefix,
            remote_group,
        }
    }

    /// Compare with a Neutron rule (`remote_group_id` resolved by `groups`).
    pub(crate) fn signature(&self, group_id: &dyn Fn(&str) -> Option<String>) -> String {
        let remote = self.remote_group.as_deref().map(|g| {
            g.strip_prefix("id:")
                .map(str::to_string)
                .or_else(|| group_id(g))
                .unwrap_or_default()
        });
        sig(
            &self.direction,
            &self.ether_type,
            self.protocol.as_deref(),
            self.port_min,
            self.port_max,
            self.remote_ip_prefix.as_deref(),
            remote.as_deref(),
        )
    }
}

/// A rule's identity: what Neutron compares for duplicates.
pub(crate) fn sig(
    direction: &str,
    ether: &str,
    proto: Option<&str>,
    min: Option<i64>,
    max: Option<i64>,
    prefix: Option<&str>,
    remote_group: Option<&str>,
) -> String {
    let proto = match proto.map(|p| p.to_ascii_lowercase()) {
        Some(p) if p == "any" || p.is_empty() => String::new(),
        Some(p) => p,
        None => String::new(),
    };
    let prefix = match prefix {
        Some("0.0.0.0/0") | Some("::/0") | None => "",
        Some(p) => p,
    };
    format!(
        "{direction}|{ether}|{proto}|{}|{}|{prefix}|{}",
        min.map(|x| x.to_string()).unwrap_or_default(),
        max.map(|x| x.to_string()).unwrap_or_default(),
        remote_group.unwrap_or_default()
    )
}

/// The signature of a rule as Neutron returns it.
pub(crate) fn neutron_sig(r: &Value) -> String {
    let s = |k: &str| r.get(k).and_then(Value::as_str);
    sig(
        s("direction").unwrap_or_default(),
        s("ethertype").unwrap_or("IPv4"),
        s("protocol"),
        r.get("port_range_min").and_then(Value::as_i64),
        r.get("port_range_max").and_then(Value::as_i64),
        s("remote_ip_prefix"),
        s("remote_group_id"),
    )
}

enum Remote {
    Any,
    Group(&'static str),
}

/// What an OpenStackCluster asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterPlan {
    /// An existing network named by the manifests (never deleted).
    pub(crate) network: Option<Ref>,
    pub(crate) subnets: Vec<Ref>,
    pub(crate) managed_subnets: Vec<ManagedSubnet>,
    pub(crate) router: Option<Ref>,
    pub(crate) external_network: Option<Ref>,
    pub(crate) disable_external_network: bool,
    /// `None`: no managed security groups.
    pub(crate) security_groups: Option<SecurityGroups>,
    pub(crate) lb: bool,
    pub(crate) lb_provider: Option<String>,
    pub(crate) floating_ip: bool,
    pub(crate) floating_ip_address: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) mtu: Option<u64>,
    pub(crate) disable_port_security: bool,
    pub(crate) control_plane_omit_az: bool,
    pub(crate) identity: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SecurityGroups {
    pub(crate) control_plane: Vec<Rule>,
    pub(crate) worker: Vec<Rule>,
    pub(crate) allow_all_in_cluster: bool,
}

fn b(v: &Value, ptr: &str) -> Option<bool> {
    v.pointer(ptr).and_then(Value::as_bool)
}

/// The strings of a JSON array (an absent or non-array value gives none).
pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn st(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr).and_then(Value::as_str).map(str::to_string)
}

/// The identityRef of a spec: (secret name, cloud name).
pub(crate) fn identity_ref(spec: &Value) -> Option<(String, String)> {
    let name = st(spec, "/identityRef/name")?;
    let cloud = st(spec, "/identityRef/cloudName").unwrap_or_else(|| "openstack".into());
    Some((name, cloud))
}

fn user_rules(v: Option<&Value>) -> Vec<Rule> {
    let mut out = Vec::new();
    for r in v.and_then(Value::as_array).into_iter().flatten() {
        let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
        let base = Rule {
            description: s("description").or_else(|| s("name")).unwrap_or_default(),
            direction: s("direction").unwrap_or_else(|| "ingress".into()),
            ether_type: s("etherType").unwrap_or_else(|| "IPv4".into()),
            protocol: s("protocol"),
            port_min: r.get("portRangeMin").and_then(Value::as_i64),
            port_max: r.get("portRangeMax").and_then(Value::as_i64),
            remote_ip_prefix: s("remoteIPPrefix"),
            remote_group: s("remoteGroupID").map(|g| format!("id:{g}")),
        };
        let groups: Vec<String> = strings(r.get("remoteManagedGroups"));
        if groups.is_empty() {
            out.push(base);
        } else {
            for g in groups {
                // The bastion is not supported: rules towards it are skipped.
                if g == "controlplane" || g == "worker" {
                    out.push(Rule {
                        remote_group: Some(g),
                        ..base.clone()
                    });
                }
            }
        }
    }
    out
}

impl ClusterPlan {
    pub(crate) fn parse(spec: &Value) -> ClusterPlan {
        let lb_obj = spec
            .get("apiServerLoadBalancer")
            .or_else(|| spec.pointer("/apiServer/managedLoadBalancer"));
        // Presence enables it unless `enabled: false` (CAPO's defaulting).
        let lb = lb_obj.is_some_and(|o| o.get("enabled").and_then(Value::as_bool).unwrap_or(true));
        let lb_provider = lb_obj
            .and_then(|o| o.get("provider"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let floating_ip = !(b(spec, "/disableAPIServerFloatingIP").unwrap_or(false)
            || b(spec, "/apiServer/disableFloatingIP").unwrap_or(false)
            || b(spec, "/apiServer/enableFloatingIP") == Some(false));
        let floating_ip_address =
            st(spec, "/apiServerFloatingIP").or_else(|| st(spec, "/apiServer/floatingIP"));
        let managed_subnets = spec
            .get("managedSubnets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|s| ManagedSubnet {
                        cidr: s
                            .get("cidr")
                            .and_then(Value::as_str)
                            .unwrap_or("10.6.0.0/24")
                            .to_string(),
                        dns: strings(s.get("dnsNameservers")),
                        pools: s
                            .get("allocationPools")
                            .and_then(Value::as_array)
                            .map(|p| {
                                p.iter()
                                    .filter_map(|x| Some((st(x, "/start")?, st(x, "/end")?)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let security_groups = spec.get("managedSecurityGroups").map(|m| {
            let all = b(m, "/allowAllInClusterTraffic").unwrap_or(false);
            let common = user_rules(
                m.get("allNodesSecurityGroupRules")
                    .or_else(|| m.get("clusterNodesSecurityGroupRules")),
            );
            let mut cp = default_rules(true, all);
            cp.extend(common.clone());
            cp.extend(user_rules(m.get("controlPlaneNodesSecurityGroupRules")));
            let mut w = default_rules(false, all);
            w.extend(common);
            w.extend(user_rules(m.get("workerNodesSecurityGroupRules")));
            SecurityGroups {
                control_plane: cp,
                worker: w,
                allow_all_in_cluster: all,
            }
        });
        ClusterPlan {
            network: Ref::parse(spec.get("network")),
            subnets: spec
                .get("subnets")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| Ref::parse(Some(s))).collect())
                .unwrap_or_default(),
            managed_subnets,
            router: Ref::parse(spec.get("router")),
            external_network: Ref::parse(spec.get("externalNetwork")).or_else(|| {
                st(spec, "/externalNetworkID").map(|id| Ref {
                    id: Some(id),
                    ..Default::default()
                })
            }),
            disable_external_network: b(spec, "/disableExternalNetwork").unwrap_or(false),
            security_groups,
            lb,
            lb_provider,
            floating_ip,
            floating_ip_address,
            tags: strings(spec.get("tags")),
            mtu: spec.get("networkMTU").and_then(Value::as_u64),
            disable_port_security: b(spec, "/disablePortSecurity").unwrap_or(false),
            control_plane_omit_az: b(spec, "/controlPlaneOmitAvailabilityZone").unwrap_or(false),
            identity: identity_ref(spec),
        }
    }
}

/// CAPO's default rules (`pkg/cloud/services/networking/securitygroups.go`):
/// the API server from anywhere on control-plane nodes, etcd between
/// control-plane nodes, kubelet from every node, NodePorts on workers; with
/// `allowAllInClusterTraffic`, everything between cluster nodes instead.
fn default_rules(control_plane: bool, allow_all: bool) -> Vec<Rule> {
    let mut r = Vec::new();
    if control_plane {
        r.push(Rule::tcp("Kubernetes API", 6443, 6443, Remote::Any));
    } else {
        r.push(Rule::tcp("Node Port Services", 30000, 32767, Remote::Any));
        r.push(Rule::proto(
            "Node Port Services",
            "udp",
            Some((30000, 32767)),
            Remote::Any,
        ));
    }
    if allow_all {
        for g in ["controlplane", "worker"] {
            r.push(Rule::proto(
                "In-cluster Ingress",
                "",
                None,
                Remote::Group(g),
            ));
        }
        return r;
    }
    if control_plane {
        r.push(Rule::tcp("Etcd", 2379, 2380, Remote::Group("controlplane")));
    }
    for g in ["controlplane", "worker"] {
        r.push(Rule::tcp("Kubelet API", 10250, 10250, Remote::Group(g)));
    }
    r
}

/// What an OpenStackMachineTemplate's `spec.template.spec` asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MachinePlan {
    pub(crate) flavor: Option<Ref>,
    pub(crate) image: Option<Ref>,
    pub(crate) ssh_key: Option<String>,
    pub(crate) security_groups: Vec<Ref>,
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) config_drive: Option<bool>,
    /// (size GiB, volume type)
    pub(crate) root_volume: Option<(i64, Option<String>)>,
    pub(crate) identity: Option<(String, String)>,
}

impl MachinePlan {
    pub(crate) fn parse(spec: &Value) -> MachinePlan {
        let flavor = Ref::parse(spec.get("flavor")).or_else(|| {
            st(spec, "/flavorID").map(|id| Ref {
                id: Some(id),
                ..Default::default()
            })
        });
        let image = Ref::parse(spec.get("image").map(|i| i.get("imageRef").unwrap_or(i)));
        MachinePlan {
            flavor,
            image,
            ssh_key: st(spec, "/sshKeyName"),
            security_groups: spec
                .get("securityGroups")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| Ref::parse(Some(s))).collect())
                .unwrap_or_default(),
            tags: strings(spec.get("tags")),
            metadata: spec
                .get("serverMetadata")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| Some((st(m, "/key")?, st(m, "/value").unwrap_or_default())))
                        .collect()
                })
                .unwrap_or_default(),
            config_drive: b(spec, "/configDrive"),
            root_volume: spec.get("rootVolume").map(|r| {
                (
                    r.get("sizeGiB")
                        .or_else(|| r.get("diskSize"))
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    st(r, "/type").or_else(|| st(r, "/volumeType")),
                )
            }),
            identity: identity_ref(spec),
        }
    }
}

/// Problems in an OpenStackCluster spec.
pub(crate) fn validate_cluster(spec: &Value) -> Vec<SpecProblem> {
    let mut out = Vec::new();
    let p = ClusterPlan::parse(spec);
    if p.network.is_none() && p.managed_subnets.is_empty() {
        out.push(problem(
            "/managedSubnets".into(),
            "the cluster has neither a network nor managedSubnets: machines would have nowhere to connect".into(),
            "add managedSubnets: [{cidr: 10.6.0.0/24}] (CAPO's usual value) or name an existing network".into(),
        ));
    }
    if p.network.is_some() && !p.managed_subnets.is_empty() {
        out.push(problem(
            "/managedSubnets".into(),
            "managedSubnets cannot be combined with an existing network".into(),
            "remove managedSubnets, or remove network to let capi create one".into(),
        ));
    }
    for (i, s) in p.managed_subnets.iter().enumerate() {
        if !looks_like_cidr(&s.cidr) {
            out.push(problem(
                format!("/managedSubnets/{i}/cidr"),
                format!("{:?} is not an IPv4 CIDR", s.cidr),
                "write it as a.b.c.d/n, e.g. 10.6.0.0/24".into(),
            ));
        }
    }
    if spec
        .get("bastion")
        .and_then(|b| b.get("enabled"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        out.push(problem(
            "/bastion".into(),
            "a bastion host is not supported by capi's OpenStack provider".into(),
            "remove bastion (or set bastion.enabled: false)".into(),
        ));
    }
    out
}

fn looks_like_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
}

/// Problems in an OpenStackMachineTemplate's `spec.template.spec`.
pub(crate) fn validate_machine(spec: &Value) -> Vec<SpecProblem> {
    let mut out = Vec::new();
    let p = MachinePlan::parse(spec);
    if p.flavor.is_none() {
        out.push(problem(
            "/flavor".into(),
            "no flavor".into(),
            "set flavor: {filter: {name: m1.small}} or flavor: {id: ...}".into(),
        ));
    }
    if p.image.is_none() && p.root_volume.is_none() {
        out.push(problem(
            "/image".into(),
            "no image".into(),
            "set image: {filter: {name: ubuntu-2204-kube-v1.31}} or image: {id: ...}".into(),
        ));
    }
    if spec.get("providerID").is_some() {
        out.push(problem(
            "/providerID".into(),
            "providerID is set by the provider and forbidden in templates".into(),
            "remove providerID".into(),
        ));
    }
    out
}

/// Which OpenStackCluster fields may change in place (CAPO's webhook:
/// managed security-group rules and `allowAllInClusterTraffic`,
/// `identityRef`; everything else is immutable).
pub(crate) fn immutable_change(before: &Value, after: &Value) -> Option<(String, String)> {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("managedSecurityGroups");
            o.remove("identityRef");
            o.remove("tags");
            // Subnets are matched by CIDR; their DNS servers may change.
            if let Some(Value::Array(subnets)) = o.get_mut("managedSubnets") {
                for sn in subnets.iter_mut().filter_map(Value::as_object_mut) {
                    sn.remove("dnsNameservers");
                }
            }
        }
        v
    };
    let (b, a) = (strip(before), strip(after));
    if b == a {
        return None;
    }
    let mut keys: Vec<String> = b
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(a.as_object().into_iter().flatten().map(|(k, _)| k.clone()));
    keys.sort();
    keys.dedup();
    let field = keys
        .into_iter()
        .find(|k| b.get(k) != a.get(k))
        .unwrap_or_else(|| "spec".into());
    // Presence toggles of managed security groups are also immutable.
    let why = match field.as_str() {
        "managedSubnets" | "network" | "subnets" => "the cluster network and its subnets carry every machine's port; CAPO's webhook forbids changing them",
        "apiServerLoadBalancer" | "apiServer" | "apiServerPort" | "apiServerFloatingIP" | "disableAPIServerFloatingIP" | "apiServerFixedIP" => {
            "the control-plane endpoint would move and every kubeconfig and certificate would break; CAPO's webhook forbids it"
        }
        "externalNetwork" | "disableExternalNetwork" | "router" => "the router and the floating IPs depend on it; CAPO's webhook forbids changing it",
        _ => "CAPO's webhook makes OpenStackCluster spec immutable except managedSecurityGroups and identityRef",
    };
    Some((format!("spec.{field}"), why.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1beta2_cluster_with_defaults() {
        let spec = json!({
            "apiServer": {"managedLoadBalancer": {"enabled": true}},
            "externalNetwork": {"id": "ext"},
            "identityRef": {"cloudName": "devcloud", "name": "c-cloud-config"},
            "managedSecurityGroups": {"clusterNodesSecurityGroupRules": [
                {"description": "BGP", "direction": "ingress", "etherType": "IPv4", "name": "BGP", "portRangeMax": 179, "portRangeMin": 179, "protocol": "tcp", "remoteManagedGroups": ["controlplane", "worker"]}
            ]},
            "managedSubnets": [{"cidr": "10.6.0.0/24", "dnsNameservers": ["8.8.8.8"]}]
        });
        let p = ClusterPlan::parse(&spec);
        assert!(p.lb && p.floating_ip && p.network.is_none());
        assert_eq!(p.external_network.unwrap().id.as_deref(), Some("ext"));
        assert_eq!(
            p.identity,
            Some(("c-cloud-config".into(), "devcloud".into()))
        );
        let sg = p.security_groups.unwrap();
        // API + etcd + 2 kubelet + 2 BGP
        assert_eq!(sg.control_plane.len(), 6);
        // 2 NodePort + 2 kubelet + 2 BGP
        assert_eq!(sg.worker.len(), 6);
        assert!(validate_cluster(&spec).is_empty());
    }

    #[test]
    fn presence_only_load_balancer_and_allow_all() {
        let p = ClusterPlan::parse(
            &json!({"apiServerLoadBalancer": {}, "managedSecurityGroups": {"allowAllInClusterTraffic": true}, "managedSubnets": [{"cidr": "10.0.0.0/24"}]}),
        );
        assert!(p.lb);
        let sg = p.security_groups.unwrap();
        assert!(sg.allow_all_in_cluster);
        assert!(sg
            .control_plane
            .iter()
            .any(|r| r.protocol.is_none() && r.remote_group.as_deref() == Some("worker")));
        let p = ClusterPlan::parse(
            &json!({"apiServerLoadBalancer": {"enabled": false}, "disableAPIServerFloatingIP": true}),
        );
        assert!(!p.lb && !p.floating_ip && p.security_groups.is_none());
    }

    #[test]
    fn machine_templates_of_both_versions() {
        let m = MachinePlan::parse(
            &json!({"flavor": "m1.small", "image": {"filter": {"name": "ubuntu", "tags": ["k8s"]}}, "sshKeyName": "k"}),
        );
        assert_eq!(m.flavor.unwrap().name.as_deref(), Some("m1.small"));
        let img = m.image.unwrap();
        assert_eq!((img.name.as_deref(), img.tags.len()), (Some("ubuntu"), 1));
        let m = MachinePlan::parse(
            &json!({"flavor": {"id": "f1"}, "image": {"imageRef": {"name": "x"}}, "rootVolume": {"sizeGiB": 20}}),
        );
        assert_eq!(m.flavor.unwrap().id.as_deref(), Some("f1"));
        assert_eq!(m.root_volume, Some((20, None)));
        assert_eq!(validate_machine(&json!({})).len(), 2);
    }

    #[test]
    fn immutability() {
        let a = json!({"managedSubnets": [{"cidr": "10.6.0.0/24"}], "managedSecurityGroups": {}});
        let mut b = a.clone();
        b["managedSecurityGroups"] = json!({"allowAllInClusterTraffic": true});
        assert_eq!(immutable_change(&a, &b), None);
        b["managedSubnets"] = json!([{"cidr": "10.6.0.0/24", "dnsNameservers": ["192.0.2.1"]}]);
        assert_eq!(immutable_change(&a, &b), None, "DNS servers may change");
        b["managedSubnets"] = json!([{"cidr": "10.7.0.0/24"}]);
        let (field, why) = immutable_change(&a, &b).unwrap();
        assert_eq!(field, "spec.managedSubnets");
        assert!(why.contains("webhook"));
    }

    #[test]
    fn rule_signatures_match_neutron() {
        let r = Rule::tcp("Kubernetes API", 6443, 6443, Remote::Any);
        let n = json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 6443, "port_range_max": 6443, "remote_ip_prefix": "0.0.0.0/0"});
        assert_eq!(r.signature(&|_| None), neutron_sig(&n));
    }
}
