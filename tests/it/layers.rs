//! The import check: data flows one way, and the `crate::` paths in `src/`
//! must show it (docs/architecture.md, "Floors"). Each top-level module may
//! import only the floors below it; a new upward edge fails this test with
//! the file and the path that broke the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::common::repo;

/// What each floor may import (besides itself). `state` is split: its model,
/// codec and schema are pure; its store, lock and journal do I/O.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    const VOCAB: &[&str] = &["util"];
    BTreeMap::from([
        ("util", &[][..]),
        ("resource", VOCAB),
        ("infra", &["resource", "util"][..]),
        ("manifest", &["resource", "util", "infra"][..]),
        ("topology", &["resource", "util", "manifest"][..]),
        ("bootstrap", &["resource", "util", "manifest"][..]),
        (
            "desired",
            &[
                "resource",
                "util",
                "manifest",
                "topology",
                "bootstrap",
                "infra",
            ][..],
        ),
        ("state-pure", &["resource", "util"][..]),
        (
            "plan",
            &[
                "resource",
                "util",
                "manifest",
                "topology",
                "desired",
                "bootstrap",
                "infra",
                "state-pure",
            ][..],
        ),
        ("state-io", &["resource", "util", "state-pure"][..]),
        (
            "provider",
            &["resource", "util", "infra", "bootstrap", "state-pure"][..],
        ),
        (
            "apply",
            &[
                "resource",
                "util",
                "manifest",
                "bootstrap",
                "infra",
                "plan",
                "state-pure",
                "state-io",
                "provider",
            ][..],
        ),
        (
            "cli",
            &[
                "resource",
                "util",
                "manifest",
                "topology",
                "bootstrap",
                "infra",
                "desired",
                "plan",
                "state-pure",
                "state-io",
                "provider",
                "apply",
            ][..],
        ),
    ])
}

/// Items of `crate::state` that do I/O (the rest is the pure model).
const STATE_IO: &[&str] = &[
    "store",
    "lock",
    "journal",
    "backend",
    "StateStore",
    "StateError",
    "StateLock",
    "LockError",
    "LockInfo",
    "Journal",
];

