//! `credstore --fleet URL ...`: the commands that work on a fleet's PostgreSQL directly,
//! without a local store or a running host.

use credstore::fleet::Fleet;

use super::{Command, Failure, usage};

/// Runs `command` against the fleet at `url`.
pub(super) fn run(url: &str, command: Command) -> Result<u8, Failure> {
    let fleet = Fleet::connect(url)?;
    match command {
        Command::Init => {
            let info = fleet.init_new()?;
            outln!(
                "Fleet ready: store {}, schema version {}, log at record {}.",
                hex(&info.store_id),
                info.schema_version,
                info.head_seq
            );
            Ok(0)
        }
        Command::Status => {
            let info = fleet.info()?;
            outln!(
                "fleet: store {}, schema version {}, head at record {}",
                hex(&info.store_id),
                info.schema_version,
                info.head_seq
            );
            let hosts = fleet.hosts()?;
            if hosts.is_empty() {
                outln!("no host has joined yet");
            }
            for h in hosts {
                outln!(
                    "host {}: applied record {} (lag {}), last heard {:.1} s ago",
                    h.host,
                    h.applied_seq,
                    info.head_seq.saturating_sub(h.applied_seq),
                    h.silent_for_secs
                );
            }
            Ok(0)
        }
        _ => Err(usage(
            "with --fleet, only `init` and `status` are built so far; the other commands work on a local store (drop --fleet)",
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
