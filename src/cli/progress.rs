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
//!
//! The bar counts what the plan's summary counts: resource changes. A
//! replacement is done when both its create and its delete are; bootstrap
//! data, reviewed with its machine, moves the bar through its machine only.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::apply::Event;
use crate::plan::{Op, Plan};
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

/// Which change each step belongs to, and how many of each change's steps
/// are still to finish.
pub(crate) struct Tally {
    of_step: BTreeMap<Address, usize>,
    remaining: Vec<usize>,
}

impl Tally {
    pub(crate) fn new(pl: &Plan) -> Tally {
        let mut index = BTreeMap::new();
        for (i, c) in pl.changes.iter().enumerate() {
            if c.part_of.is_some() {
                continue;
            }
            index.insert(c.address.clone(), i);
            if let Some(r) = &c.replacement {
                index.insert(r.clone(), i);
            }
        }
        let mut remaining = vec![0; pl.changes.len()];
        let mut of_step = BTreeMap::new();
        for s in &pl.steps {
            if let Some(&i) = index.get(&s.address) {
                remaining[i] += 1;
                of_step.insert(s.address.clone(), i);
            }
        }
        Tally { of_step, remaining }
    }

    /// The changes the bar counts: those with a step to run.
    pub(crate) fn total(&self) -> usize {
        self.remaining.iter().filter(|&&n| n > 0).count()
    }

    /// A step ended (done, failed or skipped): does its change end with it?
    fn step_ended(&mut self, address: &Address) -> bool {
        match self.of_step.get(address) {
            Some(&i) if self.remaining[i] > 0 => {
                self.remaining[i] -= 1;
                self.remaining[i] == 0
            }
            _ => false,
        }
    }
}

struct Reporter {
    printer: Printer,
    bar: Option<indicatif::ProgressBar>,
    tally: Tally,
    in_flight: BTreeMap<Address, InFlight>,
    /// When the event being reported arrived, if not now (it waited for
    /// the plan to be written).
    at: Option<time::OffsetDateTime>,
}

/// The most events the reporter writes together.
const BURST: usize = 1024;

/// Report every event until the executor drops its sender.
pub(crate) async fn report(printer: Printer, tally: Tally, mut rx: UnboundedReceiver<Event>) {
    // The plan may still be being written (`apply --auto-approve --json`):
    // its events come first; these are kept, each with the time it came.
    let mut early = Vec::new();
    {
        let written = printer.written();
        tokio::pin!(written);
        loop {
            tokio::select! {
                biased;
                () = &mut written => break,
                e = rx.recv() => match e {
                    Some(e) => early.push((e, time::OffsetDateTime::now_utc())),
                    None => {
                        written.await;
                        break;
                    }
                },
            }
        }
    }
    let bar = (printer.live && !printer.json).then(|| {
        let b = indicatif::ProgressBar::new(tally.total() as u64);
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
        tally,
        in_flight: BTreeMap::new(),
        at: None,
    };
    if !early.is_empty() {
        let printer = r.printer.clone();
        let _held = printer.hold();
        for (e, at) in early {
            r.at = Some(at);
            r.event(&e);
        }
        r.at = None;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            e = rx.recv() => match e {
                Some(e) => {
                    // What is already queued goes out with it, in one write
                    // per stream (a burst: the machines of a wave end together).
                    let printer = r.printer.clone();
                    let _held = printer.hold();
                    r.event(&e);
                    for _ in 0..BURST {
                        let Ok(e) = rx.try_recv() else { break };
                        r.event(&e);
                    }
                }
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
    fn emit(&self, e: &JsonEvent<'_>) {
        match self.at {
            Some(at) => self.printer.emit_at(e, at),
            None => self.printer.emit(e),
        }
    }

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
                    self.emit(&JsonEvent::ApplySkipped {
                        address,
                        action: *op,
                        because,
                    });
                }
                self.advance(address);
                self.line(format!(
                    "{address}: skipped, it depends on {because}, which failed"
                ));
            }
            Event::Interrupted => {
                if self.printer.json {
                    self.emit(&JsonEvent::Interrupted {});
                }
            }
            Event::HealthCheck(a) => {
                if self.printer.json {
                    self.emit(&JsonEvent::HealthCheck {
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
            self.emit(&JsonEvent::ApplyStart {
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
                None => self.emit(&JsonEvent::ApplyComplete {
                    address,
                    action: op,
                    elapsed_seconds: elapsed.as_secs_f64(),
                }),
                Some(err) => self.emit(&JsonEvent::ApplyErrored {
                    address,
                    action: op,
                    error: err.clone(),
                    elapsed_seconds: elapsed.as_secs_f64(),
                }),
            }
        }
        self.advance(address);
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

    /// Move the bar when the step's change is complete.
    fn advance(&mut self, address: &Address) {
        if self.tally.step_ended(address) {
            if let Some(b) = &self.bar {
                b.inc(1);
            }
        }
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
                self.emit(&JsonEvent::ApplyProgress {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{simulate::simulate, PlanOptions};
    use crate::state::State;

    fn planned(yaml: &str, state: &State) -> Plan {
        let m = crate::manifest::load_str("c.yaml", yaml, &Default::default()).unwrap();
        let d = crate::desired::build(&m, &Default::default()).unwrap();
        crate::plan::plan(&d, state, &PlanOptions::default()).unwrap()
    }

    /// Run every step through the tally: the bar ends where the plan's
    /// summary says, and moves once per change.
    fn bar_moves(pl: &Plan) -> usize {
        let mut t = Tally::new(pl);
        let total = t.total();
        let moves = pl.steps.iter().filter(|s| t.step_ended(&s.address)).count();
        assert_eq!(moves, total);
        total
    }

    #[test]
    fn the_bar_counts_what_the_summary_counts() {
        let yaml = include_str!("../../examples/sim/cluster.yaml");
        let created = planned(yaml, &State::empty());
        let s = &created.summary;
        // Bootstrap steps run, but are not counted.
        assert!(created.steps.len() > s.add);
        assert_eq!(
            bar_moves(&created),
            s.add + s.change + s.replace + s.destroy
        );
        // A version bump: every machine replaced (a create and a delete each).
        let state = simulate(&State::empty(), &created, 0);
        let bumped = planned(&yaml.replace("v1.31.2", "v1.31.3"), &state);
        assert!(bumped.summary.replace > 0);
        let s = &bumped.summary;
        assert_eq!(bar_moves(&bumped), s.add + s.change + s.replace + s.destroy);
    }
}
