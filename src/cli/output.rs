//! The one output gate: data on stdout, messages and progress on stderr.
//! Colours follow the [`ColorChoice`] the settings layer resolved: on a
//! terminal by default, never with `--no-color`, `NO_COLOR`, `CLICOLOR=0` or
//! `TERM=dumb`, always with `CLICOLOR_FORCE`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    /// Output held back while a burst is written (see [`Printer::hold`]);
    /// shared by clones, so what they write keeps its order.
    held: Arc<Mutex<Option<Held>>>,
    /// Closed while events are written on a thread of their own
    /// ([`Printer::emit_all_behind`]): every other write to stdout, and a
    /// question, waits for it; messages on stderr do not.
    gate: Arc<Gate>,
}

/// See [`Printer::emit_all_behind`].
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        while *closed {
            closed = self.opened.wait(closed).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Close it once it is open (one writer behind at a time).
    fn close(&self) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        while *closed {
            closed = self.opened.wait(closed).unwrap_or_else(|e| e.into_inner());
        }
        *closed = true;
    }

    fn open(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.opened.notify_all();
    }

    fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Background work: where it competes with the command's own threads for
/// a core, they go first (Linux's nice value is per thread). Best effort.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers; `who` 0 is the calling
    // thread on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// Opens the gate when the writing thread ends, by return or by panic.
struct Opener(Arc<Gate>);

