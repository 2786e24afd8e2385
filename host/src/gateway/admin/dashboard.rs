//! The live dashboard, on the operator listener, behind the admin token:
//!
//! * `GET    /admin/dashboard`: the page once signed in; otherwise a sign-in
//!   form, answered with 401;
//! * `POST   /admin/dashboard/session`: signs in with the admin token (a form
//!   field `token`, or `Authorization: Bearer`), sets the session cookie and
//!   goes back to the page; a wrong token gets the form again, with why;
//! * `DELETE /admin/dashboard/session`: signs out;
//! * `GET    /admin/dashboard/data`: what the page draws, as JSON
//!   (`?minutes=N` for the chart window), for the session cookie or the token;
//! * `GET    /admin/dashboard/assets/{file}`: the page's script and style,
//!   compiled into the binary; no data, so no session needed.
//!
//! One static page and one script, no inline code, so the content security
//! policy can forbid everything but this origin. Without a configured admin
//! token all of it answers 404, as the rest of the admin API.

use axum::Json;
use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::{AdminState, check};
use crate::gateway::trace::now_ms;
use crate::upstream::error::BedrockError;

pub mod session;
mod snapshot;

pub use session::Sessions;

const PAGE: &str = include_str!("dashboard/page.html");
const SIGN_IN: &str = include_str!("dashboard/sign-in.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Only this origin's script, style and data; never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'";

/// Why a session could not be opened, checked or closed: the store is away.
const SESSIONS_AWAY: &str = "Dashboard sessions are kept in Redis, which does not answer; try again shortly. \
                             The gateway's log says why.";

/// The sign-in form's body is one short field.
const MAX_SIGN_IN_BYTES: usize = 4 * 1024;

/// `GET /admin/dashboard`.
pub(super) async fn page(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(()) => html(StatusCode::OK, PAGE.to_owned()),
        Err(denied) if denied.status == StatusCode::NOT_FOUND => denied.into_response(),
        Err(denied) if denied.status == StatusCode::SERVICE_UNAVAILABLE => sessions_away(),
        Err(_) => sign_in_form(""),
    }
}

/// The `/admin/dashboard/session` routes; sign-in bodies are small.
pub(super) fn session_routes() -> MethodRouter<AdminState> {
    post(sign_in)
        .delete(sign_out)
        .layer(DefaultBodyLimit::max(MAX_SIGN_IN_BYTES))
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    token: String,
}

/// `POST /admin/dashboard/session`.
async fn sign_in(
    State(state): State<AdminState>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    if let Some(off) = when_off(&state) {
        return off;
    }
    if !same_origin(&headers) {
        return BedrockError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "sign in from the dashboard's own page: the request came from another origin",
        )
        .into_response();
    }
    let bearer = check(&state, &headers).is_ok();
    let typed = match &form {
        Ok(Form(sign_in)) => state.token.as_ref().is_some_and(|t| t.matches(sign_in.token.trim())),
        Err(_) => false,
    };
    if !(bearer || typed) {
        let why = match form {
            Ok(Form(sign_in)) if sign_in.token.trim().is_empty() => "Enter the admin token.",
            Ok(_) => "That is not the admin token. It is set by admin-token in tollgate.toml or TOLLGATE_ADMIN_TOKEN.",
            Err(_) => "Send the admin token as the form field token.",
        };
        return sign_in_form(why);
    }
    let id = match state.sessions.open(now_ms()).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "could not open a dashboard session");
            return sessions_away();
        }
    };
    // A browser names the page's origin on a POST: `https` there means TLS.
    let secure = origin(&headers).is_some_and(|o| o.starts_with("https://"));
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin/dashboard")]).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(&id, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    harden(response)
}

