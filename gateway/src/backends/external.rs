//! The `external` backend: every notebook routes to one HTTP server that runs elsewhere
//! (configured by `backend.external_url`), with no processes of its own. It serves benchmarks
//! of the proxy against a fast upstream and attaching a Jupyter server started by hand.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;

use super::{Backend, BackendError, Handle, NotebookSpec, Observed, Progress, StopMode, Upstream};
use crate::config::Settings;

pub struct ExternalBackend {
    addr: SocketAddr,
    token: String,
}

impl ExternalBackend {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let url = settings
            .backend
            .external_url
            .as_deref()
            .context("backend.external_url is not set")?;
        let hostport = url
            .strip_prefix("http://")
            .context("backend.external_url must start with http://")?
            .trim_end_matches('/');
        let addr = hostport.parse().with_context(|| {
            format!("backend.external_url: {hostport:?} is not an IP address and port")
        })?;
        Ok(ExternalBackend {
            addr,
            token: settings.backend.external_token.clone().unwrap_or_default(),
        })
    }
}

#[async_trait]
impl Backend for ExternalBackend {
    fn name(&self) -> &'static str {
        "external"
    }

    async fn prepare(
        &self,
        _spec: &NotebookSpec,
        _progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    async fn launch(&self, _spec: &NotebookSpec) -> Result<Handle, BackendError> {
        Ok(Handle::External(crate::lifecycle::handle::ExternalHandle {
            addr: self.addr.to_string(),
        }))
    }

    async fn wait_ready(
        &self,
        _spec: &NotebookSpec,
        _handle: &Handle,
        timeout: Duration,
        _progress: &dyn Progress,
    ) -> Result<(), BackendError> {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(self.addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BackendError::Start(format!(
                "{} does not accept connections: {e}",
                self.addr
            ))),
            Err(_) => Err(BackendError::Start(format!(
                "{} did not answer in time",
                self.addr
            ))),
        }
    }

    async fn poll(&self, _handle: &Handle) -> Observed {
        match tokio::net::TcpStream::connect(self.addr).await {
            Ok(_) => Observed::Running,
            Err(e) => {
                Observed::Unhealthy(format!("{} does not accept connections: {e}", self.addr))
            }
        }
    }

    async fn stop(&self, _handle: &Handle, _mode: StopMode) -> Result<(), BackendError> {
        Ok(())
    }

    async fn delete(&self, _id: &str) -> Result<(), BackendError> {
        Ok(())
    }

    fn upstream(&self, _handle: &Handle) -> Result<Upstream, BackendError> {
        Ok(Upstream {
            endpoint: super::Endpoint::Tcp(self.addr),
            token: self.token.clone(),
        })
    }
}
