//! `atelier serve`: wires settings, store, auth, backend, lifecycle and the router together,
//! resumes what a previous gateway left unfinished, and runs until SIGINT/SIGTERM. Notebooks
//! keep running while the gateway is down; the next start re-attaches to them.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityClocks;
use crate::api::state::{AppState, Services};
use crate::auth::revoke::Revocations;
use crate::auth::{self, Authenticator};
use crate::backends::Backend;
use crate::backends::external::ExternalBackend;
use crate::backends::process::ProcessBackend;
use crate::config::{BackendKind, Settings};
use crate::lifecycle::clock::SystemClock;
use crate::metrics::MetricsBuilder;
use crate::notebooks::{Lifecycle, LifecycleParts, health};
use crate::proxy;
use crate::routing::RouteTable;
use crate::ssh::{DoorParts, SshDoor};
use crate::store::{self, Store, users};
use crate::upstream::ConnUpstreams;

/// How often running notebooks are checked against the backend.
const HEALTH_EVERY: Duration = Duration::from_secs(10);
/// How often proxy activity is written to the store.
const ACTIVITY_FLUSH_EVERY: Duration = Duration::from_secs(10);

pub async fn build(settings: Settings) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("securing data dir {}", settings.data_dir.display()))?;
    let store = Store::open(&settings.data_dir).await?;
    bootstrap_admin(&store, &settings).await?;
    // Before the backend: a backend whose runtimes run elsewhere takes the hub.
    let tunnel = start_tunnel(&settings).await?;
    let backend = build_backend(&settings, &store, tunnel.as_ref()).await?;
    let ssh = match settings.ssh_addr {
        Some(addr) => {
            let host_key = crate::ssh::host_key::load_or_create(&settings.data_dir)?;
            let public = host_key.public_key();
            Some((
                addr,
                crate::ssh_keys::fingerprint(public),
                crate::ssh_keys::to_openssh(public)?,
                crate::ssh::server::config(host_key),
            ))
        }
        None => None,
    };
    let plugins = crate::plugins::open_host(&settings).context("starting the plugin host")?;
    let secrets = Arc::new(
        crate::secrets::SecretBox::load(settings.secret_key.as_deref(), &settings.data_dir)
            .context("loading the secret key")?,
    );
    let settings = Arc::new(settings);
    let routes = RouteTable::new(store.clone(), backend.clone());
    let clock: Arc<dyn crate::lifecycle::clock::Clock> = Arc::new(SystemClock);
    let activity = ActivityClocks::new(store.clone(), clock.clone());
    let revocations = Revocations::new();
    let mut metrics = MetricsBuilder::new();
    // The notebooks' sockets reach the workflows' API too; it exists once the state does.
    let notebook_api = crate::api::files::NotebookApi::default();
    let lifecycle = Lifecycle::new(LifecycleParts {
        store: store.clone(),
        backend: backend.clone(),
        settings: settings.clone(),
        routes: routes.clone(),
        clocks: activity.clone(),
        secrets: secrets.clone(),
        revocations: revocations.clone(),
        metrics: metrics.notebooks(),
        clock: clock.clone(),
        file_server: Some(Arc::new(crate::api::files::FileApi {
            api: notebook_api.clone(),
        })),
    });
    metrics.plugins(plugins.clone());
    let ssh = ssh.map(|(addr, fingerprint, public_key, config)| {
        SshDoor::new(DoorParts {
            addr,
            config,
            ports: crate::ssh::ports::Ports::new(settings.ssh_ports),
            stop: CancellationToken::new(),
            fingerprint,
            public_key,
            failures: Arc::new(crate::ssh::failures::Failures::new()),
            store: store.clone(),
            backend,
            routes: routes.clone(),
            activity: activity.clone(),
            revocations: revocations.clone(),
        })
    });
    let models = crate::models::Models::new(crate::models::ModelsParts {
        store: store.clone(),
        backend: lifecycle.backend().clone(),
        secrets: secrets.clone(),
        data_dir: settings.data_dir.clone(),
        tasks: lifecycle.tasks().clone(),
        host: plugins.clone(),
        host_settings: settings.plugins.host_settings(),
    });
    let services = crate::serving::Services::new(crate::serving::ServicesParts {
        store: store.clone(),
        models: models.clone(),
        host: plugins.clone(),
        onnxruntime_lib: settings.onnxruntime_lib.clone(),
        tasks: lifecycle.tasks().clone(),
        quota: settings.quota.services_per_user,
        clock: clock.clone(),
        hour_secs: settings.lease_hour_secs,
        minute_secs: settings.deploy_minute_secs,
        metrics: metrics.inference(),
        backend: lifecycle.backend().clone(),
        flavors: settings.flavors.clone(),
        log: crate::serving::logs::ServiceLog::new(&settings.data_dir, clock.clone()),
    });
    let apps = crate::serving::apps::Apps::new(store.clone(), secrets.clone());
    let batches = crate::batch::Batches::new(crate::batch::BatchesParts {
        store: store.clone(),
        models: models.clone(),
        services: services.clone(),
        secrets: secrets.clone(),
        tasks: lifecycle.tasks().clone(),
        quota: settings.quota.batch_services_per_user,
        manifest_lines: settings.batch.manifest_lines,
    });
    let plugins = crate::plugins::Plugins::new(settings.clone(), store.clone(), plugins);
    let algorithms = crate::training::algorithms::Algorithms::new(
        store.clone(),
        plugins.clone(),
        secrets.clone(),
    );
    let jobs = crate::training::jobs::Jobs::new(crate::training::jobs::JobsParts {
        store: store.clone(),
        backend: lifecycle.backend().clone(),
        algorithms: algorithms.clone(),
        plugins: plugins.clone(),
        secrets: secrets.clone(),
        tasks: lifecycle.tasks().clone(),
        flavors: settings.flavors.clone(),
        settings: settings.training.clone(),
        hour_secs: settings.lease_hour_secs,
        data_dir: settings.data_dir.clone(),
    });
    let searches = crate::training::search::Searches::new(
        store.clone(),
        jobs.clone(),
        lifecycle.tasks().clone(),
    );
    let engine = crate::workflows::runner::Engine::new(crate::workflows::runner::EngineParts {
        store: store.clone(),
        plugins: plugins.clone(),
        jobs: jobs.clone(),
        models: models.clone(),
        services: services.clone(),
        tasks: lifecycle.tasks().clone(),
        base_url: settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", settings.http_addr)),
    });
    let workflows = crate::workflows::service::Workflows::new(
        store.clone(),
        settings.quota.workflows_per_user,
        engine,
        settings.cron_seconds,
    );
    let state = AppState::new(Services {
        auth: Authenticator::new(
            store.clone(),
            auth::CookieJar::new(settings.origins.secure()),
            Duration::from_secs(u64::from(settings.session_hours) * 3600),
            revocations,
        ),
        settings,
        store,
        mounts: lifecycle.mounts().clone(),
        uploads: lifecycle.uploads().clone(),
        saves: lifecycle.saves().clone(),
        lifecycle,
        routes,
        activity,
        ssh,
        models,
        services,
        apps,
        batches,
        algorithms,
        jobs,
        searches,
        workflows,
        plugins,
        secrets,
        metrics: metrics.build(),
        engine_relays: crate::upstream::Relays::default(),
        tunnel,
    });
    notebook_api.connect(&state);
    Ok(state)
}

