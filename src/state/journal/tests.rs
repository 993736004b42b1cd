//! The journal's tests: batching, closing, kept encodings, orphaned
//! documents, and what follows a failed write.

use std::time::Duration;

use super::super::backend::{HeldLock, StateBackend};
use super::super::lock::{LockError, LockInfo};
use super::super::store::StateError;
use super::*;
use std::sync::Mutex;

/// The methods of a [`StateBackend`] the journal never calls, for the
/// backends of these tests: nothing to load, no lock.
macro_rules! nothing_but_a_journal {
    () => {
        fn load(&self) -> Result<Option<State>, StateError> {
            Ok(None)
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
    };
}

/// Records the size of every batch appended, and the documents each
/// carries; durable at once.
#[derive(Debug, Default)]
struct Counting {
    batches: Arc<Mutex<Vec<usize>>>,
    documents: Arc<Mutex<Vec<Vec<String>>>>,
}

impl StateBackend for Counting {
    nothing_but_a_journal!();
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

/// How [`Failing`] fails its `fail_at`-th append.
#[derive(Debug, Clone, Copy)]
enum Fails {
    /// The append itself returns an error (a failed write).
    Write,
    /// The write goes out; making it durable fails later (a failed
    /// fsync, an etcd transaction that fails), while the writer goes on
    /// appending the next batches.
    Durability,
    /// As `Durability`, and the batches after it are durable as soon as
    /// they are written (as etcd's large commits are): they are still
    /// acknowledged only in their turn, after the failure.
    DurabilityThenNow,
}

/// One change per batch; the `fail_at`-th append (from 1) fails as
/// `fails` says, every other one is durable once its wait returns. The
/// state folded at the end is kept.
#[derive(Debug)]
struct Failing {
    fail_at: u32,
    fails: Fails,
    appends: Arc<Mutex<u32>>,
    folded: Arc<Mutex<Vec<State>>>,
}

impl StateBackend for Failing {
    nothing_but_a_journal!();
    fn write_bytes(&mut self, _bytes: &[u8]) -> Result<(), StateError> {
        unreachable!("folds are kept by `fold`")
    }
    fn snapshot_due(&self, _snapshotted: bool) -> bool {
        false
    }
    fn append(
        &mut self,
        _lineage: &str,
        _base_serial: u64,
        _record: &JournalRecord,
    ) -> Result<Durability, StateError> {
        let mut n = self.appends.lock().unwrap();
        *n += 1;
        if *n > self.fail_at && matches!(self.fails, Fails::DurabilityThenNow) {
            return Ok(Durability::Now);
        }
        if *n != self.fail_at {
            return Ok(Durability::Wait(Box::new(|| Ok(()))));
        }
        match self.fails {
            Fails::Write => Err(StateError::Write {
                path: "journal".into(),
                source: std::io::Error::other("disk on fire"),
            }),
            Fails::Durability | Fails::DurabilityThenNow => Ok(Durability::Wait(Box::new(|| {
                // Slow to fail: the batches behind it are appended
                // meanwhile, as they are when an fsync fails.
                std::thread::sleep(Duration::from_millis(50));
                Err("disk on fire".to_string())
            }))),
        }
    }
    fn fold_due(&self) -> bool {
        false
    }
    fn fold(
        &mut self,
        state: &State,
        _encode: &mut dyn FnMut(&State) -> Vec<u8>,
    ) -> Result<(), StateError> {
        self.folded.lock().unwrap().push(state.clone());
        Ok(())
    }
    fn max_batch(&self) -> usize {
        1
    }
}

/// Ten commits at once, the third one's write failing in each way: the
/// two before it are durable, it fails, and every commit after it fails
/// too, even one whose own write went out or was durable at once (its
/// durability would say nothing of the failed batch before it). After a
/// failed write nothing more is appended. The end writes the whole state,
/// every change, in one snapshot although no fold was due.
#[tokio::test]
async fn after_a_failed_write_every_later_commit_fails() {
    for fails in [Fails::Write, Fails::Durability, Fails::DurabilityThenNow] {
        let appends = Arc::new(Mutex::new(0));
        let folded = Arc::new(Mutex::new(Vec::new()));
        let backend = Failing {
            fail_at: 3,
            fails,
            appends: appends.clone(),
            folded: folded.clone(),
        };
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
        let results = futures::future::join_all(commits).await;
        // A commit that would release a step's dependents is refused too,
        // before anything is released.
        let a = Address::parse("t/machine/m-late").unwrap();
        let late = journal.commit_applied(&a, |st| {
            st.take_sequence();
        });
        let e = late.await.err().expect("refused, not queued");
        assert!(e.contains("stopped at an earlier failed write ("), "{e}");
        drop(journal);
        writer.join().unwrap();
        assert!(
            results[..2].iter().all(Result::is_ok),
            "{fails:?}: {results:?}"
        );
        assert!(
            results[2].as_ref().unwrap_err().contains("disk on fire"),
            "{fails:?}: {results:?}"
        );
        for r in &results[3..] {
            let e = r.as_ref().expect_err("refused after the failure");
            assert!(
                e.contains("stopped at an earlier failed write (") && e.contains("disk on fire"),
                "{fails:?}: {e}"
            );
        }
        if let Fails::Write = fails {
            assert_eq!(*appends.lock().unwrap(), 3, "nothing appended after it");
        }
        let folded = folded.lock().unwrap();
        assert_eq!(folded.len(), 1, "{fails:?}: one snapshot at the end");
        // Sequences start at 1: eleven changes took eleven.
        assert_eq!(folded[0].next_sequence, 12, "{fails:?}: every change in it");
    }
}

/// Its first snapshot fails to write; the snapshots after it succeed.
#[derive(Debug, Default)]
struct FirstSnapshotFails {
    written: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl StateBackend for FirstSnapshotFails {
    nothing_but_a_journal!();
    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let mut written = self.written.lock().unwrap();
        written.push(bytes.to_vec());
        if written.len() == 1 {
            return Err(StateError::Write {
                path: "state".into(),
                source: std::io::Error::other("disk on fire"),
            });
        }
        Ok(())
    }
    fn snapshot_due(&self, snapshotted: bool) -> bool {
        !snapshotted
    }
    fn append(
        &mut self,
        _lineage: &str,
        _base_serial: u64,
        _record: &JournalRecord,
    ) -> Result<Durability, StateError> {
        unreachable!("nothing is appended after a failed snapshot")
    }
    fn fold_due(&self) -> bool {
        false
    }
    fn max_batch(&self) -> usize {
        1
    }
}

/// The first snapshot fails; the commits after it are refused but change
/// the state in memory. The snapshot written at the end holds those
/// changes: its bytes are a fresh encode of the final state, not the
/// encodings kept from the failed snapshot.
#[tokio::test]
async fn the_fold_after_a_failed_first_snapshot_holds_every_change() {
    use crate::resource::PkiSpec;
    let backend = FirstSnapshotFails::default();
    let written = backend.written.clone();
    let (journal, writer) = Journal::start(
        State::new(String::new()),
        StateStore::with_backend(Box::new(backend)),
    );
    let a = Address::parse("c/pki").unwrap();
    for days in [1, 2] {
        let address = a.clone();
        let r = journal
            .commit(&a, move |st| {
                let pki = Spec::Pki(PkiSpec {
                    encryption_algorithm: "ECDSA-P256".into(),
                    ca_validity_days: days,
                    external_etcd: false,
                });
                st.upsert(local_resource(address, pki, Default::default(), 1));
            })
            .await;
        assert!(r.is_err(), "{days}: {r:?}");
    }
    let shared = journal.close();
    writer.join().unwrap();
    let state = Journal::into_state(shared);
    let written = written.lock().unwrap();
    assert_eq!(written.len(), 2, "the failed snapshot, then the fold");
    assert_eq!(
        String::from_utf8(written[1].clone()).unwrap(),
        String::from_utf8(codec::encode(&state)).unwrap()
    );
    assert!(String::from_utf8_lossy(&written[1]).contains("\"caValidityDays\":2"));
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
