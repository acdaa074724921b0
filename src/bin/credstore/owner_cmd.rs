//! `credstore owner set|list|show|revoke-keys|disable-keys`: owners (a customer, team or
//! tenant) whose rate limits and budget all their keys share, on top of each key's own.

use std::path::Path;

use clap::Subcommand;
use credstore::{OwnerUpdate, Store};

use crate::output::docs::{OwnerDoc, OwnerKeysDoc};
use crate::output::{budget_summary, rate_limit_summary, to_json};
use crate::{Failure, LimitArgs, command_store, parse_meta, read_stdin_line, stdin_is_terminal, usage};

#[derive(Subcommand)]
pub enum OwnerAction {
    /// Create an owner, or change one: what is not given stays as it was.
    Set {
        /// The owner's id (1 to 64 characters of A-Z a-z 0-9 _ . : @ -).
        owner: String,
        /// A human name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// Metadata entry K=V, shown in every decision of its keys (repeatable; replaces
        /// the owner's metadata).
        #[arg(long = "meta", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// Remove all metadata.
        #[arg(long, conflicts_with = "meta")]
        clear_meta: bool,
        #[command(flatten)]
        limits: LimitArgs,
        /// Remove the owner's rate limits.
        #[arg(long, conflicts_with = "rate_limits")]
        no_rate_limits: bool,
        /// Remove the owner's budget.
        #[arg(long, conflicts_with = "budget")]
        no_budget: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every owner.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One owner, with its budget this period.
    Show {
        /// The owner's id.
        owner: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every key of the owner, at once and for good, in one logged operation.
    RevokeKeys {
        /// The owner's id.
        owner: String,
        /// Why (kept with each key and in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable every enabled key of the owner in one logged operation (`enable` brings
    /// each back).
    DisableKeys {
        /// The owner's id.
        owner: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(data: &Path, action: OwnerAction) -> Result<u8, Failure> {
    match action {
        OwnerAction::Set {
            owner,
            name,
            meta,
            clear_meta,
            limits,
            no_rate_limits,
            no_budget,
            json,
        } => {
            let budget = limits.budget()?;
            let update = OwnerUpdate {
                name,
                metadata: (clear_meta || !meta.is_empty()).then(|| meta.into_iter().collect()),
                rate_limits: (no_rate_limits || !limits.rate_limits.is_empty()).then_some(limits.rate_limits),
                budget: match (budget, no_budget) {
                    (Some(b), _) => Some(Some(b)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
            };
            let store = command_store(data)?;
            let set = store.set_owner(&owner, update)?;
            print_owner(&store, &set, json)?;
            store.close()?;
        }
        OwnerAction::List { json } => {
            let store = command_store(data)?;
            let owners = store.owners();
            if json {
                let docs: Vec<OwnerDoc> = owners.iter().map(|o| OwnerDoc::from(o, None)).collect();
                outln!("{}", to_json(&docs));
            } else if owners.is_empty() {
                outln!("No owners.");
            } else {
                for o in &owners {
                    outln!("{:<24} {:<24} {}", o.id, o.name, summary(o));
                }
            }
            store.close()?;
        }
        OwnerAction::Show { owner, json } => {
            let store = command_store(data)?;
            let found = store.owner(&owner)?;
            print_owner(&store, &found, json)?;
            store.close()?;
        }
        OwnerAction::RevokeKeys {
            owner,
            reason,
            yes,
            json,
        } => {
            let store = command_store(data)?;
            store.owner(&owner)?;
            if !yes && stdin_is_terminal() {
                crate::output::write_stderr(format_args!(
                    "Revoke every key of owner {owner}? This cannot be undone. [y/N] "
                ));
                let answer = read_stdin_line()?;
                if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
                    return Err(usage("revocation cancelled"));
                }
            }
            let ids = store.revoke_owner_keys(&owner, reason.as_deref())?;
            print_keys(&owner, &ids, "revoked", json);
            store.close()?;
        }
        OwnerAction::DisableKeys { owner, json } => {
            let store = command_store(data)?;
            let ids = store.disable_owner_keys(&owner)?;
            print_keys(&owner, &ids, "disabled", json);
            store.close()?;
        }
    }
    Ok(0)
}

/// An owner's limits and budget in one line.
fn summary(owner: &credstore::Owner) -> String {
    let mut parts: Vec<String> = owner.rate_limits.iter().map(rate_limit_summary).collect();
    if let Some(b) = &owner.budget {
        parts.push(format!("budget {}", budget_summary(b)));
    }
    if parts.is_empty() {
        "no limits".into()
    } else {
        parts.join(", ")
    }
}

fn print_owner(store: &Store, owner: &credstore::Owner, as_json: bool) -> Result<(), Failure> {
    let state = store.owner_budget(&owner.id)?;
    if as_json {
        outln!("{}", to_json(&OwnerDoc::from(owner, state.as_ref())));
        return Ok(());
    }
    outln!("id        {}", owner.id);
    outln!("name      {}", owner.name);
    for (k, v) in &owner.metadata {
        outln!("meta      {k}={v}");
    }
    outln!("limits    {}", summary(owner));
    if let Some(b) = state {
        outln!("spent     {} of {} this period ({} left)", b.spent, b.cap, b.remaining);
    }
    Ok(())
}

fn print_keys(owner: &str, ids: &[credstore::KeyId], done: &str, as_json: bool) {
    if as_json {
        let doc = OwnerKeysDoc {
            owner: owner.to_string(),
            key_ids: ids.iter().map(ToString::to_string).collect(),
        };
        outln!("{}", to_json(&doc));
        return;
    }
    outln!("{} key(s) of owner {owner} {done}.", ids.len());
    for id in ids {
        outln!("  {id}");
    }
}
