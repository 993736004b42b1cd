//! The scheduler: starts each step of a plan as soon as every step it waits
//! for is done, lowest id first, and each as a task of one `JoinSet`. A
//! step that calls a provider starts only with a permit of a semaphore of
//! `parallelism` permits, which it gives back when its provider call
//! returns; local steps (PKI, bootstrap data), health gates and the durable
//! write of a result take none, so they never idle a permit. A failed step
//! skips everything that (transitively) waits for it while independent
//! branches go on. The cancellation token (the first Ctrl-C) stops new
//! starts; steps in flight finish. The scheduler sleeps until a step ends,
//! a permit comes back or cancellation fires; it never polls.
//!
//! It knows steps only by their place in the plan's order and whether they
//! need a permit: running one is the caller's function.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{self, JoinError, JoinSet};

use crate::plan::{Op, Step};
use crate::resource::Spec;

use super::context::Events;
use super::error::StepError;
use super::report::Outcome;
use super::{Cancel, Event};

/// A permit for one provider operation in flight (empty for a step that
/// calls no provider). Dropping it gives the permit back.
pub(crate) struct Permit {
    _held: Option<OwnedSemaphorePermit>,
}

impl Permit {
    /// No permit: for a step that calls no provider.
    pub(crate) fn none() -> Permit {
        Permit { _held: None }
    }

    fn held(p: OwnedSemaphorePermit) -> Permit {
        Permit { _held: Some(p) }
    }
}

/// Does the step call a provider (and so wait for a permit)?
pub(crate) fn needs_permit(step: &Step) -> bool {
    match step.op {
        Op::Delete => !step.address.kind().is_local(),
        Op::Create | Op::Update => {
            !matches!(step.spec, Some(Spec::Pki(_)) | Some(Spec::Bootstrap(_)))
        }
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
    outcomes: Vec<Outcome>,
    /// Per step: how many of the steps it waits for are not done yet.
    waiting: Vec<usize>,
    /// Per step: the steps that wait for it.
    dependents: Vec<Vec<usize>>,
    ready: Ready,
    running: JoinSet<Ended>,
    /// The step and start time of each running task (to name a panicked one).
    tasks: HashMap<task::Id, (usize, Instant)>,
    interrupted: bool,
}

/// Run every step of `steps` (ids are indexes) with `run`, at most
/// `parallelism` provider operations at a time.
pub(crate) async fn run<R, F>(
    steps: &[Step],
    parallelism: usize,
    cancel: &Cancel,
    events: &Events,
    run: R,
) -> Schedule
where
    R: Fn(&Step, Permit) -> F,
    F: Future<Output = Result<(), StepError>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(parallelism.clamp(1, Semaphore::MAX_PERMITS)));
    let mut s = Scheduler::new(steps, events);
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
            () = cancel.cancelled(), if !s.interrupted => {}
            Some(ended) = s.running.join_next_with_id() => s.ended(ended),
            Ok(permit) = permits.clone().acquire_owned(), if more_to_start => {
                if let Some(Reverse(id)) = s.ready.remote.pop() {
                    s.start(id, Permit::held(permit), &run);
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
    fn new(steps: &'a [Step], events: &'a Events) -> Scheduler<'a> {
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
            outcomes: vec![Outcome::NotStarted; n],
            waiting: steps.iter().map(|s| s.after.len()).collect(),
            dependents,
            ready,
            running: JoinSet::new(),
            tasks: HashMap::new(),
            interrupted: false,
        }
    }

    /// Start every ready local step, and ready provider steps while permits
    /// are free.
    fn start_ready<R, F>(&mut self, permits: &Arc<Semaphore>, run: &R)
    where
        R: Fn(&Step, Permit) -> F,
        F: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        while let Some(Reverse(id)) = self.ready.local.pop() {
            self.start(id, Permit::none(), run);
        }
        while !self.ready.remote.is_empty() {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let Some(Reverse(id)) = self.ready.remote.pop() else {
                break;
            };
            self.start(id, Permit::held(permit), run);
        }
    }

    fn start<R, F>(&mut self, id: usize, permit: Permit, run: &R)
    where
        R: Fn(&Step, Permit) -> F,
        F: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        let step = &self.steps[id];
        self.events.emit(Event::Started {
            address: step.address.clone(),
            op: step.op,
        });
        let work = run(step, permit);
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
        match result {
            Ok(()) => {
                self.outcomes[id] = Outcome::Done;
                self.events.emit(Event::Finished {
                    address: step.address.clone(),
                    op: step.op,
                    elapsed,
                    error: None,
                });
                for &d in &self.dependents[id] {
                    self.waiting[d] -= 1;
                    if self.waiting[d] == 0 && self.outcomes[d] == Outcome::NotStarted {
                        self.ready.push(&self.steps[d]);
                    }
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

    /// Everything that (transitively) waits for a failed step is skipped.
    fn skip_dependents_of(&mut self, failed: usize) {
        let because = &self.steps[failed].address;
        let mut stack = self.dependents[failed].clone();
        while let Some(d) = stack.pop() {
            if self.outcomes[d] == Outcome::NotStarted {
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

