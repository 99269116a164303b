//! `/v1/keypairs`: SSH key pairs. A user's key pairs are theirs, and a public key belongs to
//! one user only (the SSH front door finds the user by the key); notebooks with SSH accept
//! logins from the key pairs they name. Only public keys are stored: a generated private
//! key is in the create response and nowhere else.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::Items;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::auth::revoke::{Reason, Subject};
use crate::ssh_keys as keys;
use crate::store::audit::{self, Action, Target};
use crate::store::{self, keypairs};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keypairs", post(create).get(list))
        .route("/v1/keypairs/{name}", get(show).delete(delete))
}

/// Key pair names appear in SSH configs and file names (`NAME.pem`): keep them plain.
pub fn validate_name(name: &str) -> ApiResult<()> {
    if super::is_plain_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name: {name:?} is not a valid key pair name; use 1-64 of A-Z, a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyPair {
    name: String,
    /// Import this public key; without it, a new ed25519 key pair is generated.
    public_key: Option<String>,
}

#[derive(Serialize)]
struct CreatedKeyPair {
    #[serde(flatten)]
    key_pair: keypairs::KeyPairRow,
    /// Only for a generated key pair, and only in this response.
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateKeyPair>,
) -> ApiResult<(StatusCode, ApiJson<CreatedKeyPair>)> {
    validate_name(&req.name)?;
    let (public, private_key) = match &req.public_key {
        Some(text) => (
            keys::parse_public(text).map_err(|e| ApiError::invalid(format!("public_key: {e}")))?,
            None,
        ),
        None => {
            let g = keys::generate_ed25519(&format!("{}@atelier", p.name))
                .map_err(ApiError::internal)?;
            (g.public, Some(g.private_openssh))
        }
    };
    let public_line = keys::to_openssh(&public).map_err(ApiError::internal)?;
    let fingerprint = keys::fingerprint(&public);
    let algorithm = keys::algorithm(&public);

    let mut tx = state.store.write().await?;
    if keypairs::by_name(&mut tx, &p.user_id, &req.name)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "key pair {:?} already exists; pick another name or delete it first",
            req.name
        )));
    }
    if let Some(same) = keypairs::by_fingerprint(&mut tx, &p.user_id, &fingerprint).await? {
        return Err(ApiError::conflict(format!(
            "this public key is already imported as key pair {:?}",
            same.name
        )));
    }
    // A key is one user's: the SSH front door finds whose notebooks a login may reach by the
    // key. Checked in this (immediate, so serialized) write transaction; the message does not
    // say who holds it.
    if keypairs::held_by_another(&mut tx, &p.user_id, &fingerprint).await? {
        return Err(ApiError::conflict(
            "public_key: this public key is registered by another user, and a key can belong to one user only; use a key pair of your own (or create one: omit public_key)",
        ));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = store::now();
    keypairs::insert(
        &mut tx,
        keypairs::NewKeyPair {
            id: &id,
            owner_id: &p.user_id,
            name: &req.name,
            algorithm: &algorithm,
            public_key: &public_line,
            fingerprint: &fingerprint,
            now: &now,
        },
    )
    .await?;
    let action = if private_key.is_some() {
        Action::CreateKeyPair
    } else {
        Action::ImportKeyPair
    };
    audit::record(
        &mut tx,
        &p.name,
        action,
        Target {
            kind: "keypair",
            id: &id,
            name: &req.name,
        },
        "ok",
        Some(&format!("fingerprint {fingerprint}")),
    )
    .await?;
    tx.commit().await?;
    let key_pair = keypairs::KeyPairRow {
        id,
        name: req.name,
        owner: p.name,
        algorithm,
        public_key: public_line,
        fingerprint,
        created_at: now,
    };
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedKeyPair {
            key_pair,
            private_key: private_key.map(|k| k.as_str().to_owned()),
        }),
    ))
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<super::AllQuery>,
) -> ApiResult<ApiJson<Items<keypairs::KeyPairRow>>> {
    let owner = q.owner(&p, "key pairs")?;
    let mut conn = state.store.pool.acquire().await?;
    Ok(ApiJson(Items {
        items: keypairs::list(&mut conn, owner).await?,
    }))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("key pair {name:?} not found"))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<ApiJson<keypairs::KeyPairRow>> {
    let mut conn = state.store.pool.acquire().await?;
    let row = keypairs::by_name(&mut conn, &p.user_id, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(ApiJson(row))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.write().await?;
    let row = keypairs::by_name(&mut tx, &p.user_id, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let users = keypairs::used_by(&mut tx, &row.id).await?;
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "key pair {name:?} is used by notebook(s) {}; remove it from their SSH settings first",
            users.join(", ")
        )));
    }
    keypairs::delete(&mut tx, &row.id).await?;
    audit::record(
        &mut tx,
        &p.name,
        Action::DeleteKeyPair,
        Target {
            kind: "keypair",
            id: &row.id,
            name: &row.name,
        },
        "ok",
        None,
    )
    .await?;
    tx.commit().await?;
    state
        .auth
        .revocations()
        .revoke(Subject::KeyPair(row.id), Reason::KeyPairRemoved);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["KeyPair-9a64", "laptop", "a", "id_ed25519.work", "x_y"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".hidden", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(
                validate_name(bad).unwrap_err().message.starts_with("name:"),
                "{bad}"
            );
        }
    }
}
