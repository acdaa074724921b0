//! The dashboard as an axum [`Router`] a host nests under any path
//! (`Router::new().nest("/dashboard", credstore::dashboard::router(store, config))`).
//!
//! Every answer is `Cache-Control: no-store`, carries a Content-Security-Policy without
//! inline script or style (`frame-ancestors` from the config) and `Referrer-Policy:
//! same-origin`. Every change is a POST with the session's CSRF token (derived from the
//! session token, compared in constant time) and, when the browser sends them, an `Origin`
//! of this host and no cross-site `Sec-Fetch-Site`. A new key is never put in a URL: the
//! create answers 303 to the keys page with the key in a sealed cookie (XChaCha20-Poly1305
//! under a key derived from the store's pepper and the session token, bound to the session
//! id, kept two minutes), which that page shows and clears, so a reload shows it no more
//! and any host of a fleet can show it.

#![expect(
    clippy::result_large_err,
    reason = "the early answers of a page's checks are whole Responses; boxing them buys nothing per page"
)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, OriginalUri, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;

use super::page::{self, Chrome, KeyView, KeysView};
use super::{Session, chart};
use crate::error::{Error, StateError};
use crate::limits::{Budget, Period};
use crate::record::{Expiry, KeyId, NewKey};
use crate::secret::Secret;
use crate::token::{Env, Format};
use crate::{KeyInfo, Store};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "credstore_dashboard";

/// How the host dresses and bounds the dashboard.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The host's product name, shown in the sidebar and titles.
    pub host_name: String,
    /// The host's logo (an `https://` URL or a path on the host), shown beside the name.
    pub logo_url: Option<String>,
    /// The accent colour, `#rgb` or `#rrggbb` (anything else falls back to the default).
    pub accent: String,
    /// The pages that may frame the dashboard (CSP `frame-ancestors`); empty: none.
    pub frame_ancestors: Vec<String>,
    /// The most unrevoked keys an owner may have (creating more is refused).
    pub max_keys_per_owner: u32,
    /// The most keys an owner may create per minute (on this host).
    pub creates_per_minute: u32,
    /// The most a key's monthly budget may be set to, for an owner without a budget of its
    /// own (an owner with one is bounded by its cap). `None`: no bound.
    pub max_budget: Option<u64>,
    /// The formats keys are created in: live, and test when the host offers it.
    pub live_format: Format,
    /// See [`DashboardConfig::live_format`]; `None`: no environment choice.
    pub test_format: Option<Format>,
    /// Whether the cookie is `Secure`: `None` decides by the request's host (not on
    /// loopback, where there is no TLS), `Some` forces it.
    pub secure_cookie: Option<bool>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            host_name: "API".into(),
            logo_url: None,
            accent: "#4f46e5".into(),
            frame_ancestors: Vec::new(),
            max_keys_per_owner: 25,
            creates_per_minute: 10,
            max_budget: None,
            live_format: Format::default_for(Env::Live),
            test_format: Some(Format::default_for(Env::Test)),
            secure_cookie: None,
        }
    }
}

