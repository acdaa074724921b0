//! The customers' dashboard's sessions and security (DESIGN.md, "Usage and the customers'
//! dashboard"), over plain HTTP against the library's router nested at `/dashboard` on a
//! store with a manual clock: a link works once and only before it expires; the cookie is
//! `HttpOnly`, `SameSite=Strict`, `Secure` off loopback; a revoked session sees nothing; a
//! change needs the session's CSRF token and this host's origin; a session sees and changes
//! only its owner's keys; a replayed create is refused; scopes limit the page and the
//! server; every change is logged with the session as actor; the new key is shown once and
//! never in a URL. The CLI and `POST /v1/dashboard/sessions` mint links that work on
//! `serve --dashboard`, through `serve.sock` too.

#![expect(
    clippy::unwrap_used,
    reason = "a test fails by panicking: unwrap, expect and indexing are its assertions"
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use credstore::dashboard::{DashboardConfig, LinkRequest, Scopes};
use credstore::{Code, EventFilter, NewKey, OwnerUpdate, Status, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;

use common::{Cli, Fixture, Sidecar};

/// An answer read whole.
struct Page {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the first `<input name=NAME value=...>` on the page.
    fn input(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} input:\n{}", self.body));
        let rest = &self.body[at + marker.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

/// The dashboard of `store` at `/dashboard`, with a browser's session cookie.
struct Browser {
    app: Router,
    host: &'static str,
    /// The cookies the dashboard set, by name, as a browser keeps them.
    cookies: std::collections::BTreeMap<String, String>,
}

impl Browser {
    fn new(store: &Arc<Store>) -> Browser {
        Browser::with(store, DashboardConfig::default())
    }

    fn with(store: &Arc<Store>, config: DashboardConfig) -> Browser {
        let app = Router::new().nest("/dashboard", credstore::dashboard::router(Arc::clone(store), config));
        Browser {
            app,
            host: "127.0.0.1:8080",
            cookies: std::collections::BTreeMap::new(),
        }
    }

    async fn send(&mut self, method: &str, path: &str, form: &[(&str, &str)], extra: &[(&str, &str)]) -> Page {
        let mut req = Request::builder().method(method).uri(path).header("host", self.host);
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", jar.join("; "));
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let body = if method == "POST" {
            req = req.header("content-type", "application/x-www-form-urlencoded");
            Body::from(serde_urlencoded_pairs(form))
        } else {
            Body::empty()
        };
        let response = self.app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (name, value) = set.split(';').next().unwrap().split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, &[], &[]).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send("POST", path, form, &[]).await
    }

    /// Opens a minted link as a person does: the link's page, then its button.
    async fn enter(&mut self, token: &str) -> Page {
        let landing = self.get(&format!("/dashboard/enter/{token}")).await;
        assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
        self.post("/dashboard/enter", &[("token", token)]).await
    }

    /// The session's cookie, `name=token`.
    fn session_cookie(&self) -> String {
        let token = self.cookies.get("credstore_dashboard").map_or("", String::as_str);
        format!("credstore_dashboard={token}")
    }

    /// The CSRF token of the current session, read from the keys page.
    async fn csrf(&mut self) -> String {
        self.get("/dashboard").await.input("csrf")
    }

    /// Creates a key through the create form; returns the answer.
    async fn create(&mut self, name: &str, extra: &[(&str, &str)]) -> Page {
        let page = self.get("/dashboard").await;
        let (csrf, nonce) = (page.input("csrf"), page.input("nonce"));
        let mut form = vec![("csrf", csrf.as_str()), ("nonce", nonce.as_str()), ("name", name)];
        form.extend_from_slice(extra);
        self.post("/dashboard/keys", &form).await
    }
}

fn serde_urlencoded_pairs(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A store with owners `acme` and `globex`.
fn store() -> (Fixture, Arc<Store>) {
    let fx = Fixture::new();
    let store = fx.init();
    store.set_owner("acme", OwnerUpdate::default()).unwrap();
    store.set_owner("globex", OwnerUpdate::default()).unwrap();
    (fx, Arc::new(store))
}

fn link(store: &Store, owner: &str) -> String {
    store
        .mint_dashboard_link(&LinkRequest::new(owner))
        .unwrap()
        .token
        .expose()
        .to_string()
}

fn kinds(store: &Store) -> Vec<serde_json::Value> {
    store
        .events(&EventFilter::default())
        .unwrap()
        .iter()
        .map(|(seq, e)| e.to_json(*seq))
        .collect()
}

#[tokio::test]
async fn a_link_works_once_and_sets_a_strict_http_only_cookie() {
    let (_fx, store) = store();
    let token = link(&store, "acme");
    let mut browser = Browser::new(&store);
    let entered = browser.enter(&token).await;
    assert_eq!(entered.status, StatusCode::SEE_OTHER);
    assert_eq!(entered.header("location"), "/dashboard");
    let cookie = entered.header("set-cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "loopback has no TLS: {cookie}");
    let page = browser.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("API Keys") && page.body.contains("Your API keys"));

    // Used: a second redemption, from anyone, is refused and starts no session.
    let mut other = Browser::new(&store);
    let again = other.enter(&token).await;
    assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
    assert!(again.headers.get("set-cookie").is_none());
    assert!(again.body.contains("used already"));
    assert_eq!(store.dashboard_sessions().len(), 1);

    // Off loopback the cookie is Secure.
    let mut remote = Browser::new(&store);
    remote.host = "api.example.com";
    let entered = remote.enter(&link(&store, "acme")).await;
    assert!(
        entered.header("set-cookie").contains("; Secure"),
        "{}",
        entered.header("set-cookie")
    );

    // A made-up link is not valid.
    let fake = format!("cdl_{}", "0".repeat(64));
    let refused = Browser::new(&store).enter(&fake).await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_expired_link_is_refused() {
    let (fx, store) = store();
    let token = store
        .mint_dashboard_link(&LinkRequest {
            ttl: Duration::from_secs(15 * 60),
            ..LinkRequest::new("acme")
        })
        .unwrap();
    fx.clock.advance(15 * 60 * 1000);
    let mut browser = Browser::new(&store);
    let page = browser.enter(token.token.expose()).await;
    assert_eq!(page.status, StatusCode::GONE);
    assert!(page.body.contains("expired"), "{}", page.body);
    assert!(store.dashboard_sessions().is_empty());
}

#[tokio::test]
async fn sessions_expire_and_a_revoked_session_sees_and_changes_nothing() {
    let (fx, store) = store();
    let mut browser = Browser::new(&store);
    browser.enter(&link(&store, "acme")).await;
    let page = browser.get("/dashboard").await;
    let (csrf, nonce) = (page.input("csrf"), page.input("nonce"));
    let id = store.dashboard_sessions()[0].id.clone();
    store.revoke_dashboard_session(&id).unwrap();
    let page = browser.get("/dashboard").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("signed out"));
    let create = browser
        .post(
            "/dashboard/keys",
            &[("csrf", &csrf), ("nonce", &nonce), ("name", "late")],
        )
        .await;
    assert_eq!(create.status, StatusCode::UNAUTHORIZED);
    assert!(
        store
            .list(&Default::default())
            .unwrap()
            .iter()
            .all(|k| k.record.name != "late")
    );
    assert!(kinds(&store).iter().any(|e| e["kind"] == "dashboard.session_revoked"));

    // A session ends at its time.
    let mut browser = Browser::new(&store);
    browser.enter(&link(&store, "acme")).await;
    assert_eq!(browser.get("/dashboard").await.status, StatusCode::OK);
    fx.clock.advance(8 * 3600 * 1000);
    assert_eq!(browser.get("/dashboard").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_change_needs_the_sessions_csrf_token_and_this_hosts_origin() {
    let (_fx, store) = store();
    let mut browser = Browser::new(&store);
    browser.enter(&link(&store, "acme")).await;
    let page = browser.get("/dashboard").await;
    let (csrf, nonce) = (page.input("csrf"), page.input("nonce"));
    let before = store.list(&Default::default()).unwrap().len();
    // No token, a wrong one, another session's.
    let mut other = Browser::new(&store);
    other.enter(&link(&store, "acme")).await;
    let others = other.csrf().await;
    for bad in ["", "00", others.as_str()] {
        let page = browser
            .post(
                "/dashboard/keys",
                &[("csrf", bad), ("nonce", &nonce), ("name", "forged")],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "csrf {bad:?}");
    }
    // The right token from another site.
    let page = browser
        .send(
            "POST",
            "/dashboard/keys",
            &[("csrf", &csrf), ("nonce", &nonce), ("name", "forged")],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        store.list(&Default::default()).unwrap().len(),
        before,
        "nothing was created"
    );
    // Revoke and sign out need it too.
    let key = store.create(NewKey::new("mine").owner("acme")).unwrap();
    let path = format!("/dashboard/keys/{}/revoke", key.record.id);
    assert_eq!(
        browser.post(&path, &[("csrf", "nope")]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(store.get(&key.record.id).unwrap().status, Status::Active);
    assert_eq!(
        browser.post("/dashboard/signout", &[("csrf", "nope")]).await.status,
        StatusCode::FORBIDDEN
    );
    // With it, from this host: made.
    let page = browser
        .send(
            "POST",
            "/dashboard/keys",
            &[("csrf", &csrf), ("nonce", &nonce), ("name", "real")],
            &[("origin", "http://127.0.0.1:8080")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
}

#[tokio::test]
async fn a_session_sees_and_changes_only_its_owners_keys() {
    let (_fx, store) = store();
    let theirs = store.create(NewKey::new("globex secret key").owner("globex")).unwrap();
    let unowned = store.create(NewKey::new("operator key")).unwrap();
    let mut browser = Browser::new(&store);
    browser.enter(&link(&store, "acme")).await;
    let page = browser.get("/dashboard").await;
    assert!(!page.body.contains("globex secret key") && !page.body.contains("operator key"));
    let csrf = page.input("csrf");
    for id in [&theirs.record.id, &unowned.record.id] {
        for path in [
            format!("/dashboard/keys/{id}"),
            format!("/dashboard/keys/{id}/revoke"),
            format!("/dashboard/keys/{id}/roll"),
        ] {
            let page = browser.get(&path).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
            assert!(!page.body.contains("secret key"));
        }
        // An edited form with another owner's id: refused, nothing changes.
        for (path, form) in [
            (format!("/dashboard/keys/{id}/revoke"), vec![("csrf", csrf.as_str())]),
            (
                format!("/dashboard/keys/{id}/roll"),
                vec![("csrf", csrf.as_str()), ("grace", "0")],
            ),
            (
                format!("/dashboard/keys/{id}/budget"),
                vec![("csrf", csrf.as_str()), ("cap", "5")],
            ),
        ] {
            let page = browser.post(&path, &form).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.body);
        }
        let info = store.get(id).unwrap();
        assert_eq!(info.status, Status::Active);
        assert!(info.record.rotated_to.is_none() && info.record.budget.is_none());
    }
}

#[tokio::test]
async fn a_replayed_create_is_refused_and_the_key_shows_once() {
    let (_fx, store) = store();
    let mut browser = Browser::new(&store);
    browser.enter(&link(&store, "acme")).await;
    let page = browser.get("/dashboard").await;
    let (csrf, nonce) = (page.input("csrf"), page.input("nonce"));
    let form = [
        ("csrf", csrf.as_str()),
        ("nonce", nonce.as_str()),
        ("name", "my script key"),
    ];
    let made = browser.post("/dashboard/keys", &form).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER);
    let location = made.header("location").to_string();
    assert_eq!(location, "/dashboard");
    let shown = browser.get(&location).await;
    let key = shown.body.split("data-testid=\"new-key\">").nth(1).unwrap();
    let key = &key[..key.find('<').unwrap()];
    assert!(key.starts_with("sk_live_"), "{key}");
    assert_eq!(store.verify(key).unwrap().code, Code::Valid);
    assert!(shown.body.contains("won't be shown again"));
    // Reloaded: gone.
    let reloaded = browser.get("/dashboard").await;
    assert!(!reloaded.body.contains(key));
    // The same form again: refused, nothing more made.
    let replay = browser.post("/dashboard/keys", &form).await;
    assert_eq!(replay.status, StatusCode::CONFLICT);
    let mine = store.list(&Default::default()).unwrap();
    assert_eq!(mine.iter().filter(|k| k.record.name == "my script key").count(), 1);
    // Security headers on every page.
    for page in [&shown, &reloaded, &replay] {
        let csp = page.header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(page.header("cache-control"), "no-store");
        assert_eq!(page.header("referrer-policy"), "same-origin");
    }
    assert!(!shown.body.contains("<script>") && !shown.body.contains(" style=\""));
}

#[tokio::test]
async fn the_new_key_reaches_the_keys_page_of_another_host_once_sealed_to_its_session() {
    let (fx, store) = store();
    // Two routers: two hosts behind a load balancer, nothing shared but the store's pepper.
    let mut here = Browser::new(&store);
    here.enter(&link(&store, "acme")).await;
    let made = here.create("balanced", &[]).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER);
    let set = made.header("set-cookie").to_string();
    assert!(
        set.starts_with("credstore_dashboard_reveal=") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let sealed = here.cookies["credstore_dashboard_reveal"].clone();
    let mut there = Browser::new(&store);
    there.cookies = here.cookies.clone();
    let shown = there.get("/dashboard").await;
    let key = shown
        .body
        .split("data-testid=\"new-key\">")
        .nth(1)
        .expect("the key is shown");
    let key = &key[..key.find('<').unwrap()];
    assert_eq!(store.verify(key).unwrap().code, Code::Valid);
    assert!(
        !sealed.contains(key) && !set.contains(key),
        "the cookie holds the key sealed"
    );
    assert!(
        !there.cookies.contains_key("credstore_dashboard_reveal"),
        "shown once, then cleared"
    );
    assert!(!there.get("/dashboard").await.body.contains(key));
    // The sealed cookie opens for its own session only, and not once it is edited.
    let mut other = Browser::new(&store);
    other.enter(&link(&store, "acme")).await;
    other
        .cookies
        .insert("credstore_dashboard_reveal".into(), sealed.clone());
    assert!(!other.get("/dashboard").await.body.contains("data-testid=\"new-key\""));
    let mut edited = sealed.clone().into_bytes();
    let last = edited.len() - 1;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    here.cookies
        .insert("credstore_dashboard_reveal".into(), String::from_utf8(edited).unwrap());
    assert!(!here.get("/dashboard").await.body.contains("data-testid=\"new-key\""));
    // Nor after its two minutes.
    here.cookies.insert("credstore_dashboard_reveal".into(), sealed);
    fx.clock.advance(121_000);
    assert!(!here.get("/dashboard").await.body.contains("data-testid=\"new-key\""));
}

#[tokio::test]
async fn scopes_limit_what_the_page_offers_and_what_the_server_accepts() {
    let (_fx, store) = store();
    let key = store.create(NewKey::new("existing").owner("acme")).unwrap();
    let read_only = store
        .mint_dashboard_link(&LinkRequest {
            scopes: Scopes::KEYS_READ,
            ..LinkRequest::new("acme")
        })
        .unwrap();
    let mut browser = Browser::new(&store);
    browser.enter(read_only.token.expose()).await;
    let page = browser.get("/dashboard").await;
    assert!(page.body.contains("existing"));
    assert!(!page.body.contains("Create new API key") && !page.body.contains(">Revoke"));
    let csrf = page.input("csrf");
    // The forms a read-only session is not shown, sent anyway: refused.
    let nonce = format!("n_{}", "1".repeat(64));
    let create = browser
        .post(
            "/dashboard/keys",
            &[("csrf", &csrf), ("nonce", &nonce), ("name", "nope")],
        )
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN, "{}", create.body);
    let id = key.record.id.to_string();
    let revoke = browser
        .post(&format!("/dashboard/keys/{id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(revoke.status, StatusCode::FORBIDDEN);
    let budget = browser
        .post(
            &format!("/dashboard/keys/{id}/budget"),
            &[("csrf", &csrf), ("cap", "9")],
        )
        .await;
    assert_eq!(budget.status, StatusCode::FORBIDDEN);
    assert_eq!(store.get(&key.record.id).unwrap().status, Status::Active);
    let detail = browser.get(&format!("/dashboard/keys/{id}")).await;
    assert!(detail.body.contains("may not see usage"));

    // Create only: no table, but the form.
    let create_only = store
        .mint_dashboard_link(&LinkRequest {
            scopes: Scopes::KEYS_CREATE,
            ..LinkRequest::new("acme")
        })
        .unwrap();
    let mut browser = Browser::new(&store);
    browser.enter(create_only.token.expose()).await;
    let page = browser.get("/dashboard").await;
    assert!(page.body.contains("Create new API key") && !page.body.contains("Your API keys"));
    assert_eq!(
        browser.get(&format!("/dashboard/keys/{id}")).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn every_change_is_logged_with_the_session_as_its_actor_and_no_token_in_clear() {
    let (fx, store) = store();
    let token = link(&store, "acme");
    let mut browser = Browser::new(&store);
    browser.enter(&token).await;
    let session = store.dashboard_sessions()[0].id.clone();
    assert_eq!(
        browser.create("logged", &[("budget", "50")]).await.status,
        StatusCode::SEE_OTHER
    );
    let id = store
        .list(&Default::default())
        .unwrap()
        .into_iter()
        .find(|k| k.record.name == "logged")
        .unwrap()
        .record
        .id;
    assert_eq!(store.get(&id).unwrap().owner.as_deref(), Some("acme"));
    let csrf = browser.csrf().await;
    let page = browser
        .post(
            &format!("/dashboard/keys/{id}/budget"),
            &[("csrf", &csrf), ("cap", "80")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = browser
        .post(
            &format!("/dashboard/keys/{id}/roll"),
            &[("csrf", &csrf), ("grace", "1h")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let new_id = store.get(&id).unwrap().record.rotated_to.unwrap();
    let page = browser
        .post(&format!("/dashboard/keys/{new_id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(store.get(&new_id).unwrap().status, Status::Revoked);

    let events = kinds(&store);
    let changes: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["kind"] == "dashboard.change")
        .map(|e| {
            assert_eq!(e["details"]["actor"]["session"], session.as_str());
            assert_eq!(e["details"]["actor"]["owner"], "acme");
            (
                e["details"]["action"].as_str().unwrap().to_string(),
                e["details"]["key_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("key.created".to_string(), id.to_string()),
            ("key.updated".to_string(), id.to_string()),
            ("key.rotated".to_string(), new_id.to_string()),
            ("key.revoked".to_string(), new_id.to_string()),
        ]
    );
    for kind in ["dashboard.link_minted", "dashboard.session_started"] {
        assert!(events.iter().any(|e| e["kind"] == kind), "{kind}");
    }
    // Neither token is anywhere under DATA, nor in any event shown.
    let cookie = browser.session_cookie();
    let session_token = cookie.split_once('=').unwrap().1.to_string();
    let shown = serde_json::to_string(&events).unwrap();
    assert!(!shown.contains(&token) && !shown.contains(&session_token));
    store.flush().unwrap();
    for entry in walk(&fx.path) {
        let bytes = std::fs::read(&entry).unwrap();
        for secret in [&token, &session_token] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a token in clear",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_roll_with_grace_counts_against_the_bound_and_admin_keys_are_never_the_dashboards() {
    let (_fx, store) = store();
    let one = store.create(NewKey::new("one").owner("acme")).unwrap();
    store.create(NewKey::new("two").owner("acme")).unwrap();
    let admin = store
        .create(
            NewKey::new("ops")
                .owner("acme")
                .role(credstore::policy::RoleName::parse("admin").unwrap()),
        )
        .unwrap();
    let mut browser = Browser::new(&store);
    browser.enter(&link(&store, "acme")).await;
    let cookie = browser.session_cookie();
    let token = cookie.split_once('=').unwrap().1;
    // The old key lives on through the grace: a third live key, over a bound of three
    // (the admin key counts: it is the owner's).
    let hour = Some(Duration::from_secs(3600));
    let refused = store.session_rotate(token, &one.record.id, hour, Some(3)).unwrap_err();
    assert!(
        refused.to_string().contains("the most the dashboard allows"),
        "{refused}"
    );
    // Without a grace the old key goes at once: no more keys than before.
    store.session_rotate(token, &one.record.id, None, Some(3)).unwrap();
    // An admin key, even the owner's, is no key to the dashboard: not rolled, not revoked,
    // not shown.
    let id = &admin.record.id;
    let err = store.session_rotate(token, id, None, None).unwrap_err();
    assert!(err.to_string().contains(&id.to_string()), "{err}");
    assert!(store.session_revoke(token, id).is_err());
    assert_eq!(store.get(id).unwrap().record.status_at(store.now_ms()), Status::Active);
}

#[tokio::test]
async fn keys_per_owner_creates_per_minute_and_budget_caps_are_bounded() {
    let (_fx, store) = store();
    let config = DashboardConfig {
        max_keys_per_owner: 3,
        creates_per_minute: 2,
        max_budget: Some(1000),
        ..DashboardConfig::default()
    };
    let mut browser = Browser::with(&store, config);
    browser.enter(&link(&store, "acme")).await;
    // Over the cap the owner may give: refused, nothing made.
    let page = browser.create("too rich", &[("budget", "1001")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("at most 1000"), "{}", page.body);
    assert_eq!(browser.create("a", &[]).await.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.create("b", &[]).await.status, StatusCode::SEE_OTHER);
    let third = browser.create("c", &[]).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    // The per-owner bound counts unrevoked keys, in the store's commit.
    store.create(NewKey::new("made by the host").owner("acme")).unwrap();
    let session = browser.session_cookie();
    let token = session.split_once('=').unwrap().1;
    let refused = store.session_create(token, NewKey::new("d"), Some(3)).unwrap_err();
    assert!(
        refused.to_string().contains("the most the dashboard allows"),
        "{refused}"
    );
    // Another owner's id cannot be slipped in: the session's owner is forced.
    let new = NewKey::new("e").owner("globex");
    let made = store.session_create(token, new, None).unwrap();
    assert_eq!(store.get(&made.record.id).unwrap().owner.as_deref(), Some("acme"));
}

#[test]
fn links_minted_by_the_cli_and_the_api_open_the_served_dashboard() {
    let (cli, admin) = Cli::init_with_admin();
    cli.ok(&["owner", "set", "acme"]);
    // Without a server: the CLI opens the store itself.
    let minted = cli.json(&[
        "dashboard",
        "link",
        "acme",
        "--ttl",
        "10m",
        "--scope",
        "keys:read",
        "--json",
    ]);
    let offline = minted["url"].as_str().unwrap().to_string();
    assert!(offline.starts_with("/dashboard/enter/cdl_"), "{offline}");
    assert!(minted["expires_at"].as_str().unwrap().ends_with('Z'));
    let bad = cli.run(&["dashboard", "link", "acme", "--scope", "keys:write"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let missing = cli.run(&["dashboard", "link", "nobody"]);
    assert_ne!(missing.code, Some(0));

    let server = Sidecar::start_with(&cli, &["--dashboard", "--dashboard-name", "Acme Cloud"]);
    // Through serve.sock while it runs.
    let served = cli.json(&["dashboard", "link", "acme", "--json"]);
    let through_socket = served["url"].as_str().unwrap().to_string();
    let api = common::http(
        server.addr,
        "POST",
        "/v1/dashboard/sessions",
        Some(&format!("Bearer {admin}")),
        Some(&serde_json::json!({ "owner": "acme", "ttl": "5m" })),
    )
    .unwrap();
    assert_eq!(api.status, 201, "{:?}", api.body);
    let from_api = api.body["data"]["url"].as_str().unwrap().to_string();
    assert!(
        from_api.starts_with("http://localhost/dashboard/enter/cdl_"),
        "{from_api}"
    );
    let refused = common::http(
        server.addr,
        "POST",
        "/v1/dashboard/sessions",
        None,
        Some(&serde_json::json!({ "owner": "acme" })),
    )
    .unwrap();
    assert_eq!(refused.status, 401);

    for url in [&offline, &through_socket, &from_api] {
        let path = url.trim_start_matches("http://localhost");
        let page = raw_get(server.addr, path);
        assert!(page.starts_with("HTTP/1.1 200"), "{path}: {page}");
        assert!(
            page.contains("Acme Cloud") && page.contains("Continue to API Keys"),
            "{page}"
        );
    }
    let sessions = cli.json(&["dashboard", "sessions", "--json"]);
    assert_eq!(
        sessions.as_array().unwrap().len(),
        0,
        "opening a link's page uses nothing"
    );
    // The request log names the link's path with its token cut to a short start.
    let (_, log) = server.stop();
    assert!(log.contains("/dashboard/enter/"), "{log}");
    for url in [&offline, &through_socket, &from_api] {
        let token = url.rsplit('/').next().unwrap();
        assert!(!log.contains(token), "a link token in the log:\n{log}");
    }
}

/// GET `path` from the sidecar, the whole answer as text.
fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn the_key_page_charts_thirty_days_of_usage_by_outcome_from_the_store() {
    let (fx, store) = store();
    let key = store
        .create(
            NewKey::new("charted")
                .owner("acme")
                .budget(credstore::Budget::new(2, credstore::Period::Monthly { anchor_day: 1 }).unwrap()),
        )
        .unwrap();
    // Two days ago: two valid requests; today: one valid, one over budget.
    let budget_id = key.record.id.clone();
    store.verify(key.key.expose()).unwrap();
    // Counts reach the usage buckets at each flush (every flush interval in a server).
    store.flush().unwrap();
    fx.clock.advance(2 * 86_400_000);
    let mut browser = Browser::new(&store);
    browser.enter(&link(&store, "acme")).await;
    let page = browser.get(&format!("/dashboard/keys/{budget_id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        page.body.matches("<title>").count(),
        1 + 30,
        "the page's title and one per day"
    );
    assert!(
        page.body.contains("over the last 30 days: 1 valid, 0 denied"),
        "{}",
        page.body
    );
    store.verify(key.key.expose()).unwrap();
    assert_eq!(store.verify(key.key.expose()).unwrap().code, Code::BudgetExhausted);
    store.flush().unwrap();
    let page = browser.get(&format!("/dashboard/keys/{budget_id}")).await;
    assert!(
        page.body.contains("over the last 30 days: 2 valid, 1 denied"),
        "{}",
        page.body
    );
    // Today's bar, the last one, says what happened today.
    let last = page.body.rsplit("<title>").next().unwrap();
    assert!(last.contains(": 1 valid, 1 denied, 0 rate limited"), "{last}");
    assert!(page.body.contains("role=\"meter\""), "the budget bar");
}

#[tokio::test]
async fn the_chart_marks_the_day_of_an_anomaly_with_its_reason() {
    let (_fx, store) = store();
    let key = store.create(NewKey::new("retired").owner("acme")).unwrap();
    let id = key.record.id.clone();
    let mut browser = Browser::new(&store);
    browser.enter(&link(&store, "acme")).await;
    let quiet = browser.get(&format!("/dashboard/keys/{id}")).await;
    assert_eq!(quiet.status, StatusCode::OK, "{}", quiet.body);
    assert!(!quiet.body.contains("class=\"anomaly\""), "nothing to mark yet");
    // A revoked key still presented: one `dead_key_presented` episode.
    store.revoke(&id, Some("retired")).unwrap();
    assert_eq!(store.verify(key.key.expose()).unwrap().code, Code::Revoked);
    assert_eq!(store.check_anomalies().unwrap(), 1);
    store.flush().unwrap();
    let page = browser.get(&format!("/dashboard/keys/{id}")).await;
    assert_eq!(page.body.matches("class=\"anomaly\"").count(), 1, "{}", page.body);
    // Today's bar, the last one, names it.
    let last = page.body.rsplit("<title>").next().unwrap();
    assert!(last.contains("anomaly: dead key presented"), "{last}");
}
