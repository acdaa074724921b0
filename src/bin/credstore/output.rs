//! How the CLI prints: tables and lines for people, one JSON document for scripts.

use std::io::IsTerminal;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use credstore::clock::{fmt_table_time, fmt_time};
use credstore::policy::{Role, User};
use credstore::record::KeyKind;
use credstore::{CreatedKey, Decision, Event, KeyInfo, KeyRecord, Plan, Status};
use serde_json::{Value, json};

/// A key's public fields as JSON.
pub fn info_json(info: &KeyInfo) -> Value {
    let r = &info.record;
    json!({
        "id": r.id,
        "name": r.name,
        "start": r.start,
        "env": r.env(),
        "project": r.project,
        "status": info.status.label().to_lowercase(),
        "created_at": fmt_time(r.created_at),
        "last_used_at": info.last_used_at.map(fmt_time),
        "expires_at": r.expires_at.map(fmt_time),
        "metadata": r.metadata,
        "revoked_at": r.revoked.as_ref().map(|v| fmt_time(v.at)),
        "revoke_reason": r.revoked.as_ref().and_then(|v| v.reason.clone()),
        "rotated_from": r.rotated_from,
        "rotated_to": r.rotated_to,
        "rate_limits": r.rate_limits,
        "budget": r.budget,
        "plan": r.plan,
        "type": r.kind.as_str(),
        "user": match &r.kind { KeyKind::Personal { user } => Some(user), KeyKind::Service => None },
        "role": r.role,
        "permissions": r.permissions,
        "allow_ips": r.allow_ips,
        "allow_referrers": r.allow_referrers,
        "allow_endpoints": r.allow_endpoints,
    })
}

pub fn print_users(users: &[User], as_json: bool) {
    if as_json {
        println!("{}", json!(users));
        return;
    }
    for u in users {
        let m: Vec<String> = u.memberships.iter().map(|(p, r)| format!("{p}={r}")).collect();
        println!("{:<24} {}", u.id, m.join(", "));
    }
}

pub fn print_roles(roles: &[Role], as_json: bool) {
    if as_json {
        println!("{}", json!(roles));
        return;
    }
    for r in roles {
        let p: Vec<&str> = r.permissions().permissions().iter().map(|p| p.as_str()).collect();
        println!("{:<16} {}", r.name(), p.join(", "));
    }
}

/// A plan in one line: `60/1m:minute, budget 1000 monthly`.
pub fn plan_summary(plan: &Plan) -> String {
    let mut parts: Vec<String> = plan
        .rate_limits
        .iter()
        .map(|l| format!("{} per {}ms ({})", l.limit, l.window_ms, l.name))
        .collect();
    if let Some(b) = plan.budget {
        parts.push(format!("budget {} {}", b.cap, b.period.name()));
    }
    if parts.is_empty() {
        "no limits".into()
    } else {
        parts.join(", ")
    }
}

pub fn print_plans(plans: &[Plan], as_json: bool) {
    if as_json {
        println!("{}", json!(plans));
        return;
    }
    for p in plans {
        println!("{:<20} {}", p.name, plan_summary(p));
    }
}

/// A key just issued (or rotated from `replaced`) as JSON, the key included.
pub fn created_json(created: &CreatedKey, replaced: Option<&KeyRecord>) -> Value {
    let r = &created.record;
    let mut doc = json!({
        "id": r.id,
        "key": created.key.expose(),
        "name": r.name,
        "start": r.start,
        "env": r.env(),
        "project": r.project,
        "created_at": fmt_time(r.created_at),
        "expires_at": r.expires_at.map(fmt_time),
        "metadata": r.metadata,
    });
    if let (Some(old), Some(obj)) = (replaced, doc.as_object_mut()) {
        obj.insert("replaces".into(), json!(old.id));
        obj.insert(
            "old_revoked_at".into(),
            json!(old.revoked.as_ref().map(|v| fmt_time(v.at))),
        );
    }
    doc
}

pub fn print_created(created: &CreatedKey, as_json: bool, replaced: Option<&KeyRecord>) {
    let r = &created.record;
    if as_json {
        println!("{}", created_json(created, replaced));
        return;
    }
    if let Some(old) = replaced {
        let when = old.revoked.as_ref().map_or_else(String::new, |v| fmt_time(v.at));
        println!(
            "Rotated {} -> {} ({}); the old key stops working at {when}",
            old.id, r.id, r.name
        );
    } else {
        println!("Created {} ({}) in project {}, {}", r.id, r.name, r.project, r.env());
    }
    println!();
    println!("    {}", created.key.expose());
    println!();
    println!("Copy it now: it is shown only once and cannot be recovered.");
}

