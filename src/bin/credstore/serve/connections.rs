//! The sidecar's connections: the accept loop, the connection limit, and the header and
//! idle timeouts. (The request timeout is an HTTP answer, so it lives with the routes.)
//!
//! A connection is always in one of four states, which its [`Watch`] keeps:
//!
//! - waiting for a request head, since the accept or since the first byte after an idle
//!   spell: closed `header_timeout` after that;
//! - answering a request: no deadline here (`--request-timeout` answers it);
//! - idle, kept alive with nothing received since its last answer: closed `idle_timeout`
//!   after that answer;
//! - evicted: closed at once.
//!
//! At most `max_connections` are open. A newcomer at the limit evicts the open connection
//! that has waited longest without a request in flight (idle, or its head incomplete), so
//! no number of idle or slow clients keeps a new one out. Only when every connection is
//! answering a request does the newcomer wait, and no longer than it takes one of them to
//! be answered.
//!
//! Why not hyper's `header_read_timeout`: since hyper 1.4 its timer starts as soon as a
//! connection is ready for a request (at the accept and again after each answer), so it
//! bounds idle time and header time together; with it a kept-alive connection would be
//! closed after the header timeout, or a slow client given the idle timeout to send its
//! head. Keeping the two apart needs the state above, and the watchdog that reads it.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// How long a failed accept that is not the peer's doing (out of descriptors, say) makes
/// the loop wait before the next one, so that it does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// The limits the sidecar puts on its connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From the accept, or from the first byte after an idle spell, to a complete request
    /// head.
    pub header_timeout: Duration,
    /// From an answer to the next byte on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: u32,
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; then stops
/// accepting, closes the connections that are not answering a request, lets the others
/// finish their answer, and returns once every connection is closed (so within the
/// request timeout).
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let open = Arc::new(Open::default());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after(&e).await;
                    continue;
                }
            },
            () = shutdown.as_mut() => break,
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let room = tokio::select! {
                    slot = make_room(&slots, &open) => slot,
                    () = shutdown.as_mut() => None,
                };
                let Some(slot) = room else { break };
                slot
            }
        };
        let registration = open.register();
        tokio::spawn(connection(stream, peer, router.clone(), limits, registration, slot));
    }
    drop(listener);
    open.drain();
    // Each connection holds its slot until it is closed.
    let _all_closed = slots.acquire_many(limits.max_connections).await;
}

/// A slot for a newcomer when all are taken: evicts the connection that has waited longest
/// without a request in flight and takes its slot; when every connection is answering a
/// request, evicts the first that finishes its answer (or takes the slot of the first
/// that closes). `None` only if the semaphore was closed, which nothing does.
async fn make_room(slots: &Arc<Semaphore>, open: &Open) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
            return Some(slot);
        }
        if open.evict_longest_waiting() {
            // The evicted connection's task drops its slot as soon as it runs.
            return Arc::clone(slots).acquire_owned().await.ok();
        }
        tokio::select! {
            slot = Arc::clone(slots).acquire_owned() => return slot.ok(),
            () = open.answered.notified() => {}
        }
    }
}

/// After a failed accept: nothing when the error was that one connection's (reset or
/// aborted before we took it); otherwise a pause, so that the loop does not spin.
async fn pause_after(e: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    ) {
        return;
    }
    eprintln!("credstore serve: cannot accept a connection: {e}; retrying in {ACCEPT_PAUSE:?}");
    tokio::time::sleep(ACCEPT_PAUSE).await;
}

