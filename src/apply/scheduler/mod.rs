//! The scheduler: starts each step of a plan as soon as every step it waits
//! for is done, lowest id first, and each as a task of one `JoinSet`. A
//! step that calls a provider starts only when it can be staged (at most
//! `parallelism` staged steps wait for one of the `parallelism` provider
//! slots, see permit.rs); it gives its slot back when its provider call
//! returns. Local steps (PKI, bootstrap data), health gates and the durable
//! write of a result take none, so they never idle a slot. A failed step
//! skips everything that (transitively) waits for it while independent
//! branches go on. The cancellation token (the first Ctrl-C) stops new
//! starts; steps in flight finish. The scheduler sleeps until a step ends,
//! a permit comes back or cancellation fires; it never polls.
//!
//! Local steps run at most [`LOCAL_IN_FLIGHT`] at a time: each task holds
//! its step's future (about 8 KB), and the 10,000 workers' bootstrap data of
//! a large cluster, all ready at once, took 80 MB as tasks. 64 keep the
//! group commits large; with 256, the scheduler spent 1.5-5 ms starting
//! them the moment a join token was issued, and the first workers waited
//! for that (3 + 1,000 machines at 20 ms: the first worker started 3-4 ms
//! later than with 64; at latency 0 the two take the same time).
//!
//! A step's dependents start when it ends, or earlier when it says so
//! ([`Release`]): once its last commit is applied and queued, before that
//! commit is durable. A step that then fails (its commit was not
//! acknowledged as durable) skips the dependents that have not started;
//! those that have started fail at their own first write, which the journal
//! does not acknowledge after a failed one, before any of them calls a
//! provider.
//!
//! It knows steps only by their place in the plan's order and whether they
//! need a permit: running one is the caller's function.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::{self, JoinError, JoinSet};

use crate::plan::{Op, Step};
use crate::resource::Spec;

use super::context::Events;
use super::error::StepError;
use super::permit::{Permit, Permits, StartMark};
use super::report::Outcome;
use super::{Cancel, Event};

/// How many local steps run at once.
pub(crate) const LOCAL_IN_FLIGHT: usize = 64;

/// Does the step call a provider (and so wait for a permit)?
pub(crate) fn needs_permit(step: &Step) -> bool {
    match step.op {
        Op::Delete => !step.address.kind().is_local(),
        Op::Create | Op::Update => {
            !matches!(step.spec, Some(Spec::Pki(_)) | Some(Spec::Bootstrap(_)))
        }
    }
}

/// A running step's word that its dependents may start before it ends
/// (see the module's header); given when the step is started.
pub(crate) struct Release {
    id: usize,
    tx: mpsc::UnboundedSender<usize>,
}

impl Release {
    /// Let the step's dependents start now.
    pub(crate) fn now(self) {
        let _ = self.tx.send(self.id);
    }
}

/// How the steps ended.
pub(crate) struct Schedule {
    pub(crate) outcomes: Vec<Outcome>,
    /// Cancellation fired while steps were left.
    pub(crate) interrupted: bool,
}

/// A step's task ends with its id, its result and how long it ran.
type Ended = (usize, Result<(), StepError>, Duration);

/// Steps whose predecessors are all done, lowest id first, by whether they
/// need a permit.
#[derive(Default)]
struct Ready {
    local: BinaryHeap<Reverse<usize>>,
    remote: BinaryHeap<Reverse<usize>>,
}

impl Ready {
    fn push(&mut self, step: &Step) {
        if needs_permit(step) {
            self.remote.push(Reverse(step.id));
        } else {
            self.local.push(Reverse(step.id));
        }
    }
}

struct Scheduler<'a> {
    steps: &'a [Step],
    events: &'a Events,
    cancel: &'a Cancel,
    outcomes: Vec<Outcome>,
    /// Per step: how many of the steps it waits for are not done yet.
    waiting: Vec<usize>,
    /// Per step: the steps that wait for it.
    dependents: Vec<Vec<usize>>,
    ready: Ready,
    running: JoinSet<Ended>,
    /// The step and start time of each running task (to name a panicked one).
    tasks: HashMap<task::Id, (usize, Instant)>,
    /// When each staged step took its slot (see [`StartMark`]).
    marks: HashMap<usize, StartMark>,
    /// Local steps running (at most [`LOCAL_IN_FLIGHT`]).
    local_running: usize,
    interrupted: bool,
    /// Per step: started (skipping a failed step's dependents leaves these).
    started: Vec<bool>,
    /// Per step: its dependents were released before it ended.
    released: Vec<bool>,
    release_tx: mpsc::UnboundedSender<usize>,
}

