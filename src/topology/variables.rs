//! ClusterClass variables: definitions with their OpenAPI v3 schemas,
//! structural defaulting (a default fills a value that is not set, in the
//! variable and in its nested objects), and validation of the values a
//! Cluster gives (type, enum, minimum/maximum, lengths, pattern, required
//! properties, unknown properties, items), each broken rule with the path
//! of the value that breaks it.

use serde_json::Value;

/// A variable the class defines.
#[derive(Debug, Clone)]
pub(crate) struct VarDef {
    pub(crate) name: String,
    pub(crate) required: bool,
    pub(crate) schema: Value,
}

/// The class's `spec.variables`.
pub(crate) fn definitions(class: &Value) -> Vec<VarDef> {
    class
        .pointer("/spec/variables")
        .and_then(Value::as_array)
        .map(|vars| {
            vars.iter()
                .map(|v| VarDef {
                    name: v
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    required: v.get("required").and_then(Value::as_bool).unwrap_or(false),
                    schema: v
                        .pointer("/schema/openAPIV3Schema")
                        .cloned()
                        .unwrap_or(Value::Object(Default::default())),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fill defaults into `value` (nested objects and list items too).
pub(crate) fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(m) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (k, ps) in props {
                if !m.contains_key(k) {
                    if let Some(d) = ps.get("default") {
                        m.insert(k.clone(), d.clone());
                    }
                }
                if let Some(v) = m.get_mut(k) {
                    apply_defaults(ps, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for v in items {
                    apply_defaults(is, v);
                }
            }
        }
        _ => {}
    }
}

/// A broken schema rule: the JSON pointer inside the value and the rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Violation {
    pub(crate) at: String,
    pub(crate) rule: String,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value, schema: &Value) -> bool {
    if v.is_null() {
        return schema.get("nullable").and_then(Value::as_bool) == Some(true);
    }
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    match want {
        "integer" => type_name(v) == "integer" || (int_or_string && v.is_string()),
        "number" => v.is_number(),
        other => type_name(v) == other,
    }
}

/// Check `value` against `schema`, collecting every broken rule.
pub(crate) fn validate(schema: &Value, value: &Value, at: &str, out: &mut Vec<Violation>) {
    let mut broke = |rule: String| {
        out.push(Violation {
            at: at.to_string(),
            rule,
        })
    };
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        if !type_ok(want, value, schema) {
            broke(format!(
                "type: must be {want}, found {} {}",
                type_name(value),
                value
            ));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            broke(format!(
                "enum: must be one of {}",
                options
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    match value {
        Value::Number(n) => number_rules(schema, n.as_f64().unwrap_or(0.0), &mut broke),
        Value::String(s) => string_rules(schema, s, &mut broke),
        Value::Array(items) => {
            array_rules(schema, items, &mut broke);
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(is, item, &format!("{at}/{i}"), out);
                }
            }
        }
        Value::Object(m) => object_rules(schema, m, at, out),
        _ => {}
    }
}

fn number_rules(schema: &Value, n: f64, broke: &mut impl FnMut(String)) {
    let excl = |k: &str| schema.get(k).and_then(Value::as_bool) == Some(true);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if n < min || (excl("exclusiveMinimum") && n == min) {
            let op = if excl("exclusiveMinimum") { ">" } else { ">=" };
            broke(format!("minimum: must be {op} {min}, found {n}"));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if n > max || (excl("exclusiveMaximum") && n == max) {
            let op = if excl("exclusiveMaximum") { "<" } else { "<=" };
            broke(format!("maximum: must be {op} {max}, found {n}"));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64) {
        if m != 0.0 && (n / m).fract() != 0.0 {
            broke(format!("multipleOf: must be a multiple of {m}"));
        }
    }
}

fn string_rules(schema: &Value, s: &str, broke: &mut impl FnMut(String)) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if len < min {
            broke(format!(
                "minLength: must be at least {min} characters, found {len}"
            ));
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            broke(format!(
                "maxLength: must be at most {max} characters, found {len}"
            ));
        }
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(p) {
            Ok(re) if !re.is_match(s) => broke(format!("pattern: must match {p:?}")),
            Ok(_) => {}
            Err(e) => broke(format!(
                "pattern: the schema's pattern {p:?} is invalid: {e}"
            )),
        }
    }
}

fn array_rules(schema: &Value, items: &[Value], broke: &mut impl FnMut(String)) {
    let n = items.len() as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if n < min {
            broke(format!(
                "minItems: must have at least {min} items, found {n}"
            ));
        }
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if n > max {
            broke(format!(
                "maxItems: must have at most {max} items, found {n}"
            ));
        }
    }
    if schema.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        for (i, a) in items.iter().enumerate() {
            if items[..i].contains(a) {
                broke(format!("uniqueItems: item {i} is a duplicate"));
                break;
            }
        }
    }
}

fn object_rules(
    schema: &Value,
    m: &serde_json::Map<String, Value>,
    at: &str,
    out: &mut Vec<Violation>,
) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                out.push(Violation {
                    at: at.to_string(),
                    rule: format!("required: property {r:?} is missing"),
                });
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    for (k, v) in m {
        let child = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            validate(ps, v, &child, out);
        } else if let Some(a @ Value::Object(_)) = additional {
            validate(a, v, &child, out);
        } else if !preserve && (props.is_some() || additional == Some(&Value::Bool(false))) {
            out.push(Violation {
                at: child,
                rule: format!(
                    "properties: {k:?} is not a property of this object (known: {})",
                    props
                        .map(|p| p.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value, v: Value) -> Vec<String> {
        let mut out = Vec::new();
        validate(&schema, &v, "", &mut out);
        out.into_iter()
            .map(|v| format!("{}: {}", v.at, v.rule))
            .collect()
    }

    #[test]
    fn rules() {
        assert!(check(json!({"type": "string"}), json!("x")).is_empty());
        assert_eq!(
            check(json!({"type": "string"}), json!(1))[0],
            ": type: must be string, found integer 1"
        );
        assert!(check(json!({"type": "integer", "minimum": 1}), json!(0))[0].contains("minimum"));
        assert!(check(json!({"type": "integer", "maximum": 3}), json!(4))[0].contains("maximum"));
        assert!(check(json!({"type": "number"}), json!(1)).is_empty());
        assert!(check(json!({"enum": ["a", "b"]}), json!("c"))[0].contains("enum"));
        assert!(check(
            json!({"type": "string", "pattern": "^v[0-9]+$"}),
            json!("x")
        )[0]
        .contains("pattern"));
        let nested = json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "boolean"}, "b": {"type": "object", "properties": {"c": {"type": "integer"}}}}});
        let errs = check(nested.clone(), json!({"b": {"c": "x"}, "z": 1}));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("/b/c: type")));
        assert!(errs.iter().any(|e| e.starts_with("/z: properties")));
        assert!(errs.iter().any(|e| e.contains("required: property \"a\"")));
        assert!(
            check(
                json!({"type": "array", "items": {"type": "string"}, "maxItems": 1}),
                json!(["a", 2])
            )
            .len()
                == 2
        );
    }

    #[test]
    fn defaults_fill_nested_values() {
        let schema = json!({"type": "object", "properties": {"enabled": {"type": "boolean", "default": true}, "enforce": {"type": "string", "default": "baseline"}}});
        let mut v = json!({"enforce": "restricted"});
        apply_defaults(&schema, &mut v);
        assert_eq!(v, json!({"enabled": true, "enforce": "restricted"}));
    }
}