/// Serves one connection until the client closes it, a timeout or an eviction closes it,
/// or the sidecar drains. `_slot` is given back when it returns. Each request carries the
/// peer's address as axum's [`ConnectInfo`] (forward auth reads it).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    registration: Registration,
    _slot: OwnedSemaphorePermit,
) {
    let watch = Arc::clone(&registration.watch);
    let open = Arc::clone(&registration.open);
    let service = {
        let watch = Arc::clone(&watch);
        service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let answering = Answering::start(&watch, &open);
            let answer = router.clone().oneshot(request);
            async move {
                let response = answer.await;
                drop(answering);
                response
            }
        })
    };
    let io = TokioIo::new(Watched {
        stream,
        watch: Arc::clone(&watch),
    });
    let conn = http1::Builder::new()
        // Ours instead, see the module docs.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut draining = false;
    loop {
        let deadline = watch.deadline(&limits);
        tokio::select! {
            // The connection first: an answer it is writing goes out before a wake-up
            // below is acted on.
            biased;
            // An error (a reset, a head hyper refused and answered) ends it as a close does.
            _ = conn.as_mut() => return,
            () = watch.wake.notified() => {}
            () = sleep_until(deadline) => {}
        }
        if watch.evicted() || watch.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
            return;
        }
        if registration.open.draining.load(Ordering::Acquire) {
            // Stopping: closed now, unless a request is in flight; then once its answer
            // is out (hyper closes it after writing; the wake-up when it stops answering
            // closes it too, if the client does not read).
            if !watch.answering() {
                return;
            }
            if !draining {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------
// The open connections

/// The open connections, as the accept loop sees them.
#[derive(Default)]
struct Open {
    table: Mutex<Table>,
    /// Set once, when the sidecar stops.
    draining: AtomicBool,
    /// Signalled when a connection finishes answering a request: the accept loop, waiting
    /// for room, may evict it now.
    answered: Notify,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    watches: HashMap<u64, Arc<Watch>>,
}

impl Open {
    /// A new connection, waiting for its first request head from now.
    fn register(self: &Arc<Self>) -> Registration {
        let watch = Arc::new(Watch::new(Instant::now()));
        let mut table = self.table();
        let id = table.next_id;
        table.next_id += 1;
        table.watches.insert(id, Arc::clone(&watch));
        Registration {
            open: Arc::clone(self),
            id,
            watch,
        }
    }

    /// Evicts the connection that has waited longest without a request in flight; false
    /// when every connection is answering one.
    fn evict_longest_waiting(&self) -> bool {
        let table = self.table();
        let mut waiting: Vec<(Instant, &Arc<Watch>)> = table
            .watches
            .values()
            .filter_map(|watch| watch.waiting_since().map(|since| (since, watch)))
            .collect();
        waiting.sort_by_key(|(since, _)| *since);
        // One may have started on a request since: `evict` looks again, under its lock.
        waiting.into_iter().any(|(_, watch)| watch.evict())
    }

    /// Tells every connection that the sidecar is stopping.
    fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        for watch in self.table().watches.values() {
            watch.wake.notify_one();
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent whatever panicked while holding it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's place in [`Open`], given up when its task ends, however it ends.
struct Registration {
    open: Arc<Open>,
    id: u64,
    watch: Arc<Watch>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.open.table().watches.remove(&self.id);
    }
}

// ---------------------------------------------------------------------------------------
// One connection's state

/// What one connection is doing, for its watchdog and for the accept loop.
struct Watch {
    state: Mutex<State>,
    /// Wakes the watchdog: its deadline moved, it was evicted, or the sidecar drains.
    wake: Notify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a request head, since the accept or the first byte after an idle spell.
    Head { since: Instant },
    /// Answering a request.
    Answering,
    /// Kept alive, nothing received since the last answer, given then.
    Idle { since: Instant },
    /// Evicted to make room: to be closed at once.
    Evicted,
}

impl Watch {
    fn new(accepted: Instant) -> Watch {
        Watch {
            state: Mutex::new(State::Head { since: accepted }),
            wake: Notify::new(),
        }
    }

    /// When the watchdog closes the connection, unless its state changes first.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self.state() {
            State::Head { since } => since.checked_add(limits.header_timeout),
            State::Idle { since } => since.checked_add(limits.idle_timeout),
            State::Answering | State::Evicted => None,
        }
    }

    /// Since when it has waited without a request in flight, if it has.
    fn waiting_since(&self) -> Option<Instant> {
        match *self.state() {
            State::Head { since } | State::Idle { since } => Some(since),
            State::Answering | State::Evicted => None,
        }
    }

    fn answering(&self) -> bool {
        *self.state() == State::Answering
    }

    fn evicted(&self) -> bool {
        *self.state() == State::Evicted
    }

    /// Bytes arrived: after an idle spell, the header timeout starts.
    fn received(&self, now: Instant) {
        let mut state = self.state();
        if let State::Idle { .. } = *state {
            *state = State::Head { since: now };
            drop(state);
            // The deadline moved, most likely earlier.
            self.wake.notify_one();
        }
    }

    /// Evicts it unless it is answering a request (or already evicted).
    fn evict(&self) -> bool {
        let mut state = self.state();
        match *state {
            State::Head { .. } | State::Idle { .. } => {
                *state = State::Evicted;
                drop(state);
                self.wake.notify_one();
                true
            }
            State::Answering | State::Evicted => false,
        }
    }

    /// Moves to `to` unless evicted.
    fn set(&self, to: State) {
        let mut state = self.state();
        if *state != State::Evicted {
            *state = to;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A `State` is replaced whole: it cannot be left half-written by a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request in flight on a connection: from its head to its answer (or to the connection
/// closing under it).
struct Answering {
    watch: Arc<Watch>,
    open: Arc<Open>,
}

impl Answering {
    fn start(watch: &Arc<Watch>, open: &Arc<Open>) -> Answering {
        watch.set(State::Answering);
        Answering {
            watch: Arc::clone(watch),
            open: Arc::clone(open),
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.watch.set(State::Idle { since: Instant::now() });
        self.watch.wake.notify_one();
        self.open.answered.notify_one();
    }
}

/// The socket, telling its [`Watch`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    watch: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.watch.received(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 4,
    };

    #[test]
    fn each_state_has_its_deadline() {
        let t0 = Instant::now();
        let watch = Watch::new(t0);
        assert_eq!(watch.deadline(&LIMITS), Some(t0 + LIMITS.header_timeout));
        watch.set(State::Answering);
        assert_eq!(
            watch.deadline(&LIMITS),
            None,
            "a request in flight is the request timeout's"
        );
        let answered = t0 + Duration::from_secs(1);
        watch.set(State::Idle { since: answered });
        assert_eq!(watch.deadline(&LIMITS), Some(answered + LIMITS.idle_timeout));
        // A byte after the idle spell starts the header timeout from that byte.
        let byte = answered + Duration::from_secs(30);
        watch.received(byte);
        assert_eq!(watch.deadline(&LIMITS), Some(byte + LIMITS.header_timeout));
        // More bytes of the same head do not push it back.
        watch.received(byte + Duration::from_secs(5));
        assert_eq!(watch.deadline(&LIMITS), Some(byte + LIMITS.header_timeout));
    }

    #[test]
    fn only_a_connection_without_a_request_in_flight_is_evicted() {
        let watch = Watch::new(Instant::now());
        watch.set(State::Answering);
        assert!(!watch.evict());
        assert!(!watch.evicted());
        watch.set(State::Idle { since: Instant::now() });
        assert!(watch.evict());
        assert!(watch.evicted());
        assert!(!watch.evict(), "evicted once");
        // A request that starts on an evicted connection does not revive it.
        watch.set(State::Answering);
        assert!(watch.evicted());
        assert_eq!(watch.deadline(&LIMITS), None);
    }

    #[test]
    fn the_connection_that_waited_longest_is_evicted_first() {
        let open = Arc::new(Open::default());
        let t0 = Instant::now();
        let busy = open.register();
        busy.watch.set(State::Answering);
        let old = open.register();
        old.watch.set(State::Idle {
            since: t0 + Duration::from_secs(1),
        });
        let older = open.register();
        older.watch.set(State::Head { since: t0 });
        assert!(open.evict_longest_waiting());
        assert!(older.watch.evicted());
        assert!(!old.watch.evicted());
        assert!(open.evict_longest_waiting());
        assert!(old.watch.evicted());
        assert!(!open.evict_longest_waiting(), "the busy one stays");
        assert!(!busy.watch.evicted());
        drop((busy, old, older));
        assert!(open.table().watches.is_empty(), "registrations leave with their tasks");
    }
}
