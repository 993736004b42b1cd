//! The one output gate: data on stdout, messages and progress on stderr.
//! Colours follow the [`ColorChoice`] the settings layer resolved: on a
//! terminal by default, never with `--no-color`, `NO_COLOR`, `CLICOLOR=0` or
//! `TERM=dumb`, always with `CLICOLOR_FORCE`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::args::OutputFormat;
use super::json::JsonEvent;
use super::settings::ColorChoice;
use crate::plan::render::Style;

#[derive(Debug, Clone)]
pub(crate) struct Printer {
    /// Colours on stdout.
    pub(crate) color: bool,
    /// Colours on stderr.
    pub(crate) color_err: bool,
    pub(crate) json: bool,
    /// `--full`: big plans in full instead of summarised per machine group.
    pub(crate) full: bool,
    /// A live progress bar can be drawn: stderr is a terminal and not
    /// `TERM=dumb`.
    pub(crate) live: bool,
    /// The version line has been written.
    versioned: Arc<AtomicBool>,
}

impl Printer {
    pub(crate) fn new(color: ColorChoice, json: bool, dumb_terminal: bool) -> Printer {
        let stderr_tty = std::io::stderr().is_terminal();
        let on = |tty: bool| match color {
            ColorChoice::Never => false,
            ColorChoice::Always => true,
            ColorChoice::Auto => tty,
        };
        Printer {
            color: !json && on(std::io::stdout().is_terminal()),
            color_err: on(stderr_tty),
            json,
            full: false,
            live: stderr_tty && !dumb_terminal,
            versioned: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn style(&self) -> Style {
        Style {
            color: self.color,
            full: self.full,
        }
    }

    /// Data: the plan, the state, the graph.
    pub(crate) fn data(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    }

    /// A whole document on stdout, for `-o json` (pretty) or `-o yaml`.
    pub(crate) fn document(&self, format: OutputFormat, v: &impl serde::Serialize) {
        let text = match format {
            OutputFormat::Yaml => serde_yaml::to_string(v).expect("documents are YAML"),
            OutputFormat::Json | OutputFormat::Text => {
                serde_json::to_string_pretty(v).expect("values serialise") + "\n"
            }
        };
        self.data(&text);
    }

    /// One JSON event per line on stdout. Every stream starts with the
    /// version line: it is written before the first other event, and a
    /// version event asked for later is not repeated.
    pub(crate) fn emit(&self, e: &JsonEvent<'_>) {
        let first = !self.versioned.swap(true, Ordering::Relaxed);
        if matches!(e, JsonEvent::Version { .. }) {
            if !first {
                return;
            }
        } else if first {
            self.write_event(&JsonEvent::version());
        }
        self.write_event(e);
    }

    fn write_event(&self, e: &JsonEvent<'_>) {
        let line = e.line(time::OffsetDateTime::now_utc());
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }

    /// Messages for people (stderr).
    pub(crate) fn message(&self, s: &str) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{s}");
    }

    /// A question on stderr, answered on the same line.
    pub(crate) fn prompt(&self, s: &str) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(s.as_bytes());
        let _ = err.flush();
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
