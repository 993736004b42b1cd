//! Functions: Go's builtins (`eq`, `ne`, `lt`, `le`, `gt`, `ge`, `not`,
//! `len`, `index`, `print`, `printf`, `println`; `and`/`or` live in the
//! evaluator because they short-circuit) and the hermetic sprig functions
//! ClusterClass templates use (strings, defaults, YAML/JSON, indentation,
//! lists and dicts, `semverCompare`). Functions that can build more than
//! their arguments check the size of their result before building it
//! (`budget.rs`).

use base64::Engine;
use serde_json::Value;

use super::budget;
use super::eval::{print, truth};
use super::TemplateError;

const NAMES: &[&str] = &[
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "quote",
    "squote",
    "default",
    "empty",
    "coalesce",
    "ternary",
    "toYaml",
    "toJson",
    "fromJson",
    "indent",
    "nindent",
    "replace",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "trimAll",
    "upper",
    "lower",
    "title",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "semverCompare",
    "join",
    "splitList",
    "list",
    "dict",
    "b64enc",
    "b64dec",
    "toString",
    "int",
    "int64",
    "atoi",
    "required",
    "fail",
    "repeat",
    "cat",
    "first",
    "last",
    "has",
    "hasKey",
    "keys",
];

pub(super) fn exists(name: &str) -> bool {
    NAMES.contains(&name)
}

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Exec(msg.into())
}

fn want(name: &str, args: &[Value], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return Err(err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        )));
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        other => print(other),
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn compare(name: &str, a: &Value, b: &Value) -> Result<std::cmp::Ordering, TemplateError> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a)
            .zip(num(b))
            .and_then(|(x, y)| x.partial_cmp(&y))
            .ok_or_else(|| err(format!("{name}: cannot compare numbers"))),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => Err(err(format!(
            "{name}: incompatible types for comparison: {} and {}",
            print(a),
            print(b)
        ))),
    }
}

fn equal(a: &Value, b: &Value) -> Result<bool, TemplateError> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => Ok(num(a) == num(b)),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            Err(err("eq: non-comparable type (a list or a map)"))
        }
        (Value::Null, _) | (_, Value::Null) => Ok(a == b),
        (x, y) if std::mem::discriminant(x) != std::mem::discriminant(y) => Err(err(format!(
            "incompatible types for comparison: {} and {}",
            print(a),
            print(b)
        ))),
        _ => Ok(a == b),
    }
}

pub(super) fn call(name: &str, a: &[Value]) -> Result<Value, TemplateError> {
    Ok(match name {
        "not" => {
            want(name, a, 1)?;
            Value::Bool(!truth(&a[0]))
        }
        "eq" => {
            if a.len() < 2 {
                return Err(err("eq: missing argument for comparison"));
            }
            let mut any = false;
            for b in &a[1..] {
                any |= equal(&a[0], b)?;
            }
            Value::Bool(any)
        }
        "ne" => {
            want(name, a, 2)?;
            Value::Bool(!equal(&a[0], &a[1])?)
        }
        "lt" | "le" | "gt" | "ge" => {
            want(name, a, 2)?;
            let o = compare(name, &a[0], &a[1])?;
            Value::Bool(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "len" => {
            want(name, a, 1)?;
            Value::from(match &a[0] {
                Value::String(x) => x.len(),
                Value::Array(x) => x.len(),
                Value::Object(x) => x.len(),
                other => return Err(err(format!("len of {}", print(other)))),
            } as u64)
        }
        "index" => index(a)?,
        "print" | "cat" => {
            Value::String(a.iter().map(s).collect::<Vec<_>>().join(if name == "cat" {
                " "
            } else {
                ""
            }))
        }
        "println" => Value::String(format!(
            "{}\n",
            a.iter().map(print).collect::<Vec<_>>().join(" ")
        )),
        "printf" => {
            let Some((f, rest)) = a.split_first() else {
                return Err(err("printf needs a format"));
            };
            Value::String(printf(&s(f), rest)?)
        }
        _ => return sprig(name, a),
    })
}

fn index(a: &[Value]) -> Result<Value, TemplateError> {
    let Some((base, keys)) = a.split_first() else {
        return Err(err("index needs a value"));
    };
    let mut cur = base.clone();
    for k in keys {
        cur = match (&cur, k) {
            (Value::Array(v), Value::Number(n)) => n
                .as_u64()
                .and_then(|i| v.get(i as usize).cloned())
                .ok_or_else(|| err(format!("index out of range: {n}")))?,
            (Value::Object(m), Value::String(key)) => m.get(key).cloned().unwrap_or(Value::Null),
            (Value::Null, _) => return Err(err("index of untyped nil")),
            _ => {
                return Err(err(format!(
                    "cannot index {} with {}",
                    print(&cur),
                    print(k)
                )))
            }
        };
    }
    Ok(cur)
}

fn printf(format: &str, args: &[Value]) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(v) = it.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        match verb {
            's' | 'v' | 'd' => out.push_str(&s(v)),
            'q' => out.push_str(&serde_json::to_string(&s(v)).unwrap_or_default()),
            'f' => out.push_str(&format!("{:.6}", num(v).unwrap_or(0.0))),
            't' => out.push_str(&print(v)),
            other => {
                return Err(TemplateError::Unsupported(format!(
                    "the printf verb %{other}"
                )))
            }
        }
    }
    Ok(out)
}

