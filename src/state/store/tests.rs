//! The file store's tests: snapshots, journals, torn and damaged lines,
//! racing readers.

use super::*;
use crate::resource::*;
use crate::state::codec::encode;
use crate::state::model::*;

fn sample() -> State {
    let mut s = State::new("lin".into());
    s.upsert(Resource {
        address: Address::parse("c/pki").unwrap(),
        kind: ResourceKind::Pki,
        provider: ProviderKind::Local,
        status: Status::Ready,
        attributes: Spec::Pki(PkiSpec {
            encryption_algorithm: "RSA-2048".into(),
            ca_validity_days: 3650,
            external_etcd: false,
        }),
        observed: Default::default(),
        sensitive: [("ca.key".to_string(), "secret".to_string())].into(),
        dependencies: vec![],
        sequence: 1,
        error: None,
    });
    s
}

#[test]
fn roundtrip_and_checksum() {
    let s = sample();
    let bytes = encode(&s);
    let back = decode(&bytes).unwrap();
    assert_eq!(back.resources, s.resources);
    assert!(back.checksum.unwrap().starts_with("sha256:"));
    // Every truncation is refused.
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 3] {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    // A flipped byte inside the body is refused.
    let mut bad = bytes.clone();
    let i = bad.iter().position(|&b| b == b'l').unwrap();
    bad[i] = b'L';
    assert!(decode(&bad).unwrap_err().contains("checksum mismatch"));
}

#[test]
fn atomic_save_backup_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("capi.state.json");
    let mut store = FileStore::new(&p);
    assert!(store.load().unwrap().is_none());
    let mut s = sample();
    store.save(&s).unwrap();
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    s.serial = 5;
    let mut store2 = FileStore::new(&p);
    store2.save(&s).unwrap();
    s.serial = 6;
    store2.save(&s).unwrap();
    // backup = what was there before this run's first write
    let backup = decode(&fs::read(store2.backup_path()).unwrap()).unwrap();
    assert_eq!(backup.serial, 0);
    assert_eq!(store2.load().unwrap().unwrap().serial, 6);
    // No temp files left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A store in `dir` whose snapshot is [`sample`] at serial 1.
fn saved_at_serial_one(dir: &Path) -> (PathBuf, FileStore, State) {
    let p = dir.join("capi.state.json");
    let mut store = FileStore::new(&p);
    let mut s = sample();
    s.serial = 1;
    store.save(&s).unwrap();
    (p, store, s)
}

#[test]
fn journal_records_replay_onto_the_snapshot() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (p, mut store, s) = saved_at_serial_one(dir.path());
    // serial 2 upserts a copy under a new address, serial 3 removes the original
    let mut copy = s.resources[0].clone();
    copy.address = Address::parse("c/token").unwrap();
    let r2 = JournalRecord {
        serial: 2,
        next_sequence: 7,
        upsert: vec![(*copy).clone()],
        ..Default::default()
    };
    store.append("lin", 1, &r2).unwrap();
    let r3 = JournalRecord {
        serial: 3,
        next_sequence: 7,
        remove: vec![Address::parse("c/pki").unwrap()],
        ..Default::default()
    };
    store.append("lin", 1, &r3).unwrap();
    store.journal_handle().unwrap().sync_data().unwrap();
    let jp = store.journal_path();
    assert_eq!(
        fs::metadata(&jp).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let loaded = FileStore::new(&p).load().unwrap().unwrap();
    assert_eq!(loaded.serial, 3);
    assert_eq!(loaded.next_sequence, 7);
    assert_eq!(loaded.resources, vec![copy.clone()]);

    // A torn last line (a crash mid-append) is ignored.
    let whole = fs::read(&jp).unwrap();
    fs::write(&jp, &whole[..whole.len() - 5]).unwrap();
    let loaded = FileStore::new(&p).load().unwrap().unwrap();
    assert_eq!(loaded.serial, 2);
    assert_eq!(loaded.resources.len(), 2);

    // Damage before the last line is corruption, never silently skipped.
    let mut bad = whole.clone();
    let second_line = bad.iter().position(|&b| b == b'\n').unwrap() + 3;
    bad[second_line] ^= 1;
    fs::write(&jp, &bad).unwrap();
    let err = FileStore::new(&p).load().unwrap_err().to_string();
    assert!(err.contains("line 2 is damaged"), "{err}");
    // It says what moving the journal aside would lose.
    assert!(
        err.contains("Moving the journal aside loses those operations")
            && err.contains("cannot be recovered that way"),
        "{err}"
    );

    // A snapshot written after the records makes them redundant: they
    // are skipped if the journal survived a crash before its removal.
    fs::write(&jp, &whole).unwrap();
    let mut later = loaded.clone();
    later.serial = 3;
    later.resources = vec![copy.clone()];
    fs::write(&p, encode(&later)).unwrap();
    let loaded = FileStore::new(&p).load().unwrap().unwrap();
    assert_eq!(loaded.serial, 3);
    assert_eq!(loaded.resources, vec![copy]);

    // Writing a snapshot removes the journal.
    let mut store = FileStore::new(&p);
    store.save(&loaded).unwrap();
    assert!(!jp.exists());
}

