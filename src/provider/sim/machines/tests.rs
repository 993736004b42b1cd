//! Tests of the simulator's machine logs: indexing, hand edits, compaction,
//! two writers, the earlier layout.

use super::*;
use crate::provider::sim::store::SimBootstrap;

fn machine(name: &str, status: &str) -> SimMachine {
    SimMachine {
        name: name.into(),
        cluster: "c".into(),
        role: Role::Worker,
        group: "g".into(),
        version: "v1.31.2".into(),
        ip: "100.64.0.10".into(),
        provider_id: format!("sim:///c/{name}"),
        status: status.into(),
        labels: BTreeMap::new(),
        bootstrap: SimBootstrap::default(),
    }
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("machines/c.jsonl"), dir.join("machines/c"))
}

#[test]
fn the_last_line_wins_and_compaction_keeps_one_line_per_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (path, legacy) = paths(dir.path());
    let mut log = MachineLog::open(&path, &legacy).unwrap();
    log.put(&machine("b", "provisioning")).unwrap();
    log.put(&machine("a", "provisioning")).unwrap();
    log.put(&machine("b", "running")).unwrap();
    log.put(&machine("gone", "running")).unwrap();
    assert!(log.remove("gone").unwrap());
    assert!(!log.remove("gone").unwrap());
    assert_eq!(log.get("b").unwrap().unwrap().status, "running");
    assert_eq!(log.get("gone").unwrap(), None);
    let read = read_cluster::<SimMachine>(&path, &legacy).unwrap();
    assert_eq!(read.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(read["b"].status, "running");

    log.compact().unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let names: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<SimMachine>(l).unwrap().name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(read_cluster::<SimMachine>(&path, &legacy).unwrap(), read);
    assert_eq!(
        fs::metadata(&path).unwrap().mode() & 0o777,
        0o600,
        "the log is private"
    );
    // The log indexes the compacted file when it is used again.
    assert_eq!(log.get("b").unwrap().unwrap().status, "running");
    log.put(&machine("c", "provisioning")).unwrap();
    let read = read_cluster::<SimMachine>(&path, &legacy).unwrap();
    assert_eq!(read.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert!(log.remove("c").unwrap());
    // A log opened and never written to goes away too.
    let empty = dir.path().join("machines/empty.jsonl");
    MachineLog::open(&empty, &dir.path().join("machines/empty"))
        .unwrap()
        .compact()
        .unwrap();
    assert!(!empty.exists());
    // Removing every machine removes the file.
    log.remove("a").unwrap();
    log.remove("b").unwrap();
    log.compact().unwrap();
    assert!(!path.exists());
}

#[test]
fn a_cut_short_last_line_is_skipped_then_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (path, legacy) = paths(dir.path());
    let mut log = MachineLog::open(&path, &legacy).unwrap();
    log.put(&machine("a", "running")).unwrap();
    drop(log);
    let whole = fs::read(&path).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(&serde_json::to_vec(&machine("b", "running")).unwrap()[..30]);
    fs::write(&path, &torn).unwrap();
    // A reader sees only the complete line.
    let read = read_cluster::<SimMachine>(&path, &legacy).unwrap();
    assert_eq!(read.keys().collect::<Vec<_>>(), ["a"]);
    // The next writer cuts the torn tail off before appending.
    let mut log = MachineLog::open(&path, &legacy).unwrap();
    assert_eq!(fs::read(&path).unwrap(), whole);
    log.put(&machine("c", "running")).unwrap();
    let read = read_cluster::<SimMachine>(&path, &legacy).unwrap();
    assert_eq!(read.keys().collect::<Vec<_>>(), ["a", "c"]);
}

#[test]
fn edits_behind_the_writers_back_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (path, legacy) = paths(dir.path());
    let mut log = MachineLog::open(&path, &legacy).unwrap();
    log.put(&machine("a", "running")).unwrap();
    log.put(&machine("b", "running")).unwrap();
    log.compact().unwrap();
    // Indexed again (the compaction left the log unindexed), so the
    // edits below are found by comparing the file with the index.
    assert_eq!(log.get("b").unwrap().unwrap().status, "running");
    // A user deletes b's line and stops a.
    let text = fs::read_to_string(&path).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("\"name\":\"b\""))
        .map(|l| l.replace("\"running\"", "\"stopped\"") + "\n")
        .collect();
    fs::write(&path, kept).unwrap();
    assert_eq!(log.get("b").unwrap(), None);
    assert_eq!(log.get("a").unwrap().unwrap().status, "stopped");
    // Replaced by a rename, too.
    let other = dir.path().join("other");
    fs::write(&other, "").unwrap();
    fs::rename(&other, &path).unwrap();
    assert_eq!(log.get("a").unwrap(), None);
    // Two lines of the same length swapped in place: the file's size is
    // unchanged, a's indexed line now names b, and the log indexes the
    // file again.
    log.put(&machine("a", "running")).unwrap();
    log.put(&machine("b", "running")).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0].len(), lines[1].len());
    fs::write(&path, format!("{}\n{}\n", lines[1], lines[0])).unwrap();
    assert_eq!(log.get("a").unwrap().unwrap().name, "a");
    assert_eq!(log.get("b").unwrap().unwrap().name, "b");
}

