//! Reading a snapshot in the layout [`super::codec::encode_checksummed`]
//! writes without holding its text: one resource per line, parsed as the
//! bytes arrive, while a second thread hashes them. A 100,000-machine state
//! is a 122 MB file; holding it whole next to the parsed state was a quarter
//! of a no-op plan's peak memory.
//!
//! This is a fast path only. Anything it does not recognise (a file edited
//! by hand into another layout, a damaged line, a checksum that does not
//! match, a newer format) makes it answer `None`, and the caller reads the
//! whole file with [`super::codec::decode`], whose errors are the ones users
//! see. So both paths accept exactly the same files, and report the same.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc;
use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use super::codec::CHECKSUM_KEY;
use super::model::{Resource, State, FORMAT_VERSION};

/// Bytes read per chunk.
const CHUNK: usize = 1 << 20;
/// Chunks in flight between the reader and the hasher.
const IN_FLIGHT: usize = 4;
/// Bytes held back from the hash until the end of the file: the checksum
/// field and the closing brace (91 bytes as written) must be among them.
const TAIL: usize = 256;

/// Where the line parser is in the file.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Start,
    Fields,
    Resources,
    Documents,
    End,
}

/// The state read line by line, before its checksum is known.
struct Lines {
    part: Part,
    /// Whether the last top-level member ended with a comma (`None`
    /// before the first): every member but the last must, the last must
    /// not, as JSON has it.
    member_comma: Option<bool>,
    /// The same for the items of the open block.
    item_comma: Option<bool>,
    /// Top-level fields, each parsed from its own line; `resources` and
    /// `documents` stand here empty once their block has begun.
    fields: serde_json::Map<String, serde_json::Value>,
    // Boxed as in `State`, which this vector becomes.
    #[allow(clippy::vec_box)]
    resources: Vec<Box<Resource>>,
    documents: BTreeMap<String, String>,
}

/// `line` without its `indent`, and whether it ends with a comma (without
/// it). `None`: it does not have that indent.
fn item<'a>(line: &'a [u8], indent: &[u8]) -> Option<(&'a [u8], bool)> {
    let body = line.strip_prefix(indent)?;
    Some(match body.strip_suffix(b",") {
        Some(b) => (b, true),
        None => (body, false),
    })
}

/// A line that is exactly one `"key": value` member (no more, no less).
struct One<V>(String, V);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for One<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entry<V> {
            type Value = One<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("one member")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<One<V>, A::Error> {
                let Some((k, v)) = map.next_entry::<String, V>()? else {
                    return Err(de::Error::custom("no member"));
                };
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("more than one member"));
                }
                Ok(One(k, v))
            }
        }
        d.deserialize_map(Entry(std::marker::PhantomData))
    }
}

impl Lines {
    fn new() -> Lines {
        Lines {
            part: Part::Start,
            member_comma: None,
            item_comma: None,
            fields: serde_json::Map::new(),
            resources: Vec::new(),
            documents: BTreeMap::new(),
        }
    }

    /// One complete line, without its `\n`. `None`: not the canonical layout.
    fn take(&mut self, line: &[u8]) -> Option<()> {
        match self.part {
            Part::Start => {
                (line == b"{").then_some(())?;
                self.part = Part::Fields;
            }
            Part::Fields => self.field(line)?,
            Part::Resources | Part::Documents
                if matches!(line, b"  ]" | b"  ]," | b"  }" | b"  },") =>
            {
                let closes = if self.part == Part::Resources {
                    b']'
                } else {
                    b'}'
                };
                (line[2] == closes && self.item_comma == Some(false)).then_some(())?;
                self.member_comma = Some(line.len() == 4);
                self.part = Part::Fields;
            }
            Part::Resources => {
                let (json, comma) = self.next_item(line)?;
                // Checked as a whole (fast), then parsed as text: cheaper
                // than checking each string as `from_slice` does.
                let json = std::str::from_utf8(json).ok()?;
                self.resources.push(serde_json::from_str(json).ok()?);
                self.item_comma = Some(comma);
            }
            Part::Documents => {
                let (entry, comma) = self.next_item(line)?;
                let One(k, v) = serde_json::from_slice::<One<String>>(&braced(entry)).ok()?;
                self.documents.insert(k, v).is_none().then_some(())?;
                self.item_comma = Some(comma);
            }
            Part::End => return None,
        }
        Some(())
    }

