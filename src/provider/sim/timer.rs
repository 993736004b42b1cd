//! The simulator's clock for simulated durations: a future that completes
//! at its deadline to within tens of microseconds.
//!
//! tokio's timer ticks in whole milliseconds and wakes up to a tick late (a
//! 20 ms sleep took 21.05 ms on average), which would add 5% to every
//! simulated operation. Finishing the last stretch with `thread::sleep` on a
//! blocking thread, as this module's predecessor did, still overshot by 0.41
//! ms on average and 0.88 ms at the 90th percentile at 50 machines in
//! flight: fifty threads woke at once and queued for two cores. Here one
//! thread of the process keeps every deadline in a heap, sleeps until the
//! earliest on a condition variable with a 1 µs timer slack, and wakes the
//! tasks whose deadline has passed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// One sleeper: set when its deadline has passed.
struct Entry {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// A deadline in the heap (earliest first; the sequence number keeps equal
/// deadlines apart).
struct Due {
    at: Instant,
    seq: u64,
    entry: Arc<Entry>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Heap {
    due: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

struct Timer {
    heap: Mutex<Heap>,
    changed: Condvar,
}

/// The process's timer thread, started at the first sleep.
fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(start_timer)
}

/// A timer and its thread (they live as long as the process).
fn start_timer() -> &'static Timer {
    let t: &'static Timer = Box::leak(Box::new(Timer {
        heap: Mutex::new(Heap::default()),
        changed: Condvar::new(),
    }));
    std::thread::Builder::new()
        .name("capi-sim-timer".into())
        .spawn(move || run(t))
        .expect("spawn the simulator's timer thread");
    t
}

/// Wake every sleeper whose deadline has passed; sleep until the next.
fn run(t: &'static Timer) {
    // The kernel may delay a timed wait by the thread's timer slack (50 µs
    // by default); 1 µs keeps the wake-up on the deadline.
    // SAFETY: prctl with PR_SET_TIMERSLACK takes one integer argument.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let mut heap = t.heap.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let mut fired = Vec::new();
        while heap.due.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Reverse(d) = heap.due.pop().expect("peeked");
            fired.push(d.entry);
        }
        if !fired.is_empty() {
            // Wake outside the lock: a woken task may sleep again at once.
            drop(heap);
            for e in fired {
                e.done.store(true, Ordering::Release);
                let waker = e.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(w) = waker {
                    w.wake();
                }
            }
            heap = t.heap.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        heap = match heap.due.peek().map(|Reverse(d)| d.at) {
            None => t.changed.wait(heap).unwrap_or_else(|e| e.into_inner()),
            Some(at) => {
                t.changed
                    .wait_timeout(heap, at.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// Complete at `deadline` (at once if it has passed).
pub(super) fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
        timer: None,
    }
}

pub(super) struct Sleep {
    deadline: Instant,
    entry: Option<Arc<Entry>>,
    /// The timer to wait on; `None`: the process's.
    timer: Option<&'static Timer>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(e) = &self.entry {
            if e.done.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *e.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            // The timer may have fired between the check and the store.
            return if e.done.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let entry = Arc::new(Entry {
            done: AtomicBool::new(false),
            waker: Mutex::new(Some(cx.waker().clone())),
        });
        let t = self.timer.unwrap_or_else(timer);
        let mut heap = t.heap.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = heap
            .due
            .peek()
            .is_none_or(|Reverse(d)| self.deadline < d.at);
        heap.seq += 1;
        let seq = heap.seq;
        heap.due.push(Reverse(Due {
            at: self.deadline,
            seq,
            entry: entry.clone(),
        }));
        drop(heap);
        if earliest {
            t.changed.notify_one();
        }
        self.entry = Some(entry);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sleepers_wake_at_their_deadlines_never_before() {
        let start = Instant::now();
        // Out of order, some equal, one already past.
        let offsets = [30u64, 5, 20, 5, 0, 12];
        let tasks: Vec<_> = offsets
            .iter()
            .map(|&ms| {
                let deadline = start + Duration::from_millis(ms);
                tokio::spawn(async move {
                    sleep_until(deadline).await;
                    (deadline, Instant::now())
                })
            })
            .collect();
        for t in tasks {
            let (deadline, woke) = t.await.unwrap();
            assert!(woke >= deadline, "woke before its deadline");
        }
        // On a timer of its own (no other test's sleeper can wake its
        // thread): a sleeper registered after a much later one wakes at its
        // own deadline, which only the notice of an earlier deadline allows.
        let own = start_timer();
        let on = |deadline| Sleep {
            deadline,
            entry: None,
            timer: Some(own),
        };
        let late_deadline = Instant::now() + Duration::from_secs(2);
        let late = tokio::spawn(on(late_deadline));
        tokio::time::sleep(Duration::from_millis(1)).await;
        on(Instant::now() + Duration::from_millis(2)).await;
        assert!(
            Instant::now() < late_deadline,
            "waited for the later deadline"
        );
        late.abort();
    }
}
