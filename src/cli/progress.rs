//! The progress reporter: turns the executor's events into what people see
//! (a bar on a terminal, one line per event otherwise) or JSON events. It
//! runs as its own task and owns nothing but its output.

use tokio::sync::mpsc::UnboundedReceiver;

use crate::apply::Event;
use crate::plan::Op;

use super::json::JsonEvent;
use super::output::Printer;

fn verbs(op: Op) -> (&'static str, &'static str) {
    match op {
        Op::Create => ("Creating...", "Creation complete"),
        Op::Update => ("Modifying...", "Modifications complete"),
        Op::Delete => ("Destroying...", "Destruction complete"),
    }
}

/// Report every event until the executor drops its sender.
pub(crate) async fn report(printer: Printer, total: usize, mut rx: UnboundedReceiver<Event>) {
    let bar = if printer.stderr_tty && !printer.json {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
            )
            .expect("a valid template"),
        );
        Some(b)
    } else {
        None
    };
    // A line for scrollback: above the bar, or on its own without one.
    let line = |text: String| match &bar {
        Some(b) => b.println(text),
        None if !printer.json => printer.message(&text),
        None => {}
    };
    while let Some(e) = rx.recv().await {
        match &e {
            Event::Started { address, op } => {
                if printer.json {
                    printer.emit(&JsonEvent::ApplyStart {
                        address,
                        action: *op,
                    });
                } else if let Some(b) = &bar {
                    b.set_message(format!("{address}: {}", verbs(*op).0));
                } else {
                    printer.message(&format!("{address}: {}", verbs(*op).0));
                }
            }
            Event::Finished {
                address,
                op,
                elapsed,
                error,
            } => {
                if printer.json {
                    match error {
                        None => printer.emit(&JsonEvent::ApplyComplete {
                            address,
                            action: *op,
                            elapsed_seconds: elapsed.as_secs_f64(),
                        }),
                        Some(err) => printer.emit(&JsonEvent::ApplyErrored {
                            address,
                            action: *op,
                            error: err.to_string(),
                            elapsed_seconds: elapsed.as_secs_f64(),
                        }),
                    }
                }
                let text = match error {
                    None => format!(
                        "{address}: {} after {:.1}s",
                        verbs(*op).1,
                        elapsed.as_secs_f64()
                    ),
                    Some(err) => format!(
                        "{address}: failed after {:.1}s: {err}",
                        elapsed.as_secs_f64()
                    ),
                };
                match &bar {
                    Some(b) => {
                        b.inc(1);
                        if error.is_some() {
                            b.println(text);
                        }
                    }
                    None => line(text),
                }
            }
            Event::Skipped {
                address,
                because,
                op,
            } => {
                if printer.json {
                    printer.emit(&JsonEvent::ApplySkipped {
                        address,
                        action: *op,
                        because,
                    });
                }
                if let Some(b) = &bar {
                    b.inc(1);
                }
                line(format!(
                    "{address}: skipped, it depends on {because}, which failed"
                ));
            }
            Event::Interrupted => {
                if printer.json {
                    printer.emit(&JsonEvent::Interrupted {});
                }
            }
            Event::HealthCheck(a) => {
                if printer.json {
                    printer.emit(&JsonEvent::HealthCheck {
                        cluster: &a.cluster,
                        after: &a.machine,
                        attempt: a.attempt,
                        passed: a.passed,
                        output: &a.output,
                    });
                }
                line(format!(
                    "health check after {} (attempt {}): {}",
                    a.machine,
                    a.attempt,
                    if a.passed { "passed" } else { "failed" }
                ));
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}
