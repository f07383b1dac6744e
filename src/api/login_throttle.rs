//! The login gate: [`LoginThrottle`] spaces, queues and refuses password
//! checks per *source* (the client's address, or a local user id), never
//! per user name, and runs them on bounded pools of its own.
//!
//! A user name is no key: throttling an account lets anyone who can reach
//! the port lock its owner out (OpenSSH's `PerSourcePenalties` penalise
//! the source for the same reason). An address that guesses is slowed and
//! then refused; another address logging in to the same account is not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::users::Scratch;

/// Where a login comes from, as the throttle counts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A network client: its IPv4 address, or the /64 of its IPv6 address
    /// (one host holds a whole /64).
    Address(String),
    /// A local user on the Unix socket (root never passes the gate).
    Uid(u32),
    /// A caller with no source (tests, internal).
    Unknown,
}

impl Source {
    /// The source of a client at `peer` (`ip:port`, `[v6]:port` or a bare
    /// address).
    pub fn of_address(peer: &str) -> Source {
        let host = match peer.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
            _ => peer,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => Source::Address(v4.to_string()),
            Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::Address(v4.to_string()),
                None => {
                    let s = v6.segments();
                    Source::Address(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
                }
            },
            Err(_) => Source::Address(host.chars().take(64).collect()),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Address(a) => f.write_str(a),
            Source::Uid(uid) => write!(f, "uid {uid}"),
            Source::Unknown => f.write_str("unknown"),
        }
    }
}

/// Which pool checks a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// argon2 against the users file: a few threads, each keeping its
    /// 19 MiB of argon2 memory.
    Hash,
    /// PAM: more threads, since a failed check sleeps in PAM's fail delay
    /// (pam_unix's 2 s) on its thread, which pcipassd cannot shorten
    /// without reaching into PAM's handle (`PAM_FAIL_DELAY`).
    Pam,
}

/// Why an attempt was not let through the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source failed too often lately: retry after this long.
    Penalised(Duration),
    /// Too many attempts wait (from this source, or in all): retry after
    /// this long.
    Busy(Duration),
}

