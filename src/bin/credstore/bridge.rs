//! The CLI's way through a running `credstore serve`.
//!
//! `serve` holds the store's lock for as long as it runs, so a CLI command cannot open the
//! store beside it. Instead the server listens on a Unix socket, `DATA/serve.sock` (0600,
//! in the 0700 data directory: only the store's owner reaches it), and runs the CLI's
//! commands itself, against the store it has open: the same command functions, with the
//! command's stdout and stderr sent back to the CLI, which prints them and exits with the
//! command's exit code. So a command's output and exit code are the same either way.
//!
//! This file is the CLI's side ([`through_server`]), the frames both sides speak, and what
//! a command sees while the server runs it for a CLI ([`Served`]: the server's store, the
//! CLI's stdin, the CLI's terminal, output to the CLI). The server's side is
//! `serve/cli_bridge.rs`.
//!
//! The conversation, in frames of `[kind: u8][length: u32 BE][payload]`:
//!
//! 1. server: `H` hello, `[PROTOCOL: u32 BE][pid: u32 BE]`;
//! 2. CLI: `A` per argument after the program's name (raw bytes), `T` the CLI's terminal
//!    (`[stdout is one: u8][stderr is one: u8][table width: u32 BE, 0 for none]`), `I` what
//!    the command reads from stdin (only a command that reads it: the CLI reads it after
//!    `T`, and the server waits for it without a time limit), then `R` run;
//! 3. server: `O` stdout and `E` stderr bytes as the command writes them (each at most
//!    [`CHUNK`] bytes), then `X` exit, `[failed: u8][code: u8][message, UTF-8]`.
//!
//! A socket no server answers (left by a killed server) is ignored: the command runs
//! here, as without a server; the next server replaces the socket.

use std::cell::RefCell;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::sync::Arc;

use credstore::Store;
use zeroize::Zeroizing;

use crate::{Command, Failure, vault_cmd};

/// The server's socket, in the data directory.
pub const SOCKET: &str = "serve.sock";
/// The version of the conversation: a CLI and a server of different versions do not talk.
pub const PROTOCOL: u32 = 1;
/// The most output one `O` or `E` frame carries; longer writes are split.
pub const CHUNK: usize = 64 * 1024;
/// The most a CLI's request (arguments and stdin) may hold.
pub const MAX_REQUEST: usize = 16 * 1024 * 1024;

/// Frame kinds.
pub mod kind {
    /// Server: the protocol version and the server's pid.
    pub const HELLO: u8 = b'H';
    /// CLI: one argument.
    pub const ARG: u8 = b'A';
    /// CLI: the CLI's terminal.
    pub const TERMINAL: u8 = b'T';
    /// CLI: the command's stdin.
    pub const STDIN: u8 = b'I';
    /// CLI: run the command.
    pub const RUN: u8 = b'R';
    /// Server: bytes for the CLI's stdout.
    pub const STDOUT: u8 = b'O';
    /// Server: bytes for the CLI's stderr.
    pub const STDERR: u8 = b'E';
    /// Server: the command ended.
    pub const EXIT: u8 = b'X';
}

/// How a command goes when a server runs on its data directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// It does not use the data directory (`demo`, `completions`, `status`).
    Local,
    /// The server runs it, with this much of stdin.
    Through(Input),
    /// It needs the store to itself (`init`, `rebuild`, `reset-head`, `serve`): refused
    /// while a server runs, naming the server.
    Exclusive(&'static str),
}

/// What a command reads from stdin.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Input {
    /// Nothing.
    Nothing,
    /// One line (`verify -`, `revoke --key -`).
    Line,
    /// All of it (`vault put`, `vault rotate-master` without `--generate`).
    All,
    /// The JSON Lines the command acts on (`import FILE`, `create --from FILE`, `revoke
    /// --from FILE`): the CLI reads the file, or stdin for `-`, and sends it as stdin.
    Lines,
}

