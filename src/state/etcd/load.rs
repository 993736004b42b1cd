//! Reading the state from etcd: `meta` and the snapshot's head at one
//! revision, then the snapshot when it matches `meta`, else every resource
//! and document key (with an unfinished large commit replayed onto them).
//! The layout and the write protocol are described in [`super`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::client::{b64, int, unb64};
use super::snapshot::{self, SnapHead};
use super::{unseal, EtcdStore, Head, Meta, KIND, SNAPSHOT_MAX};
use crate::state::codec::{decode, JournalRecord};
use crate::state::model::{Resource, State, FORMAT_VERSION};
use crate::state::store::StateError;

impl EtcdStore {
    /// `meta` and `snap`, read together at one revision.
    pub(super) fn read_head(&self) -> Result<Head, StateError> {
        let range = |k: &[u8]| json!({"request_range": {"key": b64(k)}});
        let r = self
            .client
            .call(
                "/v3/kv/txn",
                json!({"success": [range(&self.key("meta")), range(&self.key("snap"))]}),
            )
            .map_err(|e| self.err(e))?;
        let rev = int(&r["header"], "revision");
        let first_kv = |i: usize| {
            r.get("responses")
                .and_then(|x| x.get(i))
                .and_then(|x| x.get("response_range"))
                .and_then(|x| x.get("kvs"))
                .and_then(|k| k.get(0))
                .cloned()
        };
        // The snapshot is a cache: one that does not read is not used.
        let snap = first_kv(1).and_then(|kv| {
            let raw = unb64(&kv["value"]);
            serde_json::from_slice::<SnapHead>(unseal(&raw).ok()?).ok()
        });
        let Some(kv) = first_kv(0) else {
            return Ok(Head {
                meta: None,
                rev,
                meta_rev: 0,
                snap,
            });
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
        Ok(Head {
            meta: Some(meta),
            rev,
            meta_rev: int(&kv, "mod_revision"),
            snap,
        })
    }

    /// The values of the parts under `dir` at `rev`, in order.
    fn read_parts(&self, dir: &str, rev: i64) -> Result<Vec<Vec<u8>>, StateError> {
        let (kvs, _) = self.range_all(dir, rev)?;
        Ok(kvs.iter().map(|kv| unb64(&kv["value"])).collect())
    }

    /// The state `head` describes, from the snapshot when it matches `meta`,
    /// else from the per-resource keys (with an unfinished commit replayed).
    pub(super) fn load_at(&self, meta: Meta, head: &Head) -> Result<State, StateError> {
        if let Some(snap) = head.snap.as_ref().filter(|s| {
            meta.pending.is_none()
                && s.meta_revision == head.meta_rev
                && s.serial == meta.serial
                && s.lineage == meta.lineage
        }) {
            // Any fault in it: read the keys instead.
            if let Ok(st) = self.load_snapshot(snap, head.rev) {
                self.known.lock().unwrap().clear();
                self.known_complete.store(false, Ordering::Relaxed);
                self.snap_stale.store(false, Ordering::Relaxed);
                return Ok(st);
            }
        }
        self.snap_stale.store(true, Ordering::Relaxed);
        self.load_keys(meta, head.rev)
    }

    fn load_snapshot(&self, snap: &SnapHead, rev: i64) -> Result<State, String> {
        let parts = self
            .read_parts(&format!("s/{}/", snap.id), rev)
            .map_err(|e| e.to_string())?;
        let z = snapshot::join(parts, snap.parts, &snap.sha256)?;
        let st = decode(&snapshot::decompress(&z, SNAPSHOT_MAX)?)?;
        if st.lineage != snap.lineage || st.serial != snap.serial {
            return Err("its contents are of another serial".into());
        }
        Ok(st)
    }

    pub(super) fn load_keys(&self, meta: Meta, rev: i64) -> Result<State, StateError> {
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
        if let Some(p) = &meta.pending {
            let dir = format!("p/{}/", p.id);
            let record = snapshot::join(self.read_parts(&dir, rev)?, p.parts, &p.sha256)
                .and_then(|j| {
                    let json = unseal(&j)?;
                    serde_json::from_slice::<JournalRecord>(json).map_err(|e| e.to_string())
                })
                .map_err(|e| {
                    self.corrupt(
                        &self.key(&dir),
                        format!("the unfinished commit {} cannot be read: {e}", p.serial),
                    )
                })?;
            record.clone().apply_to(&mut st);
            *self.unfinished.lock().unwrap() = Some((meta, record));
        }
        st.gc_documents();
        *self.known.lock().unwrap() = known;
        self.known_complete.store(true, Ordering::Relaxed);
        Ok(st)
    }
}
