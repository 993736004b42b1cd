//! The limits a template runs within (docs/reliability.md, "Limits"; the
//! figures are in `manifest/limits.rs`): the size of what one function
//! builds and of a count, the nesting of blocks, parentheses and built
//! values, the text one execution writes, the values it reads and builds in
//! all, and its `{{range}}` iterations. Each crossing is a
//! [`TemplateError::Limit`] that says which limit and how to fix it.

use serde_json::Value;

use super::TemplateError;
use crate::manifest::limits::{
    MAX_TEMPLATE_ITERATIONS, MAX_TEMPLATE_NESTING, MAX_TEMPLATE_OUTPUT, MAX_TEMPLATE_VALUE,
    MAX_TEMPLATE_WORK,
};

const HELP_VALUE: &str = "a template function builds at most 1 MiB (1048576 bytes) and a count or width is at most 1048576 (docs/reliability.md, \"Limits\"): use a smaller count, or write the value out in the manifest";
const HELP_NESTING: &str = "{{if}}, {{range}} and {{with}} blocks, parentheses and the lists and dicts a template builds nest at most 100 levels (docs/reliability.md, \"Limits\"): flatten the template";
const HELP_OUTPUT: &str = "a template writes at most 1 MiB (1048576 bytes) in one run (docs/reliability.md, \"Limits\"): generate less, or write the value out in the manifest";
const HELP_WORK: &str = "a template reads and builds at most 16 MiB of values in one run (docs/reliability.md, \"Limits\"): loop over smaller values, or read large values once, outside the loop";
const HELP_ITERATIONS: &str = "{{range}} runs at most 100000 iterations in one run of a template, nested loops included (docs/reliability.md, \"Limits\"): iterate over less";

fn limit(message: String, help: &'static str) -> TemplateError {
    TemplateError::Limit { message, help }
}

/// A function (or `indent`'s width, `repeat`'s count) would build `size`
/// bytes: refused past [`MAX_TEMPLATE_VALUE`], before anything is built.
pub(super) fn check_result(name: &str, size: usize) -> Result<(), TemplateError> {
    if size > MAX_TEMPLATE_VALUE {
        return Err(limit(
            format!("{name} would build {size} bytes, more than one template function may build ({MAX_TEMPLATE_VALUE})"),
            HELP_VALUE,
        ));
    }
    Ok(())
}

/// A count or width given to `name`: a non-negative integer at most
/// [`MAX_TEMPLATE_VALUE`].
pub(super) fn count(name: &str, what: &str, v: &Value) -> Result<usize, TemplateError> {
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
        _ => None,
    }
    .ok_or_else(|| TemplateError::Exec(format!("{name}: the {what} must be an integer")))?;
    if n < 0 {
        return Err(TemplateError::Exec(format!(
            "{name}: the {what} {n} is negative"
        )));
    }
    if n as u64 > MAX_TEMPLATE_VALUE as u64 {
        return Err(limit(
            format!("{name}: the {what} {n} is more than a template count may be ({MAX_TEMPLATE_VALUE})"),
            HELP_VALUE,
        ));
    }
    Ok(n as usize)
}

/// Nesting level `level` (1 for the outermost block or parenthesis).
pub(super) fn check_nesting(level: usize, what: &str) -> Result<(), TemplateError> {
    if level > MAX_TEMPLATE_NESTING {
        return Err(limit(
            format!("{what} nest more than {MAX_TEMPLATE_NESTING} levels deep"),
            HELP_NESTING,
        ));
    }
    Ok(())
}

/// The size of `v` as the limits count it (a string's bytes, at least 1 per
/// value, keys included), refusing values that nest too deep.
pub(super) fn measure(v: &Value) -> Result<usize, TemplateError> {
    fn walk(v: &Value, level: usize) -> Result<usize, TemplateError> {
        Ok(match v {
            Value::Null | Value::Bool(_) => 1,
            Value::Number(_) => 8,
            Value::String(s) => s.len().max(1),
            Value::Array(a) => {
                check_nesting(level, "lists and dicts the template builds")?;
                let mut n = 1usize;
                for x in a {
                    n = n.saturating_add(walk(x, level + 1)?);
                }
                n
            }
            Value::Object(o) => {
                check_nesting(level, "lists and dicts the template builds")?;
                let mut n = 1usize;
                for (k, x) in o {
                    n = n
                        .saturating_add(k.len())
                        .saturating_add(walk(x, level + 1)?);
                }
                n
            }
        })
    }
    walk(v, 1)
}

/// What one execution has used so far.
#[derive(Debug, Default)]
pub(super) struct Budget {
    work: usize,
    iterations: usize,
}

impl Budget {
    /// A value read or built: counted against [`MAX_TEMPLATE_WORK`].
    pub(super) fn charge(&mut self, v: &Value) -> Result<(), TemplateError> {
        self.work = self.work.saturating_add(measure(v)?);
        if self.work > MAX_TEMPLATE_WORK {
            return Err(limit(
                format!("the template reads and builds more than {MAX_TEMPLATE_WORK} bytes of values in one run"),
                HELP_WORK,
            ));
        }
        Ok(())
    }

