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
//! can ever be torn, and every `Ok` is sent in the order the commits were
//! written, snapshots included: it says every commit before it is durable
//! too (a refusal may come sooner; it claims nothing).
//!
//! The first write or sync that fails stops the journal ([`Failure`]):
//! every later commit fails with it, and the writer appends nothing more
//! once it knows (what it appended before it knew is refused by the
//! syncer). After a failed fsync the file's tail is unknown (Linux may drop
//! the pages it could not write and report the next fsync as a success), so
//! no later commit may be acknowledged as durable. The apply's end then
//! tries to write the whole state as one snapshot: the file backend writes
//! a new file, made durable on its own; etcd writes nothing after a failed
//! transaction (the next apply resolves the intents left pending).
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
    /// the batch is written ([`Journal::commit_applied`]); or why the batch
    /// will not be written (the journal stopped at a failure).
    applied: Option<oneshot::Sender<Result<(), String>>>,
}

#[derive(Clone)]
pub(crate) struct Journal {
    state: Arc<RwLock<State>>,
    /// `None` closes the journal (see [`Journal::close`]).
    tx: std::sync::mpsc::Sender<Option<Msg>>,
}

impl Journal {
    /// Start the writer thread. A state without lineage gets one at its first write.
    pub(crate) fn start(mut state: State, store: StateStore) -> (Journal, WriterThread) {
        // The checksum is recomputed on every write; an old one would only
        // force a copy of the whole state before each encode.
        state.checksum = None;
        let state = Arc::new(RwLock::new(state));
        let (tx, rx) = std::sync::mpsc::channel::<Option<Msg>>();
        let shared = state.clone();
        let (done_tx, done) = oneshot::channel();
        let handle = std::thread::Builder::new()
            .name("capi-state-writer".into())
            .spawn(move || {
                Writer::new(shared, store).run(&rx);
                let _ = done_tx.send(());
            })
            .expect("spawn the state writer");
        (Journal { state, tx }, WriterThread { handle, done })
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
    /// durability (an error at once if the journal has stopped). A commit
    /// made after this returns is written after this one, and its `Ok`
    /// comes after this one's, never unless this one is durable (see the module's
    /// header): so a step that calls a provider only once its own intent is
    /// acknowledged may start as soon as what it depends on is queued.
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
        is_applied.await.map_err(|_| stopped())??;
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

/// The journal's writer thread ([`Journal::start`]): it ends once the
/// journal is closed and its last write (the fold) is done.
pub(crate) struct WriterThread {
    handle: std::thread::JoinHandle<()>,
    /// Sent when the writer has finished, its state and store dropped.
    done: oneshot::Receiver<()>,
}

impl WriterThread {
    /// Wait for the writer to end (blocking).
    #[cfg(test)]
    pub(crate) fn join(self) -> std::thread::Result<()> {
        self.handle.join()
    }

    /// Wait for the writer to end without holding a runtime thread. (The
    /// apply's end used to start a blocking thread only to join it: about
    /// 0.4 ms at the end of every apply.) Once `done` comes, or the writer
    /// panicked and dropped it, the thread has nothing left but to exit.
    pub(crate) async fn ended(self) -> std::thread::Result<()> {
        let _ = self.done.await;
        self.handle.join()
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
            // Once the batch is on its way to the disk; only once a snapshot
            // was encoded (etcd's never are): from then on the kept
            // encodings follow every change, refused ones too, which the
            // fold after a failure writes.
            if !self.encoded.is_empty() && !touched.is_empty() {
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
        let queued = refused.clone().map_or(Ok(()), Err);
        for a in applied {
            let _ = a.send(queued.clone());
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
                // Acknowledged after the records before it.
                self.sync(Durable::Done(result.clone()), acks);
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
                Ok(Durability::Now) => self.sync(Durable::Done(Ok(())), acks),
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
    /// Written and made durable already (a snapshot; a backend's write
    /// durable at once), or failed: acknowledged in its turn.
    Done(Result<(), String>),
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

/// Make appended results durable and acknowledge every batch in the order
/// it was written: requests waiting when the disk becomes free share one
/// fdatasync per run of records on one journal file; writes in flight are
/// waited for one by one; a batch already durable (a snapshot, a write the
/// backend made durable at once) is acknowledged in its turn. So an `Ok`
/// means every batch before it is durable too.
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
    // Records on one journal file, not synced yet.
    let mut run: Vec<(Arc<std::fs::File>, u64, Vec<Ack>)> = Vec::new();
    let sync_run = |run: &mut Vec<(Arc<std::fs::File>, u64, Vec<Ack>)>| {
        let Some((file, _, _)) = run.last() else {
            return;
        };
        let result = match failure.refusal() {
            Some(e) => Err(e),
            None => file
                .sync_data()
                .map_err(|e| format!("making the state journal durable: {e}")),
        };
        if let Err(e) = &result {
            failed(e);
        }
        for (_, _, acks) in run.drain(..) {
            for ack in acks {
                let _ = ack.send(result.clone());
            }
        }
    };
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while let Ok(r) = rx.try_recv() {
            group.push(r);
        }
        for r in group {
            let (durable, acks) = match r.durable {
                Durable::File(f) => {
                    if run.last().is_some_and(|(_, g, _)| *g != r.generation) {
                        sync_run(&mut run);
                    }
                    run.push((f, r.generation, r.acks));
                    continue;
                }
                other => (other, r.acks),
            };
            // Everything before this request is acknowledged first.
            sync_run(&mut run);
            let result = match (failure.refusal(), durable) {
                // Written after a batch that failed: never acknowledged. A
                // write in flight is still waited for, so none outlives the
                // journal and races the final snapshot.
                (Some(e), Durable::Wait(wait)) => {
                    let _ = wait();
                    Err(e)
                }
                (Some(e), _) => Err(e),
                (None, Durable::Wait(wait)) => wait(),
                (None, Durable::Done(result)) => result,
                (None, Durable::File(_)) => unreachable!("records are synced in runs"),
            };
            if let Err(e) = &result {
                failed(e);
            }
            for ack in acks {
                let _ = ack.send(result.clone());
            }
        }
        sync_run(&mut run);
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
