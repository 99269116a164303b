//! One run of a batch service's job: the model version loaded as a real-time service
//! loads it (the built-in engine, or `instances` engine instances under the real-time
//! supervisor, `serving::instances`), the pending items done by `instances` workers, then
//! the manifests written from the item rows. See the module `batch` for the flow and its
//! invariant.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier_plugins::bindings::inference::atelier::plugin::inference_types as inf;
use aws_sdk_s3::primitives::ByteStream;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::input::{self, MAX_ITEM_BYTES};
use super::mapping::{self, Mapping};
use super::output::{Line, Output};
use super::request::{self, Target};
use super::{Batches, CALL_TIMEOUT, MAX_ANSWER_BYTES, decode};
use crate::error::Error;
use crate::lifecycle::batch::BatchStatus;
use crate::object_storage::{ObjectUri, connections, s3, transfer};
use crate::serving::instances::{Pool, StartError};
use crate::serving::runtime::{self, Deployment, VersionFiles};
use crate::serving::spec::{EngineKind, ServiceSpec, VersionSpec};
use crate::store::Store;
use crate::store::batch_services::{self as rows, ItemRow, ItemState};
use crate::store::resource_events::{BatchEvent, Row};
use crate::store::transition::Transition;

/// The seed's words for an input that could not be read (seed 9.5).
pub const DOWNLOAD_FAILED: &str = "Download file failed.";

