//! What the CLI prints, as DESIGN.md's CLI contract fixes it: a closed stdout, one JSON
//! shape for times and budgets, `show`'s table view, the `list` table on narrow
//! terminals, the path from the table to an id (and `revoke --key -`), and the values
//! shell completions offer. Each test runs the real binary on a data directory of its own.

#![expect(
    clippy::expect_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::{Cli, Run};

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
}

/// `credstore ARGS` with its stdout a pipe whose reading end is already closed.
fn run_into_closed_pipe(cli: &Cli, args: &[&str], stdin: Option<&str>) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut command = cli.command(args);
    command.stdout(writer).stderr(Stdio::piped());
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("spawn credstore");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    Run::from(out)
}

/// Defect 1: `list | head -1` and every other printing command, into a closed pipe, end
/// quietly with their usual exit code instead of panicking (exit 101).
#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let cli = Cli::init();
    let created = cli.json(&["create", "--name", "piped", "--rate-limit", "5/1m", "--json"]);
    let id = s(&created, "id").to_string();
    let key = s(&created, "key").to_string();
    // Enough keys and events that a table or a list does not fit one pipe buffer.
    for i in 0..40 {
        cli.ok(&["create", "--name", &format!("filler {i}"), "--project", "acme"]);
    }
    cli.ok(&["plan", "set", "pro", "--rate-limit", "60/1m", "--budget", "10"]);
    cli.ok(&["user", "set", "dana", "--member", "acme=member"]);
    let cases: Vec<(Vec<&str>, Option<&str>, i32)> = vec![
        (vec!["list"], None, 0),
        (vec!["list", "--json"], None, 0),
        (vec!["audit"], None, 0),
        (vec!["audit", "--json"], None, 0),
        (vec!["audit", "export"], None, 0),
        (vec!["audit", "verify"], None, 0),
        (vec!["show", &id], None, 0),
        (vec!["show", &id, "--json"], None, 0),
        (vec!["verify", &key], None, 0),
        (vec!["verify", &key, "--json"], None, 0),
        (vec!["verify", "-", "--json"], Some("sk_live_nonsense\n"), 1),
        (vec!["plan", "list"], None, 0),
        (vec!["plan", "list", "--json"], None, 0),
        (vec!["user", "list"], None, 0),
        (vec!["role", "list", "--json"], None, 0),
        (vec!["vault", "list"], None, 0),
        (vec!["create", "--name", "into the void"], None, 0),
        (vec!["update", &id, "--name", "renamed"], None, 0),
        (vec!["completions", "bash"], None, 0),
        (vec!["rebuild"], None, 0),
    ];
    for (args, stdin, code) in cases {
        let run = run_into_closed_pipe(&cli, &args, stdin);
        assert_eq!(run.code, Some(code), "credstore {args:?}\n{run:?}");
        assert!(
            !run.stderr.contains("panicked") && !run.stderr.to_lowercase().contains("broken pipe"),
            "credstore {args:?} complained about the closed pipe\n{run:?}"
        );
    }
    // The commands that ran into the closed pipe still did their work.
    assert_eq!(cli.json(&["show", &id, "--json"])["name"], "renamed");

    // Any other failure to write (a full disk behind a redirection) is a store-side error.
    #[cfg(target_os = "linux")]
    {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let run = Run::from(cli.command(&["list"]).stdout(full).output().expect("run"));
        assert_eq!(run.code, Some(3), "{run:?}");
        assert!(run.stderr.contains("cannot write to stdout"), "{run:?}");
        assert!(!run.stderr.contains("panicked"), "{run:?}");
    }

    // The shell pipeline of the report.
    let out = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" --data \"$1\" list | head -1; \"$0\" --data \"$1\" audit --json | head -c 10")
        .arg(env!("CARGO_BIN_EXE_credstore"))
        .arg(&cli.data)
        .env_remove("CREDSTORE_PEPPER")
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