    /// An item of the open block: indented by four, after its opener or a
    /// comma.
    fn next_item<'a>(&self, line: &'a [u8]) -> Option<(&'a [u8], bool)> {
        (self.item_comma != Some(false)).then_some(())?;
        item(line, b"    ")
    }

    /// A line among the top-level fields.
    fn field(&mut self, line: &[u8]) -> Option<()> {
        if line == b"}" {
            (self.member_comma == Some(false)).then_some(())?;
            self.part = Part::End;
            return Some(());
        }
        (self.member_comma != Some(false)).then_some(())?;
        let (key, part) = match line {
            b"  \"resources\": [" => ("resources", Part::Resources),
            b"  \"documents\": {" => ("documents", Part::Documents),
            _ => {
                let (entry, comma) = item(line, b"  ")?;
                let One(k, v) =
                    serde_json::from_slice::<One<serde_json::Value>>(&braced(entry)).ok()?;
                // Blocks written on one line are the decoder's to read
                // (only the empty ones are capi's layout).
                let inline_block = match k.as_str() {
                    "resources" => v.as_array().is_none_or(|a| !a.is_empty()),
                    "documents" => v.as_object().is_none_or(|o| !o.is_empty()),
                    _ => false,
                };
                (!inline_block).then_some(())?;
                self.fields.insert(k, v).is_none().then_some(())?;
                self.member_comma = Some(comma);
                return Some(());
            }
        };
        let empty = match part {
            Part::Resources => serde_json::Value::Array(Vec::new()),
            _ => serde_json::Value::Object(serde_json::Map::new()),
        };
        self.fields
            .insert(key.into(), empty)
            .is_none()
            .then_some(())?;
        self.item_comma = None;
        self.part = part;
        Some(())
    }

    fn finish(self) -> Option<State> {
        (self.part == Part::End).then_some(())?;
        let mut state: State =
            serde_json::from_value(serde_json::Value::Object(self.fields)).ok()?;
        (state.format_version <= FORMAT_VERSION).then_some(())?;
        state.resources = self.resources;
        state.documents = self.documents;
        Some(state)
    }
}

/// `{` + `entry` + `}`.
fn braced(entry: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entry.len() + 2);
    v.push(b'{');
    v.extend_from_slice(entry);
    v.push(b'}');
    v
}

/// Hash everything before the checksum field (closed with `\n}`, as
/// [`super::codec::verify_checksummed`] does) and compare.
fn hash_chunks(chunks: mpsc::Receiver<Arc<Vec<u8>>>) -> bool {
    let mut hasher = Sha256::new();
    let mut held: Vec<u8> = Vec::with_capacity(2 * TAIL);
    for chunk in chunks {
        held.extend_from_slice(&chunk);
        if held.len() > TAIL {
            let cut = held.len() - TAIL;
            hasher.update(&held[..cut]);
            held.drain(..cut);
        }
    }
    let Some(at) = held
        .windows(CHECKSUM_KEY.len())
        .rposition(|w| w == CHECKSUM_KEY.as_bytes())
    else {
        return false;
    };
    let Some(rest) = held[at + CHECKSUM_KEY.len()..].strip_prefix(b"sha256:") else {
        return false;
    };
    hasher.update(&held[..at]);
    hasher.update(b"\n}");
    let actual = hex::encode(hasher.finalize());
    rest.len() == actual.len() + 4
        && rest.starts_with(actual.as_bytes())
        && &rest[actual.len()..] == b"\"\n}\n"
}

/// Read and verify a snapshot from `file` as it streams in. `None`: not in
/// the canonical layout, or not intact: read it whole with
/// [`super::codec::decode`] for the verdict. `Err`: the file could not be
/// read.
pub(crate) fn decode_streaming(file: impl Read) -> std::io::Result<Option<State>> {
    decode_in_chunks(file, CHUNK)
}

