//! The scheduler's tests: slots, staging, order, failures and skips,
//! cancellation, and dependents released before their predecessor ends.

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
    R: Fn(&Step, Permit, Release) -> F,
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
    let run_step = |_: &Step, permit: Permit, _release: Release| {
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
    let run_step = |_: &Step, permit: Permit, _release: Release| {
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
    let run_step = |_: &Step, _permit: Permit, _release: Release| {
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
    let run_step = |_: &Step, permit: Permit, _release: Release| {
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

/// A step that releases its dependents lets them start before it ends:
/// here it ends only once its dependent has started.
#[tokio::test]
async fn a_released_step_lets_its_dependents_start_before_it_ends() {
    let steps = vec![step(0, &[], true), step(1, &[0], false)];
    let dependent_started = Arc::new(tokio::sync::Notify::new());
    let run_step = |s: &Step, permit: Permit, release: Release| {
        let (started, id) = (dependent_started.clone(), s.id);
        async move {
            if id == 0 {
                release.now();
                started.notified().await;
            } else {
                let _slot = permit.slot().await;
                started.notify_one();
            }
            Ok(())
        }
    };
    let (events, mut rx) = events();
    let s = schedule(&steps, 1, &Cancel::default(), &events, run_step).await;
    assert_eq!(s.outcomes, vec![Outcome::Done, Outcome::Done]);
    // Each step is reported finished once, when it ends.
    let finished: Vec<String> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Finished { address, .. } => Some(address.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ["t/machine/m-1", "t/machine/m-0"]);
}

/// A released step that fails after all (its last commit was not made
/// durable) skips its dependents that have not started; one that has
/// started is left to end on its own (failing at its own write, as the
/// journal refuses every write after a failed one) and is not reported
/// skipped.
#[tokio::test]
async fn a_released_step_that_fails_skips_only_what_has_not_started() {
    let steps = vec![
        step(0, &[], true),
        step(1, &[0], true),
        step(2, &[1], true),
        step(3, &[0], true),
    ];
    let one_started = Arc::new(tokio::sync::Notify::new());
    let refused = || StepError::StateWrite("refused".into());
    let run_step = |s: &Step, _permit: Permit, release: Release| {
        let (started, id) = (one_started.clone(), s.id);
        async move {
            match id {
                0 => {
                    release.now();
                    started.notified().await;
                    Err(refused())
                }
                1 => {
                    started.notify_one();
                    Err(refused())
                }
                _ => Ok(()),
            }
        }
    };
    let (events, mut rx) = events();
    let s = schedule(&steps, 1, &Cancel::default(), &events, run_step).await;
    assert_eq!(s.outcomes[0], Outcome::Failed(refused()));
    assert_eq!(s.outcomes[1], Outcome::Failed(refused()));
    assert_eq!(s.outcomes[2], Outcome::Skipped, "waits for the failed 1");
    // 3 was released with 1; whether it started before 0 failed is a
    // race: it either ran or was skipped, never both.
    assert!(matches!(s.outcomes[3], Outcome::Done | Outcome::Skipped));
    let skipped: Vec<String> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            Event::Skipped { address, .. } => Some(address.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        !skipped.contains(&"t/machine/m-1".to_string()),
        "{skipped:?}"
    );
    assert!(
        skipped.contains(&"t/machine/m-2".to_string()),
        "{skipped:?}"
    );
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
    let run_step = |s: &Step, permit: Permit, _release: Release| {
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
    let run_step = |s: &Step, permit: Permit, _release: Release| {
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
    let run_step = |s: &Step, permit: Permit, _release: Release| {
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
    let run_step = |s: &Step, permit: Permit, _release: Release| {
        let (cancel, called, staged, id) = (cancel.clone(), called.clone(), staged.clone(), s.id);
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
    let run_step = |_: &Step, permit: Permit, _release: Release| {
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
    let run_step = |s: &Step, _permit: Permit, _release: Release| {
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
