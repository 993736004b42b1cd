//! The state's encodings, without I/O: the checksummed snapshot text (also
//! used for saved plans) and the checksummed journal lines. The store
//! ([`super::store`]) decides where the bytes go; this file decides what they
//! are.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::model::{Resource, State, FORMAT_VERSION};
use crate::resource::Address;

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
    pub(crate) upsert: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) remove: Vec<Address>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) documents: BTreeMap<String, String>,
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
    encode_checksummed_into(value, Vec::new())
}

/// [`encode_checksummed`] into `body` (empty; sized for the text when
/// the caller knows about how long it is: a megabyte grown by doubling is
/// copied and faulted in again at every step).
fn encode_checksummed_into(value: &impl serde::Serialize, mut body: Vec<u8>) -> Vec<u8> {
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

/// The resources of a state as a snapshot encodes them, kept by an apply's
/// journal writer: a resource is encoded when a batch changes it (the
/// writer knows which ones a batch touched), so a snapshot, the final fold
/// above all, copies bytes instead of encoding every resource again.
/// Only valid for the state whose every change is passed to
/// [`EncodedResources::changed`]. At most [`KEPT_MAX`] bytes are kept (a
/// copy of a 100,000-machine state would be ~120 MB more at the peak); the
/// other resources are encoded by each snapshot, as without this.
pub(crate) struct EncodedResources {
    /// hashbrown's default hasher, not SipHash: every snapshot looks up
    /// each resource (the final fold's pass over a 1,000-machine state's
    /// 2,000 resources took 0.35-0.5 ms with SipHash, lookups and all).
    kept: hashbrown::HashMap<Address, Box<RawValue>>,
    bytes: usize,
    /// [`KEPT_MAX`] and [`KEPT_ROOM`], smaller in tests.
    max: usize,
    room: usize,
}

impl Default for EncodedResources {
    fn default() -> Self {
        EncodedResources {
            kept: hashbrown::HashMap::new(),
            bytes: 0,
            max: KEPT_MAX,
            room: KEPT_ROOM,
        }
    }
}

/// The most encoded bytes [`EncodedResources`] keeps: all of a 10,000-machine
/// state (~12 MB).
const KEPT_MAX: usize = 32 << 20;

fn encode_resource(r: &Resource) -> Box<RawValue> {
    serde_json::value::to_raw_value(r).expect("serialises")
}

/// A resource too large to be kept whole is rare; below this much room,
/// no more are encoded to be kept.
const KEPT_ROOM: usize = 16 << 10;

impl EncodedResources {
    /// Encode the resources at `touched` as they are now in `state` (and
    /// forget those it no longer holds).
    pub(crate) fn changed(&mut self, state: &State, touched: &[Address]) {
        for a in touched {
            if let Some(old) = self.kept.remove(a) {
                self.bytes -= old.get().len();
            }
            if let Some(r) = state.get(a) {
                self.keep(r);
            }
        }
    }

    /// Nothing is kept (no snapshot was encoded from these).
    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Encode `r` and keep it, while there is room.
    fn keep(&mut self, r: &Resource) {
        if self.bytes + self.room > self.max {
            return;
        }
        let raw = encode_resource(r);
        if self.bytes + raw.get().len() <= self.max {
            self.bytes += raw.get().len();
            self.kept.insert(r.address.clone(), raw);
        }
    }

    /// [`encode`] of `state`, with the resources encoded earlier copied and
    /// the others encoded (and kept, while there is room).
    pub(crate) fn encode(&mut self, state: &State) -> Vec<u8> {
        // Listing every field: a field added to `State` must be added here.
        let State {
            format_version,
            serial,
            lineage,
            capi_version,
            next_sequence,
            resources,
            documents,
            checksum: _,
        } = state;
        // `kept` holds only resources of the state (`changed` forgets the
        // others): as many as the state has means every one is kept.
        if self.kept.len() < resources.len() {
            for r in resources {
                if !self.kept.contains_key(&r.address) {
                    self.keep(r);
                }
            }
        }
        let view = SnapshotView {
            format_version: *format_version,
            serial: *serial,
            lineage,
            capi_version,
            next_sequence: *next_sequence,
            resources: resources
                .iter()
                .map(|r| match self.kept.get(&r.address) {
                    Some(raw) => Item::Kept(raw),
                    None => Item::Fresh(r),
                })
                .collect(),
            documents,
        };
        // The kept bytes, with room for the indentation, the fields and
        // the documents.
        let room = self.bytes + self.bytes / 16 + 64 * 1024;
        encode_checksummed_into(&view, Vec::with_capacity(room))
    }
}

/// One resource of a [`SnapshotView`]: its kept encoding, or the resource
/// itself, encoded as the snapshot is written (the same bytes: a resource
/// is two levels deep, where the snapshot is compact).
enum Item<'a> {
    Kept(&'a RawValue),
    Fresh(&'a Resource),
}

impl serde::Serialize for Item<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Item::Kept(raw) => raw.serialize(s),
            Item::Fresh(r) => r.serialize(s),
        }
    }
}

