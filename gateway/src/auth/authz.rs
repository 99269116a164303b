//! Authorization: the only place that decides whether a principal may touch a notebook.
//! Only [`authorize`] constructs a [`NotebookGrant`], and the lifecycle, the proxy and (later)
//! the SSH relay take a grant, not a principal, so a missing check does not compile.

use std::sync::Arc;

use crate::auth::Principal;
use crate::error::Error;
use crate::routing::Route;
use crate::store::notebooks::NotebookRow;

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// See and manage the lifecycle (owner, or an admin).
    Manage,
    /// Open the notebook's JupyterLab or shell: the owner only. Admins manage other users'
    /// notebooks but do not read their work (JupyterHub's `admin_access = False`).
    Open,
}

/// Proof that `principal` may act on `notebook` with `access`.
#[derive(Debug, Clone)]
pub struct NotebookGrant {
    principal: Principal,
    notebook: NotebookRow,
    access: Access,
}

impl NotebookGrant {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    pub fn notebook(&self) -> &NotebookRow {
        &self.notebook
    }
    pub fn access(&self) -> Access {
        self.access
    }
    pub fn into_notebook(self) -> NotebookRow {
        self.notebook
    }
}

/// Another user's notebook answers "not found", so its existence is not revealed.
pub fn authorize(
    principal: &Principal,
    notebook: NotebookRow,
    access: Access,
) -> Result<NotebookGrant, Error> {
    let owner = notebook.owner_id == principal.user_id;
    let allowed = match access {
        Access::Manage => owner || principal.is_admin(),
        Access::Open => owner,
    };
    if !allowed {
        return Err(not_found(&notebook.id));
    }
    Ok(NotebookGrant {
        principal: principal.clone(),
        notebook,
        access,
    })
}

/// Proof that a principal may open a notebook's server through the proxy: the owner only.
#[derive(Debug)]
pub struct RouteGrant {
    route: Arc<Route>,
    principal: Arc<Principal>,
}

impl RouteGrant {
    pub fn route(&self) -> &Route {
        &self.route
    }
    /// The name of the user the grant is for.
    pub fn user(&self) -> &str {
        &self.principal.name
    }
    /// Who the grant is for (on a notebook's host: the console session the cookie came from).
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

pub fn authorize_route(principal: Arc<Principal>, route: Arc<Route>) -> Result<RouteGrant, Error> {
    if route.owner_id != principal.user_id {
        return Err(not_found(&route.notebook_id));
    }
    Ok(RouteGrant { route, principal })
}

pub fn not_found(id: &str) -> Error {
    Error::not_found(format!("notebook {id} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn principal(id: &str, role: Role) -> Principal {
        Principal {
            user_id: id.into(),
            name: id.into(),
            role,
            token_id: "t".into(),
        }
    }

    fn notebook(owner: &str) -> NotebookRow {
        NotebookRow::example("n1", owner, "nb")
    }

    #[test]
    fn table() {
        use Access::*;
        let cases = [
            ("alice", Role::User, Manage, true),
            ("alice", Role::User, Open, true),
            ("bob", Role::User, Manage, false),
            ("bob", Role::User, Open, false),
            ("root", Role::Admin, Manage, true),
            ("root", Role::Admin, Open, false),
        ];
        for (who, role, access, ok) in cases {
            let r = authorize(&principal(who, role), notebook("alice"), access);
            assert_eq!(r.is_ok(), ok, "{who} {access:?}");
            if let Err(e) = r {
                assert_eq!(e.kind, crate::error::Kind::NotFound);
            }
        }
    }
}