/// How `command` goes when a server runs on its data directory.
pub fn route(command: &Command) -> Route {
    match command {
        Command::Init => Route::Exclusive("init"),
        Command::Rebuild => Route::Exclusive("rebuild"),
        Command::ResetHead { .. } => Route::Exclusive("reset-head"),
        Command::Serve(_) => Route::Exclusive("serve"),
        Command::Demo | Command::Completions { .. } => Route::Local,
        #[cfg(feature = "fleet")]
        Command::Status => Route::Local,
        Command::Import { .. } | Command::Revoke { from: Some(_), .. } => Route::Through(Input::Lines),
        Command::Create(args) if args.from.is_some() => Route::Through(Input::Lines),
        Command::Verify { key, .. } if key == "-" => Route::Through(Input::Line),
        Command::Revoke { key: Some(dash), .. } if dash == "-" => Route::Through(Input::Line),
        Command::Vault {
            action: vault_cmd::VaultAction::Put { .. },
        }
        | Command::Vault {
            action: vault_cmd::VaultAction::RotateMaster { generate: false, .. },
        } => Route::Through(Input::All),
        Command::Create(_)
        | Command::Verify { .. }
        | Command::List { .. }
        | Command::Show { .. }
        | Command::Update(_)
        | Command::Disable { .. }
        | Command::Enable { .. }
        | Command::Revoke { .. }
        | Command::Rotate { .. }
        | Command::Plan { .. }
        | Command::User { .. }
        | Command::Role { .. }
        | Command::Audit(_)
        | Command::Credits { .. }
        | Command::Usage(_)
        | Command::Owner { .. }
        | Command::Policy { .. }
        | Command::Events(_)
        | Command::Webhook { .. }
        | Command::Vault { .. } => Route::Through(Input::Nothing),
    }
}

/// The CLI's terminal, as the server must see it for the command's output to come out as
/// it would here: colours and the `list` table's width follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    /// Stdout is a terminal.
    pub stdout: bool,
    /// Stderr is a terminal.
    pub stderr: bool,
    /// The width the `list` table is arranged for (`output::table_width`).
    pub width: Option<usize>,
}

impl Terminal {
    /// This process's.
    pub fn here() -> Terminal {
        use std::io::IsTerminal;
        Terminal {
            stdout: io::stdout().is_terminal(),
            stderr: io::stderr().is_terminal(),
            width: crate::output::table_width(),
        }
    }

    /// As a `T` frame's payload.
    pub fn encode(&self) -> [u8; 6] {
        let width = self.width.and_then(|w| u32::try_from(w).ok()).unwrap_or(0);
        let [a, b, c, d] = width.to_be_bytes();
        [u8::from(self.stdout), u8::from(self.stderr), a, b, c, d]
    }

    /// From a `T` frame's payload.
    #[cfg_attr(
        not(feature = "http"),
        expect(dead_code, reason = "the server's side: only `serve` (feature `http`) uses it")
    )]
    pub fn decode(payload: &[u8]) -> Option<Terminal> {
        let &[stdout, stderr, a, b, c, d] = payload else {
            return None;
        };
        let width = u32::from_be_bytes([a, b, c, d]);
        Some(Terminal {
            stdout: stdout != 0,
            stderr: stderr != 0,
            width: (width > 0).then(|| usize::try_from(width).ok()).flatten(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Frames

/// Writes one frame.
///
/// # Errors
/// The stream's, or `InvalidInput` for a payload over 4 GiB.
pub fn write_frame(out: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(payload.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
    let [a, b, c, d] = len.to_be_bytes();
    out.write_all(&[kind, a, b, c, d])?;
    out.write_all(payload)?;
    out.flush()
}

/// Reads one frame whose payload is at most `max` bytes. The payload may hold a secret (a
/// key on stdin, a created key on stdout): it is zeroed when dropped.
///
/// # Errors
/// The stream's (`UnexpectedEof` when it ends, even between frames), or `InvalidData` for
/// a payload over `max`.
pub fn read_frame(input: &mut impl Read, max: usize) -> io::Result<(u8, Zeroizing<Vec<u8>>)> {
    let mut head = [0u8; 5];
    input.read_exact(&mut head)?;
    let [kind, a, b, c, d] = head;
    let len = usize::try_from(u32::from_be_bytes([a, b, c, d])).unwrap_or(usize::MAX);
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, over the {max} expected"),
        ));
    }
    let mut payload = Zeroizing::new(vec![0u8; len]);
    input.read_exact(&mut payload)?;
    Ok((kind, payload))
}

/// An `X` frame's payload for a command's result.
#[cfg_attr(
    not(feature = "http"),
    expect(dead_code, reason = "the server's side: only `serve` (feature `http`) uses it")
)]
pub fn encode_exit(result: &Result<u8, Failure>) -> Vec<u8> {
    match result {
        Ok(code) => vec![0, *code],
        Err(f) => {
            let mut payload = vec![1, f.code];
            payload.extend_from_slice(f.message.as_bytes());
            payload
        }
    }
}

