//! The state's encodings, without I/O: the checksummed snapshot text (also
//! used for saved plans) and the checksummed journal lines. The store
//! ([`super::store`]) decides where the bytes go; this file decides what they
//! are.

use sha2::{Digest, Sha256};

use super::model::{State, FORMAT_VERSION};

/// The first line of a journal: which snapshot its records follow.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct JournalHeader {
    pub(crate) lineage: String,
    pub(crate) base_serial: u64,
}

/// One journal line: the resources one commit changed, as they are after it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct JournalRecord {
    pub(crate) serial: u64,
    pub(crate) next_sequence: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) upsert: Vec<super::model::Resource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) remove: Vec<crate::resource::Address>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) documents: std::collections::BTreeMap<String, String>,
}

impl JournalRecord {
    /// Replay this record onto `state` (idempotent: resources are written
    /// whole, removals by address). Documents no resource names any more are
    /// left for the caller's [`State::gc_documents`].
    pub(crate) fn apply_to(self, state: &mut State) {
        for a in &self.remove {
            state.remove(a);
        }
        for res in self.upsert {
            state.upsert(res);
        }
        state.documents.extend(self.documents);
        state.serial = self.serial;
        state.next_sequence = self.next_sequence;
    }
}

pub(crate) fn journal_line(value: &impl serde::Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).expect("serialises");
    let sum = hex::encode(Sha256::digest(&line));
    line.push(b'\t');
    line.extend_from_slice(sum.as_bytes());
    line.push(b'\n');
    line
}

/// The JSON of a complete, intact journal line.
pub(crate) fn journal_payload(line: &str) -> Option<&str> {
    let (json, sum) = line.rsplit_once('\t')?;
    (hex::encode(Sha256::digest(json.as_bytes())) == sum).then_some(json)
}

pub(crate) const CHECKSUM_KEY: &str = ",\n  \"checksum\": \"";

/// Serialise with the trailing checksum.
pub(crate) fn encode(state: &State) -> Vec<u8> {
    if state.checksum.is_none() {
        return encode_checksummed(state);
    }
    let mut st = state.clone();
    st.checksum = None;
    encode_checksummed(&st)
}

/// JSON of `value` (whose own `checksum` field must be unset) followed by
/// `"checksum": "sha256:<hex of everything before it>"` as the last field.
/// The two outer levels are indented (one top-level field, one resource, one
/// document per line); everything deeper is compact. That keeps the file
/// readable and line-diffable while a 20,000-resource state stays ~30%
/// smaller and faster to read than fully indented JSON.
pub(crate) fn encode_checksummed(value: &impl serde::Serialize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut body, ShallowPretty::default());
    value.serialize(&mut ser).expect("serialises");
    // body ends with "\n}"; its hash covers exactly these bytes.
    let sum = hex::encode(Sha256::digest(&body));
    body.truncate(body.len() - 2);
    body.extend_from_slice(CHECKSUM_KEY.as_bytes());
    body.extend_from_slice(b"sha256:");
    body.extend_from_slice(sum.as_bytes());
    body.extend_from_slice(b"\"\n}\n");
    body
}

/// How many nesting levels [`ShallowPretty`] indents.
const PRETTY_DEPTH: usize = 2;

/// A JSON formatter that indents like `serde_json`'s pretty printer down to
/// [`PRETTY_DEPTH`] levels and writes deeper values compactly.
#[derive(Default)]
struct ShallowPretty {
    depth: usize,
    has_value: bool,
}

impl ShallowPretty {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W, depth: usize) -> std::io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..depth {
            w.write_all(b"  ")?;
        }
        Ok(())
    }

    fn begin<W: ?Sized + std::io::Write>(&mut self, w: &mut W, c: &[u8]) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(c)
    }

    fn end<W: ?Sized + std::io::Write>(&mut self, w: &mut W, c: &[u8]) -> std::io::Result<()> {
        let pretty = self.depth <= PRETTY_DEPTH;
        self.depth -= 1;
        if pretty && self.has_value {
            self.newline(w, self.depth)?;
        }
        w.write_all(c)
    }

    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.depth <= PRETTY_DEPTH {
            self.newline(w, self.depth)?;
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for ShallowPretty {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.begin(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.end(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.begin(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.end(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(if self.depth <= PRETTY_DEPTH {
            b": "
        } else {
            b":"
        })
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// Verify the checksum and parse.
pub(crate) fn decode(bytes: &[u8]) -> Result<State, String> {
    // The checksum (a hash of the whole file) and the parse are independent:
    // run them on two threads; a parse of a corrupt file is discarded.
    let (verified, parsed) = std::thread::scope(|scope| {
        let check = scope.spawn(|| verify_checksummed(bytes).map(|_| ()));
        let parsed = std::str::from_utf8(bytes)
            .ok()
            .map(|t| (t, serde_json::from_str::<State>(t)));
        (check.join().expect("checksum thread"), parsed)
    });
    verified?;
    let (text, parsed) = parsed.expect("verified text is UTF-8");
    match parsed {
        Ok(s) if s.format_version <= FORMAT_VERSION => Ok(s),
        Ok(s) => Err(format!("future:{}", s.format_version)),
        Err(e) => {
            // A newer format may not parse: say so rather than "corrupt".
            #[derive(serde::Deserialize)]
            struct Version {
                format_version: u32,
            }
            match serde_json::from_str::<Version>(text) {
                Ok(v) if v.format_version > FORMAT_VERSION => {
                    Err(format!("future:{}", v.format_version))
                }
                _ => Err(format!("it does not match the state format ({e})")),
            }
        }
    }
}

/// Check the trailing checksum written by [`encode_checksummed`]; returns the text.
pub(crate) fn verify_checksummed(bytes: &[u8]) -> Result<&str, String> {
    if bytes.is_empty() {
        return Err("the file is empty (0 bytes)".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())?;
    let Some(at) = text.rfind(CHECKSUM_KEY) else {
        return Err(match serde_json::from_str::<serde_json::Value>(text) {
            Err(e) => format!("it is not valid JSON ({e}); it may have been truncated"),
            Ok(_) => "it has no checksum field (was it edited by hand?)".to_string(),
        });
    };
    let tail = &text[at + CHECKSUM_KEY.len()..];
    let Some(end) = tail.find('"') else {
        return Err("the checksum field is truncated".into());
    };
    let stated = &tail[..end];
    if tail[end..].trim_end() != "\"\n}" {
        return Err(
            "unexpected content after the checksum; the file may be truncated or edited".into(),
        );
    }
    // The hash of the text before the checksum field, closed with "\n}",
    // without copying the file.
    let mut hasher = Sha256::new();
    hasher.update(&text.as_bytes()[..at]);
    hasher.update(b"\n}");
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != stated {
        return Err(format!("checksum mismatch (the file says {stated}, its content hashes to {actual}); it was modified or damaged"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_levels_indented_inner_values_compact() {
        let v = serde_json::json!({
            "a": 1,
            "list": [{"x": {"y": [1, 2]}, "z": "s"}, {"x": {}}],
            "empty": [],
            "map": {"k": {"deep": true}}
        });
        let mut body = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut body, ShallowPretty::default());
        serde::Serialize::serialize(&v, &mut ser).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            "{\n  \"a\": 1,\n  \"empty\": [],\n  \"list\": [\n    {\"x\":{\"y\":[1,2]},\"z\":\"s\"},\n    {\"x\":{}}\n  ],\n  \"map\": {\n    \"k\": {\"deep\":true}\n  }\n}"
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
    }
}
