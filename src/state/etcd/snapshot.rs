//! Large values of the etcd layout, written as parts: the compressed
//! snapshot of the whole state that makes loads fast, and the record of a
//! commit too large for one transaction (what makes such a commit atomic).
//!
//! Both are bytes cut into parts of at most [`PART`] bytes, one key each
//! (etcd refuses requests over 1.5 MiB by default), named by a directory and
//! a five-digit index, and checked by the SHA-256 of the whole. This file
//! owns the shapes and the byte work (compression, cutting, joining,
//! checking); the store ([`super`]) does the reads and writes.
//!
//! **Snapshot** (`snap` → `s/<id>/<i>`): the state file's encoding, deflated.
//! Its head names the revision at which `meta` was last written; every
//! write of the state changes `meta` in the same transaction or (for a
//! commit cut in several) in the first, so the snapshot is the state exactly
//! while `meta`'s modification revision is still that one. A load uses it
//! then, and reads the one-key-per-resource layout otherwise; it is a cache,
//! rebuilt at the end of every command that wrote the state.
//!
//! **Pending record** (`p/<id>/<i>`): the changes of a commit of more
//! than [`super::MAX_OPS`] operations, written before `meta` names them; see
//! [`super::EtcdStore`] for the protocol.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest part, in bytes (base64 and JSON make it ~1.4 MB on the wire).
pub(crate) const PART: usize = 1024 * 1024;

/// The `snap` key's value: which snapshot is current and what it is of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapHead {
    pub(crate) lineage: String,
    pub(crate) serial: u64,
    /// `meta`'s modification revision when the snapshot was taken.
    pub(crate) meta_revision: i64,
    /// Directory of its parts: `s/<id>/`.
    pub(crate) id: String,
    pub(crate) parts: u32,
    /// SHA-256 (hex) of the compressed bytes, all parts joined.
    pub(crate) sha256: String,
}

/// Where `meta` says a commit's changes are while it is being written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The commit's serial.
    pub(crate) serial: u64,
    /// Its parts are `p/<id>/<i>` (a random id: a directory no earlier,
    /// killed writer can have left parts in).
    pub(crate) id: String,
    pub(crate) parts: u32,
    /// SHA-256 (hex) of the record's JSON, all parts joined.
    pub(crate) sha256: String,
}

pub(crate) fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The key suffix of part `i` under `dir` (which ends with `/`).
pub(crate) fn part_key(dir: &str, i: usize) -> String {
    format!("{dir}{i:05}")
}

/// Deflate `bytes` (fast level: the state's JSON shrinks ~8× anyway).
pub(crate) fn compress(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(bytes.len() / 6),
        flate2::Compression::fast(),
    );
    z.write_all(bytes).expect("writing to memory");
    z.finish().expect("writing to memory")
}

/// Inflate, refusing more than `max` bytes of output.
pub(crate) fn decompress(bytes: &[u8], max: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len() * 8);
    flate2::read::DeflateDecoder::new(bytes)
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("it does not inflate ({e})"))?;
    if out.len() as u64 > max {
        return Err(format!("it inflates to more than {max} bytes"));
    }
    Ok(out)
}

/// Join parts read in key order, checking their number and checksum.
pub(crate) fn join(parts: Vec<Vec<u8>>, want: u32, sha256: &str) -> Result<Vec<u8>, String> {
    if parts.len() != want as usize {
        return Err(format!("{} of its {want} parts are present", parts.len()));
    }
    let joined = parts.concat();
    if sha_hex(&joined) != sha256 {
        return Err("its parts do not match its checksum".into());
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_bytes_come_back_and_are_bounded() {
        let text = b"{\"address\":\"sim/machine/c/md-0-7\"}\n".repeat(10_000);
        let z = compress(&text);
        assert!(z.len() * 8 < text.len(), "{} of {}", z.len(), text.len());
        assert_eq!(decompress(&z, text.len() as u64).unwrap(), text);
        let e = decompress(&z, 1000).unwrap_err();
        assert!(e.contains("more than 1000"), "{e}");
        assert!(decompress(b"not deflate at all", 1 << 20).is_err());
    }

    #[test]
    fn joined_parts_are_checked() {
        let whole = b"abcdefghij".to_vec();
        let sum = sha_hex(&whole);
        let parts: Vec<Vec<u8>> = whole.chunks(4).map(<[u8]>::to_vec).collect();
        assert_eq!(join(parts.clone(), 3, &sum).unwrap(), whole);
        assert!(join(parts[..2].to_vec(), 3, &sum)
            .unwrap_err()
            .contains("2 of its 3"));
        let mut swapped = parts;
        swapped.swap(0, 1);
        assert!(join(swapped, 3, &sum).unwrap_err().contains("checksum"));
        assert_eq!(part_key("s/ab/", 7), "s/ab/00007");
    }
}