/// The floor a source file belongs to.
fn floor_of(rel: &Path) -> String {
    let parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [top] => top.clone(),
        [state, file, ..] if state == "state" => {
            if ["model", "codec", "schema"].contains(&file.as_str()) {
                "state-pure".into()
            } else {
                "state-io".into()
            }
        }
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

/// The floor a `crate::` path points into, from its first two segments.
fn target_floor(first: &str, second: Option<&str>) -> String {
    if first == "state" {
        match second {
            Some(s) if STATE_IO.contains(&s) => "state-io".into(),
            _ => "state-pure".into(),
        }
    } else {
        first.to_string()
    }
}

/// Every `crate::a::b` path in a text, with brace groups expanded one level
/// (`crate::state::{State, StateStore}` gives both).
fn crate_paths(text: &str) -> Vec<(String, Option<String>)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || "_:$".contains(c)) {
            continue; // `$crate::`, `other_crate::`
        }
        let first = ident(rest);
        let after = &rest[first.len()..];
        let Some(tail) = after.strip_prefix("::") else {
            out.push((first, None));
            continue;
        };
        if let Some(group) = tail.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                if !item.is_empty() {
                    out.push((first.clone(), Some(ident(item))));
                }
            }
        } else {
            out.push((first.clone(), Some(ident(tail))));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn floors_only_import_downward() {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let allowed = allowed();
    let mut violations = BTreeSet::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let floor = floor_of(rel);
        let Some(ok) = allowed.get(floor.as_str()) else {
            // lib.rs and main.rs are the roots.
            assert!(
                ["lib", "main"].contains(&floor.as_str()),
                "{}: top-level module {floor:?} has no floor in this test; add it to allowed() and to docs/architecture.md",
                rel.display()
            );
            continue;
        };
        // Comments may mention any module; only code imports.
        let text: String = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        if floor == "state-pure" {
            for io in ["super::store", "super::lock", "super::journal"] {
                if text.contains(io) {
                    violations.insert(format!("src/{}: state-pure uses {io}", rel.display()));
                }
            }
        }
        for (first, second) in crate_paths(&text) {
            let target = target_floor(&first, second.as_deref());
            checked += 1;
            let same =
                target == floor || (floor.starts_with("state") && target.starts_with("state-pure"));
            if !same && !ok.contains(&target.as_str()) {
                violations.insert(format!(
                    "src/{}: {floor} imports crate::{first}{} ({target})",
                    rel.display(),
                    second.map(|s| format!("::{s}")).unwrap_or_default()
                ));
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} crate:: paths found: is the scan broken?"
    );
    assert!(
        violations.is_empty(),
        "imports that point up a floor (see docs/architecture.md):\n  {}",
        violations.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn the_scan_sees_grouped_and_nested_paths() {
    let paths = crate_paths(
        "use crate::state::{State, StateStore};\nlet x = crate::provider::registry(k);\nuse $crate::nope;",
    );
    assert_eq!(
        paths,
        vec![
            ("state".to_string(), Some("State".to_string())),
            ("state".to_string(), Some("StateStore".to_string())),
            ("provider".to_string(), Some("registry".to_string())),
        ]
    );
    assert_eq!(target_floor("state", Some("StateStore")), "state-io");
    assert_eq!(target_floor("state", Some("Resource")), "state-pure");
    assert_eq!(floor_of(Path::new("state/journal.rs")), "state-io");
    assert_eq!(floor_of(Path::new("state/model.rs")), "state-pure");
    assert_eq!(floor_of(Path::new("plan/planner.rs")), "plan");
}

/// Functions allowed over [`MAX_FN_LINES`], each with its reason (also in
/// docs/architecture.md, "House rules in code").
const LONG_FUNCTIONS: &[(&str, &str)] = &[];

/// Files allowed over [`MAX_FILE_LINES`]: flat data shapes.
const LONG_FILES: &[&str] = &["manifest/raw.rs"];

const MAX_FN_LINES: usize = 150;
const MAX_FILE_LINES: usize = 800;

/// Non-test functions of a rustfmt-formatted file with their line counts:
/// a `fn` line, up to the closing brace at its indentation. Code under
/// `#[cfg(test)]` is skipped.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the item that follows: up to its closing brace.
            let item = (i + 1..lines.len()).find(|&j| !lines[j].trim_start().starts_with("#["));
            if let Some(j) = item {
                if lines[j].trim_end().ends_with('{') {
                    let close = format!("{}}}", " ".repeat(indent));
                    i = (j + 1..lines.len())
                        .find(|&k| lines[k].trim_end() == close)
                        .unwrap_or(lines.len());
                }
            }
            i += 1;
            continue;
        }
        let is_fn = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "async fn ",
            "pub(crate) async fn ",
            "pub async fn ",
            "pub(super) fn ",
            "pub(super) async fn ",
            "const fn ",
            "pub(crate) const fn ",
            "unsafe fn ",
        ]
        .iter()
        .any(|p| trimmed.starts_with(p));
        if is_fn && !trimmed.trim_end().ends_with(';') {
            let name: String = trimmed
                .split("fn ")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let close = format!("{}}}", " ".repeat(indent));
            if let Some(end) = (i + 1..lines.len()).find(|&k| lines[k].trim_end() == close) {
                out.push((name, end - i + 1));
            }
        }
        i += 1;
    }
    out
}

#[test]
fn no_function_over_150_lines_and_no_file_over_800() {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap().display().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let n = text.lines().count();
        if n > MAX_FILE_LINES && !LONG_FILES.contains(&rel.as_str()) {
            problems.push(format!("src/{rel}: {n} lines (over {MAX_FILE_LINES})"));
        }
        for (name, len) in function_lengths(&text) {
            seen += 1;
            let excused = LONG_FUNCTIONS
                .iter()
                .any(|(f, _)| *f == format!("{rel}::{name}"));
            if len > MAX_FN_LINES && !excused {
                problems.push(format!(
                    "src/{rel}: fn {name} is {len} lines (over {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(
        seen > 500,
        "only {seen} functions found: is the scan broken?"
    );
    assert!(
        problems.is_empty(),
        "split these, or list them with a reason in LONG_FUNCTIONS / LONG_FILES and docs/architecture.md:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_length_scan_measures_functions_and_skips_tests() {
    let text = "fn a() {\n    x();\n}\n\n#[cfg(test)]\nmod tests {\n    fn b() {\n        y();\n    }\n}\n\nimpl T {\n    pub(crate) fn c(&self) {\n        z();\n        z();\n    }\n}\n";
    assert_eq!(
        function_lengths(text),
        vec![("a".to_string(), 3), ("c".to_string(), 4)]
    );
}
