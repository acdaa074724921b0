//! No secret-shaped input is ever echoed (issue 14): every argument of every command of
//! the CLI, every environment variable it reads, and every field, query parameter, path
//! segment and key header of every request to the sidecar is given a real key of the
//! store, and no output, error or answer may hold that key or any 8 characters in a row
//! of its random part. Errors show at most the key's public start (`sk_live_` and four
//! characters, see `credstore::redact`).
//!
//! The commands and their arguments are read from the CLI's own `--help`, the sidecar's
//! fields from its own "unknown field, expected one of ..." answers: a new flag or field
//! is tested without a change here. What may legitimately print the key back is listed in
//! [`STORED`] and [`STORED_FIELDS`]: a value the store accepted and keeps as text (a name,
//! a project, a reason), printed on success; never on stderr, never in an error.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]
#![cfg(feature = "http")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Cli;
use serde_json::{Value, json};

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_credstore");
/// The least run of the key's random part that counts as echoed.
const WINDOW: usize = 8;

/// Arguments whose value the store keeps as text and prints back on success: `(command,
/// argument)`. The key given there is accepted as that text, so finding it in stdout
/// after an exit 0 is no echo of a refused input. Anything else printing it fails.
const STORED: &[(&str, &str)] = &[
    // "Initialised a credstore store in DATA".
    ("init", "--data"),
    // A key's name and project are shown with it.
    ("create", "--name"),
    ("create", "--project"),
    ("update", "--name"),
    // A referrer pattern the key's shape passes for; `update` shows the allowlists it set.
    ("update", "--allow-referrer"),
    // The revocation reason is part of the record shown.
    ("revoke", "--reason"),
    // "Plan NAME set", "User ID set", "Stored PROJECT/NAME version 1".
    ("plan set", "<NAME>"),
    ("user set", "<ID>"),
    // "id OWNER", "name NAME": an owner is shown as it was set.
    ("owner set", "<OWNER>"),
    ("owner set", "--name"),
    ("vault put", "<NAME>"),
    ("vault put", "--project"),
];

/// As [`STORED`], for the sidecar: `(method and route, field)`, on a 2xx answer.
const STORED_FIELDS: &[(&str, &str)] = &[
    ("POST /v1/api-keys", "name"),
    ("POST /v1/api-keys", "project"),
    // A metadata key or value (`{KEY: "v"}`, `{"k": KEY}`).
    ("POST /v1/api-keys", "metadata"),
    ("DELETE /v1/api-keys/{id}", "reason"),
    ("PATCH /v1/api-keys/{id}", "name"),
    ("PATCH /v1/api-keys/{id}", "metadata"),
    ("PATCH /v1/api-keys/{id}", "allow_referrers"),
    ("POST /v1/api-keys/revoke-by-key", "reason"),
    // A membership's project is shown with the user.
    ("PUT /v1/users/{id}", "memberships"),
];

/// The key fed everywhere, and how to find it in output.
struct Probe {
    key: String,
}

impl Probe {
    /// The key, or a run of [`WINDOW`] characters of its random part, if `text` holds one.
    fn found_in(&self, text: &str) -> Option<String> {
        if text.contains(&self.key) {
            return Some(self.key.clone());
        }
        let random = self.key.strip_prefix("sk_live_").expect("an sk_live_ key");
        random
            .as_bytes()
            .windows(WINDOW)
            .filter_map(|w| std::str::from_utf8(w).ok())
            .find(|w| text.contains(w))
            .map(str::to_string)
    }
}

// ---------------------------------------------------------------------------------------
// The CLI, as its help describes it

/// One argument of one command, as `--help` lists it.
#[derive(Debug, Clone)]
struct Arg {
    /// `--long` for an option or flag, `<NAME>` / `[NAME]` for a positional.
    name: String,
    /// Required: a `<NAME>` positional, or an option the usage line names outside `[...]`.
    required: bool,
    /// `[env: NAME=]` in its help.
    env: Option<String>,
}

impl Arg {
    fn positional(&self) -> bool {
        !self.name.starts_with('-')
    }
}

/// One command: its path of subcommand names and its arguments.
#[derive(Debug)]
struct Leaf {
    path: Vec<String>,
    args: Vec<Arg>,
}

impl Leaf {
    fn name(&self) -> String {
        self.path.join(" ")
    }
}

