//! Kubernetes versions: `v`-prefixed semantic versions as Cluster API's
//! webhooks accept them, ordered by semver precedence. Parsed once where a
//! manifest or a flag is read; carried typed to the planner and providers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Kubernetes version, `v`-prefixed semver (`v1.31.2`, `v1.37.0-rc.1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Version {
    pub(crate) major: u64,
    pub(crate) minor: u64,
    pub(crate) patch: u64,
    pub(crate) pre: String,
    pub(crate) build: String,
}

impl Version {
    /// Parse like the Cluster API webhooks: a missing leading `v` is added.
    pub(crate) fn parse(s: &str) -> Result<Version, String> {
        let t = s.trim();
        let body = t.strip_prefix('v').unwrap_or(t);
        let (core, build) = match body.split_once('+') {
            Some((c, b)) => (c, b.to_string()),
            None => (body, String::new()),
        };
        let (core, pre) = match core.split_once('-') {
            Some((c, p)) => (c, p.to_string()),
            None => (core, String::new()),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 {
            return Err(format!(
                "{s:?} is not a semantic version of the form vMAJOR.MINOR.PATCH"
            ));
        }
        let num = |p: &str| -> Result<u64, String> {
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                Err(format!(
                    "{s:?} is not a semantic version: {p:?} is not a number"
                ))
            } else {
                p.parse::<u64>().map_err(|e| e.to_string())
            }
        };
        let ok_ident = |x: &str| {
            x.split('.')
                .all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if !pre.is_empty() && !ok_ident(&pre) {
            return Err(format!("{s:?} has a malformed pre-release part {pre:?}"));
        }
        if !build.is_empty() && !ok_ident(&build) {
            return Err(format!("{s:?} has malformed build metadata {build:?}"));
        }
        Ok(Version {
            major: num(parts[0])?,
            minor: num(parts[1])?,
            patch: num(parts[2])?,
            pre,
            build,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.build.is_empty() {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for Version {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Version::parse(&s)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}
