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
    /// comparisons); the revision it was written at.
    fn txn(&self, ops: &[Op], extra: Option<Value>) -> Result<i64, StateError> {
        let mut compare: Vec<Value> = self.fence.iter().map(Fence::compare).collect();
        compare.extend(extra);
        let r = self
            .client
            .call("/v3/kv/txn", json!({"compare": compare, "success": ops}))
            .map_err(|e| self.err(e))?;
        if r.get("succeeded").and_then(Value::as_bool) != Some(true) {
            let reason = FENCED.to_string();
            if let Some(f) = &self.fence {
                f.mark_lost(reason.clone());
            }
            return Err(StateError::LockLost {
                path: self.location.clone(),
                reason,
            });
        }
        Ok(int(&r["header"], "revision"))
    }

    /// Commit `ops` (puts and deletes of `r/` and `d/` keys) with `meta`:
    /// one transaction when they fit, else atomically through a pending
    /// record (`record()`: the changes `ops` make, replayable). An unfinished
    /// commit found at load is finished first, unless `supersede` (a whole
    /// state written over it).
    pub(super) fn commit(
        &self,
        ops: Vec<Op>,
        meta: Meta,
        record: impl FnOnce() -> JournalRecord,
        supersede: bool,
    ) -> Result<(), StateError> {
        self.check_fence()?;
        let unfinished = self.unfinished.lock().unwrap().take();
        if let Some((mut m, rec)) = unfinished.filter(|_| !supersede) {
            m.pending = None;
            let ops = self.record_ops(&rec);
            self.commit_now(ops, m, || rec, true)?;
        }
        self.commit_now(ops, meta, record, supersede)
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

    fn commit_in_order(
        &self,
        mut ops: Vec<Op>,
        mut meta: Meta,
        record: impl FnOnce() -> JournalRecord,
        clear_parts: bool,
    ) -> Result<(), StateError> {
        let parts_dir = self.key("p/");
        let clear = json!({"request_delete_range": {"key": b64(&parts_dir), "range_end": b64(&prefix_end(&parts_dir))}});
        if ops.len() + 3 <= MAX_OPS {
            ops.extend(self.meta_ops(&meta));
            if clear_parts {
                ops.push(clear);
            }
            self.txn(&ops, None)?;
        } else {
            let rec = record();
            let bytes = seal(&serde_json::to_vec(&rec).expect("serialises"));
            let dir = format!("p/{}/", meta.serial);
            let mut n = 0;
            for (i, part) in bytes.chunks(PART).enumerate() {
                self.txn(&[put(&self.key(&snapshot::part_key(&dir, i)), part)], None)?;
                n += 1;
            }
            meta.pending = Some(Pending {
                serial: meta.serial,
                parts: n,
                sha256: snapshot::sha_hex(&bytes),
            });
            // The commit point: from here a load sees the whole commit.
            self.txn(&self.meta_ops(&meta), None)?;
            // The changes touch distinct keys: sent on a few connections
            // at once, all answered before the last transaction.
            let chunks: Vec<&[Op]> = ops.chunks(MAX_OPS).collect();
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
            })?;
            meta.pending = None;
            let mut last = self.meta_ops(&meta).to_vec();
            last.push(clear);
            self.txn(&last, None)?;
        }
        Ok(())
    }

    /// Wait until every pipelined batch is answered.
    pub(super) fn drain(&self) {
        let (n, cv) = &*self.in_flight;
        let mut n = n.lock().unwrap();
        while *n > 0 {
            n = cv.wait(n).unwrap();
        }
    }

    /// Send one small batch of the apply without waiting for the batches
    /// before it (at most [`PIPELINE`] in flight). Batches in flight never
    /// touch the same resource (an operation commits again only once its
    /// previous commit is answered), so their order does not matter for
    /// the resources; `meta` is written only if `serial` is still below
    /// this batch's, so it never goes back. Returns the wait for the answer.
    pub(super) fn send_pipelined(
        &self,
        mut ops: Vec<Op>,
        meta: &Meta,
    ) -> Box<dyn FnOnce() -> Result<(), String> + Send> {
        let mine = b64(format!("{:020}", meta.serial).as_bytes());
        let [meta_put, serial_put] = self.meta_ops(meta);
        ops.push(json!({"request_txn": {
            "compare": [{"key": b64(&self.key("serial")), "target": "VALUE", "result": "LESS", "value": mine}],
            "success": [meta_put, serial_put],
        }}));
        {
            let (n, cv) = &*self.in_flight;
            let mut n = n.lock().unwrap();
            while *n >= PIPELINE {
                n = cv.wait(n).unwrap();
            }
            *n += 1;
        }
        self.snap_stale.store(true, Ordering::Relaxed);
        let body = json!({"compare": self.fence.iter().map(Fence::compare).collect::<Vec<_>>(), "success": ops});
        let (client, fence, failed, in_flight) = (
            self.client.clone(),
            self.fence.clone(),
            self.failed.clone(),
            self.in_flight.clone(),
        );
        let location = self.location.clone();
        let worker = std::thread::spawn(move || {
            let result = match client.call("/v3/kv/txn", body) {
                Ok(r) if r.get("succeeded").and_then(Value::as_bool) == Some(true) => Ok(()),
                Ok(_) => {
                    let why = FENCED.to_string();
                    if let Some(f) = &fence {
                        f.mark_lost(why.clone());
                    }
                    Err(StateError::LockLost {
                        path: location,
                        reason: why,
                    }
                    .to_string())
                }
                Err(e) => Err(StateError::Backend {
                    location,
                    reason: e.to_string(),
                }
                .to_string()),
            };
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            let (n, cv) = &*in_flight;
            *n.lock().unwrap() -= 1;
            cv.notify_all();
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
