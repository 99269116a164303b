//! The images notebooks run from: built-in (the settings' `[[images]]`), registered (an image
//! that exists in the engine or a registry, given a name: by an admin for everyone, by a user
//! for themselves) and saved (a running notebook committed, see `notebooks::save`).
//!
//! Notebooks name an image by its id; [`resolve`] turns that into the engine's reference,
//! checking the user may use it.
//!
//! Ownership:
//! - Ids are per owner. A user sees the built-in images, the public ones (an admin's) and
//!   their own; the ids in that view are distinct (registering or saving an id in it is a
//!   409), and another user's images never make a conflict, so a 409 reveals nothing of them.
//! - Saved images live under the gateway's registry prefix, `$ATELIER_REGISTRY/` (or
//!   `localhost/atelier/` in the engine), in the owner's namespace (their user name). Nobody
//!   registers a reference there or in another user's saved-image namespace, nor one the
//!   engine would resolve by rules of its own (a short name, an image id): see
//!   [`check_place`].

use serde::Serialize;

use crate::auth::Principal;
use crate::config::Settings;
use crate::error::Error;
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
pub async fn list(s: &Settings, conn: &mut Conn, who: &Principal) -> Result<Vec<ImageView>, Error> {
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

/// The image `id` as a notebook of `owner_id` may use it (an admin acting on a user's
/// notebook can pick that user's images): built-in, public, or the owner's.
pub async fn resolve(
    s: &Settings,
    conn: &mut Conn,
    owner_id: &str,
    id: &str,
) -> Result<ImageView, Error> {
    if let Some(b) = builtin(s).into_iter().find(|b| b.id == id) {
        return Ok(b);
    }
    match rows::visible_to(conn, owner_id, id).await? {
        Some(r) => Ok(r.into()),
        None => {
            let known: Vec<String> = builtin(s).into_iter().map(|b| b.id).collect();
            Err(Error::invalid(format!(
                "image: unknown image {id:?}; available: {} (and your registered or saved images: atelier image list)",
                known.join(", ")
            )))
        }
    }
}

/// The engine reference of image `id` for a notebook of `owner_id` that already uses it (no
/// permission check: it was checked when the notebook picked it). `None`: not known any more.
pub async fn reference_of(
    s: &Settings,
    conn: &mut Conn,
    owner_id: &str,
    id: &str,
) -> Option<String> {
    if let Some(b) = builtin(s).into_iter().find(|b| b.id == id) {
        return Some(b.reference);
    }
    rows::visible_to(conn, owner_id, id)
        .await
        .ok()
        .flatten()
        .map(|r| r.reference)
}

/// The image `id` as `who` names it in `GET`/`DELETE /v1/images/{id}`: built-in, public or
/// their own. An admin also names other users' images: `owner` picks whose (by user name);
/// without it, the public or the admin's own image, else the only user's image by that id.
pub async fn find(
    s: &Settings,
    conn: &mut Conn,
    who: &Principal,
    id: &str,
    owner: Option<&str>,
) -> Result<ImageView, Error> {
    let not_found = || Error::not_found(format!("no image {id:?}"));
    if owner.is_some() && !who.is_admin() {
        return Err(Error::invalid(
            "owner: only admins name another user's image; yours and the public ones need no owner",
        ));
    }
    if owner.is_none()
        && let Some(b) = builtin(s).into_iter().find(|b| b.id == id)
    {
        return Ok(b);
    }
    if !who.is_admin() {
        return rows::visible_to(conn, &who.user_id, id)
            .await?
            .map(ImageView::from)
            .ok_or_else(not_found);
    }
    let all = rows::all_named(conn, id).await?;
    let pick: Vec<&ImageRow> = match owner {
        Some(o) => all
            .iter()
            .filter(|r| r.owner.as_deref() == Some(o))
            .collect(),
        None => {
            let mine: Vec<&ImageRow> = all
                .iter()
                .filter(|r| r.owner_id.is_none() || r.owner_id.as_deref() == Some(&who.user_id))
                .collect();
            if mine.is_empty() {
                all.iter().collect()
            } else {
                mine
            }
        }
    };
    match pick.as_slice() {
        [one] => Ok((*one).clone().into()),
        [] => Err(not_found()),
        many => Err(Error::conflict(format!(
            "several users have an image {id:?} ({}); name one with ?owner=NAME",
            many.iter()
                .filter_map(|r| r.owner.as_deref())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Whether `id` is taken where an image of `owner_id` (`None`: a public one) would go: in the
/// view of that owner (built-in, public, theirs), or, for a public image, in anyone's. The
/// answer names no other user.
pub async fn taken(
    s: &Settings,
    conn: &mut Conn,
    owner_id: Option<&str>,
    id: &str,
) -> Result<Option<Error>, Error> {
    if builtin(s).iter().any(|b| b.id == id) {
        return Ok(Some(Error::conflict(format!(
            "image {id:?} already exists (a built-in image)"
        ))));
    }
    let taken = match owner_id {
        Some(o) => rows::visible_to(conn, o, id).await?.is_some(),
        // A public id must be free in every user's view (an admin sees them all anyway).
        None => !rows::all_named(conn, id).await?.is_empty(),
    };
    Ok(taken.then(|| Error::conflict(format!("image {id:?} already exists"))))
}

/// A registered image's name: what notebooks will call it.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "name: {name:?} must be 1-128 of letters, digits, '-', '_', '.', ':', '/' and start with a letter or digit"
        )))
    }
}

/// An image reference as engines accept it (`[registry/]path[:tag][@digest]`), roughly: no
/// spaces or control characters, not empty, not absurdly long.
pub fn check_reference(reference: &str) -> Result<(), Error> {
    let ok = !reference.is_empty()
        && reference.len() <= 512
        && reference.bytes().all(|b| b.is_ascii_graphic())
        && !reference.starts_with(['-', '/', ':', '@']);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "ref: {reference:?} is not an image reference such as registry.example.com/team/image:tag"
        )))
    }
}

