//! `credstore dashboard link|sessions|revoke`: the customers' dashboard's sessions. `link`
//! mints a single-use link for an owner (DESIGN.md: `dashboard link OWNER [--ttl 15m]
//! [--scope S]... [--return-url URL] [--json]`, printing `{"url", "expires_at"}`); the
//! owner opens it on `credstore serve --dashboard` (or a host that mounts
//! `credstore::dashboard::router`).

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use credstore::clock::fmt_time;
use credstore::dashboard::{LinkRequest, Scopes};
use serde_json::json;

use crate::{Failure, command_store, parse_duration_arg};

#[derive(Subcommand)]
pub enum DashboardAction {
    /// Mint a link to the dashboard for OWNER: it works once, before it expires, and
    /// starts a session that manages only OWNER's keys.
    Link {
        /// The owner's id.
        owner: String,
        /// How long the link works if unused (at most 24h).
        #[arg(long, default_value = "15m", value_parser = parse_duration_arg)]
        ttl: Duration,
        /// How long the session lasts once the link is used (at most 7d).
        #[arg(long, default_value = "8h", value_parser = parse_duration_arg)]
        session_ttl: Duration,
        /// What the session may do (repeatable; default all): keys:read, keys:create,
        /// keys:revoke, keys:roll, budget:set, usage:read.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Where the page's "Back" link leads (http:// or https://).
        #[arg(long, value_name = "URL")]
        return_url: Option<String>,
        /// Where the dashboard is served, e.g. https://api.example.com/dashboard
        /// (default: the path /dashboard on the host that runs `serve --dashboard`).
        #[arg(
            long,
            env = "CREDSTORE_DASHBOARD_URL",
            value_name = "URL",
            default_value = "/dashboard",
            value_parser = parse_base_url
        )]
        base_url: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The sessions that have not ended or been revoked.
    Sessions {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a session by its id (ds_...): its cookie works nowhere from now on.
    Revoke {
        /// The session's id.
        session: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A dashboard's address: an `http(s)://` URL or a path from `/`, without spaces. The
/// value is not repeated in the error: a key pasted here must not be printed back.
fn parse_base_url(text: &str) -> Result<String, String> {
    let shaped = text.starts_with('/') || text.starts_with("https://") || text.starts_with("http://");
    if !shaped || text.chars().any(|c| c.is_whitespace() || c.is_control()) || text.len() > 2048 {
        return Err("give an http:// or https:// URL, or a path from /, e.g. https://api.example.com/dashboard".into());
    }
    Ok(text.to_string())
}

pub fn run(data: &Path, action: DashboardAction) -> Result<u8, Failure> {
    match action {
        DashboardAction::Link {
            owner,
            ttl,
            session_ttl,
            scopes,
            return_url,
            base_url,
            json,
        } => {
            let request = LinkRequest {
                ttl,
                session_ttl,
                scopes: Scopes::parse(&scopes).map_err(credstore::Error::from)?,
                return_url,
                ..LinkRequest::new(owner)
            };
            let store = command_store(data)?;
            let link = store.mint_dashboard_link(&request)?;
            store.close()?;
            let url = link.url(&base_url);
            if json {
                outln!("{}", json!({ "url": url, "expires_at": fmt_time(link.expires_at) }));
            } else {
                outln!("{url}");
                errln!(
                    "The link works once, until {}. Send it to the owner only.",
                    fmt_time(link.expires_at)
                );
            }
            Ok(0)
        }
        DashboardAction::Sessions { json } => {
            let store = command_store(data)?;
            let sessions = store.dashboard_sessions();
            store.close()?;
            if json {
                let docs: Vec<_> = sessions.iter().map(credstore::dashboard::Session::to_json).collect();
                outln!("{}", serde_json::Value::Array(docs));
            } else if sessions.is_empty() {
                outln!("No dashboard sessions.");
            } else {
                for s in &sessions {
                    outln!(
                        "{}  owner {}  until {}  scopes {}",
                        s.id,
                        s.owner,
                        fmt_time(s.expires_at),
                        s.scopes.names().join(",")
                    );
                }
            }
            Ok(0)
        }
        DashboardAction::Revoke { session, json } => {
            let store = command_store(data)?;
            store.revoke_dashboard_session(&session)?;
            store.close()?;
            if json {
                outln!("{}", json!({ "revoked": session }));
            } else {
                outln!("Session {session} revoked.");
            }
            Ok(0)
        }
    }
}