fn str_arg(name: &str, a: &[Value], n: usize) -> Result<Vec<String>, TemplateError> {
    want(name, a, n)?;
    Ok(a.iter().map(s).collect())
}

fn sprig(name: &str, a: &[Value]) -> Result<Value, TemplateError> {
    let string = |x: String| Value::String(x);
    Ok(match name {
        "quote" => string(
            a.iter()
                .filter(|v| !v.is_null())
                .map(|v| format!("{:?}", s(v)))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "squote" => string(
            a.iter()
                .filter(|v| !v.is_null())
                .map(|v| format!("'{}'", s(v)))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "default" => {
            want(name, a, 2)?;
            if truth(&a[1]) {
                a[1].clone()
            } else {
                a[0].clone()
            }
        }
        "empty" => {
            want(name, a, 1)?;
            Value::Bool(!truth(&a[0]))
        }
        "coalesce" => a.iter().find(|v| truth(v)).cloned().unwrap_or(Value::Null),
        "ternary" => {
            want(name, a, 3)?;
            if truth(&a[2]) {
                a[0].clone()
            } else {
                a[1].clone()
            }
        }
        "toYaml" => {
            want(name, a, 1)?;
            let y = budget::serialise(name, &a[0], |w, v| serde_yaml::to_writer(w, v))?;
            string(y.trim_end_matches('\n').to_string())
        }
        "toJson" => {
            want(name, a, 1)?;
            string(budget::serialise(name, &a[0], |w, v| {
                serde_json::to_writer(w, v)
            })?)
        }
        "fromJson" => {
            want(name, a, 1)?;
            serde_json::from_str(&s(&a[0])).unwrap_or(Value::Object(Default::default()))
        }
        "indent" | "nindent" => {
            want(name, a, 2)?;
            let n = budget::count(name, "width", &a[0])?;
            let text = s(&a[1]);
            let lines = text.matches('\n').count() + 1;
            budget::check_result(
                name,
                n.saturating_mul(lines)
                    .saturating_add(text.len())
                    .saturating_add(1),
            )?;
            let pad = " ".repeat(n);
            let body = text
                .split('\n')
                .map(|l| format!("{pad}{l}"))
                .collect::<Vec<_>>()
                .join("\n");
            string(if name == "nindent" {
                format!("\n{body}")
            } else {
                body
            })
        }
        "replace" => {
            let v = str_arg(name, a, 3)?;
            let found = if v[0].is_empty() {
                v[2].chars().count() + 1
            } else {
                v[2].matches(v[0].as_str()).count()
            };
            let size = (v[2].len() - found.saturating_mul(v[0].len()).min(v[2].len()))
                .saturating_add(found.saturating_mul(v[1].len()));
            budget::check_result(name, size)?;
            string(v[2].replace(&v[0], &v[1]))
        }
        "trim" => string(str_arg(name, a, 1)?[0].trim().to_string()),
        "trimAll" => {
            let v = str_arg(name, a, 2)?;
            let set: Vec<char> = v[0].chars().collect();
            string(v[1].trim_matches(|c| set.contains(&c)).to_string())
        }
        "trimPrefix" => {
            let v = str_arg(name, a, 2)?;
            string(v[1].strip_prefix(&v[0]).unwrap_or(&v[1]).to_string())
        }
        "trimSuffix" => {
            let v = str_arg(name, a, 2)?;
            string(v[1].strip_suffix(&v[0]).unwrap_or(&v[1]).to_string())
        }
        "upper" => string(str_arg(name, a, 1)?[0].to_uppercase()),
        "lower" => string(str_arg(name, a, 1)?[0].to_lowercase()),
        "title" => {
            let v = str_arg(name, a, 1)?;
            string(
                v[0].split(' ')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }
        "contains" => {
            let v = str_arg(name, a, 2)?;
            Value::Bool(v[1].contains(&v[0]))
        }
        "hasPrefix" => {
            let v = str_arg(name, a, 2)?;
            Value::Bool(v[1].starts_with(&v[0]))
        }
        "hasSuffix" => {
            let v = str_arg(name, a, 2)?;
            Value::Bool(v[1].ends_with(&v[0]))
        }
        "repeat" => {
            want(name, a, 2)?;
            let n = budget::count(name, "count", &a[0])?;
            let piece = s(&a[1]);
            budget::check_result(name, piece.len().saturating_mul(n))?;
            string(piece.repeat(n))
        }
        "semverCompare" => {
            let v = str_arg(name, a, 2)?;
            Value::Bool(semver::matches(&v[0], &v[1]).map_err(err)?)
        }
        _ => return collections(name, a),
    })
}

fn collections(name: &str, a: &[Value]) -> Result<Value, TemplateError> {
    Ok(match name {
        "join" => {
            want(name, a, 2)?;
            let items = match &a[1] {
                Value::Array(v) => v.iter().map(s).collect::<Vec<_>>(),
                other => vec![s(other)],
            };
            let sep = s(&a[0]);
            let size = items.iter().map(String::len).fold(
                sep.len().saturating_mul(items.len().saturating_sub(1)),
                usize::saturating_add,
            );
            budget::check_result(name, size)?;
            Value::String(items.join(&sep))
        }
        "splitList" => {
            let v = str_arg(name, a, 2)?;
            // Go's strings.Split: an empty separator splits into characters.
            let pieces = if v[0].is_empty() {
                v[1].chars().count()
            } else {
                v[1].matches(v[0].as_str()).count() + 1
            };
            budget::check_result(name, v[1].len().saturating_add(pieces).saturating_add(1))?;
            Value::Array(if v[0].is_empty() {
                v[1].chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                v[1].split(v[0].as_str())
                    .map(|x| Value::String(x.to_string()))
                    .collect()
            })
        }
        "list" => Value::Array(a.to_vec()),
        "dict" => {
            let mut m = serde_json::Map::new();
            for pair in a.chunks(2) {
                m.insert(s(&pair[0]), pair.get(1).cloned().unwrap_or(Value::Null));
            }
            Value::Object(m)
        }
        "first" | "last" => {
            want(name, a, 1)?;
            match &a[0] {
                Value::Array(v) if name == "first" => v.first().cloned().unwrap_or(Value::Null),
                Value::Array(v) => v.last().cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            }
        }
        "has" => {
            want(name, a, 2)?;
            Value::Bool(a[1].as_array().is_some_and(|v| v.contains(&a[0])))
        }
        "hasKey" => {
            want(name, a, 2)?;
            Value::Bool(a[0].as_object().is_some_and(|m| m.contains_key(&s(&a[1]))))
        }
        "keys" => Value::Array(
            a.iter()
                .filter_map(Value::as_object)
                .flat_map(|m| m.keys().map(|k| Value::String(k.clone())))
                .collect(),
        ),
        "b64enc" => Value::String(
            base64::engine::general_purpose::STANDARD.encode(str_arg(name, a, 1)?[0].as_bytes()),
        ),
        "b64dec" => {
            let v = str_arg(name, a, 1)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v[0].as_bytes())
                .map_err(|e| err(format!("b64dec: {e}")))?;
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
        "toString" => Value::String(str_arg(name, a, 1)?.remove(0)),
        "int" | "int64" | "atoi" => {
            want(name, a, 1)?;
            Value::from(match &a[0] {
                Value::Number(n) => n.as_f64().unwrap_or(0.0) as i64,
                Value::String(x) => x.trim().parse::<i64>().unwrap_or(0),
                Value::Bool(b) => i64::from(*b),
                _ => 0,
            })
        }
        "required" => {
            want(name, a, 2)?;
            if a[1].is_null() || a[1] == Value::String(String::new()) {
                return Err(err(s(&a[0])));
            }
            a[1].clone()
        }
        "fail" => return Err(err(str_arg(name, a, 1)?.remove(0))),
        other => return Err(TemplateError::UnknownFunction(other.to_string())),
    })
}

/// Masterminds/semver constraints, as sprig's `semverCompare` reads them.
mod semver {
    type V = (u64, u64, u64, Vec<String>);

    fn parse(v: &str) -> Result<V, String> {
        let v = v.trim().trim_start_matches(['v', '=']);
        let (core, pre) = match v.split_once('-') {
            Some((c, p)) => (c, p.split('+').next().unwrap_or("")),
            None => (v.split('+').next().unwrap_or(v), ""),
        };
        let mut parts = core.split('.');
        let mut n = || -> Result<u64, String> {
            match parts.next() {
                None | Some("x" | "X" | "*") => Ok(0),
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("invalid semantic version {v:?}")),
            }
        };
        let (a, b, c) = (n()?, n()?, n()?);
        let pre = if pre.is_empty() {
            Vec::new()
        } else {
            pre.split('.').map(str::to_string).collect()
        };
        Ok((a, b, c, pre))
    }

    fn cmp(x: &V, y: &V) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let o = (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2));
        if o != Ordering::Equal {
            return o;
        }
        match (x.3.is_empty(), y.3.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                for (a, b) in x.3.iter().zip(&y.3) {
                    let o = match (a.parse::<u64>(), b.parse::<u64>()) {
                        (Ok(a), Ok(b)) => a.cmp(&b),
                        (Ok(_), Err(_)) => Ordering::Less,
                        (Err(_), Ok(_)) => Ordering::Greater,
                        _ => a.cmp(b),
                    };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                x.3.len().cmp(&y.3.len())
            }
        }
    }

    fn one(c: &str, v: &V) -> Result<bool, String> {
        let c = c.trim();
        let ops = [">=", "<=", "!=", "=>", "=<", ">", "<", "=", "~", "^"];
        let (op, rest) = ops
            .iter()
            .find_map(|op| c.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("=", c));
        let target = parse(rest)?;
        // A version with a pre-release only matches a constraint that has one.
        if !v.3.is_empty() && target.3.is_empty() {
            return Ok(false);
        }
        let o = cmp(v, &target);
        Ok(match op {
            ">=" | "=>" => o.is_ge(),
            "<=" | "=<" => o.is_le(),
            "!=" => o.is_ne(),
            ">" => o.is_gt(),
            "<" => o.is_lt(),
            "~" => o.is_ge() && (v.0, v.1) == (target.0, target.1),
            "^" => o.is_ge() && v.0 == target.0,
            _ => o.is_eq(),
        })
    }

    /// `constraint` (`< v1.25-0`, `>=1.30, <1.32 || 2.x`) against `version`.
    pub(super) fn matches(constraint: &str, version: &str) -> Result<bool, String> {
        let v = parse(version)?;
        for alt in constraint.split("||") {
            let mut all = true;
            for c in alt.split(',').filter(|c| !c.trim().is_empty()) {
                all &= one(c, &v)?;
            }
            if all {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
