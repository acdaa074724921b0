//! A TCP proxy the test controls, put between one fleet host and PostgreSQL to partition
//! that host alone: plain threads, two per connection, no dependency.
//!
//! - [`Proxy::stall`] is a black hole: connections stay open and new ones are accepted, but
//!   no byte goes through either way until [`Proxy::restore`], when what was held goes on
//!   (as TCP retransmits after a network heals). Every call the host makes waits for its
//!   own time limit.
//! - [`Proxy::cut`] resets: every open connection is shut down at once and new ones are
//!   closed as soon as they are accepted, as behind a firewall that rejects. Calls fail fast.
//!
//! Dropping the proxy shuts everything down.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

/// A proxy from a loopback port of its own to `upstream`.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

/// What goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Stalled,
    Cut,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the mode changes: stalled pipes wait on it.
    changed: Condvar,
}

struct State {
    mode: Mode,
    stopping: bool,
    /// Both ends of every connection open now, to shut them down on a cut.
    open: Vec<TcpStream>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("proxy address: {e}"));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Open,
                stopping: false,
                open: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(&listener, upstream, &accepting))
            .unwrap_or_else(|e| panic!("proxy thread: {e}"));
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Holds every byte, both ways, until [`Proxy::restore`]; connections stay open.
    pub fn stall(&self) {
        self.set(Mode::Stalled);
    }

    /// Shuts down every open connection; refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    /// Lets everything through again (what a stall held goes on first).
    pub fn restore(&self) {
        self.set(Mode::Open);
    }

    fn set(&self, mode: Mode) {
        let mut state = self.shared.lock();
        state.mode = mode;
        if mode == Mode::Cut {
            for stream in state.open.drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        self.shared.changed.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
        }
        self.set(Mode::Cut);
        // Wakes the accept loop, which then sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A pipe thread that panicked left nothing half done in the state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let (stopping, mode) = {
            let state = shared.lock();
            (state.stopping, state.mode)
        };
        if stopping {
            return;
        }
        if mode == Mode::Cut {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let ends = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(client_read), Ok(server_read), Ok(client_keep), Ok(server_keep)) = ends else {
            continue;
        };
        {
            let mut state = shared.lock();
            state.open.push(client_keep);
            state.open.push(server_keep);
        }
        for (from, to) in [(client_read, server), (server_read, client)] {
            let shared = Arc::clone(shared);
            thread::Builder::new()
                .name("proxy-pipe".into())
                .spawn(move || pipe(from, to, &shared))
                .unwrap_or_else(|e| panic!("proxy thread: {e}"));
        }
    }
}

/// Copies `from` to `to` while the proxy is open; holds what it read while stalled; stops
/// on a cut, an error or the end of the stream, shutting both down.
fn pipe(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mode = {
            let mut state = shared.lock();
            while state.mode == Mode::Stalled {
                state = shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            state.mode
        };
        if mode == Mode::Cut || to.write_all(buf.get(..n).unwrap_or_default()).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
