//! Kubernetes versions: `v`-prefixed semantic versions as Cluster API's
//! webhooks accept them, ordered by semver precedence. Parsed once where a
//! manifest or a flag is read; carried typed to the planner and providers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest major, minor or patch number accepted.
const MAX_PART: u32 = 1 << 30;

/// A Kubernetes version, `v`-prefixed semver (`v1.31.2`, `v1.37.0-rc.1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Version {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) patch: u32,
    /// Pre-release and build metadata, boxed: rare, and every machine of a
    /// state carries a version (24 bytes instead of 72).
    extra: Option<Box<Extra>>,
}

/// The parts of a version after `-` (pre-release) and `+` (build).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Extra {
    pre: String,
    build: String,
}

impl Version {
    /// `vMAJOR.MINOR.PATCH`.
    pub(crate) fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
            extra: None,
        }
    }

    /// Has a pre-release part (`v1.37.0-rc.1`).
    pub(crate) fn is_prerelease(&self) -> bool {
        !self.pre().is_empty()
    }

    /// The pre-release part (empty when there is none).
    fn pre(&self) -> &str {
        self.extra.as_ref().map_or("", |e| &e.pre)
    }

    /// The build metadata (empty when there is none).
    fn build(&self) -> &str {
        self.extra.as_ref().map_or("", |e| &e.build)
    }

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
        let num = |p: &str| -> Result<u32, String> {
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                Err(format!(
                    "{s:?} is not a semantic version: {p:?} is not a number"
                ))
            } else {
                // Bounded well below u32::MAX: upgrade paths add to the
                // minor version (`minor + 1`) and must not overflow.
                p.parse::<u32>()
                    .ok()
                    .filter(|&n| n <= MAX_PART)
                    .ok_or_else(|| {
                        format!("{s:?} is not a supported version: {p:?} is above {MAX_PART}")
                    })
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
            extra: (!pre.is_empty() || !build.is_empty()).then(|| Box::new(Extra { pre, build })),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre().is_empty() {
            write!(f, "-{}", self.pre())?;
        }
        if !self.build().is_empty() {
            write!(f, "+{}", self.build())?;
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
            .then_with(|| match (self.pre().is_empty(), other.pre().is_empty()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => self.pre().cmp(other.pre()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_after_the_core_round_trip_and_order_as_semver() {
        let rc = Version::parse("v1.37.0-rc.1+build.5").unwrap();
        assert_eq!(rc.to_string(), "v1.37.0-rc.1+build.5");
        assert!(rc.is_prerelease());
        let release = Version::parse("1.37.0").unwrap();
        assert_eq!(release, Version::new(1, 37, 0));
        assert!(!release.is_prerelease());
        assert!(rc < release, "a pre-release sorts before its release");
        assert!(Version::parse("v1.37.0-rc.2").unwrap() > Version::parse("v1.37.0-rc.1").unwrap());
        assert_ne!(
            Version::parse("v1.37.0+a").unwrap(),
            Version::parse("v1.37.0+b").unwrap(),
            "build metadata is part of equality, not of order"
        );
        assert!(Version::parse("v1.99999999999.0")
            .unwrap_err()
            .contains("not a supported version"));
        // Carried by every machine in a state: the rare parts are boxed.
        assert!(size_of::<Version>() <= 24);
    }
}
