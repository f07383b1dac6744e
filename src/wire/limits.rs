//! What bounds a client's hold on the daemon's connections: a write
//! timeout (a client that does not read its answer loses the connection),
//! a per-address connection bound, and the connection limits fitted to the
//! process's open-file limit.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A connection whose writes must make progress within `limit`: a write
/// (or flush) that stays blocked that long fails with `TimedOut`, which
/// ends the connection. Reads are not limited here (the HTTP layer bounds
/// the time to send a request).
#[derive(Debug)]
pub struct WriteTimeout<IO> {
    inner: IO,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> WriteTimeout<IO> {
    /// `inner` with writes bounded by `limit`.
    pub fn new(inner: IO, limit: Duration) -> WriteTimeout<IO> {
        WriteTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a pending write: start the clock, or fail once it ran out.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        result: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => match self.check_stall(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

use std::future::Future;

impl<IO: AsyncRead + Unpin> AsyncRead for WriteTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progressed(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progressed(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progressed(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progressed(result, cx)
    }
}

/// Connections held per client address, bounded.
#[derive(Debug)]
pub struct AddressSlots {
    limit: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
    /// Per address: connections refused since the last log line, and when
    /// that line was written (bounded: cleared when it grows large).
    refused: Mutex<HashMap<IpAddr, (u64, Option<std::time::Instant>)>>,
}

/// One connection's place in [`AddressSlots`]; freed when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    address: IpAddr,
}

impl AddressSlots {
    /// At most `limit` connections per address.
    pub fn new(limit: usize) -> Arc<AddressSlots> {
        Arc::new(AddressSlots {
            limit: limit.max(1),
            held: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
        })
    }

    /// Count a connection of `address` refused at the limit; `Some(n)`
    /// (refused since the last line, this one included) at most once per
    /// address every 10 s, when it should be logged.
    pub fn refused(&self, address: IpAddr) -> Option<u64> {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() > 4096 {
            refused.clear();
        }
        let entry = refused.entry(address).or_insert((0, None));
        entry.0 += 1;
        if entry
            .1
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(10))
        {
            return None;
        }
        entry.1 = Some(std::time::Instant::now());
        Some(std::mem::take(&mut entry.0))
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for a new connection from `address`, unless it already holds
    /// the limit.
    pub fn take(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(address).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: self.clone(),
            address,
        })
    }

    /// Connections `address` holds now.
    pub fn held_by(&self, address: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&address).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// Descriptors kept free for everything but connections: the database,
/// grub.cfg and its lock, the users file, sysfs reads, child processes.
pub const RESERVED_FDS: u64 = 256;

/// The connection limits the open-file limit allows: the soft limit is
/// first raised toward the hard one; when it still cannot hold
/// `connections` connections plus [`RESERVED_FDS`], the limit is lowered
/// (and the caller logs it). Returns the usable number of connections
/// and the soft limit in force.
pub fn fit_to_open_files(connections: usize) -> (usize, u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = connections as u64 + RESERVED_FDS;
    let mut soft = limit.current.unwrap_or(u64::MAX);
    if soft < wanted {
        let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
        if raised > soft
            && setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(raised),
                    maximum: limit.maximum,
                },
            )
            .is_ok()
        {
            soft = raised;
        }
    }
    let usable = soft.saturating_sub(RESERVED_FDS).max(1);
    (
        connections.min(usize::try_from(usable).unwrap_or(usize::MAX)),
        soft,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn an_address_holds_at_most_its_limit_and_gets_slots_back() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "a third from the same address");
        assert!(slots.take(b).is_some(), "another address is not affected");
        drop(first);
        assert_eq!(slots.held_by(a), 1);
        assert!(slots.take(a).is_some());
        // Refusals are logged once per address every 10 s, with a count.
        assert_eq!(slots.refused(a), Some(1));
        assert_eq!(slots.refused(a), None);
        assert_eq!(slots.refused(b), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_never_reads_loses_the_connection() {
        let (client, server) = tokio::io::duplex(1024);
        let mut server = WriteTimeout::new(server, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let result = server.write_all(&[0u8; 64 * 1024]).await;
        let error = result.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(5));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_served() {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = WriteTimeout::new(server, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 512];
            while total < 64 * 1024 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                total += client.read(&mut buf).await.unwrap();
            }
            total
        });
        server.write_all(&[0u8; 64 * 1024]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 64 * 1024);
    }

    #[test]
    fn the_fd_limit_bounds_connections() {
        let (usable, soft) = fit_to_open_files(100);
        assert_eq!(usable, 100, "100 connections fit under any sane limit");
        assert!(soft >= 100 + RESERVED_FDS);
        let (usable, soft) = fit_to_open_files(usize::MAX / 2);
        assert!(usable as u64 <= soft.saturating_sub(RESERVED_FDS));
    }
}
