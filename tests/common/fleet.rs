//! Fleet mode as an operator runs it: hosts as `credstore --fleet URL serve --data DIR`
//! processes (each its own replica, the fleet's pepper, its own name and port), the CLI as
//! `credstore --fleet URL COMMAND` processes, and what a host answers over HTTP.
//!
//! It uses `tests/common/mod.rs` (`http`, `Run`): a test binary that includes it declares
//! `mod common;` too.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
// Each test binary uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use credstore::Code;
use serde_json::{Value, json};

use crate::common::{Reply, Run, http};

/// The fleet's pepper, shared by every host and the CLI (`Pepper::from_bytes([7; 32])`).
pub const PEPPER_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_credstore");

/// `credstore --fleet URL` with the fleet's pepper, and none of the caller's `CREDSTORE_*`.
pub fn credstore(url: &str) -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "CREDSTORE_DATA",
        "CREDSTORE_FLEET_URL",
        "CREDSTORE_HOST",
        "CREDSTORE_MASTER_KEY",
        "CREDSTORE_WITNESS",
        "CREDSTORE_LOCK_WAIT",
        "CREDSTORE_VERIFY_PREFIXES",
        "CREDSTORE_FLEET_MAX_STALENESS",
        "CREDSTORE_FLEET_FAIL_OPEN",
        "CREDSTORE_HEADER_TIMEOUT",
        "CREDSTORE_IDLE_TIMEOUT",
        "CREDSTORE_REQUEST_TIMEOUT",
        "CREDSTORE_MAX_CONNECTIONS",
    ] {
        c.env_remove(var);
    }
    c.arg("--fleet")
        .arg(url)
        .env("CREDSTORE_PEPPER", PEPPER_HEX)
        .stdin(Stdio::null());
    c
}

/// `credstore --fleet URL ARGS`, run to its end.
pub fn cli(url: &str, args: &[&str]) -> Run {
    Run::from(credstore(url).args(args).output().expect("run credstore"))
}

/// [`cli`], which must succeed.
#[track_caller]
pub fn cli_ok(url: &str, args: &[&str]) -> Run {
    let run = cli(url, args);
    assert_eq!(run.code, Some(0), "credstore --fleet URL {args:?}\n{run:?}");
    run
}

/// [`cli_ok`] with `--json`: its document.
#[track_caller]
pub fn cli_json(url: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    cli_ok(url, &args).json()
}

/// A fresh fleet (`init`) with an admin key for the hosts' management API (created through
/// the CLI in the admin format): returns the admin key.
pub fn init_with_admin(url: &str) -> String {
    cli_ok(url, &["init"]);
    let admin = cli_json(url, &["create", "--name", "fleet admin", "--role", "admin"]);
    admin["key"].as_str().expect("admin key").to_string()
}

/// What a host answered to `POST /v1/keys.verify`: the decision's code, or an error
/// envelope (a host that refuses to verify at all, say because it is stale).
pub type Answer = Result<Code, Refused>;

/// An error envelope: `{"success": false, "error": {"code", "message"}}` and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// `credstore --fleet URL serve --data DIR` on a free loopback port, as host `name`;
/// killed if still running when dropped.
pub struct Host {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Host {
    /// Starts host `name` with its replica in `data` (made at first start), with the extra
    /// environment `env` (`CREDSTORE_FLEET_MAX_STALENESS`, say).
    pub fn start(url: &str, name: &str, data: &Path, env: &[(&str, &str)]) -> Host {
        let mut command = credstore(url);
        command
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("CREDSTORE_HOST", name)
            .envs(env.iter().copied());
        let (child, addr, stderr) = crate::common::spawn_serve(command, &format!("host {name}"));
        Host {
            name: name.to_string(),
            addr,
            child,
            stderr: Some(stderr),
        }
    }

    /// `POST /v1/keys.verify` with `key`.
    pub fn verify(&self, key: &str) -> Answer {
        let reply = http(self.addr, "POST", "/v1/keys.verify", None, Some(&json!({ "key": key })))
            .unwrap_or_else(|e| panic!("host {}: verify: {e}", self.name));
        if reply.body["success"] == true {
            assert_eq!(reply.status, 200, "{reply:?}");
            let code = serde_json::from_value(reply.body["data"]["code"].clone()).expect("a decision's code");
            return Ok(code);
        }
        Err(refused(reply))
    }

    /// A request to the management API with the admin key `admin`.
    pub fn api(&self, method: &str, path: &str, admin: &str, body: Option<&Value>) -> Reply {
        http(self.addr, method, path, Some(&format!("Bearer {admin}")), body)
            .unwrap_or_else(|e| panic!("host {}: {method} {path}: {e}", self.name))
    }

    /// [`Host::api`], which must succeed: its `data`.
    #[track_caller]
    pub fn api_ok(&self, method: &str, path: &str, admin: &str, body: Option<&Value>) -> Value {
        let reply = self.api(method, path, admin, body);
        assert!(
            reply.body["success"] == true,
            "host {}: {method} {path}: {reply:?}",
            self.name
        );
        reply.body["data"].clone()
    }

    /// Waits until the host's replica holds the admin key `admin` (its management API
    /// answers), at most `limit`.
    pub fn wait_for_admin(&self, admin: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let reply = self.api("GET", "/v1/api-keys?prefix=none_", admin, None);
            if reply.status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host {} does not know the admin key after {limit:?}: {reply:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then its stderr; it must stop within 20 s, and cleanly.
    pub fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "host {} did not stop on SIGTERM", self.name);
            thread::sleep(Duration::from_millis(20));
        };
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().expect("stderr reader"))
            .unwrap_or_default();
        assert!(status.success(), "host {} stopped with {status}:\n{stderr}", self.name);
        stderr
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // A no-op once it was waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn refused(reply: Reply) -> Refused {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Refused {
        status: reply.status,
        code: text(&reply.body["error"]["code"]),
        message: text(&reply.body["error"]["message"]),
    }
}

/// Polls `host` with `key` every millisecond or so until `done` holds for its answer, at
/// most `limit`; returns how long that took. A liveness bound, not a timing claim.
#[track_caller]
pub fn until(host: &Host, key: &str, limit: Duration, done: impl Fn(&Answer) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let answer = host.verify(key);
        if done(&answer) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "host {}: still {answer:?} after {limit:?}",
            host.name
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// [`until`] the host answers `code`.
#[track_caller]
pub fn until_code(host: &Host, key: &str, code: Code, limit: Duration) -> Duration {
    until(host, key, limit, |a| *a == Ok(code))
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
