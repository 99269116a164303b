//! Two backends behind one: the gateway's default (`backend.kind`) and `slurm`, each
//! notebook on the one its flavor names (`flavors[].backend`), so one gateway runs small
//! notebooks here and big ones on the cluster.
//!
//! Which backend holds a notebook: the one its flavor named when it was created, kept in the
//! notebook's row (`backend`) and given here at start ([`Routed::new`]) and at each
//! `prepare`; a handle names its own backend. Changing a notebook's flavor to one of the
//! other backend is refused by the lifecycle (its files stay where they are). Model engines
//! and training workers run on the default backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::files::NotebookFiles;
use super::workdisk::DiskInfo;
use super::{
    Backend, BackendError, Endpoint, EngineSpec, Handle, NotebookSpec, Observed, Progress,
    SaveImage, SaveImageError, SshLink, StopMode, Upstream, Usage, WorkerExit, WorkerSpec,
};
use crate::config::BackendKind;

pub struct Routed {
    default: Arc<dyn Backend>,
    default_kind: BackendKind,
    other: Arc<dyn Backend>,
    other_kind: BackendKind,
    /// Notebook id → on `other`.
    placed: Mutex<HashMap<String, bool>>,
}

impl Routed {
    /// `placed`: each known notebook's backend name (the rows' `backend`).
    pub fn new(
        (default_kind, default): (BackendKind, Arc<dyn Backend>),
        (other_kind, other): (BackendKind, Arc<dyn Backend>),
        placed: impl IntoIterator<Item = (String, String)>,
    ) -> Routed {
        let placed = placed
            .into_iter()
            .map(|(id, backend)| (id, backend == other_kind.name()))
            .collect();
        Routed {
            default,
            default_kind,
            other,
            other_kind,
            placed: Mutex::new(placed),
        }
    }

    fn placed(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.placed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn by_kind(&self, on_other: bool) -> &dyn Backend {
        if on_other {
            self.other.as_ref()
        } else {
            self.default.as_ref()
        }
    }

    /// The backend of a notebook about to run (its flavor's), remembered for its id.
    fn for_spec(&self, spec: &NotebookSpec) -> &dyn Backend {
        let on_other = spec.flavor.backend_or(self.default_kind) == self.other_kind;
        self.placed().insert(spec.id.clone(), on_other);
        self.by_kind(on_other)
    }

    /// The backend of a notebook known by id (the default for one never placed).
    fn for_id(&self, id: &str) -> &dyn Backend {
        let on_other = self.placed().get(id).copied().unwrap_or(false);
        self.by_kind(on_other)
    }

    /// The backend that wrote `handle` (the default for one it cannot tell: it says why).
    fn for_handle(&self, handle: &Handle) -> &dyn Backend {
        self.by_kind(handle.backend() == self.other.name())
    }
}

#[async_trait]
impl Backend for Routed {
    fn name(&self) -> &'static str {
        self.default.name()
    }

    fn refusal(&self) -> Option<String> {
        self.default.refusal()
    }

    fn warnings(&self) -> Vec<String> {
        let mut w = self.default.warnings();
        w.extend(self.other.warnings());
        w
    }

    async fn warm_up(&self) {
        tokio::join!(self.default.warm_up(), self.other.warm_up());
    }

    async fn prepare(
        &self,
        spec: &NotebookSpec,
        progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        self.for_spec(spec).prepare(spec, progress).await
    }

    async fn launch(&self, spec: &NotebookSpec) -> Result<Handle, BackendError> {
        self.for_spec(spec).launch(spec).await
    }

    async fn wait_ready(
        &self,
        spec: &NotebookSpec,
        handle: &Handle,
        timeout: Duration,
        progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        self.for_handle(handle)
            .wait_ready(spec, handle, timeout, progress)
            .await
    }

    async fn poll(&self, handle: &Handle) -> Observed {
        self.for_handle(handle).poll(handle).await
    }

    async fn stop(&self, handle: &Handle, mode: StopMode) -> Result<(), BackendError> {
        self.for_handle(handle).stop(handle, mode).await
    }

    async fn delete(&self, id: &str) -> Result<(), BackendError> {
        self.for_id(id).delete(id).await?;
        self.placed().remove(id);
        Ok(())
    }

    fn upstream(&self, handle: &Handle) -> Result<Upstream, BackendError> {
        self.for_handle(handle).upstream(handle)
    }

    async fn ssh_link(&self, handle: &Handle) -> Result<SshLink, BackendError> {
        self.for_handle(handle).ssh_link(handle).await
    }

