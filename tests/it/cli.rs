//! CLI tests: snapshots of plan text, JSON and errors.

use crate::common::*;

#[test]
fn example_applies_and_replans_clean() {
    let dir = tempfile::tempdir().unwrap();
    let ex = example("sim");
    capi(dir.path()).args(["apply", "--auto-approve", "-f"]).arg(&ex).assert().success();
    let out = capi(dir.path()).args(["plan", "--detailed-exitcode", "-f"]).arg(&ex).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("No changes."));
}
