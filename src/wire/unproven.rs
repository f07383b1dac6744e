//! Connections that have not finished a request yet ("unproven"), kept
//! apart from established clients, as OpenSSH's `MaxStartups` keeps
//! unauthenticated connections apart: at most a bound of them at once,
//! and when a new one arrives with the bound reached, the slowest (fewest
//! bytes a second since it was accepted) is closed to make room. A client
//! that sends a whole request promptly is thus served however many slow
//! senders hold connections (slow headers, slow bodies, slow TLS
//! handshakes), and the slow ones cannot keep every connection slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A connection this young is not taken for slow yet (its first bytes may
/// still be on their way), unless every one is this young.
const GRACE: Duration = Duration::from_secs(1);

/// One unproven connection: when it was accepted, how many bytes it sent,
/// and how to close it.
#[derive(Debug)]
struct Entry {
    started: Instant,
    bytes: Arc<AtomicU64>,
    close: Arc<tokio::sync::Notify>,
}

/// The unproven connections.
#[derive(Debug)]
pub struct Unproven {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    entries: HashMap<u64, Entry>,
    /// Connections closed to make room, not yet logged; when the last
    /// line was written.
    evicted: u64,
    logged: Option<Instant>,
}

/// A connection's place among the unproven; it leaves when the
/// connection finishes its first request ([`Ticket::proven`]) or ends.
#[derive(Debug)]
pub struct Ticket {
    registry: Arc<Unproven>,
    id: u64,
    /// Bytes the connection has sent (its reader counts them).
    pub bytes: Arc<AtomicU64>,
    /// Notified when the connection is closed to make room.
    pub close: Arc<tokio::sync::Notify>,
}

