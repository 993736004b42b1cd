//! The state journal used during apply: every mutation is applied to the
//! in-memory state and made durable before the caller continues (or, with
//! [`Journal::commit_applied`], the caller continues once it is applied and
//! queued, and waits for its durability after). Concurrent
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
//! The first write or sync that fails stops the journal: every later commit
//! fails with it and nothing more is appended ([`Failure`]). After a failed
//! fsync the file's tail is unknown (Linux may drop the pages it could not
//! write and report the next fsync as a success), so no later commit may be
//! acknowledged as durable. The apply's end still tries one snapshot of the
//! whole state, a new file made durable on its own.
//!
//! A backend decides how a batch becomes durable ([`Durability`]): the file
//! backend hands back its journal to sync; etcd sends the batch as a
//! transaction and hands back the wait for its answer (a few in flight, see
//! `state::etcd`), after gathering the changes of a short `linger` into one.

use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::oneshot;

use super::backend::Durability;
use super::codec::{self, JournalRecord};
use super::{State, StateStore};
use crate::resource::{Address, ResourceKind, Spec};

type Mutation = Box<dyn FnOnce(&mut State) + Send>;

type Ack = oneshot::Sender<Result<(), String>>;

struct Msg {
    /// The one resource the mutation changes (plus documents and sequence).
    address: Address,
    mutation: Mutation,
    ack: Ack,
    /// Told once the mutation is applied to the in-memory state, before
    /// the batch is written ([`Journal::commit_applied`]).
    applied: Option<oneshot::Sender<()>>,
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
        store: StateStore,
    ) -> (Journal, std::thread::JoinHandle<()>) {
        // The checksum is recomputed on every write; an old one would only
        // force a copy of the whole state before each encode.
        state.checksum = None;
        let state = Arc::new(RwLock::new(state));
        let (tx, rx) = std::sync::mpsc::channel::<Option<Msg>>();
        let shared = state.clone();
        let handle = std::thread::Builder::new()
            .name("capi-state-writer".into())
            .spawn(move || Writer::new(shared, store).run(&rx))
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
                applied: None,
            }))
            .map_err(|_| "the state writer stopped".to_string())?;
        rx.await
            .map_err(|_| "the state writer stopped".to_string())?
    }

    /// Apply a mutation; return once it is applied to the in-memory state
    /// and queued behind every commit before it, with the wait for its
    /// durability. A commit made after this returns is written after this
    /// one, and is durable only if this one is (see the module's header on
    /// failures): so a step that calls a provider only once its own intent
    /// is durable may start as soon as what it depends on is queued.
    pub(crate) async fn commit_applied(
        &self,
        address: &Address,
        f: impl FnOnce(&mut State) + Send + 'static,
    ) -> Result<Pending, String> {
        let stopped = || "the state writer stopped".to_string();
        let (ack, durable) = oneshot::channel();
        let (applied, is_applied) = oneshot::channel();
        self.tx
            .send(Some(Msg {
                address: address.clone(),
                mutation: Box::new(f),
                ack,
                applied: Some(applied),
            }))
            .map_err(|_| stopped())?;
        is_applied.await.map_err(|_| stopped())?;
        Ok(Pending(durable))
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

/// A commit applied and queued ([`Journal::commit_applied`]): wait for it
/// to be durable.
pub(crate) struct Pending(oneshot::Receiver<Result<(), String>>);

impl Pending {
    pub(crate) async fn durable(self) -> Result<(), String> {
        self.0
            .await
            .map_err(|_| "the state writer stopped".to_string())?
    }
}

/// The writer thread's side of the journal: it applies each batch's
/// mutations, writes the batch (a record, or a snapshot when one is due) and
/// hands what must become durable to the syncer thread.
struct Writer {
    shared: Arc<RwLock<State>>,
    store: StateStore,
    /// fsyncs run on their own thread, so a result waiting for the disk
    /// never holds up the next batch's write.
    sync_tx: std::sync::mpsc::Sender<SyncRequest>,
    syncer: std::thread::JoinHandle<()>,
    failure: Failure,
    /// Which journal file the records go to (a snapshot starts a new one).
    generation: u64,
    /// A snapshot was written in this run.
    snapshotted: bool,
    /// The serial of the last snapshot written.
    base_serial: u64,
    /// A batch changed a bootstrap resource since the last collection of
    /// unused documents.
    orphans: bool,
    /// The resources as a snapshot encodes them (see there).
    encoded: codec::EncodedResources,
}

impl Writer {
    fn new(shared: Arc<RwLock<State>>, store: StateStore) -> Writer {
        let (sync_tx, sync_rx) = std::sync::mpsc::channel::<SyncRequest>();
        let failure = Failure::default();
        let syncer_failure = failure.clone();
        let syncer = std::thread::Builder::new()
            .name("capi-state-sync".into())
            .spawn(move || sync_loop(sync_rx, &syncer_failure))
            .expect("spawn the state syncer");
        Writer {
            shared,
            store,
            sync_tx,
            syncer,
            failure,
            generation: 0,
            snapshotted: false,
            base_serial: 0,
            orphans: false,
            encoded: codec::EncodedResources::default(),
        }
    }

    /// Write batches until the journal is closed, then fold.
    fn run(mut self, rx: &std::sync::mpsc::Receiver<Option<Msg>>) {
        let linger = self.store.linger();
        let max_batch = self.store.max_batch().max(1);
        while let Ok(Some(first)) = rx.recv() {
            let (batch, closed) = gather(rx, first, linger, max_batch);
            let (write, acks, touched) = self.apply(batch);
            self.write(write, acks, closed);
            // Once the batch is on its way to the disk; only for a backend
            // that writes snapshots (etcd never does).
            if self.snapshotted && !touched.is_empty() {
                self.encoded.changed(&self.shared.read().unwrap(), &touched);
            }
            if closed {
                break;
            }
        }
        self.finish();
    }

    /// Apply a batch's mutations; what to write for it, the acks to send
    /// and the resources it changed that a snapshot did not take in.
    fn apply(&mut self, batch: Vec<Msg>) -> (Write, Vec<Ack>, Vec<Address>) {
        let mut st = self.shared.write().unwrap();
        let mut acks = Vec::with_capacity(batch.len());
        let mut touched = Vec::with_capacity(batch.len());
        let mut applied = Vec::new();
        for m in batch {
            (m.mutation)(&mut st);
            acks.push(m.ack);
            touched.push(m.address);
            applied.extend(m.applied);
        }
        if st.lineage.is_empty() {
            st.lineage = uuid::Uuid::new_v4().to_string();
        }
        st.serial += 1;
        st.capi_version = env!("CARGO_PKG_VERSION").to_string();
        // Only a changed bootstrap resource can orphan a document. Orphans
        // are dropped before the state is written whole (a snapshot, the
        // final fold), not after every batch: that walks every resource,
        // and made a 100,000-machine apply quadratic. A record carries only
        // the documents its resources use.
        self.orphans |= touched.iter().any(|a| a.kind() == ResourceKind::Bootstrap);
        let refused = self.failure.refusal();
        let snapshot = refused.is_none() && self.store.snapshot_due(self.snapshotted);
        if snapshot && std::mem::take(&mut self.orphans) {
            st.gc_documents();
        }
        // Encoded under a read lock: steps reading the state (every
        // machine create does) go on while a large snapshot is encoded.
        // Only this thread changes the state, so it is the one just changed.
        drop(st);
        for a in applied {
            let _ = a.send(());
        }
        let st = self.shared.read().unwrap();
        touched.sort();
        touched.dedup();
        let write = if let Some(e) = refused {
            Write::Refused(e)
        } else if snapshot {
            self.base_serial = st.serial;
            self.encoded.changed(&st, &touched);
            touched.clear();
            Write::Snapshot(st.lineage.clone(), self.encoded.encode(&st))
        } else {
            Write::Record(st.lineage.clone(), record(&st, &touched))
        };
        (write, acks, touched)
    }

    /// Write a batch; acknowledge it now or hand it to the syncer.
    fn write(&mut self, write: Write, acks: Vec<Ack>, closed: bool) {
        let refuse = |acks: Vec<Ack>, e: &str| {
            for ack in acks {
                let _ = ack.send(Err(e.to_string()));
            }
        };
        match write {
            Write::Snapshot(lineage, bytes) => {
                // Written and fsynced in place.
                self.generation += 1;
                let result = self.store.write_bytes(&bytes).map_err(|e| e.to_string());
                self.snapshotted |= result.is_ok();
                if let Err(e) = &result {
                    self.failure.set(e);
                }
                for ack in acks {
                    let _ = ack.send(result.clone());
                }
                // The next journal is created while the steps acknowledged
                // go on, not in the next commit.
                if result.is_ok() && !closed {
                    self.store.prepare_append(&lineage, self.base_serial);
                }
            }
            // Appended here; acknowledged by the syncer when the backend
            // hands back a file to make durable or a write to wait for, at
            // once when its write was already durable.
            Write::Record(lineage, r) => match self.store.append(&lineage, self.base_serial, &r) {
                Ok(Durability::Sync(file)) => self.sync(Durable::File(file), acks),
                Ok(Durability::Wait(wait)) => self.sync(Durable::Wait(wait), acks),
                Ok(Durability::Now) => {
                    for ack in acks {
                        let _ = ack.send(Ok(()));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    self.failure.set(&e);
                    refuse(acks, &e);
                }
            },
            Write::Refused(e) => refuse(acks, &e),
        }
    }

    fn sync(&self, durable: Durable, acks: Vec<Ack>) {
        let _ = self.sync_tx.send(SyncRequest {
            durable,
            generation: self.generation,
            acks,
        });
    }

    /// The apply is over: once every batch is durable, fold the journal
    /// into the snapshot; after a failure, write the whole state to a new
    /// snapshot (what the journal holds past the failure is unknown).
    fn finish(self) {
        let Writer {
            shared,
            mut store,
            sync_tx,
            syncer,
            failure,
            orphans,
            mut encoded,
            ..
        } = self;
        drop(sync_tx);
        let _ = syncer.join();
        let mut st = shared.write().unwrap();
        if orphans {
            st.gc_documents();
        }
        if failure.0.get().is_some() || store.fold_due() {
            let _ = store.fold(&st, &mut |st| encoded.encode(st));
        } else {
            store.finish_unfolded();
        }
    }
}

/// The first failure to write or sync a commit, shared by the writer and
/// the syncer: once it is set, nothing more is written and every commit
/// fails (see the module's header).
#[derive(Clone, Default)]
struct Failure(Arc<OnceLock<String>>);

impl Failure {
    /// Record `e` unless a failure came first.
    fn set(&self, e: &str) {
        let _ = self.0.set(e.to_string());
    }

    /// Why a commit after the failure is refused, if there was one.
    fn refusal(&self) -> Option<String> {
        self.0.get().map(|first| {
            format!("not written: the state journal stopped at an earlier failed write ({first})")
        })
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
    acks: Vec<Ack>,
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
///
/// After the first of its syncs or waits that fails, every request it gets
/// fails too, and the writer is told to write nothing more (`shared`).
/// Requests the writer sent before a write of its own failed were written
/// before that failure and are synced as usual.
fn sync_loop(rx: std::sync::mpsc::Receiver<SyncRequest>, shared: &Failure) {
    let failure = Failure::default();
    let failed = |e: &str| {
        failure.set(e);
        shared.set(e);
    };
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while let Ok(r) = rx.try_recv() {
            group.push(r);
        }
        let mut files = Vec::with_capacity(group.len());
        for r in group {
            if let Some(e) = failure.refusal() {
                // Appended after a batch that failed: never durable. A
                // write in flight is still waited for, so none outlives
                // the journal and races the final snapshot.
                if let Durable::Wait(wait) = r.durable {
                    let _ = wait();
                }
                for ack in r.acks {
                    let _ = ack.send(Err(e.clone()));
                }
                continue;
            }
            match r.durable {
                Durable::Wait(wait) => {
                    let result = wait();
                    if let Err(e) = &result {
                        failed(e);
                    }
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
            let result = match failure.refusal() {
                // A file synced before this one in the group failed.
                Some(e) => Err(e),
                None => same
                    .last()
                    .expect("non-empty")
                    .0
                    .sync_data()
                    .map_err(|e| format!("making the state journal durable: {e}")),
            };
            if let Err(e) = &result {
                failed(e);
            }
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
    /// Not written: the journal stopped at an earlier failure (why).
    Refused(String),
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
mod tests;