    async fn extend(&self, handle: &Handle, left: Duration) -> Result<(), BackendError> {
        self.for_handle(handle).extend(handle, left).await
    }

    async fn usage(&self, handle: &Handle) -> Option<Usage> {
        self.for_handle(handle).usage(handle).await
    }

    fn files(&self, id: &str) -> Result<Box<dyn NotebookFiles>, BackendError> {
        self.for_id(id).files(id)
    }

    fn work_disk(&self, id: &str) -> Option<DiskInfo> {
        self.for_id(id).work_disk(id)
    }

    async fn expand_work_disk(
        &self,
        handle: &Handle,
        size_gb: u32,
    ) -> Result<DiskInfo, BackendError> {
        self.for_handle(handle)
            .expand_work_disk(handle, size_gb)
            .await
    }

    async fn ensure_image(&self, reference: &str) -> Result<(), BackendError> {
        self.default.ensure_image(reference).await
    }

    async fn launch_engine(&self, spec: &EngineSpec) -> Result<Handle, BackendError> {
        let on_other = spec.flavor.backend_or(self.default_kind) == self.other_kind;
        self.by_kind(on_other).launch_engine(spec).await
    }

    fn engine_endpoint(&self, handle: &Handle) -> Result<Endpoint, BackendError> {
        self.for_handle(handle).engine_endpoint(handle)
    }

    fn engine_log_dir(&self, handle: &Handle) -> Option<std::path::PathBuf> {
        self.for_handle(handle).engine_log_dir(handle)
    }

    async fn remove_engine(&self, id: &str) -> Result<(), BackendError> {
        self.default.remove_engine(id).await?;
        self.other.remove_engine(id).await
    }

    async fn launch_worker(&self, spec: &WorkerSpec) -> Result<Handle, BackendError> {
        let on_other = spec.flavor.backend_or(self.default_kind) == self.other_kind;
        self.by_kind(on_other).launch_worker(spec).await
    }

    async fn worker_exit(&self, handle: &Handle) -> Option<WorkerExit> {
        self.for_handle(handle).worker_exit(handle).await
    }

    async fn remove_worker(&self, id: &str) -> Result<(), BackendError> {
        self.default.remove_worker(id).await?;
        self.other.remove_worker(id).await
    }

    fn engine_accelerators(&self) -> bool {
        self.default.engine_accelerators()
    }

    fn accelerators_in_use(&self) -> HashMap<String, Vec<String>> {
        let mut all = self.default.accelerators_in_use();
        all.extend(self.other.accelerators_in_use());
        all
    }

    fn saves_images(&self) -> bool {
        self.default.saves_images()
    }

    async fn save_image(
        &self,
        handle: &Handle,
        save: &SaveImage,
        progress: &dyn Progress,
    ) -> Result<u64, SaveImageError> {
        self.for_handle(handle)
            .save_image(handle, save, progress)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::fake::FakeBackend;
    use crate::config::Settings;

    struct Quiet;

    #[async_trait]
    impl Progress for Quiet {
        async fn event(&self, _: crate::store::events::EventKind, _: Option<&str>) {}
    }

    fn spec(id: &str, backend: Option<BackendKind>) -> NotebookSpec {
        let mut s = crate::backends::conformance::spec(&Settings::default(), "img");
        s.id = id.into();
        s.flavor.backend = backend;
        s
    }

    #[tokio::test]
    async fn each_notebook_goes_to_its_flavors_backend_and_stays_there() {
        let here = Arc::new(FakeBackend::default());
        let cluster = Arc::new(FakeBackend::default());
        let r = Routed::new(
            (BackendKind::Process, here.clone()),
            (BackendKind::Slurm, cluster.clone()),
            [("old".to_string(), "slurm".to_string())],
        );
        let small = spec("small", None);
        let big = spec("big", Some(BackendKind::Slurm));
        for s in [&small, &big] {
            r.prepare(s, &Quiet).await.unwrap();
            r.launch(s).await.unwrap();
        }
        assert!(here.launched("small") && !here.launched("big"));
        assert!(cluster.launched("big") && !cluster.launched("small"));
        // By id: what was placed, and what the rows said at start.
        r.delete("big").await.unwrap();
        r.delete("old").await.unwrap();
        r.delete("small").await.unwrap();
        assert_eq!(
            cluster.deleted(),
            vec!["big".to_string(), "old".to_string()]
        );
        assert_eq!(here.deleted(), vec!["small".to_string()]);
    }
}
