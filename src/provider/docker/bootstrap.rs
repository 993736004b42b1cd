//! How bootstrap data reaches a Docker machine: as CAPD does it, capi runs
//! the cloud-config itself inside the container, in order, stopping at the
//! first failure, each failure reported as its own step's (command line,
//! exit code, output). It takes one archive upload (every `write_files`
//! entry, to a staging directory) and one exec of one script: the markers,
//! then each file moved into place and each `runcmd` entry run, then the
//! success sentinel checked.
//!
//! Bootstrap never runs twice on one machine: the script writes CAPD's
//! "started" marker before anything runs, and copies of both markers on
//! `/var` (a volume that survives a restart, unlike the `/run` tmpfs). A
//! machine whose bootstrap started and did not succeed is reported failed,
//! to be replaced. (The files are uploaded before the markers are read: on
//! a machine that is adopted or refused they are removed unread.)
//!
//! Also here: registering a bootstrap token through a bootstrapped
//! control-plane machine (`kubeadm token create`).

use std::time::Duration;

use serde_json::{json, Value};

use super::engine::{sh_args, summary_name, summary_state};
use super::DockerProvider;
use crate::bootstrap::SUCCESS_SENTINEL;
use crate::provider::cloudinit::{self, Action, FileWrite};
use crate::provider::{Observed, OpInput, ProviderError, Redactor};
use crate::resource::MachineSpec;

/// capi's copies of the bootstrap markers, on `/var` (a volume): `/run` is a
/// tmpfs, emptied when a container restarts, and bootstrap must still never
/// run twice on it.
const PERSISTENT_MARKERS: &str = "/var/lib/capi";

/// Record a failed bootstrap in `observed` (the steps that ran, the one
/// that failed) and describe it; the output is redacted.
fn failed(
    redactor: &Redactor,
    observed: &mut Observed,
    ran: &[String],
    command: String,
    exit_code: i64,
    out: &str,
) -> ProviderError {
    observed.insert("commands".into(), json!(ran));
    observed.insert("bootstrap".into(), json!("failed"));
    observed.insert("failed_command".into(), json!(command));
    ProviderError::Bootstrap {
        command,
        exit_code,
        output_tail: redactor.redact(&tail(out, 20)),
        observed: observed.clone(),
    }
}

