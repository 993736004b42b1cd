//! The state journal used during apply: every mutation is applied to the
//! in-memory state and made durable before the caller continues. Concurrent
//! mutations are committed together (group commit), so hundreds of parallel
//! operations share one fsync instead of queueing for it. The first write of
//! a run is a full snapshot; later ones append the changed resources to the
//! store's journal file, compacted into a new snapshot when the journal has
//! grown as large as the snapshot and when the apply ends. The writer keeps
//! each resource encoded from the batch that last changed it, so those
//! snapshots copy bytes ([`codec::EncodedResources`]).
//!
//! The fsyncs run on a thread of their own: while the disk makes one batch
//! durable, the writer already appends the next, and every batch waiting
//! when the disk becomes free shares the next fsync. No commit is
//! acknowledged before it is durable, so only the last line of the journal
//! can ever be torn.
//!
//! A backend decides how a batch becomes durable ([`Durability`]): the file
//! backend hands back its journal to sync; etcd sends the batch as a
//! transaction and hands back the wait for its answer (a few in flight, see
//! `state::etcd`), after gathering the changes of a short `linger` into one.

use std::sync::{Arc, RwLock};

use tokio::sync::oneshot;

use super::backend::Durability;
use super::codec::{self, JournalRecord};
use super::{State, StateStore};
use crate::resource::{Address, ResourceKind, Spec};

type Mutation = Box<dyn FnOnce(&mut State) + Send>;

struct Msg {
    /// The one resource the mutation changes (plus documents and sequence).
    address: Address,
    mutation: Mutation,
    ack: oneshot::Sender<Result<(), String>>,
}

#[derive(Clone)]
pub(crate) struct Journal {
    state: Arc<RwLock<State>>,
    /// `None` closes the journal (see [`Journal::close`]).
    tx: std::sync::mpsc::Sender<Option<Msg>>,
}

