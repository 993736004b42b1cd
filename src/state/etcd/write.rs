//! Writing the state to etcd: fenced transactions, the atomic protocol of
//! commits larger than one transaction, the apply's pipelined batches, and
//! the snapshot. The layout and the protocol are described in [`super`].

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::client::{b64, int, prefix_end};
use super::lock::Fence;
use super::snapshot::{self, Pending, SnapHead, PART};
use super::{del, put, seal, EtcdStore, Meta, Op, FENCED, MAX_OPS, PIPELINE};
use crate::state::codec::{encode, JournalRecord};
use crate::state::model::{Resource, State};
use crate::state::store::StateError;

impl EtcdStore {
    /// One transaction of `ops`, fenced by the lock (and by `extra`
    /// comparisons); the revision it was written at. A refusal is the lock
    /// lost unless `extra` was given (then it may be `extra` that failed).
    fn txn(&self, ops: &[Op], extra: Option<Value>) -> Result<i64, StateError> {
        let fenced_only = extra.is_none();
        let mut compare: Vec<Value> = self.fence.iter().map(Fence::compare).collect();
        compare.extend(extra);
        let r = self
            .client
            .call("/v3/kv/txn", json!({"compare": compare, "success": ops}))
            .map_err(|e| self.err(e))?;
        if r.get("succeeded").and_then(Value::as_bool) != Some(true) {
            if fenced_only {
                return Err(fenced_out(self.fence.as_ref(), &self.location));
            }
            return Err(StateError::LockLost {
                path: self.location.clone(),
                reason: "a comparison failed (the lock lost, or the state changed meanwhile)"
                    .into(),
            });
        }
        Ok(int(&r["header"], "revision"))
    }

    /// Commit `ops` (puts and deletes of `r/` and `d/` keys) with `meta`:
    /// one transaction when they fit, else atomically through a pending
    /// record (`record()`: the changes `ops` make, replayable). An unfinished
    /// commit (found at load, or left by a failure of this store) is
    /// finished first, unless `supersede` (a whole state written over it).
    pub(super) fn commit(
        &self,
        ops: Vec<Op>,
        meta: Meta,
        record: impl FnOnce() -> JournalRecord,
        supersede: bool,
    ) -> Result<(), StateError> {
        self.check_fence()?;
        if !supersede {
            let unfinished = self.unfinished.lock().unwrap().clone();
            if let Some((m, rec)) = unfinished {
                self.finish(m, &rec)?;
            }
        }
        self.commit_now(ops, meta, record, supersede)?;
        if supersede {
            *self.unfinished.lock().unwrap() = None;
        }
        Ok(())
    }

