//! How CAPD turns cloud-config into actions: only `write_files` and `runcmd`
//! are executed, in order; other modules are reported as ignored. Shared by
//! the simulator and the Docker provider.

use base64::Engine;
use std::io::Read;

#[derive(Debug, Clone, PartialEq)]
pub struct FileWrite {
    pub path: String,
    pub content: Vec<u8>,
    pub permissions: Option<String>,
    pub owner: Option<String>,
    pub append: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Write(FileWrite),
    /// A command: argv (a list item) or a shell string run with `/bin/sh -c`.
    Run(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Actions {
    pub actions: Vec<Action>,
    /// Top-level modules other than write_files/runcmd, in order.
    pub ignored_modules: Vec<String>,
}

/// Decode a write_files entry's content by its encoding.
pub(crate) fn decode_content(content: &str, encoding: Option<&str>) -> Result<Vec<u8>, String> {
    let b64 = |s: &str| {
        let cleaned: String = s.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(cleaned.as_bytes())
            .map_err(|e| format!("invalid base64 content: {e}"))
    };
    let gunzip = |bytes: &[u8]| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| format!("invalid gzip content: {e}"))?;
        Ok::<_, String>(out)
    };
    match encoding.unwrap_or("").to_ascii_lowercase().as_str() {
        "" | "text/plain" => Ok(content.as_bytes().to_vec()),
        "b64" | "base64" => b64(content),
        "gz" | "gzip" => gunzip(content.as_bytes()),
        "gz+b64" | "gzip+base64" | "gz+base64" | "gzip+b64" => gunzip(&b64(content)?),
        other => Err(format!("unknown encoding {other:?}")),
    }
}

/// Parse a cloud-config document into CAPD's actions.
pub fn actions(doc: &str) -> Result<Actions, String> {
    let v: serde_yaml::Value = serde_yaml::from_str(doc)
        .map_err(|e| format!("the bootstrap data is not valid YAML: {e}"))?;
    let serde_yaml::Value::Mapping(m) = v else {
        return Err("the bootstrap data is not a cloud-config mapping".into());
    };
    let mut out = Actions::default();
    for (k, val) in m {
        let key = k.as_str().unwrap_or_default().to_string();
        match key.as_str() {
            "write_files" => {
                for f in val.as_sequence().cloned().unwrap_or_default() {
                    let get = |n: &str| f.get(n).and_then(|x| x.as_str()).map(str::to_string);
                    let path = get("path").ok_or("a write_files entry has no path")?;
                    let content = decode_content(
                        &get("content").unwrap_or_default(),
                        get("encoding").as_deref(),
                    )
                    .map_err(|e| format!("{path}: {e}"))?;
                    out.actions.push(Action::Write(FileWrite {
                        path,
                        content,
                        permissions: get("permissions"),
                        owner: get("owner"),
                        append: f.get("append").and_then(|x| x.as_bool()).unwrap_or(false),
                    }));
                }
            }
            "runcmd" => {
                for c in val.as_sequence().cloned().unwrap_or_default() {
                    match c {
                        serde_yaml::Value::Sequence(items) => out.actions.push(Action::Run(
                            items
                                .iter()
                                .map(|i| {
                                    i.as_str().map(str::to_string).unwrap_or_else(|| {
                                        serde_yaml::to_string(i)
                                            .unwrap_or_default()
                                            .trim()
                                            .to_string()
                                    })
                                })
                                .collect(),
                        )),
                        serde_yaml::Value::String(s) => {
                            out.actions
                                .push(Action::Run(vec!["/bin/sh".into(), "-c".into(), s]))
                        }
                        other => return Err(format!("unsupported runcmd entry {other:?}")),
                    }
                }
            }
            other => out.ignored_modules.push(other.to_string()),
        }
    }
    Ok(out)
}

/// CAPD runs `kubeadm init|join` with extra preflight exclusions and records
/// that bootstrap started; `capi` does the same.
pub(crate) const STARTED_SENTINEL: &str = "/run/cluster-api/capd.bootstrap.started";

pub(crate) fn capd_command(cmd: &[String]) -> Vec<String> {
    if cmd.len() == 3 && cmd[0] == "/bin/sh" && cmd[1] == "-c" {
        let s = &cmd[2];
        for verb in ["kubeadm init", "kubeadm join"] {
            if let Some(rest) = s.strip_prefix(verb) {
                return vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!(
                        "echo started > {STARTED_SENTINEL} && {verb} --ignore-preflight-errors=SystemVerification,Swap,FileContent--proc-sys-net-bridge-bridge-nf-call-iptables{rest}"
                    ),
                ];
            }
        }
    }
    cmd.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parse_and_decode() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"zipped").unwrap();
        let gz_b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
        let doc = format!(
            "## template: jinja\n#cloud-config\n\nwrite_files:\n-   path: /a\n    encoding: \"base64\"\n    content: |\n      aGk=\n-   path: /b\n    encoding: \"gzip+base64\"\n    content: {gz_b64}\nruncmd:\n  - \"echo 1\"\n  - [ls, -l]\nntp:\n  servers: [a]\n"
        );
        let a = actions(&doc).unwrap();
        assert_eq!(a.ignored_modules, vec!["ntp"]);
        match &a.actions[0] {
            Action::Write(f) => assert_eq!(f.content, b"hi"),
            _ => panic!(),
        }
        match &a.actions[1] {
            Action::Write(f) => assert_eq!(f.content, b"zipped"),
            _ => panic!(),
        }
        assert_eq!(
            a.actions[2],
            Action::Run(vec!["/bin/sh".into(), "-c".into(), "echo 1".into()])
        );
        assert_eq!(a.actions[3], Action::Run(vec!["ls".into(), "-l".into()]));
    }

    #[test]
    fn kubeadm_rewrite() {
        let c = capd_command(&[
            "/bin/sh".into(),
            "-c".into(),
            "kubeadm join --config /x  && echo success > /y".into(),
        ]);
        assert!(c[2].starts_with("echo started > /run/cluster-api/capd.bootstrap.started && kubeadm join --ignore-preflight-errors="));
        assert!(c[2].ends_with(" --config /x  && echo success > /y"));
    }
}