impl Journal {
    /// Start the writer thread. A state without lineage gets one at its first write.
    pub(crate) fn start(
        mut state: State,
        mut store: StateStore,
    ) -> (Journal, std::thread::JoinHandle<()>) {
        // The checksum is recomputed on every write; an old one would only
        // force a copy of the whole state before each encode.
        state.checksum = None;
        let state = Arc::new(RwLock::new(state));
        let (tx, rx) = std::sync::mpsc::channel::<Option<Msg>>();
        let shared = state.clone();
        let handle = std::thread::Builder::new()
            .name("capi-state-writer".into())
            .spawn(move || {
                // fsyncs run on their own thread, so a result waiting for
                // the disk never holds up the next batch's write.
                let (sync_tx, sync_rx) = std::sync::mpsc::channel::<SyncRequest>();
                let syncer = std::thread::Builder::new()
                    .name("capi-state-sync".into())
                    .spawn(move || sync_loop(sync_rx))
                    .expect("spawn the state syncer");
                let mut generation = 0u64;
                let mut snapshotted = false;
                let mut base_serial = 0;
                // A batch changed a bootstrap resource since the last
                // collection of unused documents.
                let mut orphans = false;
                // The resources as a snapshot encodes them (see there).
                let mut encoded = codec::EncodedResources::default();
                let linger = store.linger();
                let max_batch = store.max_batch().max(1);
                while let Ok(Some(first)) = rx.recv() {
                    let (batch, closed) = gather(&rx, first, linger, max_batch);
                    let (write, acks, touched) = {
                        let mut st = shared.write().unwrap();
                        let mut acks = Vec::with_capacity(batch.len());
                        let mut touched = Vec::with_capacity(batch.len());
                        for m in batch {
                            (m.mutation)(&mut st);
                            acks.push(m.ack);
                            touched.push(m.address);
                        }
                        if st.lineage.is_empty() {
                            st.lineage = uuid::Uuid::new_v4().to_string();
                        }
                        st.serial += 1;
                        st.capi_version = env!("CARGO_PKG_VERSION").to_string();
                        // Only a changed bootstrap resource can orphan a
                        // document. Orphans are dropped before the state is
                        // written whole (a snapshot, the final fold), not
                        // after every batch: that walks every resource, and
                        // made a 100,000-machine apply quadratic. A record
                        // carries only the documents its resources use.
                        orphans |= touched.iter().any(|a| a.kind() == ResourceKind::Bootstrap);
                        let snapshot = store.snapshot_due(snapshotted);
                        if snapshot && std::mem::take(&mut orphans) {
                            st.gc_documents();
                        }
                        // Encoded under a read lock: steps reading the
                        // state (every machine create does) go on while a
                        // large snapshot is encoded. Only this thread
                        // changes the state, so it is the one just changed.
                        drop(st);
                        let st = shared.read().unwrap();
                        touched.sort();
                        touched.dedup();
                        let write = if snapshot {
                            base_serial = st.serial;
                            encoded.changed(&st, &touched);
                            touched.clear();
                            Write::Snapshot(st.lineage.clone(), encoded.encode(&st))
                        } else {
                            Write::Record(st.lineage.clone(), record(&st, &touched))
                        };
                        (write, acks, touched)
                    };
                    match write {
                        Write::Snapshot(lineage, bytes) => {
                            // Written and fsynced in place.
                            generation += 1;
                            let result = store.write_bytes(&bytes).map_err(|e| e.to_string());
                            snapshotted |= result.is_ok();
                            for ack in acks {
                                let _ = ack.send(result.clone());
                            }
                            // The next journal is created while the steps
                            // acknowledged go on, not in the next commit.
                            if result.is_ok() && !closed {
                                store.prepare_append(&lineage, base_serial);
                            }
                        }
                        Write::Record(lineage, r) => {
                            // Appended here; acknowledged by the syncer when
                            // the backend hands back a file to make durable,
                            // at once when its write was already durable.
                            match store.append(&lineage, base_serial, &r) {
                                Ok(Durability::Sync(file)) => {
                                    let _ = sync_tx.send(SyncRequest {
                                        durable: Durable::File(file),
                                        generation,
                                        acks,
                                    });
                                }
                                Ok(Durability::Wait(wait)) => {
                                    let _ = sync_tx.send(SyncRequest {
                                        durable: Durable::Wait(wait),
                                        generation,
                                        acks,
                                    });
                                }
                                Ok(Durability::Now) => {
                                    for ack in acks {
                                        let _ = ack.send(Ok(()));
                                    }
                                }
                                Err(e) => {
                                    let e = e.to_string();
                                    for ack in acks {
                                        let _ = ack.send(Err(e.clone()));
                                    }
                                }
                            }
                        }
                    }
                    // Once the batch is on its way to the disk; only for a
                    // backend that writes snapshots (etcd never does).
                    if snapshotted && !touched.is_empty() {
                        encoded.changed(&shared.read().unwrap(), &touched);
                    }
                    if closed {
                        break;
                    }
                }
                drop(sync_tx);
                let _ = syncer.join();
                // The apply is over: fold the journal into the snapshot.
                let mut st = shared.write().unwrap();
                if orphans {
                    st.gc_documents();
                }
                if store.fold_due() {
                    let _ = store.fold(&st, &mut |st| encoded.encode(st));
                } else {
                    store.finish_unfolded();
                }
            })
            .expect("spawn the state writer");
        (Journal { state, tx }, handle)
    }