/// The backend of `kind`.
fn backend_of(
    kind: BackendKind,
    settings: &Settings,
    tunnel: Option<&atelier_tunnel::hub::TunnelHub>,
) -> anyhow::Result<Arc<dyn Backend>> {
    Ok(match kind {
        BackendKind::Process => Arc::new(ProcessBackend::new(settings)?),
        BackendKind::External => Arc::new(ExternalBackend::new(settings)?),
        BackendKind::Docker => Arc::new(crate::backends::docker::DockerBackend::new(settings)?),
        BackendKind::Slurm => Arc::new(crate::backends::slurm::backend::SlurmBackend::new(
            settings,
            tunnel.cloned(),
        )?),
    })
}

/// The default backend, or it and the one flavors name beside it (`backends::routed`),
/// told where the notebooks already made are.
async fn build_backend(
    settings: &Settings,
    store: &Store,
    tunnel: Option<&atelier_tunnel::hub::TunnelHub>,
) -> anyhow::Result<Arc<dyn Backend>> {
    let kind = settings.backend.kind;
    let main = backend_of(kind, settings, tunnel)?;
    // Settings::validate allows one other kind at most.
    let Some(other) = settings
        .flavors
        .iter()
        .filter_map(|f| f.backend)
        .find(|k| *k != kind)
    else {
        return Ok(main);
    };
    let placed: Vec<(String, String)> = sqlx::query_as("SELECT id, backend FROM notebooks")
        .fetch_all(&store.pool)
        .await
        .context("reading where notebooks run")?;
    Ok(Arc::new(crate::backends::routed::Routed::new(
        (kind, main),
        (other, backend_of(other, settings, tunnel)?),
        placed,
    )))
}