/// A command's result from an `X` frame's payload.
pub fn decode_exit(payload: &[u8]) -> Option<Result<u8, Failure>> {
    match payload {
        [0, code] => Some(Ok(*code)),
        [1, code, message @ ..] => Some(Err(Failure {
            code: *code,
            message: String::from_utf8_lossy(message).into_owned(),
        })),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// What a command sees while the server runs it for a CLI

thread_local! {
    /// Set on the server's thread that runs a CLI's command, for as long as it runs.
    static SERVED: RefCell<Option<Served>> = const { RefCell::new(None) };
}

/// A command the server runs for a CLI: the store it acts on, the CLI's stdin and
/// terminal, and where its output goes.
pub struct Served {
    /// The server's open store.
    pub store: Arc<Store>,
    /// What the CLI read from its stdin for the command.
    pub stdin: io::Cursor<Zeroizing<Vec<u8>>>,
    /// The CLI's terminal.
    pub terminal: Terminal,
    /// The connection to the CLI, for `O` and `E` frames; `None` once a write failed (the
    /// CLI went away: the rest of the output is dropped and the command goes on, as with
    /// a closed pipe).
    pub client: Option<Box<dyn Write>>,
}

impl Served {
    /// Runs `command` on this thread as a command for the CLI: [`store`], [`write`],
    /// [`with_stdin`] and [`terminal`] answer for the CLI until it returns (or panics).
    #[cfg_attr(
        not(feature = "http"),
        expect(dead_code, reason = "the server's side: only `serve` (feature `http`) uses it")
    )]
    pub fn run<R>(self, command: impl FnOnce() -> R) -> R {
        /// Clears the thread's context however `command` ends.
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                SERVED.with(|s| s.borrow_mut().take());
            }
        }
        SERVED.with(|s| *s.borrow_mut() = Some(self));
        let _leave = Leave;
        command()
    }
}

/// The server's store, when this thread runs a command for a CLI.
pub fn store() -> Option<Arc<Store>> {
    SERVED.with(|s| s.borrow().as_ref().map(|served| Arc::clone(&served.store)))
}

/// Whether this thread runs a command for a CLI.
pub fn is_served() -> bool {
    SERVED.with(|s| s.borrow().is_some())
}

/// The CLI's terminal, when this thread runs a command for a CLI.
pub fn terminal() -> Option<Terminal> {
    SERVED.with(|s| s.borrow().as_ref().map(|served| served.terminal))
}

/// Sends `bytes` to the CLI's stdout ([`kind::STDOUT`]) or stderr ([`kind::STDERR`]) when
/// this thread runs a command for a CLI; `false` when it does not (the caller writes to
/// this process's own).
pub fn write(stream: u8, bytes: &[u8]) -> bool {
    SERVED.with(|s| {
        let mut slot = s.borrow_mut();
        let Some(served) = slot.as_mut() else {
            return false;
        };
        if let Some(client) = served.client.as_mut() {
            let sent = bytes
                .chunks(CHUNK)
                .try_for_each(|chunk| write_frame(client, stream, chunk));
            if sent.is_err() {
                served.client = None;
            }
        }
        true
    })
}

/// Runs `read` on the CLI's stdin when this thread runs a command for a CLI; `None` when
/// it does not (the caller reads this process's own).
pub fn with_stdin<R>(read: impl FnOnce(&mut dyn BufRead) -> R) -> Option<R> {
    SERVED.with(|s| s.borrow_mut().as_mut().map(|served| read(&mut served.stdin)))
}

// ---------------------------------------------------------------------------------------
// The CLI's side

