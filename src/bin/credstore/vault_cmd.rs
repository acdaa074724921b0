//! `credstore vault ...`: provider secrets, read from stdin (never from an argument),
//! listed without values, rotated by a put; the master key rotated by rewrapping.

use std::io::{IsTerminal, Read};
use std::path::Path;

use clap::Subcommand;
use credstore::vault::MasterKey;
use zeroize::Zeroizing;

use crate::output::docs::{SecretDoc, StoredSecretDoc};
use crate::{Failure, command_store, output, usage};

#[derive(Subcommand)]
pub enum VaultAction {
    /// Store a new version of a secret, read from stdin (rotating a provider key is a put).
    Put {
        /// The secret's name.
        name: String,
        /// The project.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a secret (the latest version, or --version N) on stdout.
    Get {
        /// The secret's name.
        name: String,
        /// The project.
        #[arg(long)]
        project: Option<String>,
        /// A version.
        #[arg(long)]
        version: Option<u32>,
    },
    /// List secrets: names, versions, dates and master key versions, never values.
    List {
        /// Only this project.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete every version of a secret.
    Delete {
        /// The secret's name.
        name: String,
        /// The project.
        #[arg(long)]
        project: Option<String>,
    },
    /// Add a new master key version and rewrap every data key under it, without
    /// decrypting a secret. The new key is read from stdin (64 hex characters), or
    /// generated with --generate and printed once.
    RotateMaster {
        /// Generate the new master key instead of reading it from stdin.
        #[arg(long)]
        generate: bool,
        /// Then retire older master keys (they may no longer decrypt).
        #[arg(long)]
        retire_old: bool,
    },
}

pub fn run(data: &Path, action: VaultAction) -> Result<u8, Failure> {
    let store = command_store(data)?;
    match action {
        VaultAction::Put { name, project, json } => {
            let secret = read_secret()?;
            let info = store.vault_put(project.as_deref(), &name, secret.as_bytes())?;
            if json {
                outln!("{}", output::to_json(&StoredSecretDoc::from(&info)));
            } else {
                outln!("Stored {}/{} version {}.", info.project, info.name, info.version);
            }
        }
        VaultAction::Get { name, project, version } => {
            let secret = store.vault_get(project.as_deref(), &name, version)?;
            crate::output::write_stdout_bytes(secret.expose().as_bytes());
            crate::output::write_stdout_bytes(b"\n");
        }
        VaultAction::List { project, json } => {
            let list = store.vault_list(project.as_deref())?;
            if json {
                let docs: Vec<_> = list.iter().map(SecretDoc::from).collect();
                outln!("{}", output::to_json(&docs));
            } else {
                for s in &list {
                    outln!(
                        "{:<16} {:<24} v{:<4} {}  master v{}",
                        s.project,
                        s.name,
                        s.version,
                        credstore::clock::fmt_table_time(s.created_at),
                        s.master_version
                    );
                }
            }
        }
        VaultAction::Delete { name, project } => {
            store.vault_delete(project.as_deref(), &name)?;
            outln!("Deleted every version of {name}.");
        }
        VaultAction::RotateMaster { generate, retire_old } => {
            let version = store.vault_master_version().unwrap_or(0) + 1;
            let key = if generate {
                let key = MasterKey::random(version).map_err(credstore::Error::from)?;
                outln!("New master key version {version} (store it where CREDSTORE_MASTER_KEY comes from):");
                outln!("    {}:{}", version, key.to_hex().as_str());
                key
            } else {
                MasterKey::from_hex(version, read_secret()?.trim())?
            };
            let mut last_shown = 0;
            let n = store.vault_rotate_master(key, |done, total| {
                if total > 0 && (done == total || done >= last_shown + total.div_ceil(20)) {
                    last_shown = done;
                    errln!("rewrapped {done}/{total}");
                }
            })?;
            outln!("Rewrapped {n} secret version(s) under master key version {version}; no secret was decrypted.");
            if retire_old {
                store.vault_retire_below(version)?;
                outln!("Master key versions below {version} are retired.");
            }
        }
    }
    store.close()?;
    Ok(0)
}

/// Reads a secret from stdin (the CLI's, for a command the server runs for it): the whole
/// input, one trailing newline dropped.
fn read_secret() -> Result<Zeroizing<String>, Failure> {
    let mut text = Zeroizing::new(String::new());
    let read = crate::bridge::with_stdin(|input| input.read_to_string(&mut text)).unwrap_or_else(|| {
        prompt_on_terminal();
        std::io::stdin().read_to_string(&mut text)
    });
    read.map_err(|e| usage(format!("cannot read the secret from stdin: {e}")))?;
    let trimmed = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t));
    Ok(Zeroizing::new(trimmed.unwrap_or(&text).to_string()))
}

/// Asks for the secret when stdin is a terminal (the CLI asks before it sends a command to
/// the server: the server's stdin is never one).
pub fn prompt_on_terminal() {
    if std::io::stdin().is_terminal() {
        crate::output::write_stderr(format_args!("Secret (then Enter, Ctrl-D): "));
    }
}