/// A decision as JSON (`verify --json`, and the sidecar's `POST /v1/keys.verify`).
pub fn decision_json(decision: &Decision) -> Value {
    let key = decision.key.as_deref();
    json!({
        "valid": decision.is_valid(),
        "code": decision.code,
        "status": decision.http_status(),
        "reason": decision.malformed.map(|m| m.to_string()),
        "key_id": key.map(|k| &k.id),
        "name": key.map(|k| &k.name),
        "project": key.map(|k| &k.project),
        "env": key.map(KeyRecord::env),
        "metadata": key.map(|k| &k.metadata),
        "role": decision.role,
        "forbidden": decision.forbidden,
        "ratelimits": decision.ratelimits,
        "budget": decision.budget,
        "retry_after": decision.retry_after,
    })
}

pub fn print_decision(decision: &Decision, as_json: bool) {
    let key = decision.key.as_deref();
    if as_json {
        println!("{}", decision_json(decision));
        return;
    }
    let mut extra = String::new();
    if let Some(role) = &decision.role {
        extra.push_str(&format!(" role={role}"));
    }
    for l in &decision.ratelimits {
        extra.push_str(&format!(" [{} {}/{} left]", l.name, l.remaining, l.limit));
    }
    if let Some(b) = &decision.budget {
        extra.push_str(&format!(" [budget {}/{} spent]", b.spent, b.cap));
    }
    if let Some(f) = decision.forbidden {
        extra.push_str(&format!(" [{}]", f.explain()));
    }
    if let Some(r) = decision.retry_after {
        extra.push_str(&format!(" retry after {r}s"));
    }
    match (key, decision.malformed) {
        (Some(k), _) => println!(
            "{} ({}) {} \"{}\" project={} env={}{extra}",
            decision.code,
            decision.http_status(),
            k.id,
            k.name,
            k.project,
            k.env()
        ),
        (None, Some(why)) => println!("{} ({}): {why}", decision.code, decision.http_status()),
        (None, None) => println!("{} ({})", decision.code, decision.http_status()),
    }
}

pub fn print_info(info: &KeyInfo, as_json: bool) {
    if as_json {
        println!("{}", info_json(info));
        return;
    }
    let r = &info.record;
    let rows = [
        ("id", r.id.to_string()),
        ("name", r.name.clone()),
        ("start", r.start.clone()),
        ("env", r.env().to_string()),
        ("project", r.project.clone()),
        ("status", info.status.label().to_string()),
        ("created", fmt_table_time(r.created_at)),
        ("last used", info.last_used_at.map_or("Never".into(), fmt_table_time)),
        ("expires", r.expires_at.map_or("never".into(), fmt_table_time)),
    ];
    for (k, v) in rows {
        println!("{k:>10}  {v}");
    }
    if let Some(rev) = &r.revoked {
        let reason = rev.reason.as_deref().unwrap_or("no reason given");
        println!("{:>10}  {} ({reason})", "revoked", fmt_table_time(rev.at));
    }
    for (k, v) in &r.metadata {
        println!("{:>10}  {k}={v}", "meta");
    }
}

pub fn print_list(keys: &[KeyInfo], as_json: bool) {
    if as_json {
        let docs: Vec<Value> = keys.iter().map(info_json).collect();
        println!("{}", Value::Array(docs));
        return;
    }
    let colour = std::io::stdout().is_terminal();
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "Name",
            "Start",
            "Type",
            "Env",
            "Project",
            "Created",
            "Last used",
            "Status",
        ]);
    for info in keys {
        let r = &info.record;
        let mut status = Cell::new(info.status.label());
        if colour {
            status = status.fg(match info.status {
                Status::Active => Color::Green,
                Status::Disabled | Status::Expired => Color::Yellow,
                Status::Revoked => Color::Red,
            });
        }
        table.add_row(vec![
            Cell::new(&r.name),
            Cell::new(format!("{}...", r.start)),
            Cell::new(r.kind.as_str()),
            Cell::new(r.env()),
            Cell::new(&r.project),
            Cell::new(fmt_table_time(r.created_at)),
            Cell::new(info.last_used_at.map_or("Never".into(), fmt_table_time)),
            status,
        ]);
    }
    println!("{table}");
}

pub fn print_events(events: &[(u64, Event)], as_json: bool) {
    if as_json {
        let docs: Vec<Value> = events.iter().map(|(seq, e)| e.to_json(*seq)).collect();
        println!("{}", Value::Array(docs));
        return;
    }
    for (seq, e) in events {
        let doc = e.to_json(*seq);
        let details = doc.get("details").cloned().unwrap_or(Value::Null);
        println!("{seq:>6}  {}  {:<18} {details}", fmt_table_time(e.at), e.kind_name());
    }
}