impl Unproven {
    /// At most `limit` unproven connections.
    pub fn new(limit: usize) -> Arc<Unproven> {
        Arc::new(Unproven {
            limit: limit.max(1),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a new connection; with the bound reached, the slowest
    /// other one is told to close (and counted, logged at most every 10 s).
    pub fn admit(self: &Arc<Self>) -> Ticket {
        let now = Instant::now();
        let bytes = Arc::new(AtomicU64::new(0));
        let close = Arc::new(tokio::sync::Notify::new());
        let mut state = self.lock();
        if state.entries.len() >= self.limit {
            let seen: Vec<(u64, Duration, u64)> = state
                .entries
                .iter()
                .map(|(id, e)| {
                    (
                        *id,
                        now.duration_since(e.started),
                        e.bytes.load(Ordering::Relaxed),
                    )
                })
                .collect();
            if let Some(victim) = slowest(&seen)
                && let Some(entry) = state.entries.remove(&victim)
            {
                entry.close.notify_one();
                state.evicted += 1;
                if state
                    .logged
                    .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
                {
                    tracing::warn!(
                        limit = self.limit,
                        closed = state.evicted,
                        "connections that had not finished a request were closed to make room \
                         for new ones (the slowest first; logged at most every 10 s)"
                    );
                    state.evicted = 0;
                    state.logged = Some(now);
                }
            }
        }
        let id = state.next;
        state.next += 1;
        state.entries.insert(
            id,
            Entry {
                started: now,
                bytes: bytes.clone(),
                close: close.clone(),
            },
        );
        Ticket {
            registry: self.clone(),
            id,
            bytes,
            close,
        }
    }

    /// Close every unproven connection older than `after` that has sent
    /// less than `min_rate` bytes a second on average since it was
    /// accepted (a minimum data rate, whatever the pressure); returns how
    /// many were closed.
    pub fn sweep(&self, after: Duration, min_rate: u64) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        let slow: Vec<u64> = state
            .entries
            .iter()
            .filter(|(_, e)| {
                let age = now.duration_since(e.started);
                age >= after
                    && (e.bytes.load(Ordering::Relaxed) as f64)
                        < min_rate as f64 * age.as_secs_f64()
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &slow {
            if let Some(entry) = state.entries.remove(id) {
                entry.close.notify_one();
            }
        }
        if !slow.is_empty() {
            state.evicted += slow.len() as u64;
            if state
                .logged
                .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
            {
                tracing::warn!(
                    closed = state.evicted,
                    min_rate,
                    "connections sending a request slower than the minimum rate were closed \
                     (logged at most every 10 s)"
                );
                state.evicted = 0;
                state.logged = Some(now);
            }
        }
        slow.len()
    }

    /// How many connections are unproven now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ticket {
    /// The connection finished a request: it is an established client.
    pub fn proven(&self) {
        self.registry.lock().entries.remove(&self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.proven();
    }
}

/// Of connections `(id, age, bytes)`, the one to close: the lowest rate
/// (bytes a second) among those older than [`GRACE`], the oldest on a
/// tie; when all are younger, the oldest. `None` for none.
fn slowest(seen: &[(u64, Duration, u64)]) -> Option<u64> {
    let rate = |age: Duration, bytes: u64| bytes as f64 / age.as_secs_f64().max(1e-3);
    let settled: Vec<&(u64, Duration, u64)> =
        seen.iter().filter(|(_, age, _)| *age >= GRACE).collect();
    if settled.is_empty() {
        return seen
            .iter()
            .max_by_key(|(_, age, _)| *age)
            .map(|(id, _, _)| *id);
    }
    settled
        .into_iter()
        .min_by(|a, b| {
            rate(a.1, a.2)
                .total_cmp(&rate(b.1, b.2))
                .then(b.1.cmp(&a.1))
        })
        .map(|(id, _, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn the_slowest_settled_connection_goes_first() {
        for (seen, want) in [
            // A trickle of 10 B/s loses to a client that sent 2 KiB at once.
            (vec![(1, s(5.0), 50), (2, s(2.0), 2048)], Some(1)),
            // Equal rates: the older goes.
            (vec![(1, s(2.0), 0), (2, s(8.0), 0)], Some(2)),
            // A new connection is not taken for slow in its first second.
            (vec![(1, s(0.2), 0), (2, s(3.0), 3000)], Some(2)),
            // All new: the oldest.
            (vec![(1, s(0.2), 0), (2, s(0.5), 0)], Some(2)),
            (vec![], None),
        ] {
            assert_eq!(slowest(&seen), want, "{seen:?}");
        }
    }

    #[tokio::test]
    async fn a_connection_under_the_minimum_rate_is_closed() {
        let registry = Unproven::new(10);
        let slow = registry.admit();
        let fast = registry.admit();
        fast.bytes.store(1 << 20, Ordering::Relaxed);
        // Too young for the rule: nothing is closed.
        assert_eq!(registry.sweep(Duration::from_secs(3600), 64), 0);
        // Old enough (any age): the one under 64 B/s goes, the other stays.
        assert_eq!(registry.sweep(Duration::ZERO, 64), 1);
        tokio::time::timeout(Duration::from_secs(5), slow.close.notified())
            .await
            .expect("the slow one told to close");
        assert_eq!(registry.len(), 1);
    }

    #[tokio::test]
    async fn a_new_connection_past_the_bound_closes_the_slowest() {
        let registry = Unproven::new(2);
        let a = registry.admit();
        let b = registry.admit();
        b.bytes.store(10_000, Ordering::Relaxed);
        let _c = registry.admit();
        // `a` and `b` are both in their grace: the oldest (`a`) goes.
        tokio::time::timeout(Duration::from_secs(5), a.close.notified())
            .await
            .expect("a told to close");
        assert_eq!(registry.len(), 2);
        b.proven();
        assert_eq!(registry.len(), 1);
        drop(b);
        assert_eq!(registry.len(), 1);
    }
}

/// A stream that counts the bytes read from it into `bytes`.
#[derive(Debug)]
pub struct CountRead<IO> {
    inner: IO,
    bytes: Arc<AtomicU64>,
}

impl<IO> CountRead<IO> {
    /// `inner`, counting into `bytes`.
    pub fn new(inner: IO, bytes: Arc<AtomicU64>) -> CountRead<IO> {
        CountRead { inner, bytes }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountRead<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        if read > 0 {
            self.bytes.fetch_add(read, Ordering::Relaxed);
        }
        polled
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountRead<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
