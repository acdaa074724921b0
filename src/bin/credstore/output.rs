//! How the CLI prints: tables and lines for people, one JSON document for scripts.
//!
//! Everything goes to stdout through [`write_stdout`] (the `outln!` macro): a closed pipe
//! (`credstore list | head -1`) ends the printing quietly and the command ends with its
//! usual exit code; `println!` would panic instead. Notes and prompts go to stderr through
//! [`write_stderr`] (the `errln!` macro). For a command `credstore serve` runs for a CLI
//! (`bridge.rs`) both go to that CLI, and the terminal that colours and widths follow is
//! the CLI's.

pub mod docs;

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use comfy_table::{Cell, Color, ColumnConstraint, ContentArrangement, Table, Width, presets};
use credstore::clock::{fmt_table_time, fmt_time};
use credstore::policy::{Role, User};
use credstore::record::KeyKind;
use credstore::{Budget, CreatedKey, Decision, Event, KeyInfo, KeyRecord, Period, Plan, RateLimit, Status};
use serde_json::Value;

/// Set once a write to stdout failed: every later write is dropped.
static STDOUT_DONE: AtomicBool = AtomicBool::new(false);
/// The first failure writing stdout other than a closed pipe, for [`stdout_failure`].
static STDOUT_ERROR: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Writes `args` to stdout. When stdout is a pipe whose reader has gone (`| head -1`), this
/// write and every later one are dropped: there is no one left to read them, and the
/// command goes on to end as usual. Any other failure (a full disk behind a redirection)
/// also stops the printing, and is kept for [`stdout_failure`] to report.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(text) => write_stdout_bytes(text.as_bytes()),
        None => write_stdout_bytes(args.to_string().as_bytes()),
    }
}

/// Bytes to stdout, as [`write_stdout`] writes text.
pub fn write_stdout_bytes(bytes: &[u8]) {
    if crate::bridge::write(crate::bridge::kind::STDOUT, bytes) || STDOUT_DONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) else {
        return;
    };
    STDOUT_DONE.store(true, Ordering::Relaxed);
    if e.kind() != std::io::ErrorKind::BrokenPipe
        && let Ok(mut slot) = STDOUT_ERROR.lock()
    {
        slot.get_or_insert(e);
    }
}

/// Writes `args` to stderr. A failure is ignored: there is nowhere left to report it.
pub fn write_stderr(args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(text) => write_stderr_bytes(text.as_bytes()),
        None => write_stderr_bytes(args.to_string().as_bytes()),
    }
}