/// `credstore PATH --help`, stdout.
fn help(path: &[String]) -> String {
    let out = Command::new(BIN)
        .args(path)
        .arg("--help")
        .env_remove("CREDSTORE_DATA")
        .output()
        .expect("run credstore --help");
    assert!(out.status.success(), "credstore {path:?} --help: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// Every command reachable from `path` (itself included), from `--help` down.
fn commands(path: Vec<String>, into: &mut Vec<Leaf>) {
    let text = help(&path);
    let mut section = "";
    let mut subcommands = Vec::new();
    let mut args = Vec::new();
    let usage = text
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .expect("a usage line")
        .to_string();
    for line in text.lines() {
        if !line.starts_with(' ') {
            // A section's title, or the about and usage text (in no section).
            section = if line.ends_with(':') { line } else { "" };
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let first = line.split_whitespace().next().unwrap_or_default();
        // A wrapped description continues further right.
        if section.is_empty() || indent > 6 {
            continue;
        }
        match section {
            "Commands:" => subcommands.push(first.to_string()),
            "Arguments:" => args.push(Arg {
                name: first.trim_end_matches("...").to_string(),
                required: first.starts_with('<'),
                env: env_of(line),
            }),
            "Options:" => {
                let long = line
                    .split_whitespace()
                    .map(|w| w.trim_end_matches(','))
                    .find(|w| w.starts_with("--"))
                    .unwrap_or_else(|| panic!("an option without a long name: {line:?}"));
                let takes_value = line.contains(&format!("{long} <"));
                args.push(Arg {
                    name: long.to_string(),
                    required: takes_value && required_in_usage(&usage, long),
                    env: env_of(line),
                });
            }
            other => panic!("unexpected section {other:?} in the help of {path:?}: {line:?}"),
        }
    }
    if !subcommands.is_empty() {
        // The key where a subcommand's name goes.
        args.push(Arg {
            name: "[COMMAND]".into(),
            required: false,
            env: None,
        });
    }
    into.push(Leaf {
        path: path.clone(),
        args,
    });
    for sub in subcommands {
        let mut deeper = path.clone();
        deeper.push(sub.clone());
        if sub == "help" {
            // `help` has no `--help` of its own worth reading; its argument is a command name.
            into.push(Leaf {
                path: deeper,
                args: vec![Arg {
                    name: "[COMMAND]".into(),
                    required: false,
                    env: None,
                }],
            });
            continue;
        }
        commands(deeper, into);
    }
}

fn env_of(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("[env: ")?;
    Some(rest.split(['=', ']']).next()?.to_string())
}

/// Whether the usage line names `--long` outside brackets (a required option).
fn required_in_usage(usage: &str, long: &str) -> bool {
    let mut depth = 0i32;
    for word in usage.split_whitespace() {
        let opened = word.matches('[').count() as i32;
        if depth + opened == 0 && word == long {
            return true;
        }
        depth += opened - word.matches(']').count() as i32;
    }
    false
}

/// The store every CLI run works on a copy of.
struct Template {
    cli: Cli,
    probe: Probe,
    /// Another valid key, for `verify KEY` when another argument is under test.
    other_key: String,
    /// A key id for commands that take one.
    victim: String,
}

impl Template {
    fn new() -> Template {
        let cli = Cli::init();
        let created = cli.json(&["create", "--name", "probe", "--json"]);
        let probe = Probe {
            key: created["key"].as_str().expect("key").to_string(),
        };
        let other = cli.json(&["create", "--name", "other", "--json"]);
        let victim = cli.json(&["create", "--name", "victim", "--json"]);
        cli.ok(&["plan", "set", "n", "--rate-limit", "10/1m"]);
        cli.ok(&["role", "set", "r", "--permission", "docs:read"]);
        cli.ok(&["user", "set", "u", "--member", "acme=viewer"]);
        cli.ok(&["owner", "set", "o"]);
        let put = cli.run_with_stdin(&["vault", "put", "n"], "provider secret");
        assert_eq!(put.code, Some(0), "{put:?}");
        Template {
            probe,
            other_key: other["key"].as_str().expect("key").to_string(),
            victim: victim["id"].as_str().expect("id").to_string(),
            cli,
        }
    }

    /// A harmless value for a required argument of `leaf` that is not under test.
    fn default_for(&self, leaf: &str, arg: &str) -> String {
        match (leaf, arg) {
            ("verify", "<KEY>") => self.other_key.clone(),
            ("user set" | "user remove", "<ID>") => "u".into(),
            (_, "<ID>") => self.victim.clone(),
            ("role set" | "role delete", "<NAME>") => "r".into(),
            (_, "<NAME>" | "--name") => "n".into(),
            (_, "<SHELL>") => "bash".into(),
            (_, "<AMOUNT>") => "5".into(),
            // A port nothing listens on: no delivery reaches anyone.
            ("webhook add", "<URL>") => "http://127.0.0.1:9/hook".into(),
            ("webhook add", "--event") => "key.created".into(),
            (_, "<OWNER>") => "o".into(),
            ("dashboard revoke", "<SESSION>") => "ds_0000000000000000".into(),
            // `import -`: stdin holds a harmless line (not an import line: refused).
            (_, "<FILE>") => "-".into(),
            // An address no one can listen on: `serve` fails instead of serving.
            (_, "--listen") => "127.0.0.1:99999".into(),
            _ => panic!("no harmless value for {arg} of `credstore {leaf}`: add one to default_for"),
        }
    }
}

/// What one run gave.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary in a fresh directory with a copy of the template store, stdin holding a
/// harmless line (for `vault put`), stdout and stderr to files (a large output cannot
/// block it), killed after 60 s.
fn run(template: &Template, args: &[String], env: &[(&str, &str)], data_arg: bool) -> Output {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    copy_dir(&template.cli.data, &data);
    let out_path = tmp.path().join("stdout");
    let err_path = tmp.path().join("stderr");
    let mut command = Command::new(BIN);
    command
        .env_remove("CREDSTORE_DATA")
        .env_remove("CREDSTORE_PEPPER")
        .env_remove("CREDSTORE_MASTER_KEY")
        .current_dir(tmp.path())
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    if data_arg {
        command.arg("--data").arg(&data);
    }
    command.args(args).envs(env.iter().copied());
    let mut child = command.spawn().expect("spawn credstore");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        // A command that does not read stdin has closed it.
        let _ = stdin.write_all(b"provider secret\n");
    }
    let code = wait(&mut child, Duration::from_secs(60), args);
    Output {
        code,
        stdout: String::from_utf8_lossy(&std::fs::read(&out_path).expect("stdout")).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).expect("stderr")).into_owned(),
    }
}

