//! Browser pages: login (an API token in, an HttpOnly session cookie out), logout, a home
//! page listing the user's notebooks (each opened on its own origin through
//! `GET /v1/notebooks/{id}/open`), and the plain pages errors are shown on.
//!
//! The session cookie is `SameSite=Strict` (and `Secure`, `__Host-` over https). The login
//! and logout forms carry a double-submit token ([`csrf`]); `next` is a path on this site.

use axum::Form;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::api::state::AppState;
use crate::auth::{self, csrf};
use crate::store::audit::{self, Action, Target};
use crate::store::{self, notebooks as rows, users};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/healthz", get(|| async { "ok" }))
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · Atelier</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         table{{border-collapse:collapse;width:100%}}td,th{{text-align:left;padding:.4rem;border-bottom:1px solid #ddd}}\
         input{{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}}button{{font-size:1rem;padding:.4rem 1rem}}\
         .muted{{color:#666}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    ))
}

/// A plain page for errors shown to browsers.
pub fn message_page(title: &str, message: &str) -> Html<String> {
    page(
        title,
        &format!(
            "<p>{}</p><p><a href=\"/\">Your notebooks</a></p>",
            escape(message)
        ),
    )
}

/// A page that goes on to `url` (a path or URL the gateway made) by itself, with a link for
/// browsers that do not follow `refresh`. The navigation it starts comes from this page's
/// own origin, so `SameSite=Strict` cookies go along (they do not on a request that arrived
/// from another site).
pub fn continue_page(url: &str) -> Response {
    let url = escape(url);
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"0;url={url}\"><title>Opening · Atelier</title></head>\
         <body><p><a href=\"{url}\">Continue</a></p></body></html>"
    );
    let mut resp = Html(body).into_response();
    no_store(&mut resp);
    resp
}

/// Only same-site paths, so the login form cannot be turned into an open redirect.
fn safe_next(next: Option<&str>) -> &str {
    next.and_then(csrf::safe_next).unwrap_or("/")
}

/// The form token in the browser's cookie, or a new one with the `Set-Cookie` that gives it.
fn form_token(state: &AppState, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    let jar = state.auth.cookies();
    if let Some(t) = csrf::form_token(&jar, headers) {
        return (t.to_owned(), None);
    }
    let token = csrf::new_form_token();
    let max_age = i64::from(state.settings.session_hours) * 3600;
    let cookie = HeaderValue::from_str(&jar.set(jar.csrf(), &token, max_age)).ok();
    (token, cookie)
}

fn with_cookie(mut resp: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// A refused form: 403 with a way back.
fn form_refused(e: crate::api::error::ApiError, back: &str) -> Response {
    let body = format!(
        "<p>{}</p><p><a href=\"{}\">Back</a></p>",
        escape(&e.message),
        escape(back)
    );
    (StatusCode::FORBIDDEN, page("Refused", &body)).into_response()
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
    error: Option<String>,
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    let error = match q.error.as_deref() {
        Some(_) => {
            "<p style=\"color:#b00\">That token is not valid (revoked, expired or mistyped).</p>"
        }
        None => "",
    };
    let (token, cookie) = form_token(&state, &headers);
    let html = page(
        "Log in",
        &format!(
            "{error}<form method=\"post\" action=\"/login\">\
             <p><label>API token<br><input name=\"token\" type=\"password\" autocomplete=\"current-password\" autofocus required></label></p>\
             <input type=\"hidden\" name=\"next\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <p><button type=\"submit\">Log in</button></p></form>\
             <p class=\"muted\">Get a token from your administrator, or with <code>atelier token create</code>.</p>",
            escape(next),
            escape(&token)
        ),
    );
    with_cookie(html.into_response(), cookie)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
    csrf: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref()).to_owned();
    let jar = state.auth.cookies();
    let console = state.settings.origins.console();
    if let Err(e) = csrf::check_form(&jar, &headers, form.csrf.as_deref(), &console) {
        return form_refused(
            e,
            &format!("/login?next={}", crate::urls::encode_path(&next)),
        );
    }
    let retry = || {
        Redirect::to(&format!(
            "/login?error=1&next={}",
            crate::urls::encode_path(&next)
        ))
        .into_response()
    };
    let principal = match state.auth.resolve(form.token.trim()).await {
        Ok(Some(p)) => p,
        Ok(None) => return retry(),
        Err(e) => return e.into_response(),
    };
    let secret = auth::new_secret("ats_");
    let id = uuid::Uuid::new_v4().to_string();
    let now = store::now();
    let hours = i64::from(state.settings.session_hours);
    let expires =
        store::format_time(time::OffsetDateTime::now_utc() + time::Duration::hours(hours));
    let result: Result<(), sqlx::Error> = async {
        let mut tx = state.store.write().await?;
        users::insert_token(
            &mut tx,
            users::NewToken {
                id: &id,
                user_id: &principal.user_id,
                kind: "session",
                secret_hash: &auth::hash_secret(&secret),
                label: "browser session",
                now: &now,
                expires_at: Some(&expires),
            },
        )
        .await?;
        audit::record(
            &mut tx,
            &principal.name,
            Action::Login,
            Target {
                kind: "session",
                id: &id,
                name: &principal.name,
            },
            "ok",
            None,
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = result {
        return crate::api::error::ApiError::internal(e).into_response();
    }
    let cookie = jar.set(jar.session(), &secret, hours * 3600);
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let jar = state.auth.cookies();
    let console = state.settings.origins.console();
    if let Err(e) = csrf::check_form(&jar, &headers, form.csrf.as_deref(), &console) {
        return form_refused(e, "/");
    }
    if let Some(secret) = state.auth.session_cookie(&headers) {
        let hash = auth::hash_secret(secret);
        let deleted = match state.store.pool.acquire().await {
            Ok(mut conn) => users::delete_session_by_hash(&mut conn, &hash).await,
            Err(e) => Err(e),
        };
        match deleted {
            // Out of the cache, and what the session opened (WebSockets) cut.
            Ok(Some(token_id)) => state.auth.revoke_token(&token_id, &hash),
            Ok(None) => state.auth.forget(&hash),
            Err(e) => return crate::api::error::ApiError::internal(e).into_response(),
        }
    }
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&jar.set(jar.session(), "", 0)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let principal = match state.auth.authenticate(&headers).await {
        Ok(Some(p)) => p,
        _ => return Redirect::to("/login").into_response(),
    };
    let filter = rows::ListFilter {
        owner_id: Some(principal.user_id.clone()),
        limit: 500,
        ..Default::default()
    };
    let list = async {
        let mut conn = state.store.pool.acquire().await?;
        rows::list(&mut conn, &filter).await
    }
    .await;
    let (items, _) = match list {
        Ok(l) => l,
        Err(e) => return crate::api::error::ApiError::internal(e).into_response(),
    };
    let (token, cookie) = form_token(&state, &headers);
    let mut body = format!(
        "<p>Logged in as <b>{}</b>. <form style=\"display:inline\" method=\"post\" action=\"/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form></p>",
        escape(&principal.name),
        escape(&token)
    );
    if items.is_empty() {
        body.push_str("<p>No notebooks yet. Create one with <code>atelier notebook create NAME --wait</code>.</p>");
    } else {
        body.push_str(
            "<table><tr><th>Name</th><th>Status</th><th>Flavor</th><th>Created</th></tr>",
        );
        for n in items {
            let name = if n.status == crate::notebooks::status::RUNNING {
                format!(
                    "<a href=\"/v1/notebooks/{}/open\">{}</a>",
                    escape(&n.id),
                    escape(&n.name)
                )
            } else {
                escape(&n.name)
            };
            body.push_str(&format!(
                "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                n.status,
                escape(&n.flavor),
                escape(n.created_at.get(..19).unwrap_or(&n.created_at)).replace('T', " ")
            ));
        }
        body.push_str("</table>");
    }
    with_cookie(
        (StatusCode::OK, page("Your notebooks", &body)).into_response(),
        cookie,
    )
}

/// No caching, and no `Referer` that could carry a ticket along.
pub fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_same_site_only() {
        assert_eq!(safe_next(Some("/nb/x/lab?a=1")), "/nb/x/lab?a=1");
        for bad in [
            None,
            Some("https://evil.example/"),
            Some("//evil.example"),
            Some("/\\evil"),
            Some("/\t/evil.example"),
            Some("x"),
        ] {
            assert_eq!(safe_next(bad), "/");
        }
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
