//! The login gate: [`LoginThrottle`] spaces, queues and refuses password
//! checks per user name and per client address, and runs them on a few
//! checker threads of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::users::Scratch;

/// The gate every password login passes, per user name and per client
/// address ("keys"):
///
/// - **Throttle before any work.** After `f` failures of a key (within
///   five minutes) its password checks are spaced `100 ms * 2^f` apart, at
///   most 5 s: when a checker is free, an attempt takes the next free time
///   of each of its keys or waits for the latest, so parallel attempts
///   run one after another instead of side by side, and a failure counts
///   for every attempt still waiting.
/// - **Few waiting.** At most [`LoginThrottle::QUEUED_PER_KEY`] attempts
///   wait per key that has failures and [`LoginThrottle::QUEUED`] in all;
///   more are refused at once, with no password checked. Logins of a key
///   without failures (a crowd of clients with the right password) only
///   wait for a checker.
/// - **Few hashes at once, in memory kept.** Passwords are checked by a
///   few threads of their own (one per core, four at most), each reusing
///   its argon2 memory (19 MiB with the users file's parameters), however
///   many logins come.
#[derive(Debug)]
pub struct LoginThrottle {
    keys: Mutex<HashMap<String, KeyState>>,
    queued: Mutex<usize>,
    hashing: tokio::sync::Semaphore,
    checkers: std::sync::OnceLock<Option<std::sync::mpsc::Sender<CheckJob>>>,
    refusals: Mutex<(u64, Option<Instant>)>,
}

/// A password check for the checker threads.
type CheckJob = Box<dyn FnOnce(&mut Scratch) + Send>;

#[derive(Debug)]
struct KeyState {
    failures: u32,
    last_failure: Instant,
    next_free: Instant,
    queued: usize,
}

impl KeyState {
    /// A key seen for the first time at `now`.
    fn fresh(now: Instant) -> KeyState {
        KeyState {
            failures: 0,
            last_failure: now,
            next_free: now,
            queued: 0,
        }
    }
}

/// An attempt let through the gate, waiting for its turn. Its place in
/// the queues is freed when it is dropped.
#[derive(Debug)]
pub struct Admission<'a> {
    throttle: &'a LoginThrottle,
    keys: Vec<String>,
}

impl Default for LoginThrottle {
    fn default() -> LoginThrottle {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LoginThrottle {
            keys: Mutex::new(HashMap::new()),
            queued: Mutex::new(0),
            hashing: tokio::sync::Semaphore::new(cores.clamp(1, 4)),
            checkers: std::sync::OnceLock::new(),
            refusals: Mutex::new((0, None)),
        }
    }
}

impl LoginThrottle {
    /// Attempts that may wait per user name or per address.
    pub const QUEUED_PER_KEY: usize = 4;
    /// Attempts that may wait in all.
    pub const QUEUED: usize = 256;
    /// Failures are forgotten this long after the last one.
    const MEMORY: Duration = Duration::from_secs(300);

