//! The etcd state backend: the state under a key prefix of an etcd cluster,
//! shared by every runner that can reach it.
//!
//! Layout under `PREFIX/` (values are `sha256:<hex>\n<json>`, the checksum of
//! the JSON after the newline; a value that does not match is refused):
//! - `meta`: format version, lineage, serial, next sequence, capi version
//!   (and `migrated_to` once `capi state migrate` moved the state away);
//! - `r/<address>`: one resource each (etcd's values are limited to 1.5 MiB;
//!   a whole large state is not);
//! - `d/<sha256>`: the bootstrap documents;
//! - `lock`: the lock ([`lock`]);
//! - `snap` and `s/<id>/<i>`: a compressed snapshot of the whole state, a
//!   cache that makes loads fast ([`snapshot`]);
//! - `p/<id>/<i>`: the changes of a large commit while it is written;
//! - `serial`: `meta`'s serial, zero-padded, for comparisons.
//!
//! A commit (one batch of the apply, or a whole state) is one transaction
//! when it has at most [`MAX_OPS`] operations. A bigger one is made atomic
//! by a write-ahead record: its changes (a [`JournalRecord`]) are written
//! first as parts under `p/<id>/` (a random id), then one transaction puts `meta` with
//! the new serial and `pending` naming them (the commit point), then the
//! resources follow in transactions of [`MAX_OPS`], and a last one clears
//! `pending` and deletes the parts. A load that finds `pending` replays the
//! record onto what it read, so it sees the whole commit or (before the
//! commit point) none of it; the next writer finishes the commit before its
//! own. The apply's small batches are pipelined (see
//! `EtcdStore::send_pipelined`): a few in flight at once, each putting
//! `meta` only if `serial` (its serial, zero-padded) is still below its
//! own. Every transaction written under the lock compares the lock key's
//! create revision (the fencing token), so a holder that lost its lease
//! cannot write. Reads are linearizable, all pages of one load at one
//! revision.

pub(crate) mod client;
mod grpc;
mod load;
pub(crate) mod lock;
pub(crate) mod snapshot;
mod write;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use self::client::{b64, int, prefix_end, unb64, EtcdClient};
use self::lock::{current_holder, EtcdLock, Fence};
use self::snapshot::{Pending, SnapHead};
use super::backend::{Durability, HeldLock, StateBackend};
use super::codec::{decode, JournalRecord};
use super::lock::{LockError, LockInfo};
use super::model::{State, FORMAT_VERSION};
use super::store::StateError;

/// etcd's default limit of operations per transaction, less one for the fence.
pub(crate) const MAX_OPS: usize = 127;
/// Keys read per range request when loading.
const PAGE: usize = 2000;
const KIND: &str = "capi-state";
const FENCED: &str = "the lock was taken over by another capi (this process's lease expired; fencing token no longer matches), so this write was refused";
/// How many of the apply's batches may be in flight at once.
const PIPELINE: usize = 4;
/// How long the apply's writer gathers changes into one transaction.
const LINGER: Duration = Duration::from_millis(2);
/// The most changes the apply gathers into one batch: each is a resource and
/// at most a document, so a batch, with the nested `meta` update, is one
/// pipelined transaction. A larger batch (a thousand workers' bootstrap data
/// ready at once) would be a commit through a pending record, which blocks
/// the writer; as batches of this size they are pipelined like the rest.
const BATCH: usize = 60;
/// The most a snapshot may inflate to (a 100,000-machine state is ~110 MB).
const SNAPSHOT_MAX: u64 = 1 << 30;

/// The `meta` key's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) kind: String,
    pub(crate) format_version: u32,
    pub(crate) lineage: String,
    pub(crate) serial: u64,
    pub(crate) next_sequence: u64,
    pub(crate) capi_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) migrated_to: Option<String>,
    /// A commit cut in several transactions that is not finished yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pending: Option<Pending>,
}

/// What one read of `meta` and `snap` found.
struct Head {
    meta: Option<Meta>,
    /// The revision read at.
    rev: i64,
    /// `meta`'s modification revision.
    meta_rev: i64,
    snap: Option<SnapHead>,
}

pub(crate) fn seal(json: &[u8]) -> Vec<u8> {
    let mut v = format!("sha256:{}\n", hex::encode(Sha256::digest(json))).into_bytes();
    v.extend_from_slice(json);
    v
}

/// The JSON of a sealed value, when its checksum holds.
pub(crate) fn unseal(value: &[u8]) -> Result<&[u8], String> {
    let nl = value
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no checksum line")?;
    let (head, json) = (&value[..nl], &value[nl + 1..]);
    let want = head.strip_prefix(b"sha256:").ok_or("no checksum line")?;
    if hex::encode(Sha256::digest(json)).as_bytes() != want {
        return Err("checksum mismatch".into());
    }
    Ok(json)
}

