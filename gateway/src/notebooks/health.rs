//! The reconciler: compares what the backend says with what the store says, after every
//! gateway start and then periodically. A notebook whose server died is stopped with an
//! event, never left `RUNNING`; one that stops answering gets `NotebookUnhealthy`, and
//! `NotebookHealthy` when it recovers. It never deletes user data.

use std::time::Duration;

use super::{Lifecycle, RUNNING, STOPPED};
use crate::backends::Observed;
use crate::store::events::{self, EventKind};
use crate::store::notebooks as rows;
use crate::store::transition::Transition;

pub async fn check_running(lc: &Lifecycle) -> anyhow::Result<()> {
    let running = {
        let mut conn = lc.store().pool.acquire().await?;
        rows::in_statuses(&mut conn, &[RUNNING]).await?
    };
    for row in running {
        let handle = row.handle.as_ref();
        let observed = match &handle {
            Some(h) => lc.backend().poll(h).await,
            None => Observed::Exited("no record of its server".into()),
        };
        let running = observed == Observed::Running;
        let exited = matches!(observed, Observed::Exited(_));
        let mut tx = lc.store().write().await?;
        match observed {
            Observed::Running => {
                if row.unhealthy {
                    rows::set_unhealthy(&mut tx, &row.id, false).await?;
                    events::record(&mut tx, &row.id, EventKind::NotebookRestored, None).await?;
                }
            }
            Observed::Unhealthy(why) => {
                if !row.unhealthy {
                    tracing::warn!(notebook = %row.id, reason = %why, "notebook unhealthy");
                    rows::set_unhealthy(&mut tx, &row.id, true).await?;
                    events::record(&mut tx, &row.id, EventKind::NotebookUnhealthy, Some(&why))
                        .await?;
                }
            }
            Observed::Exited(why) => {
                tracing::warn!(notebook = %row.id, reason = %why, "notebook server is gone; marking it stopped");
                let reason = format!("{why}; start it again to continue");
                if Transition::new(&row.id, &[RUNNING], STOPPED)
                    .reason(Some(&reason))
                    .event(&row.id, EventKind::JupyterProcessKilled, Some(&why))
                    .apply(&mut tx)
                    .await?
                {
                    rows::set_handle(&mut tx, &row.id, None).await?;
                    rows::set_unhealthy(&mut tx, &row.id, false).await?;
                }
            }
        }
        tx.commit().await?;
        lc.routes().invalidate(&row.id);
        // Object-storage mounts follow the notebook: made again where their process died
        // (or after a gateway restart), ended with a notebook that is gone.
        let mounts = if running {
            // After a gateway restart: the notebook's atelier.file link again.
            if let Some(h) = &handle {
                lc.files().serve_files(&row.id, &row.owner_id, h);
            }
            lc.mounts().ensure_mounts(&row.id).await.map(|_| ())
        } else if exited {
            // What outlived the server (a process that left its tree, the notebook's
            // network helper) ends with it.
            if let Some(h) = &handle
                && let Err(e) = lc
                    .backend()
                    .stop(
                        h,
                        crate::backends::StopMode {
                            grace: Duration::ZERO,
                        },
                    )
                    .await
            {
                tracing::warn!(notebook = %row.id, error = %e, "cleaning up after a notebook that died");
            }
            lc.files().stop_files(&row.id);
            lc.mounts().release_mounts(&row.id).await
        } else {
            Ok(())
        };
        if let Err(e) = mounts {
            tracing::warn!(notebook = %row.id, error = format!("{e:#}"), "object-storage mounts");
        }
    }
    Ok(())
}

/// Runs [`check_running`] every `every` until `shutdown` fires.
pub async fn run_loop(
    lc: Lifecycle,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = check_running(&lc).await {
                    tracing::warn!(error = format!("{e:#}"), "health check failed");
                }
            }
        }
    }
}
