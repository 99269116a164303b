//! Saving a running notebook as an image (seed §2.8, §2.9 "Image saving"):
//!
//! ```text
//! POST …/save-image   RUNNING → SNAPSHOTTING (202), then in the background:
//!   backend.save_image: CheckImageSize, CheckImageLayer, D-state check,
//!                       ContainerCommitStarted/Success|Failed, ImagePushStarted/Success|Failed
//!   success             image row (kind saved) + SaveImage, audit saveImage ok
//!   failure             SavedImageFailed with the seed's text, audit saveImage failed
//!   either way          SNAPSHOTTING → RUNNING
//! gateway restart       a SNAPSHOTTING notebook goes back to RUNNING with SavedImageFailed
//! ```

use serde::Deserialize;

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::{NotebookGrant, NotebookOp, RUNNING, SNAPSHOTTING, StoreProgress, target};
use crate::backends::{Backend, SaveImage, SaveImageError};
use crate::config::Settings;
use crate::error::{DomainError, Error, Kind};
use crate::routing::RouteTable;
use crate::store::audit::{self, Action};
use crate::store::events::{self, EventKind};
use crate::store::images as image_rows;
use crate::store::notebooks::{self as rows, NotebookRow};
use crate::store::transition::Transition;
use crate::store::{self, Store};

/// `POST /v1/notebooks/{id}/save-image`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveImageRequest {
    pub name: String,
    pub tag: String,
    #[serde(default)]
    pub description: String,
    /// The owner's name (the default; no other is accepted): a user's saved images live in
    /// their own namespace under the gateway's registry prefix.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// What a save-as-image request fails with (the save itself reports through events).
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// A field of the request is wrong (name, tag, namespace, description).
    #[error("{0}")]
    Invalid(String),
    /// This backend cannot save notebooks as images.
    #[error("{0}")]
    CannotSave(String),
    /// The image id is taken.
    #[error("{0}")]
    Taken(String),
    /// A shared check refused: the notebook's status, the store.
    #[error("{}", .0.message)]
    Common(#[from] Error),
    /// Ours: logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl DomainError for SaveError {
    fn kind(&self) -> Kind {
        match self {
            SaveError::Invalid(_) => Kind::Invalid,
            SaveError::CannotSave(_) | SaveError::Taken(_) => Kind::Conflict,
            SaveError::Common(e) => e.kind,
            SaveError::Internal(_) => Kind::Internal,
        }
    }
}

crate::domain_error!(SaveError, common: Common, internal: Internal);

/// An OCI repository path component: lowercase letters, digits, `.`, `_`, `-`, starting with a
/// letter or digit, at most 64.
fn repo_component(field: &str, v: &str) -> Result<(), SaveError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SaveError::Invalid(format!(
            "{field}: {v:?} must be 1-64 of lowercase letters, digits, '.', '_', '-', starting with a letter or digit"
        )))
    }
}

fn tag(v: &str) -> Result<(), SaveError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && (v.as_bytes()[0].is_ascii_alphanumeric() || v.as_bytes()[0] == b'_')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SaveError::Invalid(format!(
            "tag: {v:?} must be 1-128 of letters, digits, '.', '_', '-', not starting with '.' or '-'"
        )))
    }
}

/// The save-image service: a running notebook saved as an image (docker backend), the
/// notebook SNAPSHOTTING meanwhile. Its saves run on the lifecycle's task tracker. Cloning
/// shares it.
#[derive(Clone)]
pub struct Saves {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    backend: Arc<dyn Backend>,
    settings: Arc<Settings>,
    /// Invalidated at each status change (the route shows the status).
    routes: RouteTable,
    tasks: TaskTracker,
}

impl Saves {
    pub fn new(
        store: Store,
        backend: Arc<dyn Backend>,
        settings: Arc<Settings>,
        routes: RouteTable,
        tasks: TaskTracker,
    ) -> Saves {
        Saves {
            inner: Arc::new(Inner {
                store,
                backend,
                settings,
                routes,
                tasks,
            }),
        }
    }

    /// Starts saving a running notebook as `namespace/name:tag`; returns it `SNAPSHOTTING`.
    pub async fn save_image(
        &self,
        grant: NotebookGrant,
        req: SaveImageRequest,
    ) -> Result<NotebookRow, SaveError> {
        let nb = grant.notebook().clone();
        let user = grant.principal().name.clone();
        if !self.inner.backend.saves_images() {
            return Err(SaveError::CannotSave(format!(
                "the {} backend cannot save a notebook as an image; that needs the docker backend",
                self.inner.backend.name()
            )));
        }
        repo_component("name", &req.name)?;
        tag(&req.tag)?;
        // User names are unique and already lowercase: the owner's namespace is theirs alone.
        let namespace = nb.owner.to_ascii_lowercase();
        if let Some(asked) = &req.namespace
            && *asked != namespace
        {
            return Err(SaveError::Invalid(format!(
                "namespace: the images of {}'s notebooks are saved in the namespace {namespace:?}; another namespace may hold other users' images",
                nb.owner
            )));
        }
        repo_component("namespace", &namespace)?;
        if req.description.chars().count() > 512 {
            return Err(SaveError::Invalid(
                "description: at most 512 characters".into(),
            ));
        }
        let id = format!("{namespace}/{}:{}", req.name, req.tag);
        let s = &self.inner.settings;
        let mut tx = self.inner.store.write().await?;
        // Taken in the owner's view (built-in, public, theirs); other users' ids do not count.
        if crate::images::taken(s, &mut tx, Some(&nb.owner_id), &id)
            .await?
            .is_some()
        {
            return Err(SaveError::Taken(format!(
                "image {id:?} already exists; pick another name or tag"
            )));
        }
        let row = rows::get(&mut tx, &nb.id)
            .await?
            .ok_or_else(|| crate::auth::authz::not_found(&nb.id))?;
        Transition::of(&row.id, NotebookOp::SaveImage, SNAPSHOTTING)
            .request(&mut tx, NotebookOp::SaveImage, &row.name)
            .await?;
        tx.commit().await?;
        self.inner.routes.invalidate(&row.id);
        let this = self.clone();
        let (nb_id, who) = (row.id.clone(), user);
        self.inner.tasks.spawn(async move {
            if let Err(e) = this.finish_save(&nb_id, &who, &id, &req).await {
                tracing::error!(notebook = %nb_id, error = format!("{e:#}"), "saving an image failed");
            }
        });
        Ok(super::reload(&self.inner.store, &row.id).await?)
    }

