//! The one output gate: data on stdout, messages and progress on stderr,
//! colours only on a terminal and never with NO_COLOR or --no-color.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::plan::render::Style;

#[derive(Debug, Clone)]
pub(crate) struct Printer {
    /// Colours on stdout.
    pub(crate) color: bool,
    /// Colours on stderr.
    pub(crate) color_err: bool,
    pub(crate) json: bool,
    pub(crate) stderr_tty: bool,
    pub(crate) stdin_tty: bool,
}

impl Printer {
    pub(crate) fn new(no_color: bool, json: bool) -> Printer {
        let allowed = !no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let stderr_tty = std::io::stderr().is_terminal();
        Printer {
            color: allowed && !json && std::io::stdout().is_terminal(),
            color_err: allowed && stderr_tty,
            json,
            stderr_tty,
            stdin_tty: std::io::stdin().is_terminal(),
        }
    }

    pub(crate) fn style(&self) -> Style {
        Style { color: self.color }
    }

    /// Data: the plan, the state, the graph.
    pub(crate) fn data(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    }

    /// One JSON event per line on stdout.
    pub(crate) fn event(&self, v: &Value) {
        self.data(&format!("{}\n", serde_json::to_string(v).expect("json")));
    }

    /// Messages for people (stderr).
    pub(crate) fn message(&self, s: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{s}");
    }

    pub(crate) fn warning(&self, s: &str) {
        let tag = if self.color_stderr() {
            "\x1b[33mWarning:\x1b[0m"
        } else {
            "Warning:"
        };
        self.message(&format!("{tag} {s}"));
    }

    pub(crate) fn error(&self, s: &str) {
        let tag = if self.color_stderr() {
            "\x1b[31mError:\x1b[0m"
        } else {
            "Error:"
        };
        self.message(&format!("{tag} {s}"));
    }

    pub(crate) fn color_stderr(&self) -> bool {
        self.color_err
    }

    /// Render a miette diagnostic on stderr.
    pub(crate) fn diagnostic(&self, d: &dyn miette::Diagnostic) {
        let handler = if self.color_stderr() {
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode())
        } else {
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        }
        .with_context_lines(1)
        .with_width(100);
        let mut s = String::new();
        if handler.render_report(&mut s, d).is_ok() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(s.as_bytes());
        }
    }
}