/// How long the CLI waits for a server's hello before it calls the server stuck.
#[cfg(unix)]
const HELLO_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `command` through the server on `data`, if one answers on its socket: `None` when
/// none does (the command runs here). Output goes to this process's stdout and stderr as
/// the command writes it; the result is the command's, or a failure of the conversation
/// (exit 3).
#[cfg(unix)]
pub fn through_server(data: &Path, command: &Command) -> Option<Result<u8, Failure>> {
    use std::os::unix::net::UnixStream;

    let input = match route(command) {
        Route::Local => return None,
        Route::Through(input) => Some(input),
        Route::Exclusive(_) => None,
    };
    let socket = data.join(SOCKET);
    // Missing, or left by a server that is gone (refused): run here, as without a server.
    let mut stream = UnixStream::connect(&socket).ok()?;
    let pid = match hello(&mut stream) {
        Hello::Server(pid) => pid,
        // The server closed the connection without a word: it is stopping. Here, the
        // command waits for the lock it is about to release.
        Hello::Gone => return None,
        Hello::Failed(failure) => return Some(Err(failure)),
    };
    let Some(input) = input else {
        return Some(Err(exclusive(command, data, pid)));
    };
    Some(run_through(stream, command, input, pid))
}

/// Without Unix sockets there is no server to go through.
#[cfg(not(unix))]
pub fn through_server(_data: &Path, _command: &Command) -> Option<Result<u8, Failure>> {
    None
}

/// What a server said first.
#[cfg(unix)]
enum Hello {
    /// A server of this protocol, with its pid.
    Server(u32),
    /// Nothing: it closed the connection.
    Gone,
    /// Something this CLI cannot talk to.
    Failed(Failure),
}

#[cfg(unix)]
fn hello(stream: &mut std::os::unix::net::UnixStream) -> Hello {
    if let Err(e) = stream.set_read_timeout(Some(HELLO_WAIT)) {
        return Hello::Failed(broken(None, &e));
    }
    let payload = match read_frame(stream, 64) {
        Ok((kind::HELLO, payload)) => payload,
        Ok(_) => return Hello::Failed(broken(None, &io::Error::from(io::ErrorKind::InvalidData))),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Hello::Failed(Failure {
                code: 3,
                message: format!(
                    "`credstore serve` holds the store, and did not answer on its socket {SOCKET} within {}s",
                    HELLO_WAIT.as_secs()
                ),
            });
        }
        Err(_) => return Hello::Gone,
    };
    let (Some(version), Some(pid)) = (be_u32(payload.get(0..4)), be_u32(payload.get(4..8))) else {
        return Hello::Failed(broken(None, &io::Error::from(io::ErrorKind::InvalidData)));
    };
    if version != PROTOCOL {
        return Hello::Failed(Failure {
            code: 3,
            message: format!(
                "`credstore serve` (pid {pid}) holds the store and speaks version {version} of the CLI's \
                 protocol, this credstore version {PROTOCOL}: run the server's own credstore binary, or stop the server"
            ),
        });
    }
    Hello::Server(pid)
}

#[cfg(unix)]
fn be_u32(bytes: Option<&[u8]>) -> Option<u32> {
    bytes.and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes)
}

/// The failure of a command that needs the store to itself while server `pid` has it.
#[cfg(unix)]
fn exclusive(command: &Command, data: &Path, pid: u32) -> Failure {
    let data = data.display();
    match route(command) {
        Route::Exclusive("init") => Failure {
            code: 2,
            message: format!("{data} is a store already: `credstore serve` (pid {pid}) is serving it"),
        },
        Route::Exclusive("serve") => Failure {
            code: 3,
            message: format!("`credstore serve` (pid {pid}) is serving {data} already"),
        },
        Route::Exclusive(name) => Failure {
            code: 3,
            message: format!(
                "`credstore serve` (pid {pid}) is serving {data}, and `{name}` needs the store to itself: \
                 stop the server (SIGTERM), then run it"
            ),
        },
        _ => broken(Some(pid), &io::Error::from(io::ErrorKind::InvalidInput)),
    }
}

