//! `credstore serve`'s side of the CLI bridge (`bridge.rs` has the CLI's side and the
//! conversation): a Unix socket, `DATA/serve.sock`, on which the server runs the CLI's
//! commands against the store it holds.
//!
//! The socket is bound under a temporary name, made 0600, then renamed into place, so it
//! is never reachable with a wider mode (and it lies in the 0700 data directory); a
//! connection from another user than the socket's owner (or root) is closed unanswered.
//! The server holds the store's lock, so a socket already in place was left by a server
//! that is gone (killed): the rename replaces it. A clean stop removes the socket first,
//! then stops accepting, then lets commands in flight finish (for up to [`GRACE`]).
//!
//! Each command runs on a blocking thread of the runtime, as the HTTP handlers' store work
//! does, through [`crate::run_on`] with [`bridge::Served`] in place: the same code as
//! without a server. Nothing of a command (arguments, stdin, output) is logged.

use std::io::{self, Cursor};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use credstore::{Store, redact};
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use zeroize::Zeroizing;

use crate::bridge::{self, Route, Served, Terminal, kind};
use crate::{Failure, run_on};

/// How long a stop waits for commands in flight.
const GRACE: Duration = Duration::from_secs(10);
/// How long a CLI has to send its arguments and terminal once connected (what it reads
/// from stdin, perhaps from a person typing, has no time limit).
const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// The socket and the task that accepts on it; inactive when the socket could not be made
/// (the server then serves HTTP alone, and CLI commands wait for the store's lock).
pub struct Bridge(Option<Active>);

struct Active {
    socket: PathBuf,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Bridge {
    /// Listens on `DATA/serve.sock` for CLI commands to run on `store`. A socket that
    /// cannot be made is reported on stderr, not fatal.
    pub async fn start(data: &Path, store: Arc<Store>) -> Bridge {
        let socket = data.join(bridge::SOCKET);
        let (listener, owner) = match listen(&socket) {
            Ok(bound) => bound,
            Err(e) => {
                eprintln!(
                    "credstore serve: no CLI socket at {}: {e}; CLI commands on this store wait for its lock \
                     while the server runs",
                    socket.display()
                );
                return Bridge(None);
            }
        };
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(accept(listener, owner, data.to_path_buf(), store, Arc::clone(&stop)));
        Bridge(Some(Active { socket, stop, task }))
    }

    /// Removes the socket, stops accepting, and waits for commands in flight (up to
    /// [`GRACE`]).
    pub async fn stop(self) {
        let Some(active) = self.0 else {
            return;
        };
        // First, so that a CLI from now on finds no server and waits for the lock instead.
        let _ = std::fs::remove_file(&active.socket);
        active.stop.notify_one();
        let _ = active.task.await;
    }
}

/// Binds `socket`: under a temporary name, 0600, then renamed into place. Returns the
/// listener and the socket's owner.
fn listen(socket: &Path) -> io::Result<(UnixListener, u32)> {
    let mut name = socket.as_os_str().to_owned();
    name.push(".new");
    let fresh = PathBuf::from(name);
    match std::fs::remove_file(&fresh) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(&fresh)?;
    let placed = std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&fresh, socket))
        .and_then(|()| std::fs::metadata(socket));
    let owner = match placed {
        Ok(meta) => meta.uid(),
        Err(e) => {
            let _ = std::fs::remove_file(&fresh);
            return Err(e);
        }
    };
    listener.set_nonblocking(true)?;
    Ok((UnixListener::from_std(listener)?, owner))
}

/// Accepts CLI connections until `stop`, each command on a blocking thread; then waits for
/// those in flight.
async fn accept(listener: UnixListener, owner: u32, data: PathBuf, store: Arc<Store>, stop: Arc<Notify>) {
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.notified() => break,
            accepted = listener.accept() => accepted,
        };
        while sessions.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: as the HTTP accept loop does, report and retry.
                eprintln!("credstore serve: CLI socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // The socket is 0600 in a 0700 directory; this is the second lock on that door.
        let peer = stream.peer_cred().map(|c| c.uid());
        if !matches!(peer, Ok(uid) if uid == owner || uid == 0) {
            continue;
        }
        let Ok(stream) = stream.into_std() else { continue };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let (data, store) = (data.clone(), Arc::clone(&store));
        sessions.spawn_blocking(move || session(stream, &data, store));
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, async { while sessions.join_next().await.is_some() {} }).await;
}

