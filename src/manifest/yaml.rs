//! Span-aware YAML loading.
//!
//! `serde_yaml` gives no positions for values, but every validation message must
//! name the file and line of the offending field. We therefore parse with the
//! event API of `yaml-rust2`, build a small tree whose nodes carry their line and
//! column, and derive from it both a `serde_json::Value` (for typed
//! deserialisation) and a map from JSON pointer to position.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::limits::{allowed_alias_ratio, ALIAS_MIN_ALIASED, ALIAS_MIN_NODES, MAX_DEPTH};

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

impl Node {
    fn is_manifest_key(&self) -> bool {
        matches!(&self.value, NodeValue::Str(s) if s == "apiVersion" || s == "kind")
    }

    /// A mapping with an `apiVersion` or a `kind` key: what a manifest
    /// document looks like, even a broken one.
    pub(crate) fn looks_like_manifest(&self) -> bool {
        matches!(&self.value, NodeValue::Map(entries) if entries.iter().any(|(k, _)| k.is_manifest_key()))
    }
}

/// One YAML document of a multi-document stream.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    pub(crate) root: Node,
    /// Line where the document's content starts.
    pub(crate) pos: Pos,
}

/// A syntax error reported by the YAML scanner, or a limit crossed
/// (nesting, alias expansion, an integer out of range).
#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub(crate) pos: Pos,
    pub(crate) message: String,
    /// Whether a top-level `apiVersion` or `kind` key was read before the
    /// error: a file without one is not YAML at all, or not a manifest, and
    /// its content is not quoted back.
    pub(crate) looks_like_manifest: bool,
    /// A limit of capi's (depth, aliases, integers), not YAML's syntax.
    pub(crate) limit: bool,
}

/// Parse every document of `text`. Empty documents (only comments) are skipped.
///
/// The event stream is consumed here, without recursion, so that nesting is
/// bounded by [`MAX_DEPTH`] in every style and alias expansion by the
/// budget of [`limits`](super::limits) before anything is built.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let mut docs = Vec::new();
    each_document(text, |d| docs.push(d))?;
    Ok(docs)
}

/// [`parse_documents`], handing each document to `take` as soon as it is
/// complete: only one document's tree is held at a time, so a stream of many
/// small documents is read in memory bounded by its largest document (plus
/// whatever `take` keeps). On an error, the documents before it have been
/// handed over already.
pub(crate) fn each_document(text: &str, mut take: impl FnMut(Document)) -> Result<(), SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    loop {
        let (ev, mark) = match parser.next_token() {
            Ok(x) => x,
            Err(e) => {
                let pos = pos_of(e.marker());
                let mut err = builder.error(pos, e.info().to_string());
                err.limit = e.info() == "recursion limit exceeded";
                if err.limit {
                    err.message = too_deep();
                }
                return Err(err);
            }
        };
        if ev == Event::StreamEnd {
            return Ok(());
        }
        let pos = pos_of(&mark);
        if let Err(message) = builder.on_event(ev, pos) {
            let mut err = builder.error(pos, message);
            err.limit = true;
            return Err(err);
        }
        if let Some(doc) = builder.done.take() {
            take(doc);
        }
    }
}

/// A finished node with what the limits need: how many nodes it holds and
/// how deep it goes.
#[derive(Clone)]
struct Built {
    node: Node,
    size: u64,
    height: usize,
}

#[derive(Default)]
struct Builder {
    /// The document just completed, not yet handed over.
    done: Option<Document>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Built>,
    root: Option<Node>,
    /// Nodes produced in this document, and how many of them by aliases.
    nodes: u64,
    aliased: u64,
    looks_like_manifest: bool,
}

struct Frame {
    value: FrameValue,
    pos: Pos,
    anchor: usize,
    size: u64,
    height: usize,
}

enum FrameValue {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: m.line() as u32,
        col: m.col() as u32 + 1,
    }
}

impl Builder {
    fn error(&self, pos: Pos, message: String) -> SyntaxError {
        SyntaxError {
            pos,
            message,
            looks_like_manifest: self.looks_like_manifest,
            limit: false,
        }
    }