/// Sends `command` to server `pid` on `stream` and relays what it answers.
#[cfg(unix)]
fn run_through(
    mut stream: std::os::unix::net::UnixStream,
    command: &Command,
    input: Input,
    pid: u32,
) -> Result<u8, Failure> {
    use std::io::IsTerminal;
    use std::os::unix::ffi::OsStrExt;

    // The server's stdin is never a terminal: a command that would ask for confirmation
    // here cannot ask there, so it takes --yes, as when stdin is not a terminal.
    if let Command::Revoke { yes: false, .. } = command
        && io::stdin().is_terminal()
    {
        return Err(crate::usage(format!(
            "`credstore serve` (pid {pid}) holds the store and runs this revoke, where it cannot ask for \
             confirmation: pass --yes"
        )));
    }
    // A broken environment (CREDSTORE_LOCK_WAIT, ...) is refused as it is without a server.
    crate::store_config()?;
    // The command and the terminal first: the server then waits for stdin as long as a
    // person at this terminal takes to type it.
    let sent = (|| {
        for arg in std::env::args_os().skip(1) {
            write_frame(&mut stream, kind::ARG, arg.as_bytes())?;
        }
        write_frame(&mut stream, kind::TERMINAL, &Terminal::here().encode())
    })();
    sent.map_err(|e| broken(Some(pid), &e))?;
    let stdin = read_input(input, lines_source(command))?;
    let sent = (|| {
        if let Some(stdin) = &stdin {
            write_frame(&mut stream, kind::STDIN, stdin)?;
        }
        write_frame(&mut stream, kind::RUN, &[])?;
        stream.set_read_timeout(None)
    })();
    drop(stdin);
    sent.map_err(|e| broken(Some(pid), &e))?;
    loop {
        let (kind, payload) = read_frame(&mut stream, CHUNK + 1024).map_err(|e| broken(Some(pid), &e))?;
        match kind {
            kind::STDOUT => crate::output::write_stdout_bytes(&payload),
            kind::STDERR => crate::output::write_stderr_bytes(&payload),
            kind::EXIT => {
                return decode_exit(&payload)
                    .unwrap_or_else(|| Err(broken(Some(pid), &io::Error::from(io::ErrorKind::InvalidData))));
            }
            _ => return Err(broken(Some(pid), &io::Error::from(io::ErrorKind::InvalidData))),
        }
    }
}

/// Reads what the command reads from stdin, as it would read it: one line, or all of it
/// (after the same prompt on a terminal).
#[cfg(unix)]
fn read_input(input: Input, lines: Option<&Path>) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
    let mut bytes = Zeroizing::new(Vec::new());
    let limit = u64::try_from(MAX_REQUEST).unwrap_or(u64::MAX);
    let read = match input {
        Input::Nothing => return Ok(None),
        Input::Lines => match lines.filter(|f| *f != Path::new("-")) {
            Some(file) => std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes)),
            None => io::stdin().lock().take(limit).read_to_end(&mut bytes),
        },
        Input::Line => io::stdin().lock().take(limit).read_until(b'\n', &mut bytes),
        Input::All => {
            vault_cmd::prompt_on_terminal();
            io::stdin().lock().take(limit).read_to_end(&mut bytes)
        }
    };
    read.map_err(|e| crate::usage(format!("cannot read stdin: {e}")))?;
    if bytes.len() >= MAX_REQUEST {
        return Err(crate::usage(format!(
            "the input holds more than the {} MiB a command takes through `credstore serve`: split it, \
             or stop the server and run the command on the store",
            MAX_REQUEST >> 20
        )));
    }
    Ok(Some(bytes))
}

/// The file of JSON Lines a command acts on, if it takes one.
#[cfg(unix)]
fn lines_source(command: &Command) -> Option<&Path> {
    match command {
        Command::Import { file, .. } => Some(file),
        Command::Create(args) => args.from.as_deref(),
        Command::Revoke { from, .. } => from.as_deref(),
        _ => None,
    }
}

