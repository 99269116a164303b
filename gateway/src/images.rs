//! The images notebooks run from: built-in (the settings' `[[images]]`), registered (an image
//! that exists in the engine or a registry, given a name: by an admin for everyone, by a user
//! for themselves) and saved (a running notebook committed, see `notebooks::save`).
//!
//! Notebooks name an image by its id; [`resolve`] turns that into the engine's reference,
//! checking the user may use it.

use serde::Serialize;

use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::config::Settings;
use crate::store::images::{self as rows, ImageRow};
use crate::store::{self, Conn};

/// One image as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ImageView {
    pub id: String,
    /// `builtin`, `registered` or `saved`.
    pub kind: String,
    /// The engine's or registry's reference (built-in: the settings' `ref`, else the id).
    #[serde(rename = "ref")]
    pub reference: String,
    pub description: String,
    /// The default image of new notebooks.
    pub default: bool,
    /// `None`: everyone's (built-in, or registered by an admin).
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_notebook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

impl From<ImageRow> for ImageView {
    fn from(r: ImageRow) -> Self {
        ImageView {
            id: r.id,
            kind: r.kind,
            reference: r.reference,
            description: r.description,
            default: false,
            owner: r.owner,
            source_notebook: r.source_notebook,
            size_bytes: r.size_bytes,
            created_at: Some(r.created_at),
        }
    }
}

/// The settings' images, the first being the default.
pub fn builtin(s: &Settings) -> Vec<ImageView> {
    s.images
        .iter()
        .enumerate()
        .map(|(i, im)| ImageView {
            id: im.id.clone(),
            kind: "builtin".into(),
            reference: im.reference.clone().unwrap_or_else(|| im.id.clone()),
            description: im.description.clone(),
            default: i == 0,
            owner: None,
            source_notebook: None,
            size_bytes: None,
            created_at: None,
        })
        .collect()
}

/// Every image `who` may use: built-in, public, and their own (an admin: all).
pub async fn list(
    s: &Settings,
    conn: &mut Conn,
    who: &Principal,
) -> Result<Vec<ImageView>, ApiError> {
    let mut all = builtin(s);
    let owner = (!who.is_admin()).then_some(who.user_id.as_str());
    all.extend(
        rows::visible(conn, owner)
            .await?
            .into_iter()
            .map(ImageView::from),
    );
    Ok(all)
}

/// The image `id` as `who` may use it (for a notebook of `owner_id`: an admin acting on a
/// user's notebook can pick that user's images).
pub async fn resolve(
    s: &Settings,
    conn: &mut Conn,
    owner_id: &str,
    id: &str,
) -> Result<ImageView, ApiError> {
    if let Some(b) = builtin(s).into_iter().find(|b| b.id == id) {
        return Ok(b);
    }
    match rows::get(conn, id).await? {
        Some(r) if r.owner_id.is_none() || r.owner_id.as_deref() == Some(owner_id) => Ok(r.into()),
        _ => {
            let known: Vec<String> = builtin(s).into_iter().map(|b| b.id).collect();
            Err(ApiError::invalid(format!(
                "image: unknown image {id:?}; available: {} (and your registered or saved images: atelier image list)",
                known.join(", ")
            )))
        }
    }
}

/// The engine reference of image `id` for a notebook that already uses it (no permission
/// check: it was checked when the notebook picked it). `None`: not known any more.
pub async fn reference_of(s: &Settings, conn: &mut Conn, id: &str) -> Option<String> {
    if let Some(b) = builtin(s).into_iter().find(|b| b.id == id) {
        return Some(b.reference);
    }
    rows::get(conn, id)
        .await
        .ok()
        .flatten()
        .map(|r| r.reference)
}

/// A registered image's name: what notebooks will call it.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name: {name:?} must be 1-128 of letters, digits, '-', '_', '.', ':', '/' and start with a letter or digit"
        )))
    }
}