    fn push_node(&mut self, built: Built) {
        let top = self.stack.len() == 1;
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(built.node);
            return;
        };
        frame.size += built.size;
        frame.height = frame.height.max(built.height + 1);
        match &mut frame.value {
            FrameValue::Seq(items) => items.push(built.node),
            FrameValue::Map { entries, key } => match key.take() {
                None => {
                    self.looks_like_manifest |= top && built.node.is_manifest_key();
                    *key = Some(built.node)
                }
                Some(k) => entries.push((k, built.node)),
            },
        }
    }

    fn finish(&mut self, built: Built, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, built.clone());
        }
        self.push_node(built);
    }

    fn on_event(&mut self, ev: Event, pos: Pos) -> Result<(), String> {
        match ev {
            Event::DocumentStart => {
                self.root = None;
                self.nodes = 0;
                self.aliased = 0;
            }
            Event::DocumentEnd => {
                if let Some(root) = self.root.take() {
                    if !matches!(root.value, NodeValue::Null) {
                        let pos = root.pos;
                        self.done = Some(Document { root, pos });
                    }
                }
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(&text, style, tag.as_ref().map(|t| t.suffix.as_str()))?;
                self.nodes += 1;
                let node = Node { value, pos };
                self.finish(
                    Built {
                        node,
                        size: 1,
                        height: 0,
                    },
                    anchor,
                );
            }
            Event::Alias(id) => self.alias(id, pos)?,
            Event::SequenceStart(anchor, _) => {
                self.open(FrameValue::Seq(Vec::new()), pos, anchor)?
            }
            Event::MappingStart(anchor, _) => self.open(
                FrameValue::Map {
                    entries: Vec::new(),
                    key: None,
                },
                pos,
                anchor,
            )?,
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(());
                };
                let value = match frame.value {
                    FrameValue::Seq(items) => NodeValue::Seq(items),
                    FrameValue::Map { entries, .. } => NodeValue::Map(entries),
                };
                let built = Built {
                    node: Node {
                        value,
                        pos: frame.pos,
                    },
                    size: frame.size,
                    height: frame.height,
                };
                self.finish(built, frame.anchor);
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
        }
        Ok(())
    }

    fn open(&mut self, value: FrameValue, pos: Pos, anchor: usize) -> Result<(), String> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep());
        }
        self.nodes += 1;
        self.stack.push(Frame {
            value,
            pos,
            anchor,
            size: 1,
            height: 0,
        });
        Ok(())
    }

    /// An alias is a copy of its anchor's node, within the nesting and
    /// expansion limits, checked before the copy is made.
    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), String> {
        let Some(anchor) = self.anchors.get(&id) else {
            return Err(
                "this alias refers to an anchor that is not defined earlier in the same document"
                    .into(),
            );
        };
        if self.stack.len() + anchor.height >= MAX_DEPTH {
            return Err(too_deep());
        }
        let nodes = self.nodes + anchor.size;
        let aliased = self.aliased + anchor.size;
        if aliased > ALIAS_MIN_ALIASED
            && nodes > ALIAS_MIN_NODES
            && aliased as f64 / nodes as f64 > allowed_alias_ratio(nodes)
        {
            return Err(format!(
                "this document expands aliases too much ({aliased} of its {nodes} nodes would come from aliases): a YAML alias bomb?"
            ));
        }
        self.nodes = nodes;
        self.aliased = aliased;
        let mut built = anchor.clone();
        built.node.pos = pos;
        self.push_node(built);
        Ok(())
    }
}

fn too_deep() -> String {
    format!("mappings and sequences nest more than {MAX_DEPTH} levels deep here")
}

/// Resolve a scalar with the YAML 1.2 core schema (what Kubernetes' YAML
/// decoder agrees with for every value that appears in real manifests).
/// Integers are exact: one that does not fit in 64 bits is an error, never
/// a float or a wrapped value.
fn resolve_scalar(text: &str, style: TScalarStyle, tag: Option<&str>) -> Result<NodeValue, String> {
    if style != TScalarStyle::Plain {
        return Ok(NodeValue::Str(text.to_string()));
    }
    match tag {
        Some("str") => return Ok(NodeValue::Str(text.to_string())),
        Some("int") => {
            if let Some(i) = parse_int(text) {
                return Ok(NodeValue::Int(i));
            }
        }
        _ => {}
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => NodeValue::Null,
        "true" | "True" | "TRUE" => NodeValue::Bool(true),
        "false" | "False" | "FALSE" => NodeValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => NodeValue::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => NodeValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => NodeValue::Float(f64::NAN),
        _ => {
            if let Some(i) = parse_int(text) {
                NodeValue::Int(i)
            } else if int_syntax(text) {
                return Err(format!(
                    "the integer {} is out of range: integers are at most 64 bits ({} to {})",
                    shorten(text),
                    i64::MIN,
                    i64::MAX
                ));
            } else if looks_like_float(text) {
                match text.parse::<f64>() {
                    Ok(f) => NodeValue::Float(f),
                    Err(_) => NodeValue::Str(text.to_string()),
                }
            } else {
                NodeValue::Str(text.to_string())
            }
        }
    })
}

