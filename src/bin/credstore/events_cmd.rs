//! `credstore events [--after SEQ] [--follow] [--json]`: the change feed of the log, from
//! the record after SEQ on; with `--follow`, waiting for new records as they commit (a
//! `tail -f` of the audit log). `--json` prints JSON Lines, one event a line. Beside a
//! running server it waits on the server's store; on the store itself it looks once a
//! second, opening the store only to read, so other commands are not locked out.

use std::path::Path;
use std::time::Duration;

use crate::{CommandStore, Failure, command_store};

/// Records read per round.
const BATCH: usize = 1_000;
/// How long one wait for new records lasts before it looks again.
const WAIT: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Start after this record (0: from the first).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    after: u64,
    /// Keep waiting for new records and print them as they commit (until interrupted).
    #[arg(long)]
    follow: bool,
    /// Print JSON Lines: one event a line.
    #[arg(long)]
    json: bool,
}

pub fn run(data: &Path, args: EventsArgs) -> Result<u8, Failure> {
    let mut store = command_store(data)?;
    let mut after = args.after;
    loop {
        let events = store.events_after(after, BATCH)?;
        for (seq, event) in &events {
            if args.json {
                outln!("{}", event.to_json(*seq));
            } else {
                let doc = event.to_json(*seq);
                let details = doc.get("details").cloned().unwrap_or(serde_json::Value::Null);
                outln!(
                    "{seq:>6}  {}  {:<18} {details}",
                    credstore::clock::fmt_table_time(event.at),
                    event.kind_name()
                );
            }
        }
        if let Some(e) = crate::output::stdout_failure() {
            // A closed pipe (`events --follow | head`): stop quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(Failure {
                code: 3,
                message: format!("cannot write the events: {e}"),
            });
        }
        match events.last() {
            Some((seq, _)) => after = *seq,
            None if !args.follow => break,
            // Through a running server: wait on its store, woken as a record commits.
            None if matches!(store, CommandStore::Served(_)) => {
                store.wait_for_record(after, WAIT);
            }
            // On the store itself: it must not stay locked while waiting (every other
            // command would wait for it), so close it, wait, and open it again.
            None => {
                store.close()?;
                std::thread::sleep(WAIT);
                store = command_store(data)?;
            }
        }
    }
    store.close()?;
    Ok(0)
}