#[derive(Debug)]
pub(crate) struct EtcdStore {
    client: Arc<EtcdClient>,
    /// Ends with `/`.
    prefix: String,
    location: String,
    lock_ttl: Duration,
    fence: Option<Fence>,
    /// The resource and document keys present after the last load or
    /// save, with their values' checksums: a whole-state save writes only
    /// what differs. Complete only when `known_complete`.
    known: Mutex<BTreeMap<Vec<u8>, [u8; 32]>>,
    /// `known` holds every key (a load from the snapshot learns none).
    known_complete: AtomicBool,
    /// A write of this store failed (its outcome is unknown): no snapshot
    /// is written from what this process holds.
    failed: Arc<AtomicBool>,
    /// Batches of the apply sent and not yet answered ([`PIPELINE`] at most).
    in_flight: Arc<(Mutex<write::InFlight>, Condvar)>,
    /// This store wrote `serial` (the key guarded writes compare) itself.
    serial_written: AtomicBool,
    /// The snapshot does not match `meta` (a write since, or none yet).
    snap_stale: AtomicBool,
    /// A large commit found unfinished at load: its meta and record, to be
    /// finished before this store's first write.
    unfinished: Mutex<Option<(Meta, JournalRecord)>>,
}

type Op = Value;

fn put(key: &[u8], value: &[u8]) -> Op {
    json!({"request_put": {"key": b64(key), "value": b64(value)}})
}

fn del(key: &[u8]) -> Op {
    json!({"request_delete_range": {"key": b64(key)}})
}

impl EtcdStore {
    pub(crate) fn connect(
        endpoints: Vec<String>,
        prefix: &str,
        location: &str,
        (lock_ttl, access): (Duration, client::EtcdAccess),
    ) -> Result<EtcdStore, StateError> {
        let client = EtcdClient::new(endpoints, access).map_err(|reason| StateError::Backend {
            location: location.to_string(),
            reason,
        })?;
        Ok(EtcdStore {
            client: Arc::new(client),
            prefix: format!("{prefix}/"),
            location: location.to_string(),
            lock_ttl,
            fence: None,
            known: Mutex::new(BTreeMap::new()),
            known_complete: AtomicBool::new(false),
            failed: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::new((Mutex::new(write::InFlight::default()), Condvar::new())),
            serial_written: AtomicBool::new(false),
            snap_stale: AtomicBool::new(true),
            unfinished: Mutex::new(None),
        })
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Backend {
            location: self.location.clone(),
            reason: e.to_string(),
        }
    }

    fn corrupt(&self, key: &[u8], reason: impl std::fmt::Display) -> StateError {
        StateError::Corrupt {
            path: format!("{} (key {})", self.location, String::from_utf8_lossy(key)),
            reason: reason.to_string(),
            advice: format!(
                "etcd keeps no backup, and capi cannot push over a state it cannot read: restore the keys from an etcd snapshot (`etcdctl snapshot restore`), or, with no capi running, remove them (`etcdctl del --prefix {}`) and push a copy saved earlier with `capi state pull` (`capi state push FILE`)",
                self.prefix
            ),
        }
    }