impl Drop for Opener {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Output held by [`Printer::hold`], released when this is dropped (a
/// panic while it is held unwinds through here too).
pub(crate) struct Holding<'a>(&'a Printer);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// What [`Printer::hold`] keeps until it is released.
#[derive(Debug, Default)]
struct Held {
    out: Vec<u8>,
    err: Vec<u8>,
}

/// Write and flush one stream (a write error, such as a closed pipe, is
/// ignored as everywhere else in this gate).
fn write_now(mut w: impl Write, bytes: &[u8]) {
    let _ = w.write_all(bytes);
    let _ = w.flush();
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
            held: Arc::default(),
            gate: Arc::default(),
        }
    }

    /// Hold stdout and stderr output back until the guard is dropped: the
    /// progress reporter writes each burst of apply events (50 machines
    /// ending together at parallelism 50) with one `write` per stream
    /// instead of one or two per line. Prompts are never held.
    pub(crate) fn hold(&self) -> Holding<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get_or_insert_with(Held::default);
        Holding(self)
    }

    /// Write what was held, stdout first (also before an exit that skips
    /// the guards' drops).
    pub(crate) fn release(&self) {
        self.gate.wait();
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = held {
            if !h.out.is_empty() {
                write_now(std::io::stdout().lock(), &h.out);
            }
            if !h.err.is_empty() {
                write_now(std::io::stderr().lock(), &h.err);
            }
        }
    }

    /// `bytes` on stdout (`err`: stderr), now or when held output is released.
    fn put(&self, err: bool, bytes: &[u8]) {
        // Only stdout is ordered behind events written on their own thread:
        // a message for people (an interrupt's) is not held up by them.
        if !err {
            self.gate.wait();
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_mut() {
            Some(h) if err => h.err.extend_from_slice(bytes),
            Some(h) => h.out.extend_from_slice(bytes),
            None if err => write_now(std::io::stderr().lock(), bytes),
            None => write_now(std::io::stdout().lock(), bytes),
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
        self.put(false, s.as_bytes());
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
        self.emit_at(e, time::OffsetDateTime::now_utc());
    }

    /// [`Printer::emit`] of an event that happened `at`.
    pub(crate) fn emit_at(&self, e: &JsonEvent<'_>, at: time::OffsetDateTime) {
        // Before the version line is claimed: events written behind write
        // it first.
        self.gate.wait();
        let first = !self.versioned.swap(true, Ordering::Relaxed);
        if matches!(e, JsonEvent::Version { .. }) {
            if !first {
                return;
            }
        } else if first {
            self.put(false, &JsonEvent::version().line(at));
        }
        self.put(false, &e.line(at));
    }

    /// Many events in a row (a plan's thousands), as [`Printer::emit`]
    /// writes them: each line is serialised straight into a 64 KiB buffer on
    /// stdout (or into the held output), so no line is built whole in memory
    /// and the stream takes a `write` per 64 KiB instead of one per line.
    pub(crate) fn emit_all(&self, events: impl FnOnce(&mut dyn FnMut(&JsonEvent<'_>))) {
        self.gate.wait();
        self.emit_all_now(events, None);
    }

    /// [`Printer::emit_all`] on a thread of its own while the caller goes
    /// on, every line stamped with the time of this call. Every other write
    /// of this printer and its clones to stdout (and a question) waits until
    /// these events are written ([`Printer::written`] waits without blocking
    /// a runtime thread), and so does the end of the command
    /// ([`Printer::finish`]). The thread runs at a lower priority (nice 10).
    pub(crate) fn emit_all_behind(
        &self,
        events: impl FnOnce(&mut dyn FnMut(&JsonEvent<'_>)) + Send + 'static,
    ) {
        self.gate.close();
        // Stamped now, when the plan is final: the apply's first events,
        // written after these, happen later.
        let at = time::OffsetDateTime::now_utc();
        let (me, opener) = (self.clone(), Opener(self.gate.clone()));
        let ours = Arc::new(Mutex::new(Some(events)));
        let theirs = ours.clone();
        let spawned = std::thread::Builder::new()
            .name("capi-output".into())
            .spawn(move || {
                let _opener = opener;
                lower_priority();
                let events = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(events) = events {
                    me.emit_all_now(events, Some(at));
                }
            });
        if spawned.is_err() {
            // No thread: written here instead.
            self.gate.open();
            let events = ours.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(events) = events {
                self.emit_all_now(events, Some(at));
            }
        }
    }

    /// Wait, without blocking a runtime thread, until what
    /// [`Printer::emit_all_behind`] writes is written.
    pub(crate) async fn written(&self) {
        if self.gate.is_closed() {
            let gate = self.gate.clone();
            let _ = tokio::task::spawn_blocking(move || gate.wait()).await;
        }
    }

    /// The end of the command: wait for output still being written.
    pub(crate) fn finish(&self) {
        self.gate.wait();
    }

    /// Before an exit at once (a second interrupt): write what is held,
    /// unless events are still being written behind (nothing is held then;
    /// waiting for them could wait for a stalled stdout).
    pub(crate) fn release_for_exit(&self) {
        if !self.gate.is_closed() {
            self.release();
        }
    }

    /// Each line stamped `at`, or when it is written.
    fn emit_all_now(
        &self,
        events: impl FnOnce(&mut dyn FnMut(&JsonEvent<'_>)),
        at: Option<time::OffsetDateTime>,
    ) {
        // Held for the whole stream: nothing another clone writes lands
        // inside it.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let line = |w: &mut dyn Write, e: &JsonEvent<'_>| {
            let first = !self.versioned.swap(true, Ordering::Relaxed);
            let now = at.unwrap_or_else(time::OffsetDateTime::now_utc);
            if matches!(e, JsonEvent::Version { .. }) {
                if !first {
                    return;
                }
            } else if first {
                let _ = JsonEvent::version().write_line(now, &mut *w);
            }
            let _ = e.write_line(now, w);
        };
        match held.as_mut() {
            Some(h) => events(&mut |e| line(&mut h.out, e)),
            None => {
                let mut out =
                    std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
                events(&mut |e| line(&mut out, e));
                let _ = out.flush();
            }
        }
    }

    /// Messages for people (stderr), one line each.
    pub(crate) fn message(&self, s: &str) {
        let mut line = String::with_capacity(s.len() + 1);
        line.push_str(s);
        line.push('\n');
        self.put(true, line.as_bytes());
    }

    /// A question on stderr, answered on the same line.
    pub(crate) fn prompt(&self, s: &str) {
        self.gate.wait();
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