/// One CLI's command, start to end. A CLI that goes away ends it quietly.
fn session(mut stream: UnixStream, data: &Path, store: Arc<Store>) {
    let Err(e) = converse(&mut stream, data, store) else {
        return;
    };
    // The error is the conversation's own (a timeout, a malformed frame), never a
    // command's argument or output.
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {}
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => eprintln!(
            "credstore serve: CLI socket: a connection sent no command within {}s: closed",
            REQUEST_WAIT.as_secs()
        ),
        _ => eprintln!("credstore serve: CLI socket: {e}"),
    }
}

/// Says hello, reads the command, runs it, and answers with its exit.
fn converse(stream: &mut UnixStream, data: &Path, store: Arc<Store>) -> io::Result<()> {
    let mut hello = bridge::PROTOCOL.to_be_bytes().to_vec();
    hello.extend_from_slice(&std::process::id().to_be_bytes());
    bridge::write_frame(stream, kind::HELLO, &hello)?;
    stream.set_read_timeout(Some(REQUEST_WAIT))?;
    let request = Request::read(stream)?;
    let result = match parse(request.argv) {
        Ok(command) => {
            let served = Served {
                store,
                stdin: Cursor::new(request.stdin),
                terminal: request.terminal,
                client: Some(Box::new(stream.try_clone()?)),
            };
            let data = data.to_path_buf();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| served.run(|| run_on(data, command))));
            ran.unwrap_or_else(|_| {
                Err(Failure {
                    code: 3,
                    message: "`credstore serve` failed running the command (see its stderr)".into(),
                })
            })
        }
        Err(failure) => Err(failure),
    };
    bridge::write_frame(stream, kind::EXIT, &bridge::encode_exit(&result))
}

/// A CLI's command, as it sent it.
struct Request {
    argv: Vec<std::ffi::OsString>,
    stdin: Zeroizing<Vec<u8>>,
    terminal: Terminal,
}

impl Request {
    fn read(stream: &mut UnixStream) -> io::Result<Request> {
        let mut request = Request {
            argv: Vec::new(),
            stdin: Zeroizing::new(Vec::new()),
            terminal: Terminal {
                stdout: false,
                stderr: false,
                width: None,
            },
        };
        let mut left = bridge::MAX_REQUEST;
        loop {
            let (kind, payload) = bridge::read_frame(stream, left)?;
            left = left.saturating_sub(payload.len());
            match kind {
                kind::ARG => request.argv.push(std::ffi::OsString::from_vec(payload.to_vec())),
                kind::STDIN => request.stdin = payload,
                kind::TERMINAL => {
                    request.terminal =
                        Terminal::decode(&payload).ok_or_else(|| invalid("a malformed terminal frame"))?;
                    // A CLI: it may now read its stdin from a person.
                    stream.set_read_timeout(None)?;
                }
                kind::RUN => return Ok(request),
                _ => return Err(invalid("an unknown frame")),
            }
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the CLI sent {what}"))
}

/// The command in `argv`, if it is one the server runs.
fn parse(argv: Vec<std::ffi::OsString>) -> Result<crate::Command, Failure> {
    use clap::Parser;
    let program = std::ffi::OsString::from("credstore");
    let cli = crate::Cli::try_parse_from(std::iter::once(program).chain(argv)).map_err(|e| Failure {
        code: 2,
        message: {
            let text = e.render().to_string();
            let text = text.trim().trim_start_matches("error: ");
            redact::scrub(text).into_owned()
        },
    })?;
    match bridge::route(&cli.command) {
        Route::Through(_) => Ok(cli.command),
        Route::Local | Route::Exclusive(_) => Err(Failure {
            code: 3,
            message: "`credstore serve` does not run this command for a CLI: it needs the store to itself".into(),
        }),
    }
}
