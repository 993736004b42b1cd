//! Reading manifests: sources → variable substitution → YAML → normalised
//! objects → validation. Pure except for [`read_sources`], which reads files.

pub(crate) mod edit;
pub(crate) mod error;
pub(crate) mod limits;
pub(crate) mod model;
pub(crate) mod names;
pub(crate) mod normalize;
pub(crate) mod raw;
mod stream;
pub(crate) mod validate;
pub(crate) mod vars;
pub(crate) mod yaml;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{ManifestError, Problem, ProblemReport, Severity};
pub(crate) use model::*;
pub use vars::Variables;

/// A manifest input before substitution.
#[derive(Debug, Clone)]
pub struct RawSource {
    pub(crate) name: String,
    pub(crate) text: String,
}

/// Read `-f` arguments: files, directories (every `*.yaml`/`*.yml`, sorted) and
/// `-` for standard input.
pub fn read_sources(
    args: &[PathBuf],
    stdin: &mut dyn Read,
) -> Result<Vec<RawSource>, ManifestError> {
    read_sources_in(args, false, stdin).map(|(sources, _)| sources)
}

/// [`read_sources`], descending into subdirectories when `recursive`
/// (`-R`, as kubectl); otherwise also the subdirectories left out that
/// hold manifests, for the caller to mention.
pub fn read_sources_in(
    args: &[PathBuf],
    recursive: bool,
    stdin: &mut dyn Read,
) -> Result<(Vec<RawSource>, Vec<PathBuf>), ManifestError> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let mut budget = Budget(limits::MAX_INPUT_BYTES);
    for arg in args {
        if arg.as_os_str() == "-" {
            let bytes = budget.read("<stdin>", &mut *stdin)?;
            out.push(RawSource {
                name: "<stdin>".into(),
                text: utf8("<stdin>", bytes)?,
            });
            continue;
        }
        let meta = std::fs::metadata(arg).map_err(|e| ManifestError::Read {
            path: arg.display().to_string(),
            source: e,
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            manifests_in(arg, recursive, &mut files, &mut skipped)?;
            files.sort();
            if files.is_empty() {
                return Err(ManifestError::NoManifests(format!(
                    "directory {} has no *.yaml or *.yml files{}",
                    arg.display(),
                    if skipped.is_empty() {
                        ""
                    } else {
                        " (its subdirectories have some: pass -R to read them)"
                    }
                )));
            }
            for f in files {
                out.push(read_file(&f, &mut budget)?);
            }
        } else {
            out.push(read_file(arg, &mut budget)?);
        }
    }
    Ok((out, skipped))
}

fn is_manifest(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// The manifests of `dir` (and of its subdirectories when `recursive`);
/// without it, the subdirectories holding manifests go to `skipped`.
fn manifests_in(
    dir: &Path,
    recursive: bool,
    files: &mut Vec<PathBuf>,
    skipped: &mut Vec<PathBuf>,
) -> Result<(), ManifestError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ManifestError::Read {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut subdirs = Vec::new();
    for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if p.is_dir() {
            subdirs.push(p);
        } else if p.is_file() && is_manifest(&p) {
            files.push(p);
        }
    }
    subdirs.sort();
    for sub in subdirs {
        if recursive {
            manifests_in(&sub, true, files, skipped)?;
        } else {
            let mut inner = Vec::new();
            let mut ignored = Vec::new();
            manifests_in(&sub, true, &mut inner, &mut ignored)?;
            if !inner.is_empty() {
                skipped.push(sub);
            }
        }
    }
    Ok(())
}

fn read_file(path: &Path, budget: &mut Budget) -> Result<RawSource, ManifestError> {
    let name = path.display().to_string();
    let failed = |e| ManifestError::Read {
        path: name.clone(),
        source: e,
    };
    let mut f = std::fs::File::open(path).map_err(failed)?;
    // A regular file's size is known: one too large is not read at all.
    let size = f.metadata().map_err(failed)?.len();
    if size > budget.0 {
        return Err(budget.crossed(&name));
    }
    let bytes = budget.read(&name, &mut f)?;
    Ok(RawSource {
        text: utf8(&name, bytes)?,
        name,
    })
}