/// The conversation with the server (`pid`, when it said hello) broke.
#[cfg(unix)]
fn broken(pid: Option<u32>, e: &io::Error) -> Failure {
    let server = pid.map_or("`credstore serve`".to_string(), |pid| {
        format!("`credstore serve` (pid {pid})")
    });
    Failure {
        code: 3,
        message: format!(
            "the command went to {server}, which holds the store, and the conversation broke ({e}): \
             a change it asked for may have been made; check before running it again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_as_written() {
        let mut wire = Vec::new();
        write_frame(&mut wire, kind::ARG, b"--json").unwrap();
        write_frame(&mut wire, kind::RUN, b"").unwrap();
        let mut input = &wire[..];
        let (k, p) = read_frame(&mut input, 100).unwrap();
        assert_eq!((k, &p[..]), (kind::ARG, &b"--json"[..]));
        let (k, p) = read_frame(&mut input, 100).unwrap();
        assert_eq!((k, p.len()), (kind::RUN, 0));
        assert_eq!(
            read_frame(&mut input, 100).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        let mut wire = Vec::new();
        write_frame(&mut wire, kind::STDIN, &[7; 10]).unwrap();
        let err = read_frame(&mut &wire[..], 9).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_terminal_and_an_exit_read_back_as_written() {
        for terminal in [
            Terminal {
                stdout: true,
                stderr: false,
                width: Some(120),
            },
            Terminal {
                stdout: false,
                stderr: true,
                width: None,
            },
        ] {
            assert_eq!(Terminal::decode(&terminal.encode()), Some(terminal));
        }
        assert_eq!(Terminal::decode(&[1, 2, 3]), None);
        assert!(matches!(decode_exit(&encode_exit(&Ok(1))), Some(Ok(1))));
        let failure = Failure {
            code: 3,
            message: "no".into(),
        };
        let Some(Err(back)) = decode_exit(&encode_exit(&Err(failure))) else {
            panic!("not a failure");
        };
        assert_eq!((back.code, back.message.as_str()), (3, "no"));
        assert!(decode_exit(&[2]).is_none());
    }

    /// A writer that fails after `left` bytes, counting what it took.
    struct Flaky {
        taken: Arc<std::sync::Mutex<Vec<u8>>>,
        left: usize,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.left {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.left -= buf.len();
            self.taken.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_served_command_writes_to_the_client_until_it_goes_away_and_reads_its_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Arc::new(Store::init(dir.path().join("data"), credstore::Config::new()).unwrap());
        let taken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let served = Served {
            store: Arc::clone(&opened),
            stdin: io::Cursor::new(Zeroizing::new(b"first\nsecond\n".to_vec())),
            terminal: Terminal {
                stdout: false,
                stderr: false,
                width: Some(80),
            },
            client: Some(Box::new(Flaky {
                taken: Arc::clone(&taken),
                left: 20,
            })),
        };
        assert!(!is_served());
        let line = served.run(|| {
            assert!(is_served() && store().is_some());
            assert_eq!(terminal().map(|t| t.width), Some(Some(80)));
            assert!(write(kind::STDOUT, b"hello"));
            // Over the 20 bytes the client takes: dropped, and so is everything after.
            assert!(write(kind::STDERR, b"0123456789abcdef"));
            assert!(write(kind::STDOUT, b"!"));
            let mut line = String::new();
            with_stdin(|input| input.read_line(&mut line)).unwrap().unwrap();
            line
        });
        assert_eq!(line, "first\n");
        assert!(!is_served() && store().is_none());
        assert!(!write(kind::STDOUT, b"not served"));
        let mut expected = Vec::new();
        write_frame(&mut expected, kind::STDOUT, b"hello").unwrap();
        expected.extend_from_slice(&[kind::STDERR, 0, 0, 0, 16]);
        assert_eq!(*taken.lock().unwrap(), expected);
    }

    #[test]
    fn commands_that_need_the_store_to_themselves_do_not_go_through() {
        use clap::Parser;
        let route_of = |args: &[&str]| {
            let cli = crate::Cli::try_parse_from(std::iter::once("credstore").chain(args.iter().copied())).unwrap();
            route(&cli.command)
        };
        assert_eq!(route_of(&["init"]), Route::Exclusive("init"));
        assert_eq!(route_of(&["rebuild"]), Route::Exclusive("rebuild"));
        assert_eq!(route_of(&["reset-head", "--yes"]), Route::Exclusive("reset-head"));
        assert_eq!(
            route_of(&["serve", "--listen", "127.0.0.1:0"]),
            Route::Exclusive("serve")
        );
        assert_eq!(route_of(&["demo"]), Route::Local);
        assert_eq!(route_of(&["list"]), Route::Through(Input::Nothing));
        assert_eq!(route_of(&["verify", "-"]), Route::Through(Input::Line));
        assert_eq!(route_of(&["verify", "sk_x"]), Route::Through(Input::Nothing));
        assert_eq!(route_of(&["revoke", "--key", "-"]), Route::Through(Input::Line));
        assert_eq!(route_of(&["vault", "put", "n"]), Route::Through(Input::All));
        assert_eq!(route_of(&["import", "f.jsonl"]), Route::Through(Input::Lines));
        assert_eq!(route_of(&["create", "--from", "-"]), Route::Through(Input::Lines));
        assert_eq!(
            route_of(&["revoke", "--from", "f", "--yes"]),
            Route::Through(Input::Lines)
        );
        assert_eq!(
            route_of(&["vault", "rotate-master", "--generate"]),
            Route::Through(Input::Nothing)
        );
        assert_eq!(route_of(&["vault", "rotate-master"]), Route::Through(Input::All));
    }
}
