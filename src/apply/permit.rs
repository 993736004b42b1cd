//! Permits for provider operations. At most `parallelism` provider calls run
//! at once (the slots), and a step that calls a provider starts only when it
//! can also be *staged*: at most `parallelism` more steps wait for a slot
//! with their write-ahead intent already durable. A machine create journals
//! its intent while the machines before it are still at the provider, so
//! the durable write (an fsync, or an etcd quorum write) is not paid inside
//! the slot: a slot goes from one provider call to the next without waiting
//! for the disk.
//!
//! A staged step that never gets its slot (the apply was interrupted
//! meanwhile) gets `None` from [`Permit::slot`]: it has not called its
//! provider, and undoes its intent before it ends
//! ([`StepError::Interrupted`](super::error::StepError::Interrupted)).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::plan::Op;
use crate::resource::Address;

use super::context::Events;
use super::{Cancel, Event};

/// A step's right to call its provider (nothing, for a local step).
/// Dropping it gives back what it holds.
pub(crate) struct Permit {
    inner: Inner,
}

enum Inner {
    None,
    /// A slot: the provider call may run.
    Slot {
        _held: OwnedSemaphorePermit,
    },
    /// Staged: the slot is taken by [`Permit::slot`].
    Staged(Box<Staged>),
}

struct Staged {
    /// Given back once the slot is taken (another step may stage).
    _stage: OwnedSemaphorePermit,
    slots: Arc<Semaphore>,
    cancel: Cancel,
    events: Events,
    address: Address,
    op: Op,
    started: StartMark,
}

/// When a staged step took its slot (its `Started` event was sent then);
/// unset while it has not. The scheduler reads it when the step ends.
pub(crate) type StartMark = Arc<OnceLock<Instant>>;

/// The two semaphores of one apply.
pub(crate) struct Permits {
    stage: Arc<Semaphore>,
    slots: Arc<Semaphore>,
}

impl Permit {
    /// No permit: for a step that calls no provider.
    pub(crate) fn none() -> Permit {
        Permit { inner: Inner::None }
    }

    /// Wait for a slot (at once for a permit that holds one or needs none).
    /// `None`: the apply was interrupted before a slot came; the provider
    /// must not be called. The step's `Started` event is sent here, when
    /// its provider call can begin.
    /// Whether the apply was interrupted: a staged step checks this before
    /// work that only leads to its provider call (a health recheck, its
    /// intent), and ends as not started instead.
    pub(crate) fn interrupted(&self) -> bool {
        match &self.inner {
            Inner::Staged(s) => s.cancel.is_cancelled(),
            _ => false,
        }
    }

    pub(crate) async fn slot(self) -> Option<Permit> {
        let staged = match self.inner {
            Inner::Staged(s) => s,
            other => return Some(Permit { inner: other }),
        };
        let Staged {
            _stage,
            slots,
            cancel,
            events,
            address,
            op,
            started,
        } = *staged;
        tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            Ok(slot) = slots.acquire_owned() => {
                let _ = started.set(Instant::now());
                events.emit(Event::Started { address, op });
                Some(Permit {
                    inner: Inner::Slot { _held: slot },
                })
            }
        }
    }
}

impl Permits {
    pub(crate) fn new(parallelism: std::num::NonZeroUsize) -> Permits {
        let n = parallelism.get().min(Semaphore::MAX_PERMITS);
        Permits {
            stage: Arc::new(Semaphore::new(n)),
            slots: Arc::new(Semaphore::new(n)),
        }
    }

    /// A staging permit, if one is free now.
    pub(crate) fn try_stage(&self) -> Option<OwnedSemaphorePermit> {
        self.stage.clone().try_acquire_owned().ok()
    }

    /// Wait for a staging permit.
    pub(crate) async fn stage(&self) -> OwnedSemaphorePermit {
        self.stage
            .clone()
            .acquire_owned()
            .await
            .expect("the staging semaphore is never closed")
    }

    /// The permit a staged step starts with, and the mark it sets when it
    /// takes its slot.
    pub(crate) fn staged(
        &self,
        stage: OwnedSemaphorePermit,
        cancel: &Cancel,
        events: &Events,
        address: Address,
        op: Op,
    ) -> (Permit, StartMark) {
        let started = StartMark::default();
        let permit = Permit {
            inner: Inner::Staged(Box::new(Staged {
                _stage: stage,
                slots: self.slots.clone(),
                cancel: cancel.clone(),
                events: events.clone(),
                address,
                op,
                started: started.clone(),
            })),
        };
        (permit, started)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn staged(p: &Permits, cancel: &Cancel) -> Permit {
        let stage = p.try_stage().expect("a staging permit is free");
        p.staged(
            stage,
            cancel,
            &Events::default(),
            Address::parse("t/machine/m").unwrap(),
            Op::Create,
        )
        .0
    }

    /// Two slots: two staged permits get theirs, a third is staged but
    /// waits, a fourth cannot be staged; a slot given back lets the third
    /// run and frees a staging permit.
    #[tokio::test]
    async fn a_staged_permit_waits_for_a_slot_and_frees_its_stage() {
        let p = Permits::new(NonZeroUsize::new(2).unwrap());
        let cancel = Cancel::default();
        let a = staged(&p, &cancel).slot().await.expect("a slot");
        let _b = staged(&p, &cancel).slot().await.expect("a slot");
        let c = staged(&p, &cancel);
        let d = staged(&p, &cancel);
        assert!(p.try_stage().is_none(), "two staged: no third");
        let waiting = tokio::spawn(c.slot());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no slot is free");
        drop(a);
        let c = waiting.await.unwrap().expect("the slot given back");
        assert!(p.try_stage().is_some(), "c gave its staging permit back");
        drop((c, d));
    }

    /// Interrupted while waiting: no slot, and the staging permit is free.
    #[tokio::test]
    async fn an_interrupted_staged_permit_gets_no_slot() {
        let p = Permits::new(NonZeroUsize::new(1).unwrap());
        let cancel = Cancel::default();
        let _running = staged(&p, &cancel).slot().await.expect("a slot");
        let second = staged(&p, &cancel);
        assert!(!second.interrupted());
        let waiting = tokio::spawn(second.slot());
        tokio::task::yield_now().await;
        cancel.cancel();
        assert!(staged_after_cancel_is_interrupted(&cancel));
        assert!(waiting.await.unwrap().is_none());
        assert!(p.try_stage().is_some());
    }

    fn staged_after_cancel_is_interrupted(cancel: &Cancel) -> bool {
        let p = Permits::new(NonZeroUsize::new(1).unwrap());
        staged(&p, cancel).interrupted() && !Permit::none().interrupted()
    }
}
