//! clusterctl's variable syntax: `${VAR}`, `${VAR:=default}`, `${VAR:-default}`
//! (and the legacy `${ VAR }` with spaces), substituted as text before YAML
//! parsing, exactly like `clusterctl generate cluster`. A variable without a
//! default is required; every missing one is reported together, sorted.
//! `$$` is clusterctl's escape for a literal `$` (`$${VAR}` renders as the
//! text `${VAR}`, as CAPO's Flatcar template relies on).

use std::collections::{BTreeMap, BTreeSet};

/// Where variable values come from, highest precedence first:
/// `--var`, then `--var-file` (later files win), then the environment.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    explicit: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
}

impl Variables {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn with_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(env);
        self
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.explicit.insert(key.into(), value.into());
    }

    pub(crate) fn set_from_file(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.files.insert(key.into(), value.into());
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.explicit
            .get(key)
            .or_else(|| self.files.get(key))
            .or_else(|| self.env.get(key))
            .map(String::as_str)
    }
}

/// A variable reference found in a source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VarRef {
    pub(crate) name: String,
    pub(crate) has_default: bool,
    /// 1-based line of the first occurrence.
    pub(crate) line: u32,
}

/// A required variable that has no value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MissingVar {
    pub(crate) name: String,
    pub(crate) file: String,
    pub(crate) line: u32,
}

/// The result of substituting one text.
#[derive(Debug, Clone)]
pub(crate) struct Substituted {
    pub(crate) text: String,
    /// Names actually used, with the value they resolved to (for fingerprints).
    pub(crate) used: BTreeMap<String, String>,
    pub(crate) missing: Vec<MissingVar>,
}