impl Refusal {
    /// Whole seconds to wait before retrying (at least 1).
    pub fn retry_after_secs(self) -> u64 {
        let (Refusal::Penalised(d) | Refusal::Busy(d)) = self;
        d.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// The gate every password login passes, per source:
///
/// - **Spaced after failures.** After `f` failures of a source (within
///   [`LoginThrottle::MEMORY`]) its checks are spaced `100 ms * 2^f` apart,
///   at most 5 s, one at a time.
/// - **Penalised.** From [`LoginThrottle::PENALTY_AFTER`] failures on, the
///   source is refused unchecked until its failures are forgotten.
/// - **Few waiting.** At most [`LoginThrottle::WAITING_FAILING`] attempts
///   wait per source with failures, [`LoginThrottle::WAITING_CLEAN`] per
///   source without (a management server or a NAT is one address), and
///   [`LoginThrottle::WAITING`] in all.
/// - **Clean sources first.** Sources with failures may hold only some of
///   a pool's threads, so a source that has not been failing always finds
///   one free soon; and each source runs one check at a time.
/// - **Bounded memory.** At most [`LoginThrottle::SOURCES`] sources are
///   remembered; when full, the idle one whose last attempt is oldest is
///   forgotten.
#[derive(Debug)]
pub struct LoginThrottle {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
    hash: PoolTurns,
    pam: PoolTurns,
    checkers: std::sync::OnceLock<Option<std::sync::mpsc::Sender<CheckJob>>>,
    pam_workers: std::sync::OnceLock<Option<std::sync::mpsc::Sender<CheckJob>>>,
}

/// A pool's turns: every check takes one of `all`; a check for a source
/// with failures also takes one of `failing` (fewer).
#[derive(Debug)]
struct PoolTurns {
    all: tokio::sync::Semaphore,
    failing: tokio::sync::Semaphore,
    threads: usize,
}

impl PoolTurns {
    fn new(threads: usize) -> PoolTurns {
        PoolTurns {
            all: tokio::sync::Semaphore::new(threads),
            failing: tokio::sync::Semaphore::new(threads.saturating_sub(threads / 4 + 1).max(1)),
            threads,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    sources: HashMap<Source, SourceState>,
    waiting: usize,
}

/// A password check for the checker threads.
type CheckJob = Box<dyn FnOnce(&mut Scratch) + Send>;

#[derive(Debug)]
struct SourceState {
    failures: u32,
    last_failure: Instant,
    last_seen: Instant,
    next_free: Instant,
    waiting: usize,
    checking: bool,
    logged: Option<Instant>,
}

impl SourceState {
    fn fresh(now: Instant) -> SourceState {
        SourceState {
            failures: 0,
            last_failure: now,
            last_seen: now,
            next_free: now,
            waiting: 0,
            checking: false,
            logged: None,
        }
    }

    /// Forget failures older than the memory.
    fn age(&mut self, now: Instant) {
        if self.failures > 0 && now.duration_since(self.last_failure) >= LoginThrottle::MEMORY {
            self.failures = 0;
        }
    }
}

/// An attempt let through the gate, waiting for its turn. Its place is
/// freed when it is dropped.
#[derive(Debug)]
pub struct Admission<'a> {
    throttle: &'a LoginThrottle,
    source: Source,
    /// Still counted among the waiting (a refusal while waiting has
    /// uncounted it already).
    counted: bool,
}

/// Why an attempt cannot take its turn now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Its spacing ends then.
    Until(Instant),
    /// Another check of its source runs.
    Check,
    /// It is refused.
    Refused(Refusal),
}

impl Default for LoginThrottle {
    fn default() -> LoginThrottle {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LoginThrottle {
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            hash: PoolTurns::new(cores.clamp(2, 4)),
            pam: PoolTurns::new(Self::PAM_THREADS),
            checkers: std::sync::OnceLock::new(),
            pam_workers: std::sync::OnceLock::new(),
        }
    }
}

impl LoginThrottle {
    /// Attempts that may wait per source with failures.
    pub const WAITING_FAILING: usize = 4;
    /// Attempts that may wait per source without failures.
    pub const WAITING_CLEAN: usize = 128;
    /// Attempts that may wait in all.
    pub const WAITING: usize = 1024;
    /// Failures after which a source is refused unchecked.
    pub const PENALTY_AFTER: u32 = 20;
    /// Sources remembered at most.
    pub const SOURCES: usize = 4096;
    /// Threads that run PAM checks.
    pub const PAM_THREADS: usize = 64;
    /// Failures are forgotten this long after the last one.
    pub const MEMORY: Duration = Duration::from_secs(300);
    /// A source's refusals are logged at most this often.
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn spacing(failures: u32) -> Duration {
        if failures == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)))
                .min(Duration::from_secs(5))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay a new attempt from `source` would wait for its spacing.
    pub fn delay(&self, source: &Source) -> Duration {
        let now = Instant::now();
        self.lock().sources.get(source).map_or(Duration::ZERO, |s| {
            s.next_free.saturating_duration_since(now)
        })
    }

    /// How many sources are remembered.
    pub fn sources(&self) -> usize {
        self.lock().sources.len()
    }

