//! Fixtures shared by the integration tests: a store on a manual clock for the API tests,
//! the real binary on a data directory in a temp dir for the CLI tests, and `credstore
//! serve` with a small blocking HTTP client for the tests that kill it or starve it of disk.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use credstore::{Config, ManualClock, Pepper, Store, UseLog};
use serde_json::Value;

/// The time a [`Fixture`]'s clock starts at.
pub const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// A store in a temporary directory on a manual clock (rate limits never refill unless a
/// test moves it) with a fixed pepper.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub clock: Arc<ManualClock>,
    pub config: Config,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        let clock = Arc::new(ManualClock::new(T0));
        let config = Config::new()
            .pepper(Pepper::from_bytes([0x42; 32]))
            .clock(clock.clone())
            // Only close (and clear_cache / flush) write last-used times in these tests.
            .flush_interval(Duration::from_secs(3600));
        Fixture {
            _dir: dir,
            path,
            clock,
            config,
        }
    }

    /// As [`Fixture::new`], with the use log off: for tests that count state-change records
    /// (use events have tests of their own).
    pub fn without_use_log() -> Self {
        let mut fx = Fixture::new();
        fx.config = fx.config.use_log(UseLog::Off);
        fx
    }

    pub fn init(&self) -> Store {
        Store::init(&self.path, self.config.clone()).expect("init")
    }

    pub fn open(&self) -> Store {
        Store::open(&self.path, self.config.clone()).expect("open")
    }
}

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_credstore");

/// What one run of the binary gave.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self:?}"))
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A data directory in a temp dir, and the binary pointed at it with `--data`.
pub struct Cli {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
}

impl Cli {
    /// A fresh directory, not yet a store.
    pub fn empty() -> Cli {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        Cli { tmp, data }
    }

    /// A fresh development store.
    pub fn init() -> Cli {
        let cli = Cli::empty();
        cli.ok(&["init"]);
        cli
    }

    /// A fresh development store and the bootstrap admin key `init` printed.
    pub fn init_with_admin() -> (Cli, String) {
        let cli = Cli::empty();
        let init = cli.ok(&["init"]);
        let admin = init
            .stdout
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("csa_"))
            .expect("init prints the admin key")
            .to_string();
        (cli, admin)
    }

    /// The binary with a clean environment: no CREDSTORE_* from the caller.
    pub fn bare(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("CREDSTORE_DATA")
            .env_remove("CREDSTORE_PEPPER")
            .env_remove("CREDSTORE_MASTER_KEY")
            .env_remove("CREDSTORE_HEADER_TIMEOUT")
            .env_remove("CREDSTORE_IDLE_TIMEOUT")
            .env_remove("CREDSTORE_REQUEST_TIMEOUT")
            .env_remove("CREDSTORE_MAX_CONNECTIONS")
            .env_remove("CREDSTORE_LOCK_WAIT")
            .env_remove("CREDSTORE_WEBHOOK_TIMEOUT")
            .env_remove("CREDSTORE_WEBHOOK_BACKOFF")
            .env_remove("CREDSTORE_WEBHOOK_MAX_BACKOFF")
            .env_remove("CREDSTORE_FLEET_MAX_STALENESS")
            .env_remove("CREDSTORE_FLEET_FAIL_OPEN")
            // The `list` table's width follows COLUMNS: the caller's terminal must not
            // reach the tests.
            .env_remove("COLUMNS")
            .current_dir(self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.bare();
        c.arg("--data").arg(&self.data).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run credstore"))
    }

    /// Runs with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn credstore");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        Run::from(child.wait_with_output().expect("wait"))
    }

    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, Some(0), "credstore {args:?}\n{run:?}");
        run
    }

    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        self.ok(args).json()
    }
}

/// `credstore serve` on a free loopback port; killed if still running when dropped (a
/// test that failed must not leave a server holding the store).
pub struct Sidecar {
    child: Child,
    pub addr: SocketAddr,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Sidecar {
    pub fn start(cli: &Cli) -> Sidecar {
        Sidecar::start_full(cli, &[], &[])
    }

    /// [`Sidecar::start`] with more arguments for `serve`.
    pub fn start_with(cli: &Cli, args: &[&str]) -> Sidecar {
        Sidecar::start_full(cli, args, &[])
    }

    /// [`Sidecar::start`] with these environment variables set (`CREDSTORE_PEPPER`, ...).
    pub fn start_env(cli: &Cli, env: &[(&str, &str)]) -> Sidecar {
        Sidecar::start_full(cli, &[], env)
    }

    /// [`Sidecar::start`] with more arguments and environment variables.
    pub fn start_full(cli: &Cli, args: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let mut command = cli.command(&[&["serve", "--listen", "127.0.0.1:0"], args].concat());
        command.envs(env.iter().copied());
        let (child, addr, stderr) = spawn_serve(command, "credstore serve");
        Sidecar {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// SIGKILL after `delay`; fails the test if it died by itself. Returns its stderr.
    pub fn kill_after(mut self, delay: Duration) -> String {
        thread::sleep(delay);
        let exited = self.child.try_wait().expect("try_wait");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr();
        assert!(exited.is_none(), "the sidecar exited by itself ({exited:?}):\n{stderr}");
        stderr
    }

    /// SIGTERM, then its exit status and stderr; it must stop within 20 s.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "credstore serve did not stop on SIGTERM");
            thread::sleep(Duration::from_millis(20));
        };
        (status, self.stderr())
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().expect("stderr reader"))
            .unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // A no-op once it was waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// One HTTP/1.1 request on a fresh loopback connection (`Connection: close`), blocking.
/// `Err` unless a whole answer came back: a killed sidecar refuses, resets or cuts short.
/// A few lines of std here instead of the async hyper client of `tests/http.rs`: these
/// tests want plain blocking threads and an error for every way an answer can be cut off.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<Reply> {
    use std::io::{Error, ErrorKind};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(auth) = auth {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let cut = || Error::new(ErrorKind::UnexpectedEof, "answer cut short");
    let text = String::from_utf8(raw).map_err(|_| cut())?;
    let (head, payload) = text.split_once("\r\n\r\n").ok_or_else(cut)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(cut)?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(cut)?;
    if payload.len() != length {
        return Err(cut());
    }
    let body = serde_json::from_str(payload).map_err(|_| cut())?;
    Ok(Reply { status, body })
}

/// Copies the directory `from` to `to`, recursively (a backup, a fork, a rollback).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Spawns `command` (a `credstore ... serve --listen 127.0.0.1:0`) and waits for its first
/// line, the address it listens on; the rest of its stdout is drained so the pipe never
/// fills, and its stderr gathered in the returned thread. A process that does not start
/// within 30 s is killed and the test fails with its stderr (`what` names it).
pub fn spawn_serve(mut command: Command, what: &str) -> (Child, SocketAddr, thread::JoinHandle<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        lines.for_each(drop);
    });
    let mut err = child.stderr.take().expect("stderr");
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(line))) => line,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not start ({other:?}):\n{}",
                stderr.join().unwrap_or_default()
            );
        }
    };
    let addr = line
        .trim()
        .strip_prefix("Listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    (child, addr, stderr)
}