/// The connect-back tunnel's listener, when `tunnel.listen` is set; its certificate is kept
/// under `<data dir>/tunnel`.
async fn start_tunnel(
    settings: &Settings,
) -> anyhow::Result<Option<atelier_tunnel::hub::TunnelHub>> {
    let Some(listen) = settings.tunnel.listen else {
        return Ok(None);
    };
    let mut hub = atelier_tunnel::hub::HubSettings::new(listen, settings.data_dir.join("tunnel"));
    hub.public_address = settings.tunnel.public_address.clone();
    let hub = atelier_tunnel::hub::TunnelHub::start(hub)
        .await
        .context("starting the connect-back tunnel (set ATELIER_TUNNEL_ADDR to another address, or to `off`)")?;
    println!(
        "Connect-back tunnel on {} (runtimes dial {}, certificate {})",
        hub.local_addr(),
        hub.address(),
        hub.fingerprint()
    );
    Ok(Some(hub))
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let addr = settings.http_addr;
    let state = build(settings).await?;
    state
        .lifecycle
        .resume()
        .await
        .context("resuming notebooks")?;
    state
        .models
        .resume()
        .await
        .context("resuming model imports")?;
    state.services.resume().await.context("resuming services")?;
    state
        .batches
        .resume()
        .await
        .context("resuming batch services")?;
    state
        .jobs
        .resume()
        .await
        .context("resuming training jobs")?;
    state
        .searches
        .resume()
        .await
        .context("resuming training searches")?;
    state
        .workflows
        .engine()
        .resume()
        .await
        .context("resuming workflow runs")?;
    let backend = state.lifecycle.backend().clone();
    // A warm-up: cut short at shutdown, nothing is lost.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move { backend.warm_up().await });
    state.plugins.preload();
    browser_warnings(&state.settings);
    let lease_hour = state.settings.lease_hour_secs;
    if lease_hour != 3600 {
        tracing::warn!(
            lease_hour_secs = lease_hour,
            "ATELIER_LEASE_HOUR is set: one hour of an auto-stop lease lasts {lease_hour} s, not 3600 (for tests and demos only)"
        );
        eprintln!(
            "WARNING: one hour of an auto-stop lease lasts {lease_hour} s here (ATELIER_LEASE_HOUR); for tests and demos only"
        );
    }

    if state.settings.cron_seconds {
        tracing::warn!(
            "ATELIER_CRON_SECONDS is set: workflow schedules may fire every second (for tests and demos only)"
        );
    }

    let shutdown = CancellationToken::new();
    let loops = tokio_util::task::TaskTracker::new();
    loops.spawn(health::run_loop(
        state.lifecycle.clone(),
        HEALTH_EVERY,
        shutdown.clone(),
    ));
    loops.spawn(flush_loop(state.clone(), shutdown.clone()));
    loops.spawn(crate::notebooks::autostop::run_loop(
        state.lifecycle.clone(),
        shutdown.clone(),
    ));
    loops.spawn(state.services.clone().auto_stop_loop(shutdown.clone()));
    loops.spawn(state.services.clone().retention_loop(shutdown.clone()));
    loops.spawn(
        crate::notify::Webhooks::new(
            state.store.clone(),
            state.secrets.clone(),
            state.settings.webhook_allow_private,
        )
        .run(shutdown.clone()),
    );
    loops.spawn(state.services.log().clone().run(shutdown.clone()));
    loops.spawn(state.workflows.clone().schedule_loop(shutdown.clone()));
    loops.close();

    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("listening on {addr} (is another gateway running? set ATELIER_HTTP_ADDR)")
    })?;
    let local = listener.local_addr()?;
    println!("Atelier is listening on http://{local}/");
    tracing::info!(%local, data_dir = %state.settings.data_dir.display(), "gateway started");

    if let Some(ssh) = &state.ssh {
        let listener = tokio::net::TcpListener::bind(ssh.addr).await.with_context(|| {
            format!(
                "listening for SSH on {} (set ATELIER_SSH_ADDR to another address, or to `off`)",
                ssh.addr
            )
        })?;
        let local = listener.local_addr()?;
        println!("SSH front door on {local} (host key {})", ssh.fingerprint);
        tracing::info!(%local, fingerprint = %ssh.fingerprint, "SSH front door started");
        loops.spawn(crate::ssh::server::serve(ssh.clone(), listener, None));
        loops.spawn(crate::ssh::failures::flush_loop(
            state.store.clone(),
            ssh.failures.clone(),
            ssh.stop.clone(),
        ));
        crate::ssh::ports::open_all(ssh).await;
    }
    let app = crate::api::router(state.clone());
    serve_http(listener, state.clone(), app, wait_for_signal()).await;
    shutdown.cancel();
    if let Some(ssh) = &state.ssh {
        ssh.stop.cancel();
    }

    tracing::info!("shutting down; notebooks keep running");
    state.engine_relays.shutdown().await;
    if let Some(tunnel) = &state.tunnel {
        // Sessions end; runtimes keep running and dial the next gateway.
        tunnel.shutdown().await;
    }
    loops.wait().await;
    state.lifecycle.files().shutdown().await;
    // Running batch jobs end now and go on at the next start (their items are durable).
    state.batches.shutdown();
    // Training jobs' runners end; their workers go on and are found again at the next start.
    state.jobs.shutdown();
    state.searches.shutdown();
    state.workflows.engine().shutdown();
    if let Err(e) = state.activity.flush().await {
        tracing::warn!(error = %e, "writing activity at shutdown failed");
    }
    let tasks = state.lifecycle.tasks();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("lifecycle tasks still running; the next start resumes them");
    }
    Ok(())
}

