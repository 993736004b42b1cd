//! Manifest problems: every message names the file, the line, what is wrong
//! and how to fix it. Problems are collected, never thrown one at a time.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, SourceCode};

use super::model::SourceFile;
use super::vars::MissingVar;
use super::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    /// Index into the manifest's file list (for source snippets).
    pub file_index: usize,
    /// The file name as the user gave it.
    pub file: String,
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
    /// Whether the file's lines may be shown around the problem. A file
    /// that is not YAML at all (a key file, `/etc/shadow`) is never quoted.
    pub(crate) quote: bool,
}

impl Problem {
    pub(crate) fn error(
        file_index: usize,
        file: &str,
        pos: Pos,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Error,
            file_index,
            file: file.to_string(),
            pos,
            message: message.into(),
            help: help.into(),
            quote: true,
        }
    }

    pub(crate) fn warning(
        file_index: usize,
        file: &str,
        pos: Pos,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(file_index, file, pos, message, help)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.pos.line, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not UTF-8 text: byte 0x{byte:02X} at line {line}, byte {column} of the line (offset {offset} in the file) is not valid UTF-8; capi reads manifests as UTF-8 (convert the file, e.g. with iconv, or remove the byte)")]
    NotUtf8 {
        path: String,
        line: usize,
        column: usize,
        offset: usize,
        byte: u8,
    },
    #[error("{path}: with it the manifests are more than {limit} bytes ({} MiB), the most capi reads in one run; the limit bounds the memory capi may use (docs/reliability.md, \"Limits\"): pass fewer or smaller files (objects capi does not manage, such as ConfigMaps, can be left out)", .limit >> 20)]
    TooLarge { path: String, limit: u64 },
    #[error("no manifests found: {0}")]
    NoManifests(String),
    #[error("{}", missing_vars_message(.0))]
    MissingVariables(Vec<MissingVar>),
    #[error("{} problem{} in the manifests", .problems.iter().filter(|p| p.is_error()).count(), if .problems.iter().filter(|p| p.is_error()).count() == 1 { "" } else { "s" })]
    Invalid {
        problems: Vec<Problem>,
        files: Vec<SourceFile>,
    },
}

fn missing_vars_message(vars: &[MissingVar]) -> String {
    let mut names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    names.sort();
    names.dedup();
    let mut s = format!(
        "value for variables [{}] is not set; set them with --var KEY=VALUE, a --var-file, or environment variables",
        names.join(", ")
    );
    for name in names {
        if let Some(first) = vars.iter().filter(|v| v.name == name).min() {
            s.push_str(&format!(
                "\n  {name}: first used at {}:{}",
                first.file, first.line
            ));
        }
    }
    s
}

/// A problem with its source text, for miette's renderer.
#[derive(Debug)]
pub struct ProblemReport {
    pub(crate) problem: Problem,
    pub(crate) source: Option<Snippet>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
    /// The span's label: "here", or what a variable was replaced with.
    pub(crate) label: String,
}

/// Start offsets of a text's lines, so that placing a problem costs a
/// binary search, not a scan of the file (a file with thousands of problems
/// is reported in linear time).
#[derive(Debug)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// Byte range of the 0-based line `i` (with its newline), clamped.
    fn line(&self, text: &str, i: usize) -> (usize, usize) {
        let i = i.min(self.starts.len() - 1);
        let end = self.starts.get(i + 1).copied().unwrap_or(text.len());
        (self.starts[i], end)
    }
}

/// The few lines of a file around a problem, shown with their real line
/// numbers: miette reads only this window, never the whole file.
#[derive(Debug)]
pub(crate) struct Snippet {
    name: String,
    /// The window's text, made safe for a terminal.
    text: String,
    start: usize,
    first_line: usize,
}

/// Control and direction-changing characters (U+202E and friends) replaced
/// by characters of the same length in bytes, so that a quoted line cannot
/// rewrite the terminal or reorder what it shows, and spans stay valid.
fn terminal_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            let unsafe_char = (c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}');
            if !unsafe_char {
                return c.to_string();
            }
            match c.len_utf8() {
                3 => '\u{fffd}'.to_string(),
                n => "?".repeat(n),
            }
        })
        .collect()
}

impl SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let window = self.text.as_str();
        let offset = span.offset().saturating_sub(self.start).min(window.len());
        let len = span.len().min(window.len() - offset);
        let inner = window.read_span(&(offset, len).into(), before, after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            (inner.span().offset() + self.start, inner.span().len()).into(),
            inner.line() + self.first_line,
            inner.column(),
            inner.line_count(),
        )))
    }
}

/// Lines shown before and after a problem's line (the renderer shows one).
const SNIPPET_LINES: usize = 2;

impl ProblemReport {
    /// Reports for at most `max` problems (in their order) and the number
    /// left out.
    pub(crate) fn all(
        problems: &[Problem],
        files: &[SourceFile],
        max: usize,
    ) -> (Vec<Self>, usize) {
        let mut indexes: std::collections::HashMap<usize, Indexes> = Default::default();
        let shown = problems.len().min(max);
        let mut reports = Vec::with_capacity(shown);
        for p in &problems[..shown] {
            let index = files.get(p.file_index).map(|f| {
                &*indexes.entry(p.file_index).or_insert_with(|| Indexes {
                    parsed: LineIndex::new(&f.text),
                    original: f.original.as_deref().map(LineIndex::new),
                })
            });
            reports.push(Self::with_index(p.clone(), files, index));
        }
        (reports, problems.len() - shown)
    }

