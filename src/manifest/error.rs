//! Manifest problems: every message names the file, the line, what is wrong
//! and how to fix it. Problems are collected, never thrown one at a time.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

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
    pub(crate) source: Option<NamedSource<Arc<str>>>,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl ProblemReport {
    pub(crate) fn new(problem: Problem, files: &[SourceFile]) -> Self {
        let file = files.get(problem.file_index);
        let (offset, len) = file
            .map(|f| offset_of(&f.text, problem.pos))
            .unwrap_or((0, 0));
        let source = file.map(|f| NamedSource::new(f.name.clone(), f.text.clone()));
        ProblemReport {
            problem,
            source,
            offset,
            len,
        }
    }
}

/// Byte offset and length of the token at a 1-based line/column (column in chars).
pub(crate) fn offset_of(text: &str, pos: Pos) -> (usize, usize) {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i + 1 == pos.line as usize {
            let col = pos.col.saturating_sub(1) as usize;
            let start = line.char_indices().nth(col).map(|(b, _)| b).unwrap_or(0);
            let rest = &line[start..];
            let len = rest
                .find([':', '\n', '\r'])
                .unwrap_or(rest.len())
                .max(1)
                .min(rest.len());
            return (offset + start, len);
        }
        offset += line.len();
    }
    (text.len().saturating_sub(1), 0)
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
            Some("here".to_string()),
            self.offset,
            self.len,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        let t = "a: 1\nbb: 2\n";
        assert_eq!(offset_of(t, Pos { line: 2, col: 1 }), (5, 2));
        assert_eq!(offset_of(t, Pos { line: 2, col: 5 }), (9, 1));
    }
}
