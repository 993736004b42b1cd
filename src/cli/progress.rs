//! The progress reporter: turns the executor's events into what people see
//! or JSON events. It runs as its own task and owns nothing but its output.
//!
//! - On a terminal (not `TERM=dumb`): a bar with a ticking clock and an ETA,
//!   and one line per finished operation kept in scrollback above it.
//! - Otherwise (piped, CI, `TERM=dumb`): one line per event, and every 10 s
//!   Terraform's "Still creating... [10s elapsed]" for each operation in
//!   flight, so a slow machine never looks like a hung job.
//! - `--json`: `apply_start`, `apply_progress` (every 10 s per operation in
//!   flight), `apply_complete`/`apply_errored`, ...

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::apply::Event;
use crate::plan::Op;
use crate::resource::Address;

use super::json::JsonEvent;
use super::output::Printer;

/// How often an operation in flight is reported when there is no bar.
const HEARTBEAT: Duration = Duration::from_secs(10);

pub(crate) fn verbs(op: Op) -> (&'static str, &'static str, &'static str) {
    match op {
        Op::Create => ("Creating...", "Still creating...", "Creation complete"),
        Op::Update => (
            "Modifying...",
            "Still modifying...",
            "Modifications complete",
        ),
        Op::Delete => (
            "Destroying...",
            "Still destroying...",
            "Destruction complete",
        ),
    }
}

/// An operation in flight: when it started and how many heartbeats it had.
struct InFlight {
    op: Op,
    started: Instant,
    beats: u32,
}

struct Reporter {
    printer: Printer,
    bar: Option<indicatif::ProgressBar>,
    in_flight: BTreeMap<Address, InFlight>,
}

/// Report every event until the executor drops its sender.
pub(crate) async fn report(printer: Printer, total: usize, mut rx: UnboundedReceiver<Event>) {
    let bar = (printer.live && !printer.json).then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} (eta {eta}) {wide_msg}",
            )
            .expect("a valid template"),
        );
        b.enable_steady_tick(Duration::from_millis(250));
        b
    });
    let mut r = Reporter {
        printer,
        bar,
        in_flight: BTreeMap::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            e = rx.recv() => match e {
                Some(e) => r.event(&e),
                None => break,
            },
            _ = tick.tick() => r.heartbeat(),
        }
    }
    if let Some(b) = r.bar {
        b.finish_and_clear();
    }
}

impl Reporter {
    /// A line for scrollback: above the bar, or on its own without one.
    fn line(&self, text: String) {
        match &self.bar {
            Some(b) => b.println(text),
            None if !self.printer.json => self.printer.message(&text),
            None => {}
        }
    }

    fn event(&mut self, e: &Event) {
        match e {
            Event::Started { address, op } => self.started(address, *op),
            Event::Finished {
                address,
                op,
                elapsed,
                error,
            } => {
                self.in_flight.remove(address);
                self.finished(
                    address,
                    *op,
                    *elapsed,
                    error.as_ref().map(|e| e.to_string()),
                );
            }
            Event::Skipped {
                address,
                because,
                op,
            } => {
                if self.printer.json {
                    self.printer.emit(&JsonEvent::ApplySkipped {
                        address,
                        action: *op,
                        because,
                    });
                }
                if let Some(b) = &self.bar {
                    b.inc(1);
                }
                self.line(format!(
                    "{address}: skipped, it depends on {because}, which failed"
                ));
            }
            Event::Interrupted => {
                if self.printer.json {
                    self.printer.emit(&JsonEvent::Interrupted {});
                }
            }
            Event::HealthCheck(a) => {
                if self.printer.json {
                    self.printer.emit(&JsonEvent::HealthCheck {
                        cluster: &a.cluster,
                        after: &a.machine,
                        attempt: a.attempt,
                        passed: a.passed,
                        output: &a.output,
                    });
                }
                self.line(format!(
                    "health check after {} (attempt {}): {}",
                    a.machine,
                    a.attempt,
                    if a.passed { "passed" } else { "failed" }
                ));
            }
        }
    }

    fn started(&mut self, address: &Address, op: Op) {
        self.in_flight.insert(
            address.clone(),
            InFlight {
                op,
                started: Instant::now(),
                beats: 0,
            },
        );
        if self.printer.json {
            self.printer.emit(&JsonEvent::ApplyStart {
                address,
                action: op,
            });
        } else if let Some(b) = &self.bar {
            b.set_message(format!("{address}: {}", verbs(op).0));
        } else {
            self.printer.message(&format!("{address}: {}", verbs(op).0));
        }
    }

    fn finished(&mut self, address: &Address, op: Op, elapsed: Duration, error: Option<String>) {
        if self.printer.json {
            match &error {
                None => self.printer.emit(&JsonEvent::ApplyComplete {
                    address,
                    action: op,
                    elapsed_seconds: elapsed.as_secs_f64(),
                }),
                Some(err) => self.printer.emit(&JsonEvent::ApplyErrored {
                    address,
                    action: op,
                    error: err.clone(),
                    elapsed_seconds: elapsed.as_secs_f64(),
                }),
            }
        }
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        self.line(match error {
            None => format!(
                "{address}: {} after {:.1}s",
                verbs(op).2,
                elapsed.as_secs_f64()
            ),
            Some(err) => format!(
                "{address}: failed after {:.1}s: {err}",
                elapsed.as_secs_f64()
            ),
        });
    }

    /// Every [`HEARTBEAT`] of an operation's life, say it is still going
    /// (the bar's ticking clock does that on a terminal).
    fn heartbeat(&mut self) {
        if self.bar.is_some() {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        for (address, f) in &mut self.in_flight {
            let elapsed = now.duration_since(f.started);
            let beats = (elapsed.as_secs() / HEARTBEAT.as_secs()) as u32;
            if beats > f.beats {
                f.beats = beats;
                // Whole heartbeats, as Terraform counts: 10s, 20s, ...
                due.push((address.clone(), f.op, HEARTBEAT * beats));
            }
        }
        for (address, op, elapsed) in due {
            if self.printer.json {
                self.printer.emit(&JsonEvent::ApplyProgress {
                    address: &address,
                    action: op,
                    elapsed_seconds: elapsed.as_secs_f64(),
                });
            } else {
                self.printer.message(&format!(
                    "{address}: {} [{}s elapsed]",
                    verbs(op).1,
                    elapsed.as_secs()
                ));
            }
        }
    }
}
