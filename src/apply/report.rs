//! What an apply reports: each step's outcome, the failures with their
//! typed errors, whether it was interrupted, the final state, and the
//! reviewed changes it completed (a change counts once all of its steps,
//! and those of its replacement, are done).

use std::collections::HashMap;
use std::time::Duration;

use crate::plan::{Action, Plan};
use crate::resource::Address;
use crate::state::State;

use super::error::StepError;

/// How one step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Done,
    Failed(StepError),
    /// A step it (transitively) waits for failed.
    Skipped,
    /// The apply was interrupted before it could start.
    NotStarted,
}

#[derive(Debug)]
pub struct ApplyReport {
    /// By step id.
    pub outcomes: Vec<Outcome>,
    pub added: usize,
    pub changed: usize,
    pub replaced: usize,
    pub destroyed: usize,
    /// The failed steps' addresses and errors, in step order.
    pub failures: Vec<(Address, StepError)>,
    pub interrupted: bool,
    pub state: State,
    /// From the first step to the last durable state write.
    pub elapsed: Duration,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && !self.interrupted
    }

    /// The report of a run whose steps ended as `outcomes`.
    pub(crate) fn new(
        plan: &Plan,
        outcomes: Vec<Outcome>,
        interrupted: bool,
        state: State,
        elapsed: Duration,
    ) -> ApplyReport {
        let failures = outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Outcome::Failed(e) => Some((plan.steps[i].address.clone(), e.clone())),
                _ => None,
            })
            .collect();
        let mut report = ApplyReport {
            outcomes,
            added: 0,
            changed: 0,
            replaced: 0,
            destroyed: 0,
            failures,
            interrupted,
            state,
            elapsed,
        };
        report.count_changes(plan);
        report
    }

    /// Count the reviewed changes whose steps are all done.
    fn count_changes(&mut self, plan: &Plan) {
        let mut by_address: HashMap<&Address, Vec<usize>> = HashMap::new();
        for s in &plan.steps {
            by_address.entry(&s.address).or_default().push(s.id);
        }
        for c in plan.reviewed_changes() {
            let mut ids = by_address
                .get(&c.address)
                .into_iter()
                .flatten()
                .chain(
                    c.replacement
                        .as_ref()
                        .and_then(|r| by_address.get(r))
                        .into_iter()
                        .flatten(),
                )
                .peekable();
            if ids.peek().is_none() || !ids.all(|&i| self.outcomes[i] == Outcome::Done) {
                continue;
            }
            match c.action {
                Action::Create => self.added += 1,
                Action::Update => self.changed += 1,
                Action::Replace => self.replaced += 1,
                Action::Delete => self.destroyed += 1,
            }
        }
    }
}
