//! `credstore webhook add URL --event KIND... | list | remove ID`: the endpoints `credstore
//! serve` delivers events to, signed with the Standard Webhooks scheme. `add` prints the
//! signing secret, once.

use std::path::Path;

use clap::Subcommand;
use credstore::webhook::WebhookId;

use crate::output::docs::{AddedWebhookDoc, WebhookDoc};
use crate::output::to_json;
use crate::{Failure, command_store};

#[derive(Subcommand)]
pub enum WebhookAction {
    /// Register URL for the events of the kinds given (from now on); prints its signing
    /// secret once. `credstore serve` delivers.
    Add {
        /// Where to deliver: an https:// URL (or http:// on loopback or a private network).
        url: String,
        /// An event kind to deliver (key.created, key.revoked, budget.threshold, ...; * for
        /// all but webhook.*). Repeatable.
        #[arg(long = "event", value_name = "KIND", required = true)]
        events: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every registered webhook and how far it was delivered.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a webhook: nothing more is delivered to it.
    Remove {
        /// The webhook's id (wh_...).
        id: String,
    },
}

pub fn run(data: &Path, action: WebhookAction) -> Result<u8, Failure> {
    match action {
        WebhookAction::Add { url, events, json } => {
            let store = command_store(data)?;
            let (webhook, secret) = store.webhook_add(&url, &events)?;
            store.close()?;
            let doc = WebhookDoc::from(&webhook);
            if json {
                let added = AddedWebhookDoc {
                    webhook: doc,
                    secret: secret.expose().to_string(),
                };
                outln!("{}", to_json(&added));
                return Ok(0);
            }
            outln!("Added webhook {} for {} -> {}", doc.id, doc.events.join(", "), doc.url);
            outln!();
            outln!("    {}", secret.expose());
            outln!();
            outln!("Its signing secret: check webhook-signature with it (Standard Webhooks). Shown only once.");
            Ok(0)
        }
        WebhookAction::List { json } => {
            let store = command_store(data)?;
            let webhooks = store.webhooks()?;
            store.close()?;
            let docs: Vec<WebhookDoc> = webhooks.iter().map(WebhookDoc::from).collect();
            if json {
                outln!("{}", to_json(&docs));
                return Ok(0);
            }
            for d in &docs {
                let failing = if d.failed_attempts > 0 {
                    format!(", {} failed attempt(s) at the next", d.failed_attempts)
                } else {
                    String::new()
                };
                outln!(
                    "{}  {}  [{}]  delivered to record {}{failing}",
                    d.id,
                    d.url,
                    d.events.join(", "),
                    d.delivered_seq
                );
            }
            Ok(0)
        }
        WebhookAction::Remove { id } => {
            let id = WebhookId::parse(&id)?;
            let store = command_store(data)?;
            store.webhook_remove(&id)?;
            store.close()?;
            outln!("Removed webhook {id}.");
            Ok(0)
        }
    }
}