/// Run every step of `steps` (ids are indexes) with `run`, at most
/// `parallelism` provider operations at a time.
pub(crate) async fn run<R, F>(
    steps: &[Step],
    parallelism: std::num::NonZeroUsize,
    cancel: &Cancel,
    events: &Events,
    run: R,
) -> Schedule
where
    R: Fn(&Step, Permit, Release) -> F,
    F: Future<Output = Result<(), StepError>> + Send + 'static,
{
    let permits = Permits::new(parallelism);
    let (release_tx, mut releases) = mpsc::unbounded_channel();
    let mut s = Scheduler::new(steps, events, cancel, release_tx);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        if !s.interrupted && cancel.is_cancelled() {
            s.interrupted = true;
            events.emit(Event::Interrupted);
        }
        if !s.interrupted {
            s.start_ready(&permits, &run);
        }
        if s.running.is_empty() {
            break;
        }
        let more_to_start = !s.interrupted && !s.ready.remote.is_empty();
        tokio::select! {
            biased;
            () = &mut cancelled, if !s.interrupted => {}
            Some(id) = releases.recv() => s.released(id),
            Some(ended) = s.running.join_next_with_id() => s.ended(ended),
            stage = permits.stage(), if more_to_start => {
                if let Some(id) = s.pop_ready(false) {
                    s.start_staged(id, stage, &permits, &run);
                }
            }
        }
    }
    Schedule {
        outcomes: s.outcomes,
        interrupted: s.interrupted,
    }
}

