//! The properties the `dashboard_request` target defends, shared by the target
//! (`fuzz/fuzz_targets/dashboard_request.rs`, via `#[path]`) and by `tests/fuzz_corpus.rs`,
//! which runs every seed in `fuzz/corpus/dashboard_request/` through them.
//!
//! An input is one HTTP request to the customers' dashboard (`credstore::dashboard::router`
//! nested at `/dashboard`), written as text: a first line `METHOD PATH`, header lines
//! `Name: value`, an empty line, the body. `{SESSION}` and `{CSRF}` in it stand for a live
//! session's cookie value and its CSRF token, `{NONCE}` for a fresh create nonce, `{KEY}`
//! for the id of a key of the session's owner and `{OTHER}` for a key of another owner.
//! Each input runs against a fresh store (owners `acme` and `globex`, one key each, one
//! session of `acme`). Whatever the bytes:
//!
//! - the router answers, and never 5xx;
//! - the store changes only for a POST that carried the session's cookie and its CSRF
//!   token (a forged, edited or anonymous request changes nothing);
//! - the other owner's key is never changed;
//! - no answer holds the session token, and only `/dashboard/enter` sets a cookie.
//!
//! Returns whether the request was accepted (an answer below 400).

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use credstore::dashboard::{DashboardConfig, LinkRequest};
use credstore::{Config, ManualClock, NewKey, OwnerUpdate, Pepper, Status, Store};
use tower::ServiceExt;

/// Runs the checks on one request; returns whether it was accepted.
pub fn check_dashboard_request(data: &[u8]) -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("no temp dir");
    };
    let clock = Arc::new(ManualClock::new(1_767_225_600_000));
    let config = Config::new().pepper(Pepper::from_bytes([7; 32])).clock(clock);
    let store = match Store::init(dir.path().join("data"), config) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("init: {e}"),
    };
    let fixture = (|| -> credstore::Result<(String, String, String)> {
        store.set_owner("acme", OwnerUpdate::default())?;
        store.set_owner("globex", OwnerUpdate::default())?;
        let mine = store.create(NewKey::new("mine").owner("acme"))?;
        let theirs = store.create(NewKey::new("theirs").owner("globex"))?;
        let link = store.mint_dashboard_link(&LinkRequest::new("acme"))?;
        let session = store.redeem_dashboard_link(link.token.expose())?;
        Ok((
            session.token.expose().to_string(),
            mine.record.id.to_string(),
            theirs.record.id.to_string(),
        ))
    })();
    let Ok((session, mine, theirs)) = fixture else {
        panic!("fixture: {fixture:?}");
    };
    let csrf = credstore::dashboard::csrf_token(&session);
    let text = String::from_utf8_lossy(data)
        .replace("{SESSION}", &session)
        .replace("{CSRF}", &csrf)
        .replace("{NONCE}", &format!("n_{}", "a".repeat(64)))
        .replace("{KEY}", &mine)
        .replace("{OTHER}", &theirs);
    let Some(request) = parse(&text) else {
        return false;
    };
    let authorised = text.contains(&format!("credstore_dashboard={session}")) && text.contains(&csrf);
    let before = store.last_seq();
    let app = axum::Router::new().nest(
        "/dashboard",
        credstore::dashboard::router(Arc::clone(&store), DashboardConfig::default()),
    );
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        panic!("no runtime");
    };
    let (status, set_cookie, body) = runtime.block_on(async {
        let Ok(response) = app.oneshot(request).await;
        let status = response.status();
        let set_cookie: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let body = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap_or_default();
        (status, set_cookie, body)
    });
    assert!(!status.is_server_error(), "{status} for {text:?}");
    if store.last_seq() != before {
        assert!(
            authorised,
            "the store changed without the session's cookie and CSRF token: {text:?}"
        );
    }
    let Ok(other) = store.get(&credstore::KeyId::parse(&theirs).unwrap_or_else(|_| panic!("id"))) else {
        panic!("the other owner's key is gone");
    };
    assert!(other.status == Status::Active && other.record.rotated_to.is_none() && other.record.budget.is_none());
    let shown = String::from_utf8_lossy(&body);
    assert!(!shown.contains(&session), "an answer holds the session token");
    let path = text.lines().next().unwrap_or("");
    for cookie in &set_cookie {
        if cookie.starts_with("credstore_dashboard_reveal=") {
            // A new key on its way to the keys page: sealed, never in clear.
            assert!(!cookie.contains("sk_live_") && !cookie.contains(&session), "{cookie}");
        } else {
            assert!(
                path.contains("/dashboard/enter") || path.contains("/dashboard/signout"),
                "{path}"
            );
        }
    }
    status.as_u16() < 400
}

/// The request the text describes, or none for text that is not one.
fn parse(text: &str) -> Option<Request<Body>> {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let (method, path) = lines.next()?.split_once(' ')?;
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1:8080");
    for line in lines {
        let (name, value) = line.split_once(':')?;
        builder = builder.header(name.trim(), value.trim());
    }
    builder.body(Body::from(body.to_string())).ok()
}