    /// Every key-value under `PREFIX/<sub>` at `revision` (0: now), page by page.
    fn range_all(&self, sub: &str, revision: i64) -> Result<(Vec<Value>, i64), StateError> {
        let start = self.key(sub);
        let end = prefix_end(&start);
        let mut from = start.clone();
        let mut out = Vec::new();
        let mut rev = revision;
        loop {
            let mut req =
                json!({"key": b64(&from), "range_end": b64(&end), "limit": PAGE.to_string()});
            if rev > 0 {
                req["revision"] = json!(rev.to_string());
            }
            let r = self
                .client
                .call("/v3/kv/range", req)
                .map_err(|e| self.err(e))?;
            if rev == 0 {
                rev = int(&r["header"], "revision");
            }
            let kvs = r
                .get("kvs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let more = r.get("more").and_then(Value::as_bool) == Some(true);
            if let Some(last) = kvs.last() {
                from = unb64(&last["key"]);
                from.push(0);
            }
            out.extend(kvs);
            if !more {
                return Ok((out, rev));
            }
        }
    }

    fn check_fence(&self) -> Result<(), StateError> {
        match self.fence.as_ref().and_then(Fence::lost) {
            Some(reason) => Err(StateError::LockLost {
                path: self.location.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Replace the whole state: write what differs from the keys known,
    /// delete what is gone, `meta` last; then its snapshot.
    pub(crate) fn save_state(
        &mut self,
        st: &State,
        migrated_to: Option<String>,
    ) -> Result<(), StateError> {
        self.check_fence()?;
        self.drain();
        if !self.known_complete.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed) {
            // Not loaded key by key by this store: learn what is there.
            let head = self.read_head()?;
            if let Some(meta) = head.meta {
                self.load_keys(meta, head.rev)?;
            }
        }
        let mut next = BTreeMap::new();
        let mut ops = Vec::new();
        let mut upsert = Vec::new();
        let mut documents = BTreeMap::new();
        let known = self.known.lock().unwrap().clone();
        for r in &st.resources {
            let key = self.key(&format!("r/{}", r.address));
            let v = Self::resource_value(r);
            let h: [u8; 32] = Sha256::digest(&v).into();
            if known.get(&key) != Some(&h) {
                ops.push(put(&key, &v));
                upsert.push(r);
            }
            next.insert(key, h);
        }
        for (sha, doc) in &st.documents {
            let key = self.key(&format!("d/{sha}"));
            let v = seal(&serde_json::to_vec(doc).expect("serialises"));
            let h: [u8; 32] = Sha256::digest(&v).into();
            if known.get(&key) != Some(&h) {
                ops.push(put(&key, &v));
                documents.insert(sha.clone(), doc.clone());
            }
            next.insert(key, h);
        }
        let resources = self.key("r/");
        let mut remove = Vec::new();
        for key in known.keys().filter(|k| !next.contains_key(*k)) {
            ops.push(del(key));
            if let Some(a) = key.strip_prefix(resources.as_slice()) {
                let a = String::from_utf8_lossy(a);
                remove.push(crate::resource::Address::parse(&a).map_err(|e| self.corrupt(key, e))?);
            }
        }
        let lineage = if st.lineage.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            st.lineage.clone()
        };
        let meta = Meta {
            kind: KIND.into(),
            format_version: FORMAT_VERSION,
            lineage: lineage.clone(),
            serial: st.serial,
            next_sequence: st.next_sequence,
            capi_version: env!("CARGO_PKG_VERSION").into(),
            migrated_to,
            pending: None,
        };
        let record = || JournalRecord {
            serial: st.serial,
            next_sequence: st.next_sequence,
            upsert: upsert.into_iter().map(|r| (**r).clone()).collect(),
            remove,
            documents,
        };
        self.commit(ops, meta, record, true)?;
        *self.known.lock().unwrap() = next;
        self.known_complete.store(true, Ordering::Relaxed);
        if st.lineage == lineage {
            self.write_snapshot(st)?;
        }
        Ok(())
    }
}

impl StateBackend for EtcdStore {
    fn load(&self) -> Result<Option<State>, StateError> {
        let head = self.read_head()?;
        let Some(meta) = head.meta.clone() else {
            // No state. The lock and what a write that stopped before its
            // commit point leaves (parts of a record or a snapshot) are
            // capi's and ignored; anything else under the prefix is
            // someone else's.
            let mut from = self.prefix.as_bytes().to_vec();
            let end = prefix_end(self.prefix.as_bytes());
            loop {
                let r = self
                    .client
                    .call(
                        "/v3/kv/range",
                        json!({"key": b64(&from), "range_end": b64(&end), "limit": "1", "keys_only": true}),
                    )
                    .map_err(|e| self.err(e))?;
                let Some(kv) = r.get("kvs").and_then(|k| k.get(0)) else {
                    return Ok(None);
                };
                let key = unb64(&kv["key"]);
                let ours = ["lock", "snap", "p/", "s/"]
                    .into_iter()
                    .map(|k| self.key(k))
                    .find(|k| key == *k || (k.ends_with(b"/") && key.starts_with(k)));
                match ours {
                    Some(k) if k.ends_with(b"/") => from = prefix_end(&k),
                    Some(_) => from = [key.as_slice(), &[0]].concat(),
                    None => {
                        return Err(StateError::Foreign {
                            location: self.location.clone(),
                            reason: format!(
                                "it has no capi meta key, but holds {}",
                                String::from_utf8_lossy(&key)
                            ),
                        })
                    }
                }
            }
        };
        if let Some(to) = &meta.migrated_to {
            return Err(StateError::Migrated {
                location: self.location.clone(),
                to: to.clone(),
            });
        }
        self.load_at(meta, &head).map(Some)
    }

    fn load_unchecked(&self) -> Result<Option<State>, StateError> {
        let head = self.read_head()?;
        match head.meta.clone() {
            Some(meta) => self.load_at(meta, &head).map(Some),
            None => self.load(),
        }
    }

    fn set_migrated(&mut self, state: &State, to: Option<&str>) -> Result<(), StateError> {
        self.save_state(state, to.map(str::to_string))
    }

    fn save(&mut self, state: &State) -> Result<(), StateError> {
        self.save_state(state, None)
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let st = decode(bytes)
            .map_err(|e| self.err(format!("an encoded state does not decode: {e}")))?;
        self.save_state(&st, None)
    }

    fn snapshot_due(&self, _snapshotted: bool) -> bool {
        // Each record is the changed keys and `meta`: nothing to compact.
        false
    }

    fn append(
        &mut self,
        lineage: &str,
        _base_serial: u64,
        record: &JournalRecord,
    ) -> Result<Durability, StateError> {
        let mut ops = Vec::with_capacity(record.upsert.len() + record.remove.len() + 2);
        let mut gone = Vec::with_capacity(record.remove.len());
        let mut written = Vec::with_capacity(record.upsert.len() + record.documents.len());
        for a in &record.remove {
            let key = self.key(&format!("r/{a}"));
            ops.push(del(&key));
            gone.push(key);
        }
        for r in &record.upsert {
            let key = self.key(&format!("r/{}", r.address));
            let v = Self::resource_value(r);
            ops.push(put(&key, &v));
            written.push((key, Sha256::digest(&v).into()));
        }
        for (sha, doc) in &record.documents {
            let key = self.key(&format!("d/{sha}"));
            let v = seal(&serde_json::to_vec(doc).expect("serialises"));
            ops.push(put(&key, &v));
            written.push((key, Sha256::digest(&v).into()));
        }
        let meta = Meta {
            kind: KIND.into(),
            format_version: FORMAT_VERSION,
            lineage: lineage.to_string(),
            serial: record.serial,
            next_sequence: record.next_sequence,
            capi_version: env!("CARGO_PKG_VERSION").into(),
            migrated_to: None,
            pending: None,
        };
        let pipelined = Self::pipelinable(&ops)
            && self.serial_written.load(Ordering::Relaxed)
            && self.unfinished.lock().unwrap().is_none();
        let durability = if pipelined {
            self.check_fence()?;
            let keys = gone
                .iter()
                .cloned()
                .chain(written.iter().map(|(k, _)| k.clone()))
                .collect();
            Durability::Wait(self.send_pipelined(ops, keys, &meta))
        } else {
            self.commit(ops, meta, || record.clone(), false)?;
            Durability::Now
        };
        let mut known = self.known.lock().unwrap();
        for key in gone {
            known.remove(&key);
        }
        known.extend(written);
        Ok(durability)
    }

    fn fold_due(&self) -> bool {
        self.snap_stale.load(Ordering::Relaxed)
    }

    /// A transaction costs etcd about 1 ms of CPU per member whatever it
    /// holds: the changes of a burst (a wave of operations starting or
    /// ending together) are gathered into one.
    fn linger(&self) -> Duration {
        LINGER
    }

    fn max_batch(&self) -> usize {
        BATCH
    }

    /// The records are in the keys already: only the snapshot is rebuilt
    /// (when it is stale, which only the write knows: it encodes itself).
    fn fold(
        &mut self,
        state: &State,
        _encode: &mut dyn FnMut(&State) -> Vec<u8>,
    ) -> Result<(), StateError> {
        self.write_snapshot(state)
    }

    fn lock(&mut self, operation: &str, timeout: Duration) -> Result<Box<dyn HeldLock>, LockError> {
        let lock = EtcdLock::acquire(
            self.client.clone(),
            self.key("lock"),
            &self.location,
            operation,
            (timeout, self.lock_ttl),
        )?;
        self.fence = Some(lock.fence());
        Ok(Box::new(lock))
    }

    fn force_unlock(&self, id: &str) -> Result<LockInfo, LockError> {
        match current_holder(&self.client, &self.key("lock"), &self.location)? {
            Some((info, ttl)) if info.id == id => Err(LockError::LeaseAlive {
                path: self.location.clone(),
                info,
                ttl,
            }),
            current => Err(LockError::WrongId {
                id: id.to_string(),
                path: self.location.clone(),
                current: current.map(|(i, _)| i),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_check_their_checksum() {
        let v = seal(b"{\"a\":1}");
        assert_eq!(unseal(&v).unwrap(), b"{\"a\":1}");
        let mut bad = v.clone();
        let n = bad.len() - 2;
        bad[n] = b'2';
        assert_eq!(unseal(&bad).unwrap_err(), "checksum mismatch");
        assert!(unseal(b"{\"a\":1}").is_err());
    }
}
