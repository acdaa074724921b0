//! The dashboard's pages, as maud templates (every value interpolated is escaped). The
//! words are seed 002's: "API Keys" in the sidebar, "Create new API key", "Create key",
//! "Your API keys" with Name, Created, Last Used ("Never"), Status ("Active", "Revoked")
//! and Actions ("Revoke", confirmed on a page of its own so it works without scripts).

use maud::{DOCTYPE, Markup, html};

use super::Scopes;
use super::Session;
use super::router::DashboardConfig;
use crate::KeyInfo;
use crate::decision::BudgetState;
use crate::record::Status;

/// What every signed-in page shares.
pub(super) struct Chrome<'a> {
    pub cfg: &'a DashboardConfig,
    /// Where the dashboard is mounted (`/dashboard`; empty at the root).
    pub base: &'a str,
    pub session: Option<&'a Session>,
    /// The session's CSRF token, for every form.
    pub csrf: &'a str,
}

/// A key shown once, just after it was created or rolled.
pub(super) struct Revealed<'a> {
    pub key: &'a str,
    pub name: &'a str,
    pub rolled: bool,
}

/// The keys page's own parts.
pub(super) struct KeysView<'a> {
    pub keys: Option<&'a [KeyInfo]>,
    pub revealed: Option<Revealed<'a>>,
    pub error: Option<&'a str>,
    pub notice: Option<&'a str>,
    /// A fresh one-time value for the create form (a replayed create is refused).
    pub nonce: &'a str,
    /// The most a key's monthly budget may be (none: no bound).
    pub max_budget: Option<u64>,
    /// Whether keys may be created for test as well as live.
    pub environments: bool,
}

/// One key's page.
pub(super) struct KeyView<'a> {
    pub key: &'a KeyInfo,
    pub budget: Option<&'a BudgetState>,
    pub chart: Option<Markup>,
    /// Why there is no chart (no `usage:read`, or no usage data in this build).
    pub chart_note: Option<&'a str>,
    pub max_budget: Option<u64>,
}

/// The page around `body`.
pub(super) fn layout(ch: &Chrome<'_>, title: &str, body: &Markup) -> Markup {
    let cfg = ch.cfg;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                meta name="color-scheme" content="light dark";
                title { (title) " · " (cfg.host_name) }
                link rel="stylesheet" href=(format!("{}/assets/dashboard.css", ch.base));
                script src=(format!("{}/assets/dashboard.js", ch.base)) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                div.shell {
                    header.sidebar {
                        a.brand href=(home(ch.base)) {
                            @if let Some(logo) = &cfg.logo_url {
                                img src=(logo) alt="";
                            } @else {
                                span.mark aria-hidden="true" { (cfg.host_name.chars().next().unwrap_or('A')) }
                            }
                            span { (cfg.host_name) }
                        }
                        nav.nav aria-label="Dashboard" {
                            ul {
                                li {
                                    a href=(home(ch.base)) aria-current="page" {
                                        svg viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" aria-hidden="true" {
                                            circle cx="8" cy="15" r="4" {}
                                            path d="M10.8 12.2 20 3m-3 3 3 3m-6 0 3 3" {}
                                        }
                                        "API Keys"
                                    }
                                }
                            }
                        }
                        @if let Some(session) = ch.session {
                            div.foot {
                                span { "Signed in as " strong { (session.owner) } }
                                @if let Some(back) = &session.return_url {
                                    a href=(back) { "Back to " (cfg.host_name) }
                                }
                                form method="post" action=(format!("{}/signout", ch.base)) {
                                    input type="hidden" name="csrf" value=(ch.csrf);
                                    button.linkish type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                    main id="main" tabindex="-1" { (body) }
                }
            }
        }
    }
}

