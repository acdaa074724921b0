//! What the CLI prints, as DESIGN.md's CLI contract fixes it: a closed stdout, one JSON
//! shape for times and budgets, `show`'s table view, the `list` table on narrow
//! terminals, the path from the table to an id (and `revoke --key -`), and the values
//! shell completions offer. Each test runs the real binary on a data directory of its own.

#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

use std::process::{Command, Stdio};

use serde_json::{Value, json};

mod common;
use common::{Cli, Run, Sidecar, http};

/// The name of the admin key `credstore init` issues.
const BOOTSTRAP: &str = "bootstrap admin";

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

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`: the one shape of a point in time in JSON.
fn is_json_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Every string in `doc` that reads as a time is in the one shape, and every field named
/// for a time (`at`, `*_at`, `reset`, `period_end`) is such a string or null. Returns how
/// many times it saw.
#[track_caller]
fn assert_times_fixed(doc: &Value, context: &str) -> usize {
    fn walk(v: &Value, name: &str, context: &str, seen: &mut usize) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(v, k, context, seen);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(item, name, context, seen);
                }
            }
            Value::String(text) => {
                if text.parse::<jiff::Timestamp>().is_ok() || is_json_time(text) {
                    assert!(
                        is_json_time(text),
                        "{name}: {text:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ in {context}"
                    );
                    *seen += 1;
                }
            }
            other => {
                let timely = name == "at" || name.ends_with("_at") || name == "reset" || name == "period_end";
                assert!(
                    !timely || other.is_null(),
                    "{name}: {other} is not a time string in {context}"
                );
            }
        }
    }
    let mut seen = 0;
    walk(doc, "", context, &mut seen);
    seen
}

/// A new store and the admin key its `init` printed (the one indented line).
fn init_with_admin() -> (Cli, String) {
    let cli = Cli::empty();
    let init = cli.ok(&["init"]);
    let key = init
        .stdout
        .lines()
        .filter(|l| l.starts_with("    "))
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains(' '))
        .unwrap_or_else(|| panic!("no admin key in {init:?}"))
        .to_string();
    (cli, key)
}

/// Defect 8: one JSON shape for times (RFC 3339, UTC, always three fractional digits)
/// and budgets (`{"cap", "period": "monthly"|"daily"|"total", "anchor_day"}`), in every
/// command's JSON and the sidecar's.
#[test]
fn json_has_one_shape_for_times_and_budgets() {
    let (cli, admin_key) = init_with_admin();
    // A whole second and a time whose milliseconds end in zeros: both keep three digits.
    let monthly = cli.json(&[
        "create",
        "--name",
        "metered",
        "--expires-at",
        "2031-01-01T00:00:00Z",
        "--rate-limit",
        "3/1h:hourly",
        "--budget",
        "100",
        "--budget-period",
        "monthly:15",
        "--json",
    ]);
    assert_eq!(monthly["expires_at"], "2031-01-01T00:00:00.000Z", "{monthly}");
    let id = s(&monthly, "id").to_string();
    let key = s(&monthly, "key").to_string();
    let updated = cli.json(&["update", &id, "--expires-at", "2031-01-01T00:00:13.44Z", "--json"]);
    assert_eq!(updated["expires_at"], "2031-01-01T00:00:13.440Z", "{updated}");
    assert_eq!(
        updated["budget"],
        json!({"cap": 100, "period": "monthly", "anchor_day": 15}),
        "{updated}"
    );
    let daily = cli.json(&[
        "create",
        "--name",
        "daily",
        "--budget",
        "5",
        "--budget-period",
        "daily",
        "--json",
    ]);
    let daily_id = s(&daily, "id").to_string();
    assert_eq!(
        cli.json(&["show", &daily_id, "--json"])["budget"],
        json!({"cap": 5, "period": "daily", "anchor_day": null})
    );
    cli.ok(&[
        "plan",
        "set",
        "pro",
        "--rate-limit",
        "60/1m:minute",
        "--budget",
        "1000",
        "--budget-period",
        "total",
    ]);
    let plans = cli.json(&["plan", "list", "--json"]);
    assert_eq!(
        plans[0],
        json!({"name": "pro", "rate_limits": [{"name": "minute", "limit": 60, "window_ms": 60000}],
               "budget": {"cap": 1000, "period": "total", "anchor_day": null}}),
        "{plans}"
    );

    // verify --json: the rate limit's reset and the budget's period end, both times.
    let decision = cli.json(&["verify", &key, "--cost", "2", "--json"]);
    assert!(is_json_time(s(&decision["ratelimits"][0], "reset")), "{decision}");
    assert!(is_json_time(s(&decision["budget"], "period_end")), "{decision}");
    let reset: jiff::Timestamp = s(&decision["ratelimits"][0], "reset").parse().unwrap();
    let now = jiff::Timestamp::now();
    assert!(reset > now && reset.as_second() - now.as_second() <= 3600, "{decision}");
    let period_end: jiff::Timestamp = s(&decision["budget"], "period_end").parse().unwrap();
    assert!(period_end > now, "{decision}");
    assert_eq!(
        period_end.to_zoned(jiff::tz::TimeZone::UTC).day(),
        15,
        "a monthly:15 period ends on the 15th: {decision}"
    );
    assert_times_fixed(&decision, "verify --json");

    // Every other document: no time in another shape, and no budget in serde's shape.
    cli.ok(&["update", &daily_id, "--budget", "6", "--budget-period", "daily"]);
    cli.ok(&["revoke", &daily_id, "--yes", "--reason", "done"]);
    let rotated = cli.json(&["rotate", &id, "--grace", "1h", "--json"]);
    assert!(is_json_time(s(&rotated, "old_revoked_at")), "{rotated}");
    for (args, has_times) in [
        (vec!["show", id.as_str(), "--json"], true),
        (vec!["show", daily_id.as_str(), "--json"], true),
        (vec!["list", "--json"], true),
        (vec!["audit", "--json"], true),
        (vec!["plan", "list", "--json"], false),
    ] {
        let doc = cli.json(&args);
        let times = assert_times_fixed(&doc, &format!("{args:?}"));
        assert!(times > 0 || !has_times, "{args:?}: no time in {doc}");
        let text = doc.to_string();
        for serde_shape in ["Monthly", "Daily", "Total", "anchor_day\":{"] {
            assert!(!text.contains(serde_shape), "{args:?} prints {serde_shape}: {text}");
        }
    }
    let export = cli.ok(&["audit", "export"]);
    for line in export.stdout.lines() {
        let doc: Value = serde_json::from_str(line).expect("a JSON line");
        assert_times_fixed(&doc, "audit export");
        assert!(!line.contains("Monthly") && !line.contains("Daily"), "{line}");
    }

    // The sidecar answers in the same shapes.
    let fresh = cli.json(&[
        "create",
        "--name",
        "sidecar",
        "--budget",
        "9",
        "--budget-period",
        "daily",
        "--json",
    ]);
    let sidecar = Sidecar::start(&cli);
    let verified = http(
        sidecar.addr,
        "POST",
        "/v1/keys.verify",
        None,
        Some(&json!({"key": fresh["key"]})),
    )
    .expect("verify");
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    let data = &verified.body["data"];
    assert!(is_json_time(s(&data["budget"], "period_end")), "{data}");
    assert_times_fixed(data, "POST /v1/keys.verify");
    let auth = format!("Bearer {admin_key}");
    let listed = http(sidecar.addr, "GET", "/v1/api-keys", Some(&auth), None).expect("list");
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert!(assert_times_fixed(&listed.body["data"], "GET /v1/api-keys") > 0);
    let shown = listed.body["data"]
        .as_array()
        .expect("array")
        .iter()
        .find(|k| k["id"] == fresh["id"])
        .cloned()
        .expect("the new key is listed");
    assert_eq!(
        shown["budget"],
        json!({"cap": 9, "period": "daily", "anchor_day": null})
    );
    let audit = http(sidecar.addr, "GET", "/v1/audit", Some(&auth), None).expect("audit");
    assert!(assert_times_fixed(&audit.body["data"], "GET /v1/audit") > 0);
    sidecar.stop();
}

/// Defect 11: `show`'s table view holds what `show --json` holds: type, user, role,
/// permissions, rate limits, budget, plan and allowlists; `update --help` names all it takes.
#[test]
fn show_prints_every_setting_and_update_help_names_them() {
    let cli = Cli::init();
    cli.ok(&["plan", "set", "gold", "--rate-limit", "600/1m"]);
    let service = cli.create_json(&[
        "--name",
        "everything",
        "--project",
        "acme",
        "--role",
        "viewer",
        "--permission",
        "jobs:run",
        "--rate-limit",
        "60/1m:minute",
        "--budget",
        "1000",
        "--budget-period",
        "monthly:15",
        "--plan",
        "gold",
        "--allow-ip",
        "10.0.0.0/8",
        "--allow-referrer",
        "*.example.com",
        "--allow-endpoint",
        "GET /v1/users/*",
    ]);
    let show = cli.ok(&["show", s(&service, "id")]);
    for expected in [
        "type",
        "service",
        "role",
        "viewer",
        "permissions",
        "jobs:run",
        "rate limits",
        "60/1m (minute)",
        "budget",
        "1000 monthly from day 15",
        "plan",
        "gold",
        "allow ips",
        "10.0.0.0/8",
        "allow referrers",
        "*.example.com",
        "allow endpoints",
        "GET /v1/users/*",
    ] {
        assert!(show.stdout.contains(expected), "{expected:?} missing:\n{show:?}");
    }
    // A key with none of them says so rather than leaving the lines out.
    let bare = cli.create_json(&["--name", "bare"]);
    let show = cli.ok(&["show", s(&bare, "id")]);
    for expected in [
        "role",
        "member",
        "rate limits",
        "none",
        "budget",
        "plan",
        "allow ips",
        "any",
    ] {
        assert!(show.stdout.contains(expected), "{expected:?} missing:\n{show:?}");
    }
    cli.ok(&["user", "set", "dana", "--member", "acme=admin"]);
    let personal = cli.create_json(&[
        "--name",
        "dana's",
        "--project",
        "acme",
        "--type",
        "personal",
        "--user",
        "dana",
    ]);
    let show = cli.ok(&["show", s(&personal, "id")]);
    for expected in ["personal", "dana"] {
        assert!(show.stdout.contains(expected), "{expected:?} missing:\n{show:?}");
    }

    let help = cli.ok(&["update", "--help"]);
    let about = help.stdout.lines().next().unwrap_or_default().to_lowercase();
    for named in [
        "name",
        "metadata",
        "expiry",
        "rate limits",
        "budget",
        "plan",
        "role",
        "permissions",
        "allowlists",
    ] {
        assert!(
            about.contains(named),
            "update --help's summary leaves out {named}: {about:?}"
        );
    }
    let short = cli.ok(&["--help"]);
    let line = short
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("update "))
        .unwrap_or_default()
        .to_lowercase();
    assert!(line.contains("budget") && line.contains("allowlists"), "{line:?}");
}

impl Cli {
    /// `create ARGS --json`.
    #[track_caller]
    fn create_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        all.push("--json");
        self.json(&all)
    }
}

/// The cells of the table's lines (header and continuation lines too), ANSI colour
/// stripped, trimmed.
fn table_lines(text: &str) -> Vec<Vec<String>> {
    strip_ansi(text)
        .lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| {
            l.trim_matches('│')
                .split(['┆', '│'])
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// A store with keys whose names and projects are long enough to need wrapping.
fn store_for_tables() -> (Cli, Vec<Value>) {
    let cli = Cli::init();
    let keys = vec![
        cli.create_json(&[
            "--name",
            "CI pipeline for the acme platform team",
            "--project",
            "acme-platform",
        ]),
        cli.create_json(&["--name", "billing", "--project", "globex", "--env", "test"]),
        cli.create_json(&["--name", "partner sync job", "--project", "initech", "--prefix", "cmp_"]),
    ];
    cli.ok(&["verify", s(&keys[0], "key")]);
    cli.ok(&["disable", s(&keys[1], "id")]);
    (cli, keys)
}

/// Checks a table printed for a terminal of `width` columns: no line wider (when the
/// table can fit), every id whole, every date whole (a full `YYYY-MM-DD HH:MM:SS` or a
/// `YYYY-MM-DD`), never a column one character wide.
#[track_caller]
fn assert_table_readable(text: &str, width: usize, keys: &[Value]) {
    let clean = strip_ansi(text);
    // The table's lines: a note on stderr may share the terminal.
    for line in clean.lines().filter(|l| l.starts_with(['┌', '│', '╞', '└'])) {
        assert!(
            line.chars().count() <= width,
            "a line wider than {width} columns:\n{clean}"
        );
    }
    let lines = table_lines(text);
    let header = lines.first().expect("a header line").clone();
    let column = |name: &str| header.iter().position(|h| h == name);
    let id_col = column("ID").unwrap_or_else(|| panic!("no ID column:\n{clean}"));
    for name in ["Name", "Created", "Status"] {
        assert!(column(name).is_some(), "no {name} column:\n{clean}");
    }
    for cell in &header {
        assert!(cell.chars().count() > 1, "a one-character column:\n{clean}");
    }
    let is_date = |c: &str| {
        let b = c.as_bytes();
        let day = b.len() >= 10
            && b[..10].iter().enumerate().all(|(i, c)| {
                if i == 4 || i == 7 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            });
        day && (b.len() == 10 || (b.len() == 19 && c[10..].starts_with(' ')))
    };
    for line in &lines[1..] {
        for name in ["Created", "Last used"] {
            if let Some(i) = column(name) {
                let cell = &line[i];
                assert!(
                    cell.is_empty() || cell == "Never" || is_date(cell),
                    "{name} split mid-value: {cell:?}\n{clean}"
                );
            }
        }
        let id = &line[id_col];
        assert!(
            id.is_empty() || (id.starts_with("key_") && id.len() == 26),
            "id split: {id:?}\n{clean}"
        );
    }
    let ids: Vec<&String> = lines.iter().map(|l| &l[id_col]).collect();
    for key in keys {
        assert!(
            ids.iter().any(|i| *i == s(key, "id")),
            "{} missing:\n{clean}",
            s(key, "id")
        );
    }
}

/// Runs `credstore ARGS` on a terminal of `cols` columns (a pseudo-terminal from
/// util-linux's `script`); its output as the terminal shows it.
#[cfg(target_os = "linux")]
fn run_on_terminal(cli: &Cli, cols: u16, args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let line = format!(
        "stty cols {cols} rows 40; exec '{}' --data '{}' {}",
        env!("CARGO_BIN_EXE_credstore"),
        cli.data.display(),
        quoted.join(" ")
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env_remove("COLUMNS")
        .env_remove("CREDSTORE_PEPPER")
        .env_remove("CREDSTORE_DATA")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs the CLI on a pseudo-terminal");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Defect 12: on an 80-column terminal no date wraps mid-value and the table fits; a
/// terminal that reports 0 columns (an unknown width) gets the whole table, not
/// one-character columns.
#[cfg(target_os = "linux")]
#[test]
fn the_list_table_stays_readable_on_narrow_and_unknown_terminals() {
    let (cli, keys) = store_for_tables();
    let eighty = run_on_terminal(&cli, 80, &["list"]);
    assert_table_readable(&eighty, 80, &keys);
    let zero = run_on_terminal(&cli, 0, &["list"]);
    assert_table_readable(&zero, 400, &keys);
    let header = &table_lines(&zero)[0];
    assert_eq!(header.len(), 9, "an unknown width hides no column: {header:?}");
    let wide = run_on_terminal(&cli, 200, &["list"]);
    assert_table_readable(&wide, 200, &keys);
    assert_eq!(table_lines(&wide)[0].len(), 9, "a wide terminal shows every column");
}

/// Defect 12, through `COLUMNS`: the width the table is arranged for, whatever stdout is.
#[test]
fn columns_sets_the_list_tables_width() {
    let (cli, keys) = store_for_tables();
    for width in [80, 100, 60] {
        let run = Run::from(
            cli.command(&["list"])
                .env("COLUMNS", width.to_string())
                .output()
                .expect("run"),
        );
        assert_eq!(run.code, Some(0), "{run:?}");
        // 60 columns cannot hold the narrowest table: it may be wider, but stays whole.
        let limit = if width < 80 { 200 } else { width };
        assert_table_readable(&run.stdout, limit, &keys);
    }
    // 0, or nonsense, is no width: the whole table, unwrapped.
    for bad in ["0", "wide"] {
        let run = Run::from(cli.command(&["list"]).env("COLUMNS", bad).output().expect("run"));
        assert_table_readable(&run.stdout, 400, &keys);
        assert_eq!(table_lines(&run.stdout)[0].len(), 9, "COLUMNS={bad}");
        for line in table_lines(&run.stdout) {
            assert!(line.iter().all(|c| c != "acme-pla"), "COLUMNS={bad} wrapped a cell");
        }
    }
}

/// Friction 13: the `list` table has an ID column; `revoke --key -` reads a leaked key
/// from stdin (never from argv) and revokes it without recording a use of it.
#[test]
fn list_shows_ids_and_revoke_takes_a_leaked_key_from_stdin() {
    let cli = Cli::init();
    let leaked = cli.create_json(&["--name", "leaked", "--project", "acme"]);
    let other = cli.create_json(&["--name", "other", "--project", "acme"]);
    let id = s(&leaked, "id");
    let key = s(&leaked, "key");

    let table = cli.ok(&["list"]);
    let lines = table_lines(&table.stdout);
    assert_eq!(lines[0][0], "ID", "{table:?}");
    for doc in [&leaked, &other] {
        let row = lines
            .iter()
            .find(|l| l.iter().any(|c| c == s(doc, "name")))
            .unwrap_or_else(|| panic!("no row for {doc}:\n{table:?}"));
        assert_eq!(row[0], s(doc, "id"), "{table:?}");
    }

    let events_before = cli.json(&["audit", "--json"]).as_array().expect("array").len();
    let revoked = cli.run_with_stdin(
        &["revoke", "--key", "-", "--reason", "leaked", "--json"],
        &format!("{key}\n"),
    );
    assert_eq!(revoked.code, Some(0), "{revoked:?}");
    let doc = revoked.json();
    assert_eq!(doc["id"], id);
    assert_eq!(doc["status"], "revoked");
    assert_eq!(doc["revoke_reason"], "leaked");
    assert!(!revoked.stdout.contains(key) && !revoked.stderr.contains(key));
    // The lookup recorded no use: no last-used time, and the only new event is the revocation.
    let shown = cli.json(&["show", id, "--json"]);
    assert!(shown["last_used_at"].is_null(), "{shown}");
    let events = cli.json(&["audit", "--json"]);
    let new: Vec<&Value> = events.as_array().expect("array")[events_before..].iter().collect();
    let kinds: Vec<&str> = new.iter().map(|e| s(e, "kind")).collect();
    assert_eq!(kinds, ["key.revoked"], "{events}");
    assert_eq!(cli.json(&["show", s(&other, "id"), "--json"])["status"], "active");

    // Never from argv: refused, and not echoed.
    let in_argv = cli.run(&["revoke", "--key", s(&other, "key"), "--yes"]);
    assert_eq!(in_argv.code, Some(2), "{in_argv:?}");
    assert!(!in_argv.stderr.contains(s(&other, "key")), "{in_argv:?}");
    assert!(in_argv.stderr.contains("stdin"), "{in_argv:?}");
    // An unknown or malformed key, a second revocation, an id and --key together: refused.
    let unknown = cli.run_with_stdin(&["revoke", "--key", "-"], "sk_live_00000000000000000000000000000000\n");
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    assert!(!unknown.stderr.contains("sk_live_0000000000000"), "{unknown:?}");
    assert_eq!(cli.run_with_stdin(&["revoke", "--key", "-"], "hello\n").code, Some(2));
    assert_eq!(
        cli.run_with_stdin(&["revoke", "--key", "-"], &format!("{key}\n")).code,
        Some(2)
    );
    assert_eq!(cli.run(&["revoke", s(&other, "id"), "--key", "-"]).code, Some(2));
    assert_eq!(cli.run(&["revoke"]).code, Some(2), "neither an id nor --key");
    assert_eq!(cli.json(&["show", s(&other, "id"), "--json"])["status"], "active");
}

/// Friction 17: completions offer the values of `--status`, `--env`, `--budget-period`
/// and `--type`; the flags still take what they took.
#[test]
fn completions_offer_the_values_of_enumerated_flags() {
    let cli = Cli::init();
    let bash = cli.ok(&["completions", "bash"]).stdout;
    let offers = |flag: &str, values: &str| {
        let case = format!("--{flag})");
        let lines: Vec<&str> = bash.lines().collect();
        let answers: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0].trim() == case)
            .map(|w| w[1].trim())
            .collect();
        assert!(!answers.is_empty(), "bash: no completion for --{flag}");
        for answer in answers {
            assert!(
                answer.contains(&format!("compgen -W \"{values}\"")),
                "bash: --{flag} offers {answer:?}, not {values:?}"
            );
        }
    };
    offers("status", "active disabled expired revoked");
    offers("env", "live test");
    offers("budget-period", "monthly daily total");
    offers("type", "service personal");
    for shell in ["zsh", "fish"] {
        let script = cli.ok(&["completions", shell]).stdout;
        for value in ["revoked", "personal", "monthly", "daily"] {
            assert!(script.contains(value), "{shell} does not offer {value}");
        }
    }

    // The values still parse as before, `monthly:DAY` included.
    let doc = cli.create_json(&["--name", "anchored", "--budget", "10", "--budget-period", "monthly:28"]);
    assert_eq!(doc["id"].as_str().map(str::len), Some(26));
    let shown = cli.json(&["show", s(&doc, "id"), "--json"]);
    assert_eq!(shown["budget"]["anchor_day"], 28, "{shown}");
    cli.create_json(&["--name", "t", "--env", "test", "--type", "service"]);
    assert_eq!(cli.run(&["create", "--name", "x", "--type", "robot"]).code, Some(2));
    assert_eq!(
        cli.run(&["create", "--name", "x", "--budget", "1", "--budget-period", "weekly"])
            .code,
        Some(2)
    );
    assert_eq!(cli.run(&["list", "--status", "sleepy"]).code, Some(2));
    let listed = cli.json(&["list", "--status", "active", "--json"]);
    assert!(listed.as_array().expect("array").iter().any(|k| k["name"] == BOOTSTRAP));
}
