//! `credstore usage [ID | --owner O | --project P | --all] [--since 30d|DATE] [--until DATE]
//! [--by minute|hour|day|month] [--json | --csv]`: a key's, an owner's, a project's or the
//! whole store's decisions by outcome and the credits they spent, per bucket. On a
//! terminal a table with a bar per row; `--json` DESIGN.md's document; `--csv` one line per
//! bucket with a column per denial code.

use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};
use credstore::clock::{self, Clock};
use credstore::usage::DENIALS;
use credstore::{Granularity, KeyId, UsageQuery, UsageReport, UsageSubject};

use crate::output::{stdout_is_terminal, table_width};
use crate::{Failure, command_store};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("subject").args(["id", "owner", "project", "all"])))]
pub struct UsageArgs {
    /// A key's id (default: the whole store, as --all).
    id: Option<String>,
    /// Every key of this owner.
    #[arg(long)]
    owner: Option<String>,
    /// Every key of this project.
    #[arg(long)]
    project: Option<String>,
    /// The whole store, presented keys that matched none included.
    #[arg(long)]
    all: bool,
    /// From: RFC 3339, a date (2026-12-02, from midnight UTC), or a duration before now
    /// (default: 1h by minute, 24h by hour, 30d by day, 365d by month).
    #[arg(long)]
    since: Option<String>,
    /// Until (default: now), in the forms --since takes.
    #[arg(long)]
    until: Option<String>,
    /// The buckets: minute, hour, day or month.
    #[arg(long, default_value = "day", value_parser = parse_granularity)]
    by: Granularity,
    /// Print DESIGN.md's JSON document.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV: a header, then a line per bucket.
    #[arg(long)]
    csv: bool,
}

fn parse_granularity(text: &str) -> Result<Granularity, String> {
    Granularity::parse(text).map_err(|e| e.to_string())
}

/// The widest a row's bar is drawn.
const BAR_WIDTH: usize = 30;

pub fn run(data: &Path, args: UsageArgs) -> Result<u8, Failure> {
    let subject = match (&args.id, &args.owner, &args.project) {
        (Some(id), _, _) => UsageSubject::Key(KeyId::parse(id)?),
        (_, Some(owner), _) => UsageSubject::Owner(owner.clone()),
        (_, _, Some(project)) => UsageSubject::Project(project.clone()),
        _ => UsageSubject::All,
    };
    let now = clock::SystemClock.now_ms();
    let since_text = args.since.as_deref().unwrap_or(args.by.default_since());
    let since = clock::parse_instant(since_text, now)?;
    let until = args
        .until
        .as_deref()
        .map(|t| clock::parse_instant(t, now))
        .transpose()?
        // The bucket holding now is included.
        .unwrap_or(now + 1);
    let store = command_store(data)?;
    let report = store.usage(&UsageQuery::new(subject.clone(), since, until, args.by))?;
    store.close()?;
    if args.json {
        outln!("{}", report.to_json());
    } else if args.csv {
        print_csv(&report);
    } else {
        print_table(&subject, &report);
    }
    Ok(0)
}

/// A bucket's start as the table shows it: as much of the time as the granularity needs.
fn bucket_label(by: Granularity, start: i64) -> String {
    let text = clock::fmt_time(start);
    let len = match by {
        Granularity::Minute | Granularity::Hour => 16,
        Granularity::Day => 10,
        Granularity::Month => 7,
    };
    text.get(..len).unwrap_or(&text).replace('T', " ")
}