    /// A function's result: at most [`MAX_TEMPLATE_VALUE`], then charged.
    pub(super) fn result(&mut self, name: &str, v: &Value) -> Result<(), TemplateError> {
        check_result(name, measure(v)?)?;
        self.charge(v)
    }

    /// A `{{range}}` about to run `n` iterations.
    pub(super) fn iterate(&mut self, n: usize) -> Result<(), TemplateError> {
        self.iterations = self.iterations.saturating_add(n);
        if self.iterations > MAX_TEMPLATE_ITERATIONS {
            return Err(limit(
                format!("the template's {{{{range}}}} loops run more than {MAX_TEMPLATE_ITERATIONS} iterations in all"),
                HELP_ITERATIONS,
            ));
        }
        Ok(())
    }
}

/// Append `s` to an execution's output, at most [`MAX_TEMPLATE_OUTPUT`].
pub(super) fn write(out: &mut String, s: &str) -> Result<(), TemplateError> {
    if out.len().saturating_add(s.len()) > MAX_TEMPLATE_OUTPUT {
        return Err(limit(
            format!("the template writes more than {MAX_TEMPLATE_OUTPUT} bytes"),
            HELP_OUTPUT,
        ));
    }
    out.push_str(s);
    Ok(())
}

/// A writer that refuses to grow past [`MAX_TEMPLATE_VALUE`] (`toYaml`,
/// `toJson`): serialisation stops as soon as it would.
#[derive(Default)]
pub(super) struct Capped {
    pub(super) buf: Vec<u8>,
    pub(super) overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len().saturating_add(b.len()) > MAX_TEMPLATE_VALUE {
            self.overflowed = true;
            return Err(std::io::Error::other("template value limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serialise `v` with `to` into a [`Capped`] buffer: the text, or the limit
/// error when it would pass [`MAX_TEMPLATE_VALUE`].
pub(super) fn serialise<E: std::fmt::Display>(
    name: &str,
    v: &Value,
    to: impl FnOnce(&mut Capped, &Value) -> Result<(), E>,
) -> Result<String, TemplateError> {
    let mut w = Capped::default();
    let r = to(&mut w, v);
    if w.overflowed {
        return Err(limit(
            format!("{name} would build more than {MAX_TEMPLATE_VALUE} bytes, the most one template function may build"),
            HELP_VALUE,
        ));
    }
    r.map_err(|e| TemplateError::Exec(format!("{name}: {e}")))?;
    String::from_utf8(w.buf).map_err(|e| TemplateError::Exec(format!("{name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::{render, TemplateError};
    use serde_json::json;

    /// `src` is refused by a limit whose message contains `what`.
    fn limited(src: &str, data: serde_json::Value, what: &str) -> &'static str {
        match render(src, &data) {
            Err(TemplateError::Limit { message, help }) => {
                assert!(message.contains(what), "{src}: {message}");
                assert!(help.contains("docs/reliability.md"), "{help}");
                help
            }
            other => panic!("{src}: expected the limit {what:?}, got {other:?}"),
        }
    }

    #[test]
    fn one_function_builds_at_most_a_mebibyte() {
        let d = json!({});
        // Refused before building: a billion bytes would abort the process.
        limited(
            r#"{{ repeat 1000000000 "x" }}"#,
            d.clone(),
            "repeat: the count 1000000000",
        );
        limited(
            r#"{{ repeat 1048576 "xy" }}"#,
            d.clone(),
            "repeat would build 2097152 bytes",
        );
        assert_eq!(render(r#"{{ repeat 3 "ab" }}"#, &d).unwrap(), "ababab");
        assert_eq!(
            render(r#"{{ len (repeat 1048576 "x") }}"#, &d).unwrap(),
            "1048576"
        );
        // A count is bounded even for an empty string, and is never negative.
        limited(
            r#"{{ repeat 9223372036854775807 "" }}"#,
            d.clone(),
            "the count",
        );
        // Past 64 bits the literal is a float: not a count.
        assert!(render(r#"{{ repeat 18446744073709551615 "" }}"#, &d).is_err());
        assert!(
            matches!(render(r#"{{ repeat -1 "x" }}"#, &d), Err(TemplateError::Exec(m)) if m.contains("negative"))
        );
        // indent's width times the lines.
        limited(
            r#"{{ indent 2000000 "x" }}"#,
            d.clone(),
            "indent: the width 2000000",
        );
        limited(
            r#"{{ "x" | nindent 1000000000 }}"#,
            d.clone(),
            "nindent: the width",
        );
        limited(
            r#"{{ repeat 600000 "\n" | indent 2 }}"#,
            d.clone(),
            "indent would build",
        );
        assert_eq!(
            render(r#"{{ "a\nb" | indent 2 }}"#, &d).unwrap(),
            "  a\n  b"
        );
        // replace and join multiply; toYaml and toJson stop as they pass it.
        limited(
            r#"{{ repeat 1000 "a" | replace "a" (repeat 2000 "b") }}"#,
            d.clone(),
            "replace would build 2000000 bytes",
        );
        limited(
            r#"{{ repeat 1000 "a" | replace "" (repeat 2000 "b") }}"#,
            d.clone(),
            "replace would build",
        );
        let words = json!({"l": vec!["x"; 1000]});
        limited(
            r#"{{ join (repeat 2000 "-") .l }}"#,
            words,
            "join would build",
        );
        // 400,001 counted, but 1.6 MB of JSON or YAML.
        let many = json!({"l": vec!["a"; 400_000]});
        limited(
            "{{ toJson .l }}",
            many.clone(),
            "toJson would build more than 1048576 bytes",
        );
        limited(
            "{{ toYaml .l }}",
            many,
            "toYaml would build more than 1048576 bytes",
        );
        limited(
            r#"{{ $s := repeat 1000000 "x" }}{{ list $s $s }}"#,
            d.clone(),
            "list would build",
        );
        limited(
            r#"{{ splitList "" (repeat 1000000 "x") }}"#,
            d,
            "splitList would build",
        );
    }

    #[test]
    fn blocks_parentheses_and_values_nest_at_most_a_hundred_levels() {
        let d = json!({"x": true});
        let deep = |n: usize| format!("{}y{}", "{{ if .x }}".repeat(n), "{{ end }}".repeat(n));
        assert_eq!(render(&deep(100), &d).unwrap(), "y");
        let help = limited(
            &deep(101),
            d.clone(),
            "blocks nest more than 100 levels deep",
        );
        assert!(help.contains("flatten"));
        // 100,000 levels: refused, not a stack overflow.
        limited(
            &deep(100_000),
            d.clone(),
            "blocks nest more than 100 levels deep",
        );
        let ranges = format!(
            "{}{}",
            "{{ range .l }}".repeat(50_000),
            "{{ end }}".repeat(50_000)
        );
        limited(&ranges, d.clone(), "blocks nest");
        let parens = |n: usize| format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n));
        assert_eq!(render(&parens(100), &d).unwrap(), "1");
        limited(
            &parens(101),
            d.clone(),
            "parentheses nest more than 100 levels deep",
        );
        limited(&parens(100_000), d.clone(), "parentheses nest");
        // Values built in a loop: a list in a list in a list...
        let grow = r#"{{ $x := list }}{{ range $i, $_ := repeat 200 "x" | splitList "" }}{{ $x = list $x }}{{ end }}{{ len $x }}"#;
        limited(
            grow,
            d,
            "lists and dicts the template builds nest more than 100 levels deep",
        );
    }

    #[test]
    fn one_run_writes_at_most_a_mebibyte() {
        let d = json!({"l": vec![0; 2000]});
        // 2,000 × 1,000 bytes: each write is small, the whole is not.
        let help = limited(
            r#"{{ $s := repeat 1000 "x" }}{{ range .l }}{{ $s }}{{ end }}"#,
            d.clone(),
            "the template writes more than 1048576 bytes",
        );
        assert!(help.contains("generate less"));
        assert_eq!(
            render(r#"{{ range .l }}x{{ end }}"#, &d).unwrap().len(),
            2000
        );
    }

    #[test]
    fn one_run_reads_and_builds_at_most_sixteen_mebibytes() {
        // Nothing is written and every value is small enough, but a loop
        // that copies a 500 KB value per iteration is stopped.
        let d = json!({"big": "x".repeat(500_000), "l": vec![0; 100]});
        let help = limited(
            r#"{{ range .l }}{{ $c := $.big }}{{ end }}"#,
            d.clone(),
            "reads and builds more than 16777216 bytes",
        );
        assert!(help.contains("outside the loop"));
        assert_eq!(
            render(
                r#"{{ range $i, $_ := .l }}{{ if eq $i 0 }}{{ len $.big }}{{ end }}{{ end }}"#,
                &d
            )
            .unwrap(),
            "500000"
        );
    }

    #[test]
    fn one_run_iterates_at_most_a_hundred_thousand_times() {
        let d = json!({"l": vec![0; 1000]});
        // 1,000 × 1,000 nested iterations, writing nothing.
        let help = limited(
            r#"{{ range .l }}{{ range $.l }}{{ end }}{{ end }}"#,
            d.clone(),
            "loops run more than 100000 iterations in all",
        );
        assert!(help.contains("iterate over less"));
        assert_eq!(
            render(
                r#"{{ range .l }}{{ range $.l }}{{ end }}{{ end }}ok"#,
                &json!({"l": vec![0; 300]})
            )
            .unwrap(),
            "ok"
        );
    }
}
