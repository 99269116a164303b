//! `/v1/users` and `/v1/tokens`: accounts and API tokens.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use serde::{Deserialize, Serialize};

use super::Items;
use super::error::{ApiError, ApiJson, ApiPath, ApiResult};
use crate::api::state::AppState;
use crate::auth::{self, Principal, Role};
use crate::store::audit::{self, Action, Target};
use crate::store::{self, users};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(create_user).get(list_users))
        .route("/v1/users/{name}", delete(delete_user))
        .route(
            "/v1/users/{name}/tokens",
            post(create_token).get(list_tokens),
        )
        .route("/v1/tokens/{id}", delete(revoke_token))
}

/// User names appear in URLs, SSH user names and paths: keep them plain.
pub fn validate_user_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name: {name:?} is not a valid user name; use 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    name: String,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "user".into()
}

async fn create_user(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, ApiJson<users::UserRow>)> {
    p.require_admin()?;
    validate_user_name(&req.name)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::invalid(format!(
            "role: {:?} is not a role; use admin or user",
            req.role
        ))
    })?;
    let mut tx = state.store.write().await?;
    if users::user_by_name(&mut tx, &req.name).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "user {:?} already exists",
            req.name
        )));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = store::now();
    users::insert_user(&mut tx, &id, &req.name, role.as_str(), &now).await?;
    audit::record(
        &mut tx,
        &p.name,
        Action::CreateUser,
        Target {
            kind: "user",
            id: &id,
            name: &req.name,
        },
        "ok",
        None,
    )
    .await?;
    tx.commit().await?;
    let row = users::UserRow {
        id,
        name: req.name,
        role: role.as_str().into(),
        created_at: now,
    };
    Ok((StatusCode::CREATED, ApiJson(row)))
}

async fn list_users(
    p: Principal,
    State(state): State<AppState>,
) -> ApiResult<ApiJson<Items<users::UserRow>>> {
    p.require_admin()?;
    let mut conn = state.store.pool.acquire().await?;
    Ok(ApiJson(Items {
        items: users::list_users(&mut conn).await?,
    }))
}

/// `DELETE /v1/users/{name}` (admins): the user and their tokens and sessions, at once
/// everywhere (cached credentials forgotten, their WebSockets and SSH sessions cut). Refused
/// while they own anything (notebooks, key pairs, images, plugins, storage connections):
/// deleting a user never deletes their work by surprise. An admin cannot delete themselves,
/// so the last admin stays.
async fn delete_user(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require_admin()?;
    let mut tx = state.store.write().await?;
    let Some(user) = users::user_by_name(&mut tx, &name).await? else {
        return Err(ApiError::not_found(format!("user {name:?} not found")));
    };
    if user.id == p.user_id {
        return Err(ApiError::conflict(
            "you cannot delete yourself; another admin can",
        ));
    }
    let owned = users::owned(&mut tx, &user.id).await?;
    if !owned.is_empty() {
        let what: Vec<String> = owned.iter().map(|(k, n)| format!("{k} ({n})")).collect();
        return Err(ApiError::conflict(format!(
            "user {name:?} still owns {}; delete those first (or let them), then the user",
            what.join(", ")
        )));
    }
    let tokens = users::all_tokens(&mut tx, &user.id).await?;
    users::delete_user(&mut tx, &user.id).await?;
    audit::record(
        &mut tx,
        &p.name,
        Action::DeleteUser,
        Target {
            kind: "user",
            id: &user.id,
            name: &user.name,
        },
        "ok",
        None,
    )
    .await?;
    tx.commit().await?;
    for (id, hash) in tokens {
        state.auth.revoke_token(&id, &hash);
    }
    state.auth.revocations().revoke(
        auth::revoke::Subject::User(user.id.clone()),
        auth::revoke::Reason::UserDeleted,
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    #[serde(default)]
    label: String,
}

#[derive(Serialize)]
struct NewTokenView {
    id: String,
    token: String,
    user: String,
    label: String,
    created_at: String,
}

/// The named user, if `p` is that user or an admin; others get 404 for any name.
async fn target_user(state: &AppState, p: &Principal, name: &str) -> ApiResult<users::UserRow> {
    let mut conn = state.store.pool.acquire().await?;
    let user = users::user_by_name(&mut conn, name).await?;
    match user {
        Some(u) if u.id == p.user_id || p.is_admin() => Ok(u),
        _ => Err(ApiError::not_found(format!("user {name:?} not found"))),
    }
}

async fn create_token(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, ApiJson<NewTokenView>)> {
    // The body is optional: an empty one means no label.
    let req: CreateToken = if body.iter().all(u8::is_ascii_whitespace) {
        CreateToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?
    };
    if req.label.chars().count() > 128 {
        return Err(ApiError::invalid("label: at most 128 characters"));
    }
    let user = target_user(&state, &p, &name).await?;
    let (id, token) = issue_token(&state, &user, &req.label, &p.name).await?;
    let created_at = store::now();
    Ok((
        StatusCode::CREATED,
        ApiJson(NewTokenView {
            id,
            token,
            user: user.name,
            label: req.label,
            created_at,
        }),
    ))
}

/// A new API token for `user`, audited as done by `actor`. Returns (id, secret).
pub async fn issue_token(
    state: &AppState,
    user: &users::UserRow,
    label: &str,
    actor: &str,
) -> ApiResult<(String, String)> {
    let secret = auth::new_secret("atl_");
    let id = uuid::Uuid::new_v4().to_string();
    let now = store::now();
    let mut tx = state.store.write().await?;
    users::insert_token(
        &mut tx,
        users::NewToken {
            id: &id,
            user_id: &user.id,
            kind: "api",
            secret_hash: &auth::hash_secret(&secret),
            label,
            now: &now,
            expires_at: None,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        actor,
        Action::CreateToken,
        Target {
            kind: "token",
            id: &id,
            name: &user.name,
        },
        "ok",
        None,
    )
    .await?;
    tx.commit().await?;
    Ok((id, secret))
}

async fn list_tokens(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<ApiJson<Items<users::TokenRow>>> {
    let user = target_user(&state, &p, &name).await?;
    let mut conn = state.store.pool.acquire().await?;
    Ok(ApiJson(Items {
        items: users::list_api_tokens(&mut conn, &user.id).await?,
    }))
}

async fn revoke_token(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.write().await?;
    let Some((owner_id, owner_name, hash)) = users::token_owner(&mut tx, &id).await? else {
        return Err(ApiError::not_found(format!("token {id} not found")));
    };
    if owner_id != p.user_id && !p.is_admin() {
        return Err(ApiError::not_found(format!("token {id} not found")));
    }
    users::delete_token(&mut tx, &id).await?;
    audit::record(
        &mut tx,
        &p.name,
        Action::RevokeToken,
        Target {
            kind: "token",
            id: &id,
            name: &owner_name,
        },
        "ok",
        None,
    )
    .await?;
    tx.commit().await?;
    // Out of the cache, and its open WebSockets cut.
    state.auth.revoke_token(&id, &hash);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for ok in ["alice", "a", "bob-2", "x_y", "0day"] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Alice", "-x", "a b", "é", &"a".repeat(65)] {
            assert!(
                validate_user_name(bad)
                    .unwrap_err()
                    .message
                    .starts_with("name:"),
                "{bad}"
            );
        }
    }
}
