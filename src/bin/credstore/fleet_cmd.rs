//! `credstore --fleet URL ...`: `init` and `status` work on the fleet's PostgreSQL
//! directly; `serve` makes `--data` this host's replica; every other command runs on a
//! throwaway replica synced from the fleet, so the CLI writes without a local store and
//! without a running host (a change commits to the fleet first, as any host's does).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use credstore::fleet::Fleet;
use credstore::{Config, Store};

use super::{Command, Failure, run_on, store_config};

/// The fleet URL, this process's host name, and whether it serves (`serve`: a host proper,
/// counted among the hosts that share rate limits, listening for the fleet's announcements;
/// otherwise the CLI's throwaway replica, passive and not listening), once `--fleet` is
/// given.
pub(super) static FLEET: OnceLock<(String, String, bool)> = OnceLock::new();

/// Runs `command` against the fleet at `url`.
pub(super) fn run(url: String, command: Command, data: &Path) -> Result<u8, Failure> {
    match command {
        Command::Init => {
            let info = Fleet::connect(&url)?.init_new()?;
            outln!(
                "Fleet ready: store {}, schema version {}, log at record {}.",
                hex(&info.store_id),
                info.schema_version,
                info.head_seq
            );
            Ok(0)
        }
        Command::Status => status(&url),
        Command::Serve { .. } => {
            join(url, "serve", false)?;
            if !data.exists() {
                Store::init(data, store_config()?)?.close()?;
            }
            run_on(data.to_path_buf(), command)
        }
        other => {
            join(url, "cli", true)?;
            let replica = Replica::new();
            Store::init(&replica.0, store_config()?)?.close()?;
            run_on(replica.0.clone(), other)
        }
    }
}

/// Makes this process a host of the fleet at `url` for the commands that open a store.
fn join(url: String, role: &str, passive: bool) -> Result<(), Failure> {
    let host = match std::env::var("CREDSTORE_HOST") {
        Ok(name) => name,
        Err(_) => {
            let name = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
            format!("{name}-{role}-{}", std::process::id())
        }
    };
    // The pepper is the fleet's, shared by every host: without it nothing would verify.
    if Config::from_env()?.pepper.is_none() {
        return Err(super::usage("fleet mode needs the fleet's pepper in CREDSTORE_PEPPER"));
    }
    let _ = FLEET.set((url, host, !passive));
    Ok(())
}

fn status(url: &str) -> Result<u8, Failure> {
    let fleet = Fleet::connect(url)?;
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
    // Hosts that left over a day ago are only counted.
    let (shown, old): (Vec<_>, Vec<_>) = hosts.into_iter().partition(|h| !h.left || h.silent_for_secs < 86_400.0);
    for h in shown {
        let state = if h.left { "left" } else { "serving" };
        outln!(
            "host {} ({state}): applied record {} (lag {}), last heard {:.1} s ago, divides rate limits by {}",
            h.host,
            h.applied_seq,
            info.head_seq.saturating_sub(h.applied_seq),
            h.silent_for_secs,
            h.sees
        );
    }
    if !old.is_empty() {
        outln!("{} hosts left over a day ago", old.len());
    }
    Ok(0)
}

/// A throwaway replica's directory, removed on drop.
struct Replica(PathBuf);

impl Replica {
    fn new() -> Replica {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("credstore-replica-{}-{nanos}", std::process::id()));
        Replica(dir)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