/// An image reference as engines accept it (`[registry/]path[:tag][@digest]`), roughly: no
/// spaces or control characters, not empty, not absurdly long.
pub fn check_reference(reference: &str) -> Result<(), ApiError> {
    let ok = !reference.is_empty()
        && reference.len() <= 512
        && reference.bytes().all(|b| b.is_ascii_graphic())
        && !reference.starts_with(['-', '/', ':', '@']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "ref: {reference:?} is not an image reference such as registry.example.com/team/image:tag"
        )))
    }
}

/// Registers `name` → `reference` (public when `who` is an admin): checks the input and
/// that the name is free, then that the engine has the image or can pull it (the slow part,
/// so last), then stores it.
pub async fn register(
    s: &Settings,
    store: &store::Store,
    backend: &dyn crate::backends::Backend,
    who: &Principal,
    name: &str,
    reference: &str,
    description: &str,
) -> Result<ImageView, ApiError> {
    check_name(name)?;
    check_reference(reference)?;
    if description.chars().count() > 512 {
        return Err(ApiError::invalid("description: at most 512 characters"));
    }
    let taken = || ApiError::conflict(format!("image {name:?} already exists"));
    if builtin(s).iter().any(|b| b.id == name) {
        return Err(ApiError::conflict(format!(
            "image {name:?} already exists (a built-in image)"
        )));
    }
    {
        let mut conn = store.pool.acquire().await?;
        if rows::get(&mut conn, name).await?.is_some() {
            return Err(taken());
        }
    }
    backend.ensure_image(reference).await.map_err(|e| match e {
        crate::backends::BackendError::Unsupported(m) => ApiError::conflict(m),
        other => ApiError::invalid(format!("ref: {other}")),
    })?;
    let mut tx = store.write().await?;
    // Checked again: another registration may have taken the name during the pull.
    if rows::get(&mut tx, name).await?.is_some() {
        return Err(taken());
    }
    let now = store::now();
    let owner = (!who.is_admin()).then_some(who.user_id.as_str());
    rows::insert(
        &mut tx,
        rows::NewImage {
            id: name,
            reference,
            kind: "registered",
            owner_id: owner,
            description,
            source_notebook: None,
            size_bytes: None,
            now: &now,
        },
    )
    .await?;
    let row = rows::get(&mut tx, name)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("image {name} vanished")))?;
    crate::audit::record(
        &mut tx,
        &who.name,
        crate::audit::Action::RegisterImage,
        target(name),
        "ok",
        Some(reference),
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Unregisters a registered or saved image (its owner or an admin). The image itself stays
/// in the engine and registry.
pub async fn unregister(
    s: &Settings,
    store: &store::Store,
    who: &Principal,
    id: &str,
) -> Result<(), ApiError> {
    if builtin(s).iter().any(|b| b.id == id) {
        return Err(ApiError::conflict(format!(
            "image {id:?} is built in (from the gateway's settings) and cannot be unregistered"
        )));
    }
    let mut tx = store.write().await?;
    let row = rows::get(&mut tx, id).await?;
    let mine = |r: &ImageRow| r.owner_id.as_deref() == Some(who.user_id.as_str());
    let Some(row) = row.filter(|r| who.is_admin() || r.owner_id.is_none() || mine(r)) else {
        return Err(ApiError::not_found(format!("no image {id:?}")));
    };
    if !who.is_admin() && !mine(&row) {
        return Err(ApiError::forbidden(format!(
            "image {id:?} is public; only admins unregister public images"
        )));
    }
    let used = rows::users_of(&mut tx, id).await?;
    if used > 0 {
        return Err(ApiError::conflict(format!(
            "image {id:?} is used by {used} notebook(s); change their image or delete them first"
        )));
    }
    rows::delete(&mut tx, id).await?;
    crate::audit::record(
        &mut tx,
        &who.name,
        crate::audit::Action::UnregisterImage,
        target(id),
        "ok",
        Some(&row.reference),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn target(id: &str) -> crate::audit::Target<'_> {
    crate::audit::Target {
        kind: "image",
        id,
        name: id,
    }
}