/// What is left of [`limits::MAX_INPUT_BYTES`] for the files still to read.
struct Budget(u64);

impl Budget {
    /// Read all of `from` within the budget (a pipe or a file that grows is
    /// read no further than that), and charge it.
    fn read(&mut self, name: &str, from: impl Read) -> Result<Vec<u8>, ManifestError> {
        let mut bytes = Vec::new();
        from.take(self.0.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| ManifestError::Read {
                path: name.to_string(),
                source: e,
            })?;
        let n = bytes.len() as u64;
        if n > self.0 {
            return Err(self.crossed(name));
        }
        self.0 -= n;
        Ok(bytes)
    }

    fn crossed(&self, name: &str) -> ManifestError {
        ManifestError::TooLarge {
            path: name.to_string(),
            limit: limits::MAX_INPUT_BYTES,
        }
    }
}

/// The text of a manifest. A leading byte-order mark (which YAML allows and
/// Windows editors write) is dropped; lines and columns are unchanged.
fn utf8(name: &str, bytes: Vec<u8>) -> Result<String, ManifestError> {
    let mut text = text_of(name, bytes)?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// The text of a file, or where its first byte that is not UTF-8 is.
fn text_of(name: &str, bytes: Vec<u8>) -> Result<String, ManifestError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line_start = bytes[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        ManifestError::NotUtf8 {
            path: name.to_string(),
            line: bytes[..at].iter().filter(|b| **b == b'\n').count() + 1,
            column: at - line_start + 1,
            offset: at,
            byte: bytes[at],
        }
    })
}

/// Parsed, validated manifests.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub files: Vec<SourceFile>,
    pub objects: Vec<Object>,
    /// Warnings (ignored kinds, ...); errors never reach a `Manifest`.
    pub warnings: Vec<Problem>,
    /// Objects read and checked but not kept, being of kinds capi does not
    /// use (ConfigMaps; see `stream.rs`).
    others: usize,
    /// Variables that were substituted, with their values.
    pub variables: BTreeMap<String, String>,
    /// SHA-256 of the sources as written (before substitution).
    pub source_digest: String,
    index: BTreeMap<ObjectKey, usize>,
    /// Objects that were reported as invalid (their references are not
    /// reported a second time).
    broken: std::collections::BTreeSet<ObjectKey>,
}

impl Manifest {
    pub(crate) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Object> {
        self.index
            .get(&ObjectKey {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            })
            .map(|&i| &self.objects[i])
    }