    /// Apply a mutation and wait until it is durable on disk.
    /// `f` may change the resource at `address`, the documents and the
    /// sequence counter, nothing else: the batch's record and the writer's
    /// kept encodings (see [`codec::EncodedResources`]) hold only the
    /// resources at the addresses committed.
    pub(crate) async fn commit(
        &self,
        address: &Address,
        f: impl FnOnce(&mut State) + Send + 'static,
    ) -> Result<(), String> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Some(Msg {
                address: address.clone(),
                mutation: Box::new(f),
                ack,
            }))
            .map_err(|_| "the state writer stopped".to_string())?;
        rx.await
            .map_err(|_| "the state writer stopped".to_string())?
    }

    /// Read the current in-memory state.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap())
    }

    /// Stop: the writer makes what was committed durable, folds the
    /// journal into the snapshot and ends, even while other clones of the
    /// handle live on (their later commits fail); the state, to take with
    /// [`Journal::into_state`] once the writer has ended and every clone
    /// is gone.
    pub(crate) fn close(self) -> Arc<RwLock<State>> {
        let _ = self.tx.send(None);
        self.state
    }

    /// The final state of a closed journal: moved out when the writer has
    /// ended (no copy of a large state at the end of an apply), else copied.
    pub(crate) fn into_state(shared: Arc<RwLock<State>>) -> State {
        match Arc::try_unwrap(shared) {
            Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
            Err(shared) => shared.read().unwrap().clone(),
        }
    }
}

enum Durable {
    File(Arc<std::fs::File>),
    /// A write in flight (etcd): durable when this returns `Ok`.
    Wait(Box<dyn FnOnce() -> Result<(), String> + Send>),
}

struct SyncRequest {
    durable: Durable,
    /// Which journal file (a snapshot starts a new one).
    generation: u64,
    acks: Vec<oneshot::Sender<Result<(), String>>>,
}