/// [`State`] as [`encode`] writes it (without its checksum), with the
/// resources already encoded.
#[derive(serde::Serialize)]
struct SnapshotView<'a> {
    format_version: u32,
    serial: u64,
    lineage: &'a str,
    capi_version: &'a str,
    next_sequence: u64,
    resources: Vec<Item<'a>>,
    #[serde(skip_serializing_if = "no_documents")]
    documents: &'a BTreeMap<String, String>,
}

fn no_documents(d: &&BTreeMap<String, String>) -> bool {
    d.is_empty()
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

    fn pki(address: &str, days: u32) -> Resource {
        use crate::resource::*;
        Resource {
            address: Address::parse(address).unwrap(),
            kind: ResourceKind::Pki,
            provider: ProviderKind::Local,
            status: crate::state::Status::Ready,
            attributes: Spec::Pki(PkiSpec {
                encryption_algorithm: "ECDSA-P256".into(),
                ca_validity_days: days,
                external_etcd: false,
            }),
            observed: [("note".to_string(), serde_json::json!("caf\u{e9} \"q\"\n"))].into(),
            sensitive: [("ca.key".to_string(), "<sealed>".to_string())].into(),
            dependencies: vec![],
            sequence: days as u64,
            error: None,
        }
    }

    #[test]
    fn kept_encodings_write_the_same_bytes_as_a_fresh_encode() {
        let mut st = State::new("lineage".into());
        st.serial = 7;
        st.next_sequence = 3;
        for (a, d) in [("a/pki", 1), ("b/pki", 2), ("c/pki", 3)] {
            st.upsert(pki(a, d));
        }
        let mut kept = EncodedResources::default();
        assert_eq!(kept.encode(&st), encode(&st), "nothing kept yet");
        // Changes passed on: one resource changed, one removed, one added,
        // documents added.
        st.upsert(pki("b/pki", 20));
        st.remove(&Address::parse("c/pki").unwrap());
        st.upsert(pki("bb/pki", 4));
        st.documents.insert("sha".into(), "#cloud-config\n".into());
        st.serial = 8;
        let touched = ["b/pki", "c/pki", "bb/pki"].map(|a| Address::parse(a).unwrap());
        kept.changed(&st, &touched);
        let bytes = kept.encode(&st);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            String::from_utf8(encode(&st)).unwrap()
        );
        let decoded = decode(&bytes).unwrap();
        assert!(decoded.checksum.is_some());
        assert_eq!(
            State {
                checksum: None,
                ..decoded
            },
            st
        );
        // A change not passed on is not seen: the encodings are kept.
        let mut unseen = st.clone();
        unseen.upsert(pki("a/pki", 10));
        assert_ne!(kept.encode(&unseen), encode(&unseen));

        // With room for some only, the others are encoded as the snapshot
        // is written: the same bytes.
        let one = encode_resource(&pki("a/pki", 1)).get().len();
        let mut some = EncodedResources {
            max: 2 * one + 1,
            room: 0,
            ..Default::default()
        };
        assert_eq!(some.encode(&st), encode(&st));
        assert_eq!(some.kept.len(), 2, "of {}", st.resources.len());
        st.upsert(pki("a/pki", 10));
        some.changed(&st, &[Address::parse("a/pki").unwrap()]);
        assert_eq!(some.encode(&st), encode(&st));
        assert!(some.bytes <= some.max);
    }
}