    /// Is this object present but invalid (already reported)?
    pub(crate) fn is_broken(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.broken.contains(&ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// Resolve a reference made by `from` (same namespace).
    pub(crate) fn resolve(&self, from: &Object, r: &ObjectRef) -> Option<&Object> {
        let kind = Kind::parse(&r.kind)?;
        self.get(kind, &from.key.namespace, &r.name)
    }

    /// How many objects the manifests define: those kept in `objects`
    /// and those capi checked but does not use.
    pub fn object_count(&self) -> usize {
        self.objects.len() + self.others
    }

    pub(crate) fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects.iter().filter(move |o| o.key.kind == kind)
    }

    /// SHA-256 of the variables used, with their values.
    pub(crate) fn variables_digest(&self) -> String {
        crate::resource::hash_json(&self.variables)
    }
}

/// Substitute variables in every source, then parse and validate. All missing
/// variables are reported together before anything else; then all problems
/// (errors and warnings) of all files together.
pub fn load(sources: Vec<RawSource>, vars: &Variables) -> Result<Manifest, ManifestError> {
    load_with(sources, vars, None)
}

/// A document as JSON with the positions of its values, before it is
/// normalised: what an [`Expand`] stage sees and may replace.
#[derive(Debug, Clone)]
pub(crate) struct RawDocument {
    pub(crate) root: serde_json::Value,
    pub(crate) origin: Origin,
}

/// A stage between YAML and normalisation that may replace documents by
/// others (the ClusterClass expansion, `src/topology`). It lives in a floor
/// above this one, so it is passed in.
pub(crate) trait Expand {
    fn expand(
        &self,
        files: &[SourceFile],
        docs: Vec<RawDocument>,
        problems: &mut Vec<Problem>,
    ) -> Vec<RawDocument>;
}

/// [`load`] with an optional expansion stage.
pub(crate) fn load_with(
    sources: Vec<RawSource>,
    vars: &Variables,
    expand: Option<&dyn Expand>,
) -> Result<Manifest, ManifestError> {
    let source_digest = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for s in &sources {
            h.update(s.name.as_bytes());
            h.update([0]);
            h.update(s.text.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    };
    let mut missing = Vec::new();
    let mut used = BTreeMap::new();
    let mut files = Vec::with_capacity(sources.len());
    for src in sources {
        let s = vars::substitute(&src.name, &src.text, vars);
        missing.extend(s.missing);
        used.extend(s.used);
        let lines = |t: &str| t.bytes().filter(|&b| b == b'\n').count();
        let original = (s.text != src.text && lines(&s.text) == lines(&src.text))
            .then(|| Arc::from(src.text.as_str()));
        files.push(SourceFile {
            name: src.name,
            text: Arc::from(s.text),
            original,
        });
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(ManifestError::MissingVariables(missing));
    }
    let mut m = parse_with(files, used, expand)?;
    m.source_digest = source_digest;
    Ok(m)
}

/// Parse already-substituted files, expanding them with `expand`.
pub(crate) fn parse_with(
    files: Vec<SourceFile>,
    variables: BTreeMap<String, String>,
    expand: Option<&dyn Expand>,
) -> Result<Manifest, ManifestError> {
    let mut problems = Vec::new();
    let mut broken = std::collections::BTreeSet::new();
    let mut docs = stream::Documents::default();
    for (fi, file) in files.iter().enumerate() {
        docs.read_file(fi, file, &mut problems);
    }
    let others = docs.check_foreign(&files, &mut problems);
    let mut raw_docs = std::mem::take(&mut docs.raw);
    drop(docs);
    if let Some(expand) = expand {
        raw_docs = expand.expand(&files, raw_docs, &mut problems);
    }
    let mut objects = Vec::with_capacity(raw_docs.len());
    for doc in raw_docs {
        let file = &files[doc.origin.file].name;
        match normalize::parse_value(file, doc, &mut problems) {
            normalize::Parsed::Object(o) => objects.push(*o),
            normalize::Parsed::Broken(k) => {
                broken.insert(k);
            }
            normalize::Parsed::Skip => {}
        }
    }
    if files.iter().all(|f| f.text.trim().is_empty()) && problems.is_empty() {
        return Err(ManifestError::NoManifests("the manifests are empty".into()));
    }
    let index = drop_duplicates(&mut objects, &files, &mut problems);
    let mut manifest = Manifest {
        files,
        objects,
        others,
        warnings: Vec::new(),
        variables,
        source_digest: String::new(),
        index,
        broken,
    };
    validate::validate(&manifest, &mut problems);
    problems.sort_by(|a, b| {
        (a.severity, a.file_index, a.pos.line, a.pos.col, &a.message).cmp(&(
            b.severity,
            b.file_index,
            b.pos.line,
            b.pos.col,
            &b.message,
        ))
    });
    problems.dedup();
    if problems.iter().any(Problem::is_error) {
        return Err(ManifestError::Invalid {
            problems,
            files: manifest.files,
        });
    }
    manifest.warnings = problems;
    Ok(manifest)
}

/// Report the objects defined twice and drop the second definitions (in
/// place: the objects are large, two lists of them would double the peak);
/// the index of those that stay.
fn drop_duplicates(
    objects: &mut Vec<Object>,
    files: &[SourceFile],
    problems: &mut Vec<Problem>,
) -> BTreeMap<ObjectKey, usize> {
    let mut index = BTreeMap::new();
    let mut keep = Vec::with_capacity(objects.len());
    // Where each object that stays was before the others are dropped.
    let mut was = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        if let Some(&first) = index.get(&o.key) {
            let f: &Object = &objects[was[first]];
            problems.push(Problem::error(
                o.origin.file,
                &files[o.origin.file].name,
                o.origin.pos_of("/metadata/name"),
                format!("duplicate object: {} is defined twice", o.key),
                format!(
                    "it is first defined at {}:{}; remove one of the two or rename it",
                    files[f.origin.file].name,
                    f.origin.pos_of("/metadata/name").line
                ),
            ));
            keep.push(false);
            continue;
        }
        index.insert(o.key.clone(), was.len());
        was.push(i);
        keep.push(true);
    }
    let mut keep = keep.into_iter();
    objects.retain(|_| keep.next().unwrap_or(false));
    index
}

/// Load from in-memory text (tests, `generate`).
pub fn load_str(name: &str, text: &str, vars: &Variables) -> Result<Manifest, ManifestError> {
    load(
        vec![RawSource {
            name: name.to_string(),
            text: text.to_string(),
        }],
        vars,
    )
}

/// The problems as the CLI renders them (snippets included, the first
/// [`limits::MAX_REPORTED_PROBLEMS`], then a count), without colour: what
/// `desired::check_bytes` (the fuzzed path of `capi validate`) returns.
pub(crate) fn render_problems(problems: &[Problem], files: &[SourceFile]) -> String {
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_context_lines(1)
            .with_width(100);
    let max = limits::MAX_REPORTED_PROBLEMS;
    let (reports, hidden) = ProblemReport::all(problems, files, max);
    let mut out = String::new();
    for r in &reports {
        let _ = handler.render_report(&mut out, r);
    }
    out.push_str(&format!("{hidden} more\n"));
    out
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    #[test]
    fn the_budget_covers_every_file_and_stops_reading_past_it() {
        let mut budget = Budget(10);
        assert_eq!(budget.read("a", &b"123456"[..]).unwrap().len(), 6);
        assert_eq!(budget.read("b", &b"1234"[..]).unwrap().len(), 4);
        let err = budget.read("c", &b"1"[..]).unwrap_err();
        assert!(
            matches!(&err, ManifestError::TooLarge { path, .. } if path == "c"),
            "{err}"
        );
        // An endless stream is read no further than the budget.
        let mut budget = Budget(1000);
        let err = budget.read("<stdin>", std::io::repeat(b'a')).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("<stdin>: with it the manifests are more than"),
            "{err}"
        );
    }

