//! Group commit: requests that arrive while one batch is being written
//! are gathered and handled together by one caller (the leader), the way a
//! database commits concurrent transactions with one log write. Xen
//! Orchestra sends up to ten hides at once; each regenerates grub.cfg and
//! rebuilds the initramfs, so ten in one transaction cost about one.
//!
//! A caller queues its request, then either waits for its answer or, when
//! no one leads, leads: it waits [`GATHER`] for the rest of a burst, takes
//! everything queued, runs the batch, hands out the answers, and goes on
//! while requests keep arriving. Leadership is given up under the same
//! lock that queues, so no request is ever left without a leader.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a new leader waits for the rest of a burst before it takes the
/// queue (a burst of concurrent calls arrives within a few milliseconds;
/// the batch it gathers saves a generator run and an initramfs rebuild).
pub const GATHER: Duration = Duration::from_millis(10);

/// One queued request and its ticket.
#[derive(Debug)]
pub struct Queued<R> {
    /// The ticket its answer is filed under.
    pub ticket: u64,
    /// The request.
    pub request: R,
}

#[derive(Debug)]
struct State<R, O> {
    next: u64,
    queue: Vec<Queued<R>>,
    answers: HashMap<u64, O>,
    leading: bool,
}

/// The queue and answers of a group commit of requests `R` answered by
/// `O`.
#[derive(Debug)]
pub struct GroupCommit<R, O> {
    state: Mutex<State<R, O>>,
    answered: Condvar,
    gather: Duration,
}

impl<R, O> Default for GroupCommit<R, O> {
    fn default() -> Self {
        GroupCommit::new(GATHER)
    }
}

/// Gives up leadership when dropped, also on unwinding: the batch in
/// flight is answered by `lost` so that no waiter waits for ever.
struct Leading<'a, R, O> {
    group: &'a GroupCommit<R, O>,
    in_flight: Vec<u64>,
    lost: &'a dyn Fn() -> O,
}

impl<R, O> Drop for Leading<'_, R, O> {
    fn drop(&mut self) {
        let mut state = self.group.lock();
        for ticket in self.in_flight.drain(..) {
            state.answers.entry(ticket).or_insert_with(self.lost);
        }
        state.leading = false;
        self.group.answered.notify_all();
    }
}

impl<R, O> GroupCommit<R, O> {
    /// A group commit whose leaders wait `gather` for a burst.
    pub fn new(gather: Duration) -> GroupCommit<R, O> {
        GroupCommit {
            state: Mutex::new(State {
                next: 0,
                queue: Vec::new(),
                answers: HashMap::new(),
                leading: false,
            }),
            answered: Condvar::new(),
            gather,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<R, O>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `request` and return its answer: `run` handles a whole batch
    /// (every queued request, in arrival order) and answers each ticket;
    /// a ticket it leaves unanswered, or a batch that panics, gets
    /// `lost()`.
    pub fn submit(
        &self,
        request: R,
        run: &dyn Fn(Vec<Queued<R>>) -> Vec<(u64, O)>,
        lost: &dyn Fn() -> O,
    ) -> O {
        let mut state = self.lock();
        let ticket = state.next;
        state.next += 1;
        state.queue.push(Queued { ticket, request });
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if state.leading {
                state = self.answered.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.leading = true;
            drop(state);
            self.lead(run, lost);
            state = self.lock();
        }
    }

    /// Run batches while requests are queued, then give up leadership.
    fn lead(&self, run: &dyn Fn(Vec<Queued<R>>) -> Vec<(u64, O)>, lost: &dyn Fn() -> O) {
        let mut leading = Leading {
            group: self,
            in_flight: Vec::new(),
            lost,
        };
        std::thread::sleep(self.gather);
        loop {
            let batch = std::mem::take(&mut self.lock().queue);
            if batch.is_empty() {
                // Dropping `leading` gives up leadership under the lock:
                // a request queued after this sees no leader and leads.
                let state = self.lock();
                if state.queue.is_empty() {
                    drop(state);
                    return;
                }
                continue;
            }
            leading.in_flight = batch.iter().map(|q| q.ticket).collect();
            let answers = run(batch);
            let mut state = self.lock();
            state.answers.extend(answers);
            for ticket in leading.in_flight.drain(..) {
                state.answers.entry(ticket).or_insert_with(lost);
            }
            self.answered.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_request_is_answered_and_bursts_share_batches() {
        let group: Arc<GroupCommit<u32, u32>> = Arc::new(GroupCommit::new(GATHER));
        let batches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16u32)
            .map(|n| {
                let group = group.clone();
                let batches = batches.clone();
                std::thread::spawn(move || {
                    let run = |batch: Vec<Queued<u32>>| {
                        batches.fetch_add(1, Ordering::SeqCst);
                        // A batch that takes a while, as a regeneration does.
                        std::thread::sleep(Duration::from_millis(20));
                        batch
                            .into_iter()
                            .map(|q| (q.ticket, q.request * 2))
                            .collect()
                    };
                    group.submit(n, &run, &|| u32::MAX)
                })
            })
            .collect();
        let mut answers: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        answers.sort_unstable();
        assert_eq!(answers, (0..16).map(|n| n * 2).collect::<Vec<_>>());
        // However the threads were scheduled, 16 requests never took 16
        // batches: whoever arrived during a batch shared the next one.
        assert!(batches.load(Ordering::SeqCst) < 16);
    }

    #[test]
    fn an_unanswered_ticket_and_a_panicking_batch_get_lost() {
        let group: GroupCommit<u32, u32> = GroupCommit::new(Duration::ZERO);
        assert_eq!(group.submit(1, &|_| Vec::new(), &|| 99), 99);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.submit(2, &|_| panic!("a batch that fails"), &|| 98)
        }));
        assert!(panicked.is_err());
        // The leadership was given up: the next request is served.
        assert_eq!(group.submit(3, &|b| vec![(b[0].ticket, 3)], &|| 0), 3);
    }
}
