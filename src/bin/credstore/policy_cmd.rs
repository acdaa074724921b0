//! `credstore policy set|show|clear`: the lifecycle policy of the store, a project or a
//! key format (max lifetime, unused expiry, least rotation grace), each change logged.

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;
use credstore::lifecycle::{Lifecycle, Policies, Scope, fmt_duration};
use serde_json::{Value, json};

use crate::{Failure, command_store};

#[derive(Subcommand)]
pub enum PolicyAction {
    /// Set the lifecycle policy of the store, a project (--project) or a key format
    /// (--format PREFIX); settings not given keep what the scope had. The most specific
    /// scope that sets a setting wins: format, then project, then store.
    Set {
        /// The policy of this project's keys.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// The policy of the keys of the format with this prefix (e.g. sk_live_).
        #[arg(long, value_name = "PREFIX")]
        format: Option<String>,
        /// The longest a key may live (e.g. 366d): a key created without an expiry gets
        /// one; a later expiry is refused; an older key is refused as expired.
        #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration_arg)]
        max_lifetime: Option<Duration>,
        /// A key unused this long (since its last use, or its creation) is refused as
        /// expired (e.g. 90d).
        #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration_arg)]
        unused_expiry: Option<Duration>,
        /// The least grace a rotation gives the old key (e.g. 1h): a shorter one, or
        /// none, is raised to it.
        #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration_arg)]
        min_grace: Option<Duration>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show every scope's lifecycle policy.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Clear the lifecycle policy of the store, a project or a key format. Expiries it
    /// gave keys stay.
    Clear {
        /// This project's policy.
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// The policy of the format with this prefix.
        #[arg(long, value_name = "PREFIX")]
        format: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(data: &Path, action: PolicyAction) -> Result<u8, Failure> {
    match action {
        PolicyAction::Set {
            project,
            format,
            max_lifetime,
            unused_expiry,
            min_grace,
            json,
        } => {
            let scope = Scope::from_options(project.as_deref(), format.as_deref())?;
            let asked = Lifecycle {
                max_lifetime_ms: max_lifetime.map(ms),
                unused_expiry_ms: unused_expiry.map(ms),
                min_grace_ms: min_grace.map(ms),
            };
            // Refused before the store is opened: nothing to set is bad input.
            if asked == Lifecycle::default() {
                asked.validate()?;
            }
            let store = command_store(data)?;
            let current = store.lifecycle_policies().get(&scope).copied().unwrap_or_default();
            let policy = Lifecycle {
                max_lifetime_ms: asked.max_lifetime_ms.or(current.max_lifetime_ms),
                unused_expiry_ms: asked.unused_expiry_ms.or(current.unused_expiry_ms),
                min_grace_ms: asked.min_grace_ms.or(current.min_grace_ms),
            };
            store.set_lifecycle(scope.clone(), policy)?;
            store.close()?;
            if json {
                outln!("{}", policy.to_json_in(&scope));
            } else {
                outln!("Lifecycle policy of {scope}: {}.", describe(&policy));
            }
            Ok(0)
        }
        PolicyAction::Show { json } => {
            let store = command_store(data)?;
            let policies = store.lifecycle_policies();
            store.close()?;
            print(&policies, json);
            Ok(0)
        }
        PolicyAction::Clear { project, format, json } => {
            let scope = Scope::from_options(project.as_deref(), format.as_deref())?;
            let store = command_store(data)?;
            store.clear_lifecycle(&scope)?;
            store.close()?;
            if json {
                outln!("{}", json!({ "scope": scope.name(), "cleared": true }));
            } else {
                outln!("Cleared the lifecycle policy of {scope}.");
            }
            Ok(0)
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The policies as `policy show --json` prints them: `{"policies": [{"scope", ...}]}`.
pub fn policies_json(policies: &Policies) -> Value {
    let list: Vec<Value> = policies.iter().map(|(scope, p)| p.to_json_in(scope)).collect();
    json!({ "policies": list })
}

fn print(policies: &Policies, as_json: bool) {
    if as_json {
        outln!("{}", policies_json(policies));
        return;
    }
    if policies.is_empty() {
        outln!("No lifecycle policy: keys live as long as their own expiry says.");
        return;
    }
    for (scope, policy) in policies.iter() {
        outln!("{}: {}", scope.name(), describe(policy));
    }
}

/// `max lifetime 366d, unused expiry 90d, min grace 1h` (the settings given).
fn describe(policy: &Lifecycle) -> String {
    let settings = [
        ("max lifetime", policy.max_lifetime_ms),
        ("unused expiry", policy.unused_expiry_ms),
        ("min grace", policy.min_grace_ms),
    ];
    settings
        .iter()
        .filter_map(|(name, ms)| ms.map(|ms| format!("{name} {}", fmt_duration(ms))))
        .collect::<Vec<_>>()
        .join(", ")
}