/// Settings that weaken what browsers are protected by, said at start.
fn browser_warnings(settings: &Settings) {
    if settings.notebook_origin == crate::config::NotebookOrigin::Path {
        tracing::warn!(
            "ATELIER_NOTEBOOK_ORIGIN=path: notebooks are served on the console's origin with the session cookie, so JavaScript in a notebook page can use the API as whoever views it"
        );
        eprintln!(
            "WARNING: ATELIER_NOTEBOOK_ORIGIN=path: notebooks share the console's origin; JavaScript in a notebook page (an extension, a notebook's output) can call the API as its viewer. Use the default (subdomain) unless every notebook's content is trusted."
        );
    }
    if settings.public_url.is_none() && settings.http_addr.ip().is_unspecified() {
        tracing::warn!(
            public_url = %settings.origins.console(),
            "ATELIER_PUBLIC_URL is not set and the gateway listens on every address: browser logins work only at this URL; set ATELIER_PUBLIC_URL to the URL browsers use"
        );
    }
}

/// How long open HTTP connections get to finish their requests at shutdown.
const DRAIN_FOR: Duration = Duration::from_secs(10);

/// Serves HTTP/1 and HTTP/2 (h2c) on `listener` until `stop` resolves, then lets open
/// connections finish for up to [`DRAIN_FOR`].
///
/// Each connection is one task that also drives the connections to notebook servers its
/// requests open ([`ConnUpstreams`]). Requests to a notebook's own host
/// (`{id}.<notebook domain>`, [`proxy::host`]) and to the console's `/nb/…` go straight to the
/// proxy; the rest through `app`, with the peer address as [`ConnectInfo`].
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    state: AppState,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()>,
) {
    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::response::IntoResponse;

    use crate::api::error::ApiError;
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use tower::Service;

    let builder = auto::Builder::new(TokioExecutor::new());
    let shutdown = Arc::new(crate::upstream::Shutdown::default());
    let connections = tokio_util::task::TaskTracker::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        // No Nagle: WebSocket frames and small responses leave at once (with it, a kernel's
        // reply waits ~40 ms for the delayed ACK of the message before it).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY on an incoming connection");
        }
        let (app, state, builder, shutdown) = (
            app.clone(),
            state.clone(),
            builder.clone(),
            shutdown.clone(),
        );
        connections.spawn(async move {
            let (upstreams, driver) = ConnUpstreams::new();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let (state, upstreams, mut app) = (state.clone(), upstreams.clone(), app.clone());
                async move {
                    use proxy::host::Front;
                    match proxy::host::front(&state.settings.origins, req.headers(), req.uri()) {
                        Front::Notebook(id) => {
                            let req = req.map(Body::new);
                            let resp =
                                proxy::serve_notebook_host(&state, &id, req, Some(&upstreams));
                            Ok::<_, std::convert::Infallible>(resp.await)
                        }
                        Front::Console if req.uri().path().starts_with("/nb/") => {
                            let resp = proxy::serve(&state, req.map(Body::new), Some(&upstreams));
                            Ok(resp.await)
                        }
                        Front::Console => {
                            req.extensions_mut().insert(ConnectInfo(peer));
                            app.call(req).await
                        }
                        Front::Nobody => {
                            Ok(ApiError::not_found("no notebook has this host name")
                                .into_response())
                        }
                        Front::Bad(why) => {
                            Ok(ApiError::invalid(format!("bad Host: {why}")).into_response())
                        }
                    }
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(e) = driver.drive(conn, shutdown).await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    shutdown.begin();
    connections.close();
    if tokio::time::timeout(DRAIN_FOR, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_FOR:?}; closing them");
    }
}

/// Accept errors are mostly transient (a connection reset before accept, or out of file
/// descriptors); the latter gets a pause so the loop does not spin.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn flush_loop(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ACTIVITY_FLUSH_EVERY);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = state.activity.flush().await {
                    tracing::warn!(error = %e, "writing activity failed");
                }
                n += 1;
                // Expired browser sessions, about once an hour.
                if n.is_multiple_of(360)
                    && let Ok(mut conn) = state.store.pool.acquire().await
                {
                    let _ = users::delete_expired_sessions(&mut conn, &store::now()).await;
                }
            }
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// On the first start: an `admin` user with the token from `ATELIER_ADMIN_TOKEN`, or a random
/// one printed once.
async fn bootstrap_admin(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    let mut tx = store.write().await?;
    if users::count_admins(&mut tx).await? > 0 {
        if let Some(t) = &settings.admin_token
            && users::credential_by_hash(&mut tx, &auth::hash_secret(t))
                .await?
                .is_none()
        {
            tracing::warn!(
                "ATELIER_ADMIN_TOKEN is only used when the database is created; it matches no token here"
            );
        }
        return Ok(());
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = store::now();
    users::insert_user(&mut tx, &id, "admin", "admin", &now).await?;
    let (secret, printed) = match &settings.admin_token {
        Some(t) => (t.clone(), false),
        None => (auth::new_secret("atl_"), true),
    };
    users::insert_token(
        &mut tx,
        users::NewToken {
            id: &uuid::Uuid::new_v4().to_string(),
            user_id: &id,
            kind: "api",
            secret_hash: &auth::hash_secret(&secret),
            label: "bootstrap",
            now: &now,
            expires_at: None,
        },
    )
    .await?;
    tx.commit().await?;
    if printed {
        println!("Created user 'admin'. Its API token (shown only this once): {secret}");
    } else {
        println!("Created user 'admin' with the API token from ATELIER_ADMIN_TOKEN.");
    }
    Ok(())
}
