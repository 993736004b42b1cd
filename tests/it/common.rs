//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn example(rel: &str) -> PathBuf {
    repo().join("examples").join(rel)
}

/// A file under `../shared` (upstream fixtures, briefs). `None`, with a
/// visible message, when the project is used outside its workplace.
pub(crate) fn shared(rel: &str) -> Option<PathBuf> {
    let p = repo().join("..").join("shared").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (../shared is only present in the development workplace)",
            p.display()
        );
        None
    }
}

/// The `capi` binary, run in `dir`, with colours off and a clean environment
/// for the variables capi reads.
pub(crate) fn capi(dir: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("capi").expect("capi binary");
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CAPI_STATE")
        .env_remove("CAPI_SIM_FAIL")
        .env_remove("CAPI_SIM_FAIL_RATE")
        .env_remove("DOCKER_NETWORK");
    c
}

/// Same, as a std process (for tests that kill or race processes).
pub(crate) fn capi_process(dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("capi"));
    c.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CAPI_STATE")
        .env_remove("CAPI_SIM_FAIL")
        .env_remove("CAPI_SIM_FAIL_RATE");
    c
}

pub(crate) fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Replace what legitimately varies between runs (lineage, serial, hashes of
/// generated material, timings) so snapshots compare structure.
pub(crate) fn scrub(s: &str) -> String {
    let mut out = s.to_string();
    let re_like = |text: &str, prefix: &str, len: usize, repl: &str| -> String {
        let mut o = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            o.push_str(&rest[..i]);
            let after = &rest[i + prefix.len()..];
            let n = after
                .bytes()
                .take_while(|b| b.is_ascii_hexdigit() || *b == b'-')
                .count();
            if n >= len {
                o.push_str(repl);
                rest = &after[n..];
            } else {
                o.push_str(prefix);
                rest = after;
            }
        }
        o.push_str(rest);
        o
    };
    out = re_like(&out, "lineage ", 36, "lineage [LINEAGE]");
    out = re_like(&out, "after ", 0, "after ");
    // elapsed times like "after 0.1s"
    let mut o = String::new();
    for line in out.lines() {
        let l = match line.find(" after ") {
            Some(i)
                if line[i + 7..].ends_with('s')
                    && line[i + 7..line.len() - 1].parse::<f64>().is_ok() =>
            {
                format!("{} after [T]s", &line[..i])
            }
            _ => line.to_string(),
        };
        o.push_str(&l);
        o.push('\n');
    }
    o
}

/// Parse a `--json` stream and validate every line against
/// docs/json-output.schema.json.
pub(crate) fn json_events(stdout: &str) -> Vec<serde_json::Value> {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/json-output.schema.json")).unwrap(),
    )
    .unwrap();
    let v = jsonschema::validator_for(&schema).expect("the event schema compiles");
    stdout
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|err| panic!("not one JSON object per line ({err}): {l}"));
            let errors: Vec<String> = v
                .iter_errors(&e)
                .map(|x| format!("{x} at {}", x.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "event does not match docs/json-output.schema.json: {l}\n{}",
                errors.join("\n")
            );
            e
        })
        .collect()
}

/// A cluster's simulated machines as the simulator keeps them
/// (`capi.state.sim/machines/<cluster>.jsonl`, one line per machine once a
/// command has ended), to read or edit behind capi's back as a user would.
pub(crate) struct SimLog {
    pub(crate) path: PathBuf,
    pub(crate) records: Vec<serde_json::Value>,
}

impl SimLog {
    pub(crate) fn read(dir: &Path, cluster: &str) -> SimLog {
        let path = dir.join(format!("capi.state.sim/machines/{cluster}.jsonl"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a machine line"))
            .collect();
        assert!(
            records.iter().all(|r| r.get("removed").is_none()),
            "{} is not compacted",
            path.display()
        );
        SimLog { path, records }
    }

    /// The first name (in order) containing `part`.
    pub(crate) fn name_containing(&self, part: &str) -> String {
        self.records
            .iter()
            .filter_map(|r| r["name"].as_str())
            .filter(|n| n.contains(part))
            .min()
            .unwrap_or_else(|| panic!("no machine named *{part}* in {}", self.path.display()))
            .to_string()
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> &mut serde_json::Value {
        self.records
            .iter_mut()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no machine {name}"))
    }

    /// Delete the machine's line.
    pub(crate) fn remove(&mut self, name: &str) {
        let before = self.records.len();
        self.records.retain(|r| r["name"] != name);
        assert_eq!(self.records.len() + 1, before, "no machine {name}");
    }

    pub(crate) fn write(&self) {
        let text: String = self.records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&self.path, text).unwrap();
    }
}