    fn with_index(problem: Problem, files: &[SourceFile], index: Option<&Indexes>) -> Self {
        let file = files.get(problem.file_index).filter(|_| problem.quote);
        let (Some(file), Some(index)) = (file, index) else {
            return ProblemReport {
                problem,
                source: None,
                offset: 0,
                len: 0,
                label: String::new(),
            };
        };
        let line = (problem.pos.line as usize).saturating_sub(1);
        let (line_start, line_end) = index.parsed.line(&file.text, line);
        let parsed_line = &file.text[line_start..line_end];
        let (mut offset, mut len) = token_at(parsed_line, problem.pos.col);
        let mut label = "here".to_string();
        // Quote the file as written; the label says what a variable became.
        let (text, index, line_start) = match (&file.original, &index.original) {
            (Some(original), Some(oindex)) => {
                let (os, oe) = oindex.line(original, line);
                let written = &original[os..oe];
                if let Some(d) = substituted_span(written, parsed_line) {
                    let var = &written[d.at..d.at + d.written_len];
                    label = format!("here ({var} on this line became {})", d.value);
                    if offset >= d.at + d.parsed_len {
                        // After the value: the same text, shifted.
                        offset = offset + d.written_len - d.parsed_len;
                    } else if offset + len > d.at {
                        // On the value: the `${VAR}` as written.
                        (offset, len) = (d.at, d.written_len);
                        label = format!("here, after substitution: {}", d.value);
                    }
                }
                (&**original, oindex, os)
            }
            _ => (&*file.text, &index.parsed, line_start),
        };
        let first = line.saturating_sub(SNIPPET_LINES);
        let (start, _) = index.line(text, first);
        let (_, end) = index.line(text, line + SNIPPET_LINES);
        let source = Snippet {
            name: file.name.clone(),
            text: terminal_safe(&text[start..end]),
            start,
            first_line: first.min(index.starts.len() - 1),
        };
        ProblemReport {
            problem,
            source: Some(source),
            offset: line_start + offset,
            len,
            label,
        }
    }
}

/// Line indexes of a file: of the text parsed, and of the file as written
/// when they differ.
struct Indexes {
    parsed: LineIndex,
    original: Option<LineIndex>,
}

/// Where a line as written differs from the line parsed.
#[derive(Debug, PartialEq)]
struct Substitution {
    /// Byte offset of the difference (the same in both lines).
    at: usize,
    /// Its length as written (`${VAR}`) and as parsed (the value).
    written_len: usize,
    parsed_len: usize,
    /// The value, quoted and shortened.
    value: String,
}

/// Where a line as written differs from the line parsed (a `${VAR}`
/// replaced by its value). `None` when the lines are the same.
fn substituted_span(written: &str, parsed: &str) -> Option<Substitution> {
    let (w, p) = (
        written.trim_end_matches(['\n', '\r']),
        parsed.trim_end_matches(['\n', '\r']),
    );
    if w == p {
        return None;
    }
    let prefix = w
        .char_indices()
        .zip(p.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(w.len().min(p.len()));
    let suffix = w[prefix..]
        .chars()
        .rev()
        .zip(p[prefix..].chars().rev())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a.len_utf8())
        .sum::<usize>();
    let suffix = suffix.min(w.len() - prefix).min(p.len() - prefix);
    let written_len = w.len() - prefix - suffix;
    let value = &p[prefix..p.len() - suffix];
    let shown = if value.chars().count() > 60 {
        format!("{}…", value.chars().take(60).collect::<String>())
    } else {
        value.to_string()
    };
    Some(Substitution {
        at: prefix,
        written_len,
        parsed_len: value.len(),
        value: format!("{shown:?}"),
    })
}

/// Offset and length of the token at a 1-based column (in chars) of a line.
fn token_at(line: &str, col: u32) -> (usize, usize) {
    let col = col.saturating_sub(1) as usize;
    let start = line.char_indices().nth(col).map(|(b, _)| b).unwrap_or(0);
    let rest = &line[start..];
    let len = rest
        .find([':', '\n', '\r'])
        .unwrap_or(rest.len())
        .max(1)
        .min(rest.len());
    (start, len)
}

/// Byte offset and length of the token at a 1-based line/column (column in chars).
#[cfg(test)]
pub(crate) fn offset_of(text: &str, pos: Pos) -> (usize, usize) {
    let index = LineIndex::new(text);
    if pos.line as usize > index.starts.len() || pos.line == 0 {
        return (text.len().saturating_sub(1), 0);
    }
    let (start, end) = index.line(text, pos.line as usize - 1);
    let (offset, len) = token_at(&text[start..end], pos.col);
    (start + offset, len)
}

impl fmt::Display for ProblemReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.problem.file, self.problem.pos.line, self.problem.message
        )
    }
}

impl std::error::Error for ProblemReport {}

impl Diagnostic for ProblemReport {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.problem.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        if self.problem.help.is_empty() {
            None
        } else {
            Some(Box::new(&self.problem.help))
        }
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some(self.label.clone()),
            self.offset,
            self.len,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_substituted_line_points_at_the_variable_as_written() {
        let d = substituted_span("  replicas: ${N}\n", "  replicas: 4294967296\n").unwrap();
        assert_eq!(
            d,
            Substitution {
                at: 12,
                written_len: 4,
                parsed_len: 10,
                value: "\"4294967296\"".into()
            }
        );
        assert_eq!(substituted_span("a: 1\n", "a: 1\n"), None);
        // A shared tail is not part of the variable.
        let d = substituted_span("image: ${REPO}/node", "image: x/node").unwrap();
        assert_eq!((d.at, d.written_len, d.parsed_len), (7, 7, 1));
    }

    #[test]
    fn offsets() {
        let t = "a: 1\nbb: 2\n";
        assert_eq!(offset_of(t, Pos { line: 2, col: 1 }), (5, 2));
        assert_eq!(offset_of(t, Pos { line: 2, col: 5 }), (9, 1));
    }
}
