//! What `--target` names: one resource (its address), a whole cluster, or a
//! machine group by the Cluster API object that owns the machines
//! (`KubeadmControlPlane/NAME`, `MachineDeployment/NAME`,
//! `MachineSet/NAME`, kubectl's short names `kcp`, `md`, `ms` too), the
//! names the plan prints. Parsed once where the flag is read; the planner
//! matches it against its steps.

use std::fmt;
use std::str::FromStr;

use super::{Address, OwnerKind};

/// One `--target` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A resource and what it depends on.
    Resource(Address),
    /// Every resource of a cluster: its key as in addresses (`name` or
    /// `namespace:name`).
    Cluster(String),
    /// The machines a group owns (old and new), their bootstrap data and
    /// what they depend on, in whichever cluster has the group.
    Group { kind: OwnerKind, name: String },
}

impl Target {
    pub(crate) fn parse(s: &str) -> Result<Target, String> {
        let address_error = match Address::parse(s) {
            Ok(a) => return Ok(Target::Resource(a)),
            Err(e) => e,
        };
        let Some((kind, name)) = s.split_once('/') else {
            return cluster_key(s).map(Target::Cluster).ok_or_else(|| {
                format!("{s:?} is not a cluster name, `namespace:name`, or a resource address")
            });
        };
        let group = |kind| {
            if name.is_empty() || name.contains('/') {
                Err(format!("{s:?}: write {}/NAME", kind_name(kind)))
            } else {
                Ok(Target::Group {
                    kind,
                    name: name.to_string(),
                })
            }
        };
        match kind.to_ascii_lowercase().as_str() {
            "cluster" => cluster_key(name)
                .map(Target::Cluster)
                .ok_or_else(|| format!("{s:?}: write Cluster/NAME or Cluster/NAMESPACE:NAME")),
            k if group_kind(k).is_some() => group(group_kind(k).expect("matched")),
            _ => Err(format!(
                "{address_error}; or name a cluster (CLUSTER, Cluster/NAME) or a machine group (KubeadmControlPlane/NAME, MachineDeployment/NAME, MachineSet/NAME)"
            )),
        }
    }
}

/// The machine-group kind a `--target` or `state mv` names (lowercase).
fn group_kind(lowercase: &str) -> Option<OwnerKind> {
    match lowercase {
        "kubeadmcontrolplane" | "kcp" => Some(OwnerKind::KubeadmControlPlane),
        "machinedeployment" | "md" => Some(OwnerKind::MachineDeployment),
        "machineset" | "ms" => Some(OwnerKind::MachineSet),
        _ => None,
    }
}

/// `KIND/NAME` as a machine group, where only a group makes sense (`capi
/// state mv`): a group named like a resource kind (`md/network`) would
/// otherwise read as a resource address. `None`: not `KIND/NAME` of a
/// group kind.
pub(crate) fn parse_group(s: &str) -> Option<(OwnerKind, String)> {
    let (kind, name) = s.split_once('/')?;
    let kind = group_kind(&kind.to_ascii_lowercase())?;
    (!name.is_empty() && !name.contains('/')).then(|| (kind, name.to_string()))
}

fn kind_name(kind: OwnerKind) -> &'static str {
    kind.as_str()
}

/// `name` or `namespace:name`; `default:name` is `name`, as in addresses.
fn cluster_key(s: &str) -> Option<String> {
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    match s.split_once(':') {
        Some((ns, name)) if ok(ns) && ok(name) => Some(if ns == super::DEFAULT_NAMESPACE {
            name.to_string()
        } else {
            s.to_string()
        }),
        None if ok(s) => Some(s.to_string()),
        _ => None,
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Resource(a) => write!(f, "{a}"),
            Target::Cluster(key) => write!(f, "Cluster/{key}"),
            Target::Group { kind, name } => write!(f, "{kind}/{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_clusters_and_groups() {
        assert_eq!(
            Target::parse("demo/network").unwrap(),
            Target::Resource(Address::parse("demo/network").unwrap())
        );
        assert_eq!(
            Target::parse("demo").unwrap(),
            Target::Cluster("demo".into())
        );
        assert_eq!(
            Target::parse("Cluster/default:demo").unwrap(),
            Target::Cluster("demo".into())
        );
        assert_eq!(
            Target::parse("fleet:alpha").unwrap(),
            Target::Cluster("fleet:alpha".into())
        );
        assert_eq!(
            Target::parse("MachineDeployment/demo-md-0").unwrap(),
            Target::Group {
                kind: OwnerKind::MachineDeployment,
                name: "demo-md-0".into()
            }
        );
        assert_eq!(
            Target::parse("kcp/demo-control-plane").unwrap(),
            Target::Group {
                kind: OwnerKind::KubeadmControlPlane,
                name: "demo-control-plane".into()
            }
        );
        // A typo in a resource type still explains addresses, and groups.
        let e = Target::parse("demo/machin/x").unwrap_err();
        assert!(
            e.contains("machin") && e.contains("MachineDeployment/NAME"),
            "{e}"
        );
        assert!(Target::parse("MachineDeployment/").is_err());
        assert!(Target::parse("bad name").is_err());
    }

    /// Where only a group makes sense, one named like a resource kind is
    /// still a group (as an address, `md/network` is cluster md's network).
    #[test]
    fn groups_named_like_resource_kinds() {
        assert_eq!(
            Target::parse("md/network").unwrap(),
            Target::Resource(Address::parse("md/network").unwrap())
        );
        for (s, kind) in [
            ("md/network", OwnerKind::MachineDeployment),
            ("MachineDeployment/pki", OwnerKind::MachineDeployment),
            ("kcp/token", OwnerKind::KubeadmControlPlane),
            ("MachineSet/loadbalancer", OwnerKind::MachineSet),
        ] {
            let (k, name) = parse_group(s).unwrap();
            assert_eq!(k, kind, "{s}");
            assert_eq!(name, s.split_once('/').unwrap().1, "{s}");
        }
        assert_eq!(parse_group("demo/network"), None);
        assert_eq!(parse_group("md/"), None);
        assert_eq!(parse_group("md/a/b"), None);
    }
}