fn decode_in_chunks(mut file: impl Read, chunk_len: usize) -> std::io::Result<Option<State>> {
    let (send, receive) = mpsc::sync_channel::<Arc<Vec<u8>>>(IN_FLIGHT);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || hash_chunks(receive));
        let mut lines = Some(Lines::new());
        let mut partial: Vec<u8> = Vec::new();
        loop {
            let mut chunk = vec![0u8; chunk_len];
            let n = read_full(&mut file, &mut chunk)?;
            if n == 0 {
                break;
            }
            chunk.truncate(n);
            let chunk = Arc::new(chunk);
            if send.send(Arc::clone(&chunk)).is_err() {
                break;
            }
            if let Some(l) = lines.as_mut() {
                if feed(l, &mut partial, &chunk).is_none() {
                    // The decoder reads it again whole: stop here.
                    lines = None;
                    break;
                }
            }
        }
        drop(send);
        let intact = hasher.join().unwrap_or(false);
        let parsed = lines.filter(|_| partial.is_empty());
        Ok(parsed.and_then(|l| if intact { l.finish() } else { None }))
    })
}

/// Split `chunk` into lines (completing the one left over in `partial`).
fn feed(lines: &mut Lines, partial: &mut Vec<u8>, chunk: &[u8]) -> Option<()> {
    let mut rest = chunk;
    while let Some(nl) = memchr::memchr(b'\n', rest) {
        if partial.is_empty() {
            lines.take(&rest[..nl])?;
        } else {
            partial.extend_from_slice(&rest[..nl]);
            let line = std::mem::take(partial);
            lines.take(&line)?;
        }
        rest = &rest[nl + 1..];
    }
    partial.extend_from_slice(rest);
    Some(())
}