    async fn finish_save(
        &self,
        id: &str,
        user: &str,
        image_id: &str,
        req: &SaveImageRequest,
    ) -> anyhow::Result<()> {
        let row = {
            let mut conn = self.inner.store.pool.acquire().await?;
            rows::get(&mut conn, id).await?
        };
        let Some(row) = row.filter(|r| r.status == SNAPSHOTTING) else {
            return Ok(());
        };
        let s = &self.inner.settings;
        let (reference, push) = match &s.registry {
            Some(r) => (format!("{r}/{image_id}"), true),
            None => (format!("localhost/atelier/{image_id}"), false),
        };
        let save = SaveImage {
            reference: reference.clone(),
            push,
            max_bytes: (s.save_image_max_gb * 1e9) as u64,
            max_layers: s.save_image_max_layers,
            comment: format!("saved from notebook {} ({}) by {user}", row.name, row.id),
        };
        let progress = StoreProgress {
            store: self.inner.store.clone(),
            notebook_id: id.to_owned(),
        };
        let handle = row.handle.clone();
        let outcome = match &handle {
            Some(h) => self.inner.backend.save_image(h, &save, &progress).await,
            None => Err(SaveImageError::Other(
                "the notebook has no container".into(),
            )),
        };
        let mut tx = self.inner.store.write().await?;
        let mut outcome = outcome;
        if outcome.is_ok()
            && crate::images::taken(s, &mut tx, Some(&row.owner_id), image_id)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?
                .is_some()
        {
            // An admin made a public image of this id during the save.
            outcome = Err(SaveImageError::Other(format!(
                "the image {image_id:?} was registered meanwhile; save again under another name or tag"
            )));
        }
        match &outcome {
            Ok(size) => {
                image_rows::insert(
                    &mut tx,
                    image_rows::NewImage {
                        id: image_id,
                        reference: &reference,
                        kind: "saved",
                        owner_id: Some(&row.owner_id),
                        description: &req.description,
                        source_notebook: Some(&row.id),
                        size_bytes: i64::try_from(*size).ok(),
                        now: &store::now(),
                    },
                )
                .await?;
                let detail = if push {
                    format!("{image_id} ({reference})")
                } else {
                    format!(
                        "{image_id} ({reference}; kept in the engine: no registry is configured)"
                    )
                };
                events::record(&mut tx, id, EventKind::SaveImage, Some(&detail)).await?;
                audit::record(
                    &mut tx,
                    user,
                    Action::SaveImage,
                    target(&row),
                    "ok",
                    Some(&detail),
                )
                .await?;
            }
            Err(e) => {
                let (description, detail) = e.seed_text();
                events::record_text(
                    &mut tx,
                    id,
                    EventKind::SavedImageFailed,
                    &description,
                    Some(&detail),
                )
                .await?;
                audit::record(
                    &mut tx,
                    user,
                    Action::SaveImage,
                    target(&row),
                    "failed",
                    Some(&format!("{image_id}: {detail}")),
                )
                .await?;
            }
        }
        Transition::new(id, &[SNAPSHOTTING], RUNNING)
            .apply(&mut tx)
            .await?;
        tx.commit().await?;
        self.inner.routes.invalidate(id);
        Ok(())
    }

    /// At start: a save that was running when the gateway stopped did not finish; the
    /// notebook is RUNNING again with the seed's time-out failure event.
    pub(crate) async fn abandon_save(&self, row: &NotebookRow) -> anyhow::Result<()> {
        let mut tx = self.inner.store.write().await?;
        Transition::new(&row.id, &[SNAPSHOTTING], RUNNING)
            .event_text(
                &row.id,
                EventKind::SavedImageFailed,
                "Saving the image failed due to task timeout.",
                Some("The gateway restarted while the image was being saved; save it again."),
            )
            .apply(&mut tx)
            .await?;
        tx.commit().await?;
        self.inner.routes.invalidate(&row.id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert!(repo_component("name", "my-env.v2_x").is_ok());
        for bad in ["", "My", "-a", "a b", &"a".repeat(65)] {
            assert!(repo_component("name", bad).is_err(), "{bad:?}");
        }
        assert!(tag("v1.0_rc-1").is_ok());
        assert!(tag("V1").is_ok());
        for bad in ["", ".x", "-x", "a:b", &"a".repeat(129)] {
            assert!(tag(bad).is_err(), "{bad:?}");
        }
    }
}
