//! Assemble the cloud-config in CABPK's layout with tera.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::Value;

const TEMPLATE: &str = include_str!("cloud-config.tera");

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct WriteFile {
    pub(crate) path: String,
    pub(crate) encoding: String,
    pub(crate) owner: String,
    pub(crate) permissions: String,
    /// `"true"`, `"false"` or empty (not set).
    pub(crate) append: String,
    pub(crate) content: String,
    /// A one-line double-quoted content (the placeholder file).
    pub(crate) inline: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct UserEntry {
    pub(crate) name: String,
    /// `(cloud-init key, raw value)` in CABPK's order.
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct NtpEntry {
    pub(crate) enabled: String,
    pub(crate) servers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Partition {
    pub(crate) device: String,
    pub(crate) table_type: String,
    pub(crate) layout: String,
    pub(crate) layout_items: Vec<String>,
    pub(crate) overwrite: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Filesystem {
    pub(crate) label: String,
    pub(crate) filesystem: String,
    pub(crate) device: String,
    pub(crate) partition: String,
    pub(crate) overwrite: String,
    pub(crate) replace_fs: String,
    pub(crate) extra_opts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct DiskSetup {
    pub(crate) partitions: Vec<Partition>,
    pub(crate) filesystems: Vec<Filesystem>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct CloudConfig {
    pub(crate) files: Vec<WriteFile>,
    pub(crate) boot_commands: Vec<String>,
    pub(crate) pre_commands: Vec<String>,
    pub(crate) kubeadm_command: String,
    pub(crate) post_commands: Vec<String>,
    pub(crate) ntp: Option<NtpEntry>,
    pub(crate) users: Vec<UserEntry>,
    pub(crate) disk_setup: Option<DiskSetup>,
    pub(crate) mounts: Vec<Vec<String>>,
}

fn engine() -> &'static tera::Tera {
    static ENGINE: OnceLock<tera::Tera> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut t = tera::Tera::default();
        t.autoescape_on(vec![]);
        t.register_filter(
            "cabpk_indent",
            |v: &Value, args: &HashMap<String, Value>| {
                let n = args.get("n").and_then(Value::as_u64).unwrap_or(6) as usize;
                Ok(Value::String(super::refs::indent(
                    v.as_str().unwrap_or_default(),
                    n,
                )))
            },
        );
        t.register_filter("go_quote", |v: &Value, _: &HashMap<String, Value>| {
            Ok(Value::String(go_quote(v.as_str().unwrap_or_default())))
        });
        t.add_raw_template("cloud-config", TEMPLATE)
            .expect("the built-in cloud-config template parses");
        t
    })
}

pub(crate) fn render(cc: &CloudConfig) -> Result<String, String> {
    let ctx = tera::Context::from_serialize(cc).map_err(|e| e.to_string())?;
    engine().render("cloud-config", &ctx).map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })
}

/// Go's `strconv.Quote` (the `%q` verb CABPK uses for commands).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_like_go() {
        assert_eq!(
            go_quote("echo $(date) ': hello'"),
            "\"echo $(date) ': hello'\""
        );
        assert_eq!(go_quote("\"x\"\n\\"), "\"\\\"x\\\"\\n\\\\\"");
        assert_eq!(go_quote("\u{1}"), "\"\\x01\"");
    }

    #[test]
    fn layout() {
        let cc = CloudConfig {
            files: vec![
                WriteFile {
                    path: "/tmp/a".into(),
                    encoding: "base64".into(),
                    content: "aGk=".into(),
                    ..Default::default()
                },
                WriteFile {
                    path: "/tmp/b".into(),
                    append: "true".into(),
                    content: "hi".into(),
                    ..Default::default()
                },
            ],
            boot_commands: vec!["echo $(date)".into()],
            kubeadm_command: "kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml  && echo success > /run/cluster-api/bootstrap-success.complete".into(),
            mounts: vec![vec!["test_disk".into(), "/var/lib/testdir".into()]],
            ..Default::default()
        };
        let out = render(&cc).unwrap();
        let expected = "## template: jinja\n#cloud-config\n\nwrite_files:\n-   path: /tmp/a\n    encoding: \"base64\"\n    content: |\n      aGk=\n-   path: /tmp/b\n    append: true\n    content: |\n      hi\nbootcmd:\n  - \"echo $(date)\"\nruncmd:\n  - kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml  && echo success > /run/cluster-api/bootstrap-success.complete\nmounts:\n  - - test_disk\n    - /var/lib/testdir\n    \n";
        assert_eq!(out, expected);
    }
}