    fn capo_vars() -> Variables {
        let mut v = Variables::new();
        for (k, val) in [
            ("CLUSTER_NAME", "capo"),
            ("OPENSTACK_CLOUD_CACERT_B64", "Y2E="),
            ("OPENSTACK_CLOUD_YAML_B64", "Y2xvdWRzOiB7fQ=="),
            ("WORKER_MACHINE_COUNT", "2"),
            ("OPENSTACK_FAILURE_DOMAIN", "nova"),
            ("KUBERNETES_VERSION", "v1.31.2"),
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

    #[test]
    fn upstream_fixtures_probe() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/upstream");
        if !base.exists() {
            eprintln!(
                "SKIPPED: {} is absent (../shared is only present in the development workplace)",
                base.display()
            );
            return;
        }
        for f in [
            "cluster-api/simple-cluster.yaml",
            "cluster-api-provider-openstack/cluster-template.yaml",
            "cluster-api-provider-openstack/cluster-template-capi-v1beta1.yaml",
        ] {
            let srcs = read_sources(&[base.join(f)], &mut std::io::empty()).unwrap();
            match load(srcs, &capo_vars()) {
                Ok(m) => eprintln!(
                    "{f}: {} objects, {} warnings",
                    m.objects.len(),
                    m.warnings.len()
                ),
                Err(ManifestError::Invalid { problems, .. }) => panic!("{f}: {problems:#?}"),
                Err(e) => panic!("{f}: {e}"),
            }
        }
    }
}