    fn spacing(failures: u32) -> Duration {
        if failures == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)))
                .min(Duration::from_secs(5))
        }
    }

    /// The earliest time an attempt for `keys` may be checked (`now` when
    /// no key has a turn reserved later).
    fn next_turn(states: &HashMap<String, KeyState>, keys: &[String], now: Instant) -> Instant {
        keys.iter()
            .filter_map(|k| states.get(k))
            .map(|s| s.next_free)
            .max()
            .map_or(now, |at| at.max(now))
    }

    /// The delay a new attempt for these keys would wait now.
    pub fn delay(&self, keys: &[String]) -> Duration {
        let now = Instant::now();
        let states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Self::next_turn(&states, keys, now) - now
    }

    /// Let an attempt for `keys` in, or `None` when too many already wait
    /// (in all, or for a key that has failures: a key without failures
    /// only waits for a checker).
    pub fn admit(&self, keys: &[String]) -> Option<Admission<'_>> {
        let now = Instant::now();
        let mut queued = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let mut states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if *queued >= Self::QUEUED
            || keys.iter().any(|k| {
                states
                    .get(k)
                    .is_some_and(|s| s.failures > 0 && s.queued >= Self::QUEUED_PER_KEY)
            })
        {
            return None;
        }
        if states.len() > 10_000 {
            states.retain(|_, s| s.queued > 0 || s.last_failure.elapsed() < Self::MEMORY);
        }
        for key in keys {
            let state = states
                .entry(key.clone())
                .or_insert_with(|| KeyState::fresh(now));
            if state.failures > 0 && state.last_failure.elapsed() >= Self::MEMORY {
                state.failures = 0;
            }
            state.queued += 1;
        }
        *queued += 1;
        Some(Admission {
            throttle: self,
            keys: keys.to_vec(),
        })
    }

    /// Take this attempt's turn now if its keys' schedule allows it
    /// (reserving the next turn one spacing later), else the time to wait
    /// until.
    fn reserve(&self, keys: &[String]) -> Result<(), Instant> {
        let now = Instant::now();
        let mut states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let at = Self::next_turn(&states, keys, now);
        if at > now {
            return Err(at);
        }
        for key in keys {
            if let Some(state) = states.get_mut(key) {
                state.next_free = now + Self::spacing(state.failures);
            }
        }
        Ok(())
    }

    /// Count an attempt refused unchecked; `Some(n)` (the refusals since the
    /// last report, this one included) at most once a second, when it
    /// should be logged.
    pub fn refusal_to_report(&self) -> Option<u64> {
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        refusals.0 += 1;
        if refusals
            .1
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        refusals.1 = Some(Instant::now());
        Some(std::mem::take(&mut refusals.0))
    }

    /// Run `check` for an admitted attempt on a checker thread, once a
    /// checker is free and the attempt's keys' schedule allows it (the
    /// schedule is read when the checker is free, so failures recorded
    /// meanwhile count); `None` when no checker can run it.
    pub async fn check<T: Send + 'static>(
        &self,
        admission: &Admission<'_>,
        check: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Option<T> {
        let _turn = loop {
            let turn = self.hashing.acquire().await.ok()?;
            match self.reserve(&admission.keys) {
                Ok(()) => break turn,
                Err(at) => {
                    drop(turn);
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                }
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: CheckJob = Box::new(move |scratch| {
            let _ = reply.send(check(scratch));
        });
        self.checkers
            .get_or_init(|| self.start_checkers())
            .as_ref()?
            .send(job)
            .ok()?;
        answer.await.ok()
    }

    /// The checker threads, as many as turns.
    fn start_checkers(&self) -> Option<std::sync::mpsc::Sender<CheckJob>> {
        let (jobs, queue) = std::sync::mpsc::channel::<CheckJob>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..self.hashing.available_permits() {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("pcipass-login-{n}"))
                .spawn(move || {
                    let mut scratch = Scratch::default();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut scratch),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!("cannot start a password checker thread: {e}");
                if n == 0 {
                    return None;
                }
            }
        }
        Some(jobs)
    }

    /// Record a failure for these keys.
    pub fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            let state = states
                .entry(k.clone())
                .or_insert_with(|| KeyState::fresh(now));
            state.failures = state.failures.saturating_add(1);
            state.last_failure = now;
            state.next_free = state.next_free.max(now + Self::spacing(state.failures));
        }
    }

    /// Forget failures after a success.
    pub fn succeeded(&self, keys: &[String]) {
        let mut states = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(state) = states.get_mut(k) {
                state.failures = 0;
                state.next_free = Instant::now();
            }
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut queued = self
            .throttle
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *queued = queued.saturating_sub(1);
        let mut states = self.throttle.keys.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(state) = states.get_mut(k) {
                state.queued = state.queued.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_grows_and_resets() {
        let t = LoginThrottle::default();
        let keys = vec!["user:a".to_owned()];
        assert_eq!(t.delay(&keys), Duration::ZERO);
        // Two failures: 400 ms from the second, less the time this test
        // took to ask (measured, so a busy machine cannot fail it).
        let before = Instant::now();
        t.failed(&keys);
        t.failed(&keys);
        let delay = t.delay(&keys);
        let took = before.elapsed();
        assert!(delay <= Duration::from_millis(400), "{delay:?}");
        assert!(
            delay + took >= Duration::from_millis(400),
            "{delay:?} {took:?}"
        );
        t.succeeded(&keys);
        assert_eq!(t.delay(&keys), Duration::ZERO);
    }

    #[test]
    fn parallel_attempts_queue_one_after_another() {
        let t = LoginThrottle::default();
        let keys = vec!["user:root".to_owned(), "addr:10.0.0.1".to_owned()];
        // Without failures a crowd is let in and checked at once.
        let crowd: Vec<_> = (0..10).map(|_| t.admit(&keys).unwrap()).collect();
        assert!(crowd.iter().all(|_| t.reserve(&keys).is_ok()));
        drop(crowd);
        // One failure: checks are 200 ms apart, each after the previous:
        // the next turn is 200 ms after the failure, which happened
        // between `before` and the refusal (bounds from measured instants,
        // so a busy machine cannot fail the test).
        let before = Instant::now();
        t.failed(&keys);
        let _first = t.admit(&keys).unwrap();
        match t.reserve(&keys) {
            Err(turn) => {
                assert!(
                    turn >= before + Duration::from_millis(200),
                    "{turn:?} {before:?}"
                );
                assert!(turn <= Instant::now() + Duration::from_millis(200));
            }
            // Only when the machine stalled for the whole spacing.
            Ok(()) => assert!(before.elapsed() >= Duration::from_millis(200)),
        }
        // At most QUEUED_PER_KEY wait for a key with failures; another
        // key is free.
        let _more: Vec<_> = (0..3).map(|_| t.admit(&keys).unwrap()).collect();
        assert!(t.admit(&keys).is_none());
        assert!(t.admit(&["user:other".to_owned()]).is_some());
        // Refusals are reported once a second, with their count (the
        // next ones are quiet if this test took under a second to ask).
        let reported = Instant::now();
        assert_eq!(t.refusal_to_report(), Some(1));
        let next = [t.refusal_to_report(), t.refusal_to_report()];
        if reported.elapsed() < Duration::from_secs(1) {
            assert_eq!(next, [None, None]);
        }
    }
}
