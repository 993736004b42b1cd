//! The etcd state lock: the key `PREFIX/lock`, created only if absent
//! (`create_revision == 0`) under a lease of its own, holding the holder's
//! identity. A background thread renews the lease (every third of its TTL);
//! a holder that dies stops renewing and etcd removes the key when the lease
//! expires, so no `force-unlock` is needed after a crash.
//!
//! The key's `create_revision` is the fencing token: every write the store
//! makes is a transaction that also compares it, so a holder whose lease
//! expired (paused, partitioned) cannot write after another took the lock.
//! A renewal that fails marks the lock lost; the store then refuses writes
//! and the executor starts no new operation.
//!
//! Waiting (`--lock-timeout`) watches the key for its deletion instead of
//! polling; each watch is bounded, so a missed event costs at most a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::{b64, int, unb64, EtcdClient};
use crate::state::backend::HeldLock;
use crate::state::lock::{new_info, LockError, LockInfo};

/// What the store compares each write against.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    pub(crate) key: Vec<u8>,
    pub(crate) create_revision: i64,
    pub(crate) lost: Arc<Mutex<Option<String>>>,
}

impl Fence {
    pub(crate) fn compare(&self) -> Value {
        json!({"key": b64(&self.key), "target": "CREATE", "result": "EQUAL",
               "create_revision": self.create_revision.to_string()})
    }

    pub(crate) fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap().clone()
    }

    pub(crate) fn mark_lost(&self, why: String) {
        let mut l = self.lost.lock().unwrap();
        if l.is_none() {
            *l = Some(why);
        }
    }
}

#[derive(Debug)]
pub(crate) struct EtcdLock {
    client: Arc<EtcdClient>,
    info: LockInfo,
    lease: i64,
    fence: Fence,
    stop: Arc<AtomicBool>,
    keeper: Option<std::thread::JoinHandle<()>>,
}

fn backend(location: &str, e: impl std::fmt::Display) -> LockError {
    LockError::Backend {
        path: location.to_string(),
        reason: e.to_string(),
    }
}

/// The holder recorded in the lock key's value, and the key's mod revision.
fn holder(resp: &Value) -> (Option<LockInfo>, i64) {
    let kv = resp
        .get("responses")
        .and_then(|r| r.get(0))
        .and_then(|r| r.get("response_range"))
        .and_then(|r| r.get("kvs"))
        .and_then(|k| k.get(0));
    match kv {
        Some(kv) => (
            serde_json::from_slice(&unb64(&kv["value"])).ok(),
            int(kv, "mod_revision"),
        ),
        None => (None, 0),
    }
}