/// The gateway's registry prefixes, where saved images live: `$ATELIER_REGISTRY/` when set,
/// and `localhost/atelier/` (saves kept in the engine) always, normalized as [`normalize`]
/// does, without the trailing `/`.
pub fn saved_prefixes(s: &Settings) -> Vec<String> {
    let mut out = vec![SAVED_LOCALLY.trim_end_matches('/').to_owned()];
    if let Some(r) = &s.registry {
        out.push(normalize_repository(r.trim_end_matches('/')));
    }
    out
}

/// Where saves go when no registry is configured (see `notebooks::save`).
pub const SAVED_LOCALLY: &str = "localhost/atelier/";

/// An image reference split as engines read it.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// `domain/path`, the domain lowercased and Docker Hub's aliases as `docker.io`.
    pub repository: String,
}

/// A repository (`domain/path`) in the form references are compared in.
fn normalize_repository(repo: &str) -> String {
    let (domain, path) = repo.split_once('/').unwrap_or((repo, ""));
    let domain = domain.to_ascii_lowercase();
    let domain = match domain.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        d => d,
    };
    if path.is_empty() {
        domain.to_owned()
    } else {
        format!("{domain}/{}", path.to_ascii_lowercase())
    }
}

/// Parses `reference` (already through [`check_reference`]); refuses the forms an engine
/// resolves by rules of its own: an image id, or a short name without a registry host (Podman
/// looks short names up among its local images, `localhost/…` included, and in its search
/// registries; Docker in Docker Hub).
pub fn normalize(reference: &str) -> Result<Parsed, Error> {
    let lower = reference.to_ascii_lowercase();
    let looks_like_id = lower.starts_with("sha256:")
        || (lower.len() <= 64 && lower.bytes().all(|b| b.is_ascii_hexdigit()));
    if looks_like_id {
        return Err(Error::invalid(format!(
            "ref: {reference:?} reads as an image id; register images by a reference with a registry host, such as docker.io/library/python:3.12"
        )));
    }
    // Drop the digest, then the tag (a `:` after the last `/`).
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    let name = match name.rfind(':') {
        Some(i) if i > name.rfind('/').unwrap_or(0) => &name[..i],
        _ => name,
    };
    let qualified = name.split_once('/').is_some_and(|(first, rest)| {
        !rest.is_empty() && (first.contains(['.', ':']) || first.eq_ignore_ascii_case("localhost"))
    });
    if !qualified {
        return Err(Error::invalid(format!(
            "ref: {reference:?} has no registry host; write it in full, such as docker.io/library/python:3.12 (short names are resolved by the engine's own rules and can reach images the gateway keeps for other users)"
        )));
    }
    Ok(Parsed {
        repository: normalize_repository(name),
    })
}

