//! How bootstrap data reaches a Docker machine: as CAPD does it, capi runs
//! the cloud-config itself inside the container (`write_files` as one
//! archive upload to a staging directory and one script that moves each
//! file into place; consecutive `runcmd` entries as one script in one exec,
//! each failure reported as its own command's), in order, stopping at the
//! first failure.
//!
//! Bootstrap never runs twice on one machine: capi writes CAPD's "started"
//! marker before anything runs, and copies of both markers on `/var` (a
//! volume that survives a restart, unlike the `/run` tmpfs). A machine whose
//! bootstrap started and did not succeed is reported failed, to be replaced.
//!
//! Also here: registering a bootstrap token through a bootstrapped
//! control-plane machine (`kubeadm token create`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::engine::{sh, sh_args, summary_name, summary_state, STAGING};
use super::DockerProvider;
use crate::bootstrap::SUCCESS_SENTINEL;
use crate::provider::cloudinit::{self, Action, FileWrite};
use crate::provider::{Observed, OpInput, ProviderError, Redactor};
use crate::resource::MachineSpec;

/// capi's copies of the bootstrap markers, on `/var` (a volume): `/run` is a
/// tmpfs, emptied when a container restarts, and bootstrap must still never
/// run twice on it.
const PERSISTENT_MARKERS: &str = "/var/lib/capi";

/// The exit codes of the marker check.
const ALREADY_SUCCEEDED: i64 = 10;
const ALREADY_STARTED: i64 = 11;

/// What the commands run so far and the failure are recorded as.
struct Run<'a> {
    redactor: &'a Redactor,
    commands: Vec<Value>,
}

