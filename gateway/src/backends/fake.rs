//! A backend that runs nothing, for tests of what sits above the `Backend` contract (the
//! lifecycle, auto-stop, the services to come): it launches instantly, keeps which notebooks
//! it has running in memory, and fails where its [`Faults`] say, so a fault at any stage
//! can be injected. Built for the crate's own tests and, with the `test-util` feature, for
//! other crates'.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{Backend, BackendError, Handle, NotebookSpec, Observed, Progress, StopMode, Upstream};
use crate::store::events::EventKind;

/// Where a [`FakeBackend`] fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Preparing (pulling the image) fails, with `PullImageFailed`.
    pub prepare: bool,
    /// The server never answers (`wait_ready` fails).
    pub never_ready: bool,
    /// Preparing waits until [`FakeBackend::release`], so a test sees what is in flight.
    pub hold: bool,
}

/// A backend that runs nothing; see the module.
pub struct FakeBackend {
    faults: Faults,
    /// Ids of the notebooks launched and not stopped; shared with [`FakeBackend::restarted`]
    /// (what runs outlives the gateway).
    running: Arc<Mutex<HashSet<String>>>,
    /// Set by [`FakeBackend::release`]: held preparations go on.
    released: tokio::sync::watch::Sender<bool>,
    /// Ids given to `delete`, in order.
    deleted: Arc<Mutex<Vec<String>>>,
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new(Faults::default())
    }
}

impl FakeBackend {
    pub fn new(faults: Faults) -> Self {
        FakeBackend {
            faults,
            running: Arc::default(),
            released: tokio::sync::watch::Sender::new(false),
            deleted: Arc::default(),
        }
    }

    /// The backend a restarted gateway builds: a new instance that finds the notebooks
    /// this one left running.
    pub fn restarted(&self) -> FakeBackend {
        FakeBackend {
            faults: self.faults,
            running: self.running.clone(),
            released: tokio::sync::watch::Sender::new(*self.released.borrow()),
            deleted: self.deleted.clone(),
        }
    }

    /// Whether notebook `id` was launched here and runs.
    pub fn launched(&self, id: &str) -> bool {
        self.running().contains(id)
    }

    /// The ids given to `delete` so far, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Lets every held preparation (and every later one) go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id_of(handle: &Handle) -> Result<String, BackendError> {
        match handle {
            Handle::Fake(h) => Ok(h.fake.clone()),
            other => Err(BackendError::Unsupported(other.not_for("fake"))),
        }
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }
    async fn prepare(&self, _s: &NotebookSpec, p: &dyn Progress) -> Result<(), BackendError> {
        if self.faults.hold {
            let _ = self.released.subscribe().wait_for(|go| *go).await;
        }
        if self.faults.prepare {
            p.event(EventKind::PullImageFailed, Some("registry down"))
                .await;
            return Err(BackendError::Image("registry down".into()));
        }
        Ok(())
    }
    async fn launch(&self, spec: &NotebookSpec) -> Result<Handle, BackendError> {
        self.running().insert(spec.id.clone());
        Ok(Handle::Fake(crate::lifecycle::handle::FakeHandle {
            fake: spec.id.clone(),
        }))
    }
    async fn wait_ready(
        &self,
        _s: &NotebookSpec,
        _h: &Handle,
        _t: Duration,
        _p: &dyn Progress,
    ) -> Result<(), BackendError> {
        if self.faults.never_ready {
            return Err(BackendError::Start("never became ready".into()));
        }
        Ok(())
    }
    async fn poll(&self, handle: &Handle) -> Observed {
        match Self::id_of(handle) {
            Ok(id) if self.running().contains(&id) => Observed::Running,
            _ => Observed::Exited("gone".into()),
        }
    }
    async fn stop(&self, handle: &Handle, _m: StopMode) -> Result<(), BackendError> {
        let id = Self::id_of(handle)?;
        self.running().remove(&id);
        Ok(())
    }
    async fn delete(&self, id: &str) -> Result<(), BackendError> {
        self.running().remove(id);
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.to_owned());
        Ok(())
    }
    fn upstream(&self, h: &Handle) -> Result<Upstream, BackendError> {
        Self::id_of(h)?;
        Err(BackendError::Unsupported(
            "the fake backend serves no Jupyter".into(),
        ))
    }
}
