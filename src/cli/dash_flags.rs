//! Terraform's single-dash spelling of long flags (`-auto-approve`,
//! `-var-file=x.tfvars`, `-refresh=false`...), rewritten to clap's
//! `--long` form before parsing, so a Terraform habit just works.
//!
//! Only words that cannot be one of capi's short flags with an attached
//! value are touched: `-fcluster.yaml` stays `-f cluster.yaml`. An unknown
//! dash word (`-auto-aprove`) becomes `--auto-aprove`, so clap's error names
//! the whole flag and suggests the nearest one. `-input=...` and
//! `-lock=true` mean nothing here and are dropped; everything after `--`
//! is left alone.

use std::ffi::OsString;

/// Terraform's long flags that capi has under the same name.
const SAME_NAME: &[&str] = &[
    "auto-approve",
    "destroy",
    "detailed-exitcode",
    "json",
    "lock-timeout",
    "no-color",
    "out",
    "parallelism",
    "refresh",
    "replace",
    "state",
    "target",
    "var",
    "var-file",
];

/// capi's short flags (`-f FILE`, `-o FILE`, `-n NAMESPACE`, `-R`, `-v`...):
/// a dash word starting with one of these may be the flag with its value
/// attached, unless it is a known long name.
const SHORT: &[char] = &['f', 'o', 'n', 'R', 'v', 'h', 'V'];

/// Rewrite the argument list (program name first).
pub(crate) fn normalise(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for a in args {
        if rest {
            out.push(a);
            continue;
        }
        let Some(s) = a.to_str() else {
            out.push(a);
            continue;
        };
        if s == "--" {
            rest = true;
            out.push(a);
            continue;
        }
        match rewrite(s) {
            Rewrite::Keep => out.push(a),
            Rewrite::Drop => {}
            Rewrite::To(t) => out.push(t.into()),
        }
    }
    out
}

enum Rewrite {
    Keep,
    Drop,
    To(String),
}

fn rewrite(s: &str) -> Rewrite {
    let Some(word) = s.strip_prefix('-') else {
        return Rewrite::Keep;
    };
    if word.starts_with('-') || word.chars().count() < 2 {
        return Rewrite::Keep;
    }
    let (name, value) = match word.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (word, None),
    };
    let looks_like_a_flag =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    if !looks_like_a_flag {
        return Rewrite::Keep;
    }
    // Accepted and meaningless here: capi asks only on a terminal or when
    // stdin has an answer, and always locks.
    match (name, value) {
        ("input", Some(_)) | ("lock", Some("true")) => return Rewrite::Drop,
        _ => {}
    }
    if SAME_NAME.contains(&name) {
        return Rewrite::To(format!("-{s}"));
    }
    let first = name.chars().next().unwrap_or('-');
    if SHORT.contains(&first) && !name.contains('-') {
        // `-fcluster` is `-f cluster`; leave it to clap.
        return Rewrite::Keep;
    }
    Rewrite::To(format!("-{s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalise(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn terraform_spellings_become_long_flags() {
        assert_eq!(
            norm(&[
                "capi",
                "apply",
                "-auto-approve",
                "-var-file=x.env",
                "-var",
                "A=B",
                "-refresh=false",
                "-parallelism=3",
                "-out",
                "p.plan",
                "-no-color",
                "-json",
                "-detailed-exitcode",
                "-lock-timeout=5s",
                "-state=s.json",
                "-target",
                "demo/network",
                "-replace=demo/machine/m-0",
            ]),
            [
                "capi",
                "apply",
                "--auto-approve",
                "--var-file=x.env",
                "--var",
                "A=B",
                "--refresh=false",
                "--parallelism=3",
                "--out",
                "p.plan",
                "--no-color",
                "--json",
                "--detailed-exitcode",
                "--lock-timeout=5s",
                "--state=s.json",
                "--target",
                "demo/network",
                "--replace=demo/machine/m-0",
            ]
        );
    }

    #[test]
    fn no_ops_are_dropped_and_lock_false_is_not() {
        assert_eq!(
            norm(&["capi", "plan", "-input=false", "-lock=true", "-lock=false"]),
            ["capi", "plan", "--lock=false"]
        );
    }

    #[test]
    fn short_flags_with_attached_values_and_values_stay() {
        assert_eq!(
            norm(&[
                "capi",
                "plan",
                "-fcluster.yaml",
                "-f",
                "-",
                "-ofile",
                "-nns",
                "-R"
            ]),
            [
                "capi",
                "plan",
                "-fcluster.yaml",
                "-f",
                "-",
                "-ofile",
                "-nns",
                "-R"
            ]
        );
        assert_eq!(
            norm(&["capi", "x", "--", "-auto-approve"]),
            ["capi", "x", "--", "-auto-approve"]
        );
    }

    #[test]
    fn unknown_dash_words_reach_clap_whole() {
        assert_eq!(
            norm(&["capi", "apply", "-auto-aprove", "-bogus"]),
            ["capi", "apply", "--auto-aprove", "--bogus"]
        );
    }
}