/// Whether `repository` is `place` or inside it.
fn inside(repository: &str, place: &str) -> bool {
    repository == place
        || repository
            .strip_prefix(place)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Checks that a registration's `reference` is outside the gateway's registry prefixes
/// (`prefixes`, see [`saved_prefixes`]) and outside the saved-image namespaces of other users
/// (`others_saved`: the references of their saved images; a namespace is a reference's
/// repository less its last part).
pub fn check_place(
    reference: &str,
    prefixes: &[String],
    others_saved: &[String],
) -> Result<(), Error> {
    let parsed = normalize(reference)?;
    if prefixes.iter().any(|p| inside(&parsed.repository, p)) {
        return Err(Error::invalid(format!(
            "ref: {reference:?} is under the gateway's registry prefix ({}), where saved images live; an image is saved there with POST /v1/notebooks/{{id}}/save-image, not registered",
            prefixes
                .iter()
                .map(|p| format!("{p}/"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let in_others = others_saved.iter().any(|r| {
        normalize(r).is_ok_and(|saved| {
            saved
                .repository
                .rsplit_once('/')
                .is_some_and(|(namespace, _)| inside(&parsed.repository, namespace))
        })
    });
    if in_others {
        return Err(Error::invalid(format!(
            "ref: {reference:?} is in another user's saved-image namespace"
        )));
    }
    Ok(())
}

/// Registers `name` → `reference` (public when `who` is an admin): checks the input, that the
/// reference is outside the gateway's and other users' saved images and that the name is free
/// where the image goes, then that the engine has the image or can pull it (the slow part,
/// so last), then stores it.
pub async fn register(
    s: &Settings,
    store: &store::Store,
    backend: &dyn crate::backends::Backend,
    who: &Principal,
    name: &str,
    reference: &str,
    description: &str,
) -> Result<ImageView, Error> {
    check_name(name)?;
    check_reference(reference)?;
    if description.chars().count() > 512 {
        return Err(Error::invalid("description: at most 512 characters"));
    }
    let owner = (!who.is_admin()).then_some(who.user_id.as_str());
    {
        let mut conn = store.pool.acquire().await?;
        let others_saved = rows::saved_refs_of_others(&mut conn, &who.user_id).await?;
        check_place(reference, &saved_prefixes(s), &others_saved)?;
        if let Some(e) = taken(s, &mut conn, owner, name).await? {
            return Err(e);
        }
    }
    backend.ensure_image(reference).await.map_err(|e| match e {
        crate::backends::BackendError::Unsupported(m) => Error::conflict(m),
        other => Error::invalid(format!("ref: {other}")),
    })?;
    let mut tx = store.write().await?;
    // Checked again: another registration (or a save) may have taken the name or the
    // namespace during the pull.
    let others_saved = rows::saved_refs_of_others(&mut tx, &who.user_id).await?;
    check_place(reference, &saved_prefixes(s), &others_saved)?;
    if let Some(e) = taken(s, &mut tx, owner, name).await? {
        return Err(e);
    }
    let now = store::now();
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
    let row = match owner {
        Some(o) => rows::visible_to(&mut tx, o, name).await?,
        None => rows::all_named(&mut tx, name)
            .await?
            .into_iter()
            .find(|r| r.owner_id.is_none()),
    }
    .ok_or_else(|| Error::internal(anyhow::anyhow!("image {name} vanished")))?;
    crate::store::audit::record(
        &mut tx,
        &who.name,
        crate::store::audit::Action::RegisterImage,
        target(name),
        "ok",
        Some(reference),
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Unregisters a registered or saved image (its owner or an admin; `owner` as in [`find`]).
/// The image itself stays in the engine and registry.
pub async fn unregister(
    s: &Settings,
    store: &store::Store,
    who: &Principal,
    id: &str,
    owner: Option<&str>,
) -> Result<(), Error> {
    if owner.is_none() && builtin(s).iter().any(|b| b.id == id) {
        return Err(Error::conflict(format!(
            "image {id:?} is built in (from the gateway's settings) and cannot be unregistered"
        )));
    }
    let mut tx = store.write().await?;
    let image = find(s, &mut tx, who, id, owner).await?;
    let row = rows::all_named(&mut tx, id)
        .await?
        .into_iter()
        .find(|r| r.owner == image.owner)
        .ok_or_else(|| Error::not_found(format!("no image {id:?}")))?;
    let mine = row.owner_id.as_deref() == Some(who.user_id.as_str());
    if !who.is_admin() && !mine {
        return Err(Error::forbidden(format!(
            "image {id:?} is public; only admins unregister public images"
        )));
    }
    let used = rows::users_of(&mut tx, row.owner_id.as_deref(), id).await?;
    if used > 0 {
        return Err(Error::conflict(format!(
            "image {id:?} is used by {used} notebook(s); change their image or delete them first"
        )));
    }
    rows::delete(&mut tx, row.owner_id.as_deref(), id).await?;
    crate::store::audit::record(
        &mut tx,
        &who.name,
        crate::store::audit::Action::UnregisterImage,
        target(id),
        "ok",
        Some(&row.reference),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn target(id: &str) -> crate::store::audit::Target<'_> {
    crate::store::audit::Target {
        kind: "image",
        id,
        name: id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::store::{Store, now, users};

    #[test]
    fn references_the_engine_would_resolve_by_its_own_rules_are_refused() {
        for (reference, says) in [
            ("python:3.12", "no registry host"),
            ("alice/env:v1", "no registry host"),
            ("atelier/alice/env:v1", "no registry host"),
            ("localhost", "no registry host"),
            ("registry.example.com", "no registry host"),
            ("3f2a9c", "image id"),
            ("cafe", "image id"),
            (&"a".repeat(64), "image id"),
            ("sha256:3f2a9c", "image id"),
            ("SHA256:3f2a9c", "image id"),
        ] {
            let e = normalize(reference).unwrap_err();
            assert!(e.message.contains(says), "{reference}: {}", e.message);
            assert!(e.message.starts_with("ref:"), "{}", e.message);
        }
        for (reference, repository) in [
            ("docker.io/library/python:3.12", "docker.io/library/python"),
            ("Index.Docker.IO/library/python", "docker.io/library/python"),
            ("registry-1.docker.io/x/y@sha256:00", "docker.io/x/y"),
            (
                "localhost/atelier-notebook:abc",
                "localhost/atelier-notebook",
            ),
            ("localhost:5000/a/b:c@sha256:00", "localhost:5000/a/b"),
            ("127.0.0.1:5000/ns/img", "127.0.0.1:5000/ns/img"),
            (
                "LOCALHOST/Atelier/Alice/env:v1",
                "localhost/atelier/alice/env",
            ),
        ] {
            assert_eq!(normalize(reference).unwrap().repository, repository);
        }
    }

    #[test]
    fn references_under_the_registry_prefix_or_in_others_namespaces_are_refused() {
        let s = Settings {
            registry: Some("Registry.Example.com:5000/team".into()),
            ..Default::default()
        };
        let prefixes = saved_prefixes(&s);
        assert_eq!(
            prefixes,
            ["localhost/atelier", "registry.example.com:5000/team"]
        );
        let others = vec![
            "old.example.com/saves/alice/env:v1".to_string(),
            "localhost/atelier/bob/tools:2".to_string(),
        ];
        for refused in [
            "localhost/atelier/alice/env:v1",
            "localhost/Atelier/alice/env",
            "LOCALHOST/atelier/x@sha256:00",
            "localhost/atelier:latest",
            "registry.example.com:5000/team/alice/env:v1",
            "REGISTRY.example.com:5000/team/bob/new:1",
            "registry.example.com:5000/team",
            "old.example.com/saves/alice/other:1",
            "old.example.com/saves/alice/deeper/path:1",
            "old.example.com/saves/alice",
        ] {
            let e = check_place(refused, &prefixes, &others).unwrap_err();
            assert!(e.message.starts_with("ref:"), "{refused}: {}", e.message);
            assert_eq!(e.kind, crate::error::Kind::Invalid);
        }
        for allowed in [
            "localhost/atelier-notebook:abc",
            "localhost/ateliers/x:1",
            "registry.example.com:5000/teams/x:1",
            "registry.example.com/team/x:1",
            "registry.example.com:5001/team/x:1",
            "old.example.com/saves",
            "old.example.com/saves/alicex/env:1",
            "docker.io/library/python:3.12",
        ] {
            check_place(allowed, &prefixes, &others)
                .unwrap_or_else(|e| panic!("{allowed}: {}", e.message));
        }
        // Without a namespace in the setting, the whole registry is the gateway's.
        let s = Settings {
            registry: Some("127.0.0.1:5000".into()),
            ..Default::default()
        };
        let prefixes = saved_prefixes(&s);
        assert!(check_place("127.0.0.1:5000/anything:1", &prefixes, &[]).is_err());
        assert!(check_place("127.0.0.1:5001/anything:1", &prefixes, &[]).is_ok());
    }

    async fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("atelier-images-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        (Store::open(&dir).await.unwrap(), dir)
    }

    fn principal(id: &str, name: &str, role: Role) -> Principal {
        Principal {
            user_id: id.into(),
            name: name.into(),
            role,
            token_id: String::new(),
        }
    }

    async fn add(conn: &mut Conn, owner: Option<&str>, id: &str, reference: &str) {
        rows::insert(
            conn,
            rows::NewImage {
                id,
                reference,
                kind: "registered",
                owner_id: owner,
                description: "",
                source_notebook: None,
                size_bytes: None,
                now: &now(),
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn ids_are_per_owner_and_a_conflict_reveals_no_other_user() {
        let (store, dir) = store().await;
        let s = Settings::default();
        let mut c = store.pool.acquire().await.unwrap();
        for (id, name, role) in [
            ("a", "alice", "user"),
            ("b", "bob", "user"),
            ("r", "root", "admin"),
        ] {
            users::insert_user(&mut c, id, name, role, &now())
                .await
                .unwrap();
        }
        let alice = principal("a", "alice", Role::User);
        let bob = principal("b", "bob", Role::User);
        let admin = principal("r", "root", Role::Admin);

        // alice has `env`; bob may take the same id, and learns nothing of alice's.
        assert!(taken(&s, &mut c, Some("a"), "env").await.unwrap().is_none());
        add(&mut c, Some("a"), "env", "docker.io/alice/env:1").await;
        assert!(taken(&s, &mut c, Some("b"), "env").await.unwrap().is_none());
        add(&mut c, Some("b"), "env", "docker.io/bob/env:1").await;
        // The same id twice for one owner is refused by the store too.
        let again = rows::insert(
            &mut c,
            rows::NewImage {
                id: "env",
                reference: "x.io/y",
                kind: "registered",
                owner_id: Some("a"),
                description: "",
                source_notebook: None,
                size_bytes: None,
                now: &now(),
            },
        )
        .await;
        assert!(again.is_err());
        let e = taken(&s, &mut c, Some("a"), "env").await.unwrap().unwrap();
        assert_eq!(e.kind, crate::error::Kind::Conflict);
        assert!(
            !e.message.contains("bob") && !e.message.contains("alice"),
            "{}",
            e.message
        );

        // Each resolves and finds their own.
        assert_eq!(
            resolve(&s, &mut c, "a", "env").await.unwrap().reference,
            "docker.io/alice/env:1"
        );
        assert_eq!(
            resolve(&s, &mut c, "b", "env").await.unwrap().reference,
            "docker.io/bob/env:1"
        );
        assert_eq!(
            reference_of(&s, &mut c, "b", "env").await.as_deref(),
            Some("docker.io/bob/env:1")
        );
        assert_eq!(
            find(&s, &mut c, &bob, "env", None)
                .await
                .unwrap()
                .owner
                .as_deref(),
            Some("bob")
        );
        assert_eq!(
            find(&s, &mut c, &alice, "env", None)
                .await
                .unwrap()
                .reference,
            "docker.io/alice/env:1"
        );
        // bob's list holds only his.
        let listed = list(&s, &mut c, &bob).await.unwrap();
        assert!(
            listed.iter().all(|i| i.owner.as_deref() != Some("alice")),
            "{listed:?}"
        );
        // alice's private image is unknown to a third user, like one that does not exist.
        add(&mut c, Some("a"), "only-alice", "docker.io/alice/x:1").await;
        let e = resolve(&s, &mut c, "b", "only-alice").await.unwrap_err();
        let e2 = resolve(&s, &mut c, "b", "nothing-at-all")
            .await
            .unwrap_err();
        assert_eq!(
            e.message.replace("only-alice", "X"),
            e2.message.replace("nothing-at-all", "X")
        );
        assert_eq!(
            find(&s, &mut c, &bob, "only-alice", None)
                .await
                .unwrap_err()
                .kind,
            crate::error::Kind::NotFound
        );
        // Users cannot pick an owner.
        assert_eq!(
            find(&s, &mut c, &bob, "env", Some("alice"))
                .await
                .unwrap_err()
                .kind,
            crate::error::Kind::Invalid
        );

        // Public images are the admin's; their ids are in everyone's view.
        assert!(taken(&s, &mut c, None, "env").await.unwrap().is_some());
        assert!(taken(&s, &mut c, None, "team").await.unwrap().is_none());
        add(&mut c, None, "team", "docker.io/team/env:1").await;
        assert!(
            taken(&s, &mut c, Some("a"), "team")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            taken(&s, &mut c, Some("a"), "jupyterlab")
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(resolve(&s, &mut c, "b", "team").await.unwrap().owner, None);

        // An admin names a user's image by its owner when several have the id.
        let e = find(&s, &mut c, &admin, "env", None).await.unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Conflict);
        assert!(e.message.contains("?owner="), "{}", e.message);
        let bobs = find(&s, &mut c, &admin, "env", Some("bob")).await.unwrap();
        assert_eq!(bobs.reference, "docker.io/bob/env:1");
        assert_eq!(
            find(&s, &mut c, &admin, "only-alice", None)
                .await
                .unwrap()
                .owner
                .as_deref(),
            Some("alice")
        );
        assert_eq!(
            find(&s, &mut c, &admin, "team", None).await.unwrap().owner,
            None
        );
        drop(c);

        // Unregistering: bob's own goes, alice's stays.
        unregister(&s, &store, &bob, "env", None).await.unwrap();
        let mut c = store.pool.acquire().await.unwrap();
        assert!(resolve(&s, &mut c, "b", "env").await.is_err());
        assert!(resolve(&s, &mut c, "a", "env").await.is_ok());
        drop(c);
        assert_eq!(
            unregister(&s, &store, &bob, "team", None)
                .await
                .unwrap_err()
                .kind,
            crate::error::Kind::Forbidden
        );
        assert_eq!(
            unregister(&s, &store, &bob, "only-alice", None)
                .await
                .unwrap_err()
                .kind,
            crate::error::Kind::NotFound
        );
        unregister(&s, &store, &admin, "env", Some("alice"))
            .await
            .unwrap();
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Property tests: whatever the reference, the checks answer (no panic), and what they
    /// accept is outside the registry prefixes in every spelling.
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn references_are_judged_without_panic_and_never_land_under_the_prefix(
                host in prop::sample::select(vec!["localhost", "LocalHost", "registry.example.com:5000", "docker.io", "index.docker.io", "x", ""]),
                parts in prop::collection::vec(prop_oneof!["[a-zA-Z0-9._-]{0,8}", Just("atelier".to_owned()), Just("team".to_owned()), "\\PC{0,4}"], 0..4),
                tail in prop_oneof![Just(String::new()), ":[a-z0-9]{1,5}", "@sha256:[0-9a-f]{0,8}", ":[0-9]{1,4}/x"],
            ) {
                let reference = format!("{host}/{}{tail}", parts.join("/"));
                let prefixes = vec!["localhost/atelier".to_owned(), "registry.example.com:5000/team".to_owned()];
                let _ = check_reference(&reference);
                if check_reference(&reference).is_ok() && check_place(&reference, &prefixes, &[]).is_ok() {
                    let repo = normalize(&reference).unwrap().repository;
                    prop_assert!(!prefixes.iter().any(|p| repo == *p || repo.starts_with(&format!("{p}/"))), "{reference} → {repo}");
                }
            }
        }
    }
}
