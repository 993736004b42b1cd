//! Which image a machine runs: CAPD's `kindest/node` mapping.

/// The default node image repository.
pub(crate) const NODE_REPOSITORY: &str = "kindest/node";
/// CAPD's default load balancer image (`internal/loadbalancer/const.go`).
pub(crate) const LB_REPOSITORY: &str = "kindest";
pub(crate) const LB_IMAGE_NAME: &str = "haproxy";
pub(crate) const LB_TAG: &str = "v20230606-42a2262b";

use crate::resource::Version;

/// `customImage` when set, else `kindest/node:<version>` with the characters
/// a tag cannot hold replaced by `_` (CAPD's fallback when the version is
/// not in kind's table of digest-pinned images; capi always uses the
/// fallback, see docs/providers/docker.md).
pub(crate) fn node_image(version: &Version, custom: Option<&str>) -> String {
    if let Some(c) = custom.filter(|c| !c.trim().is_empty()) {
        return c.trim().to_string();
    }
    let v = version.to_string();
    let tag: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{NODE_REPOSITORY}:{tag}")
}

/// `<repository>/haproxy:<tag>`, CAPD's defaults for what is not set.
pub(crate) fn lb_image(repository: Option<&str>, tag: Option<&str>) -> String {
    let r = repository
        .filter(|s| !s.is_empty())
        .unwrap_or(LB_REPOSITORY);
    let t = tag.filter(|s| !s.is_empty()).unwrap_or(LB_TAG);
    format!("{r}/{LB_IMAGE_NAME}:{t}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn mapping() {
        assert_eq!(node_image(&v("v1.31.2"), None), "kindest/node:v1.31.2");
        assert_eq!(
            node_image(&v("1.37.0-rc.1+x"), None),
            "kindest/node:v1.37.0-rc.1_x"
        );
        assert_eq!(
            node_image(&v("v1.31.2"), Some("capi-node:test")),
            "capi-node:test"
        );
        assert_eq!(node_image(&v("v1.31.2"), Some("")), "kindest/node:v1.31.2");
        assert_eq!(lb_image(None, None), "kindest/haproxy:v20230606-42a2262b");
        assert_eq!(lb_image(Some("capi"), Some("test")), "capi/haproxy:test");
    }
}