/// At most 40 characters of a value, for a message.
fn shorten(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(40).collect::<String>())
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

/// Written as a YAML 1.2 integer (decimal, `0x` hex, `0o` octal), whatever
/// its size.
fn int_syntax(text: &str) -> bool {
    let (_, digits) = split_sign(text);
    let (body, radix) = if let Some(h) = digits.strip_prefix("0x") {
        (h, 16)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (o, 8)
    } else {
        (digits, 10)
    };
    !body.is_empty() && body.chars().all(|c| c.is_digit(radix))
}

fn parse_int(text: &str) -> Option<i64> {
    if !int_syntax(text) {
        return None;
    }
    let (neg, digits) = split_sign(text);
    // Parsed with its sign, so that i64::MIN is exact too.
    let signed = |body: &str| {
        if neg {
            format!("-{body}")
        } else {
            body.to_string()
        }
    };
    if let Some(h) = digits.strip_prefix("0x") {
        i64::from_str_radix(&signed(h), 16).ok()
    } else if let Some(o) = digits.strip_prefix("0o") {
        i64::from_str_radix(&signed(o), 8).ok()
    } else {
        signed(digits).parse::<i64>().ok()
    }
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
    fn integers_are_exact() {
        let docs =
            parse_documents("a: 4294967296\nb: -9223372036854775808\nc: 0x7fffffffffffffff\n")
                .unwrap();
        let v = to_json(&docs[0].root, &mut SpanMap::new());
        assert_eq!(v["a"], 4_294_967_296_i64);
        assert_eq!(v["b"], i64::MIN);
        assert_eq!(v["c"], i64::MAX);
        for big in [
            "9223372036854775808",
            "-9223372036854775809",
            "0x8000000000000000",
            "99999999999999999999",
        ] {
            let err = parse_documents(&format!("x: 1\ny: {big}\n")).unwrap_err();
            assert!(
                err.limit && err.message.contains("out of range"),
                "{big}: {err:?}"
            );
            assert_eq!(err.pos.line, 2);
        }
        // Floats and strings that look a little like integers stay what they were.
        let docs = parse_documents("a: 1e3\nb: 1.5\nc: 0x\nd: '99999999999999999999'\n").unwrap();
        let v = to_json(&docs[0].root, &mut SpanMap::new());
        assert_eq!(v["a"], 1000.0);
        assert_eq!(v["c"], "0x");
        assert_eq!(v["d"], "99999999999999999999");
    }

    #[test]
    fn depth_is_bounded() {
        let ok: String = (0..MAX_DEPTH - 1)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect();
        assert!(parse_documents(&ok).is_ok());
        let deep: String = (0..MAX_DEPTH + 1)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect();
        let err = parse_documents(&deep).unwrap_err();
        assert!(
            err.limit && err.message.contains("nest more than"),
            "{err:?}"
        );
        assert_eq!(err.pos.line as usize, MAX_DEPTH + 1);
    }

    #[test]
    fn alias_expansion_is_budgeted() {
        let mut text = String::from("a: &a [1,2,3,4,5,6,7,8,9]\n");
        for (p, c) in ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h"])
        {
            text.push_str(&format!(
                "{c}: &{c} [{}]\n",
                vec![format!("*{p}"); 9].join(",")
            ));
        }
        let err = parse_documents(&text).unwrap_err();
        assert!(err.message.contains("expands aliases too much"), "{err:?}");
        // Anchors do not reach across documents.
        let err = parse_documents("a: &x 1\n---\nb: *x\n").unwrap_err();
        assert!(err.message.contains("not defined earlier"), "{err:?}");
    }

    #[test]
    fn anchors_and_aliases() {
        let docs = parse_documents("a: &x {k: 1}\nb: *x\n").unwrap();
        let mut spans = SpanMap::new();
        let v = to_json(&docs[0].root, &mut spans);
        assert_eq!(v["b"]["k"], 1);
    }
}