impl<'a> Scheduler<'a> {
    fn new(
        steps: &'a [Step],
        events: &'a Events,
        cancel: &'a Cancel,
        release_tx: mpsc::UnboundedSender<usize>,
    ) -> Scheduler<'a> {
        let n = steps.len();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for s in steps {
            for &a in &s.after {
                dependents[a].push(s.id);
            }
        }
        let mut ready = Ready::default();
        for s in steps.iter().filter(|s| s.after.is_empty()) {
            ready.push(s);
        }
        Scheduler {
            steps,
            events,
            cancel,
            outcomes: vec![Outcome::NotStarted; n],
            waiting: steps.iter().map(|s| s.after.len()).collect(),
            dependents,
            ready,
            running: JoinSet::new(),
            tasks: HashMap::new(),
            marks: HashMap::new(),
            local_running: 0,
            interrupted: false,
            started: vec![false; n],
            released: vec![false; n],
            release_tx,
        }
    }

    /// The next ready step of `heap` not skipped meanwhile (a released
    /// step that failed after all skips its dependents, ready or not).
    fn pop_ready(&mut self, local: bool) -> Option<usize> {
        loop {
            let heap = if local {
                &mut self.ready.local
            } else {
                &mut self.ready.remote
            };
            let Reverse(id) = heap.pop()?;
            if self.outcomes[id] == Outcome::NotStarted {
                return Some(id);
            }
        }
    }

    /// Start ready local steps (up to [`LOCAL_IN_FLIGHT`] running), and
    /// ready provider steps while they can be staged.
    fn start_ready<R, F>(&mut self, permits: &Permits, run: &R)
    where
        R: Fn(&Step, Permit, Release) -> F,
        F: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        while self.local_running < LOCAL_IN_FLIGHT {
            let Some(id) = self.pop_ready(true) else {
                break;
            };
            self.local_running += 1;
            let step = &self.steps[id];
            self.events.emit(Event::Started {
                address: step.address.clone(),
                op: step.op,
            });
            self.start(id, Permit::none(), run);
        }
        while !self.ready.remote.is_empty() {
            let Some(stage) = permits.try_stage() else {
                break;
            };
            let Some(id) = self.pop_ready(false) else {
                break;
            };
            self.start_staged(id, stage, permits, run);
        }
    }

    /// Start a provider step, staged: its `Started` event is sent when it
    /// takes its slot ([`Permit::slot`]).
    fn start_staged<R, F>(
        &mut self,
        id: usize,
        stage: OwnedSemaphorePermit,
        permits: &Permits,
        run: &R,
    ) where
        R: Fn(&Step, Permit, Release) -> F,
        F: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        let step = &self.steps[id];
        let (permit, mark) = permits.staged(
            stage,
            self.cancel,
            self.events,
            step.address.clone(),
            step.op,
        );
        self.marks.insert(id, mark);
        self.start(id, permit, run);
    }

    fn start<R, F>(&mut self, id: usize, permit: Permit, run: &R)
    where
        R: Fn(&Step, Permit, Release) -> F,
        F: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        self.started[id] = true;
        let release = Release {
            id,
            tx: self.release_tx.clone(),
        };
        let work = run(&self.steps[id], permit, release);
        let started = Instant::now();
        let handle = self.running.spawn(async move {
            let t = Instant::now();
            let result = work.await;
            (id, result, t.elapsed())
        });
        self.tasks.insert(handle.id(), (id, started));
    }

    /// A task ended: record its outcome, release its dependents or skip them.
    fn ended(&mut self, ended: Result<(task::Id, Ended), JoinError>) {
        let (id, result, elapsed) = match ended {
            Ok((task, ended)) => {
                self.tasks.remove(&task);
                ended
            }
            Err(e) => {
                let (id, started) = self
                    .tasks
                    .remove(&e.id())
                    .expect("every task is registered when it is spawned");
                (
                    id,
                    Err(StepError::Panicked(e.to_string())),
                    started.elapsed(),
                )
            }
        };
        let step = &self.steps[id];
        if !needs_permit(step) {
            self.local_running -= 1;
        }
        // A staged step's time runs from its slot; one that ended before
        // taking it (nothing to delete, a failed recheck or intent) is
        // reported as started now, so every Finished has its Started.
        let interrupted = matches!(result, Err(StepError::Interrupted { .. }));
        let elapsed = match self.marks.remove(&id) {
            Some(mark) => match mark.get() {
                Some(at) => at.elapsed(),
                None => {
                    if !interrupted {
                        self.events.emit(Event::Started {
                            address: step.address.clone(),
                            op: step.op,
                        });
                    }
                    Duration::ZERO
                }
            },
            None => elapsed,
        };
        match result {
            // Staged, but the apply was interrupted before its slot came:
            // it did not start (and took its intent back).
            Err(StepError::Interrupted { .. }) => {}
            Ok(()) => {
                self.outcomes[id] = Outcome::Done;
                self.events.emit(Event::Finished {
                    address: step.address.clone(),
                    op: step.op,
                    elapsed,
                    error: None,
                });
                if !self.released[id] {
                    self.release_dependents(id);
                }
            }
            Err(e) => {
                self.outcomes[id] = Outcome::Failed(e.clone());
                self.events.emit(Event::Finished {
                    address: step.address.clone(),
                    op: step.op,
                    elapsed,
                    error: Some(e),
                });
                self.skip_dependents_of(id);
            }
        }
    }

    /// A running step released its dependents (once; not after it ended).
    fn released(&mut self, id: usize) {
        if self.released[id] || self.outcomes[id] != Outcome::NotStarted {
            return;
        }
        self.released[id] = true;
        self.release_dependents(id);
    }

    /// `id` is done with as a predecessor: its dependents waiting for
    /// nothing else are ready.
    fn release_dependents(&mut self, id: usize) {
        for &d in &self.dependents[id] {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 && self.outcomes[d] == Outcome::NotStarted {
                self.ready.push(&self.steps[d]);
            }
        }
    }

    /// Everything that (transitively) waits for a failed step and has not
    /// started is skipped.
    fn skip_dependents_of(&mut self, failed: usize) {
        let because = &self.steps[failed].address;
        let mut stack = self.dependents[failed].clone();
        while let Some(d) = stack.pop() {
            if self.outcomes[d] == Outcome::NotStarted && !self.started[d] {
                self.outcomes[d] = Outcome::Skipped;
                self.events.emit(Event::Skipped {
                    address: self.steps[d].address.clone(),
                    op: self.steps[d].op,
                    because: because.clone(),
                });
                stack.extend(self.dependents[d].iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests;
