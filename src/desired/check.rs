//! Everything `capi validate` does with the bytes of one manifest, without
//! touching a file or printing: decode, substitute variables, parse YAML
//! within its limits, expand ClusterClass topologies (Go-template and JSON
//! patches within theirs), normalise, validate, build the desired clusters
//! (bootstrap rendering included), and render the problems as the CLI would.
//! The fuzz target (`fuzz/`) and the random-input tests drive it: whatever
//! the bytes, it must return, never panic, abort or run away.

use std::path::PathBuf;

use crate::manifest::{self, ManifestError, Variables};

use super::{build, GraphOptions};

/// The path of `capi validate -f - ` (with `vars` as its `--var`s) over
/// `bytes`: `valid: …` or the rendered problems.
#[doc(hidden)]
pub fn check_bytes(bytes: &[u8], vars: &Variables) -> String {
    let sources = match manifest::read_sources(&[PathBuf::from("-")], &mut &bytes[..]) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    let m = match crate::topology::load(sources, vars) {
        Ok(m) => m,
        Err(ManifestError::Invalid { problems, files }) => {
            return manifest::render_problems(&problems, &files)
        }
        Err(e) => return e.to_string(),
    };
    match build(&m, &GraphOptions::default()) {
        Ok(d) => format!(
            "valid: {} objects, {} clusters, {} machines",
            m.object_count(),
            d.clusters.len(),
            d.clusters
                .iter()
                .flat_map(|c| c.groups.iter())
                .map(|g| u64::from(g.replicas))
                .sum::<u64>()
        ),
        Err(problems) => manifest::render_problems(&problems, &m.files),
    }
}