#[test]
fn corrupt_is_refused_with_backup_hint() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.json");
    fs::write(&p, b"{\"format_version\": 1, \"ser").unwrap();
    let err = FileStore::new(&p).load().unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    assert!(err.contains("s.json.backup"), "{err}");
    assert_eq!(fs::read(&p).unwrap(), b"{\"format_version\": 1, \"ser");
}

/// The journal an apply's writer opens right after a snapshot holds a
/// header only: a load finds nothing to replay, even with the header
/// torn or the file empty (its header is made durable with the first
/// record, so a crash can leave either); the first append goes into it;
/// with nothing appended it is removed at the end, with no fold.
#[test]
fn a_journal_opened_after_a_snapshot_holds_nothing_until_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let (p, mut store, _) = saved_at_serial_one(dir.path());
    store.open_journal("lin", 1).unwrap();
    let jp = store.journal_path();
    let header = fs::read(&jp).unwrap();
    assert!(header.ends_with(b"\n") && header.iter().filter(|b| **b == b'\n').count() == 1);
    assert!(!store.journal_has_records());
    for text in [&header[..], &header[..header.len() / 2], &[]] {
        fs::write(&jp, text).unwrap();
        let loaded = FileStore::new(&p).load().unwrap().unwrap();
        assert_eq!((loaded.serial, loaded.resources.len()), (1, 1));
    }
    fs::write(&jp, &header).unwrap();

    // Opening again keeps the journal; the append lands after its header.
    store.open_journal("lin", 1).unwrap();
    let r2 = JournalRecord {
        serial: 2,
        next_sequence: 9,
        remove: vec![Address::parse("c/pki").unwrap()],
        ..Default::default()
    };
    store.append("lin", 1, &r2).unwrap();
    assert!(store.journal_has_records());
    assert!(fs::read(&jp).unwrap().starts_with(&header));
    let loaded = FileStore::new(&p).load().unwrap().unwrap();
    assert_eq!((loaded.serial, loaded.resources.len()), (2, 0));

    // A snapshot, a new journal, no append: the end removes it.
    store.save(&loaded).unwrap();
    assert!(!jp.exists());
    store.open_journal("lin", 2).unwrap();
    assert!(jp.exists());
    store.discard_empty_journal();
    assert!(!jp.exists());
    // One with a record is never discarded.
    store
        .append(
            "lin",
            2,
            &JournalRecord {
                serial: 3,
                next_sequence: 9,
                ..Default::default()
            },
        )
        .unwrap();
    store.discard_empty_journal();
    assert!(jp.exists());
}