fn wait(child: &mut Child, limit: Duration, what: &[String]) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("credstore {what:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Adds to `leaks` each stream of `out` that holds the key, stdout after a success
/// excepted when the argument is `stored`.
fn check(probe: &Probe, what: &str, out: &Output, stored: bool, leaks: &mut Vec<String>) {
    if let Some(found) = probe.found_in(&out.stderr) {
        leaks.push(format!("{what}: stderr holds {found:?}\n{}", out.stderr));
    }
    let allowed = stored && out.code == Some(0);
    if !allowed && let Some(found) = probe.found_in(&out.stdout) {
        leaks.push(format!(
            "{what}: stdout (exit {:?}) holds {found:?}\n{}",
            out.code, out.stdout
        ));
    }
}

#[test]
fn no_command_line_argument_or_variable_is_echoed() {
    let template = Template::new();
    let probe = &template.probe;
    let mut leaves = Vec::new();
    commands(Vec::new(), &mut leaves);

    // The help was read: the commands and arguments everyone knows are there.
    let seen: BTreeSet<(String, String)> = leaves
        .iter()
        .flat_map(|l| l.args.iter().map(|a| (l.name(), a.name.clone())))
        .collect();
    for (leaf, arg) in [
        ("create", "--name"),
        ("create", "--allow-ip"),
        ("verify", "<KEY>"),
        ("verify", "--ip"),
        // Optional: `revoke --key -` takes the key from stdin instead.
        ("revoke", "[ID]"),
        ("rotate", "--grace"),
        ("plan set", "--rate-limit"),
        ("audit", "--since"),
        ("vault put", "<NAME>"),
        ("serve", "--listen"),
        ("completions", "<SHELL>"),
        ("help", "[COMMAND]"),
    ] {
        assert!(
            seen.contains(&(leaf.to_string(), arg.to_string())),
            "the help parser missed {arg} of {leaf}: {seen:?}"
        );
    }
    assert!(seen.len() >= 100, "only {} arguments found: {seen:?}", seen.len());
    for (leaf, arg) in STORED {
        assert!(
            seen.contains(&(leaf.to_string(), arg.to_string())),
            "STORED names {arg} of {leaf}, which the CLI no longer has"
        );
    }

    let mut leaks = Vec::new();
    let mut runs = 0;
    // Each variable, with the command to try it on: `list` for those every command takes,
    // else the command whose help names it (`serve` for its timeouts).
    let mut envs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for leaf in &leaves {
        let name = leaf.name();
        for arg in &leaf.args {
            if let Some(var) = &arg.env {
                let path = if name == "list" {
                    vec!["list".to_string()]
                } else {
                    leaf.path.clone()
                };
                let entry = envs.entry(var.clone()).or_insert_with(|| path.clone());
                if name == "list" {
                    *entry = path;
                }
            }
            let mut args: Vec<String> = leaf.path.clone();
            for other in leaf.args.iter().filter(|o| o.required && o.name != arg.name) {
                let value = template.default_for(&name, &other.name);
                if other.positional() {
                    args.push(value);
                } else {
                    args.extend([other.name.clone(), value]);
                }
            }
            if arg.positional() {
                // After the other positionals, which come first in the help as on the line.
                let at = leaf.path.len()
                    + leaf
                        .args
                        .iter()
                        .take_while(|a| a.name != arg.name)
                        .filter(|a| a.positional() && a.required)
                        .count();
                args.insert(at, probe.key.clone());
            } else {
                // A flag's stray value is an unexpected argument; an option's is its value.
                args.extend([arg.name.clone(), probe.key.clone()]);
            }
            let data_arg = arg.name != "--data";
            let out = run(&template, &args, &[], data_arg);
            let stored = STORED.contains(&(name.as_str(), arg.name.as_str()));
            check(
                probe,
                &format!("credstore {name} ({})", arg.name),
                &out,
                stored,
                &mut leaks,
            );
            runs += 1;
        }
    }

    // The environment: the variables the help names, and the two secrets' own.
    for var in ["CREDSTORE_PEPPER", "CREDSTORE_MASTER_KEY"] {
        envs.insert(var.to_string(), vec!["list".to_string()]);
    }
    for (var, command) in &envs {
        let data_arg = var != "CREDSTORE_DATA";
        let out = run(&template, command, &[(var.as_str(), probe.key.as_str())], data_arg);
        assert_ne!(out.code, Some(0), "{var} set to a key was accepted by {command:?}");
        check(
            probe,
            &format!("{var}=KEY credstore {}", command.join(" ")),
            &out,
            false,
            &mut leaks,
        );
        runs += 1;
    }
    assert!(envs.contains_key("CREDSTORE_DATA"), "{envs:?}");

    assert!(
        leaks.is_empty(),
        "{} of {runs} runs echoed the key:\n\n{}",
        leaks.len(),
        leaks.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------
// The sidecar

/// One answer: the status and the whole text (status line, headers, body).
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, body)| body)
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.body()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// One HTTP/1.1 request on a fresh connection, read to its end.
fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    Answer { status, text }
}

