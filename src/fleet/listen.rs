//! The fleet's notifications: a dedicated connection that runs `LISTEN credstore_log` and
//! keeps the highest sequence number `credstore_append` announced (it notifies the new
//! head's with every append).
//!
//! A hint, never the truth: a host that reads a notified sequence number past its replica
//! catches up at once instead of waiting for its next poll, but the poll of the fleet's
//! head by sequence number stays the correct path and alone suffices. A notification can
//! be missed (the connection dropped, the engine has no LISTEN, a pooler in transaction
//! mode swallowed it) and nothing breaks: the change arrives with the next poll.
//!
//! The connection is not the pool's: it is held for as long as the listener lives, on a
//! thread of its own (`credstore-listen`) with its own runtime, so that notifications are
//! read while the host's commit thread is busy or idle. When the connection drops it is
//! made again, after a backoff from 50 ms doubling to 5 s; once listening, a `select 1`
//! every 5 s finds a connection that died without a word. An engine that answers `LISTEN`
//! with "feature not supported" (CockroachDB) is not asked again: the listener stops and
//! says so in [`Listener::state`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use super::{FleetError, ROUND_TRIP_LIMIT, Result};

/// The channel `credstore_append` notifies on.
pub const CHANNEL: &str = "credstore_log";

/// The first wait before connecting again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait before connecting again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a listening connection is asked whether it is still there.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Listens for the fleet's notifications on a connection and a thread of its own, until
/// dropped.
pub struct Listener {
    state: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a listener is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenState {
    /// Connecting, or waiting to connect again after the connection dropped.
    Connecting,
    /// `LISTEN` is in effect: every append from now on is announced.
    Listening,
    /// The engine does not support `LISTEN` (CockroachDB): the listener has stopped.
    Unsupported,
}

/// What the listener's thread and its owner share.
struct Shared {
    /// The highest sequence number announced (or read from the head once `LISTEN` was in
    /// effect); 0 before any.
    notified: AtomicU64,
    /// A [`ListenState`], as `u8`.
    state: AtomicU8,
}

impl Listener {
    /// Starts listening on a new connection made from `config` (not the pool's), on a
    /// thread of its own. Returns at once: the connection is made in the background, and
    /// made again whenever it drops.
    ///
    /// # Errors
    /// [`FleetError::Runtime`] when the thread or its runtime cannot start.
    pub(super) fn start(config: tokio_postgres::Config) -> Result<Listener> {
        let state = Arc::new(Shared {
            notified: AtomicU64::new(0),
            state: AtomicU8::new(ListenState::Connecting as u8),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FleetError::Runtime(e.to_string()))?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = {
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("credstore-listen".into())
                .spawn(move || runtime.block_on(listen(config, state, stopped)))
                .map_err(|e| FleetError::Runtime(e.to_string()))?
        };
        Ok(Listener {
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The highest sequence number the fleet announced since the listener started (0:
    /// none yet). Once [`ListenState::Listening`], it is at least the head as it was when
    /// `LISTEN` took effect, so no append since then goes unannounced while the state
    /// lasts.
    pub fn notified(&self) -> u64 {
        self.state.notified.load(Ordering::Acquire)
    }

    /// What the listener is doing.
    pub fn state(&self) -> ListenState {
        match self.state.state.load(Ordering::Acquire) {
            1 => ListenState::Listening,
            2 => ListenState::Unsupported,
            _ => ListenState::Connecting,
        }
    }

    /// Whether `LISTEN` is in effect: announcements arrive.
    pub fn is_listening(&self) -> bool {
        self.state() == ListenState::Listening
    }

    /// Lowers the announced sequence number from `seen` to `head`, the head the fleet
    /// reported after `seen` was read: `seen` was no append's (anything can `NOTIFY` on
    /// the channel). Does nothing if a newer announcement came in meanwhile.
    pub fn correct(&self, seen: u64, head: u64) {
        if head < seen {
            let _ = self
                .state
                .notified
                .compare_exchange(seen, head, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may have stopped on its own (an unsupported engine).
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on that thread has nothing left to tell: the listener is a hint.
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection's configuration may hold a password: not shown.
        f.debug_struct("Listener")
            .field("state", &self.state())
            .field("notified", &self.notified())
            .finish_non_exhaustive()
    }
}

/// How one connection ended.
enum Ended {
    /// Before `LISTEN` took effect: back off further.
    Early,
    /// After listening for a while: the connection dropped; connect again soon.
    WhileListening,
    /// The engine does not support `LISTEN`.
    Unsupported,
}

/// The listener thread's loop: connect, listen until the connection drops, back off,
/// again; until `stopped`.
async fn listen(config: tokio_postgres::Config, state: Arc<Shared>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let ended = tokio::select! {
            _ = &mut stopped => return,
            ended = session(&config, &state) => ended,
        };
        state.state.store(ListenState::Connecting as u8, Ordering::Release);
        match ended {
            Ended::Unsupported => {
                state.state.store(ListenState::Unsupported as u8, Ordering::Release);
                return;
            }
            Ended::WhileListening => backoff = FIRST_BACKOFF,
            Ended::Early => {}
        }
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: `LISTEN`, read the head, then record every announcement until the
/// connection drops or stops answering.
async fn session(config: &tokio_postgres::Config, state: &Shared) -> Ended {
    let Ok(Ok((client, mut connection))) =
        tokio::time::timeout(ROUND_TRIP_LIMIT, config.connect(tokio_postgres::NoTls)).await
    else {
        return Ended::Early;
    };
    // The connection delivers the answers to the client's queries and the notifications;
    // it must be read while the client waits.
    let read = async {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message
                && n.channel() == CHANNEL
                && let Ok(seq) = n.payload().parse::<u64>()
            {
                state.notified.fetch_max(seq, Ordering::AcqRel);
            }
        }
    };
    let work = async {
        match within(client.batch_execute(&format!("listen {CHANNEL}"))).await {
            Some(Ok(())) => {}
            Some(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED) => {
                return Ended::Unsupported;
            }
            _ => return Ended::Early,
        }
        // What was appended before LISTEN took effect was announced to nobody: the head
        // as of now covers it; every later append is announced.
        let Some(Ok(row)) = within(client.query_one("select seq from credstore_head where id = 1", &[])).await else {
            return Ended::Early;
        };
        let head = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        state.notified.fetch_max(head, Ordering::AcqRel);
        state.state.store(ListenState::Listening as u8, Ordering::Release);
        loop {
            tokio::time::sleep(PING_EVERY).await;
            if !matches!(within(client.batch_execute("select 1")).await, Some(Ok(()))) {
                return Ended::WhileListening;
            }
        }
    };
    tokio::select! {
        () = read => {
            let listening = state.state.load(Ordering::Acquire) == ListenState::Listening as u8;
            if listening { Ended::WhileListening } else { Ended::Early }
        }
        ended = work => ended,
    }
}

/// `work`, or `None` after [`ROUND_TRIP_LIMIT`].
async fn within<T>(work: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(ROUND_TRIP_LIMIT, work).await.ok()
}
