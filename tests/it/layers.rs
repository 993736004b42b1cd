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