/// `credstore serve` on a copy of the template, stopped (SIGTERM) at the end.
struct Sidecar {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
    _tmp: tempfile::TempDir,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Sidecar {
    fn start(template: &Template) -> Sidecar {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("data");
        copy_dir(&template.cli.data, &data);
        let stderr = tmp.path().join("stderr");
        let mut child = Command::new(BIN)
            .arg("--data")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("CREDSTORE_PEPPER")
            .env_remove("CREDSTORE_MASTER_KEY")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn credstore serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        let addr = line
            .trim()
            .strip_prefix("Listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Sidecar {
            child,
            addr,
            stderr,
            _tmp: tmp,
            _stdout: stdout,
        }
    }

    /// SIGTERM, then its stderr.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success());
        wait(&mut self.child, Duration::from_secs(30), &["serve".to_string()]);
        std::fs::read_to_string(&self.stderr).expect("stderr")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // Only when the test failed before `stop`.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A route of the sidecar and how to call it.
struct Route {
    method: &'static str,
    /// With `{id}` for a key id.
    path: &'static str,
    admin: bool,
    /// The least body it takes, for a route with a JSON body.
    body: Option<Value>,
    query: bool,
}

impl Route {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The fields a body or query string may have, from the sidecar's own refusal of an
/// unknown one: "unknown field `zz_probe`, expected one of `a`, `b`" (or "expected `a`").
fn fields_from(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, 400, "{}", answer.text);
    let message = answer.json()["error"]["message"].as_str().expect("message").to_string();
    let (_, expected) = message
        .split_once("expected")
        .unwrap_or_else(|| panic!("no field list in {message:?}"));
    expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

#[test]
fn no_request_field_parameter_or_header_is_echoed_by_the_sidecar() {
    let template = Template::new();
    let probe = &template.probe;
    let key = probe.key.as_str();
    // `init`'s bootstrap admin key went to the fixture's stdout: make another admin, one
    // that may read the vault, so that reading a secret gets past its permission check.
    let admin = template.cli.json(&[
        "create",
        "--name",
        "admin",
        "--role",
        "admin",
        "--permission",
        "vault:read",
        "--json",
    ]);
    let admin = format!("Bearer {}", admin["key"].as_str().expect("key"));
    let sidecar = Sidecar::start(&template);
    let addr = sidecar.addr;
    let as_admin = [("Authorization", admin.as_str())];
    let fresh_id = || {
        let created = send(
            addr,
            "POST",
            "/v1/api-keys",
            &as_admin,
            Some(&json!({"name": "victim"}).to_string()),
        );
        assert_eq!(created.status, 201, "{}", created.text);
        created.json()["data"]["id"].as_str().expect("id").to_string()
    };
    let routes = [
        Route {
            method: "POST",
            path: "/v1/keys.verify",
            admin: false,
            body: Some(json!({"key": template.other_key})),
            query: false,
        },
        Route {
            method: "GET",
            path: "/v1/api-keys",
            admin: true,
            body: None,
            query: true,
        },
        Route {
            method: "POST",
            path: "/v1/api-keys",
            admin: true,
            body: Some(json!({"name": "n"})),
            query: false,
        },
        Route {
            method: "GET",
            path: "/v1/api-keys/{id}",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "DELETE",
            path: "/v1/api-keys/{id}",
            admin: true,
            body: Some(json!({})),
            query: true,
        },
        Route {
            method: "POST",
            path: "/v1/api-keys/{id}/rotate",
            admin: true,
            body: Some(json!({})),
            query: false,
        },
        Route {
            method: "GET",
            path: "/v1/audit",
            admin: true,
            body: None,
            query: true,
        },
        Route {
            method: "PATCH",
            path: "/v1/api-keys/{id}",
            admin: true,
            body: Some(json!({"name": "n"})),
            query: false,
        },
        Route {
            method: "POST",
            path: "/v1/api-keys/{id}/disable",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "POST",
            path: "/v1/api-keys/{id}/enable",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "POST",
            path: "/v1/api-keys/revoke-by-key",
            admin: true,
            body: Some(json!({"key": template.other_key})),
            query: false,
        },
        Route {
            method: "GET",
            path: "/v1/plans",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "PUT",
            path: "/v1/plans/{name}",
            admin: true,
            body: Some(json!({})),
            query: false,
        },
        Route {
            method: "DELETE",
            path: "/v1/plans/{name}",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "GET",
            path: "/v1/roles",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "PUT",
            path: "/v1/roles/{name}",
            admin: true,
            body: Some(json!({"permissions": []})),
            query: false,
        },
        Route {
            method: "DELETE",
            path: "/v1/roles/{name}",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "GET",
            path: "/v1/users",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "PUT",
            path: "/v1/users/{id}",
            admin: true,
            body: Some(json!({})),
            query: false,
        },
        Route {
            method: "DELETE",
            path: "/v1/users/{id}",
            admin: true,
            body: None,
            query: false,
        },
        Route {
            method: "GET",
            path: "/v1/vault/secrets",
            admin: true,
            body: None,
            query: true,
        },
        Route {
            method: "PUT",
            path: "/v1/vault/secrets/{name}",
            admin: true,
            body: Some(json!({"secret": "v"})),
            query: true,
        },
        Route {
            method: "GET",
            path: "/v1/vault/secrets/{name}",
            admin: true,
            body: None,
            query: true,
        },
        Route {
            method: "DELETE",
            path: "/v1/vault/secrets/{name}",
            admin: true,
            body: None,
            query: true,
        },
        Route {
            method: "POST",
            path: "/v1/vault/rotate-master",
            admin: true,
            body: Some(json!({})),
            query: false,
        },
    ];

    let mut leaks = Vec::new();
    let mut requests = 0;
    let mut found_fields = BTreeSet::new();
    let mut scan = |what: String, answer: &Answer, stored: bool| {
        requests += 1;
        let allowed = stored && (200..300).contains(&answer.status);
        if !allowed && let Some(found) = probe.found_in(&answer.text) {
            leaks.push(format!("{what}: the answer holds {found:?}\n{}", answer.text));
        }
    };
    for route in &routes {
        let headers: &[(&str, &str)] = if route.admin { &as_admin } else { &[] };
        let path = |id: &str| route.path.replace("{id}", id).replace("{name}", id);
        // A fresh key for each call of a route that changes it (revoke, rotate); a name
        // for a plan, role, user or secret.
        let path_of = || {
            if route.path.starts_with("/v1/api-keys/{id}") {
                path(&fresh_id())
            } else {
                path("probe")
            }
        };

        // The key in the path, in place of the id or name. A plan, role, user or secret
        // the caller names by it is stored under it: a 2xx answer names it.
        if route.path.contains('{') {
            let body = route.body.as_ref().map(Value::to_string);
            let answer = send(addr, route.method, &path(key), headers, body.as_deref());
            let named = !route.path.starts_with("/v1/api-keys/");
            scan(format!("{} with the key in the path", route.name()), &answer, named);
        }

        // Every field of the body, as a string, a list, a map key and a map value.
        if let Some(base) = &route.body {
            let mut probe_body = base.clone();
            probe_body["zz_probe"] = json!(1);
            let fields = fields_from(&send(
                addr,
                route.method,
                &path_of(),
                headers,
                Some(&probe_body.to_string()),
            ));
            assert!(!fields.is_empty(), "{}: no fields", route.name());
            found_fields.extend(fields.iter().cloned());
            for field in &fields {
                for shape in [json!(key), json!([key]), json!({ key: "v" }), json!({ "k": key })] {
                    let mut body = base.clone();
                    body[field.as_str()] = shape.clone();
                    let answer = send(addr, route.method, &path_of(), headers, Some(&body.to_string()));
                    let stored = STORED_FIELDS.contains(&(route.name().as_str(), field.as_str()));
                    scan(format!("{} body {{{field:?}: {shape}}}", route.name()), &answer, stored);
                }
            }
            // A body that is not JSON at all.
            let answer = send(addr, route.method, &path_of(), headers, Some(key));
            scan(format!("{} with the key as its body", route.name()), &answer, false);
        }

        // Every query parameter.
        if route.query {
            let fields = fields_from(&send(
                addr,
                route.method,
                &format!("{}?zz_probe=1", path_of()),
                headers,
                None,
            ));
            assert!(!fields.is_empty(), "{}: no query parameters", route.name());
            found_fields.extend(fields.iter().cloned());
            for field in &fields {
                let answer = send(
                    addr,
                    route.method,
                    &format!("{}?{field}={key}", path_of()),
                    headers,
                    None,
                );
                let stored = STORED_FIELDS.contains(&(route.name().as_str(), field.as_str()));
                scan(format!("{} query {field}=KEY", route.name()), &answer, stored);
            }
        }

        // The key as the admin key: a valid key of the store, not an admin's.
        if route.admin {
            let bearer = format!("Bearer {key}");
            for header in [("Authorization", bearer.as_str()), ("X-API-Key", key)] {
                let answer = send(addr, route.method, &path_of(), &[header], None);
                scan(format!("{} with {}: KEY", route.name(), header.0), &answer, false);
            }
        }
    }
    // The routes' fields were found, the obvious ones among them.
    for field in [
        "key",
        "ip",
        "require",
        "name",
        "allow_ips",
        "metadata",
        "reason",
        "grace",
        "status",
        "since",
        "after",
        "limit",
        "rate_limits",
        "permissions",
        "memberships",
        "secret",
        "project",
        "version",
        "master_key",
        "generate",
    ] {
        assert!(found_fields.contains(field), "no field {field} found: {found_fields:?}");
    }
    for (route, field) in STORED_FIELDS {
        assert!(
            found_fields.contains(*field) && routes.iter().any(|r| r.name() == *route),
            "STORED_FIELDS names {field} of {route}, which the sidecar no longer has"
        );
    }
    let stderr = sidecar.stop();
    if let Some(found) = probe.found_in(&stderr) {
        leaks.push(format!("the sidecar's stderr holds {found:?}\n{stderr}"));
    }
    assert!(requests >= 150, "only {requests} requests");
    assert!(
        leaks.is_empty(),
        "{} of {requests} answers echoed the key:\n\n{}",
        leaks.len(),
        leaks.join("\n\n")
    );
}