/// `DELETE /admin/dashboard/session`.
async fn sign_out(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(denied) = signed_in(&state, &headers).await {
        return denied.into_response();
    }
    if let Some(id) = session::from_cookies(&headers)
        && let Err(e) = state.sessions.close(id).await
    {
        // The cookie stays, so the browser can sign out again once the store answers.
        tracing::warn!(error = %e, "could not close a dashboard session");
        return BedrockError::unavailable(format!("{SESSIONS_AWAY} Sign out again then.")).into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    harden(response)
}

#[derive(Deserialize)]
pub(super) struct Window {
    minutes: Option<u64>,
}

/// `GET /admin/dashboard/data`.
pub(super) async fn data(
    State(state): State<AdminState>,
    window: Result<Query<Window>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = signed_in(&state, &headers).await {
        return denied.into_response();
    }
    let Ok(Query(window)) = window else {
        return BedrockError::validation(format!(
            "minutes: give the chart window as a whole number of minutes, 1 to {}",
            snapshot::MAX_MINUTES
        ))
        .into_response();
    };
    let minutes = window
        .minutes
        .unwrap_or(snapshot::DEFAULT_MINUTES)
        .clamp(1, snapshot::MAX_MINUTES);
    match snapshot::build(&state, minutes).await {
        Ok(snapshot) => harden(Json(snapshot).into_response()),
        Err(e) => e.into_response(),
    }
}

/// The page's script and style: static files, not an operation of the
/// admin API (and not in its OpenAPI description).
pub(super) fn assets() -> Router<AdminState> {
    Router::new().route("/admin/dashboard/assets/{file}", get(asset))
}

/// `GET /admin/dashboard/assets/{file}`.
async fn asset(State(state): State<AdminState>, Path(file): Path<String>) -> Response {
    if let Some(off) = when_off(&state) {
        return off;
    }
    let (body, kind) = match file.as_str() {
        "dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        _ => {
            return BedrockError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                "the dashboard has two assets: dashboard.js and dashboard.css",
            )
            .into_response();
        }
    };
    harden(([(header::CONTENT_TYPE, kind)], body).into_response())
}

/// A live session cookie, or the admin token as a bearer header. A cookie
/// the session store cannot check (Redis away) is answered 503, not taken
/// for a wrong one, unless the token came too.
async fn signed_in(state: &AdminState, headers: &HeaderMap) -> Result<(), BedrockError> {
    if state.token.is_some()
        && let Some(id) = session::from_cookies(headers)
    {
        match state.sessions.valid(id, now_ms()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if check(state, headers).is_err() => {
                tracing::warn!(error = %e, "could not check a dashboard session");
                return Err(BedrockError::unavailable(SESSIONS_AWAY));
            }
            Err(_) => {}
        }
    }
    check(state, headers)
}

/// The admin API's 404 when no token is configured: it does not exist.
fn when_off(state: &AdminState) -> Option<Response> {
    state.token.is_none().then(|| match check(state, &HeaderMap::new()) {
        Err(off) => off.into_response(),
        Ok(()) => StatusCode::NOT_FOUND.into_response(),
    })
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// A form posted from another site must not sign the browser in (login
/// CSRF); without an `Origin` (not a browser) there is nothing to check.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = origin(headers) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| !host.is_empty() && authority.eq_ignore_ascii_case(host))
}

fn sign_in_form(error: &str) -> Response {
    // The messages are this module's own text: nothing the caller sent is echoed.
    html(StatusCode::UNAUTHORIZED, SIGN_IN.replace("{{error}}", error))
}

/// The sign-in form, answered 503: the session store does not answer.
fn sessions_away() -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        SIGN_IN.replace("{{error}}", SESSIONS_AWAY),
    )
}

fn html(status: StatusCode, body: String) -> Response {
    harden((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

/// The security headers every dashboard answer carries.
fn harden(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with the
    // sign-in form, which the login-CSRF check must refuse.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn only_forms_from_this_origin_sign_in() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9000")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "https://127.0.0.1:9000")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[("origin", "https://127.0.0.1:9000")])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "null")
        ])));
    }

    #[test]
    fn the_page_has_no_inline_code() {
        for page in [PAGE, SIGN_IN] {
            assert!(!page.contains("<script>") && !page.contains(" style=") && !page.contains("<style"));
            for handler in [" onclick=", " onload=", " onsubmit=", "javascript:"] {
                assert!(!page.contains(handler), "{handler}");
            }
        }
    }
}
