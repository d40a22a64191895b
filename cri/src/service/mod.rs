//! The CRI v1 gRPC services. One [`Cri`] value implements both
//! `RuntimeService` and `ImageService`; every handler runs through
//! [`Cri::observe`], which opens the request's tracing span (RPC, pod,
//! container and image ids), records its metrics, and turns the crate
//! [`Error`](crate::Error) into a gRPC status in one place.

mod image;
mod runtime;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bulkhead_image::ImageStore;
use bulkhead_network::Network;
use bulkhead_runtime::cgroups::Driver;
use tonic::{Response, Status};
use tracing::{Instrument, Span, field::Empty};

use crate::config::Config;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::state::State;
use crate::{Error, Result};

/// Everything the handlers share, built once at start.
#[derive(Debug)]
pub struct Context {
    /// The effective configuration: file, then flags.
    pub config: Config,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub cgroup_driver: Driver,
    pub state: State,
    pub images: Arc<ImageStore>,
    pub network: Network,
    pub locks: KeyedLocks,
    pub metrics: Metrics,
    pub events: crate::events::Events,
    /// The streaming server's address and tokens.
    pub streaming: crate::streaming::Streaming,
}

/// The CRI server.
#[derive(Debug, Clone)]
pub struct Cri {
    ctx: Arc<Context>,
}

pub(crate) type RpcResult<T> = std::result::Result<Response<T>, Status>;

/// The objects a request names, for its span. Empty strings are left out.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ids<'a> {
    pub pod: &'a str,
    pub container: &'a str,
    pub image: &'a str,
}

impl<'a> Ids<'a> {
    pub fn none() -> Ids<'a> {
        Ids::default()
    }
    pub fn pod(pod: &'a str) -> Ids<'a> {
        Ids { pod, ..Ids::default() }
    }
    pub fn container(container: &'a str) -> Ids<'a> {
        Ids { container, ..Ids::default() }
    }
    pub fn image(image: &'a str) -> Ids<'a> {
        Ids { image, ..Ids::default() }
    }
}

fn rpc_span(rpc: &'static str, ids: Ids<'_>) -> Span {
    let span = tracing::info_span!("rpc", rpc, pod_id = Empty, container_id = Empty, image = Empty);
    for (field, value) in [("pod_id", ids.pod), ("container_id", ids.container), ("image", ids.image)] {
        if !value.is_empty() {
            span.record(field, value);
        }
    }
    span
}

impl Cri {
    pub fn new(ctx: Arc<Context>) -> Cri {
        Cri { ctx }
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Runs one request's work inside its span, records metrics, and maps
    /// its error to a gRPC status.
    pub(crate) async fn observe<T>(
        &self,
        rpc: &'static str,
        ids: Ids<'_>,
        work: impl Future<Output = Result<T>>,
    ) -> RpcResult<T> {
        let span = rpc_span(rpc, ids);
        let start = Instant::now();
        let result = work.instrument(span.clone()).await;
        let elapsed = start.elapsed();
        let _entered = span.enter();
        match result {
            Ok(response) => {
                self.ctx.metrics.observe(rpc, elapsed, None);
                tracing::debug!(elapsed_us = elapsed.as_micros() as u64, "ok");
                Ok(Response::new(response))
            }
            Err(e) => {
                let status = Status::from(e);
                self.ctx.metrics.observe(rpc, elapsed, Some(status.code()));
                if status.code() == tonic::Code::Unimplemented {
                    tracing::debug!(code = ?status.code(), message = status.message(), "failed");
                } else {
                    tracing::warn!(code = ?status.code(), message = status.message(), "failed");
                }
                Err(status)
            }
        }
    }

    /// Answers UNIMPLEMENTED for an RPC whose issue has not landed yet.
    pub(crate) async fn unimplemented<T>(&self, rpc: &'static str, ids: Ids<'_>) -> RpcResult<T> {
        self.observe(rpc, ids, async { Err(Error::Unimplemented { rpc }) }).await
    }

    /// Runs blocking work (disk I/O with fsync) off the async executor.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Context) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || work(&ctx))
            .await
            .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
    }
}

/// Runs blocking work (disk I/O with fsync) off the async executor.
pub(crate) async fn blocking_on<T: Send + 'static>(
    ctx: &Arc<Context>,
    work: impl FnOnce(&Context) -> Result<T> + Send + 'static,
) -> Result<T> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || work(&ctx))
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}
