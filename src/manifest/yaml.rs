//! Span-aware YAML loading.
//!
//! `serde_yaml` gives no positions for values, but every validation message must
//! name the file and line of the offending field. We therefore parse with the
//! event API of `yaml-rust2`, build a small tree whose nodes carry their line and
//! column, and derive from it both a `serde_json::Value` (for typed
//! deserialisation) and a map from JSON pointer to position.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position inside a source file, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub(crate) col: u32,
}

#[derive(Debug, Clone)]
pub(crate) enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their own position so that errors about a field point at the key.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) value: NodeValue,
    pub(crate) pos: Pos,
}

/// One YAML document of a multi-document stream.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    pub(crate) root: Node,
    /// Line where the document's content starts.
    pub(crate) pos: Pos,
}

/// A syntax error reported by the YAML scanner.
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub(crate) pos: Pos,
    pub(crate) message: String,
}

/// Parse every document of `text`. Empty documents (only comments) are skipped.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        return Err(SyntaxError {
            pos: Pos {
                line: m.line() as u32,
                col: m.col() as u32 + 1,
            },
            message: e.info().to_string(),
        });
    }
    Ok(builder.docs)
}

#[derive(Default)]
struct Builder {
    docs: Vec<Document>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

enum Frame {
    Seq {
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        pos: Pos,
        anchor: usize,
    },
}

fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: m.line() as u32,
        col: m.col() as u32 + 1,
    }
}

impl Builder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::DocumentStart => {
                self.root = None;
            }
            Event::DocumentEnd => {
                if let Some(root) = self.root.take() {
                    if !matches!(root.value, NodeValue::Null) {
                        let pos = root.pos;
                        self.docs.push(Document { root, pos });
                    }
                }
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(&text, style, tag.as_ref().map(|t| t.suffix.as_str()));
                let node = Node {
                    value,
                    pos: pos_of(&mark),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_node(node);
            }
            Event::Alias(id) => {
                let mut node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    value: NodeValue::Null,
                    pos: pos_of(&mark),
                });
                node.pos = pos_of(&mark);
                self.push_node(node);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                items: Vec::new(),
                pos: pos_of(&mark),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                key: None,
                pos: pos_of(&mark),
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { items, pos, anchor }) => (
                        Node {
                            value: NodeValue::Seq(items),
                            pos,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        entries,
                        pos,
                        anchor,
                        ..
                    }) => (
                        Node {
                            value: NodeValue::Map(entries),
                            pos,
                        },
                        anchor,
                    ),
                    None => return,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_node(node);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
    }
}

/// Resolve a scalar with the YAML 1.2 core schema (what Kubernetes' YAML
/// decoder agrees with for every value that appears in real manifests).
fn resolve_scalar(text: &str, style: TScalarStyle, tag: Option<&str>) -> NodeValue {
    if style != TScalarStyle::Plain {
        return NodeValue::Str(text.to_string());
    }
    match tag {
        Some("str") => return NodeValue::Str(text.to_string()),
        Some("int") => {
            if let Some(i) = parse_int(text) {
                return NodeValue::Int(i);
            }
        }
        _ => {}
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        "true" | "True" | "TRUE" => return NodeValue::Bool(true),
        "false" | "False" | "FALSE" => return NodeValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return NodeValue::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return NodeValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeValue::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return NodeValue::Int(i);
    }
    if looks_like_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            return NodeValue::Float(f);
        }
    }
    NodeValue::Str(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let v = if let Some(h) = digits.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn looks_like_float(text: &str) -> bool {
    let t = text.trim_start_matches(['-', '+']);
    !t.is_empty()
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && t.bytes().any(|b| b.is_ascii_digit())
}

/// Map from JSON pointer (`/spec/replicas`, `/spec/files/0/path`) to the position
/// of the key (for mapping entries) or of the item (for sequence items).
pub(crate) type SpanMap = BTreeMap<String, Pos>;

/// Convert a node to JSON, recording the position of every path.
pub(crate) fn to_json(node: &Node, spans: &mut SpanMap) -> Value {
    let mut path = String::new();
    spans.insert(String::new(), node.pos);
    convert(node, &mut path, spans)
}

fn convert(node: &Node, path: &mut String, spans: &mut SpanMap) -> Value {
    match &node.value {
        NodeValue::Null => Value::Null,
        NodeValue::Bool(b) => Value::Bool(*b),
        NodeValue::Int(i) => Value::from(*i),
        NodeValue::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        NodeValue::Str(s) => Value::String(s.clone()),
        NodeValue::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                spans.insert(path.clone(), item.pos);
                out.push(convert(item, path, spans));
                path.truncate(len);
            }
            Value::Array(out)
        }
        NodeValue::Map(entries) => {
            let mut out = serde_json::Map::new();
            for (k, v) in entries {
                let key = scalar_key(k);
                let len = path.len();
                path.push('/');
                path.push_str(&escape_pointer(&key));
                spans.insert(path.clone(), k.pos);
                let value = convert(v, path, spans);
                path.truncate(len);
                out.insert(key, value);
            }
            Value::Object(out)
        }
    }
}