impl Run<'_> {
    /// Record the failure in `observed` and describe it.
    fn fail(
        &self,
        observed: &mut Observed,
        command: String,
        exit_code: i64,
        out: &str,
    ) -> ProviderError {
        observed.insert("commands".into(), json!(self.commands));
        observed.insert("bootstrap".into(), json!("failed"));
        observed.insert("failed_command".into(), json!(command));
        ProviderError::Bootstrap {
            command,
            exit_code,
            output_tail: self.redactor.redact(&tail(out, 20)),
            observed: observed.clone(),
        }
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

    /// Execute the cloud-config as CAPD does, unless it already ran here.
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
        if !self.mark_started(name, observed).await? {
            return Ok(());
        }
        let mut run = Run {
            redactor: r,
            commands: Vec::new(),
        };
        // Consecutive write_files entries go in one upload (to the staging
        // directory) and one exec that moves each into place, in order.
        let mut i = 0;
        while i < acts.actions.len() {
            let mut writes = Vec::new();
            while let Some(Action::Write(f)) = acts.actions.get(i) {
                writes.push(f);
                i += 1;
            }
            if !writes.is_empty() {
                self.write_files(name, &writes, &mut run, observed).await?;
                continue;
            }
            // Consecutive runcmd entries run in one exec, in order, stopping
            // at the first failure; the last run also checks the sentinel.
            let mut cmds = Vec::new();
            while let Some(Action::Run(cmd)) = acts.actions.get(i) {
                cmds.push(cloudinit::capd_command(cmd));
                i += 1;
            }
            let last = i == acts.actions.len();
            self.run_commands(name, &cmds, last, &mut run, observed)
                .await?;
            if last {
                observed.insert("commands".into(), json!(run.commands));
                observed.insert("bootstrap".into(), json!("succeeded"));
                return Ok(());
            }
        }
        observed.insert("commands".into(), json!(run.commands));
        let (code, _) = self.engine.exec(name, &sh(&sentinel_check())).await?;
        if code != 0 {
            return Err(run.fail(observed, "(bootstrap)".into(), 1, &no_sentinel()));
        }
        observed.insert("bootstrap".into(), json!("succeeded"));
        Ok(())
    }

    /// Run `cmds` (argument vectors) in one exec, in order, stopping at the
    /// first that fails; then, when `check_sentinel`, check that bootstrap
    /// succeeded. A failure is reported as if each command had run alone:
    /// its command line, its exit code, its own output. Markers carry a
    /// random tag so that no command's output can forge one.
    async fn run_commands(
        &self,
        name: &str,
        cmds: &[Vec<String>],
        check_sentinel: bool,
        run: &mut Run<'_>,
        observed: &mut Observed,
    ) -> Result<(), ProviderError> {
        let tag = format!("@@capi-{}", uuid::Uuid::new_v4().simple());
        let script = commands_script(&tag, cmds, check_sentinel);
        let (code, out) = self.engine.exec(name, &sh(&script)).await?;
        let shown: Vec<String> = cmds
            .iter()
            .map(|c| run.redactor.redact(&c.join(" ")))
            .collect();
        match batch_outcome(&tag, code, &out) {
            Outcome::Succeeded => {
                run.commands.extend(shown.into_iter().map(|c| json!(c)));
                Ok(())
            }
            Outcome::NoSentinel => {
                run.commands.extend(shown.into_iter().map(|c| json!(c)));
                Err(run.fail(observed, "(bootstrap)".into(), 1, &no_sentinel()))
            }
            Outcome::Failed {
                index,
                code,
                output,
            } => {
                let index = index.min(shown.len().saturating_sub(1));
                run.commands
                    .extend(shown[..=index].iter().map(|c| json!(c)));
                Err(run.fail(observed, shown[index].clone(), code, &output))
            }
        }
    }

    /// Never twice: check the markers and write the "started" ones. `false`:
    /// bootstrap already succeeded here (adopted), nothing to run. A machine
    /// whose bootstrap started (capi's or CAPD's marker) and did not succeed
    /// is unusable and will be replaced.
    async fn mark_started(
        &self,
        name: &str,
        observed: &mut Observed,
    ) -> Result<bool, ProviderError> {
        let started = cloudinit::STARTED_SENTINEL;
        let script = format!(
            "if [ -f {SUCCESS_SENTINEL} ] || [ -f {PERSISTENT_MARKERS}/succeeded ]; then exit {ALREADY_SUCCEEDED}; \
             elif [ -f {started} ] || [ -f {PERSISTENT_MARKERS}/started ]; then exit {ALREADY_STARTED}; fi; \
             mkdir -p /run/cluster-api {STAGING} {PERSISTENT_MARKERS} && echo started > {started} && echo started > {PERSISTENT_MARKERS}/started"
        );
        let (code, _) = self.engine.exec(name, &sh(&script)).await?;
        match code {
            ALREADY_SUCCEEDED => {
                observed.insert("bootstrap".into(), json!("succeeded"));
                observed.insert("adopted".into(), json!(true));
                Ok(false)
            }
            ALREADY_STARTED => {
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
            0 => Ok(true),
            other => Err(ProviderError::Failed(format!(
                "cannot prepare bootstrap in {name} (exit {other}); does the image have /bin/sh?"
            ))),
        }
    }

    /// Upload a run of `write_files` entries to the staging directory and
    /// move each into place; on failure, the commands recorded end with the
    /// file that failed.
    async fn write_files(
        &self,
        name: &str,
        writes: &[&FileWrite],
        run: &mut Run<'_>,
        observed: &mut Observed,
    ) -> Result<(), ProviderError> {
        let staged: Vec<String> = writes.iter().map(|_| self.engine.stage_name()).collect();
        let files: Vec<(String, &[u8], u32)> = writes
            .iter()
            .zip(&staged)
            .map(|(f, st)| (st.clone(), f.content.as_slice(), 0o600))
            .collect();
        self.engine.upload(name, &files).await?;
        let (script, args) = write_script(writes, &staged);
        let (code, out) = self.engine.exec(name, &sh_args(&script, args)).await?;
        if code != 0 {
            let failed = out
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("capi: write_files "))
                .and_then(|l| l.strip_suffix(" failed"))
                .unwrap_or("(one of the files)")
                .to_string();
            for f in writes {
                run.commands.push(json!(format!("write_files {}", f.path)));
                if f.path == failed {
                    break;
                }
            }
            let command = run.redactor.redact(&format!("write_files {failed}"));
            return Err(run.fail(observed, command, code, &out));
        }
        run.commands.extend(
            writes
                .iter()
                .map(|f| json!(format!("write_files {}", f.path))),
        );
        Ok(())
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
                return Ok(BTreeMap::from([("registered_with".into(), json!(name))]));
            }
            last = format!(
                "registering the bootstrap token with {name} failed (exit {code}): {}",
                input.redactor.redact(&tail(&out, 5))
            );
        }
        Err(ProviderError::Failed(last))
    }
}

/// The shell script that moves staged files into place as CAPD writes them
/// (`mkdir -p`, `cat >`/`>>`, `chmod` unless 0644, `chown` unless root),
/// stopping at the first failure; paths travel as arguments.
fn write_script(writes: &[&FileWrite], staged: &[String]) -> (String, Vec<String>) {
    let mut script = String::new();
    let mut args = Vec::new();
    for (k, (f, st)) in writes.iter().zip(staged).enumerate() {
        let (s_arg, p_arg) = (2 * k + 1, 2 * k + 2);
        args.push(st.clone());
        args.push(f.path.clone());
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
        script.push_str(&format!(
            "{{ {step}; }} || {{ echo \"capi: write_files ${{{p_arg}}} failed\" >&2; exit 1; }}\n"
        ));
    }
    (script, args)
}

/// The last `lines` lines of a command's output.
fn sentinel_check() -> String {
    format!("test -f {SUCCESS_SENTINEL} && echo success > {PERSISTENT_MARKERS}/succeeded")
}

fn no_sentinel() -> String {
    format!("every command succeeded but the sentinel {SUCCESS_SENTINEL} is missing")
}

