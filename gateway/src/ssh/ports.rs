//! Notebooks' own SSH ports (the seed's form: `ssh -p PORT ma-user@HOST`). A notebook gets
//! a port from `ATELIER_SSH_PORTS` when SSH is turned on and keeps it for its lifetime, so
//! saved SSH configs keep working across restarts; the listener closes when the notebook
//! is deleted.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::task::AbortHandle;

use crate::ssh::SshDoor;
use crate::store::notebooks::{self as rows, NotebookRow};

pub struct Ports {
    range: Option<(u16, u16)>,
    open: Mutex<HashMap<String, AbortHandle>>,
}

impl Ports {
    pub fn new(range: Option<(u16, u16)>) -> Self {
        Ports {
            range,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn is_open(&self, id: &str) -> bool {
        self.open
            .lock()
            .map(|m| m.get(id).is_some_and(|h| !h.is_finished()))
            .unwrap_or(false)
    }

    /// Stops listening on a notebook's port (it is being deleted).
    pub fn close(&self, id: &str) {
        if let Ok(mut m) = self.open.lock()
            && let Some(h) = m.remove(id)
        {
            h.abort();
        }
    }
}

/// Listens on `port` for notebook `id`.
async fn listen(ssh: &SshDoor, id: &str, port: u16) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((ssh.addr.ip(), port)).await?;
    // Kept: its abort handle is in `Ports`; it ends with `stop` at shutdown.
    #[allow(clippy::disallowed_methods)]
    let task = tokio::spawn(crate::ssh::server::serve(
        ssh.clone(),
        listener,
        Some(id.to_owned()),
    ));
    if let Ok(mut m) = ssh.ports.open.lock()
        && let Some(old) = m.insert(id.to_owned(), task.abort_handle())
    {
        old.abort();
    }
    Ok(())
}

/// Makes sure a notebook with SSH on has its port and listens on it: an existing port is
/// reopened; a new one is the first free port of the range that can be bound. Returns
/// whether the notebook's stored port changed.
pub async fn ensure(ssh: &SshDoor, row: &NotebookRow) -> anyhow::Result<bool> {
    if !row.ssh_enabled {
        return Ok(false);
    }
    if let Some(port) = row.ssh_port {
        if !ssh.ports.is_open(&row.id)
            && let Err(e) = listen(ssh, &row.id, port as u16).await
        {
            tracing::warn!(notebook = %row.id, port, error = %e, "cannot listen on the notebook's SSH port");
        }
        return Ok(false);
    }
    let Some((first, last)) = ssh.ports.range else {
        return Ok(false);
    };
    let taken: Vec<i64> = {
        let mut conn = ssh.store.pool.acquire().await?;
        rows::ssh_ports(&mut conn)
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    };
    for port in first..=last {
        if taken.contains(&i64::from(port)) {
            continue;
        }
        // Bind first: a port some other program holds is skipped.
        let Ok(probe) = std::net::TcpListener::bind((ssh.addr.ip(), port)) else {
            continue;
        };
        drop(probe);
        let mut tx = ssh.store.write().await?;
        if !rows::claim_ssh_port(&mut tx, &row.id, port).await? {
            continue;
        }
        tx.commit().await?;
        if let Err(e) = listen(ssh, &row.id, port).await {
            tracing::warn!(notebook = %row.id, port, error = %e, "cannot listen on the notebook's SSH port");
        }
        tracing::info!(notebook = %row.id, port, "notebook SSH port assigned");
        return Ok(true);
    }
    tracing::warn!(notebook = %row.id, first, last, "no free SSH port in ATELIER_SSH_PORTS");
    Ok(false)
}

/// At start: listen on every notebook's port, and give one to notebooks that have SSH on
/// but no port yet.
pub async fn open_all(ssh: &SshDoor) {
    let found = async {
        let mut conn = ssh.store.pool.acquire().await?;
        let ports = rows::ssh_ports(&mut conn).await?;
        let missing = rows::ssh_without_port(&mut conn).await?;
        Ok::<_, sqlx::Error>((ports, missing))
    }
    .await;
    let (ports, missing) = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "reading notebooks' SSH ports failed; their own ports stay closed until they are started again");
            return;
        }
    };
    for (id, port) in ports {
        if let Err(e) = listen(ssh, &id, port as u16).await {
            tracing::warn!(notebook = %id, port, error = %e, "cannot listen on the notebook's SSH port");
        }
    }
    for row in missing {
        if let Err(e) = ensure(ssh, &row).await {
            tracing::warn!(notebook = %row.id, error = %e, "assigning the notebook's SSH port");
        }
    }
}
