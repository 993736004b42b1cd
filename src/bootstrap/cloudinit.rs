//! Assemble the cloud-config in CABPK's layout: the text its Go templates
//! (`bootstrap/kubeadm/internal/cloudinit` upstream) produce, byte for
//! byte, written directly (no template engine).

#[derive(Debug, Clone, Default)]
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

#[derive(Debug, Clone, Default)]
pub(crate) struct UserEntry {
    pub(crate) name: String,
    /// `(cloud-init key, raw value)` in CABPK's order.
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct NtpEntry {
    pub(crate) enabled: String,
    pub(crate) servers: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Partition {
    pub(crate) device: String,
    pub(crate) table_type: String,
    pub(crate) layout: String,
    pub(crate) layout_items: Vec<String>,
    pub(crate) overwrite: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Filesystem {
    pub(crate) label: String,
    pub(crate) filesystem: String,
    pub(crate) device: String,
    pub(crate) partition: String,
    pub(crate) overwrite: String,
    pub(crate) replace_fs: String,
    pub(crate) extra_opts: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct DiskSetup {
    pub(crate) partitions: Vec<Partition>,
    pub(crate) filesystems: Vec<Filesystem>,
}

#[derive(Debug, Clone, Default)]
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

/// The cloud-config, line by line: every line is written with the newline
/// before it, and the document ends with one. A field whose value is empty
/// is left out, as CABPK's `{{ if }}` does.
pub(crate) fn render(cc: &CloudConfig) -> String {
    let mut w = Lines(String::with_capacity(4096));
    w.0.push_str("## template: jinja\n#cloud-config\n\nwrite_files:");
    for f in &cc.files {
        write_file(&mut w, f);
    }
    if !cc.boot_commands.is_empty() {
        w.line("bootcmd:");
        for c in &cc.boot_commands {
            w.item("  - ", &go_quote(c));
        }
    }
    w.line("runcmd:");
    for c in &cc.pre_commands {
        w.item("  - ", &go_quote(c));
    }
    w.item("  - ", &cc.kubeadm_command);
    for c in &cc.post_commands {
        w.item("  - ", &go_quote(c));
    }
    if let Some(ntp) = &cc.ntp {
        w.line("ntp:");
        w.field("  enabled: ", &ntp.enabled);
        w.line("  servers:");
        for s in &ntp.servers {
            w.item("    - ", s);
        }
    }
    if !cc.users.is_empty() {
        w.line("users:");
        for u in &cc.users {
            user(&mut w, u);
        }
    }
    if let Some(d) = &cc.disk_setup {
        disk_setup(&mut w, d);
    }
    if !cc.mounts.is_empty() {
        w.line("mounts:");
        for m in &cc.mounts {
            for (i, e) in m.iter().enumerate() {
                w.item(if i == 0 { "  - - " } else { "    - " }, e);
            }
            // The template prints four spaces on a line of their own after
            // each mount.
            w.line("    ");
        }
    }
    w.0.push('\n');
    w.0
}

/// The output, one line at a time (each preceded by a newline).
struct Lines(String);

impl Lines {
    fn line(&mut self, text: &str) {
        self.0.push('\n');
        self.0.push_str(text);
    }

    fn item(&mut self, prefix: &str, value: &str) {
        self.line(prefix);
        self.0.push_str(value);
    }

    /// `prefix value`, only when the value is set (the template's
    /// `{% if value %}`: an empty string is unset).
    fn field(&mut self, prefix: &str, value: &str) {
        if !value.is_empty() {
            self.item(prefix, value);
        }
    }

    fn quoted(&mut self, prefix: &str, value: &str, quote: char) {
        if !value.is_empty() {
            self.line(prefix);
            self.0.push(quote);
            self.0.push_str(value);
            self.0.push(quote);
        }
    }
}

fn write_file(w: &mut Lines, f: &WriteFile) {
    w.item("-   path: ", &f.path);
    w.quoted("    encoding: ", &f.encoding, '"');
    w.field("    owner: ", &f.owner);
    w.quoted("    permissions: ", &f.permissions, '\'');
    w.field("    append: ", &f.append);
    if f.inline.is_empty() {
        w.line("    content: |\n");
        w.0.push_str(&super::refs::indent(&f.content, 6));
    } else {
        w.quoted("    content: ", &f.inline, '"');
    }
}

fn user(w: &mut Lines, u: &UserEntry) {
    w.item("  - name: ", &u.name);
    for (k, v) in &u.fields {
        w.line("    ");
        w.0.push_str(k);
        w.0.push_str(": ");
        w.0.push_str(v);
    }
    if !u.ssh_authorized_keys.is_empty() {
        w.line("    ssh_authorized_keys:");
        for k in &u.ssh_authorized_keys {
            w.item("      - ", k);
        }
    }
}

fn disk_setup(w: &mut Lines, d: &DiskSetup) {
    w.line("disk_setup:");
    for p in &d.partitions {
        w.line("  ");
        w.0.push_str(&p.device);
        w.0.push(':');
        w.field("    table_type: ", &p.table_type);
        if !p.layout_items.is_empty() {
            w.line("    layout:");
            for l in &p.layout_items {
                w.item("      - ", l);
            }
        } else {
            w.field("    layout: ", &p.layout);
        }
        w.field("    overwrite: ", &p.overwrite);
    }
    w.line("fs_setup:");
    for f in &d.filesystems {
        w.item("  - label: ", &f.label);
        w.item("    filesystem: ", &f.filesystem);
        w.item("    device: ", &f.device);
        w.field("    partition: ", &f.partition);
        w.field("    overwrite: ", &f.overwrite);
        w.field("    replace_fs: ", &f.replace_fs);
        if !f.extra_opts.is_empty() {
            w.line("    extra_opts:");
            for o in &f.extra_opts {
                w.item("      - ", o);
            }
        }
    }
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
        let out = render(&cc);
        let expected = "## template: jinja\n#cloud-config\n\nwrite_files:\n-   path: /tmp/a\n    encoding: \"base64\"\n    content: |\n      aGk=\n-   path: /tmp/b\n    append: true\n    content: |\n      hi\nbootcmd:\n  - \"echo $(date)\"\nruncmd:\n  - kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml  && echo success > /run/cluster-api/bootstrap-success.complete\nmounts:\n  - - test_disk\n    - /var/lib/testdir\n    \n";
        assert_eq!(out, expected);
    }

    fn file(path: &str, encoding: &str, owner: &str, perms: &str, content: &str) -> WriteFile {
        WriteFile {
            path: path.into(),
            encoding: encoding.into(),
            owner: owner.into(),
            permissions: perms.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Every section, against the text the Go-template layout (rendered by
    /// the template engine this file used before) produced for the same
    /// input.
    #[test]
    fn every_section_as_the_template_wrote_it() {
        let fs = |label: &str, fs: &str, dev: &str| Filesystem {
            label: label.into(),
            filesystem: fs.into(),
            device: dev.into(),
            ..Default::default()
        };
        let cc = CloudConfig {
            files: vec![
                file("/etc/a", "base64", "root:root", "0640", "YQ==\nYg=="),
                WriteFile {
                    append: "true".into(),
                    ..file("/etc/b", "", "", "", "x")
                },
                WriteFile {
                    inline: "placeholder".into(),
                    ..file("/run/p", "", "", "", "")
                },
            ],
            boot_commands: strings(&["echo boot"]),
            pre_commands: strings(&["echo \"pre\""]),
            kubeadm_command: "kubeadm init && echo ok".into(),
            post_commands: strings(&["echo post", "echo two"]),
            ntp: Some(NtpEntry {
                enabled: "true".into(),
                servers: strings(&["a.ntp", "b.ntp"]),
            }),
            users: vec![
                UserEntry {
                    name: "u1".into(),
                    fields: vec![
                        ("sudo".into(), "ALL=(ALL) NOPASSWD:ALL".into()),
                        ("shell".into(), "/bin/bash".into()),
                    ],
                    ssh_authorized_keys: strings(&["ssh-ed25519 AAA k1", "ssh-rsa BBB k2"]),
                },
                UserEntry {
                    name: "u2".into(),
                    ..Default::default()
                },
            ],
            disk_setup: Some(DiskSetup {
                partitions: vec![
                    Partition {
                        device: "/dev/sdb".into(),
                        table_type: "gpt".into(),
                        layout_items: strings(&["25", "75"]),
                        overwrite: "false".into(),
                        ..Default::default()
                    },
                    Partition {
                        device: "/dev/sdc".into(),
                        layout: "true".into(),
                        ..Default::default()
                    },
                ],
                filesystems: vec![
                    Filesystem {
                        partition: "1".into(),
                        overwrite: "true".into(),
                        replace_fs: "ntfs".into(),
                        extra_opts: strings(&["-F", "-E"]),
                        ..fs("etcd", "ext4", "/dev/sdb")
                    },
                    fs("data", "xfs", "/dev/sdc"),
                ],
            }),
            mounts: vec![
                strings(&["etcd", "/var/lib/etcd"]),
                strings(&["data", "/data", "auto"]),
            ],
        };
        let expected = "## template: jinja\n#cloud-config\n\nwrite_files:\n-   path: /etc/a\n    encoding: \"base64\"\n    owner: root:root\n    permissions: '0640'\n    content: |\n      YQ==\n      Yg==\n-   path: /etc/b\n    append: true\n    content: |\n      x\n-   path: /run/p\n    content: \"placeholder\"\nbootcmd:\n  - \"echo boot\"\nruncmd:\n  - \"echo \\\"pre\\\"\"\n  - kubeadm init && echo ok\n  - \"echo post\"\n  - \"echo two\"\nntp:\n  enabled: true\n  servers:\n    - a.ntp\n    - b.ntp\nusers:\n  - name: u1\n    sudo: ALL=(ALL) NOPASSWD:ALL\n    shell: /bin/bash\n    ssh_authorized_keys:\n      - ssh-ed25519 AAA k1\n      - ssh-rsa BBB k2\n  - name: u2\ndisk_setup:\n  /dev/sdb:\n    table_type: gpt\n    layout:\n      - 25\n      - 75\n    overwrite: false\n  /dev/sdc:\n    layout: true\nfs_setup:\n  - label: etcd\n    filesystem: ext4\n    device: /dev/sdb\n    partition: 1\n    overwrite: true\n    replace_fs: ntfs\n    extra_opts:\n      - -F\n      - -E\n  - label: data\n    filesystem: xfs\n    device: /dev/sdc\nmounts:\n  - - etcd\n    - /var/lib/etcd\n    \n  - - data\n    - /data\n    - auto\n    \n";
        assert_eq!(render(&cc), expected);

        // Empty sections: present but empty where the template had no
        // `if` around them.
        let bare = CloudConfig {
            kubeadm_command: "k".into(),
            ntp: Some(NtpEntry::default()),
            disk_setup: Some(DiskSetup::default()),
            ..Default::default()
        };
        assert_eq!(
            render(&bare),
            "## template: jinja\n#cloud-config\n\nwrite_files:\nruncmd:\n  - k\nntp:\n  servers:\ndisk_setup:\nfs_setup:\n"
        );
    }
}
