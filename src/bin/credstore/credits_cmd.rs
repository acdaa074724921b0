//! `credstore credits add|set ID AMOUNT [--reason TEXT]`: give a key's budget (ID a key id)
//! or an owner's (ID an owner id) credit for the current period, take it away, or set what
//! is left, each logged with its reason.

use std::path::Path;

use clap::Subcommand;
use credstore::{Credit, CreditChange, KeyId};
use serde_json::json;

use crate::{Failure, command_store};

#[derive(Subcommand)]
pub enum CreditsAction {
    /// Add AMOUNT to what the key has left of its budget this period (negative: take it
    /// away, never below nothing left).
    Add {
        /// The key's id, or an owner's.
        id: String,
        /// The credit to add (e.g. 500, or -200 to take 200 away).
        #[arg(allow_negative_numbers = true)]
        amount: i64,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make what the key has left of its budget this period exactly AMOUNT.
    Set {
        /// The key's id, or an owner's.
        id: String,
        /// What is left to spend this period.
        amount: u64,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(data: &Path, action: CreditsAction) -> Result<u8, Failure> {
    let (id, change, reason, json) = match action {
        CreditsAction::Add {
            id,
            amount,
            reason,
            json,
        } => (id, CreditChange::Add(amount), reason, json),
        CreditsAction::Set {
            id,
            amount,
            reason,
            json,
        } => (id, CreditChange::Set(amount), reason, json),
    };
    // Owner ids are never shaped like key ids (`validate_owner_id`): anything that is not
    // a key id is an owner's.
    let store = command_store(data)?;
    let (credit, whose) = match KeyId::parse(&id) {
        Ok(key) => {
            let credit = match change {
                CreditChange::Add(amount) => store.credits_add(&key, amount, reason)?,
                CreditChange::Set(left) => store.credits_set(&key, left, reason)?,
            };
            (credit, Whose::Key(key))
        }
        Err(_) => {
            credstore::owner::validate_owner_id(&id)?;
            let credit = match change {
                CreditChange::Add(amount) => store.owner_credits_add(&id, amount, reason)?,
                CreditChange::Set(left) => store.owner_credits_set(&id, left, reason)?,
            };
            (credit, Whose::Owner(id))
        }
    };
    store.close()?;
    print(&whose, &credit, json);
    Ok(0)
}

/// Whose budget was credited.
enum Whose {
    Key(KeyId),
    Owner(String),
}

fn print(whose: &Whose, credit: &Credit, as_json: bool) {
    let (field, id, label) = match whose {
        Whose::Key(id) => ("key_id", id.to_string(), "Key"),
        Whose::Owner(id) => ("owner", id.clone(), "Owner"),
    };
    if as_json {
        outln!(
            "{}",
            json!({field: id, "credit": credit.credit, "cap": credit.cap, "remaining": credit.remaining})
        );
    } else {
        outln!(
            "{label} {id}: {} left this period (cap {}, credit {:+}).",
            credit.remaining,
            credit.cap,
            credit.credit
        );
    }
}
