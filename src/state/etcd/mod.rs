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
//! - `lock`: the lock ([`lock`]).
//!
//! A commit (one batch of the apply, or a whole state) is one transaction
//! when it has at most [`MAX_OPS`] operations; a bigger one is several, the
//! resources first and `meta` last. Every transaction written under the lock
//! compares the lock key's create revision (the fencing token), so a holder
//! that lost its lease cannot write. Reads are linearizable, all pages of one
//! load at one revision.

pub(crate) mod client;
pub(crate) mod lock;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use self::client::{b64, int, prefix_end, unb64, EtcdClient};
use self::lock::{current_holder, EtcdLock, Fence};
use super::backend::{HeldLock, StateBackend};
use super::codec::{decode, JournalRecord};
use super::lock::{LockError, LockInfo};
use super::model::{Resource, State, FORMAT_VERSION};
use super::store::StateError;

/// etcd's default limit of operations per transaction, less one for the fence.
pub(crate) const MAX_OPS: usize = 127;
/// Keys read per range request when loading.
const PAGE: usize = 2000;
const KIND: &str = "capi-state";

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
    /// what differs.
    known: Mutex<BTreeMap<Vec<u8>, [u8; 32]>>,
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
            backup: self.location.clone(),
            backup_note:
                " (etcd keeps no backup; restore a `capi state pull` copy with `capi state push`)"
                    .into(),
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

    /// The meta record and the revision it was read at; `None` when absent.
    fn read_meta(&self) -> Result<(Option<Meta>, i64), StateError> {
        let key = self.key("meta");
        let r = self
            .client
            .call("/v3/kv/range", json!({"key": b64(&key)}))
            .map_err(|e| self.err(e))?;
        let rev = int(&r["header"], "revision");
        let Some(kv) = r.get("kvs").and_then(|k| k.get(0)) else {
            return Ok((None, rev));
        };
        let raw = unb64(&kv["value"]);
        let foreign = |reason: String| StateError::Foreign {
            location: self.location.clone(),
            reason,
        };
        let json =
            unseal(&raw).map_err(|e| foreign(format!("its meta key is not capi's ({e})")))?;
        let meta: Meta = serde_json::from_slice(json)
            .map_err(|e| foreign(format!("its meta key does not parse ({e})")))?;
        if meta.kind != KIND {
            return Err(foreign(format!("its meta key is of kind {:?}", meta.kind)));
        }
        if meta.format_version > FORMAT_VERSION {
            return Err(StateError::FutureFormat {
                path: self.location.clone(),
                found: meta.format_version,
                expected: FORMAT_VERSION,
                ours: env!("CARGO_PKG_VERSION").into(),
            });
        }
        Ok((Some(meta), rev))
    }

    fn load_at(&self, meta: Meta, rev: i64) -> Result<State, StateError> {
        let mut known = BTreeMap::new();
        let mut st = State::new(meta.lineage.clone());
        st.format_version = meta.format_version;
        st.serial = meta.serial;
        st.next_sequence = meta.next_sequence;
        st.capi_version = meta.capi_version.clone();
        let (resources, _) = self.range_all("r/", rev)?;
        let mut list = Vec::with_capacity(resources.len());
        for kv in &resources {
            let key = unb64(&kv["key"]);
            let raw = unb64(&kv["value"]);
            let json = unseal(&raw).map_err(|e| self.corrupt(&key, e))?;
            let r: Resource = serde_json::from_slice(json).map_err(|e| self.corrupt(&key, e))?;
            known.insert(key, Sha256::digest(&raw).into());
            list.push(Box::new(r));
        }
        list.sort_by(|a, b| a.address.cmp(&b.address));
        st.resources = list;
        let (docs, _) = self.range_all("d/", rev)?;
        for kv in &docs {
            let key = unb64(&kv["key"]);
            let raw = unb64(&kv["value"]);
            let json = unseal(&raw).map_err(|e| self.corrupt(&key, e))?;
            let doc: String = serde_json::from_slice(json).map_err(|e| self.corrupt(&key, e))?;
            let sha = String::from_utf8_lossy(&key[self.key("d/").len()..]).into_owned();
            known.insert(key, Sha256::digest(&raw).into());
            st.documents.insert(sha, doc);
        }
        st.gc_documents();
        *self.known.lock().unwrap() = known;
        Ok(st)
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

    /// Send `ops` as transactions of at most [`MAX_OPS`] (the last one
    /// holding the last op, which is `meta`), each fenced by the lock.
    fn commit_ops(&self, ops: Vec<Op>) -> Result<(), StateError> {
        self.check_fence()?;
        let compare: Vec<Value> = self.fence.iter().map(Fence::compare).collect();
        for chunk in ops.chunks(MAX_OPS) {
            let txn = json!({"compare": compare, "success": chunk});
            let r = self
                .client
                .call("/v3/kv/txn", txn)
                .map_err(|e| self.err(e))?;
            if r.get("succeeded").and_then(Value::as_bool) != Some(true) {
                let reason = "the lock was taken over by another capi (this process's lease expired; fencing token no longer matches), so this write was refused".to_string();
                if let Some(f) = &self.fence {
                    f.mark_lost(reason.clone());
                }
                return Err(StateError::LockLost {
                    path: self.location.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    fn meta_op(&self, st_meta: &Meta) -> Op {
        put(
            &self.key("meta"),
            &seal(&serde_json::to_vec(st_meta).expect("serialises")),
        )
    }

    fn resource_value(r: &Resource) -> Vec<u8> {
        seal(&serde_json::to_vec(r).expect("serialises"))
    }

    /// Replace the whole state: write what differs from the keys known,
    /// delete what is gone, `meta` last.
    pub(crate) fn save_state(
        &mut self,
        st: &State,
        migrated_to: Option<String>,
    ) -> Result<(), StateError> {
        self.check_fence()?;
        if self.known.lock().unwrap().is_empty() {
            // Not loaded by this store: learn what is there.
            if let (Some(meta), rev) = self.read_meta()? {
                self.load_at(meta, rev)?;
            }
        }
        let mut next = BTreeMap::new();
        let mut ops = Vec::new();
        let known = self.known.lock().unwrap().clone();
        for r in &st.resources {
            let key = self.key(&format!("r/{}", r.address));
            let v = Self::resource_value(r);
            let h: [u8; 32] = Sha256::digest(&v).into();
            if known.get(&key) != Some(&h) {
                ops.push(put(&key, &v));
            }
            next.insert(key, h);
        }
        for (sha, doc) in &st.documents {
            let key = self.key(&format!("d/{sha}"));
            let v = seal(&serde_json::to_vec(doc).expect("serialises"));
            let h: [u8; 32] = Sha256::digest(&v).into();
            if known.get(&key) != Some(&h) {
                ops.push(put(&key, &v));
            }
            next.insert(key, h);
        }
        for key in known.keys().filter(|k| !next.contains_key(*k)) {
            ops.push(del(key));
        }
        let lineage = if st.lineage.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            st.lineage.clone()
        };
        ops.push(self.meta_op(&Meta {
            kind: KIND.into(),
            format_version: FORMAT_VERSION,
            lineage,
            serial: st.serial,
            next_sequence: st.next_sequence,
            capi_version: env!("CARGO_PKG_VERSION").into(),
            migrated_to,
        }));
        self.commit_ops(ops)?;
        *self.known.lock().unwrap() = next;
        Ok(())
    }
}

impl StateBackend for EtcdStore {
    fn load(&self) -> Result<Option<State>, StateError> {
        let (meta, rev) = self.read_meta()?;
        let Some(meta) = meta else {
            // Nothing of capi's; anything else under the prefix is someone else's.
            let r = self
                .client
                .call(
                    "/v3/kv/range",
                    json!({"key": b64(self.prefix.as_bytes()), "range_end": b64(&prefix_end(self.prefix.as_bytes())),
                           "limit": "1", "keys_only": true}),
                )
                .map_err(|e| self.err(e))?;
            if let Some(kv) = r.get("kvs").and_then(|k| k.get(0)) {
                let key = unb64(&kv["key"]);
                if key != self.key("lock") {
                    return Err(StateError::Foreign {
                        location: self.location.clone(),
                        reason: format!(
                            "it has no capi meta key, but holds {}",
                            String::from_utf8_lossy(&key)
                        ),
                    });
                }
            }
            return Ok(None);
        };
        if let Some(to) = &meta.migrated_to {
            return Err(StateError::Migrated {
                location: self.location.clone(),
                to: to.clone(),
            });
        }
        self.load_at(meta, rev).map(Some)
    }

    fn load_unchecked(&self) -> Result<Option<State>, StateError> {
        match self.read_meta()? {
            (Some(meta), rev) => self.load_at(meta, rev).map(Some),
            (None, _) => self.load(),
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
    ) -> Result<Option<std::fs::File>, StateError> {
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
        ops.push(self.meta_op(&Meta {
            kind: KIND.into(),
            format_version: FORMAT_VERSION,
            lineage: lineage.to_string(),
            serial: record.serial,
            next_sequence: record.next_sequence,
            capi_version: env!("CARGO_PKG_VERSION").into(),
            migrated_to: None,
        }));
        self.commit_ops(ops)?;
        let mut known = self.known.lock().unwrap();
        for key in gone {
            known.remove(&key);
        }
        known.extend(written);
        Ok(None)
    }

    fn fold_due(&self) -> bool {
        false
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
