//! Fixtures shared by the integration tests: a store on a manual clock for the API tests,
//! and the real binary on a data directory in a temp dir for the CLI tests.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

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

    /// The binary with a clean environment: no CREDSTORE_* from the caller.
    pub fn bare(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_remove("CREDSTORE_DATA")
            .env_remove("CREDSTORE_PEPPER")
            .env_remove("CREDSTORE_HEADER_TIMEOUT")
            .env_remove("CREDSTORE_IDLE_TIMEOUT")
            .env_remove("CREDSTORE_REQUEST_TIMEOUT")
            .env_remove("CREDSTORE_MAX_CONNECTIONS")
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