impl DockerProvider {
    /// Bootstrap a started machine within its `bootstrapTimeoutSeconds`
    /// (300 by default).
    pub(super) async fn bootstrap(
        &self,
        input: &OpInput<'_>,
        m: &MachineSpec,
        name: &str,
        observed: &mut Observed,
    ) -> Result<(), ProviderError> {
        let timeout = Duration::from_secs(
            m.infra
                .spec
                .get("bootstrapTimeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(300),
        );
        match tokio::time::timeout(timeout, self.run_cloud_config(input, name, observed)).await {
            Ok(r) => r,
            Err(_) => {
                observed.insert("bootstrap".into(), json!("failed"));
                Err(ProviderError::Bootstrap {
                    command: "(bootstrap)".into(),
                    exit_code: -1,
                    output_tail: format!(
                        "bootstrap did not finish within {}s (bootstrapTimeout)",
                        timeout.as_secs()
                    ),
                    observed: observed.clone(),
                })
            }
        }
    }

    /// Execute the cloud-config as CAPD does, unless it already ran here:
    /// every `write_files` entry in one upload to the staging directory,
    /// then one exec of [`bootstrap_script`] (the markers, each file moved
    /// into place and each command run, in the cloud-config's order).
    async fn run_cloud_config(
        &self,
        input: &OpInput<'_>,
        name: &str,
        observed: &mut Observed,
    ) -> Result<(), ProviderError> {
        let r = input.redactor;
        let doc = input.bootstrap.unwrap_or_default();
        let acts = cloudinit::actions(doc).map_err(|e| ProviderError::Failed(r.redact(&e)))?;
        if !acts.ignored_modules.is_empty() {
            observed.insert(
                "ignored_cloud_config_modules".into(),
                json!(acts.ignored_modules),
            );
        }
        let steps: Vec<Step<'_>> = acts
            .actions
            .iter()
            .map(|a| match a {
                Action::Write(f) => Step::Write(f, self.engine.stage_name()),
                Action::Run(cmd) => Step::Run(cloudinit::capd_command(cmd)),
            })
            .collect();
        let files: Vec<(String, &[u8], u32)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Write(f, staged) => Some((staged.clone(), f.content.as_slice(), 0o600)),
                Step::Run(_) => None,
            })
            .collect();
        if !files.is_empty() {
            self.engine.upload(name, &files).await?;
        }
        let tag = format!("@@capi-{}", uuid::Uuid::new_v4().simple());
        let (script, args) = bootstrap_script(&tag, &steps);
        let (code, out) = self.engine.exec(name, &sh_args(&script, args)).await?;
        let shown: Vec<String> = steps.iter().map(|s| r.redact(&s.shown())).collect();
        self.settle(name, &shown, outcome(&tag, code, &out), r, observed)
    }

    /// What the bootstrap exec's outcome means for the machine: recorded in
    /// `observed` (the commands that ran, as if each had run alone, and the
    /// failed one).
    fn settle(
        &self,
        name: &str,
        shown: &[String],
        outcome: Outcome,
        r: &Redactor,
        observed: &mut Observed,
    ) -> Result<(), ProviderError> {
        match outcome {
            Outcome::AlreadySucceeded => {
                observed.insert("bootstrap".into(), json!("succeeded"));
                observed.insert("adopted".into(), json!(true));
                Ok(())
            }
            Outcome::AlreadyStarted => {
                observed.insert("bootstrap".into(), json!("failed"));
                Err(ProviderError::Bootstrap {
                    command: "(interrupted)".into(),
                    exit_code: -1,
                    output_tail:
                        "bootstrap was interrupted earlier and is never run twice on one machine"
                            .into(),
                    observed: observed.clone(),
                })
            }
            Outcome::NotPrepared(code) => Err(ProviderError::Failed(format!(
                "cannot prepare bootstrap in {name} (exit {code}); does the image have /bin/sh?"
            ))),
            Outcome::Succeeded => {
                observed.insert("commands".into(), json!(shown));
                observed.insert("bootstrap".into(), json!("succeeded"));
                Ok(())
            }
            Outcome::NoSentinel => {
                let why = no_sentinel();
                Err(failed(r, observed, shown, "(bootstrap)".into(), 1, &why))
            }
            Outcome::Failed {
                index,
                code,
                output,
            } => {
                if shown.is_empty() {
                    return Err(failed(
                        r,
                        observed,
                        &[],
                        "(bootstrap)".into(),
                        code,
                        &output,
                    ));
                }
                let index = index.min(shown.len() - 1);
                let command = shown[index].clone();
                Err(failed(
                    r,
                    observed,
                    &shown[..=index],
                    command,
                    code,
                    &output,
                ))
            }
        }
    }

    /// Register the bootstrap token through a bootstrapped control-plane
    /// machine (`kubeadm token create`); the token travels as a file, never
    /// on a command line.
    pub(super) async fn register_token(
        &self,
        input: &OpInput<'_>,
    ) -> Result<Observed, ProviderError> {
        let (token, expires) = input
            .token
            .ok_or_else(|| ProviderError::Failed("no token to register".into()))?;
        let cluster = &input.cluster.name;
        let list = self.control_planes(cluster, input.lineage).await?;
        let ttl = (expires - crate::util::time::now_unix()).max(60);
        let mut last = format!(
            "no running control-plane machine in {cluster} to register the bootstrap token with"
        );
        for c in list.iter().filter(|c| summary_state(c) == "running") {
            let name = summary_name(c);
            let staged = self.engine.stage_name();
            self.engine
                .upload(&name, &[(staged.clone(), token.as_bytes(), 0o600)])
                .await?;
            let script = format!(
                "test -f {SUCCESS_SENTINEL} || {{ echo 'not bootstrapped'; rm -f \"$1\"; exit 3; }}; kubeadm token create \"$(cat \"$1\")\" --ttl {ttl}s --description 'capi bootstrap token'; rc=$?; rm -f \"$1\"; exit $rc"
            );
            let (code, out) = self.engine.exec(&name, &sh_args(&script, [staged])).await?;
            if code == 0 {
                return Ok(Observed::from([("registered_with".into(), json!(name))]));
            }
            last = format!(
                "registering the bootstrap token with {name} failed (exit {code}): {}",
                input.redactor.redact(&tail(&out, 5))
            );
        }
        Err(ProviderError::Failed(last))
    }
}

/// One step of the bootstrap, in the cloud-config's order: a file (with
/// the staging path it was uploaded to) or a command's argument vector.
enum Step<'a> {
    Write(&'a FileWrite, String),
    Run(Vec<String>),
}