/// Read until `buf` is full or the file ends.
fn read_full(file: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::codec::{decode, encode};

    const MACHINE: &str = r#"{"address":"bench/machine/md-0-bi4tm-0","type":"machine","provider":"sim","status":"ready","attributes":{"kind":"machine","name":"md-0-bi4tm-0","role":"worker","owner":{"kind":"MachineDeployment","name":"md-0"},"version":"v1.31.2","identity":"ad83","infra":{"kind":"DevMachineTemplate","name":"bench-m","backend":"inMemory","spec":{"a":[1,{"b":"x,y\n"}]}},"bootstrapTemplate":"KubeadmConfigTemplate/bench-w","labels":{"cluster.x-k8s.io/cluster-name":"bench"}},"observed":{"ip":"100.99.144.8","ready":true},"dependencies":["bench/bootstrap/md-0-bi4tm-0","bench/network"],"sequence":266}"#;
    const BOOTSTRAP: &str = r#"{"address":"bench/bootstrap/md-0-bi4tm-0","type":"bootstrap","provider":"local","status":"ready","attributes":{"kind":"bootstrap","machine":"md-0-bi4tm-0","role":"join-worker","kubeadmApi":"kubeadm.k8s.io/v1beta4","sha256":"f7c5"},"sensitive":{"k":"v"},"dependencies":["bench/pki"],"sequence":8}"#;

    /// A state with `machines` machines (each with its bootstrap record) and
    /// two documents, one of them several lines long.
    fn sample(machines: usize) -> State {
        let mut s = State::new("lineage-1".into());
        s.serial = 7;
        for i in 0..machines {
            for json in [MACHINE, BOOTSTRAP] {
                let json = json.replace("md-0-bi4tm-0", &format!("md-0-bi4tm-{i}"));
                s.upsert(serde_json::from_str(&json).unwrap());
            }
        }
        if machines > 0 {
            s.documents
                .insert("f7c5".into(), "#cloud-config\nruncmd:\n- a, b\n".into());
            s.documents.insert("0000".into(), "\"quoted\",".into());
        }
        s
    }

    /// `body` (ending in `\n}`) with its checksum field added.
    fn checksummed(body: &str) -> String {
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        format!(
            "{}{CHECKSUM_KEY}sha256:{sum}\"\n}}\n",
            &body[..body.len() - 2]
        )
    }

    fn streamed(bytes: &[u8], chunk: usize) -> Option<State> {
        decode_in_chunks(bytes, chunk).unwrap()
    }

    #[test]
    fn reads_what_the_whole_file_decoder_reads_whatever_the_chunk_size() {
        for machines in [0, 1, 5] {
            let bytes = encode(&sample(machines));
            let whole = decode(&bytes).unwrap();
            assert_eq!(whole.resources.len(), 2 * machines);
            for chunk in [1, 2, 7, 91, 4096, CHUNK] {
                let got = streamed(&bytes, chunk);
                assert_eq!(
                    got.as_ref(),
                    Some(&whole),
                    "{machines} machines, chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn anything_but_an_intact_file_in_the_canonical_layout_is_left_to_the_decoder() {
        let bytes = encode(&sample(3));
        let text = String::from_utf8(bytes.clone()).unwrap();
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "one byte changed",
                text.replacen("md-0-bi4tm-1", "md-0-bi4tm-X", 1)
                    .into_bytes(),
            ),
            ("truncated", bytes[..bytes.len() - 40].to_vec()),
            ("no final newline", bytes[..bytes.len() - 1].to_vec()),
            ("empty", Vec::new()),
        ];
        // Valid and intact, but laid out differently: the decoder's to judge.
        let pretty = {
            let mut s = decode(&bytes).unwrap();
            s.checksum = None;
            checksummed(&serde_json::to_string_pretty(&s).unwrap())
        };
        assert!(decode(pretty.as_bytes()).is_ok(), "the fallback reads it");
        cases.push(("pretty-printed", pretty.into_bytes()));
        for (what, case) in &cases {
            assert_eq!(streamed(case, 64), None, "{what}");
        }
        // Intact and line by line, but a second resources block.
        let body = &text[..text.find(CHECKSUM_KEY).unwrap()];
        let twice = body.replacen(
            "  \"resources\": [",
            "  \"resources\": [\n  ],\n  \"resources\": [",
            1,
        );
        let twice = checksummed(&format!("{twice}\n}}"));
        assert!(streamed(twice.as_bytes(), 64).is_none());
        assert!(decode(twice.as_bytes()).is_err());
        let unchanged = checksummed(&format!("{body}\n}}"));
        assert!(
            streamed(unchanged.as_bytes(), 64).is_some(),
            "the helper checksums as encode does"
        );
        // Intact, valid or not, but not what capi writes: each is left to
        // the decoder (found by a review; each was read differently here).
        let one_line = |block: &str| {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let inline = serde_json::to_string(&v[block]).unwrap();
            let start = body.find(&format!("  \"{block}\": ")).unwrap();
            let end = body[start..]
                .find("\n  ]")
                .or(body[start..].find("\n  }"))
                .unwrap();
            let close = start + end + 4;
            format!(
                "{}  \"{block}\": {inline}{}",
                &body[..start],
                &body[close..]
            )
        };
        let first_item = body.find("\n    {").unwrap();
        let first_comma = first_item + body[first_item + 1..].find("},\n").unwrap() + 2;
        let last_item_end = body.find("\n  ],").unwrap();
        let edits: Vec<(&str, String)> = vec![
            ("resources on one line", one_line("resources")),
            ("documents on one line", one_line("documents")),
            (
                "a missing comma between resources",
                format!("{}{}", &body[..first_comma], &body[first_comma + 1..]),
            ),
            (
                "a comma after the last resource",
                format!("{},{}", &body[..last_item_end], &body[last_item_end..]),
            ),
            (
                "no comma after the resources block",
                body.replacen("\n  ],\n", "\n  ]\n", 1),
            ),
            ("a line of one comma", body.replacen("{\n", "{\n  ,\n", 1)),
            (
                "a key twice in one line",
                body.replacen("  \"serial\": 7,", "  \"serial\": 7, \"serial\": 0,", 1),
            ),
        ];
        for (what, edited) in edits {
            let file = checksummed(&format!("{edited}\n}}"));
            assert!(streamed(file.as_bytes(), 64).is_none(), "{what}");
            let whole = decode(file.as_bytes());
            if what.ends_with("on one line") {
                let read = whole.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(read.resources.len(), 6, "{what}");
                assert_eq!(read.documents.len(), 2, "{what}");
            } else {
                assert!(whole.is_err(), "{what}: the decoder refuses it");
            }
        }
        // A newer format is the decoder's to report.
        let future = encode(&State {
            format_version: FORMAT_VERSION + 1,
            ..sample(1)
        });
        assert!(streamed(&future, 64).is_none());
        assert!(decode(&future).unwrap_err().starts_with("future:"));
    }
}
