//! ClusterClass: the stage between reading manifests and normalising them
//! that expands every Cluster with `spec.topology` into the objects Cluster
//! API's topology controller would create (infrastructure cluster,
//! KubeadmControlPlane with its machine template clone, one
//! MachineDeployment per topology entry with its template clones,
//! MachineHealthChecks), so the rest of `capi` plans them like written-out
//! objects. `class.rs` reads ClusterClasses, `variables.rs` defaults and
//! validates variables, `patches.rs` runs inline patches (`gotmpl` for Go
//! templates, `jsonpatch.rs` for RFC 6902), `expand.rs` builds the objects
//! and `names.rs` gives them deterministic names. Pure: no I/O.

mod class;
mod expand;
pub(crate) mod gotmpl;
mod jsonpatch;
mod names;
mod patches;
mod variables;
mod workers;

use crate::manifest::yaml::Pos;
use crate::manifest::{
    self, Expand, ManifestError, Origin, Problem, RawDocument, RawSource, SourceFile, Variables,
};

pub(crate) use names::{EXPLAIN, LABEL_DEPLOYMENT_NAME, LABEL_OWNED};

/// Read manifests like [`manifest::load`], expanding topology Clusters.
pub fn load(
    sources: Vec<RawSource>,
    vars: &Variables,
) -> Result<manifest::Manifest, ManifestError> {
    manifest::load_with(sources, vars, Some(&Expander))
}

/// [`load`] from in-memory text (tests, benches, `generate`).
pub fn load_str(
    name: &str,
    text: &str,
    vars: &Variables,
) -> Result<manifest::Manifest, ManifestError> {
    load(
        vec![RawSource {
            name: name.to_string(),
            text: text.to_string(),
        }],
        vars,
    )
}

/// For `capi upgrade`: the manifests again with the topology Cluster
/// `namespace/cluster` at `version`, expanded anew (patches and builtins see
/// the new version). `None` when that Cluster has no topology.
pub(crate) fn with_topology_version(
    m: &manifest::Manifest,
    namespace: &str,
    cluster: &str,
    version: &crate::resource::Version,
) -> Option<Result<manifest::Manifest, ManifestError>> {
    let c = m.get(manifest::Kind::Cluster, namespace, cluster)?;
    let line = c.origin.spans.get("/spec/topology/version")?.line;
    let mut files = m.files.clone();
    let f = files.get_mut(c.origin.file)?;
    let text = manifest::edit::apply_edit(&f.text, line, &version.to_string()).ok()?;
    f.text = std::sync::Arc::from(text);
    let digest = m.source_digest.clone();
    Some(
        manifest::parse_with(files, m.variables.clone(), Some(&Expander)).map(|mut out| {
            out.source_digest = digest;
            out
        }),
    )
}

/// The expansion stage handed to the manifest reader.
pub(crate) struct Expander;

impl Expand for Expander {
    fn expand(
        &self,
        files: &[SourceFile],
        docs: Vec<RawDocument>,
        problems: &mut Vec<Problem>,
    ) -> Vec<RawDocument> {
        let mut rep = Report { files, problems };
        expand::expand_all(&mut rep, docs)
    }
}

/// Where the expansion's problems go, each located in its document.
pub(crate) struct Report<'a> {
    files: &'a [SourceFile],
    problems: &'a mut Vec<Problem>,
}

impl Report<'_> {
    pub(crate) fn error(
        &mut self,
        o: &Origin,
        pointer: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(Problem::error, o, pointer, message.into(), help.into());
    }

    pub(crate) fn warning(
        &mut self,
        o: &Origin,
        pointer: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(Problem::warning, o, pointer, message.into(), help.into());
    }

    /// A problem at `pointer` in the document `o` came from.
    fn push(
        &mut self,
        make: fn(usize, &str, Pos, String, String) -> Problem,
        o: &Origin,
        pointer: &str,
        message: String,
        help: String,
    ) {
        let file = self
            .files
            .get(o.file)
            .map(|f| f.name.as_str())
            .unwrap_or("");
        self.problems
            .push(make(o.file, file, o.pos_of(pointer), message, help));
    }
}