fn scalar_key(node: &Node) -> String {
    match &node.value {
        NodeValue::Null => "null".into(),
        NodeValue::Bool(b) => b.to_string(),
        NodeValue::Int(i) => i.to_string(),
        NodeValue::Float(f) => f.to_string(),
        NodeValue::Str(s) => s.clone(),
        NodeValue::Seq(_) | NodeValue::Map(_) => "<complex key>".into(),
    }
}

/// Escape a key for use in a JSON pointer (RFC 6901).
pub(crate) fn escape_pointer(key: &str) -> String {
    if key.contains(['~', '/']) {
        key.replace('~', "~0").replace('/', "~1")
    } else {
        key.to_string()
    }
}

/// Keys that appear more than once in one mapping: YAML forbids them and the
/// last one silently wins in most tools, so we report them.
pub(crate) fn duplicate_keys(node: &Node, path: &mut String, out: &mut Vec<(String, Pos)>) {
    match &node.value {
        NodeValue::Map(entries) => {
            let mut seen: HashMap<String, ()> = HashMap::new();
            for (k, v) in entries {
                let key = scalar_key(k);
                let len = path.len();
                path.push('/');
                path.push_str(&escape_pointer(&key));
                if seen.insert(key, ()).is_some() {
                    out.push((path.clone(), k.pos));
                }
                duplicate_keys(v, path, out);
                path.truncate(len);
            }
        }
        NodeValue::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                duplicate_keys(item, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_types() {
        let text =
            "a: 1\nb:\n  - x\n  - 'true'\n  - true\nc: ~\n---\n# only a comment\n---\nkind: X\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        let mut spans = SpanMap::new();
        let v = to_json(&docs[0].root, &mut spans);
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"][1], "true");
        assert_eq!(v["b"][2], true);
        assert!(v["c"].is_null());
        assert_eq!(spans["/a"].line, 1);
        assert_eq!(spans["/b/1"].line, 4);
        assert_eq!(spans["/c"].line, 6);
        assert_eq!(docs[1].pos.line, 10);
    }

    #[test]
    fn quoted_numbers_stay_strings_and_jinja_passes() {
        let docs =
            parse_documents("p: \"4\"\nq: '{{ instance_id }}'\nr: 0x10\ns: 1.5\nt: v1.2.3\n")
                .unwrap();
        let mut spans = SpanMap::new();
        let v = to_json(&docs[0].root, &mut spans);
        assert_eq!(v["p"], "4");
        assert_eq!(v["q"], "{{ instance_id }}");
        assert_eq!(v["r"], 16);
        assert_eq!(v["s"], 1.5);
        assert_eq!(v["t"], "v1.2.3");
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
    }

    #[test]
    fn duplicate_key_found() {
        let docs = parse_documents("a: 1\nb:\n  c: 1\n  c: 2\n").unwrap();
        let mut out = Vec::new();
        duplicate_keys(&docs[0].root, &mut String::new(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "/b/c");
        assert_eq!(out[0].1.line, 4);
    }

    #[test]
    fn anchors_and_aliases() {
        let docs = parse_documents("a: &x {k: 1}\nb: *x\n").unwrap();
        let mut spans = SpanMap::new();
        let v = to_json(&docs[0].root, &mut spans);
        assert_eq!(v["b"]["k"], 1);
    }
}