fn print_table(subject: &UsageSubject, report: &UsageReport) {
    let whose = match subject {
        UsageSubject::All => "the whole store".to_string(),
        UsageSubject::Key(id) => format!("key {id}"),
        // Scrubbed: a key pasted where a project belongs is not printed back.
        s => format!("{} {}", s.kind(), credstore::redact::scrub(s.id())),
    };
    outln!(
        "Usage of {whose} by {}, {} to {} (UTC):",
        report.by,
        clock::fmt_table_time(report.since),
        clock::fmt_table_time(report.until)
    );
    let bars = stdout_is_terminal() || table_width().is_some();
    let most = report
        .buckets
        .iter()
        .map(|b| b.counts.requests())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut header = vec!["Start", "Valid", "Denied", "Spent", "Top denial"];
    if bars {
        header.push("Requests (█ valid, ░ denied)");
    }
    table.set_header(header);
    for b in &report.buckets {
        let c = &b.counts;
        let top = c
            .denied
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or(String::new(), |(code, n)| format!("{code} {n}"));
        let mut row = vec![
            Cell::new(bucket_label(report.by, b.start)),
            Cell::new(c.valid).set_alignment(CellAlignment::Right),
            Cell::new(c.denied_total()).set_alignment(CellAlignment::Right),
            Cell::new(c.spent).set_alignment(CellAlignment::Right),
            Cell::new(top),
        ];
        if bars {
            row.push(Cell::new(bar(c.valid, c.denied_total(), most)));
        }
        table.add_row(row);
    }
    let t = &report.total;
    let mut total = vec![
        Cell::new("Total"),
        Cell::new(t.valid).set_alignment(CellAlignment::Right),
        Cell::new(t.denied_total()).set_alignment(CellAlignment::Right),
        Cell::new(t.spent).set_alignment(CellAlignment::Right),
        Cell::new(
            t.denied
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    if bars {
        total.push(Cell::new(""));
    }
    table.add_row(total);
    outln!("{table}");
    print_anomalies(report);
}

/// The anomalies of the report's subject and range, when there are any: one row each.
fn print_anomalies(report: &UsageReport) {
    if report.anomalies.is_empty() {
        return;
    }
    outln!("Anomalies ({}):", report.anomalies.len());
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec!["At", "Reason", "Key or network", "Observed", "Usual", "Window"]);
    for a in &report.anomalies {
        let what = match (&a.key_id, &a.anomaly.network) {
            (Some(id), Some(network)) => format!("{id} from {network}"),
            (Some(id), None) => id.to_string(),
            (None, Some(network)) => network.to_string(),
            (None, None) => String::new(),
        };
        table.add_row(vec![
            Cell::new(clock::fmt_table_time(a.at)),
            Cell::new(a.anomaly.reason),
            Cell::new(what),
            Cell::new(a.anomaly.observed).set_alignment(CellAlignment::Right),
            Cell::new(a.anomaly.baseline).set_alignment(CellAlignment::Right),
            Cell::new(window(a.anomaly.window_start, a.anomaly.window_end)),
        ]);
    }
    outln!("{table}");
}

/// An anomaly's window: its start, and its end when that is another time (the end's
/// date only when it is another day).
fn window(start: i64, end: i64) -> String {
    let (from, to) = (clock::fmt_table_time(start), clock::fmt_table_time(end));
    match (from.split_once(' '), to.split_once(' ')) {
        _ if from == to => from,
        (Some((day, _)), Some((end_day, time))) if day == end_day => format!("{from} to {time}"),
        _ => format!("{from} to {to}"),
    }
}

/// A bar of `valid` and `denied` requests, scaled so that `most` fills [`BAR_WIDTH`];
/// anything above zero shows at least one mark.
fn bar(valid: u64, denied: u64, most: u64) -> String {
    let scale = |n: u64| -> usize {
        if n == 0 {
            return 0;
        }
        let width = u128::from(n) * BAR_WIDTH as u128 / u128::from(most);
        usize::try_from(width).unwrap_or(BAR_WIDTH).clamp(1, BAR_WIDTH)
    };
    let (v, d) = (scale(valid), scale(denied));
    let d = d.min(BAR_WIDTH.saturating_sub(v).max(usize::from(denied > 0)));
    format!("{}{}", "█".repeat(v), "░".repeat(d))
}

fn print_csv(report: &UsageReport) {
    let mut out = String::from("start,valid,spent,denied");
    for code in DENIALS {
        let _ = write!(out, ",{code}");
    }
    out.push('\n');
    for b in &report.buckets {
        let c = &b.counts;
        let _ = write!(
            out,
            "{},{},{},{}",
            clock::fmt_time(b.start),
            c.valid,
            c.spent,
            c.denied_total()
        );
        for code in DENIALS {
            let _ = write!(out, ",{}", c.denied.get(&code).copied().unwrap_or(0));
        }
        out.push('\n');
    }
    crate::output::write_stdout_bytes(out.as_bytes());
}