/// Two records after a snapshot of serial 1: serials 2 and 3.
fn journalled(dir: &Path) -> (PathBuf, Vec<u8>) {
    let (p, mut store, s) = saved_at_serial_one(dir);
    for serial in [2, 3] {
        let mut r = s.resources[0].clone();
        r.sequence = serial;
        let rec = JournalRecord {
            serial,
            next_sequence: 9,
            upsert: vec![*r],
            ..Default::default()
        };
        store.append("lin", 1, &rec).unwrap();
    }
    store.journal_handle().unwrap().sync_data().unwrap();
    let jp = store.journal_path();
    (p, fs::read(jp).unwrap())
}

#[test]
fn a_complete_last_line_with_a_bad_checksum_is_corruption_not_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let (p, whole) = journalled(dir.path());
    let jp = FileStore::new(&p).journal_path();
    // Flip a byte inside the last line, keeping its newline: that line
    // was complete, so it was acknowledged.
    let mut bad = whole.clone();
    let at = bad.len() - 10;
    bad[at] ^= 1;
    fs::write(&jp, &bad).unwrap();
    let err = FileStore::new(&p).load().unwrap_err().to_string();
    assert!(err.contains("line 3 is damaged"), "{err}");
    assert!(err.contains("not a torn write"), "{err}");
    // Without its newline, the same damage is a torn append: ignored.
    fs::write(&jp, &bad[..bad.len() - 1]).unwrap();
    let loaded = FileStore::new(&p).load().unwrap().unwrap();
    assert_eq!(loaded.serial, 2);
}

#[test]
fn a_reader_racing_a_compaction_reads_again_instead_of_reporting_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = journalled(dir.path());
    // The writer compacted (snapshot serial 3) and started a new journal;
    // a reader that read the old snapshot (serial 1) now reads that journal.
    let store = FileStore::new(&p);
    let now = store.load().unwrap().unwrap();
    let old = fs::read(&p).unwrap();
    let mut compacted = now.clone();
    compacted.serial = 3;
    let mut w = FileStore::new(&p);
    w.save(&compacted).unwrap();
    let mut r = compacted.resources[0].clone();
    r.sequence = 4;
    w.append(
        "lin",
        3,
        &JournalRecord {
            serial: 4,
            next_sequence: 9,
            upsert: vec![*r],
            ..Default::default()
        },
    )
    .unwrap();
    w.journal_handle().unwrap().sync_data().unwrap();
    let new_snapshot = fs::read(&p).unwrap();
    fs::write(&p, &old).unwrap();
    // The new snapshot lands while the reader retries.
    let p2 = p.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(30));
        write_private_atomic(&p2, &new_snapshot).unwrap();
    });
    let loaded = FileStore::new(&p).load().unwrap().unwrap();
    t.join().unwrap();
    assert_eq!(loaded.serial, 4);
}

/// A corrupt state's message says where a good copy is, and never points
/// at a backup that is not there.
#[test]
fn a_corrupt_state_says_what_can_restore_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("capi.state.json");
    let good = encode(&sample());
    let mut bad = good.clone();
    let at = bad.iter().position(|&b| b == b'"').unwrap() + 1;
    bad[at] ^= 1;
    fs::write(&p, &bad).unwrap();
    let err = FileStore::new(&p).load().unwrap_err().to_string();
    assert!(err.contains("is corrupt"), "{err}");
    assert!(err.contains("There is no backup"), "{err}");
    assert!(!err.contains("previous good state"), "{err}");
    fs::write(dir.path().join("capi.state.json.backup"), b"{").unwrap();
    let err = FileStore::new(&p).load().unwrap_err().to_string();
    assert!(err.contains("does not load either"), "{err}");
    assert!(err.contains("a copy of your own"), "{err}");
    fs::write(dir.path().join("capi.state.json.backup"), &good).unwrap();
    let err = FileStore::new(&p).load().unwrap_err().to_string();
    assert!(
        err.contains("The previous good state is in")
            && err.contains("it loads and its checksum is valid"),
        "{err}"
    );
}