#[test]
fn a_bad_line_is_named_by_file_and_number() {
    let dir = tempfile::tempdir().unwrap();
    let (path, legacy) = paths(dir.path());
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let good = serde_json::to_string(&machine("a", "running")).unwrap();
    fs::write(&path, format!("{good}\n\n{{\"name\": 3}}\n")).unwrap();
    let e = read_cluster::<SimMachine>(&path, &legacy)
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.jsonl:3: not a machine record"), "{e}");
    assert!(e.contains("fix the line or delete it"), "{e}");
    let e = MachineLog::open(&path, &legacy).err().unwrap().to_string();
    assert!(e.contains("c.jsonl:3"), "{e}");
    // A hand-written removal with spaces is a removal.
    fs::write(&path, format!("{good}\n{{ \"removed\": \"a\" }}\n")).unwrap();
    assert!(read_cluster::<SimMachine>(&path, &legacy)
        .unwrap()
        .is_empty());
}

#[test]
fn records_of_the_earlier_layout_move_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (path, legacy) = paths(dir.path());
    fs::create_dir_all(&legacy).unwrap();
    for n in ["a", "b"] {
        fs::write(
            legacy.join(format!("{n}.json")),
            serde_json::to_vec_pretty(&machine(n, "running")).unwrap(),
        )
        .unwrap();
    }
    let read = read_cluster::<SimMachine>(&path, &legacy).unwrap();
    assert_eq!(read.keys().collect::<Vec<_>>(), ["a", "b"]);
    let mut log = MachineLog::open(&path, &legacy).unwrap();
    assert!(!legacy.exists(), "the old files are moved");
    assert_eq!(log.get("b").unwrap().unwrap().status, "running");
    assert_eq!(read_cluster::<SimMachine>(&path, &legacy).unwrap(), read);
}

/// The file is checked once per turn of the writers' lock: a change
/// made between two turns (a hand edit replacing the file) is seen by
/// the next one, whatever the first turn did.
#[test]
fn a_file_replaced_between_turns_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let p = crate::provider::sim::SimProvider::open(dir.path(), None).unwrap();
    p.with_log("c", |l| {
        l.put(&machine("a", "running"))?;
        l.put(&machine("b", "running"))?;
        assert!(l.get("a")?.is_some());
        Ok(())
    })
    .unwrap();
    let path = dir.path().join("machines/c.jsonl");
    let kept = serde_json::to_string(&machine("b", "stopped")).unwrap();
    let edited = dir.path().join("machines/edited");
    fs::write(&edited, format!("{kept}\n")).unwrap();
    fs::rename(&edited, &path).unwrap();
    p.with_log("c", |l| {
        assert!(l.get("a")?.is_none(), "the edit removed a");
        assert_eq!(l.get("b")?.unwrap().status, "stopped");
        Ok(())
    })
    .unwrap();
}

/// Two providers on one simulator directory (as in tests; or another
/// process): one appends while the other appends and compacts; the
/// writers' lock keeps every line.
#[test]
fn two_writers_never_lose_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let a = crate::provider::sim::SimProvider::open(dir.path(), None).unwrap();
    let b = crate::provider::sim::SimProvider::open(dir.path(), None).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..1500 {
                let m = machine(&format!("a-{i}"), "running");
                a.with_log("c", |l| l.put(&m)).unwrap();
            }
        });
        s.spawn(|| {
            for i in 0..300 {
                let name = format!("b-{i}");
                b.with_log("c", |l| {
                    l.put(&machine(&name, "provisioning"))?;
                    l.put(&machine(&name, "running"))?;
                    l.compact()
                })
                .unwrap();
            }
        });
    });
    drop((a, b));
    let (path, legacy) = paths(dir.path());
    let read = read_cluster::<SimMachine>(&path, &legacy).unwrap();
    assert_eq!(read.len(), 1800);
    assert!(read.values().all(|m| m.status == "running"));
}