/// Why a run ended before its end.
enum Halt {
    /// Stopped or deleted meanwhile.
    Cancelled,
    /// It cannot run: FAILED with this reason.
    Failed(String),
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for Halt {
    fn from(e: sqlx::Error) -> Self {
        Halt::Internal(e.into())
    }
}

/// Runs the job of service `id` until it is COMPLETED, FAILED or `cancel`led.
pub(super) async fn run(b: &Batches, id: &str, cancel: &CancellationToken) {
    let mut pool = None;
    let outcome = work(b, id, cancel, &mut pool).await;
    // The engine instances go before the job's end is recorded (a gateway killed in
    // between runs the job again, which adopts them), except when the gateway shuts down
    // under a running job: the next start adopts them.
    let shutdown = matches!(outcome, Err(Halt::Cancelled)) && still_runs(&b.inner.store, id).await;
    if let Some(p) = &pool {
        p.halt().await;
    }
    if !shutdown {
        b.inner.services.stop_engine_instances(id).await;
    }
    let why = match outcome {
        Ok(()) => {
            let done = end(
                &b.inner.store,
                id,
                &[BatchStatus::Running],
                BatchStatus::Completed,
                None,
                Row::of(id, None, BatchEvent::Executed),
            )
            .await;
            match done {
                Ok(true) => b.inner.services.log().gateway(id, "COMPLETED"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(batch = %id, error = ?e, "recording a completed batch job failed");
                }
            }
            return;
        }
        Err(Halt::Cancelled) => return,
        Err(Halt::Failed(why)) => why,
        Err(Halt::Internal(e)) => {
            tracing::error!(batch = %id, error = ?e, "a batch job failed on the gateway's side");
            "an internal error of the gateway (see its log)".to_string()
        }
    };
    match fail(&b.inner.store, id, &why).await {
        Ok(true) => b
            .inner
            .services
            .log()
            .gateway(id, &format!("FAILED: {why}")),
        Ok(false) => {}
        Err(e) => tracing::error!(batch = %id, error = ?e, "recording a failed batch job failed"),
    }
}

/// Whether the service still wants its job run (DEPLOYING or RUNNING: not stopped, not
/// deleted); true when the store cannot say, so nothing is stopped on a guess.
async fn still_runs(store: &Store, id: &str) -> bool {
    let Ok(mut conn) = store.pool.acquire().await else {
        return true;
    };
    match crate::store::transition::status_of::<BatchStatus>(&mut conn, id).await {
        Ok(s) => matches!(s, Some(BatchStatus::Deploying | BatchStatus::Running)),
        Err(_) => true,
    }
}

/// DEPLOYING or RUNNING → FAILED with the seed's event; false when it was neither.
pub(super) async fn fail(store: &Store, id: &str, why: &str) -> anyhow::Result<bool> {
    end(
        store,
        id,
        &[BatchStatus::Deploying, BatchStatus::Running],
        BatchStatus::Failed,
        Some(why),
        Row::filled(id, None, BatchEvent::Failed, &[why]),
    )
    .await
}

/// A run's end: `from` → `to` (COMPLETED or FAILED) with its end time, or nothing (false)
/// when the service moved meanwhile (a stop, a delete).
async fn end(
    store: &Store,
    id: &str,
    from: &[BatchStatus],
    to: BatchStatus,
    why: Option<&str>,
    event: Row<'_>,
) -> anyhow::Result<bool> {
    let mut tx = store.write().await?;
    let moved = Transition::new(id, from, to)
        .reason(why)
        .resource_event(event)
        .apply(&mut tx)
        .await?;
    if moved {
        rows::set_ended(&mut tx, id, &crate::store::now()).await?;
        tx.commit().await?;
    }
    Ok(moved)
}

/// What answers a run's items.
enum Model {
    /// The built-in engine with the version's processor, in the gateway's process.
    Builtin {
        host: Arc<atelier_plugins::Host>,
        deployment: Arc<Deployment>,
    },
    /// The version's own server: its instances, called over HTTP.
    Engine(Engine),
}

struct Engine {
    pool: Arc<Pool>,
    /// Rings when an instance comes into or leaves the rotation.
    changed: Arc<tokio::sync::Notify>,
    /// How long an item waits for a ready instance before the job fails (the timeout).
    patience: Duration,
}

/// What every item of a run shares.
struct Work {
    batch_id: String,
    store: Store,
    /// The service's log: each failed item's line.
    log: crate::serving::logs::ServiceLog,
    model: Model,
    client: aws_sdk_s3::Client,
    output: Output,
    target: Target,
    mapping: Option<Mapping>,
}

/// The run up to its manifests; `pool` receives the engine instances it starts (the
/// caller stops them).
async fn work(
    b: &Batches,
    id: &str,
    cancel: &CancellationToken,
    pool: &mut Option<Arc<Pool>>,
) -> Result<(), Halt> {
    let inner = &b.inner;
    let mut conn = inner.store.pool.acquire().await?;
    let Some(row) = rows::by_id(&mut conn, id).await? else {
        return Err(Halt::Cancelled);
    };
    drop(conn);
    if !matches!(row.status, BatchStatus::Deploying | BatchStatus::Running) {
        return Err(Halt::Cancelled);
    }
    let spec = decode(&row).map_err(|e| Halt::Internal(anyhow::anyhow!("{e}")))?;
    let label = format!("model {} {}", spec.model, spec.version);

    // The version, its API and mapping, loaded within the timeout.
    let (view, tree) = inner
        .models
        .version_for_service(&row.model_version_id)
        .await
        .map_err(|e| Halt::Failed(format!("{label}: {}", Error::from(e).message)))?;
    let builtin = runtime::runs_builtin(&view);
    let (target, schema) = if builtin {
        let config = view
            .model_config
            .as_ref()
            .ok_or_else(|| Halt::Failed(format!("{label} has no config.json")))?;
        Target::of(config.apis(), &spec.request_path).map_err(Halt::Failed)?
    } else {
        if view.processor.is_some() {
            return Err(Halt::Failed(super::engine_with_processor(&label)));
        }
        let config = view.model_config.as_ref().or(view.settings.config.as_ref());
        let apis = config.map(|c| c.apis()).unwrap_or_default();
        Target::for_engine(apis, Some(&spec.request_path)).map_err(Halt::Failed)?
    };
    let mapping = match (&spec.mapping, &schema) {
        (Some(m), Some(s)) => Some(Mapping::resolve(s, m).map_err(Halt::Failed)?),
        (Some(_), None) => {
            return Err(Halt::Failed(format!(
                "{label}: its API has no request schema for the mapping"
            )));
        }
        (None, _) => None,
    };
    let version = VersionSpec {
        model_id: spec.model_id.clone(),
        model: spec.model.clone(),
        version_id: row.model_version_id.clone(),
        version: spec.version.clone(),
        weight: 100,
        instances: spec.instances,
        envs: spec.envs.clone(),
        engine: if builtin {
            EngineKind::Builtin
        } else {
            EngineKind::Container
        },
        flavor: None,
    };
    let limit = Duration::from_secs(u64::from(spec.timeout_minutes) * 60);
    let model = if builtin {
        let tree = tree.ok_or_else(|| {
            Halt::Failed(format!("{label}: its files are not in the model store"))
        })?;
        let service_spec = ServiceSpec {
            models: vec![version.clone()],
            timeout_minutes: spec.timeout_minutes,
            auto_stop_seconds: None,
            traffic_limit: None,
            body_limit_bytes: MAX_ITEM_BYTES,
            call_timeout_ms: CALL_TIMEOUT.as_millis() as u64,
            app_auth: false,
            custom_settings: Vec::new(),
        };
        let files = VersionFiles {
            spec: version,
            view,
            tree,
        };
        let services = inner.services.clone();
        let (bid, name, owner) = (id.to_string(), row.name.clone(), row.owner_id.clone());
        let load = tokio::task::spawn_blocking(move || {
            let served = runtime::load_builtin(services.engines(), services.host(), files)?;
            Deployment::new(&bid, &name, &owner, &service_spec, vec![served])
        });
        tokio::select! {
            _ = cancel.cancelled() => return Err(Halt::Cancelled),
            loaded = tokio::time::timeout(limit, load) => match loaded {
                Err(_) => {
                    return Err(Halt::Failed(format!(
                        "{label} was not loaded within the timeout ({} minutes)",
                        spec.timeout_minutes
                    )));
                }
                Ok(Err(e)) => return Err(Halt::Internal(anyhow::anyhow!("the loading thread: {e}"))),
                Ok(Ok(Err(why))) => return Err(Halt::Failed(why)),
                Ok(Ok(Ok(d))) => Model::Builtin {
                    host: inner.services.host().clone(),
                    deployment: Arc::new(d),
                },
            },
        }
    } else {
        // The instances a gateway killed under the job left running are adopted.
        let mut conn = inner.store.pool.acquire().await?;
        let recorded = crate::store::service_instances::for_service(&mut conn, id).await?;
        drop(conn);
        let changed = Arc::new(tokio::sync::Notify::new());
        let ring = changed.clone();
        let started = inner
            .services
            .start_engine_pool(
                id,
                &row.owner_id,
                &version,
                &view,
                tree,
                &recorded,
                Arc::new(move || ring.notify_waiters()),
            )
            .await
            .map_err(Halt::Failed)?;
        *pool = Some(started.clone());
        tokio::select! {
            _ = cancel.cancelled() => return Err(Halt::Cancelled),
            up = tokio::time::timeout(limit, started.wait_started()) => match up {
                Err(_) => {
                    return Err(Halt::Failed(format!(
                        "the instances of {label} did not pass their startup check within the timeout ({} minutes){}",
                        spec.timeout_minutes,
                        started.trouble().map(|t| format!(": {t}")).unwrap_or_default()
                    )));
                }
                Ok(Err(StartError::Abnormal(why) | StartError::Failed(why))) => {
                    return Err(Halt::Failed(why));
                }
                Ok(Ok(())) => Model::Engine(Engine {
                    pool: started,
                    changed,
                    patience: limit,
                }),
            },
        }
    };
    if row.status == BatchStatus::Deploying {
        let mut tx = inner.store.write().await?;
        let moved = Transition::new(id, &[BatchStatus::Deploying], BatchStatus::Running)
            .resource_event(Row::filled(id, None, BatchEvent::Started, &[&row.name]))
            .apply(&mut tx)
            .await?;
        if !moved {
            return Err(Halt::Cancelled);
        }
        tx.commit().await?;
    }
    inner.services.log().gateway(
        id,
        &format!("RUNNING: {label} ready, {} at a time", spec.instances),
    );

    // The items, `instances` at a time.
    let client = connection_client(b, &row.connection_id)
        .await
        .map_err(Halt::Failed)?;
    let out = ObjectUri::parse(&spec.output).map_err(Halt::Failed)?;
    let w = Work {
        batch_id: id.to_string(),
        store: inner.store.clone(),
        log: inner.services.log().clone(),
        model,
        client,
        output: Output::new(&out, &row.task_id),
        target,
        mapping,
    };
    let mut conn = inner.store.pool.acquire().await?;
    let pending = rows::items(&mut conn, id, Some(ItemState::Pending)).await?;
    drop(conn);
    let workers = cancel.child_token();
    let fatal: Mutex<Option<String>> = Mutex::new(None);
    let progressed = AtomicBool::new(false);
    futures_util::stream::iter(pending)
        .for_each_concurrent(spec.instances as usize, |it| {
            let (w, workers, fatal, progressed) = (&w, &workers, &fatal, &progressed);
            async move {
                if workers.is_cancelled() {
                    return;
                }
                let outcome = tokio::select! {
                    _ = workers.cancelled() => return,
                    r = item(w, it) => r,
                };
                let outcome = match outcome {
                    // The first item done in this run: the restarts the job survived so
                    // far count no more (a long job may outlive many; only one that
                    // gets nowhere is given up, see `operations::MAX_RESUMES`).
                    Ok(()) if !progressed.swap(true, Ordering::Relaxed) => {
                        restart_count_cleared(&w.store, &w.batch_id).await
                    }
                    other => other,
                };
                if let Err(why) = outcome {
                    if let Ok(mut f) = fatal.lock() {
                        f.get_or_insert(why);
                    }
                    workers.cancel();
                }
            }
        })
        .await;
    if cancel.is_cancelled() {
        return Err(Halt::Cancelled);
    }
    if let Some(why) = fatal.lock().ok().and_then(|mut f| f.take()) {
        return Err(Halt::Failed(why));
    }

    // Every item is done: the manifests, from the rows (written again whole after a
    // restart: the same keys, no line twice).
    let mut conn = inner.store.pool.acquire().await?;
    let all = rows::items(&mut conn, id, None).await?;
    drop(conn);
    if let Some(left) = all.iter().find(|i| i.state() == ItemState::Pending) {
        return Err(Halt::Internal(anyhow::anyhow!(
            "item {} is still pending after the workers ended",
            left.seq
        )));
    }
    let lines: Vec<String> = all.iter().map(|i| manifest_line(&w.output, i)).collect();
    for (key, text) in w.output.manifests(&lines, inner.manifest_lines) {
        put(&w.client, &w.output.bucket, &key, text.into_bytes())
            .await
            .map_err(|e| Halt::Failed(format!("the result manifest cannot be written: {e}")))?;
    }
    Ok(())
}

fn manifest_line(o: &Output, i: &ItemRow) -> String {
    match i.state() {
        ItemState::Succeeded => Line::succeeded(&i.source, o.result_uri(&i.result_name)).text(),
        _ => Line::failed(&i.source, i.error.as_deref().unwrap_or(DOWNLOAD_FAILED)).text(),
    }
}

/// The job's durable operation made progress: its count of resumes back to 0.
async fn restart_count_cleared(store: &Store, id: &str) -> Result<(), String> {
    let mut conn = store.pool.acquire().await.map_err(|e| e.to_string())?;
    crate::store::operations::progressed::<BatchStatus>(&mut conn, id)
        .await
        .map_err(|e| format!("recording the job's progress: {e}"))
}

/// A client of the service's storage connection.
async fn connection_client(b: &Batches, connection_id: &str) -> Result<aws_sdk_s3::Client, String> {
    let mut conn = b
        .inner
        .store
        .pool
        .acquire()
        .await
        .map_err(|e| e.to_string())?;
    let c = crate::store::storage_connections::by_id(&mut conn, connection_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the storage connection of the service is gone")?;
    drop(conn);
    let t = connections::target(&c, &b.inner.secrets).map_err(|e| e.to_string())?;
    Ok(s3::client(&t, Duration::from_secs(60), 3))
}

/// Why an item has no answer.
enum Fault {
    /// The item's: its manifest line's `error_message`.
    Item(String),
    /// The job's: no instance of the model is ready for longer than the timeout.
    Job(String),
}

impl From<String> for Fault {
    fn from(why: String) -> Self {
        Fault::Item(why)
    }
}

impl Fault {
    /// The item's reason, said in context.
    fn at(self, f: impl FnOnce(String) -> String) -> Fault {
        match self {
            Fault::Item(why) => Fault::Item(f(why)),
            job => job,
        }
    }
}

/// One item: its result written and its row marked, or its row marked FAILED with why.
/// An error is the job's: the output cannot be read or written, the store failed, no
/// instance of the model is ready.
async fn item(w: &Work, it: ItemRow) -> Result<(), String> {
    let key = w.output.result_key(&it.result_name);
    // Its result written before a crash, its row not yet marked: done.
    let done = exists(&w.client, &w.output.bucket, &key)
        .await
        .map_err(|e| format!("the output folder cannot be read: {e}"))?;
    let (state, error) = if done {
        (ItemState::Succeeded, None)
    } else {
        match infer(w, &it).await {
            Ok(body) => {
                put(&w.client, &w.output.bucket, &key, body)
                    .await
                    .map_err(|e| format!("the output folder is not writable: {e}"))?;
                (ItemState::Succeeded, None)
            }
            Err(Fault::Item(why)) => {
                w.log
                    .gateway(&w.batch_id, &format!("{} FAILED: {why}", it.source));
                (ItemState::Failed, Some(why))
            }
            Err(Fault::Job(why)) => return Err(why),
        }
    };
    let mut conn = w.store.pool.acquire().await.map_err(|e| e.to_string())?;
    rows::finish_item(&mut conn, &w.batch_id, it.seq, state, error.as_deref())
        .await
        .map_err(|e| format!("recording item {}: {e}", it.seq))?;
    Ok(())
}

/// What the model answered for one input file.
async fn infer(w: &Work, it: &ItemRow) -> Result<Vec<u8>, Fault> {
    if let Some(size) = it.size
        && size as u64 > MAX_ITEM_BYTES
    {
        return Err(too_large(size as u64).into());
    }
    let u = ObjectUri {
        bucket: it.bucket.clone(),
        key: it.object_key.clone(),
    };
    let data = match read(&w.client, &u, MAX_ITEM_BYTES).await {
        Ok(d) => d,
        Err(Read::TooLarge(n)) => return Err(too_large(n).into()),
        Err(Read::Failed(e)) => {
            tracing::info!(batch = %w.batch_id, source = %it.source, error = %e, "a batch input could not be read");
            return Err(Fault::Item(DOWNLOAD_FAILED.into()));
        }
    };
    let name = input::base_name(&it.object_key);
    match &w.mapping {
        Some(m) if request::is_csv(name) => {
            let text = String::from_utf8(data).map_err(|_| format!("{name} is not UTF-8 text"))?;
            let rows = mapping::csv_rows(&text).map_err(|e| format!("{name}: {e}"))?;
            if rows.is_empty() {
                return Err(format!("{name} has no rows").into());
            }
            let mut out = Vec::new();
            for (i, row) in rows.iter().enumerate() {
                let at = |e: String| format!("{name} row {}: {e}", i + 1);
                let req = m.request(row).map_err(at)?;
                let body = call(w, w.target.json(&req)).await.map_err(|f| f.at(at))?;
                out.extend_from_slice(one_line(&body).as_bytes());
                out.push(b'\n');
                if out.len() as u64 > MAX_ANSWER_BYTES {
                    return Err(
                        too_long_answer(&format!("the answers to {name}'s rows are")).into(),
                    );
                }
            }
            Ok(out)
        }
        _ => {
            let req = w.target.file(name, data)?;
            call(w, req).await
        }
    }
}

/// The seed's size rule (9.5: "image < 12 MB … > 12 MB ⇒ error").
fn too_large(size: u64) -> String {
    format!(
        "The file is {size} bytes, larger than the {} MB a batch input file may be.",
        MAX_ITEM_BYTES / (1024 * 1024)
    )
}

/// An answer over the cap on what is read of one item's answers.
fn too_long_answer(what: &str) -> String {
    format!(
        "{what} larger than the {} MB a batch result may be",
        MAX_ANSWER_BYTES / (1024 * 1024)
    )
}

/// One request to the model; an answer of 400 or more (the built-in engine), or other
/// than 2xx (an engine's server), is the item's error.
async fn call(w: &Work, req: inf::Request) -> Result<Vec<u8>, Fault> {
    match &w.model {
        Model::Builtin { host, deployment } => {
            let r = crate::serving::call::run_loaded(host, deployment.clone(), req, CALL_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            if r.status >= 400 {
                return Err(answered(r.status, &r.body).into());
            }
            if r.body.len() as u64 > MAX_ANSWER_BYTES {
                return Err(too_long_answer("the model's answer is").into());
            }
            Ok(r.body)
        }
        Model::Engine(e) => call_engine(w, e, req).await,
    }
}

/// An answer that is an error, with the start of what the model said.
fn answered(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let shown: String = text.chars().take(500).collect();
    format!("the model answered {status}: {shown}")
}

/// The most of an error answer's body read (for its message).
const ERROR_BYTES: usize = 4096;

/// `POST` of the request to a ready instance's server, within the call timeout (the whole
/// answer, not only its head); at most [`MAX_ANSWER_BYTES`] of its body are read. What the
/// server answers is data: its headers name nothing the gateway writes.
async fn call_engine(w: &Work, e: &Engine, req: inf::Request) -> Result<Vec<u8>, Fault> {
    let endpoint = ready_instance(e).await?;
    let (endpoint, _) = crate::routing::Endpoint::of(&endpoint)
        .ok_or_else(|| "the instance cannot be reached".to_string())?;
    let (content_type, body) = request::http_body(req);
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(w.target.path.as_str())
        .header(http::header::HOST, "localhost:8080")
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body.into())
        .map_err(|e| format!("the request to {}: {e}", w.target.path))?;
    let exchange = async {
        let resp = crate::upstream::send(None, &endpoint, request)
            .await
            .map_err(|e| format!("the model's server did not answer: {e}"))?;
        let status = resp.status().as_u16();
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if !(200..300).contains(&status) {
            let (head, _) = read_at_most(resp.into_body(), ERROR_BYTES).await;
            return Err(answered(status, &head));
        }
        if declared.is_some_and(|n| n > MAX_ANSWER_BYTES) {
            return Err(too_long_answer("the model's answer is"));
        }
        match read_at_most(resp.into_body(), MAX_ANSWER_BYTES as usize).await {
            (body, Ok(false)) => Ok(body),
            (_, Ok(true)) => Err(too_long_answer("the model's answer is")),
            (_, Err(e)) => Err(format!("reading the model's answer: {e}")),
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Ok(r) => r.map_err(Fault::Item),
        Err(_) => Err(Fault::Item(format!(
            "the model did not answer within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// At most `max` bytes of `body`: what was read, and whether there was more (or why the
/// body broke off).
async fn read_at_most(
    mut body: hyper::body::Incoming,
    max: usize,
) -> (Vec<u8>, Result<bool, String>) {
    use http_body_util::BodyExt;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return (out, Err(e.to_string())),
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                let room = max - out.len();
                out.extend_from_slice(&data[..room]);
                return (out, Ok(true));
            }
            out.extend_from_slice(&data);
        }
    }
    (out, Ok(false))
}

/// A ready instance's endpoint, waiting while none is (they restart); the job fails when
/// none is for longer than the timeout.
async fn ready_instance(e: &Engine) -> Result<crate::backends::Endpoint, Fault> {
    let deadline = tokio::time::Instant::now() + e.patience;
    loop {
        let changed = e.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(endpoint) = e.pool.pick() {
            return Ok(endpoint);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Fault::Job(format!(
                "no instance of the model was ready for {} minutes{}",
                e.patience.as_secs() / 60,
                e.pool
                    .trouble()
                    .map(|t| format!(": {t}"))
                    .unwrap_or_default()
            )));
        }
        // A change of readiness wakes it; a second at most, should one be missed.
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A CSV row's answer on one line: JSON compacted, anything else as a JSON string.
fn one_line(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v.to_string(),
        Err(_) => serde_json::Value::String(String::from_utf8_lossy(body).into_owned()).to_string(),
    }
}

enum Read {
    TooLarge(u64),
    Failed(String),
}

/// An object read whole, at most `max` bytes.
async fn read(client: &aws_sdk_s3::Client, u: &ObjectUri, max: u64) -> Result<Vec<u8>, Read> {
    let out = client
        .get_object()
        .bucket(&u.bucket)
        .key(&u.key)
        .send()
        .await
        .map_err(|e| Read::Failed(transfer::s3_error(&e, &format!("reading {u}"))))?;
    let declared = out.content_length().unwrap_or(0).max(0) as u64;
    if declared > max {
        return Err(Read::TooLarge(declared));
    }
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| Read::Failed(format!("reading {u}: {e}")))?
        .into_bytes();
    if body.len() as u64 > max {
        return Err(Read::TooLarge(body.len() as u64));
    }
    Ok(body.to_vec())
}

/// A small object read whole (an input manifest).
pub(super) async fn read_small(
    client: &aws_sdk_s3::Client,
    u: &ObjectUri,
    max: u64,
) -> Result<Vec<u8>, String> {
    read(client, u, max).await.map_err(|e| match e {
        Read::TooLarge(n) => format!("{u} is {n} bytes; at most {max} are read"),
        Read::Failed(e) => e,
    })
}

/// Whether an object exists.
async fn exists(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<bool, String> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
        Err(e) => Err(transfer::s3_error(
            &e,
            &format!("reading obs://{bucket}/{key}"),
        )),
    }
}

async fn put(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| transfer::s3_error(&e, &format!("writing obs://{bucket}/{key}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_answers_are_one_line_each() {
        assert_eq!(one_line(b"{\n \"a\": [1, 2]\n}"), r#"{"a":[1,2]}"#);
        assert_eq!(one_line(b"two\nlines"), r#""two\nlines""#);
        assert_eq!(
            too_large(13 * 1024 * 1024),
            "The file is 13631488 bytes, larger than the 12 MB a batch input file may be."
        );
    }
}