/// The dashboard's routes, to nest under any path. `store` is the host's store.
pub fn router(store: Arc<Store>, config: DashboardConfig) -> Router {
    let csp = content_security_policy(&config);
    let dash = Arc::new(Dash {
        store,
        css: super::assets::CSS.replace("__ACCENT__", &accent(&config.accent)),
        cfg: config,
        nonces: Mutex::new(HashMap::new()),
        creates: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(keys_page))
        .route("/enter/{token}", get(enter_page))
        .route("/enter", post(enter))
        .route("/signout", post(sign_out))
        .route("/keys", post(create_key))
        .route("/keys/{id}", get(key_page))
        .route("/keys/{id}/revoke", get(confirm_revoke).post(revoke_key))
        .route("/keys/{id}/roll", get(confirm_roll).post(roll_key))
        .route("/keys/{id}/budget", post(set_budget))
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
        .fallback(not_found)
        .with_state(dash)
        .layer(middleware::from_fn_with_state(Arc::new(csp), security_headers))
}

/// The router's state.
struct Dash {
    store: Arc<Store>,
    cfg: DashboardConfig,
    css: String,
    /// Create forms' one-time values already used (a replayed create is refused), with
    /// when they were used; forgotten after [`NONCE_KEPT`].
    nonces: Mutex<HashMap<String, Instant>>,
    /// Recent creates per owner, for [`DashboardConfig::creates_per_minute`].
    creates: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// A key just made, on its way to the keys page that shows it once.
struct Slot {
    key: Secret,
    name: String,
    rolled: bool,
}

/// The cookie that carries a key just made to the keys page (sealed: [`seal_reveal`]).
const REVEAL_COOKIE: &str = "credstore_dashboard_reveal";
/// How long a key waits in its cookie for the keys page, ms (and the cookie's `Max-Age`).
const REVEAL_KEPT_MS: i64 = 120_000;
/// How long a used create nonce is remembered (a form older than this is refused anyway:
/// its nonce is older than [`NONCE_KEPT`]).
const NONCE_KEPT: Duration = Duration::from_secs(3600);

/// A request's signed-in context: the session, its token (for the store's calls), its
/// CSRF token, and where the dashboard is mounted.
struct Ctx {
    base: String,
    session: Option<Session>,
    token: Option<Secret>,
    csrf: String,
    secure: bool,
    /// The sealed key the create or roll before this request left ([`REVEAL_COOKIE`]).
    reveal: Option<String>,
}

impl Ctx {
    fn new(dash: &Dash, original: &OriginalUri, uri: &axum::http::Uri, headers: &HeaderMap) -> Ctx {
        let base = mount_base(original.0.path(), uri.path());
        let token = cookie(headers, COOKIE_NAME).map(Secret::new);
        let session = token
            .as_ref()
            .and_then(|t| dash.store.dashboard_session(t.expose()).ok());
        let token = token.filter(|_| session.is_some());
        let csrf = token.as_ref().map_or_else(String::new, |t| csrf_token(t.expose()));
        let secure = dash.cfg.secure_cookie.unwrap_or_else(|| !loopback_host(headers));
        let reveal = cookie(headers, REVEAL_COOKIE);
        Ctx {
            base,
            session,
            token,
            csrf,
            secure,
            reveal,
        }
    }

    fn chrome<'a>(&'a self, dash: &'a Dash) -> Chrome<'a> {
        Chrome {
            cfg: &dash.cfg,
            base: &self.base,
            session: self.session.as_ref(),
            csrf: &self.csrf,
        }
    }

    /// The session and its token, or the signed-out page.
    fn signed_in(&self, dash: &Dash) -> Result<(&Session, &str), Response> {
        match (&self.session, &self.token) {
            (Some(s), Some(t)) => Ok((s, t.expose())),
            _ => Err(html(
                StatusCode::UNAUTHORIZED,
                &page::message_page(
                    &self.chrome(dash),
                    "You are signed out",
                    "Your session has ended or was revoked. Open a new link from your account to manage your API keys.",
                ),
            )),
        }
    }

    /// Checks a change's CSRF token and origin.
    fn check_change(&self, dash: &Dash, headers: &HeaderMap, csrf: &str) -> Result<(&Session, &str), Response> {
        let (session, token) = self.signed_in(dash)?;
        let same_origin = origin_matches(headers);
        let csrf_ok = blake3::hash(csrf.as_bytes()) == blake3::hash(self.csrf.as_bytes());
        if !same_origin || !csrf_ok {
            return Err(html(
                StatusCode::FORBIDDEN,
                &page::message_page(
                    &self.chrome(dash),
                    "This form has expired",
                    "The request did not come from this page (its security token does not match). Nothing was changed: go back, reload and try again.",
                ),
            ));
        }
        Ok((session, token))
    }

    fn redirect_home(&self) -> Response {
        see_other(&super::page::home(&self.base))
    }

    /// Where the dashboard's cookies apply: its mount path.
    fn cookie_path(&self) -> String {
        if self.base.is_empty() {
            "/".to_string()
        } else {
            self.base.clone()
        }
    }

    /// The keys page after a create or roll, carrying the new key in the sealed cookie
    /// the page shows it from, once.
    fn redirect_revealing(&self, dash: &Dash, token: &str, session: &Session, slot: &Slot) -> Response {
        let mut response = self.redirect_home();
        if let Some(sealed) = seal_reveal(dash, token, &session.id, slot) {
            let cookie = format!(
                "{REVEAL_COOKIE}={sealed}; Path={}; Max-Age={}; HttpOnly; SameSite=Strict{}",
                self.cookie_path(),
                REVEAL_KEPT_MS / 1000,
                if self.secure { "; Secure" } else { "" }
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(SET_COOKIE, value);
            }
        }
        response
    }
}

// ---------------------------------------------------------------------------------------
// Handlers

async fn keys_page(State(dash): State<Arc<Dash>>, original: OriginalUri, req: Request) -> Response {
    let ctx = Ctx::new(&dash, &original, req.uri(), req.headers());
    render_keys(&dash, &ctx, StatusCode::OK, None, None).await
}

async fn render_keys(
    dash: &Arc<Dash>,
    ctx: &Ctx,
    status: StatusCode,
    error: Option<&str>,
    notice: Option<&str>,
) -> Response {
    let (session, token) = match ctx.signed_in(dash) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let slot = ctx
        .reveal
        .as_deref()
        .and_then(|sealed| open_reveal(dash, token, &session.id, sealed));
    let keys = if session.scopes.contains(super::Scopes::KEYS_READ) {
        let store = Arc::clone(&dash.store);
        let token = token.to_string();
        match blocking(move || store.session_keys(&token)).await {
            Ok(keys) => Some(keys),
            Err(e) => return error_page(dash, ctx, &e),
        }
    } else {
        None
    };
    let nonce = super::new_token("n_");
    let view = KeysView {
        keys: keys.as_deref(),
        revealed: slot.as_ref().map(|s| page::Revealed {
            key: s.key.expose(),
            name: &s.name,
            rolled: s.rolled,
        }),
        error,
        notice,
        nonce: nonce.expose(),
        max_budget: max_budget(dash, &session.owner),
        environments: dash.cfg.test_format.is_some(),
    };
    let mut response = html(status, &page::keys_page(&ctx.chrome(dash), &view));
    if ctx.reveal.is_some() {
        // Shown once (or stale, or not this session's): the browser forgets it.
        let expire = format!(
            "{REVEAL_COOKIE}=; Path={}; Max-Age=0; HttpOnly; SameSite=Strict",
            ctx.cookie_path()
        );
        if let Ok(value) = HeaderValue::from_str(&expire) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

async fn enter_page(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    let ctx = Ctx::new(&dash, &original, req.uri(), req.headers());
    if !super::well_formed(&token, super::LINK_PREFIX) {
        return html(
            StatusCode::NOT_FOUND,
            &page::message_page(
                &ctx.chrome(&dash),
                "This link is not valid",
                "Ask for a new link from your account.",
            ),
        );
    }
    html(StatusCode::OK, &page::enter_page(&ctx.chrome(&dash), &token))
}

#[derive(Deserialize)]
struct EnterForm {
    token: String,
}

async fn enter(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Form(form): Form<EnterForm>,
) -> Response {
    let ctx = Ctx::new(&dash, &original, &uri, &headers);
    if !origin_matches(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            &page::message_page(
                &ctx.chrome(&dash),
                "This link is not valid",
                "Open the link itself in your browser.",
            ),
        );
    }
    let store = Arc::clone(&dash.store);
    let started = match blocking(move || store.redeem_dashboard_link(&form.token)).await {
        Ok(s) => s,
        Err(e) => return error_page(&dash, &ctx, &e),
    };
    let max_age = (started.session.expires_at - dash.store.now_ms()).max(0) / 1000;
    let path = ctx.cookie_path();
    let cookie = format!(
        "{COOKIE_NAME}={}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        started.token.expose(),
        if ctx.secure { "; Secure" } else { "" }
    );
    let mut response = ctx.redirect_home();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn sign_out(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Form(form): Form<CsrfForm>,
) -> Response {
    let ctx = Ctx::new(&dash, &original, &uri, &headers);
    let token = match ctx.check_change(&dash, &headers, &form.csrf) {
        Ok((_, token)) => token.to_string(),
        Err(r) => return r,
    };
    let store = Arc::clone(&dash.store);
    if let Err(e) = blocking(move || store.end_dashboard_session(&token)).await {
        return error_page(&dash, &ctx, &e);
    }
    let path = ctx.cookie_path();
    let secure = if ctx.secure { "; Secure" } else { "" };
    let signed_out = Ctx {
        session: None,
        token: None,
        ..ctx
    };
    let mut response = html(
        StatusCode::OK,
        &page::message_page(
            &signed_out.chrome(&dash),
            "You are signed out",
            "Open a new link from your account to manage your API keys again.",
        ),
    );
    let expire = format!("{COOKIE_NAME}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}");
    if let Ok(value) = HeaderValue::from_str(&expire) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct CreateForm {
    csrf: String,
    nonce: String,
    name: String,
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    budget: Option<String>,
    #[serde(default)]
    expires: Option<String>,
}

async fn create_key(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Form(form): Form<CreateForm>,
) -> Response {
    let ctx = Ctx::new(&dash, &original, &uri, &headers);
    let (session, token) = match ctx.check_change(&dash, &headers, &form.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let new = match new_key(&dash, session, &form) {
        Ok(new) => new,
        Err(message) => return render_keys(&dash, &ctx, StatusCode::BAD_REQUEST, Some(&message), None).await,
    };
    // The rate first, then the nonce: only admitted forms are remembered, so made-up
    // nonces cannot fill the host's memory faster than the creates-per-minute bound.
    if !admit_create(&dash, &session.owner) {
        return too_many_creates(&dash, &ctx).await;
    }
    if !first_use(&dash, &session.id, &form.nonce) {
        return render_keys(
            &dash,
            &ctx,
            StatusCode::CONFLICT,
            Some("This form was sent already; nothing more was created."),
            None,
        )
        .await;
    }
    let store = Arc::clone(&dash.store);
    let token_owned = token.to_string();
    let max = dash.cfg.max_keys_per_owner;
    match blocking(move || store.session_create(&token_owned, new, Some(max))).await {
        Ok(created) => ctx.redirect_revealing(
            &dash,
            token,
            session,
            &Slot {
                key: created.key,
                name: created.record.name,
                rolled: false,
            },
        ),
        Err(e @ Error::Input(_)) => render_keys(&dash, &ctx, StatusCode::BAD_REQUEST, Some(&e.to_string()), None).await,
        Err(e @ Error::State(StateError::OwnerKeyLimit { .. })) => {
            render_keys(&dash, &ctx, StatusCode::CONFLICT, Some(&e.to_string()), None).await
        }
        Err(e) => error_page(&dash, &ctx, &e),
    }
}

async fn key_page(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let ctx = Ctx::new(&dash, &original, req.uri(), req.headers());
    let key = match owned_key(&dash, &ctx, &id).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let budget = dash.store.key_budget(&key.record.id).ok().flatten();
    let usage_read = ctx
        .session
        .as_ref()
        .is_some_and(|s| s.scopes.contains(super::Scopes::USAGE_READ));
    let (chart, note) = if usage_read {
        usage_chart(&dash, &key).await
    } else {
        (None, Some("This session may not see usage."))
    };
    let owner = ctx.session.as_ref().map(|s| s.owner.clone()).unwrap_or_default();
    let view = KeyView {
        key: &key,
        budget: budget.as_ref(),
        chart,
        chart_note: note,
        max_budget: max_budget(&dash, &owner),
    };
    html(StatusCode::OK, &page::key_page(&ctx.chrome(&dash), &view))
}

async fn confirm_revoke(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let ctx = Ctx::new(&dash, &original, req.uri(), req.headers());
    match owned_key(&dash, &ctx, &id).await {
        Ok(k) => html(StatusCode::OK, &page::confirm_revoke(&ctx.chrome(&dash), &k)),
        Err(r) => r,
    }
}

async fn revoke_key(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let ctx = Ctx::new(&dash, &original, &uri, &headers);
    let token = match ctx.check_change(&dash, &headers, &form.csrf) {
        Ok((_, token)) => token.to_string(),
        Err(r) => return r,
    };
    let Ok(id) = KeyId::parse(&id) else {
        return error_page(&dash, &ctx, &StateError::UnknownKey(String::new()).into());
    };
    let store = Arc::clone(&dash.store);
    match blocking(move || store.session_revoke(&token, &id)).await {
        Ok(_) => ctx.redirect_home(),
        Err(e) => error_page(&dash, &ctx, &e),
    }
}

async fn confirm_roll(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let ctx = Ctx::new(&dash, &original, req.uri(), req.headers());
    match owned_key(&dash, &ctx, &id).await {
        Ok(k) => html(StatusCode::OK, &page::confirm_roll(&ctx.chrome(&dash), &k)),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct RollForm {
    csrf: String,
    #[serde(default)]
    grace: Option<String>,
}

async fn roll_key(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Form(form): Form<RollForm>,
) -> Response {
    let ctx = Ctx::new(&dash, &original, &uri, &headers);
    let (session, token) = match ctx.check_change(&dash, &headers, &form.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let grace = match form.grace.as_deref().unwrap_or("0") {
        "0" | "" => None,
        "1h" => Some(Duration::from_secs(3600)),
        "24h" => Some(Duration::from_secs(24 * 3600)),
        "7d" => Some(Duration::from_secs(7 * 24 * 3600)),
        _ => {
            return render_keys(
                &dash,
                &ctx,
                StatusCode::BAD_REQUEST,
                Some("Choose a grace period from the list."),
                None,
            )
            .await;
        }
    };
    let Ok(id) = KeyId::parse(&id) else {
        return error_page(&dash, &ctx, &StateError::UnknownKey(String::new()).into());
    };
    // A roll makes a key as a create does (and with a grace period keeps the old one
    // live): the same bounds.
    if !admit_create(&dash, &session.owner) {
        return too_many_creates(&dash, &ctx).await;
    }
    let store = Arc::clone(&dash.store);
    let token_owned = token.to_string();
    let max = dash.cfg.max_keys_per_owner;
    match blocking(move || store.session_rotate(&token_owned, &id, grace, Some(max))).await {
        Ok(rotated) => ctx.redirect_revealing(
            &dash,
            token,
            session,
            &Slot {
                key: rotated.new.key,
                name: rotated.new.record.name,
                rolled: true,
            },
        ),
        Err(e) => error_page(&dash, &ctx, &e),
    }
}

#[derive(Deserialize)]
struct BudgetForm {
    csrf: String,
    cap: String,
}

async fn set_budget(
    State(dash): State<Arc<Dash>>,
    original: OriginalUri,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    Form(form): Form<BudgetForm>,
) -> Response {
    let ctx = Ctx::new(&dash, &original, &uri, &headers);
    let (session, token) = match ctx.check_change(&dash, &headers, &form.csrf) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let cap = match parse_cap(&dash, &session.owner, &form.cap) {
        Ok(Some(cap)) => cap,
        Ok(None) => return render_keys(&dash, &ctx, StatusCode::BAD_REQUEST, Some("Give a cap."), None).await,
        Err(message) => return render_keys(&dash, &ctx, StatusCode::BAD_REQUEST, Some(&message), None).await,
    };
    let Ok(key) = KeyId::parse(&id) else {
        return error_page(&dash, &ctx, &StateError::UnknownKey(String::new()).into());
    };
    let store = Arc::clone(&dash.store);
    let token = token.to_string();
    let budget = Budget {
        cap,
        period: Period::Monthly { anchor_day: 1 },
    };
    let target = key.clone();
    match blocking(move || store.session_set_budget(&token, &target, Some(budget))).await {
        Ok(_) => see_other(&format!("{}/keys/{key}", ctx.base)),
        Err(e) => error_page(&dash, &ctx, &e),
    }
}

async fn css(State(dash): State<Arc<Dash>>) -> Response {
    let mut r = dash.css.clone().into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    r
}

async fn js() -> Response {
    let mut r = super::assets::JS.into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    r
}

async fn not_found(State(dash): State<Arc<Dash>>, original: OriginalUri, req: Request) -> Response {
    let ctx = Ctx::new(&dash, &original, req.uri(), req.headers());
    html(
        StatusCode::NOT_FOUND,
        &page::message_page(&ctx.chrome(&dash), "Not found", "There is no such page."),
    )
}

/// Adds the security headers to every answer.
async fn security_headers(State(csp): State<Arc<HeaderValue>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::clone(&csp));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // Same origin only: a link's token (in the path of its page) never reaches another
    // site, and the browser still sends this host's `Origin` on the page's own forms.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    response
}

// ---------------------------------------------------------------------------------------
// Helpers

/// The owner's key `id` for a signed-in session with `keys:read`, or the page that says
/// why not. Another owner's key is "not found", as an id that does not exist.
async fn owned_key(dash: &Arc<Dash>, ctx: &Ctx, id: &str) -> Result<KeyInfo, Response> {
    let (session, _) = ctx.signed_in(dash)?;
    if !session.scopes.contains(super::Scopes::KEYS_READ) {
        return Err(error_page(dash, ctx, &StateError::ScopeMissing("keys:read").into()));
    }
    let not_found = || error_page(dash, ctx, &StateError::UnknownKey(String::new()).into());
    let id = KeyId::parse(id).map_err(|_| not_found())?;
    let store = Arc::clone(&dash.store);
    let found = blocking(move || store.get(&id)).await;
    match found {
        Ok(info) if info.owner.as_deref() == Some(session.owner.as_str()) => Ok(info),
        Ok(_) | Err(Error::State(StateError::UnknownKey(_))) => Err(not_found()),
        Err(e) => Err(error_page(dash, ctx, &e)),
    }
}

/// The days the chart shows.
const CHART_DAYS: i64 = 30;

/// The chart of the key's last 30 days (today included) by outcome, from the store's usage
/// counts ([`Store::usage`]): valid, rate limited, and every other denial.
async fn usage_chart(dash: &Arc<Dash>, key: &KeyInfo) -> (Option<Markup>, Option<&'static str>) {
    const DAY: i64 = 86_400_000;
    let now = dash.store.now_ms();
    let today = now - now.rem_euclid(DAY);
    let query = crate::UsageQuery::new(
        crate::UsageSubject::Key(key.record.id.clone()),
        today - (CHART_DAYS - 1) * DAY,
        today + DAY,
        crate::Granularity::Day,
    );
    let store = Arc::clone(&dash.store);
    let Ok(report) = blocking(move || store.usage(&query)).await else {
        return (None, Some("Usage is not available right now."));
    };
    let days: Vec<chart::Day> = report
        .buckets
        .iter()
        .map(|b| {
            let limited = b.counts.denied.get(&crate::Code::RateLimited).copied().unwrap_or(0);
            let denied: u64 = b.counts.denied.values().sum();
            chart::Day {
                start: b.start,
                valid: b.counts.valid,
                denied: denied.saturating_sub(limited),
                limited,
                anomalies: report
                    .anomalies
                    .iter()
                    .filter(|a| (b.start..b.start + DAY).contains(&a.at))
                    .map(|a| a.anomaly.reason.as_str().replace('_', " "))
                    .collect(),
            }
        })
        .collect();
    (Some(chart::render(&days)), None)
}

/// A create form as the store's request, or what is wrong with it.
fn new_key(dash: &Dash, session: &Session, form: &CreateForm) -> Result<NewKey, String> {
    let name = form.name.trim();
    if name.is_empty() {
        return Err("Give the key a name.".into());
    }
    let mut new = NewKey::new(name);
    new.format = Some(match (form.env.as_deref(), &dash.cfg.test_format) {
        (None | Some("live"), _) => dash.cfg.live_format.clone(),
        (Some("test"), Some(test)) => test.clone(),
        _ => return Err("Choose an environment from the list.".into()),
    });
    if let Some(cap) = parse_cap(dash, &session.owner, form.budget.as_deref().unwrap_or(""))? {
        new.budget = Some(Budget {
            cap,
            period: Period::Monthly { anchor_day: 1 },
        });
    }
    const DAY: i64 = 24 * 3600 * 1000;
    new.expires = match form.expires.as_deref().unwrap_or("") {
        "" => None,
        "7d" => Some(Expiry::In(7 * DAY)),
        "30d" => Some(Expiry::In(30 * DAY)),
        "90d" => Some(Expiry::In(90 * DAY)),
        "365d" => Some(Expiry::In(365 * DAY)),
        _ => return Err("Choose an expiry from the list.".into()),
    };
    Ok(new)
}

/// A budget cap from a form (empty: none), within what the owner allows.
fn parse_cap(dash: &Dash, owner: &str, text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let cap: u64 = text
        .parse()
        .map_err(|_| "The budget cap must be a whole number.".to_string())?;
    if cap == 0 {
        return Err("The budget cap must be at least 1.".into());
    }
    if let Some(max) = max_budget(dash, owner)
        && cap > max
    {
        return Err(format!("The budget cap can be at most {max}."));
    }
    Ok(Some(cap))
}

/// The most a key's budget may be: the owner's own cap when it has one, else the config's.
fn max_budget(dash: &Dash, owner: &str) -> Option<u64> {
    let owners = dash.store.owner(owner).ok().and_then(|o| o.budget.map(|b| b.cap));
    match (owners, dash.cfg.max_budget) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether the owner may create another key now (and counts it).
fn admit_create(dash: &Dash, owner: &str) -> bool {
    let mut creates = lock(&dash.creates);
    let recent = creates.entry(owner.to_string()).or_default();
    let now = Instant::now();
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        recent.pop_front();
    }
    if recent.len() >= usize::try_from(dash.cfg.creates_per_minute).unwrap_or(usize::MAX) {
        return false;
    }
    recent.push_back(now);
    true
}

/// Whether a create form's nonce is used for the first time by this session (and marks
/// it used).
fn first_use(dash: &Dash, session: &str, nonce: &str) -> bool {
    if !super::well_formed(nonce, "n_") {
        return false;
    }
    let mut nonces = lock(&dash.nonces);
    let now = Instant::now();
    nonces.retain(|_, at| now.duration_since(*at) < NONCE_KEPT);
    nonces.insert(format!("{session}/{nonce}"), now).is_none()
}

/// The keys page refusing a create or roll over [`DashboardConfig::creates_per_minute`].
async fn too_many_creates(dash: &Arc<Dash>, ctx: &Ctx) -> Response {
    render_keys(
        dash,
        ctx,
        StatusCode::TOO_MANY_REQUESTS,
        Some("Too many keys created in the last minute: wait a minute and try again."),
        None,
    )
    .await
}

/// A key just made, sealed for the keys page: XChaCha20-Poly1305 under a key derived from
/// the store's pepper and the session token (every host of a fleet derives it; nobody
/// without the session's cookie can), the session id as associated data, a random nonce.
/// Plain text: the time it was made (i64, LE), rolled (1 byte), the name's length (u16, LE),
/// the name, the key. Base64url: nonce (24), cipher text, tag (16).
fn seal_reveal(dash: &Dash, token: &str, session_id: &str, slot: &Slot) -> Option<String> {
    use base64::Engine as _;
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
    let name_len = u16::try_from(slot.name.len()).ok()?;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(11 + slot.name.len() + 64));
    buf.extend_from_slice(&dash.store.now_ms().to_le_bytes());
    buf.push(u8::from(slot.rolled));
    buf.extend_from_slice(&name_len.to_le_bytes());
    buf.extend_from_slice(slot.name.as_bytes());
    buf.extend_from_slice(slot.key.expose().as_bytes());
    let mut nonce = [0u8; 24];
    crate::token::fill_random(&mut nonce);
    let key = dash.store.dashboard_reveal_key(token);
    let tag = XChaCha20Poly1305::new(Key::from_slice(&*key))
        .encrypt_in_place_detached(&XNonce::from(nonce), session_id.as_bytes(), &mut buf)
        .ok()?;
    let mut out = Vec::with_capacity(24 + buf.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
}

/// The key [`seal_reveal`] sealed for this session, if it opens and is not older than
/// [`REVEAL_KEPT_MS`].
fn open_reveal(dash: &Dash, token: &str, session_id: &str, sealed: &str) -> Option<Slot> {
    use base64::Engine as _;
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if bytes.len() < 24 + 11 + 16 {
        return None;
    }
    let (nonce, rest) = bytes.split_at(24);
    let (text, tag) = rest.split_at(rest.len() - 16);
    let mut buf = zeroize::Zeroizing::new(text.to_vec());
    let key = dash.store.dashboard_reveal_key(token);
    XChaCha20Poly1305::new(Key::from_slice(&*key))
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            session_id.as_bytes(),
            &mut buf,
            Tag::from_slice(tag),
        )
        .ok()?;
    let made = i64::from_le_bytes(buf.get(..8)?.try_into().ok()?);
    let age = dash.store.now_ms().saturating_sub(made);
    if !(0..REVEAL_KEPT_MS).contains(&age) {
        return None;
    }
    let rolled = *buf.get(8)? == 1;
    let name_len = usize::from(u16::from_le_bytes(buf.get(9..11)?.try_into().ok()?));
    let name = std::str::from_utf8(buf.get(11..11 + name_len)?).ok()?.to_string();
    let key = std::str::from_utf8(buf.get(11 + name_len..)?).ok()?;
    Some(Slot {
        key: Secret::new(key.to_string()),
        name,
        rolled,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> crate::Result<T> + Send + 'static) -> crate::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(Error::UnexpectedReply { request: "dashboard" }))
}

fn error_page(dash: &Dash, ctx: &Ctx, e: &Error) -> Response {
    let (status, title, text) = match e {
        Error::State(StateError::UnknownDashboardSession | StateError::DashboardSessionExpired) => (
            StatusCode::UNAUTHORIZED,
            "You are signed out",
            "Your session has ended or was revoked. Open a new link from your account.".to_string(),
        ),
        Error::State(StateError::UnknownDashboardLink) => {
            (StatusCode::NOT_FOUND, "This link is not valid", e.to_string())
        }
        Error::State(StateError::DashboardLinkUsed | StateError::DashboardLinkExpired) => {
            (StatusCode::GONE, "This link no longer works", e.to_string())
        }
        Error::State(StateError::ScopeMissing(_)) => (StatusCode::FORBIDDEN, "Not allowed", e.to_string()),
        Error::State(StateError::UnknownKey(_)) => (
            StatusCode::NOT_FOUND,
            "Key not found",
            "There is no such key among yours.".to_string(),
        ),
        Error::State(StateError::UnknownOwner(_)) => (
            StatusCode::NOT_FOUND,
            "Account not found",
            "This account no longer exists.".to_string(),
        ),
        Error::Input(_) => (StatusCode::BAD_REQUEST, "That did not work", e.to_string()),
        Error::State(_) => (StatusCode::CONFLICT, "That did not work", e.to_string()),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong",
            "The change could not be made right now. Try again in a moment.".to_string(),
        ),
    };
    let revoked = matches!(status, StatusCode::UNAUTHORIZED);
    let chrome = Chrome {
        session: if revoked { None } else { ctx.session.as_ref() },
        ..ctx.chrome(dash)
    };
    html(status, &page::message_page(&chrome, title, &text))
}

fn html(status: StatusCode, markup: &Markup) -> Response {
    let mut r = (status, markup.0.clone()).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

fn see_other(location: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// Where the router is mounted: the original path less the path the router saw
/// (`/dashboard/keys` and `/keys` give `/dashboard`).
fn mount_base(original: &str, inner: &str) -> String {
    let base = match original.strip_suffix(inner) {
        Some(base) => base,
        // `/dashboard` nested at `/dashboard` is seen as `/`.
        None => original,
    };
    base.trim_end_matches('/').to_string()
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The CSRF token the page puts in every form of the session whose token is
/// `session_token`: derived from it (BLAKE3 `derive_key`), so it needs no storage and
/// another session's does not fit.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(blake3::derive_key(
        "credstore dashboard csrf v1",
        session_token.as_bytes(),
    ))
}

/// Whether a change came from this host's pages: a cross-site `Sec-Fetch-Site` is
/// refused, and an `Origin` must name the request's `Host`.
fn origin_matches(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
    {
        return false;
    }
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    // A browser that sends no origin (a privacy setting) says `null`: then only what
    // `Sec-Fetch-Site` says counts, and the CSRF token.
    if origin == "null" {
        return true;
    }
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// Whether the request's host is loopback (no TLS there: the cookie cannot be `Secure`).
fn loopback_host(headers: &HeaderMap) -> bool {
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A `#rgb` / `#rrggbb` colour, or the default.
fn accent(text: &str) -> String {
    let hex = text.strip_prefix('#').unwrap_or("");
    if matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("#{hex}")
    } else {
        "#4f46e5".into()
    }
}

fn content_security_policy(cfg: &DashboardConfig) -> HeaderValue {
    let ancestors: Vec<&str> = cfg
        .frame_ancestors
        .iter()
        .map(String::as_str)
        .filter(|a| a.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b','))
        .collect();
    let ancestors = if ancestors.is_empty() {
        "'none'".to_string()
    } else {
        ancestors.join(" ")
    };
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; \
         form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_bases() {
        assert_eq!(mount_base("/dashboard/keys", "/keys"), "/dashboard");
        assert_eq!(mount_base("/dashboard/", "/"), "/dashboard");
        assert_eq!(mount_base("/dashboard", "/"), "/dashboard");
        assert_eq!(mount_base("/", "/"), "");
        assert_eq!(mount_base("/a/b/enter/x", "/enter/x"), "/a/b");
    }

    #[test]
    fn origins_and_hosts() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(origin_matches(&h) && loopback_host(&h));
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(origin_matches(&h));
        h.insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(!origin_matches(&h));
        h.insert(HOST, HeaderValue::from_static("api.example.com"));
        assert!(!loopback_host(&h));
        h.insert(HOST, HeaderValue::from_static("[::1]:80"));
        assert!(loopback_host(&h));
    }

    #[test]
    fn accents_and_policy() {
        assert_eq!(accent("#0a7"), "#0a7");
        assert_eq!(accent("red;}body{"), "#4f46e5");
        let cfg = DashboardConfig {
            frame_ancestors: vec!["https://app.example.com".into(), "x; script-src *".into()],
            ..DashboardConfig::default()
        };
        let csp = content_security_policy(&cfg);
        let csp = csp.to_str().unwrap();
        assert!(csp.ends_with("frame-ancestors https://app.example.com"), "{csp}");
        assert!(!csp.contains("unsafe-inline"));
    }
}