/// Bytes to stderr, as [`write_stderr`] writes text.
pub fn write_stderr_bytes(bytes: &[u8]) {
    if crate::bridge::write(crate::bridge::kind::STDERR, bytes) {
        return;
    }
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// Whether stdout is a terminal (the CLI's, for a command the server runs for it).
pub fn stdout_is_terminal() -> bool {
    crate::bridge::terminal().map_or_else(|| std::io::stdout().is_terminal(), |t| t.stdout)
}

/// Whether stderr is a terminal (the CLI's, for a command the server runs for it).
pub fn stderr_is_terminal() -> bool {
    crate::bridge::terminal().map_or_else(|| std::io::stderr().is_terminal(), |t| t.stderr)
}

/// The first failure writing stdout, other than a closed pipe: the command's output is
/// incomplete, which a command that otherwise succeeded reports (exit 3).
pub fn stdout_failure() -> Option<std::io::Error> {
    STDOUT_ERROR.lock().ok().and_then(|mut slot| slot.take())
}

/// A key's public fields as JSON ([`docs::KeyDoc`]).
pub fn info_json(info: &KeyInfo) -> Value {
    to_json(&docs::KeyDoc::from(info))
}

/// A document as a JSON value. The documents are plain data (strings, numbers, lists,
/// maps with string keys), which serde_json always represents.
pub fn to_json(doc: &impl serde::Serialize) -> Value {
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

pub fn print_users(users: &[User], as_json: bool) {
    if as_json {
        let docs: Vec<_> = users.iter().map(docs::UserDoc::from).collect();
        outln!("{}", to_json(&docs));
        return;
    }
    for u in users {
        let m: Vec<String> = u.memberships.iter().map(|(p, r)| format!("{p}={r}")).collect();
        outln!("{:<24} {}", u.id, m.join(", "));
    }
}

pub fn print_roles(roles: &[Role], as_json: bool) {
    if as_json {
        let docs: Vec<_> = roles.iter().map(docs::RoleDoc::from).collect();
        outln!("{}", to_json(&docs));
        return;
    }
    for r in roles {
        let p: Vec<&str> = r.permissions().permissions().iter().map(|p| p.as_str()).collect();
        outln!("{:<16} {}", r.name(), p.join(", "));
    }
}

/// A plan in one line: `60/1m (minute), budget 1000 monthly from day 1`.
pub fn plan_summary(plan: &Plan) -> String {
    let mut parts: Vec<String> = plan.rate_limits.iter().map(rate_limit_summary).collect();
    if let Some(b) = &plan.budget {
        parts.push(format!("budget {}", budget_summary(b)));
    }
    if parts.is_empty() {
        "no limits".into()
    } else {
        parts.join(", ")
    }
}

pub fn print_plans(plans: &[Plan], as_json: bool) {
    if as_json {
        let docs: Vec<_> = plans.iter().map(docs::PlanDoc::from).collect();
        outln!("{}", to_json(&docs));
        return;
    }
    for p in plans {
        outln!("{:<20} {}", p.name, plan_summary(p));
    }
}

/// A key just issued (or rotated from `replaced`) as JSON, the key included
/// ([`docs::CreatedDoc`]).
pub fn created_json(created: &CreatedKey, replaced: Option<&KeyRecord>) -> Value {
    to_json(&docs::CreatedDoc::from(created, replaced))
}

pub fn print_created(created: &CreatedKey, as_json: bool, replaced: Option<&KeyRecord>) {
    let r = &created.record;
    if as_json {
        outln!("{}", created_json(created, replaced));
        return;
    }
    if let Some(old) = replaced {
        let when = old.revoked.as_ref().map_or_else(String::new, |v| fmt_time(v.at));
        outln!(
            "Rotated {} -> {} ({}); the old key stops working at {when}",
            old.id,
            r.id,
            r.name
        );
    } else {
        outln!("Created {} ({}) in project {}, {}", r.id, r.name, r.project, r.env());
    }
    outln!();
    outln!("    {}", created.key.expose());
    outln!();
    outln!("Copy it now: it is shown only once and cannot be recovered.");
}

/// A decision as JSON (`verify --json`, and the sidecar's `POST /v1/keys.verify`):
/// [`docs::DecisionDoc`].
pub fn decision_json(decision: &Decision) -> Value {
    to_json(&docs::DecisionDoc::from(decision))
}

pub fn print_decision(decision: &Decision, as_json: bool) {
    let key = decision.key.as_deref();
    if as_json {
        outln!("{}", decision_json(decision));
        return;
    }
    let mut extra = String::new();
    if let Some(role) = &decision.role {
        extra.push_str(&format!(" role={role}"));
    }
    if let Some(owner) = &decision.owner {
        extra.push_str(&format!(" owner={}", owner.id));
    }
    for l in &decision.ratelimits {
        extra.push_str(&format!(" [{} {}/{} left]", l.name, l.remaining, l.limit));
    }
    if let Some(b) = &decision.budget {
        extra.push_str(&format!(" [budget {}/{} spent]", b.spent, b.cap));
    }
    if let Some(b) = &decision.owner_budget {
        extra.push_str(&format!(" [owner budget {}/{} spent]", b.spent, b.cap));
    }
    if let Some(f) = decision.forbidden {
        extra.push_str(&format!(" [{}]", f.explain()));
    }
    if let Some(r) = decision.retry_after {
        extra.push_str(&format!(" retry after {r}s"));
    }
    for l in decision.ratelimits.iter().filter(|l| l.over_capacity) {
        extra.push_str(&format!(
            " [the request's weight is over {}'s capacity of {}: it can never pass]",
            l.name, l.limit
        ));
    }
    match (key, decision.malformed) {
        (Some(k), _) => outln!(
            "{} ({}) {} \"{}\" project={} env={}{extra}",
            decision.code,
            decision.http_status(),
            k.id,
            k.name,
            k.project,
            k.env()
        ),
        (None, Some(why)) => outln!("{} ({}): {why}", decision.code, decision.http_status()),
        (None, None) => outln!("{} ({})", decision.code, decision.http_status()),
    }
}

/// A key for people: one line per setting, every setting `show --json` holds.
pub fn print_info(info: &KeyInfo, as_json: bool) {
    if as_json {
        outln!("{}", info_json(info));
        return;
    }
    let r = &info.record;
    let joined = |items: &[String], empty: &str| {
        if items.is_empty() {
            empty.to_string()
        } else {
            items.join(", ")
        }
    };
    let on_plan = |own: &str| {
        if r.plan.is_some() {
            "the plan's".to_string()
        } else {
            own.to_string()
        }
    };
    let mut rows = vec![
        ("id", r.id.to_string()),
        ("name", r.name.clone()),
        ("start", r.start.clone()),
        ("type", r.kind.as_str().to_string()),
    ];
    if let KeyKind::Personal { user } = &r.kind {
        rows.push(("user", user.clone()));
    }
    if let Some(owner) = &info.owner {
        rows.push(("owner", owner.clone()));
    }
    rows.extend([
        ("env", r.env().to_string()),
        ("project", r.project.clone()),
        ("status", info.status.label().to_string()),
        (
            "role",
            match (&r.role, &r.kind) {
                (Some(role), _) => role.to_string(),
                (None, KeyKind::Personal { user }) => format!("{user}'s role in {}", r.project),
                (None, KeyKind::Service) => "none".into(),
            },
        ),
        (
            "permissions",
            joined(
                &r.permissions
                    .permissions()
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect::<Vec<_>>(),
                "none beyond the role",
            ),
        ),
        (
            "rate limits",
            joined(
                &r.rate_limits.iter().map(rate_limit_summary).collect::<Vec<_>>(),
                &on_plan("none"),
            ),
        ),
        (
            "budget",
            r.budget.as_ref().map_or_else(|| on_plan("none"), budget_summary),
        ),
        ("plan", r.plan.clone().unwrap_or_else(|| "none".into())),
        ("allow ips", joined(r.allow_ips.sources(), "any")),
        ("allow referrers", joined(r.allow_referrers.sources(), "any")),
        ("allow endpoints", joined(r.allow_endpoints.sources(), "any")),
        ("created", fmt_table_time(r.created_at)),
        ("last used", info.last_used_at.map_or("Never".into(), fmt_table_time)),
        ("expires", r.expires_at.map_or("never".into(), fmt_table_time)),
    ]);
    if let Some(rev) = &r.revoked {
        let reason = rev.reason.as_deref().unwrap_or("no reason given");
        rows.push(("revoked", format!("{} ({reason})", fmt_table_time(rev.at))));
    }
    if let Some(from) = &r.rotated_from {
        rows.push(("rotated from", from.to_string()));
    }
    if let Some(to) = &r.rotated_to {
        rows.push(("rotated to", to.to_string()));
    }
    for (k, v) in &r.metadata {
        rows.push(("meta", format!("{k}={v}")));
    }
    for (k, v) in rows {
        outln!("{k:>15}  {v}");
    }
}

/// A rate limit as `--rate-limit` takes it, with its name unless that is the window's
/// text: `60/1m (minute)`, `1000/1h`.
pub fn rate_limit_summary(l: &RateLimit) -> String {
    let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    let window = units
        .iter()
        .find(|(unit, _)| l.window_ms.is_multiple_of(*unit))
        .map_or_else(
            || format!("{}ms", l.window_ms),
            |(unit, u)| format!("{}{u}", l.window_ms / unit),
        );
    if l.name == window {
        format!("{}/{window}", l.limit)
    } else {
        format!("{}/{window} ({})", l.limit, l.name)
    }
}

/// A budget in words: `1000 monthly from day 1`, `5 daily`, `100 in total`.
pub fn budget_summary(b: &Budget) -> String {
    match b.period {
        Period::Monthly { anchor_day } => format!("{} monthly from day {anchor_day}", b.cap),
        Period::Daily => format!("{} daily", b.cap),
        Period::Total => format!("{} in total", b.cap),
    }
}

/// `list`: a table for people, a JSON array for scripts.
///
/// The table is arranged for [`table_width`]. Values (id, start, type, environment, dates,
/// status) never wrap; names and projects wrap at words, down to [`MIN_WRAP_WIDTH`]. When
/// the narrowest such table is still too wide, [`NARROWING`] steps in turn: dates as days,
/// then Type and Env hidden, then Start, then Last used. With no known width (a pipe, a
/// terminal reporting 0 columns) nothing wraps and nothing is hidden.
pub fn print_list(keys: &[KeyInfo], as_json: bool) {
    if as_json {
        let docs: Vec<Value> = keys.iter().map(info_json).collect();
        outln!("{}", Value::Array(docs));
        return;
    }
    let rows: Vec<[String; 9]> = keys
        .iter()
        .map(|info| {
            let r = &info.record;
            [
                r.id.to_string(),
                r.name.clone(),
                format!("{}...", r.start),
                r.kind.as_str().to_string(),
                r.env().to_string(),
                r.project.clone(),
                fmt_table_time(r.created_at),
                info.last_used_at.map_or("Never".into(), fmt_table_time),
                info.status.label().to_string(),
            ]
        })
        .collect();
    let width = table_width();
    let step = width.map_or(0, |w| {
        (0..NARROWING.len())
            .find(|&step| list_min_width(&rows, step) <= w)
            .unwrap_or(NARROWING.len() - 1)
    });
    let shown: Vec<usize> = (0..LIST_COLUMNS.len()).filter(|&c| !hidden_at(step, c)).collect();
    let days = days_at(step);

    let colour = stdout_is_terminal();
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_header(shown.iter().filter_map(|&c| LIST_COLUMNS.get(c)).map(|col| col.header));
    match width {
        Some(w) => {
            table
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(u16::try_from(w).unwrap_or(u16::MAX));
        }
        None => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    for (info, row) in keys.iter().zip(&rows) {
        let cells = shown.iter().map(|&c| {
            let cell = Cell::new(list_cell(row, c, days));
            if c != STATUS_COLUMN || !colour {
                return cell;
            }
            cell.fg(match info.status {
                Status::Active => Color::Green,
                Status::Disabled | Status::Expired => Color::Yellow,
                Status::Revoked => Color::Red,
            })
        });
        table.add_row(cells.collect::<Vec<_>>());
    }
    for (i, &c) in shown.iter().enumerate() {
        let (Some(col), Some(column)) = (LIST_COLUMNS.get(c), table.column_mut(i)) else {
            continue;
        };
        column.set_constraint(if col.wraps {
            let min = list_column_min(&rows, c, days);
            ColumnConstraint::LowerBoundary(Width::Fixed(u16::try_from(min).unwrap_or(u16::MAX)))
        } else {
            ColumnConstraint::ContentWidth
        });
    }
    outln!("{table}");
    let hidden: Vec<&str> = (0..LIST_COLUMNS.len())
        .filter(|c| !shown.contains(c))
        .filter_map(|c| LIST_COLUMNS.get(c).map(|col| col.header))
        .collect();
    if !hidden.is_empty() && stderr_is_terminal() {
        errln!(
            "note: {} hidden to fit the terminal; `list --json` has all",
            hidden.join(", ")
        );
    }
}

/// A column of `list`'s table.
struct ListColumn {
    header: &'static str,
    /// Text that may wrap at words (a name); the others are values that never wrap.
    wraps: bool,
}

/// `list`'s columns, in order.
const LIST_COLUMNS: [ListColumn; 9] = [
    ListColumn {
        header: "ID",
        wraps: false,
    },
    ListColumn {
        header: "Name",
        wraps: true,
    },
    ListColumn {
        header: "Start",
        wraps: false,
    },
    ListColumn {
        header: "Type",
        wraps: false,
    },
    ListColumn {
        header: "Env",
        wraps: false,
    },
    ListColumn {
        header: "Project",
        wraps: true,
    },
    ListColumn {
        header: "Created",
        wraps: false,
    },
    ListColumn {
        header: "Last used",
        wraps: false,
    },
    ListColumn {
        header: "Status",
        wraps: false,
    },
];

/// The columns that hold dates, and the status.
const DATE_COLUMNS: [usize; 2] = [6, 7];
const STATUS_COLUMN: usize = 8;

/// A column that wraps is never narrower than this, or than its widest content when that
/// is narrower.
const MIN_WRAP_WIDTH: usize = 10;

/// One step of narrowing `list`'s table: each step keeps what the steps before it did.
struct Narrowing {
    /// Dates as `YYYY-MM-DD`.
    days: bool,
    /// Columns hidden.
    hides: &'static [usize],
}

/// The steps, widest table first.
const NARROWING: [Narrowing; 5] = [
    Narrowing {
        days: false,
        hides: &[],
    },
    Narrowing { days: true, hides: &[] },
    Narrowing {
        days: false,
        hides: &[3, 4],
    },
    Narrowing {
        days: false,
        hides: &[2],
    },
    Narrowing {
        days: false,
        hides: &[7],
    },
];

/// The text of column `c` of `row`; a date as its day when `days`.
fn list_cell(row: &[String; 9], c: usize, days: bool) -> &str {
    let text = row.get(c).map_or("", String::as_str);
    if days && DATE_COLUMNS.contains(&c) {
        // `YYYY-MM-DD HH:MM:SS`: the day is the first ten characters ("Never" has fewer).
        return text.get(..10).unwrap_or(text);
    }
    text
}

/// Whether narrowing `step` has hidden column `c`.
fn hidden_at(step: usize, c: usize) -> bool {
    NARROWING.iter().take(step + 1).any(|n| n.hides.contains(&c))
}

/// Whether narrowing `step` shows dates as days.
fn days_at(step: usize) -> bool {
    NARROWING.iter().take(step + 1).any(|n| n.days)
}

/// The least width column `c` takes, padding and borders aside: a value's widest text
/// (the header's included), a wrapping column's up to [`MIN_WRAP_WIDTH`].
fn list_column_min(rows: &[[String; 9]], c: usize, days: bool) -> usize {
    let Some(col) = LIST_COLUMNS.get(c) else {
        return 0;
    };
    let header = col.header.chars().count();
    let widest = rows
        .iter()
        .map(|row| list_cell(row, c, days).chars().count())
        .fold(header, usize::max);
    if col.wraps {
        widest.min(MIN_WRAP_WIDTH.max(header))
    } else {
        widest
    }
}

/// The width of the narrowest table at narrowing `step`: its columns at their least,
/// plus a border and two spaces of padding per column, and the last border.
fn list_min_width(rows: &[[String; 9]], step: usize) -> usize {
    let days = days_at(step);
    let (columns, least) = (0..LIST_COLUMNS.len())
        .filter(|&c| !hidden_at(step, c))
        .fold((0, 0), |(n, sum), c| (n + 1, sum + list_column_min(rows, c, days)));
    least + 3 * columns + 1
}

/// The width the `list` table is arranged for: `COLUMNS` when it is a number above 0, else
/// the terminal's when stdout is one that reports a width above 0; `None` otherwise (a
/// pipe, or a terminal that reports 0 columns, as some serial consoles and CI runners do).
/// For a command the server runs for a CLI, the CLI's.
pub fn table_width() -> Option<usize> {
    if let Some(terminal) = crate::bridge::terminal() {
        return terminal.width;
    }
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<u16>().ok())
        .filter(|&c| c > 0);
    if let Some(c) = columns {
        return Some(usize::from(c));
    }
    if !std::io::stdout().is_terminal() {
        return None;
    }
    Table::new().width().filter(|&w| w > 0).map(usize::from)
}

pub fn print_events(events: &[(u64, Event)], as_json: bool) {
    if as_json {
        let docs: Vec<_> = events.iter().map(|(seq, e)| docs::EventDoc::from(*seq, e)).collect();
        outln!("{}", to_json(&docs));
        return;
    }
    for (seq, e) in events {
        let doc = e.to_json(*seq);
        let details = doc.get("details").cloned().unwrap_or(Value::Null);
        outln!("{seq:>6}  {}  {:<18} {details}", fmt_table_time(e.at), e.kind_name());
    }
}
