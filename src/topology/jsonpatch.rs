//! JSON Patch (RFC 6902) `add`, `replace` and `remove`, as ClusterClass
//! inline patches use them: `add` needs the parent to exist (it creates or
//! replaces a key, or inserts into a list, `-` appending), `replace` and
//! `remove` need the target to exist.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PatchError {
    #[error("path {0:?} is not a JSON pointer (it must start with /)")]
    BadPointer(String),
    #[error("the parent of {0:?} does not exist in the template")]
    MissingParent(String),
    #[error("{0:?} does not exist in the template")]
    Missing(String),
    #[error("list index {index:?} in {path:?} is out of range")]
    Index { path: String, index: String },
    #[error("unsupported op {0:?} (use add, replace or remove)")]
    Op(String),
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

/// Apply one operation to `doc`.
pub(crate) fn apply(
    doc: &mut Value,
    op: &str,
    path: &str,
    value: Option<Value>,
) -> Result<(), PatchError> {
    if !path.is_empty() && !path.starts_with('/') {
        return Err(PatchError::BadPointer(path.into()));
    }
    if path.is_empty() {
        return match (op, value) {
            ("add" | "replace", Some(v)) => {
                *doc = v;
                Ok(())
            }
            _ => Err(PatchError::Op(op.into())),
        };
    }
    let (parent_ptr, last) = path.rsplit_once('/').unwrap_or(("", path));
    let key = unescape(last);
    let parent = doc
        .pointer_mut(parent_ptr)
        .ok_or_else(|| PatchError::MissingParent(path.into()))?;
    match (op, parent) {
        ("add", Value::Object(m)) => {
            m.insert(key, value.unwrap_or(Value::Null));
        }
        ("add", Value::Array(a)) => {
            let at = if key == "-" {
                a.len()
            } else {
                key.parse::<usize>()
                    .ok()
                    .filter(|&i| i <= a.len())
                    .ok_or_else(|| PatchError::Index {
                        path: path.into(),
                        index: key.clone(),
                    })?
            };
            a.insert(at, value.unwrap_or(Value::Null));
        }
        ("replace", Value::Object(m)) => match m.get_mut(&key) {
            Some(slot) => *slot = value.unwrap_or(Value::Null),
            None => return Err(PatchError::Missing(path.into())),
        },
        ("replace", Value::Array(a)) => {
            let slot = key
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i))
                .ok_or_else(|| PatchError::Missing(path.into()))?;
            *slot = value.unwrap_or(Value::Null);
        }
        ("remove", Value::Object(m)) => {
            m.remove(&key)
                .ok_or_else(|| PatchError::Missing(path.into()))?;
        }
        ("remove", Value::Array(a)) => {
            let i = key
                .parse::<usize>()
                .ok()
                .filter(|&i| i < a.len())
                .ok_or_else(|| PatchError::Missing(path.into()))?;
            a.remove(i);
        }
        ("add" | "replace" | "remove", _) => return Err(PatchError::MissingParent(path.into())),
        (other, _) => return Err(PatchError::Op(other.into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Cases after RFC 6902's appendix A.
    #[test]
    fn rfc_examples() {
        let mut d = json!({"foo": "bar"});
        apply(&mut d, "add", "/baz", Some(json!("qux"))).unwrap();
        assert_eq!(d, json!({"foo": "bar", "baz": "qux"}));
        let mut d = json!({"foo": ["bar", "baz"]});
        apply(&mut d, "add", "/foo/1", Some(json!("qux"))).unwrap();
        assert_eq!(d, json!({"foo": ["bar", "qux", "baz"]}));
        apply(&mut d, "add", "/foo/-", Some(json!("end"))).unwrap();
        assert_eq!(d["foo"][3], "end");
        apply(&mut d, "remove", "/foo/1", None).unwrap();
        assert_eq!(d, json!({"foo": ["bar", "baz", "end"]}));
        let mut d = json!({"baz": "qux", "foo": "bar"});
        apply(&mut d, "replace", "/baz", Some(json!("boo"))).unwrap();
        assert_eq!(d["baz"], "boo");
        let mut d = json!({"a/b": 1, "m~n": 2});
        apply(&mut d, "remove", "/a~1b", None).unwrap();
        apply(&mut d, "replace", "/m~0n", Some(json!(3))).unwrap();
        assert_eq!(d, json!({"m~n": 3}));
    }

    #[test]
    fn errors() {
        let mut d = json!({"foo": "bar"});
        assert_eq!(
            apply(&mut d, "add", "/baz/bat", Some(json!("qux"))),
            Err(PatchError::MissingParent("/baz/bat".into()))
        );
        assert_eq!(
            apply(&mut d, "replace", "/nope", Some(json!(1))),
            Err(PatchError::Missing("/nope".into()))
        );
        assert_eq!(
            apply(&mut d, "remove", "/nope", None),
            Err(PatchError::Missing("/nope".into()))
        );
        let mut d = json!({"foo": [1]});
        assert!(matches!(
            apply(&mut d, "add", "/foo/5", Some(json!(1))),
            Err(PatchError::Index { .. })
        ));
        assert!(matches!(
            apply(&mut d, "move", "/foo", None),
            Err(PatchError::Op(_))
        ));
    }
}