/// A batch: `first`, what joins it within `linger`, then whatever is
/// already queued, up to `max_batch` changes (the rest stays queued for the
/// next batch); and whether the journal was closed meanwhile.
fn gather(
    rx: &std::sync::mpsc::Receiver<Option<Msg>>,
    first: Msg,
    linger: std::time::Duration,
    max_batch: usize,
) -> (Vec<Msg>, bool) {
    let mut batch = vec![first];
    let mut closed = false;
    if !linger.is_zero() {
        let until = std::time::Instant::now() + linger;
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            if batch.len() >= max_batch {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(Some(m)) => batch.push(m),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    while batch.len() < max_batch && !closed {
        match rx.try_recv() {
            Ok(Some(m)) => batch.push(m),
            Ok(None) => closed = true,
            Err(_) => break,
        }
    }
    (batch, closed)
}

/// Make appended results durable: every request waiting when the disk
/// becomes free shares one fdatasync per journal file; writes in flight are
/// waited for one by one, in order.
fn sync_loop(rx: std::sync::mpsc::Receiver<SyncRequest>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while let Ok(r) = rx.try_recv() {
            group.push(r);
        }
        let mut files = Vec::with_capacity(group.len());
        for r in group {
            match r.durable {
                Durable::Wait(wait) => {
                    let result = wait();
                    for ack in r.acks {
                        let _ = ack.send(result.clone());
                    }
                }
                Durable::File(f) => files.push((f, r.generation, r.acks)),
            }
        }
        let mut group = files;
        while !group.is_empty() {
            let generation = group[0].1;
            let (same, rest): (Vec<_>, Vec<_>) = group.into_iter().partition(|r| r.1 == generation);
            group = rest;
            let result = same
                .last()
                .expect("non-empty")
                .0
                .sync_data()
                .map_err(|e| format!("making the state journal durable: {e}"));
            for (_, _, acks) in same {
                for ack in acks {
                    let _ = ack.send(result.clone());
                }
            }
        }
    }
}

enum Write {
    /// The state's lineage and the snapshot's bytes.
    Snapshot(String, Vec<u8>),
    Record(String, JournalRecord),
}

/// The journal record of a batch: the touched resources as they are now (or
/// their removal), with the bootstrap documents they refer to.
fn record(st: &State, touched: &[Address]) -> JournalRecord {
    let mut r = JournalRecord {
        serial: st.serial,
        next_sequence: st.next_sequence,
        ..Default::default()
    };
    for a in touched {
        match st.get(a) {
            Some(res) => {
                if res.kind == ResourceKind::Bootstrap {
                    if let Spec::Bootstrap(b) = &res.attributes {
                        if let Some(doc) = st.documents.get(b.sha256.as_str()) {
                            r.documents.insert(b.sha256.to_string(), doc.clone());
                        }
                    }
                }
                r.upsert.push(res.clone());
            }
            None => r.remove.push(a.clone()),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::backend::{HeldLock, StateBackend};
    use super::super::lock::{LockError, LockInfo};
    use super::super::store::StateError;
    use super::*;
    use std::sync::Mutex;

    /// Records the size of every batch appended, and the documents each
    /// carries; durable at once.
    #[derive(Debug, Default)]
    struct Counting {
        batches: Arc<Mutex<Vec<usize>>>,
        documents: Arc<Mutex<Vec<Vec<String>>>>,
    }

    impl StateBackend for Counting {
        fn load(&self) -> Result<Option<State>, StateError> {
            Ok(None)
        }
        fn write_bytes(&mut self, _bytes: &[u8]) -> Result<(), StateError> {
            Ok(())
        }
        fn snapshot_due(&self, _snapshotted: bool) -> bool {
            false
        }
        fn append(
            &mut self,
            _lineage: &str,
            _base_serial: u64,
            record: &JournalRecord,
        ) -> Result<Durability, StateError> {
            let n = record.upsert.len() + record.remove.len();
            self.batches.lock().unwrap().push(n);
            let docs = record.documents.keys().cloned().collect();
            self.documents.lock().unwrap().push(docs);
            Ok(Durability::Now)
        }
        fn fold_due(&self) -> bool {
            false
        }
        fn linger(&self) -> Duration {
            Duration::from_millis(5)
        }
        fn max_batch(&self) -> usize {
            3
        }
        fn lock(&mut self, _op: &str, _t: Duration) -> Result<Box<dyn HeldLock>, LockError> {
            unreachable!("the journal does not lock")
        }
        fn force_unlock(&self, _id: &str) -> Result<LockInfo, LockError> {
            unreachable!("the journal does not unlock")
        }
        fn set_migrated(&mut self, _s: &State, _to: Option<&str>) -> Result<(), StateError> {
            Ok(())
        }
    }

    /// Ten changes sent at once to a backend that takes three per batch:
    /// every change is committed and acknowledged, no batch holds more
    /// than three, and the linger still gathers full batches.
    #[tokio::test]
    async fn a_batch_holds_at_most_what_the_backend_takes() {
        let backend = Counting::default();
        let batches = backend.batches.clone();
        let (journal, writer) = Journal::start(
            State::new(String::new()),
            StateStore::with_backend(Box::new(backend)),
        );
        let commits = (0..10).map(|i| {
            let journal = journal.clone();
            async move {
                let a = Address::parse(&format!("t/machine/m-{i}")).unwrap();
                journal
                    .commit(&a, |st| {
                        st.take_sequence();
                    })
                    .await
            }
        });
        for r in futures::future::join_all(commits).await {
            r.expect("committed");
        }
        drop(journal);
        writer.join().unwrap();
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 10, "{batches:?}");
        assert!(batches.iter().all(|&n| n <= 3), "{batches:?}");
        assert!(batches.contains(&3), "{batches:?}");
    }

    /// Closing one handle ends the writer while a clone lives on (the
    /// apply's step context holds one while its providers close): what was
    /// committed is in the final state, the writer ends, and a commit
    /// through the clone afterwards fails instead of waiting.
    #[tokio::test]
    async fn closing_ends_the_writer_while_a_clone_lives_on() {
        let (journal, writer) = Journal::start(
            State::new(String::new()),
            StateStore::with_backend(Box::new(Counting::default())),
        );
        let clone = journal.clone();
        let a = Address::parse("t/machine/m-0").unwrap();
        journal
            .commit(&a, |st| {
                st.take_sequence();
            })
            .await
            .expect("committed");
        let shared = journal.close();
        // (A writer that waited for every clone would never end: the
        // bound only turns that hang into a failure.)
        tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(move || writer.join()),
        )
        .await
        .expect("the writer ended while a clone lived on")
        .unwrap()
        .expect("the writer did not panic");
        let late = clone.commit(&a, |st| {
            st.take_sequence();
        });
        assert_eq!(late.await, Err("the state writer stopped".to_string()));
        drop(clone);
        let st = Journal::into_state(shared);
        assert_eq!(st.serial, 1, "one batch was written");
    }

    /// A ready resource of the local provider, of the kind its address says.
    fn local_resource(
        address: Address,
        attributes: Spec,
        observed: crate::resource::Observed,
        sequence: u64,
    ) -> crate::state::Resource {
        crate::state::Resource {
            kind: address.kind(),
            address,
            provider: crate::resource::ProviderKind::Local,
            status: crate::state::Status::Ready,
            attributes,
            observed,
            sensitive: Default::default(),
            dependencies: vec![],
            sequence,
            error: None,
        }
    }

    /// Snapshots written from kept encodings (mid-run, then the final fold)
    /// are the bytes of a fresh encode of the state, through upserts,
    /// removals and resources changed again after a snapshot.
    #[tokio::test]
    async fn snapshots_from_kept_encodings_are_fresh_encodes() {
        use crate::resource::PkiSpec;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let (journal, writer) = Journal::start(State::new(String::new()), StateStore::new(&path));
        // ~1.5 KB a record: 400 commits pass the 256 KiB after which the
        // journal is folded into a snapshot mid-run.
        let note = "x".repeat(1500);
        for i in 0..400u32 {
            let a = Address::parse(&format!("c{}/pki", i % 37)).unwrap();
            let (address, note) = (a.clone(), note.clone());
            journal
                .commit(&a, move |st| {
                    if i % 11 == 0 {
                        st.remove(&address);
                        return;
                    }
                    let mut observed = crate::resource::Observed::new();
                    observed.insert("note".into(), serde_json::json!(format!("{i} {note}")));
                    let pki = Spec::Pki(PkiSpec {
                        encryption_algorithm: "ECDSA-P256".into(),
                        ca_validity_days: i,
                        external_etcd: false,
                    });
                    st.upsert(local_resource(address, pki, observed, i.into()));
                })
                .await
                .expect("committed");
        }
        let shared = journal.close();
        writer.join().unwrap();
        let state = Journal::into_state(shared);
        assert!(state.serial > 1 && state.resources.len() > 20);
        assert!(
            !path.with_extension("json.journal").exists(),
            "folded at the end"
        );
        assert_eq!(
            String::from_utf8(std::fs::read(&path).unwrap()).unwrap(),
            String::from_utf8(codec::encode(&state)).unwrap()
        );
    }

    /// A bootstrap resource whose document changes: each record carries
    /// only the document in use, and the final state holds no orphan.
    #[tokio::test]
    async fn orphaned_documents_are_not_recorded_and_are_gone_at_the_end() {
        use crate::resource::{BootstrapRole, BootstrapSpec};
        let backend = Counting::default();
        let documents = backend.documents.clone();
        let (journal, writer) = Journal::start(
            State::new(String::new()),
            StateStore::with_backend(Box::new(backend)),
        );
        let a = Address::parse("t/bootstrap/m-0").unwrap();
        for sha in ["aaa", "bbb"] {
            let address = a.clone();
            journal
                .commit(&a, move |st| {
                    st.documents.insert(sha.into(), format!("document {sha}"));
                    let bootstrap = Spec::Bootstrap(BootstrapSpec {
                        machine: "m-0".into(),
                        role: BootstrapRole::Init,
                        kubeadm_api: "kubeadm.k8s.io/v1beta4".into(),
                        sha256: sha.into(),
                    });
                    st.upsert(local_resource(address, bootstrap, Default::default(), 0));
                })
                .await
                .expect("committed");
        }
        let shared = journal.close();
        writer.join().unwrap();
        let state = Journal::into_state(shared);
        assert_eq!(
            state.documents.keys().collect::<Vec<_>>(),
            ["bbb"],
            "the first document is an orphan"
        );
        assert_eq!(
            documents.lock().unwrap().clone(),
            [vec!["aaa".to_string()], vec!["bbb".to_string()]]
        );
    }
}