/// The keys page: the key just made (once), "Create new API key", "Your API keys".
pub(super) fn keys_page(ch: &Chrome<'_>, v: &KeysView<'_>) -> Markup {
    let scopes = ch.session.map_or(Scopes::NONE, |s| s.scopes);
    let body = html! {
        h1 { "API Keys" }
        p.lede { "Keys let your applications call the " (ch.cfg.host_name) " API. Keep them secret: anyone with a key can spend against your account." }
        @if let Some(error) = v.error {
            div.notice.error role="alert" { (error) }
        }
        @if let Some(notice) = v.notice {
            div.notice.ok role="status" { (notice) }
        }
        @if let Some(r) = &v.revealed {
            section.panel.reveal aria-labelledby="new-key-title" {
                h2 id="new-key-title" {
                    @if r.rolled { "Your new key for " (r.name) } @else { "Your new API key: " (r.name) }
                }
                div.keybox {
                    code id="new-key" data-testid="new-key" { (r.key) }
                    button.btn.secondary type="button" data-copy="new-key" hidden {
                        svg width="16" height="16" viewBox="0 0 24 24" fill="none" stroke="currentColor" stroke-width="2" aria-hidden="true" {
                            rect x="9" y="9" width="12" height="12" rx="2" {}
                            path d="M5 15V5a2 2 0 0 1 2-2h10" {}
                        }
                        span { "Copy" }
                    }
                }
                p.warning role="note" { strong { "Copy it now." } " This key won't be shown again: we keep only a hash of it. If you lose it, revoke it and create a new one." }
            }
        }
        @if scopes.contains(Scopes::KEYS_CREATE) {
            section.panel aria-labelledby="create-title" {
                h2 id="create-title" { "Create new API key" }
                form method="post" action=(format!("{}/keys", ch.base)) {
                    input type="hidden" name="csrf" value=(ch.csrf);
                    input type="hidden" name="nonce" value=(v.nonce);
                    div.create-grid {
                        div.field.wide {
                            label for="name" { "Name" }
                            input id="name" name="name" type="text" required maxlength="128" placeholder="e.g. my script key" autocomplete="off";
                        }
                        @if v.environments {
                            div.field {
                                label for="env" { "Environment" }
                                select id="env" name="env" {
                                    option value="live" selected { "Live" }
                                    option value="test" { "Test (never charged)" }
                                }
                            }
                        }
                        div.field {
                            label for="budget" { "Monthly budget cap" }
                            input id="budget" name="budget" type="number" min="1" max=[v.max_budget] step="1" inputmode="numeric" placeholder=(v.max_budget.map_or_else(|| "No cap".to_string(), |m| format!("Up to {m}")));
                        }
                        div.field {
                            label for="expires" { "Expires" }
                            select id="expires" name="expires" {
                                option value="" selected { "Never" }
                                option value="7d" { "In 7 days" }
                                option value="30d" { "In 30 days" }
                                option value="90d" { "In 90 days" }
                                option value="365d" { "In 1 year" }
                            }
                        }
                        div.submit { button.btn type="submit" { "Create key" } }
                    }
                }
            }
        }
        @if let Some(keys) = v.keys {
            section.panel aria-labelledby="keys-title" {
                h2 id="keys-title" { "Your API keys" }
                div.table-wrap {
                    table {
                        caption.sr-only { "Your API keys, newest first. Times are UTC." }
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Last Used" } th scope="col" { "Status" } th scope="col" { "Actions" } } }
                        tbody {
                            @if keys.is_empty() {
                                tr { td.empty colspan="5" { "No keys yet. Create one above." } }
                            }
                            @for k in keys {
                                tr data-key-id=(k.record.id) {
                                    td.name-cell {
                                        a href=(format!("{}/keys/{}", ch.base, k.record.id)) { (k.record.name) }
                                        span.start { (k.record.start) "…" }
                                    }
                                    td data-label="Created" { (time_el(k.record.created_at)) }
                                    td data-label="Last Used" data-testid="last-used" {
                                        @match k.last_used_at { Some(t) => (time_el(t)), None => "Never" }
                                    }
                                    td data-label="Status" { (status_badge(k.status)) }
                                    td data-label="Actions" {
                                        div.actions {
                                            @if k.status == Status::Active && scopes.contains(Scopes::KEYS_ROLL) && k.record.rotated_to.is_none() {
                                                a.btn.secondary.small href=(format!("{}/keys/{}/roll", ch.base, k.record.id)) { "Roll" span.sr-only { " " (k.record.name) } }
                                            }
                                            @if k.status != Status::Revoked && scopes.contains(Scopes::KEYS_REVOKE) {
                                                a.btn.ghost-danger.small href=(format!("{}/keys/{}/revoke", ch.base, k.record.id)) { "Revoke" span.sr-only { " " (k.record.name) } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                p.hint { "Times are in UTC." }
            }
        }
    };
    layout(ch, "API Keys", &body)
}

/// One key: its budget (spent of cap, as a bar), expiry, last use and usage chart.
pub(super) fn key_page(ch: &Chrome<'_>, v: &KeyView<'_>) -> Markup {
    let scopes = ch.session.map_or(Scopes::NONE, |s| s.scopes);
    let k = v.key;
    let body = html! {
        p.crumbs { a href=(home(ch.base)) { "← API Keys" } }
        h1 { (k.record.name) }
        p.lede { code { (k.record.start) "…" } " · " (status_badge(k.status)) }
        section.panel aria-labelledby="usage-title" {
            h2 id="usage-title" { "Usage, last 30 days" }
            @if let Some(chart) = &v.chart { (chart) }
            @if let Some(note) = v.chart_note { p.hint { (note) } }
        }
        div.split {
            section.panel aria-labelledby="facts-title" {
                h2 id="facts-title" { "Details" }
                dl.facts {
                    div { dt { "Created" } dd { (time_el(k.record.created_at)) } }
                    div { dt { "Last Used" } dd { @match k.last_used_at { Some(t) => (time_el(t)), None => "Never" } } }
                    div { dt { "Expires" } dd { @match k.record.expires_at { Some(t) => (time_el(t)), None => "Never" } } }
                    div { dt { "Environment" } dd { (match k.record.env() { crate::token::Env::Live => "Live", crate::token::Env::Test => "Test" }) } }
                }
            }
            section.panel aria-labelledby="budget-title" {
                h2 id="budget-title" { "Monthly budget" }
                @match v.budget {
                    Some(b) => {
                        @let pct = b.spent.saturating_mul(100).checked_div(b.cap).unwrap_or(100).min(100);
                        p { strong { (b.spent) } " of " strong { (b.cap) } " spent this period" }
                        // An SVG bar: the policy allows no inline style, and attributes are not styles.
                        svg.meter.full[b.spent >= b.cap] viewBox="0 0 100 8" preserveAspectRatio="none" role="meter"
                            aria-valuemin="0" aria-valuemax=(b.cap) aria-valuenow=(b.spent.min(b.cap)) aria-label="Budget spent" {
                            rect.track x="0" y="0" width="100" height="8" {}
                            rect.fill x="0" y="0" width=(pct) height="8" {}
                        }
                    }
                    None => { p.hint { "No budget cap: this key's spend is not capped." } }
                }
                @if scopes.contains(Scopes::BUDGET_SET) && k.status != Status::Revoked {
                    form method="post" action=(format!("{}/keys/{}/budget", ch.base, k.record.id)) {
                        input type="hidden" name="csrf" value=(ch.csrf);
                        div.row {
                            div.field {
                                label for="cap" { "New monthly cap" }
                                input id="cap" name="cap" type="number" min="1" max=[v.max_budget] step="1" inputmode="numeric" required;
                            }
                            div { button.btn.secondary type="submit" { "Set cap" } }
                        }
                    }
                }
            }
        }
    };
    layout(ch, &k.record.name, &body)
}

/// "Revoke" asks first, on a page of its own (works without scripts).
pub(super) fn confirm_revoke(ch: &Chrome<'_>, k: &KeyInfo) -> Markup {
    let body = html! {
        p.crumbs { a href=(home(ch.base)) { "← API Keys" } }
        section.panel.confirm aria-labelledby="confirm-title" {
            h1 id="confirm-title" { "Revoke " (k.record.name) "?" }
            p { "Requests with " code { (k.record.start) "…" } " will be refused at once. " strong { "Revoked keys cannot be restored." } " You'll need to create a new key if needed." }
            form method="post" action=(format!("{}/keys/{}/revoke", ch.base, k.record.id)) {
                input type="hidden" name="csrf" value=(ch.csrf);
                div.actions {
                    button.btn.danger type="submit" { "Revoke key" }
                    a.btn.secondary href=(home(ch.base)) { "Cancel" }
                }
            }
        }
    };
    layout(ch, "Revoke key", &body)
}

/// "Roll" asks first, with an optional grace period for the old key.
pub(super) fn confirm_roll(ch: &Chrome<'_>, k: &KeyInfo) -> Markup {
    let body = html! {
        p.crumbs { a href=(home(ch.base)) { "← API Keys" } }
        section.panel.confirm aria-labelledby="confirm-title" {
            h1 id="confirm-title" { "Roll " (k.record.name) "?" }
            p { "A new key with the same settings replaces " code { (k.record.start) "…" } ". Deploy the new key, then let the old one stop." }
            form method="post" action=(format!("{}/keys/{}/roll", ch.base, k.record.id)) {
                input type="hidden" name="csrf" value=(ch.csrf);
                div.field {
                    label for="grace" { "The old key stops working" }
                    select id="grace" name="grace" {
                        option value="0" selected { "Now" }
                        option value="1h" { "In 1 hour" }
                        option value="24h" { "In 24 hours" }
                        option value="7d" { "In 7 days" }
                    }
                }
                p {}
                div.actions {
                    button.btn type="submit" { "Roll key" }
                    a.btn.secondary href=(home(ch.base)) { "Cancel" }
                }
            }
        }
    };
    layout(ch, "Roll key", &body)
}

/// The page a link opens: one button that redeems it (a link preview or a mail scanner
/// that fetches the link does not use it up).
pub(super) fn enter_page(ch: &Chrome<'_>, token: &str) -> Markup {
    let body = html! {
        section.panel.confirm aria-labelledby="enter-title" {
            h1 id="enter-title" { "Your " (ch.cfg.host_name) " API keys" }
            p { "This link signs you in to manage your API keys. It works once." }
            form method="post" action=(format!("{}/enter", ch.base)) {
                input type="hidden" name="token" value=(token);
                button.btn type="submit" { "Continue to API Keys" }
            }
        }
    };
    layout(ch, "Sign in", &body)
}

/// A page that only says something (signed out, an error).
pub(super) fn message_page(ch: &Chrome<'_>, title: &str, text: &str) -> Markup {
    let body = html! {
        section.panel.confirm {
            h1 { (title) }
            p { (text) }
            @if ch.session.is_some() {
                p { a href=(home(ch.base)) { "Back to API Keys" } }
            }
        }
    };
    layout(ch, title, &body)
}

/// The keys page's address: the mount point itself (`/dashboard`; `/` at the root). axum's
/// `nest` routes `/dashboard` to the router's `/`, and not `/dashboard/`.
pub(super) fn home(base: &str) -> String {
    if base.is_empty() {
        "/".to_string()
    } else {
        base.to_string()
    }
}

fn status_badge(status: Status) -> Markup {
    let (class, text) = match status {
        Status::Active => ("active", "Active"),
        Status::Revoked => ("revoked", "Revoked"),
        Status::Disabled => ("disabled", "Disabled"),
        Status::Expired => ("expired", "Expired"),
    };
    html! { span class=(format!("badge {class}")) data-testid="status" { (text) } }
}

/// A time as seed 002 shows it, `YYYY-MM-DD HH:MM:SS` (UTC).
fn time_el(ms: i64) -> Markup {
    let t = jiff::Timestamp::from_millisecond(ms).ok();
    let shown = t.map_or_else(|| ms.to_string(), |t| t.strftime("%Y-%m-%d %H:%M:%S").to_string());
    let machine = t.map_or_else(String::new, |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    html! { time.time datetime=(machine) { (shown) } }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_seed_002_says() {
        let m = super::time_el(1_700_000_000_000).into_string();
        assert!(m.contains(">2023-11-14 22:13:20<"), "{m}");
    }
}
