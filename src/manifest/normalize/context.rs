//! The context of one document being normalised ([`DocCtx`]): where its
//! problems go, typed deserialisation that reports every unknown field (with
//! a "did you mean") and keeps going, and the JSON helpers normalisation
//! shares: Go's `omitempty` ([`prune`]) and JSON pointers as dotted paths.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::super::error::Problem;
use super::super::model::Origin;
use super::super::yaml;

/// Context for reporting problems about one document.
pub(crate) struct DocCtx<'a> {
    pub(crate) file_index: usize,
    pub(crate) file: &'a str,
    pub(crate) origin: Origin,
    pub(crate) problems: &'a mut Vec<Problem>,
    pub(crate) what: String,
}

impl DocCtx<'_> {
    pub(crate) fn error(
        &mut self,
        pointer: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let pos = self.origin.pos_of(pointer);
        self.problems.push(Problem::error(
            self.file_index,
            self.file,
            pos,
            message,
            help,
        ));
    }

    pub(crate) fn warning(
        &mut self,
        pointer: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let pos = self.origin.pos_of(pointer);
        self.problems.push(Problem::warning(
            self.file_index,
            self.file,
            pos,
            message,
            help,
        ));
    }

    /// Deserialize the value at `pointer` into `T`, turning a serde error into a
    /// problem located at the failing field. Unknown fields are reported and
    /// dropped, and parsing continues, so that one typo does not hide the
    /// other problems of the object.
    pub(crate) fn typed<T: DeserializeOwned + Default>(
        &mut self,
        root: &Value,
        pointer: &str,
    ) -> Option<T> {
        let Some(v) = root.pointer(pointer) else {
            return Some(T::default());
        };
        if v.is_null() {
            return Some(T::default());
        }
        let mut v = prune(v.clone());
        for _ in 0..64 {
            let e = match serde_path_to_error::deserialize::<_, T>(v.clone()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let mut path = String::new();
            let mut unknown_parent = String::new();
            for seg in e.path().iter() {
                use serde_path_to_error::Segment;
                unknown_parent = path.clone();
                match seg {
                    Segment::Seq { index } => path.push_str(&format!("/{index}")),
                    Segment::Map { key } => {
                        path.push('/');
                        path.push_str(&yaml::escape_pointer(key));
                    }
                    Segment::Enum { variant } => {
                        path.push('/');
                        path.push_str(variant);
                    }
                    Segment::Unknown => {}
                }
            }
            let inner = e.into_inner().to_string();
            let Some(field) = unknown_field(&inner) else {
                let full = format!("{pointer}{path}");
                let help = if inner.contains("expected a string")
                    && !inner.contains("invalid type: string")
                {
                    "this field is a string: quote the value (YAML reads 1.31 or true as a number or a boolean)".to_string()
                } else {
                    "fix the value's type or format (see the Cluster API reference for this field)"
                        .to_string()
                };
                self.error(
                    &full,
                    format!(
                        "{}: invalid value at {}: {inner}",
                        self.what,
                        pointer_to_dotted(&full)
                    ),
                    help,
                );
                return None;
            };
            let expected = inner
                .split_once(", expected ")
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default();
            let suggestion = suggest(&field, &expected);
            let rel = format!("{unknown_parent}/{}", yaml::escape_pointer(&field));
            let at = format!("{pointer}{rel}");
            let at = if self.origin.spans.contains_key(&at) {
                at
            } else {
                format!("{pointer}{path}")
            };
            let mut help = match suggestion {
                Some(s) => format!("did you mean `{s}`? "),
                None => String::new(),
            };
            if !expected.is_empty() {
                help.push_str(&format!("valid fields here: {expected}"));
            }
            self.error(
                &at,
                format!(
                    "{}: unknown field `{field}` in {}",
                    self.what,
                    pointer_to_dotted(&format!("{pointer}{unknown_parent}"))
                ),
                help,
            );
            // Drop the unknown field and keep checking the rest.
            let removed = match v.pointer_mut(&unknown_parent) {
                Some(Value::Object(m)) => m.remove(&field).is_some(),
                _ => false,
            };
            if !removed {
                return None;
            }
        }
        None
    }
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Closest valid field name by edit distance, for "did you mean".
fn suggest(field: &str, expected: &str) -> Option<String> {
    let candidates = expected
        .split(", ")
        .map(|c| {
            c.trim_matches(|ch| ch == '`' || ch == ' ')
                .trim_start_matches("one of `")
        })
        .map(|c| c.trim_matches('`'))
        .filter(|c| !c.is_empty());
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        let d = edit_distance(&field.to_lowercase(), &c.to_lowercase());
        if d <= 3.max(field.len() / 4) && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, c.to_string()));
        }
    }
    best.map(|(_, c)| c)
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `/spec/template/spec/files/0/path` → `spec.template.spec.files[0].path`.
pub(crate) fn pointer_to_dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
    }
    if out.is_empty() {
        "the object".into()
    } else {
        out
    }
}

/// Keys whose empty object means "enabled, with defaults" (CAPO).
const PRESENCE_ONLY: &[&str] = &[
    "apiServerLoadBalancer",
    "managedSecurityGroups",
    "managedLoadBalancer",
];

/// Go's `omitempty`: remove nulls, empty strings, empty lists and empty maps, so
/// a field written empty and a field left out mean the same thing. User data
/// maps (labels, annotations, selectors) and `taints` (where an explicit empty
/// list means "no taints") are kept as written.
pub(crate) fn prune(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let keep_as_is = matches!(
                    k.as_str(),
                    "labels" | "annotations" | "matchLabels" | "featureGates"
                );
                if k == "taints" {
                    if let Value::Array(items) = v {
                        out.insert(k, Value::Array(items.into_iter().map(prune).collect()));
                        continue;
                    }
                }
                let v = if keep_as_is { v } else { prune(v) };
                let empty = match &v {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    // CAPO's presence-only objects (`apiServerLoadBalancer: {}`
                    // enables the load balancer) keep their meaning when empty.
                    Value::Object(o) => {
                        o.is_empty() && !keep_as_is && !PRESENCE_ONLY.contains(&k.as_str())
                    }
                    _ => false,
                };
                if !empty {
                    out.insert(k, v);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(prune).collect()),
        other => other,
    }
}
