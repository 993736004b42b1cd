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

/// The pure part of `crate::state`: its model, codec and schema modules and
/// the items the model defines (re-exported by `state`). Anything else of
/// `state` (store, lock, journal, backends, their types, a glob) is I/O.
fn state_pure_items() -> BTreeSet<String> {
    let mut items: BTreeSet<String> = ["model", "codec", "schema"]
        .into_iter()
        .map(String::from)
        .collect();
    let model = std::fs::read_to_string(repo().join("src/state/model.rs")).unwrap();
    for line in model.lines() {
        let t = line.trim_start();
        for prefix in [
            "pub struct ",
            "pub enum ",
            "pub const ",
            "pub fn ",
            "pub type ",
        ] {
            if let Some(rest) = t.strip_prefix(prefix) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                items.insert(name);
            }
        }
    }
    items
}

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
fn target_floor(first: &str, second: Option<&str>, state_pure: &BTreeSet<String>) -> String {
    if first == "state" {
        match second {
            Some(s) if state_pure.contains(s) => "state-pure".into(),
            _ => "state-io".into(),
        }
    } else {
        first.to_string()
    }
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The paths of a use-tree (or an expression path) starting at `s`, each
/// cut to its first two segments: `a::{b, c::{d}}` gives `a::b` and
/// `a::c`; `{a::b, c}` gives both; `a::b(x)` gives `a::b`.
fn use_tree(s: &str) -> Vec<Vec<String>> {
    if let Some(inner) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&inner[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return items
            .into_iter()
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .flat_map(use_tree)
            .collect();
    }
    let (id, rest) = if let Some(rest) = s.strip_prefix('*') {
        ("*", rest)
    } else {
        let id = ident(s);
        (id, &s[id.len()..])
    };
    match rest.strip_prefix("::") {
        Some(tail) => {
            let subs = use_tree(tail);
            if subs.is_empty() {
                vec![vec![id.to_string()]]
            } else {
                subs.into_iter()
                    .map(|sub| {
                        let mut v = vec![id.to_string()];
                        v.extend(sub.into_iter().take(1));
                        v
                    })
                    .collect()
            }
        }
        None => vec![vec![id.to_string()]],
    }
}

/// Every `crate::` path in a text, and every `super::` path resolved from
/// the module `module` (the file's path: `plan/render`, `plan` for
/// `plan/mod.rs`) to a crate path, as (first, second) segments. A `super::`
/// chain that climbs out of the crate is ignored (an inline `mod tests`
/// whose `super` is its file).
fn crate_paths_in(text: &str, module: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut push = |path: Vec<String>| {
        let mut it = path.into_iter();
        if let Some(first) = it.next() {
            out.push((first, it.next()));
        }
    };
    for (i, _) in text.match_indices("crate::") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || "_:$".contains(c)) {
            continue; // `$crate::`, `other_crate::`
        }
        for path in use_tree(&text[i + "crate::".len()..]) {
            push(path);
        }
    }
    for (i, _) in text.match_indices("super::") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || "_:".contains(c)) {
            continue; // the middle of a chain, or `other_super::`
        }
        let mut rest = &text[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            up += 1;
        }
        if up > module.len() {
            continue;
        }
        let base = &module[..module.len() - up];
        for tail in use_tree(rest) {
            let mut path: Vec<String> = base.to_vec();
            path.extend(tail);
            if !path.is_empty() && path[0] != module[0] {
                path.truncate(2);
                push(path);
            }
        }
    }
    out
}

/// `crate::` paths only (no module to resolve `super::` from).
fn crate_paths(text: &str) -> Vec<(String, Option<String>)> {
    crate_paths_in(text, &[String::new()])
}

/// A file's text cut where inline modules (`mod tests {`) open and close,
/// each piece with the module its `super::` is relative to.
fn module_regions(text: &str, file_module: &[String]) -> Vec<(Vec<String>, String)> {
    let mut regions = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut current = String::new();
    let module_now = |stack: &[(usize, String)]| {
        let mut m = file_module.to_vec();
        m.extend(stack.iter().map(|(_, n)| n.clone()));
        m
    };
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let opened = ["mod ", "pub mod ", "pub(crate) mod ", "pub(super) mod "]
            .iter()
            .find_map(|p| t.strip_prefix(p))
            .filter(|rest| rest.trim_end().ends_with('{'))
            .map(|rest| ident(rest).to_string());
        let closes = stack
            .last()
            .is_some_and(|(i, _)| *i == indent && t.trim_end() == "}");
        if opened.is_some() || closes {
            regions.push((module_now(&stack), std::mem::take(&mut current)));
            match opened {
                Some(name) => stack.push((indent, name)),
                None => {
                    stack.pop();
                }
            }
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    regions.push((module_now(&stack), current));
    regions
}

/// The module path of a file under `src/`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts
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
    let state_pure = state_pure_items();
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
        let module = module_of(rel);
        if module.is_empty() {
            continue;
        }
        let paths = module_regions(&text, &module)
            .into_iter()
            .flat_map(|(m, region)| crate_paths_in(&region, &m));
        for (first, second) in paths {
            let target = target_floor(&first, second.as_deref(), &state_pure);
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
        "use crate::state::{State, StateStore};\nlet x = crate::provider::registry(k);\nuse $crate::nope;\n\
         use crate::{plan::Plan, cli::{output::Printer}};\nuse crate::state::{model::{A}, store::StateStore};",
    );
    let p = |a: &str, b: &str| (a.to_string(), Some(b.to_string()));
    assert_eq!(
        paths,
        vec![
            p("state", "State"),
            p("state", "StateStore"),
            p("provider", "registry"),
            p("plan", "Plan"),
            p("cli", "output"),
            p("state", "model"),
            p("state", "store"),
        ]
    );
    // super:: climbs from the file's module: plan/mod.rs is `plan`.
    let plan = module_of(Path::new("plan/mod.rs"));
    assert_eq!(plan, vec!["plan".to_string()]);
    assert_eq!(
        crate_paths_in("use super::provider::X;\nuse super::plan::render;", &plan),
        vec![p("provider", "X")]
    );
    let deep = module_of(Path::new("state/etcd/client.rs"));
    assert_eq!(
        crate_paths_in("use super::super::super::cli::CliError;", &deep),
        vec![p("cli", "CliError")]
    );
    // An inline `mod tests`'s super is its file.
    let regions = module_regions(
        "use super::a::X;\nmod tests {\n    use super::*;\n}\n",
        &plan,
    );
    assert_eq!(regions[1].0, vec!["plan".to_string(), "tests".to_string()]);
    assert!(regions[1].1.contains("use super::*"));
    let pure = state_pure_items();
    assert_eq!(target_floor("state", Some("StateStore"), &pure), "state-io");
    assert_eq!(target_floor("state", Some("files"), &pure), "state-io");
    assert_eq!(target_floor("state", Some("HeldLock"), &pure), "state-io");
    assert_eq!(target_floor("state", Some("*"), &pure), "state-io");
    assert_eq!(target_floor("state", Some("Resource"), &pure), "state-pure");
    assert_eq!(target_floor("state", Some("codec"), &pure), "state-pure");
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