/// List the variables a text refers to (for `generate --list-variables`).
pub(crate) fn list_variables(text: &str) -> Vec<VarRef> {
    let mut out: Vec<VarRef> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut line = 1u32;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            line += 1;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') {
            // `$$` is an escaped `$`: `$${VAR}` is no variable.
            i += 2;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            if let Some((expr, end)) = parse_expr(text, i) {
                if seen.insert(expr.name.clone()) {
                    out.push(VarRef {
                        name: expr.name.clone(),
                        has_default: expr.default.is_some(),
                        line,
                    });
                } else if expr.default.is_none() {
                    if let Some(v) = out.iter_mut().find(|v| v.name == expr.name) {
                        v.has_default = false;
                    }
                }
                // Defaults may themselves reference variables.
                if let Some(d) = &expr.default {
                    for inner in list_variables(d) {
                        if seen.insert(inner.name.clone()) {
                            out.push(VarRef { line, ..inner });
                        }
                    }
                }
                line += text[i..end].matches('\n').count() as u32;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

struct Expr {
    name: String,
    default: Option<String>,
}

/// Parse `${...}` starting at `start` (pointing at `$`). Returns the expression and
/// the byte index just past the closing brace. Nested `${}` inside defaults are
/// matched by brace depth.
fn parse_expr(text: &str, start: usize) -> Option<(Expr, usize)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut j = start + 2;
    let body_start = j;
    while j < bytes.len() {
        match bytes[j] {
            b'{' => depth += 1,
            b'}' => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            b'\n' if depth == 0 => return None,
            _ => {}
        }
        j += 1;
    }
    if j >= bytes.len() {
        return None;
    }
    let body = text[body_start..j].trim();
    let name_len = body
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    if name_len == 0 {
        return None;
    }
    let name = body[..name_len].to_string();
    let rest = body[name_len..].trim_start();
    let default = if rest.is_empty() {
        None
    } else if let Some(d) = rest.strip_prefix(":=").or_else(|| rest.strip_prefix(":-")) {
        Some(d.to_string())
    } else if let Some(d) = rest.strip_prefix('=').or_else(|| rest.strip_prefix('-')) {
        Some(d.to_string())
    } else {
        // Another envsubst function (`${VAR^^}`, `${VAR:1:2}`...): clusterctl treats
        // any function with arguments as having a default; we keep the text as is.
        return None;
    };
    Some((Expr { name, default }, j + 1))
}

/// Substitute every variable in `text`. Missing required variables are collected
/// (with their file and line) rather than failing at the first.
pub(crate) fn substitute(file: &str, text: &str, vars: &Variables) -> Substituted {
    let mut out = Substituted {
        text: String::with_capacity(text.len()),
        used: BTreeMap::new(),
        missing: Vec::new(),
    };
    subst_into(file, text, vars, 1, 0, &mut out);
    out
}

fn subst_into(
    file: &str,
    text: &str,
    vars: &Variables,
    first_line: u32,
    depth: u32,
    out: &mut Substituted,
) {
    let bytes = text.as_bytes();
    let mut line = first_line;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            line += 1;
            i += 1;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') {
            // clusterctl's escape: `$$` is a literal `$`, so `$${VAR}` is
            // the text `${VAR}`, never a variable.
            out.text.push_str(&text[copied..=i]);
            i += 2;
            copied = i;
            continue;
        }
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'{') {
            if let Some((expr, end)) = parse_expr(text, i) {
                out.text.push_str(&text[copied..i]);
                match vars.get(&expr.name) {
                    Some(v) => {
                        out.used.insert(expr.name.clone(), v.to_string());
                        out.text.push_str(v);
                    }
                    None => match &expr.default {
                        Some(d) if depth < 16 => subst_into(file, d, vars, line, depth + 1, out),
                        Some(d) => out.text.push_str(d),
                        None => {
                            out.missing.push(MissingVar {
                                name: expr.name.clone(),
                                file: file.to_string(),
                                line,
                            });
                        }
                    },
                }
                line += text[i..end].matches('\n').count() as u32;
                i = end;
                copied = end;
                continue;
            }
        }
        i += 1;
    }
    out.text.push_str(&text[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Variables {
        let mut v = Variables::new();
        for (k, val) in pairs {
            v.set(*k, *val);
        }
        v
    }

    #[test]
    fn forms() {
        let v = vars(&[("A", "x"), ("B", "y")]);
        let s = substitute("f", "${A} ${ B } ${C:=d1} ${D:-d2} ${E:=${A}-z}", &v);
        assert!(s.missing.is_empty());
        assert_eq!(s.text, "x y d1 d2 x-z");
    }

    #[test]
    fn flow_list_default() {
        let s = substitute(
            "f",
            "cidrBlocks: ${POD_CIDR:=[\"192.168.0.0/16\"]}",
            &Variables::new(),
        );
        assert_eq!(s.text, "cidrBlocks: [\"192.168.0.0/16\"]");
    }

    #[test]
    fn missing_collected_with_lines() {
        let s = substitute("f.yaml", "a: ${Z}\nb: ${A}\nc: ${Z}\n", &Variables::new());
        let names: Vec<_> = s
            .missing
            .iter()
            .map(|m| (m.name.as_str(), m.line))
            .collect();
        assert_eq!(names, vec![("Z", 1), ("A", 2), ("Z", 3)]);
    }

    #[test]
    fn precedence_explicit_over_file_over_env() {
        let mut v = Variables::new().with_env([("K".to_string(), "env".to_string())]);
        assert_eq!(v.get("K"), Some("env"));
        v.set_from_file("K", "file");
        assert_eq!(v.get("K"), Some("file"));
        v.set("K", "cli");
        assert_eq!(v.get("K"), Some("cli"));
    }

    #[test]
    fn shell_dollar_untouched() {
        let s = substitute(
            "f",
            "run: echo $HOME && echo ${HOME:-/root}x",
            &Variables::new(),
        );
        assert_eq!(s.text, "run: echo $HOME && echo /rootx");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        let v = vars(&[("VAR", "value")]);
        let s = substitute("f", "a: $${VAR} b: ${VAR} c: $$HOME d: $$$${VAR}", &v);
        assert!(s.missing.is_empty());
        assert_eq!(s.text, "a: ${VAR} b: value c: $HOME d: $${VAR}");
        assert!(!s.used.is_empty());
        let s = substitute("f", "x: $${COREOS_OPENSTACK_HOSTNAME}", &Variables::new());
        assert!(s.missing.is_empty(), "{:?}", s.missing);
        assert_eq!(s.text, "x: ${COREOS_OPENSTACK_HOSTNAME}");
        let l = list_variables("$${A}\n${B}\n");
        assert_eq!(
            l.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            vec!["B"]
        );
    }

    #[test]
    fn list_vars() {
        let l = list_variables("${B}\n${A:=1}\n${C:=${D}}\n");
        let names: Vec<_> = l.iter().map(|v| (v.name.as_str(), v.has_default)).collect();
        assert_eq!(
            names,
            vec![("A", true), ("B", false), ("C", true), ("D", false)]
        );
    }
}
