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
//! It knows steps only by their place in the plan's order and whether they
//! need a permit: running one is the caller's function.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
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
    R: Fn(&Step, Permit) -> F,
    F: Future<Output = Result<(), StepError>> + Send + 'static,
{
    let permits = Permits::new(parallelism);
    let mut s = Scheduler::new(steps, events, cancel);
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
            Some(ended) = s.running.join_next_with_id() => s.ended(ended),
            stage = permits.stage(), if more_to_start => {
                if let Some(Reverse(id)) = s.ready.remote.pop() {
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
    fn new(steps: &'a [Step], events: &'a Events, cancel: &'a Cancel) -> Scheduler<'a> {
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
        }
    }

    /// Start ready local steps (up to [`LOCAL_IN_FLIGHT`] running), and
    /// ready provider steps while they can be staged.
    fn start_ready<R, F>(&mut self, permits: &Permits, run: &R)
    where
        R: Fn(&Step, Permit) -> F,
        F: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        while self.local_running < LOCAL_IN_FLIGHT {
            let Some(Reverse(id)) = self.ready.local.pop() else {
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
            let Some(Reverse(id)) = self.ready.remote.pop() else {
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
        R: Fn(&Step, Permit) -> F,
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
        R: Fn(&Step, Permit) -> F,
        F: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        let work = run(&self.steps[id], permit);
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

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::sync::{mpsc, Barrier};

    use super::*;
    use crate::resource::{Address, PkiSpec, ProviderKind};

    /// A create step; `local` ones (PKI) call no provider.
    fn step(id: usize, after: &[usize], local: bool) -> Step {
        Step {
            id,
            op: Op::Create,
            address: Address::parse(&format!("t/machine/m-{id}")).unwrap(),
            provider: ProviderKind::Sim,
            spec: local.then(|| {
                Spec::Pki(PkiSpec {
                    encryption_algorithm: String::new(),
                    ca_validity_days: 1,
                    external_etcd: false,
                })
            }),
            dependencies: Vec::new(),
            after: after.to_vec(),
            health_gate: false,
        }
    }

    /// How many steps are in flight, and the most there ever were.
    #[derive(Clone, Default)]
    struct Probe(Arc<(AtomicUsize, AtomicUsize)>);

    impl Probe {
        fn enter(&self) {
            let now = self.0 .0.fetch_add(1, Ordering::SeqCst) + 1;
            self.0 .1.fetch_max(now, Ordering::SeqCst);
        }
        fn leave(&self) {
            self.0 .0.fetch_sub(1, Ordering::SeqCst);
        }
        fn most(&self) -> usize {
            self.0 .1.load(Ordering::SeqCst)
        }
    }

    /// Turns a stalled scheduler (a step waiting for something that never
    /// comes) into a failure instead of a hung test. Not a timing check:
    /// every test here finishes in milliseconds.
    async fn unstalled<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("the scheduler stalled")
    }

    /// Run `steps` with `parallelism` slots, failing instead of hanging.
    async fn schedule<R, F>(
        steps: &[Step],
        parallelism: usize,
        cancel: &Cancel,
        events: &Events,
        run_step: R,
    ) -> Schedule
    where
        R: Fn(&Step, Permit) -> F,
        F: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        let parallelism = NonZeroUsize::new(parallelism).expect("at least one slot");
        unstalled(run(steps, parallelism, cancel, events, run_step)).await
    }

    fn events() -> (Events, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Events::new(Some(tx)), rx)
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e);
        }
        v
    }

    /// With 3 permits and 12 provider steps ready together, steps pass a
    /// barrier only in threes: the bound is used, and never exceeded.
    #[tokio::test]
    async fn provider_steps_fill_and_never_exceed_the_permits() {
        let steps: Vec<Step> = (0..12).map(|i| step(i, &[], false)).collect();
        let probe = Probe::default();
        let wave = Arc::new(Barrier::new(3));
        let run_step = |_: &Step, permit: Permit| {
            let (probe, wave) = (probe.clone(), wave.clone());
            async move {
                probe.enter();
                wave.wait().await;
                probe.leave();
                drop(permit);
                Ok(())
            }
        };
        let s = schedule(&steps, 3, &Cancel::default(), &Events::default(), run_step).await;
        assert!(s.outcomes.iter().all(|o| *o == Outcome::Done));
        assert!(!s.interrupted);
        assert_eq!(probe.most(), 3);
    }

    /// Local steps take no permit: with one permit, a provider step and
    /// three local steps are all in flight at once.
    #[tokio::test]
    async fn local_steps_take_no_permit() {
        let steps = vec![
            step(0, &[], false),
            step(1, &[], true),
            step(2, &[], true),
            step(3, &[], true),
        ];
        let all = Arc::new(Barrier::new(4));
        let run_step = |_: &Step, permit: Permit| {
            let all = all.clone();
            async move {
                let _held = permit;
                all.wait().await;
                Ok(())
            }
        };
        let s = schedule(&steps, 1, &Cancel::default(), &Events::default(), run_step).await;
        assert!(s.outcomes.iter().all(|o| *o == Outcome::Done));
    }

    /// Local steps ready together run at most LOCAL_IN_FLIGHT at a time, and
    /// all of them run.
    #[tokio::test]
    async fn local_steps_in_flight_are_bounded() {
        let n = LOCAL_IN_FLIGHT * 3 + 7;
        let steps: Vec<Step> = (0..n).map(|i| step(i, &[], true)).collect();
        let probe = Probe::default();
        let run_step = |_: &Step, _permit: Permit| {
            let probe = probe.clone();
            async move {
                probe.enter();
                task::yield_now().await;
                task::yield_now().await;
                probe.leave();
                Ok(())
            }
        };
        let s = schedule(&steps, 1, &Cancel::default(), &Events::default(), run_step).await;
        assert_eq!(s.outcomes.len(), n);
        assert!(s.outcomes.iter().all(|o| *o == Outcome::Done));
        assert!(probe.most() <= LOCAL_IN_FLIGHT, "{}", probe.most());
        assert!(probe.most() > 1, "{}", probe.most());
    }

    /// A step gives its permit back when it drops it (after its provider
    /// call), not when it ends: with one permit, the second provider step
    /// starts while the first is still writing its result.
    #[tokio::test]
    async fn a_dropped_permit_starts_the_next_provider_step() {
        let steps = vec![step(0, &[], false), step(1, &[], false)];
        let both = Arc::new(Barrier::new(2));
        let run_step = |_: &Step, permit: Permit| {
            let both = both.clone();
            async move {
                drop(permit);
                both.wait().await;
                Ok(())
            }
        };
        let s = schedule(&steps, 1, &Cancel::default(), &Events::default(), run_step).await;
        assert_eq!(s.outcomes, vec![Outcome::Done, Outcome::Done]);
    }

    /// Ready provider steps start lowest id first; a step starts only after
    /// every step it waits for is done.
    #[tokio::test]
    async fn steps_start_in_plan_order_after_their_predecessors() {
        let steps = vec![
            step(0, &[], false),
            step(1, &[3], false),
            step(2, &[], false),
            step(3, &[], false),
            step(4, &[], false),
        ];
        let order = Arc::new(Mutex::new(Vec::new()));
        let run_step = |s: &Step, permit: Permit| {
            let (order, id) = (order.clone(), s.id);
            async move {
                let _held = permit;
                order.lock().unwrap().push(id);
                Ok(())
            }
        };
        let s = schedule(&steps, 1, &Cancel::default(), &Events::default(), run_step).await;
        assert!(s.outcomes.iter().all(|o| *o == Outcome::Done));
        let order = order.lock().unwrap().clone();
        let at = |id: usize| order.iter().position(|&i| i == id).unwrap();
        assert!(at(3) < at(1), "1 waits for 3: {order:?}");
        let independent: Vec<usize> = order.iter().copied().filter(|&i| i != 1).collect();
        assert_eq!(independent, vec![0, 2, 3, 4], "lowest id first");
    }

    /// A failure skips everything that waits for it, transitively, naming
    /// the failed step; independent branches finish.
    #[tokio::test]
    async fn a_failure_skips_its_dependents_and_spares_the_rest() {
        let steps = vec![
            step(0, &[], false),
            step(1, &[0], true),
            step(2, &[1], false),
            step(3, &[], false),
            step(4, &[3], true),
        ];
        let (ev, mut rx) = events();
        let run_step = |s: &Step, permit: Permit| {
            let fail = s.id == 0;
            async move {
                // A provider step's Started event is sent when it takes its slot.
                let _slot = permit.slot().await;
                if fail {
                    Err(StepError::StateWrite("disk full".into()))
                } else {
                    Ok(())
                }
            }
        };
        let s = schedule(&steps, 2, &Cancel::default(), &ev, run_step).await;
        assert_eq!(
            s.outcomes,
            vec![
                Outcome::Failed(StepError::StateWrite("disk full".into())),
                Outcome::Skipped,
                Outcome::Skipped,
                Outcome::Done,
                Outcome::Done,
            ]
        );
        let events = drain(&mut rx);
        let skipped: Vec<(String, String)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Skipped {
                    address, because, ..
                } => Some((address.to_string(), because.to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(
            skipped,
            vec![
                ("t/machine/m-1".to_string(), "t/machine/m-0".to_string()),
                ("t/machine/m-2".to_string(), "t/machine/m-0".to_string()),
            ]
        );
        let failed = events.iter().find_map(|e| match e {
            Event::Finished {
                error: Some(err), ..
            } => Some(err.to_string()),
            _ => None,
        });
        assert_eq!(failed.as_deref(), Some("disk full"));
        let started = events
            .iter()
            .filter(|e| matches!(e, Event::Started { .. }))
            .count();
        assert_eq!(started, 3, "skipped steps never start");
    }

    /// Cancellation stops new starts; steps in flight finish and count as
    /// done; the rest never start.
    #[tokio::test]
    async fn cancellation_lets_steps_in_flight_finish_and_starts_nothing() {
        let steps = vec![
            step(0, &[], false),
            step(1, &[], false),
            step(2, &[0], true),
            step(3, &[], false),
        ];
        let cancel = Cancel::default();
        let (ev, mut rx) = events();
        let both = Arc::new(Barrier::new(2));
        let run_step = |s: &Step, permit: Permit| {
            let (both, cancel, id) = (both.clone(), cancel.clone(), s.id);
            async move {
                let _held = permit;
                if id == 0 {
                    cancel.cancel();
                }
                both.wait().await;
                Ok(())
            }
        };
        let s = schedule(&steps, 2, &cancel, &ev, run_step).await;
        assert!(s.interrupted);
        assert_eq!(
            s.outcomes,
            vec![
                Outcome::Done,
                Outcome::Done,
                Outcome::NotStarted,
                Outcome::NotStarted
            ]
        );
        let interrupted = drain(&mut rx)
            .iter()
            .filter(|e| matches!(e, Event::Interrupted))
            .count();
        assert_eq!(interrupted, 1);
    }

    /// A step staged while the only slot is taken, then interrupted before
    /// the slot comes back, does not call its provider and ends as not
    /// started, without a Finished event.
    #[tokio::test]
    async fn a_staged_step_interrupted_before_its_slot_does_not_start() {
        let steps = vec![step(0, &[], false), step(1, &[], false)];
        let cancel = Cancel::default();
        let (ev, mut rx) = events();
        let called = Arc::new(Mutex::new(Vec::new()));
        let staged = Arc::new(Barrier::new(2));
        let run_step = |s: &Step, permit: Permit| {
            let (cancel, called, staged, id) =
                (cancel.clone(), called.clone(), staged.clone(), s.id);
            let address = s.address.clone();
            async move {
                if id == 1 {
                    staged.wait().await;
                }
                let Some(_slot) = permit.slot().await else {
                    return Err(StepError::Interrupted { address });
                };
                called.lock().unwrap().push(id);
                if id == 0 {
                    // Step 1 is staged (its intent would be written now).
                    staged.wait().await;
                    cancel.cancel();
                }
                Ok(())
            }
        };
        let s = schedule(&steps, 1, &cancel, &ev, run_step).await;
        assert!(s.interrupted);
        assert_eq!(s.outcomes, vec![Outcome::Done, Outcome::NotStarted]);
        assert_eq!(
            *called.lock().unwrap(),
            vec![0],
            "step 1 never called its provider"
        );
        let finished = drain(&mut rx)
            .iter()
            .filter(|e| matches!(e, Event::Finished { .. }))
            .count();
        assert_eq!(finished, 1);
    }

    /// The scheduler notices cancellation while every step is still
    /// running (it waits on the token, not on the next step to end): the
    /// step in flight ends only once it has seen the Interrupted event.
    #[tokio::test]
    async fn cancellation_wakes_the_scheduler_while_steps_run() {
        let steps = vec![step(0, &[], false), step(1, &[0], false)];
        let cancel = Cancel::default();
        let (ev, rx) = events();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let run_step = |_: &Step, permit: Permit| {
            let (rx, cancel) = (rx.clone(), cancel.clone());
            async move {
                let _held = permit;
                cancel.cancel();
                let mut rx = rx.lock().await;
                while let Some(e) = rx.recv().await {
                    if matches!(e, Event::Interrupted) {
                        break;
                    }
                }
                Ok(())
            }
        };
        let s = schedule(&steps, 1, &cancel, &ev, run_step).await;
        assert!(s.interrupted);
        assert_eq!(s.outcomes, vec![Outcome::Done, Outcome::NotStarted]);
    }

    /// A step whose task panics fails (its dependents are skipped); the
    /// others run on and the scheduler returns.
    #[tokio::test]
    async fn a_panicking_step_fails_without_stopping_the_others() {
        let steps = vec![
            step(0, &[], false),
            step(1, &[0], false),
            step(2, &[], false),
        ];
        let run_step = |s: &Step, _permit: Permit| {
            let id = s.id;
            async move {
                assert_ne!(id, 0, "step 0 panics on purpose");
                Ok(())
            }
        };
        let s = schedule(&steps, 2, &Cancel::default(), &Events::default(), run_step).await;
        assert!(
            matches!(&s.outcomes[0], Outcome::Failed(StepError::Panicked(m)) if m.contains("panicked")),
            "{:?}",
            s.outcomes[0]
        );
        assert_eq!(s.outcomes[1], Outcome::Skipped);
        assert_eq!(s.outcomes[2], Outcome::Done);
    }
}