/// The script of [`DockerProvider::run_commands`]: each command announced
/// (`TAG start K`), run, and on failure `TAG failed K CODE` and exit 1.
fn commands_script(tag: &str, cmds: &[Vec<String>], check_sentinel: bool) -> String {
    let mut script = String::new();
    for (k, c) in cmds.iter().enumerate() {
        let words: Vec<String> = c.iter().map(|w| shell_quote(w)).collect();
        script.push_str(&format!(
            "echo '{tag} start {k}'\n{}\nc=$?; [ $c -eq 0 ] || {{ echo; echo \"{tag} failed {k} $c\"; exit 1; }}\n",
            words.join(" ")
        ));
    }
    if check_sentinel {
        script.push_str(&format!(
            "{} || {{ echo '{tag} no-sentinel'; exit 1; }}\n",
            sentinel_check()
        ));
    }
    script
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    NoSentinel,
    /// Command `index` failed with `code`; `output` is its own.
    Failed {
        index: usize,
        code: i64,
        output: String,
    },
}

/// What the exec of [`commands_script`] says happened.
fn batch_outcome(tag: &str, exit: i64, out: &str) -> Outcome {
    let mut started = None;
    let mut own = String::new();
    for line in out.lines() {
        match line.strip_prefix(tag).map(str::trim) {
            Some(m) if m.starts_with("start ") => {
                started = m[6..].parse::<usize>().ok();
                own.clear();
            }
            Some(m) if m.starts_with("failed ") => {
                let mut it = m[7..].split(' ');
                let index = it.next().and_then(|k| k.parse().ok()).unwrap_or(0);
                let code = it.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                return Outcome::Failed {
                    index,
                    code,
                    output: own,
                };
            }
            Some("no-sentinel") => return Outcome::NoSentinel,
            _ => {
                own.push_str(line);
                own.push('\n');
            }
        }
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

    #[test]
    fn write_script_moves_each_file_in_order() {
        let a = FileWrite {
            path: "/etc/a b".into(),
            content: b"x".to_vec(),
            permissions: Some("'0600'".into()),
            owner: Some("nobody:nogroup".into()),
            append: false,
        };
        let b = FileWrite {
            path: "/run/b".into(),
            content: b"y".to_vec(),
            permissions: None,
            owner: Some("root:root".into()),
            append: true,
        };
        let (script, args) = write_script(&[&a, &b], &["/s/1".into(), "/s/2".into()]);
        assert_eq!(args, vec!["/s/1", "/etc/a b", "/s/2", "/run/b"]);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("cat \"${1}\" > \"${2}\""), "{script}");
        assert!(
            lines[0].contains("chmod '0600' \"${2}\"")
                && lines[0].contains("chown 'nobody:nogroup' \"${2}\"")
        );
        assert!(
            lines[1].contains("cat \"${3}\" >> \"${4}\"")
                && !lines[1].contains("chmod")
                && !lines[1].contains("chown")
        );
        assert!(lines[1].ends_with("|| { echo \"capi: write_files ${4} failed\" >&2; exit 1; }"));
        assert!(
            !script.contains("/etc/a b"),
            "paths are arguments, not script text"
        );
    }

    #[test]
    fn a_batch_of_commands_reports_the_one_that_failed() {
        let tag = "@@capi-t";
        let cmds = vec![
            vec!["echo".to_string(), "it's".to_string()],
            vec!["/bin/sh".into(), "-c".into(), "echo half; exit 7".into()],
            vec!["true".into()],
        ];
        let script = commands_script(tag, &cmds, true);
        assert!(script.contains("'echo' 'it'\\''s'"), "{script}");
        let run = |script: &str| {
            let o = std::process::Command::new("/bin/sh")
                .args(["-c", script])
                .output()
                .unwrap();
            (
                i64::from(o.status.code().unwrap()),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        };
        let (code, out) = run(&script);
        assert_eq!(
            batch_outcome(tag, code, &out),
            Outcome::Failed {
                index: 1,
                code: 7,
                output: "half\n\n".into()
            }
        );
        // All succeed; the sentinel is missing here.
        let (code, out) = run(&commands_script(tag, &cmds[2..], true));
        assert_eq!(batch_outcome(tag, code, &out), Outcome::NoSentinel);
        let (code, out) = run(&commands_script(tag, &cmds[2..], false));
        assert_eq!(batch_outcome(tag, code, &out), Outcome::Succeeded);
        // Output cannot forge a marker of another tag.
        let forged = vec![vec![
            "echo".to_string(),
            "@@capi-other failed 0 3".to_string(),
        ]];
        let (code, out) = run(&commands_script(tag, &forged, false));
        assert_eq!(batch_outcome(tag, code, &out), Outcome::Succeeded);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n\n", 2), "b\nc");
        assert_eq!(tail("only", 5), "only");
    }
}
