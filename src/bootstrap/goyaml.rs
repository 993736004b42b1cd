//! A YAML emitter for `serde_json::Value` that follows the conventions of
//! go-yaml v2 as used by Kubernetes' `sigs.k8s.io/yaml` (what CABPK uses to
//! write kubeadm configuration): mapping keys sorted, two-space indentation,
//! sequences not indented under their key, `{}`/`[]` for empty collections,
//! and a string quoted only when a plain scalar would be read back as
//! something else or is not allowed by YAML's syntax.

use serde_json::Value;

/// Emit a document (always ends with a newline).
pub(crate) fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => emit_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => emit_seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

/// Go-yaml sorts keys by code point (upper-case before lower-case), which is
/// what `serde_json::Map` (a BTreeMap) already does.
fn emit_map(m: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        push_indent(indent, out);
        out.push_str(&string_scalar(k, indent));
        out.push(':');
        emit_value_after_key(v, indent, out);
    }
}

fn emit_value_after_key(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit_map(m, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit_seq(a, indent, out);
        }
        Value::String(s) if s.contains('\n') => {
            out.push(' ');
            out.push_str(&block_scalar(s, indent + 2));
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, indent));
            out.push('\n');
        }
    }
}

fn emit_seq(a: &[Value], indent: usize, out: &mut String) {
    for item in a {
        push_indent(indent, out);
        out.push('-');
        match item {
            Value::Object(m) if !m.is_empty() => {
                // First key on the dash line, the rest aligned under it.
                let mut first = true;
                for (k, v) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        push_indent(indent + 2, out);
                    }
                    out.push_str(&string_scalar(k, indent + 2));
                    out.push(':');
                    emit_value_after_key(v, indent + 2, out);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_seq(inner, indent + 2, out);
            }
            Value::String(s) if s.contains('\n') => {
                out.push(' ');
                out.push_str(&block_scalar(s, indent + 2));
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other, indent));
                out.push('\n');
            }
        }
    }
}

fn push_indent(n: usize, out: &mut String) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_scalar(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn block_scalar(s: &str, indent: usize) -> String {
    let mut out = String::from(if s.ends_with('\n') { "|\n" } else { "|-\n" });
    let body = s.strip_suffix('\n').unwrap_or(s);
    for line in body.split('\n') {
        if !line.is_empty() {
            push_indent(indent, &mut out);
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Would YAML 1.1 (go-yaml v2's resolver) read this plain scalar as a
/// non-string?
fn resolves_to_non_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", "+.Inf", "+.INF", ".nan",
        ".NaN", ".NAN", "<<",
    ];
    if SPECIAL.contains(&s) {
        return true;
    }
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    let t = t.replace('_', "");
    if !t.is_empty() {
        if t.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
        if let Some(h) = t.strip_prefix("0x") {
            if !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return true;
            }
        }
        if let Some(b) = t.strip_prefix("0b") {
            if !b.is_empty() && b.bytes().all(|c| c == b'0' || c == b'1') {
                return true;
            }
        }
        if t.parse::<f64>().is_ok()
            && t.bytes().any(|b| b.is_ascii_digit())
            && !t.contains(char::is_alphabetic)
        {
            return true;
        }
        if t.contains(['e', 'E'])
            && t.parse::<f64>().is_ok()
            && t.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        {
            return true;
        }
        // sexagesimal (190:20:30)
        if t.contains(':')
            && t.split(':')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && t.split(':').count() > 1
            && !t.starts_with('0')
        {
            return true;
        }
    }
    looks_like_timestamp(s)
}

fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

/// libyaml's analysis: may this string be written as a plain scalar?
fn plain_allowed(s: &str) -> bool {
    if s.is_empty() || s.starts_with(' ') || s.ends_with(' ') || s.starts_with('\t') {
        return false;
    }
    let first = s.chars().next().unwrap();
    if matches!(
        first,
        '#' | ','
            | '['
            | ']'
            | '{'
            | '}'
            | '&'
            | '*'
            | '!'
            | '|'
            | '>'
            | '\''
            | '"'
            | '%'
            | '@'
            | '`'
    ) {
        return false;
    }
    if matches!(first, '-' | '?' | ':') {
        let second = s.chars().nth(1);
        if second.is_none() || second == Some(' ') {
            return false;
        }
    }
    if s.starts_with("---") || s.starts_with("...") {
        return false;
    }
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ':' && (i + 1 == chars.len() || chars[i + 1] == ' ') {
            return false;
        }
        if c == '#' && i > 0 && chars[i - 1] == ' ' {
            return false;
        }
        if c.is_control() || c == '\u{feff}' {
            return false;
        }
    }
    true
}

fn string_scalar(s: &str, _indent: usize) -> String {
    if resolves_to_non_string(s) {
        return double_quoted(s);
    }
    if plain_allowed(s) {
        return s.to_string();
    }
    if s.chars().any(|c| c.is_control()) {
        return double_quoted(s);
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubeadm_shape() {
        let v = json!({
            "kind": "ClusterConfiguration",
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "apiServer": {},
            "networking": {"podSubnet": "192.168.0.0/16"},
            "etcd": {"local": {"dataDir": ""}},
            "certSANs": ["localhost", "127.0.0.1"],
            "nodeRegistration": {"taints": null, "kubeletExtraArgs": [{"name": "eviction-hard", "value": "nodefs.available<0%"}]},
        });
        let expected = "\
apiServer: {}
apiVersion: kubeadm.k8s.io/v1beta4
certSANs:
- localhost
- 127.0.0.1
etcd:
  local:
    dataDir: \"\"
kind: ClusterConfiguration
networking:
  podSubnet: 192.168.0.0/16
nodeRegistration:
  kubeletExtraArgs:
  - name: eviction-hard
    value: nodefs.available<0%
  taints: null
";
        assert_eq!(to_string(&v), expected);
    }

    #[test]
    fn quoting() {
        assert_eq!(string_scalar("true", 0), "\"true\"");
        assert_eq!(string_scalar("123", 0), "\"123\"");
        assert_eq!(string_scalar("on", 0), "\"on\"");
        assert_eq!(
            string_scalar("{{ local_hostname }}", 0),
            "'{{ local_hostname }}'"
        );
        assert_eq!(
            string_scalar("openstack:///'{{ instance_id }}'", 0),
            "openstack:///'{{ instance_id }}'"
        );
        assert_eq!(string_scalar("10.0.0.1:6443", 0), "10.0.0.1:6443");
        assert_eq!(string_scalar("a: b", 0), "'a: b'");
        assert_eq!(
            string_scalar("2026-01-01T00:00:00Z", 0),
            "\"2026-01-01T00:00:00Z\""
        );
        assert_eq!(string_scalar("v1.31.0", 0), "v1.31.0");
        assert_eq!(string_scalar("4m0s", 0), "4m0s");
        assert_eq!(string_scalar("1.5", 0), "\"1.5\"");
    }
}