    /// Let an attempt from `source` in, or say why not (and whether this
    /// refusal should be logged: once per source per interval).
    pub fn admit(&self, source: &Source) -> Result<Admission<'_>, (Refusal, bool)> {
        let now = Instant::now();
        let mut state = self.lock();
        if !state.sources.contains_key(source) && state.sources.len() >= Self::SOURCES {
            let oldest = state
                .sources
                .iter()
                .filter(|(_, s)| s.waiting == 0 && !s.checking)
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    state.sources.remove(&k);
                }
                None => return Err((Refusal::Busy(Duration::from_secs(1)), false)),
            }
        }
        let total = state.waiting;
        let entry = state
            .sources
            .entry(source.clone())
            .or_insert_with(|| SourceState::fresh(now));
        entry.age(now);
        entry.last_seen = now;
        let refusal = if entry.failures >= Self::PENALTY_AFTER {
            Some(Refusal::Penalised(
                Self::MEMORY.saturating_sub(now.duration_since(entry.last_failure)),
            ))
        } else if total >= Self::WAITING
            || (entry.failures > 0 && entry.waiting >= Self::WAITING_FAILING)
            || entry.waiting >= Self::WAITING_CLEAN
        {
            Some(Refusal::Busy(
                Self::spacing(entry.failures).max(Duration::from_secs(1)),
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let log = entry
                .logged
                .is_none_or(|at| now.duration_since(at) >= Self::LOG_EVERY);
            if log {
                entry.logged = Some(now);
            }
            return Err((refusal, log));
        }
        entry.waiting += 1;
        state.waiting += 1;
        Ok(Admission {
            throttle: self,
            source: source.clone(),
            counted: true,
        })
    }

    /// Take the source's turn now if it is free and its spacing allows
    /// (then it checks until [`Self::finished`]); else whether it has
    /// failures and when to look again (`None`: when another check of the
    /// source ends).
    fn reserve(&self, source: &Source) -> Result<(), Wait> {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(s) = state.sources.get_mut(source) else {
            return Ok(());
        };
        // Admitted while the source was clean, it has failed since: only
        // as many may wait as for any failing source.
        if s.failures > 0 && s.waiting > Self::WAITING_FAILING {
            s.waiting -= 1;
            state.waiting = state.waiting.saturating_sub(1);
            return Err(Wait::Refused(Refusal::Busy(Self::spacing(
                state.sources.get(source).map_or(1, |s| s.failures),
            ))));
        }
        if s.checking {
            return Err(Wait::Check);
        }
        if s.next_free > now {
            return Err(Wait::Until(s.next_free));
        }
        s.checking = true;
        s.next_free = now + Self::spacing(s.failures);
        Ok(())
    }

    fn failing(&self, source: &Source) -> bool {
        self.lock()
            .sources
            .get(source)
            .is_some_and(|s| s.failures > 0)
    }

    /// Run `check` for an admitted attempt on `pool`, once the source's
    /// turn has come and a thread is free. `Err(Some(_))`: refused while
    /// it waited (its source failed meanwhile, and too many of its
    /// attempts wait); `Err(None)`: no thread can run it.
    pub async fn check<T: Send + 'static>(
        &self,
        admission: &mut Admission<'_>,
        pool: Pool,
        check: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Result<T, Option<Refusal>> {
        let turns = match pool {
            Pool::Hash => &self.hash,
            Pool::Pam => &self.pam,
        };
        let _turns = loop {
            let notified = self.changed.notified();
            let failing = if self.failing(&admission.source) {
                Some(turns.failing.acquire().await.map_err(|_| None)?)
            } else {
                None
            };
            let turn = turns.all.acquire().await.map_err(|_| None)?;
            match self.reserve(&admission.source) {
                Ok(()) => break (turn, failing),
                Err(wait) => {
                    drop((turn, failing));
                    match wait {
                        Wait::Until(at) => {
                            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                        }
                        Wait::Check => notified.await,
                        Wait::Refused(refusal) => {
                            admission.counted = false;
                            return Err(Some(refusal));
                        }
                    }
                }
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: CheckJob = Box::new(move |scratch| {
            let _ = reply.send(check(scratch));
        });
        let workers = match pool {
            Pool::Hash => &self.checkers,
            Pool::Pam => &self.pam_workers,
        };
        let sent = workers
            .get_or_init(|| start_workers(pool, turns.threads))
            .as_ref()
            .and_then(|w| w.send(job).ok());
        let result = match sent {
            Some(()) => answer.await.ok(),
            None => None,
        };
        self.finished(&admission.source);
        result.ok_or(None)
    }

    /// A check of `source` ended: its next attempt may run.
    fn finished(&self, source: &Source) {
        if let Some(s) = self.lock().sources.get_mut(source) {
            s.checking = false;
        }
        self.changed.notify_waiters();
    }

    /// Record a failure of `source`.
    pub fn failed(&self, source: &Source) {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(s) = state.sources.get_mut(source) {
            s.age(now);
            s.failures = s.failures.saturating_add(1);
            s.last_failure = now;
            s.next_free = s.next_free.max(now + Self::spacing(s.failures));
        }
    }

    /// Forget the failures of `source` after a success.
    pub fn succeeded(&self, source: &Source) {
        if let Some(s) = self.lock().sources.get_mut(source) {
            s.failures = 0;
            s.next_free = Instant::now();
        }
    }
}

/// The threads of `pool`, `threads` of them, started on first use.
fn start_workers(pool: Pool, threads: usize) -> Option<std::sync::mpsc::Sender<CheckJob>> {
    let (jobs, queue) = std::sync::mpsc::channel::<CheckJob>();
    let queue = Arc::new(Mutex::new(queue));
    let name = match pool {
        Pool::Hash => "pcipass-login",
        Pool::Pam => "pcipass-pam",
    };
    for n in 0..threads {
        let queue = queue.clone();
        let started = std::thread::Builder::new()
            .name(format!("{name}-{n}"))
            // PAM modules and argon2 need little stack; 64 PAM threads
            // stay small.
            .stack_size(512 * 1024)
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

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut state = self.throttle.lock();
        state.waiting = state.waiting.saturating_sub(1);
        if let Some(s) = state.sources.get_mut(&self.source) {
            s.waiting = s.waiting.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(a: &str) -> Source {
        Source::of_address(a)
    }

    #[test]
    fn a_source_is_the_address_or_its_ipv6_64() {
        for (peer, want) in [
            ("127.0.0.2:5555", "127.0.0.2"),
            ("10.1.2.3", "10.1.2.3"),
            ("[::ffff:10.0.0.1]:80", "10.0.0.1"),
            ("[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"),
            ("[2001:db8:1:2:bbbb::9]:443", "2001:db8:1:2::/64"),
        ] {
            assert_eq!(addr(peer), Source::Address(want.into()), "{peer}");
        }
    }

    #[test]
    fn failures_space_and_then_penalise_the_source_not_others() {
        let t = LoginThrottle::default();
        let bad = addr("127.0.0.2:1");
        let good = addr("127.0.0.3:1");
        assert_eq!(t.delay(&bad), Duration::ZERO);
        let before = Instant::now();
        {
            let _a = t.admit(&bad).unwrap();
            t.failed(&bad);
            t.failed(&bad);
        }
        let delay = t.delay(&bad);
        let took = before.elapsed();
        assert!(delay <= Duration::from_millis(400), "{delay:?}");
        assert!(
            delay + took >= Duration::from_millis(400),
            "{delay:?} {took:?}"
        );
        // A source with failures may have few attempts waiting; another
        // source is not touched.
        let waiting: Vec<_> = (0..LoginThrottle::WAITING_FAILING)
            .map(|_| t.admit(&bad).unwrap())
            .collect();
        assert!(matches!(t.admit(&bad), Err((Refusal::Busy(_), true))));
        assert!(matches!(t.admit(&bad), Err((Refusal::Busy(_), false))));
        assert!(t.admit(&good).is_ok());
        drop(waiting);
        // Enough failures: refused unchecked, with the time left.
        for _ in 0..LoginThrottle::PENALTY_AFTER {
            t.failed(&bad);
        }
        match t.admit(&bad) {
            Err((Refusal::Penalised(left), _)) => {
                assert!(left <= LoginThrottle::MEMORY && left > Duration::from_secs(200));
            }
            other => panic!("{other:?}"),
        }
        assert!(t.admit(&good).is_ok());
        t.succeeded(&bad);
        assert!(t.admit(&bad).is_ok());
    }

    #[test]
    fn clean_sources_wait_in_numbers_and_the_table_stays_bounded() {
        let t = LoginThrottle::default();
        let nat = addr("127.0.0.9:1");
        let crowd: Vec<_> = (0..LoginThrottle::WAITING_CLEAN)
            .map(|_| t.admit(&nat).unwrap())
            .collect();
        assert!(t.admit(&nat).is_err());
        drop(crowd);
        for n in 0..(LoginThrottle::SOURCES + 500) {
            let source = Source::Address(format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255));
            drop(t.admit(&source).unwrap());
        }
        assert_eq!(t.sources(), LoginThrottle::SOURCES);
    }

    #[test]
    fn one_check_at_a_time_per_source() {
        let t = LoginThrottle::default();
        let s = addr("127.0.0.4:1");
        let _a = t.admit(&s).unwrap();
        assert_eq!(t.reserve(&s), Ok(()));
        assert_eq!(t.reserve(&s), Err(Wait::Check));
        t.finished(&s);
        assert_eq!(t.reserve(&s), Ok(()));
        t.finished(&s);
        // Admitted while clean, then the source fails: the ones beyond
        // what a failing source may have waiting are refused at their
        // turn.
        let mut more: Vec<_> = (0..6).map(|_| t.admit(&s).unwrap()).collect();
        t.failed(&s);
        assert!(matches!(
            t.reserve(&s),
            Err(Wait::Refused(Refusal::Busy(_)))
        ));
        more.pop().unwrap().counted = false;
    }
}