    /// Finish a commit whose meta names its record already: its changes,
    /// then meta without `pending` (steps 3 and 4 of the protocol).
    fn finish(&self, mut meta: Meta, rec: &JournalRecord) -> Result<(), StateError> {
        self.drain();
        self.snap_stale.store(true, Ordering::Relaxed);
        meta.pending = None;
        let result = self
            .send_chunks(&self.record_ops(rec))
            .and_then(|()| self.txn(&self.last_ops(&meta), None).map(drop));
        match result {
            Ok(()) => {
                *self.unfinished.lock().unwrap() = None;
                self.serial_written.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    fn commit_now(
        &self,
        ops: Vec<Op>,
        meta: Meta,
        record: impl FnOnce() -> JournalRecord,
        clear_parts: bool,
    ) -> Result<(), StateError> {
        self.drain();
        self.snap_stale.store(true, Ordering::Relaxed);
        let result = self.commit_in_order(ops, meta, record, clear_parts);
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        } else {
            self.serial_written.store(true, Ordering::Relaxed);
        }
        result
    }

    fn clear_parts(&self) -> Op {
        let dir = self.key("p/");
        json!({"request_delete_range": {"key": b64(&dir), "range_end": b64(&prefix_end(&dir))}})
    }

    /// `meta` (without `pending`) and the parts deleted: a commit's end.
    fn last_ops(&self, meta: &Meta) -> Vec<Op> {
        let mut last = self.meta_ops(meta).to_vec();
        last.push(self.clear_parts());
        last
    }

    fn commit_in_order(
        &self,
        mut ops: Vec<Op>,
        mut meta: Meta,
        record: impl FnOnce() -> JournalRecord,
        clear_parts: bool,
    ) -> Result<(), StateError> {
        if fits_one(&ops, 4) {
            ops.extend(self.meta_ops(&meta));
            if clear_parts {
                ops.push(self.clear_parts());
            }
            self.txn(&ops, None)?;
            return Ok(());
        }
        let rec = record();
        let bytes = seal(&serde_json::to_vec(&rec).expect("serialises"));
        // A directory of its own: nothing a killed writer left is in it.
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = format!("p/{id}/");
        let mut n = 0;
        for (i, part) in bytes.chunks(PART).enumerate() {
            self.txn(&[put(&self.key(&snapshot::part_key(&dir, i)), part)], None)?;
            n += 1;
        }
        meta.pending = Some(Pending {
            serial: meta.serial,
            id,
            parts: n,
            sha256: snapshot::sha_hex(&bytes),
        });
        // The commit point: from here a load sees the whole commit.
        self.txn(&self.meta_ops(&meta), None)?;
        let pending_meta = meta.clone();
        meta.pending = None;
        let rest = self
            .send_chunks(&ops)
            .and_then(|()| self.txn(&self.last_ops(&meta), None).map(drop));
        if rest.is_err() {
            // Committed but not finished: finished before the next write.
            *self.unfinished.lock().unwrap() = Some((pending_meta, rec));
        }
        rest
    }

    /// Send `ops`, which touch distinct keys, in transactions of at most
    /// [`MAX_OPS`] operations and [`TXN_BYTES`], a few at once; all
    /// answered when this returns.
    fn send_chunks(&self, ops: &[Op]) -> Result<(), StateError> {
        let chunks = cut(ops, 0);
        std::thread::scope(|scope| {
            let senders: Vec<_> = (0..PIPELINE)
                .map(|first| {
                    let chunks = &chunks;
                    scope.spawn(move || {
                        chunks
                            .iter()
                            .skip(first)
                            .step_by(PIPELINE)
                            .try_for_each(|c| self.txn(c, None).map(drop))
                    })
                })
                .collect();
            senders
                .into_iter()
                .try_for_each(|s| s.join().expect("an etcd sender panicked"))
        })
    }

    /// Wait until every pipelined batch is answered.
    pub(super) fn drain(&self) {
        let (state, cv) = &*self.in_flight;
        let mut st = state.lock().unwrap();
        while st.count > 0 {
            st = cv.wait(st).unwrap();
        }
    }

    /// Whether `ops` (a batch of the apply) can be sent pipelined: one
    /// transaction with the nested meta update.
    pub(super) fn pipelinable(ops: &[Op]) -> bool {
        fits_one(ops, 4)
    }

    /// Send one small batch of the apply without waiting for the batches
    /// before it (at most [`PIPELINE`] in flight). A batch that touches a
    /// key still in flight waits for it (an operation commits again only
    /// once its previous commit is answered, but a health verdict can
    /// commit another machine's resource), so the order in which etcd
    /// applies the batches does not matter for the resources; `meta` is
    /// written only if `serial` is still below this batch's, so it never
    /// goes back. Returns the wait for the answer.
    pub(super) fn send_pipelined(
        &self,
        mut ops: Vec<Op>,
        keys: Vec<Vec<u8>>,
        meta: &Meta,
    ) -> Box<dyn FnOnce() -> Result<(), String> + Send> {
        let mine = b64(format!("{:020}", meta.serial).as_bytes());
        let [meta_put, serial_put] = self.meta_ops(meta);
        ops.push(json!({"request_txn": {
            "compare": [{"key": b64(&self.key("serial")), "target": "VALUE", "result": "LESS", "value": mine}],
            "success": [meta_put, serial_put],
        }}));
        {
            let (state, cv) = &*self.in_flight;
            let mut st = state.lock().unwrap();
            while st.count >= PIPELINE || keys.iter().any(|k| st.keys.contains(k)) {
                st = cv.wait(st).unwrap();
            }
            st.count += 1;
            st.keys.extend(keys.iter().cloned());
        }
        self.snap_stale.store(true, Ordering::Relaxed);
        let body = json!({"compare": self.fence.iter().map(Fence::compare).collect::<Vec<_>>(), "success": ops});
        let (client, fence, failed) =
            (self.client.clone(), self.fence.clone(), self.failed.clone());
        // Leaves the in-flight set even if the thread panics.
        let done = InFlightGuard {
            in_flight: self.in_flight.clone(),
            keys,
        };
        let location = self.location.clone();
        let worker = std::thread::spawn(move || {
            let _done = done;
            let result = match client.call("/v3/kv/txn", body) {
                Ok(r) if r.get("succeeded").and_then(Value::as_bool) == Some(true) => Ok(()),
                Ok(_) => Err(fenced_out(fence.as_ref(), &location).to_string()),
                Err(e) => Err(StateError::Backend {
                    location,
                    reason: e.to_string(),
                }
                .to_string()),
            };
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            result
        });
        Box::new(move || {
            worker
                .join()
                .unwrap_or_else(|_| Err("the etcd writer panicked".into()))
        })
    }

    /// The puts and deletes that replay `rec`.
    fn record_ops(&self, rec: &JournalRecord) -> Vec<Op> {
        let mut ops = Vec::with_capacity(rec.upsert.len() + rec.remove.len() + rec.documents.len());
        for a in &rec.remove {
            ops.push(del(&self.key(&format!("r/{a}"))));
        }
        for r in &rec.upsert {
            ops.push(put(
                &self.key(&format!("r/{}", r.address)),
                &Self::resource_value(r),
            ));
        }
        for (sha, doc) in &rec.documents {
            ops.push(put(
                &self.key(&format!("d/{sha}")),
                &seal(&serde_json::to_vec(doc).expect("serialises")),
            ));
        }
        ops
    }

    /// `meta`, and `serial` (its serial, zero-padded: the value pipelined
    /// batches compare).
    fn meta_ops(&self, st_meta: &Meta) -> [Op; 2] {
        [
            put(
                &self.key("meta"),
                &seal(&serde_json::to_vec(st_meta).expect("serialises")),
            ),
            put(
                &self.key("serial"),
                format!("{:020}", st_meta.serial).as_bytes(),
            ),
        ]
    }

    pub(super) fn resource_value(r: &Resource) -> Vec<u8> {
        seal(&serde_json::to_vec(r).expect("serialises"))
    }

    /// Write the snapshot of `st`, which must be the state as committed:
    /// only when this store knows `meta`'s revision (its writes all landed),
    /// and only if `meta` still has it.
    pub(super) fn write_snapshot(&self, st: &State) -> Result<(), StateError> {
        self.drain();
        self.check_fence()?;
        if self.failed.load(Ordering::Relaxed) || !self.snap_stale.load(Ordering::Relaxed) {
            return Ok(());
        }
        let r = self
            .client
            .call("/v3/kv/range", json!({"key": b64(&self.key("meta"))}))
            .map_err(|e| self.err(e))?;
        let meta_rev = r
            .get("kvs")
            .and_then(|k| k.get(0))
            .map_or(0, |kv| int(kv, "mod_revision"));
        let z = snapshot::compress(&encode(st));
        let sha = snapshot::sha_hex(&z);
        let id = sha[..16].to_string();
        let dir = format!("s/{id}/");
        let mut n = 0;
        for (i, part) in z.chunks(PART).enumerate() {
            self.txn(&[put(&self.key(&snapshot::part_key(&dir, i)), part)], None)?;
            n += 1;
        }
        let head = SnapHead {
            lineage: st.lineage.clone(),
            serial: st.serial,
            meta_revision: meta_rev,
            id,
            parts: n,
            sha256: sha,
        };
        // The new head, and every part but the new ones deleted.
        let (all, ours) = (self.key("s/"), self.key(&dir));
        let drop_range = |from: &[u8], to: &[u8]| json!({"request_delete_range": {"key": b64(from), "range_end": b64(to)}});
        let ops = [
            put(
                &self.key("snap"),
                &seal(&serde_json::to_vec(&head).expect("serialises")),
            ),
            drop_range(&all, &ours),
            drop_range(&prefix_end(&ours), &prefix_end(&all)),
        ];
        let meta_unchanged = json!({"key": b64(&self.key("meta")), "target": "MOD", "result": "EQUAL",
                                    "mod_revision": meta_rev.to_string()});
        self.txn(&ops, Some(meta_unchanged))?;
        self.snap_stale.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// A write refused by the fence: the lock is marked lost (so no new
/// operation starts) and the refusal says why.
fn fenced_out(fence: Option<&Fence>, location: &str) -> StateError {
    if let Some(f) = fence {
        f.mark_lost(FENCED.to_string());
    }
    StateError::LockLost {
        path: location.to_string(),
        reason: FENCED.to_string(),
    }
}

/// Largest transaction, in bytes of JSON (etcd refuses requests over 1.5
/// MiB by default; base64 makes the JSON larger than the request etcd sees).
const TXN_BYTES: usize = 1024 * 1024;

/// The pipelined batches in flight: how many, and the keys they write.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    pub(crate) count: usize,
    pub(crate) keys: std::collections::HashSet<Vec<u8>>,
}

struct InFlightGuard {
    in_flight: std::sync::Arc<(std::sync::Mutex<InFlight>, std::sync::Condvar)>,
    keys: Vec<Vec<u8>>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let (state, cv) = &*self.in_flight;
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.count -= 1;
        for k in &self.keys {
            st.keys.remove(k);
        }
        cv.notify_all();
    }
}

/// The size `op` adds to a transaction's JSON (its key and value strings,
/// plus the field names around them).
fn op_bytes(op: &Op) -> usize {
    fn strings(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len() + 8,
            Value::Array(a) => a.iter().map(strings).sum(),
            Value::Object(o) => o.iter().map(|(k, v)| k.len() + 4 + strings(v)).sum(),
            _ => 8,
        }
    }
    strings(op)
}

/// Whether `ops` and `extra` more operations fit in one transaction.
fn fits_one(ops: &[Op], extra: usize) -> bool {
    ops.len() + extra <= MAX_OPS && ops.iter().map(op_bytes).sum::<usize>() <= TXN_BYTES - 4096
}

/// `ops` cut in transactions of at most [`MAX_OPS`] - `reserve` operations
/// and [`TXN_BYTES`].
fn cut(ops: &[Op], reserve: usize) -> Vec<&[Op]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, op) in ops.iter().enumerate() {
        let b = op_bytes(op);
        if i > start && (i - start >= MAX_OPS - reserve || bytes + b > TXN_BYTES) {
            out.push(&ops[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < ops.len() {
        out.push(&ops[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_are_cut_by_count_and_by_size() {
        let small: Vec<Op> = (0..300)
            .map(|i| put(format!("k{i}").as_bytes(), b"v"))
            .collect();
        let sizes: Vec<usize> = cut(&small, 0).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![MAX_OPS, MAX_OPS, 300 - 2 * MAX_OPS]);
        assert!(!fits_one(&small[..125], 4));
        assert!(fits_one(&small[..123], 4));
        // 100 values of 30 KB (40 KB as base64): about 4 MB, so at least 4
        // transactions, each under the limit.
        let big: Vec<Op> = (0..100)
            .map(|i| put(format!("k{i}").as_bytes(), &vec![b'x'; 30_000]))
            .collect();
        let chunks = cut(&big, 0);
        assert!(chunks.len() >= 4, "{}", chunks.len());
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 100);
        for c in &chunks {
            let json = serde_json::to_vec(&json!({"success": c})).unwrap();
            assert!(json.len() <= TXN_BYTES + 4096, "{}", json.len());
        }
        assert!(!fits_one(&big[..30], 4));
    }
}