impl Step<'_> {
    /// How the step is recorded among the machine's commands.
    fn shown(&self) -> String {
        match self {
            Step::Write(f, _) => format!("write_files {}", f.path),
            Step::Run(c) => c.join(" "),
        }
    }
}

/// The one script that bootstraps a machine, with its arguments (staged
/// and target paths travel as arguments, never as script text):
///
/// 1. the markers: bootstrap that already succeeded here (CAPD's sentinel
///    or capi's copy) is adopted (`TAG already-succeeded`); one that
///    started and did not finish is never run again (`TAG
///    already-started`); otherwise the "started" markers are written and
///    `TAG ready` said before anything else runs;
/// 2. each step announced (`TAG start K`): a file moved from staging into
///    place as CAPD writes it (`mkdir -p`, `cat >`/`>>`, `chmod` unless
///    0644, `chown` unless root), or a command run; the first failure says
///    `TAG failed K CODE` and ends the script;
/// 3. the success sentinel checked (`TAG no-sentinel` when missing) and
///    capi's copy of it written.
///
/// Once the script runs, no staged file is left behind whatever happens
/// (a script that cannot run at all, in an image without `/bin/sh`, leaves
/// them in the container's staging directory, mode 0600, until the failed
/// machine is replaced). Standard error goes to standard output, so a
/// step's messages stay in order with the markers; every marker starts a
/// line. The tag is random per run, so no command's output can forge one.
fn bootstrap_script(tag: &str, steps: &[Step<'_>]) -> (String, Vec<String>) {
    let started = cloudinit::STARTED_SENTINEL;
    let mut args = Vec::new();
    let mut staged = Vec::new();
    for s in steps {
        if let Step::Write(f, st) = s {
            args.push(st.clone());
            staged.push(format!("\"${{{}}}\"", args.len()));
            args.push(f.path.clone());
        }
    }
    // Inline, not a shell function: in a function `$1` would be its own.
    let cleanup = if staged.is_empty() {
        ":".to_string()
    } else {
        format!("rm -f {}", staged.join(" "))
    };
    let mut script = format!(
        "exec 2>&1\n\
         if [ -f {SUCCESS_SENTINEL} ] || [ -f {PERSISTENT_MARKERS}/succeeded ]; then {cleanup}; echo '{tag} already-succeeded'; exit 0; fi\n\
         if [ -f {started} ] || [ -f {PERSISTENT_MARKERS}/started ]; then {cleanup}; echo '{tag} already-started'; exit 0; fi\n\
         mkdir -p /run/cluster-api {PERSISTENT_MARKERS} && echo started > {started} && echo started > {PERSISTENT_MARKERS}/started || {{ c=$?; {cleanup}; exit $c; }}\n\
         echo '{tag} ready'\n"
    );
    let mut arg = 0;
    for (k, s) in steps.iter().enumerate() {
        // A marker starts its own line even after output without a newline.
        script.push_str(&format!("echo; echo '{tag} start {k}'\n"));
        match s {
            Step::Write(f, _) => {
                let (s_arg, p_arg) = (arg + 1, arg + 2);
                arg += 2;
                script.push_str(&format!("{{ {}; }}\n", write_step(f, s_arg, p_arg)));
            }
            Step::Run(cmd) => {
                let words: Vec<String> = cmd.iter().map(|w| shell_quote(w)).collect();
                // In a subshell: a builtin (`exit`, `cd`, `set -e`) cannot
                // end or change the rest of the script.
                script.push_str(&format!("( {} )\n", words.join(" ")));
            }
        }
        script.push_str(&format!(
            "c=$?; [ $c -eq 0 ] || {{ {cleanup}; echo; echo \"{tag} failed {k} $c\"; exit 1; }}\n"
        ));
    }
    script.push_str(&format!(
        "{} || {{ echo; echo '{tag} no-sentinel'; exit 1; }}\n",
        sentinel_check()
    ));
    (script, args)
}

/// Moving one staged file (argument `s_arg`) into place (argument
/// `p_arg`), as CAPD writes files.
fn write_step(f: &FileWrite, s_arg: usize, p_arg: usize) -> String {
    let mut step = format!(
        "mkdir -p \"$(dirname \"${{{p_arg}}}\")\" && cat \"${{{s_arg}}}\" {} \"${{{p_arg}}}\" && rm -f \"${{{s_arg}}}\"",
        if f.append { ">>" } else { ">" }
    );
    let perm = f
        .permissions
        .as_deref()
        .map(|p| p.trim().trim_matches('\''))
        .unwrap_or("0644");
    if perm != "0644" && perm != "644" {
        step.push_str(&format!(" && chmod {} \"${{{p_arg}}}\"", shell_quote(perm)));
    }
    if let Some(o) = f
        .owner
        .as_deref()
        .map(str::trim)
        .filter(|o| *o != "root:root" && *o != "root" && !o.is_empty())
    {
        step.push_str(&format!(" && chown {} \"${{{p_arg}}}\"", shell_quote(o)));
    }
    step
}

fn sentinel_check() -> String {
    format!("test -f {SUCCESS_SENTINEL} && echo success > {PERSISTENT_MARKERS}/succeeded")
}

fn no_sentinel() -> String {
    format!("every command succeeded but the sentinel {SUCCESS_SENTINEL} is missing")
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    /// Bootstrap had succeeded here before: adopted, nothing ran.
    AlreadySucceeded,
    /// Bootstrap had started here before and not succeeded.
    AlreadyStarted,
    /// The markers could not be written (the exec's exit code).
    NotPrepared(i64),
    NoSentinel,
    /// Step `index` failed with `code`; `output` is its own.
    Failed {
        index: usize,
        code: i64,
        output: String,
    },
}

/// What the exec of [`bootstrap_script`] says happened.
fn outcome(tag: &str, exit: i64, out: &str) -> Outcome {
    let mut ready = false;
    let mut started = None;
    let mut own = String::new();
    for line in out.lines() {
        match line.strip_prefix(tag).map(str::trim) {
            Some("already-succeeded") if !ready => return Outcome::AlreadySucceeded,
            Some("already-started") if !ready => return Outcome::AlreadyStarted,
            Some("ready") if !ready => ready = true,
            Some(m) if ready && m.starts_with("start ") => {
                started = m[6..].parse::<usize>().ok();
                own.clear();
            }
            Some(m) if ready && m.starts_with("failed ") => {
                let mut it = m[7..].split(' ');
                let index = it.next().and_then(|k| k.parse().ok()).unwrap_or(0);
                let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                return Outcome::Failed {
                    index,
                    code,
                    output: own,
                };
            }
            Some("no-sentinel") if ready => return Outcome::NoSentinel,
            _ => {
                own.push_str(line);
                own.push('\n');
            }
        }
    }
    if !ready {
        return Outcome::NotPrepared(exit);
    }
    if exit == 0 {
        return Outcome::Succeeded;
    }
    // Killed before it could say (the shell itself failed).
    Outcome::Failed {
        index: started.unwrap_or(0),
        code: exit,
        output: own,
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(
        path: &str,
        content: &[u8],
        perm: Option<&str>,
        owner: Option<&str>,
        append: bool,
    ) -> FileWrite {
        FileWrite {
            path: path.into(),
            content: content.to_vec(),
            permissions: perm.map(str::to_string),
            owner: owner.map(str::to_string),
            append,
        }
    }

    #[test]
    fn files_are_moved_as_capd_writes_them_and_paths_are_arguments() {
        let a = file(
            "/etc/a b",
            b"x",
            Some("'0600'"),
            Some("nobody:nogroup"),
            false,
        );
        let b = file("/run/b", b"y", None, Some("root:root"), true);
        let steps = [
            Step::Write(&a, "/s/1".into()),
            Step::Run(vec!["true".into()]),
            Step::Write(&b, "/s/2".into()),
        ];
        let (script, args) = bootstrap_script("@@t", &steps);
        assert_eq!(args, vec!["/s/1", "/etc/a b", "/s/2", "/run/b"]);
        assert!(
            script.contains("then rm -f \"${1}\" \"${3}\"; echo"),
            "{script}"
        );
        let first = write_step(&a, 1, 2);
        assert!(first.contains("cat \"${1}\" > \"${2}\""), "{first}");
        assert!(
            first.contains("chmod '0600' \"${2}\"")
                && first.contains("chown 'nobody:nogroup' \"${2}\"")
        );
        let second = write_step(&b, 3, 4);
        assert!(
            second.contains("cat \"${3}\" >> \"${4}\"")
                && !second.contains("chmod")
                && !second.contains("chown")
        );
        assert!(
            script.contains(&second),
            "the second file moves with arguments 3 and 4"
        );
        assert!(
            !script.contains("/etc/a b"),
            "paths are arguments, not script text"
        );
        // The markers come before the first step.
        let ready = script.find("@@t ready").unwrap();
        assert!(script.find("@@t start 0").unwrap() > ready);
        assert!(script.find("capd.bootstrap.started").unwrap() < ready);
    }

    /// Run the script in a scratch root: the sentinel and marker paths are
    /// absolute, so the script is rewritten to point under `root`.
    fn run_in(root: &std::path::Path, script: &str, args: &[String]) -> (i64, String) {
        let r = root.display().to_string();
        let script = script
            .replace("/run/cluster-api", &format!("{r}/run/cluster-api"))
            .replace(PERSISTENT_MARKERS, &format!("{r}{PERSISTENT_MARKERS}"));
        let o = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .arg("sh")
            .args(args)
            .output()
            .unwrap();
        (
            i64::from(o.status.code().unwrap()),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    #[test]
    fn the_script_reports_the_step_that_failed_and_never_runs_twice() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let target = root.join("etc/conf").display().to_string();
        let staged = root.join("staged-1");
        std::fs::write(&staged, b"content").unwrap();
        let f = file(&target, b"content", None, None, false);
        let steps = [
            Step::Write(&f, staged.display().to_string()),
            Step::Run(vec!["echo".into(), "it's".into()]),
            Step::Run(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo half; exit 7".into(),
            ]),
            Step::Run(vec!["true".into()]),
        ];
        let tag = "@@capi-t";
        let (script, args) = bootstrap_script(tag, &steps);
        assert!(script.contains("'echo' 'it'\\''s'"), "{script}");
        let (code, out) = run_in(root, &script, &args);
        assert_eq!(
            outcome(tag, code, &out),
            Outcome::Failed {
                index: 2,
                code: 7,
                output: "half\n\n".into()
            }
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"content");
        assert!(!staged.exists(), "the staged file was moved");
        // Started and not finished: never again, and a staged file is removed.
        std::fs::write(&staged, b"again").unwrap();
        let (code, out) = run_in(root, &script, &args);
        assert_eq!(outcome(tag, code, &out), Outcome::AlreadyStarted);
        assert!(!staged.exists(), "no staged file is left behind");
        // A fresh machine whose commands all succeed, without the sentinel
        // (the last one's output has no final newline).
        let fresh = tempfile::tempdir().unwrap();
        let no_newline = [Step::Run(vec!["printf".into(), "done".into()])];
        let (script, args) = bootstrap_script(tag, &no_newline);
        let (code, out) = run_in(fresh.path(), &script, &args);
        assert_eq!(outcome(tag, code, &out), Outcome::NoSentinel, "{out}");
        // A builtin run as a command cannot end the script: the file after
        // it is still written, and a failing write reports its own error.
        let fresh = tempfile::tempdir().unwrap();
        let staged = fresh.path().join("staged-2");
        std::fs::write(&staged, b"x").unwrap();
        let blocked = fresh.path().join("file");
        std::fs::write(&blocked, b"").unwrap();
        let under_file = file(
            &format!("{}/sub", blocked.display()),
            b"x",
            None,
            None,
            false,
        );
        let steps = [
            Step::Run(vec!["exit".into(), "0".into()]),
            Step::Write(&under_file, staged.display().to_string()),
        ];
        let (script, args) = bootstrap_script(tag, &steps);
        let (code, out) = run_in(fresh.path(), &script, &args);
        match outcome(tag, code, &out) {
            Outcome::Failed {
                index: 1, output, ..
            } => {
                assert!(
                    output.contains("ot a directory") || output.contains("exists"),
                    "{output}"
                )
            }
            other => panic!("{other:?} from {out}"),
        }
        assert!(!staged.exists(), "the staged file is removed on failure");
        // With the sentinel: succeeded, then adopted on the next run.
        let fresh = tempfile::tempdir().unwrap();
        let sentinel = vec![Step::Run(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo success > {SUCCESS_SENTINEL}"),
        ])];
        let (script, args) = bootstrap_script(tag, &sentinel);
        let (code, out) = run_in(fresh.path(), &script, &args);
        assert_eq!(outcome(tag, code, &out), Outcome::Succeeded, "{out}");
        let (code, out) = run_in(fresh.path(), &script, &args);
        assert_eq!(outcome(tag, code, &out), Outcome::AlreadySucceeded);
        // Output cannot forge a marker of another tag, nor of this one
        // before the script says it is ready.
        assert_eq!(
            outcome(tag, 0, "@@capi-other failed 0 3\n@@capi-t ready\n"),
            Outcome::Succeeded
        );
        assert_eq!(
            outcome(tag, 1, "sh: mkdir: denied\n"),
            Outcome::NotPrepared(1)
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail("only", 5), "only");
    }
}