impl EtcdLock {
    /// Take the lock, waiting up to `timeout` for its holder to release it.
    pub(crate) fn acquire(
        client: Arc<EtcdClient>,
        key: Vec<u8>,
        location: &str,
        operation: &str,
        (timeout, ttl): (Duration, Duration),
    ) -> Result<EtcdLock, LockError> {
        let info = new_info(location, operation);
        let ttl_s = ttl.as_secs().max(1) as i64;
        let mut lease = grant(&client, ttl_s).map_err(|e| backend(location, e))?;
        let value = serde_json::to_vec(&info).expect("serialises");
        let start = Instant::now();
        let revoke = |client: &EtcdClient, lease: i64| {
            let _ = client.call("/v3/lease/revoke", json!({"ID": lease.to_string()}));
        };
        let create_revision = loop {
            let txn = json!({
                "compare": [{"key": b64(&key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [{"request_put": {"key": b64(&key), "value": b64(&value), "lease": lease.to_string()}}],
                "failure": [{"request_range": {"key": b64(&key)}}],
            });
            let resp = match client.call("/v3/kv/txn", txn) {
                Ok(r) => r,
                Err(e) => {
                    revoke(&client, lease);
                    return Err(backend(location, e));
                }
            };
            if resp.get("succeeded").and_then(Value::as_bool) == Some(true) {
                break int(&resp["header"], "revision");
            }
            let (held, mod_rev) = holder(&resp);
            if held.as_ref().is_some_and(|h| h.id == info.id) {
                // Our own create, resent after a lost answer.
                break mod_rev;
            }
            if start.elapsed() >= timeout {
                revoke(&client, lease);
                return Err(if timeout.is_zero() {
                    LockError::Held {
                        path: location.to_string(),
                        info: held,
                    }
                } else {
                    LockError::Timeout {
                        path: location.to_string(),
                        waited: start.elapsed(),
                        info: held,
                    }
                });
            }
            let left = timeout.saturating_sub(start.elapsed());
            // The key existed at the failed transaction's revision: a
            // deletion can only come after it (and a watch from there is
            // less likely to start below a compaction than one from the
            // holder's own write).
            let seen_at = int(&resp["header"], "revision").max(mod_rev);
            client.wait_deleted(&key, seen_at + 1, left.min(Duration::from_secs(1)));
            // Our lease must outlive the wait: renew it, or take a new one.
            let alive = client
                .call("/v3/lease/keepalive", json!({"ID": lease.to_string()}))
                .map(|v| int(v.get("result").unwrap_or(&v), "TTL") > 0)
                .unwrap_or(false);
            if !alive {
                revoke(&client, lease);
                lease = grant(&client, ttl_s).map_err(|e| backend(location, e))?;
            }
        };
        let fence = Fence {
            key,
            create_revision,
            lost: Arc::new(Mutex::new(None)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let keeper = {
            let (client, fence, stop) = (client.clone(), fence.clone(), stop.clone());
            std::thread::Builder::new()
                .name("capi-etcd-lease".into())
                .spawn(move || keep_alive(&client, lease, ttl, &fence, &stop))
                .map_err(|e| backend(location, e))?
        };
        Ok(EtcdLock {
            client,
            info,
            lease,
            fence,
            stop,
            keeper: Some(keeper),
        })
    }

    pub(crate) fn fence(&self) -> Fence {
        self.fence.clone()
    }
}

fn grant(client: &EtcdClient, ttl_s: i64) -> Result<i64, String> {
    let grant = client
        .call("/v3/lease/grant", json!({"TTL": ttl_s.to_string()}))
        .map_err(|e| e.to_string())?;
    match int(&grant, "ID") {
        0 => Err(format!("no lease granted: {grant}")),
        id => Ok(id),
    }
}

/// Renew the lease every third of its TTL until stopped. A lease etcd no
/// longer knows, or renewals failing until the TTL has passed since the last
/// good one, loses the lock.
fn keep_alive(client: &EtcdClient, lease: i64, ttl: Duration, fence: &Fence, stop: &AtomicBool) {
    let mut renewed = Instant::now();
    let period = ttl / 3;
    while !stop.load(Ordering::Relaxed) {
        let mut slept = Duration::ZERO;
        while slept < period && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            slept += Duration::from_millis(50);
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // A process frozen past its TTL (SIGSTOP) finds it here on waking.
        if renewed.elapsed() >= ttl {
            fence.mark_lost(format!(
                "the lock's lease was not renewed for {:?} (longer than its TTL of {:?}: this process was paused or cut off), so another capi may hold the lock now",
                renewed.elapsed(),
                ttl
            ));
            return;
        }
        match client.call("/v3/lease/keepalive", json!({"ID": lease.to_string()})) {
            Ok(v) => {
                let result = v.get("result").unwrap_or(&v);
                if int(result, "TTL") <= 0 {
                    fence.mark_lost(
                        "the lock's lease expired in etcd (not renewed in time), so another capi may hold the lock now".into(),
                    );
                    return;
                }
                renewed = Instant::now();
            }
            Err(e) => {
                if renewed.elapsed() >= ttl {
                    fence.mark_lost(format!(
                        "the lock's lease could not be renewed within its TTL ({e})"
                    ));
                    return;
                }
            }
        }
    }
}

impl HeldLock for EtcdLock {
    fn info(&self) -> &LockInfo {
        &self.info
    }
    fn lost(&self) -> Option<String> {
        self.fence.lost()
    }
}

impl Drop for EtcdLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.keeper.take() {
            let _ = k.join();
        }
        // Revoking the lease deletes the key (if it is still ours).
        let _ = self
            .client
            .call("/v3/lease/revoke", json!({"ID": self.lease.to_string()}));
    }
}

/// Who holds the lock at `key`, and the remaining TTL of their lease.
pub(crate) fn current_holder(
    client: &EtcdClient,
    key: &[u8],
    location: &str,
) -> Result<Option<(LockInfo, i64)>, LockError> {
    let r = client
        .call("/v3/kv/range", json!({"key": b64(key)}))
        .map_err(|e| backend(location, e))?;
    let Some(kv) = r.get("kvs").and_then(|k| k.get(0)) else {
        return Ok(None);
    };
    let info: LockInfo = serde_json::from_slice(&unb64(&kv["value"]))
        .map_err(|e| backend(location, format!("the lock key holds no lock record ({e})")))?;
    let lease = int(kv, "lease");
    let ttl = client
        .call("/v3/lease/timetolive", json!({"ID": lease.to_string()}))
        .map(|v| int(&v, "TTL"))
        .unwrap_or(0);
    Ok(Some((info, ttl)))
}
