//! Reading the manifest files one document at a time. Each document is
//! turned into JSON with positions and sorted as soon as the YAML reader
//! completes it: documents capi models (the Cluster API kinds, Secrets,
//! anything a ClusterClass may use) are kept whole for the expansion and
//! normalisation that follow; the others (ConfigMaps, kinds of other API
//! groups) are checked at once, as they always were, and reduced to what
//! the duplicate check and the object count need ([`Foreign`]). Many small
//! foreign objects thus cost about a hundred bytes each, not their tree,
//! JSON and field positions (docs/reliability.md, "Limits").

use std::collections::HashMap;

use serde_json::Value;

use super::error::Problem;
use super::model::{Kind, ObjectKey, SourceFile};
use super::normalize::{self, Parsed};
use super::yaml::{self, Pos};
use super::RawDocument;

/// What is kept of an object capi does not model: its key, and where it is
/// for a duplicate's message.
pub(super) struct Foreign {
    key: ObjectKey,
    file: usize,
    /// Line of the document.
    line: u32,
    /// Position of its `metadata.name`.
    name_pos: Pos,
}

/// The documents read so far.
#[derive(Default)]
pub(super) struct Documents {
    /// Documents kept whole, in the order of the files.
    pub(super) raw: Vec<RawDocument>,
    /// Foreign objects, in the order of the files.
    foreign: Vec<Foreign>,
}

impl Documents {
    /// Read one file's documents. A file with a syntax error, or with no
    /// document that looks like a manifest, keeps nothing and reports only
    /// that one problem (as when files were read whole before anything else).
    pub(super) fn read_file(&mut self, fi: usize, file: &SourceFile, problems: &mut Vec<Problem>) {
        let marks = (problems.len(), self.raw.len(), self.foreign.len());
        // Documents before the first that looks like a manifest wait (as
        // trees) until one does: a file with none is not converted at all.
        let mut pending = Vec::new();
        let mut manifest = false;
        let read = yaml::each_document(&file.text, |doc| {
            manifest |= doc.root.looks_like_manifest();
            if !manifest {
                pending.push(doc);
                return;
            }
            for doc in pending.drain(..).chain([doc]) {
                let raw = normalize::document_json(fi, &file.name, &doc, problems);
                drop(doc);
                self.take(&file.name, raw, problems);
            }
        });
        let problem = match read {
            Ok(()) if !pending.is_empty() => not_yaml(fi, &file.name),
            Ok(()) => return,
            Err(e) if e.limit => {
                let mut p = Problem::error(
                    fi,
                    &file.name,
                    e.pos,
                    e.message,
                    "capi reads manifests within documented limits (docs/reliability.md, \"Limits\"): simplify this part of the file",
                );
                // Not quoted unless the file is a manifest (see `not_yaml`).
                p.quote = e.looks_like_manifest;
                p
            }
            Err(e) if !e.looks_like_manifest => not_yaml(fi, &file.name),
            Err(e) => Problem::error(
                fi,
                &file.name,
                e.pos,
                format!("YAML syntax error: {}", e.message),
                "fix the YAML syntax (indentation, quotes, brackets) at this line",
            ),
        };
        problems.truncate(marks.0);
        self.raw.truncate(marks.1);
        self.foreign.truncate(marks.2);
        problems.push(problem);
    }

    /// Keep a document whole, or check a foreign one now and keep its key.
    fn take(&mut self, file: &str, raw: RawDocument, problems: &mut Vec<Problem>) {
        if !is_foreign(&raw.root) {
            self.raw.push(raw);
            return;
        }
        let Parsed::Object(o) = normalize::parse_value(file, raw, problems) else {
            // Ignored (a warning) or not an object (an error): nothing to
            // keep. (A ConfigMap's body is never refused: no `Broken` here.)
            return;
        };
        self.foreign.push(Foreign {
            name_pos: o.origin.pos_of("/metadata/name"),
            file: o.origin.file,
            line: o.origin.pos.line,
            key: o.key,
        });
    }

    /// Report the foreign objects defined twice (the first definition
    /// stands, as for the others); how many different ones there are.
    pub(super) fn check_foreign(&self, files: &[SourceFile], problems: &mut Vec<Problem>) -> usize {
        let mut first: HashMap<&ObjectKey, &Foreign> = HashMap::with_capacity(self.foreign.len());
        for f in &self.foreign {
            match first.get(&f.key) {
                Some(was) => problems.push(Problem::error(
                    f.file,
                    &files[f.file].name,
                    f.name_pos,
                    format!("duplicate object: {} is defined twice", f.key),
                    format!(
                        "it is first defined at {}:{}; remove one of the two or rename it",
                        files[was.file].name, was.line
                    ),
                )),
                None => {
                    first.insert(&f.key, f);
                }
            }
        }
        first.len()
    }
}

/// Is this a document capi checks but does not use: a ConfigMap, or a kind
/// capi does not know outside the Cluster API groups? Whatever a ClusterClass
/// may consume (a `ClusterClass`, any `*Template`) stays with the documents
/// kept whole, and so does a document without `kind` or `apiVersion` (its
/// error is reported with the others).
fn is_foreign(root: &Value) -> bool {
    let kind = root.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = root.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() || api_version.is_empty() {
        return false;
    }
    match Kind::parse(kind) {
        Some(k) => k == Kind::ConfigMap,
        None => {
            !normalize::cluster_api_group(api_version)
                && !kind.ends_with("Template")
                && kind != "ClusterClass"
        }
    }
}

/// A file with no mapping or sequence in it is not a manifest, and may be
/// anything (a key, `/etc/shadow`): say so without quoting a byte of it.
fn not_yaml(file_index: usize, name: &str) -> Problem {
    let mut p = Problem::error(
        file_index,
        name,
        Pos { line: 1, col: 1 },
        format!("{name} is not a YAML manifest: no document in it has an apiVersion or a kind (its content is not shown)"),
        "pass the Cluster API manifests with -f (files, directories of *.yaml, or - for standard input)",
    );
    p.quote = false;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn foreign(text: &str) -> bool {
        let docs = yaml::parse_documents(text).unwrap();
        let mut problems = Vec::new();
        let raw = normalize::document_json(0, "m.yaml", &docs[0], &mut problems);
        is_foreign(&raw.root)
    }

    #[test]
    fn what_is_foreign() {
        assert!(foreign("apiVersion: v1\nkind: ConfigMap\n"));
        assert!(foreign("apiVersion: apps/v1\nkind: Deployment\n"));
        assert!(!foreign("apiVersion: v1\nkind: Secret\n"));
        assert!(!foreign(
            "apiVersion: cluster.x-k8s.io/v1beta1\nkind: Cluster\n"
        ));
        // Unknown kinds of the Cluster API groups are errors or read past
        // there; templates and classes may be consumed by a ClusterClass.
        assert!(!foreign(
            "apiVersion: addons.cluster.x-k8s.io/v1beta1\nkind: ClusterResourceSet\n"
        ));
        assert!(!foreign(
            "apiVersion: example.com/v1\nkind: FooMachineTemplate\n"
        ));
        assert!(!foreign("apiVersion: example.com/v1\nkind: ClusterClass\n"));
        assert!(!foreign("kind: ConfigMap\n"));
    }
}
